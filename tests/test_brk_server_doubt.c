/*  Tests for the in-doubt wiring of brk_server's backend: a real broker
    actor on 127.0.0.1 on a manual clock, workers as DEALERs speaking MMP.
    PROGRESS ["started"] reaches the queue (PROGRESSED ok, unknown ids
    answered), a lease that ends after it holds the request for the
    restart timeout, and DELIVER carries "in_doubt" only to a worker whose
    HELLO declared the feature.
*/
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static char s_frontend [64];
static char s_backend [64];
static atomic_llong s_now;

static int64_t
s_manual_now (void *arg)
{
    (void) arg;
    return (int64_t) atomic_load (&s_now);
}

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.ack_deadline_ms = 10000;
    config.queue.backoff_base_ms = 50;
    config.queue.backoff_max_ms = 50;
    config.queue.heartbeat_ms = 1000000;     //  Nobody is lost by silence here
    config.queue.restart_timeout_ms = 30000;
    config.queue.epoch = 3;
    atomic_store (&s_now, 1000000);
    config.clock = (mdl_clock_t) { s_manual_now, NULL };
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

//  Move the manual clock, then let the broker fire and deal what is due.
static void
s_advance (int64_t ms)
{
    atomic_fetch_add (&s_now, ms);
    zstr_send (s_broker, "TICK");
    int rc = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &rc), 0);
}

static zsock_t *
s_dealer (const char *endpoint)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 3000);
    zsock_set_linger (sock, 0);
    cr_assert_eq (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

static void
s_send (zsock_t *sock, mmp_command_t command, const char *json)
{
    cr_assert_eq (mmp_send (sock, NULL, command, json, strlen (json)), 0);
}

//  The next message other than HEARTBEAT, which must be command.
static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    while (true) {
        mmp_msg_init (msg);
        mmp_error_t err;
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, &err);
        cr_assert_eq (rc, 0, "expected %s, got rc %d", mmp_command_name (command), rc);
        if (msg->command == MMP_HEARTBEAT) {
            mmp_msg_reset (msg);
            continue;
        }
        cr_assert_eq (msg->command, command, "expected %s, got %s", mmp_command_name (command),
                      mmp_command_name (msg->command));
        return;
    }
}

//  A DELIVER within ms, or false.
static bool
s_delivered (zsock_t *sock, int ms, mmp_msg_t *msg)
{
    int64_t until = zclock_mono () + ms;
    while (zclock_mono () < until) {
        zsock_set_rcvtimeo (sock, (int) (until - zclock_mono ()) + 1);
        mmp_msg_init (msg);
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, NULL);
        if (rc == 0 && msg->command == MMP_DELIVER) {
            zsock_set_rcvtimeo (sock, 3000);
            return true;
        }
        mmp_msg_reset (msg);
    }
    zsock_set_rcvtimeo (sock, 3000);
    return false;
}

static zsock_t *
s_worker (const char *hello)
{
    zsock_t *worker = s_dealer (s_backend);
    s_send (worker, MMP_HELLO, hello);
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    mmp_msg_reset (&msg);
    return worker;
}

Test (brk_server_doubt, started_then_lost_is_held_and_marked_for_declared_workers,
      .init = s_setup, .fini = s_teardown, .timeout = 30)
{
    zsock_t *a = s_worker ("{\"credit\":1,\"name\":\"a\",\"features\":[\"in_doubt\"]}");
    zsock_t *client = s_dealer (s_frontend);
    s_send (client, MMP_PUBLISH, "{\"messages\":[{\"message_id\":"
            "\"00000000-0000-4000-8000-000000000001\",\"instance_name\":\"cattle-0001\"}]}");
    mmp_msg_t msg;
    s_expect (client, MMP_PUBACK, &msg);
    mmp_msg_reset (&msg);
    s_advance (0);
    cr_assert (s_delivered (a, 3000, &msg), "no first delivery");
    cr_assert_eq (msg.delivery_count, 1);
    cr_assert_not (msg.deliveries [0].in_doubt);
    uint64_t id = msg.deliveries [0].delivery_id;
    mmp_msg_reset (&msg);

    //  The start is recorded and answered; an id never issued is unknown
    char json [160];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 ",99],\"steps\":[\"started\"]}", id);
    s_send (a, MMP_PROGRESS, json);
    s_expect (a, MMP_PROGRESSED, &msg);
    cr_assert_eq (msg.id_count, 1);
    cr_assert_eq (msg.ids [0], id);
    cr_assert_eq (msg.unknown_count, 1);
    mmp_msg_reset (&msg);

    //  A goes away mid-restart: the request is in doubt
    s_send (a, MMP_BYE, "{}");
    zsock_t *b = s_worker ("{\"credit\":1,\"name\":\"b\",\"features\":[\"in_doubt\",\"verify\"]}");
    zsock_t *c = s_worker ("{\"credit\":1,\"name\":\"c\"}");
    s_advance (29000);
    cr_assert_not (s_delivered (b, 300, &msg), "delivered before the restart timeout");
    cr_assert_not (s_delivered (c, 300, &msg), "delivered before the restart timeout");
    s_advance (1000);
    //  Whoever gets it first: the mark only for the worker that declared it;
    //  a NACK gives it back (still in doubt) to the other one
    zsock_t *first = NULL, *second = NULL;
    if (s_delivered (b, 1500, &msg)) {
        first = b;
        second = c;
    }
    else {
        cr_assert (s_delivered (c, 1500, &msg), "not delivered after the restart timeout");
        first = c;
        second = b;
    }
    cr_assert_eq (msg.deliveries [0].in_doubt, first == b);
    cr_assert_eq (msg.deliveries [0].steps, 0, "\"started\" leaked into DELIVER steps");
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"delay_ms\":0}",
              msg.deliveries [0].delivery_id);
    mmp_msg_reset (&msg);
    s_send (first, MMP_NACK, json);
    s_expect (first, MMP_NACKED, &msg);
    mmp_msg_reset (&msg);
    s_advance (100);
    cr_assert (s_delivered (second, 3000, &msg), "not redelivered to the other worker");
    cr_assert_eq (msg.deliveries [0].in_doubt, second == b);
    mmp_msg_reset (&msg);
    zsock_destroy (&a);
    zsock_destroy (&b);
    zsock_destroy (&c);
    zsock_destroy (&client);
}
