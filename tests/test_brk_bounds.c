/*  Tests for the broker's bounds (brk_server.h "Memory bounds") and for
    NACK "requeue": a real broker actor on 127.0.0.1, test DEALERs as
    publishers and workers. Every wait is a receive timeout, never a sleep.
*/
#include <criterion/criterion.h>
#include <string.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static char s_frontend [64];
static char s_backend [64];

static void
s_start (int64_t max_pending, int64_t max_memory, int64_t max_attempts)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    cr_assert_eq (config.max_pending, BRK_MAX_PENDING_DEFAULT);
    cr_assert_eq (config.max_memory, BRK_MAX_MEMORY_DEFAULT);
    config.max_pending = max_pending;
    config.max_memory = max_memory;
    config.queue.max_attempts = max_attempts;
    config.queue.ack_deadline_ms = 30000;
    config.queue.heartbeat_ms = 5000;
    config.queue.epoch = 3;
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    const char *names [2] = { "frontend", "backend" };
    char *endpoints [2] = { s_frontend, s_backend };
    for (int i = 0; i < 2; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        int port = -1;
        cr_assert_eq (zsock_recv (s_broker, "i", &port), 0);
        cr_assert_gt (port, 0);
        snprintf (endpoints [i], 64, "tcp://127.0.0.1:%d", port);
    }
}

static void
s_teardown (void)
{
    zactor_destroy (&s_broker);
}

static zsock_t *
s_dealer (const char *endpoint)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 5000);
    zsock_set_linger (sock, 0);
    cr_assert_eq (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

static void
s_send (zsock_t *sock, mmp_command_t command, const char *json)
{
    cr_assert_eq (mmp_send (sock, NULL, command, json, strlen (json)), 0);
}

//  The next message that is not a HEARTBEAT; fails on timeout.
static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    while (true) {
        mmp_msg_init (msg);
        mmp_error_t err;
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, &err);
        cr_assert_eq (rc, 0, "expected %s, got rc %d", mmp_command_name (command), rc);
        if (msg->command == MMP_HEARTBEAT && command != MMP_HEARTBEAT) {
            mmp_msg_reset (msg);
            continue;
        }
        cr_assert_eq (msg->command, command, "expected %s, got %s (%s)",
                      mmp_command_name (command), mmp_command_name (msg->command),
                      msg->reason ? msg->reason : "");
        return;
    }
}

//  PUBLISH count requests (ids first..first+count-1) with an attribute of
//  pad bytes; returns the reply (PUBACK or ERROR), caller resets it.
static void
s_publish (zsock_t *publisher, int first, int count, size_t pad, mmp_msg_t *reply)
{
    char *json = malloc (256 + (size_t) count * (160 + pad));
    cr_assert_not_null (json);
    size_t used = (size_t) sprintf (json, "{\"messages\":[");
    for (int i = 0; i < count; i++) {
        used += (size_t) sprintf (json + used, "%s{\"message_id\":\"00000000-0000-4000-8000-%012d\","
                                  "\"instance_name\":\"cattle-%04d\",\"attributes\":{\"p\":\"",
                                  i ? "," : "", first + i, first + i);
        memset (json + used, 'x', pad);
        used += pad;
        used += (size_t) sprintf (json + used, "\"}}");
    }
    sprintf (json + used, "],\"req\":\"b%d\"}", first);
    s_send (publisher, MMP_PUBLISH, json);
    free (json);
    mmp_msg_init (reply);
    mmp_error_t err;
    cr_assert_eq (mmp_recv (publisher, true, NULL, MMP_FROM_BROKER, reply, &err), 0, "no reply");
}

static double
s_stat (zsock_t *client, const char *name)
{
    s_send (client, MMP_STATS, "{}");
    mmp_msg_t stats;
    s_expect (client, MMP_STATS, &stats);
    cJSON *item = cJSON_GetObjectItem (stats.body, name);
    cr_assert (cJSON_IsNumber (item), "STATS has no %s", name);
    double value = item->valuedouble;
    mmp_msg_reset (&stats);
    return value;
}

static zsock_t *
s_worker (int64_t credit)
{
    zsock_t *worker = s_dealer (s_backend);
    char json [64];
    snprintf (json, sizeof json, "{\"credit\":%" PRId64 ",\"name\":\"w\"}", credit);
    s_send (worker, MMP_HELLO, json);
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    mmp_msg_reset (&msg);
    return worker;
}

TestSuite (brk_bounds, .fini = s_teardown, .timeout = 30);

Test (brk_bounds, publish_over_max_pending_is_unavailable_until_acks_free_room)
{
    s_start (10, 0, 5);
    zsock_t *publisher = s_dealer (s_frontend);
    mmp_msg_t reply;
    s_publish (publisher, 1, 5, 0, &reply);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    s_publish (publisher, 6, 5, 0, &reply);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    //  10 pending: the next batch is refused whole, with the reason
    s_publish (publisher, 11, 3, 0, &reply);
    cr_assert_eq (reply.command, MMP_ERROR);
    cr_assert_str_eq (reply.code, MMP_ERR_UNAVAILABLE);
    cr_assert (strstr (reply.reason, "max_pending"), "reason: %s", reply.reason);
    cr_assert_str_eq (reply.req, "b11");
    mmp_msg_reset (&reply);
    cr_assert_eq (s_stat (publisher, "published"), 10, "nothing of it queued");
    cr_assert_eq (s_stat (publisher, "refused_full"), 1);
    cr_assert_eq (s_stat (publisher, "max_pending"), 10);
    //  A worker acks two: room again
    zsock_t *worker = s_worker (2);
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    uint64_t ids [2];
    size_t got = 0;
    for (size_t i = 0; i < deliver.delivery_count; i++)
        ids [got++] = deliver.deliveries [i].delivery_id;
    mmp_msg_reset (&deliver);
    if (got < 2) {
        s_expect (worker, MMP_DELIVER, &deliver);
        ids [got++] = deliver.deliveries [0].delivery_id;
        mmp_msg_reset (&deliver);
    }
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 ",%" PRIu64 "]}", ids [0], ids [1]);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 2);
    mmp_msg_reset (&acked);
    s_publish (publisher, 11, 3, 0, &reply);
    cr_assert_eq (reply.command, MMP_PUBACK, "accepted again after acks");
    mmp_msg_reset (&reply);
    cr_assert_eq (s_stat (publisher, "published"), 13);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_bounds, publish_over_max_memory_is_unavailable)
{
    s_start (0, 16 * 1024, 5);
    zsock_t *publisher = s_dealer (s_frontend);
    mmp_msg_t reply;
    //  Each request is a little over 1 KiB as stored
    s_publish (publisher, 1, 16, 1000, &reply);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    double bytes = s_stat (publisher, "memory_bytes");
    cr_assert_geq (bytes, 16 * 1024, "16 requests of 1 KiB: %.0f bytes", bytes);
    s_publish (publisher, 100, 1, 10, &reply);
    cr_assert_eq (reply.command, MMP_ERROR);
    cr_assert_str_eq (reply.code, MMP_ERR_UNAVAILABLE);
    cr_assert (strstr (reply.reason, "max_memory"), "reason: %s", reply.reason);
    mmp_msg_reset (&reply);
    cr_assert_eq (s_stat (publisher, "max_memory"), 16 * 1024);
    cr_assert_eq (s_stat (publisher, "refused_full"), 1);
    zsock_destroy (&publisher);
}

//  Item: a worker's shutdown NACKs use up no attempts.
Test (brk_bounds, rolling_worker_restarts_with_shutdown_nacks_dead_letter_nothing)
{
    s_start (0, 0, 3);
    zsock_t *publisher = s_dealer (s_frontend);
    mmp_msg_t reply;
    s_publish (publisher, 1, 1, 0, &reply);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    for (int restart = 0; restart < 5; restart++) {
        zsock_t *worker = s_worker (1);
        mmp_msg_t deliver;
        s_expect (worker, MMP_DELIVER, &deliver);
        cr_assert_eq (deliver.deliveries [0].attempt, 1, "restart %d: no attempt used", restart);
        uint64_t id = deliver.deliveries [0].delivery_id;
        mmp_msg_reset (&deliver);
        //  What mandrill-worker sends at SIGTERM: CREDIT 0, then a NACK
        //  "requeue" for the work it did not start, then BYE
        s_send (worker, MMP_CREDIT, "{\"credit\":0}");
        mmp_buf_t buf;
        mmp_buf_init (&buf);
        cr_assert_eq (mmp_encode_nack_requeue (&buf, &id, 1, "shutdown"), 0);
        s_send (worker, MMP_NACK, mmp_buf_data (&buf));
        mmp_buf_free (&buf);
        mmp_msg_t nacked;
        s_expect (worker, MMP_NACKED, &nacked);
        cr_assert_eq (nacked.id_count, 1);
        mmp_msg_reset (&nacked);
        s_send (worker, MMP_BYE, "{}");
        zsock_destroy (&worker);
    }
    cr_assert_eq (s_stat (publisher, "dead_letters"), 0, "max_attempts 3, 5 restarts");
    cr_assert_eq (s_stat (publisher, "requeued"), 5);
    //  The sixth worker finishes it
    zsock_t *worker = s_worker (1);
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    char json [64];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "]}", deliver.deliveries [0].delivery_id);
    mmp_msg_reset (&deliver);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 1);
    mmp_msg_reset (&acked);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}
