/*  Tests for brk_server: a real broker actor on 127.0.0.1, driven by test
    DEALERs that act as publishers and workers. Every wait is a receive
    timeout, never a sleep. Tests about time (lease expiry, extension,
    NACK delay, lost heartbeats) run the broker on a manual clock the test
    moves (s_advance), so they check the exact millisecond a rule fires;
    the others use the real clock with short times (a 400 ms ack deadline).
*/
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <string.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static int64_t s_ack_deadline_ms;       //  As configured by s_start
static int64_t s_heartbeat_ms;          //  As configured by s_start
static char s_frontend [64];
static char s_backend [64];
static char s_events [64];
static atomic_llong s_now;              //  The manual clock, in ms
static bool s_manual;                   //  Is the broker on it?

static int64_t
s_manual_now (void *arg)
{
    (void) arg;
    return (int64_t) atomic_load (&s_now);
}

static void
s_start_with (int64_t ack_deadline_ms, int64_t max_attempts, int64_t heartbeat_ms, bool manual)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.ack_deadline_ms = ack_deadline_ms;
    config.queue.max_attempts = max_attempts;
    config.queue.backoff_base_ms = 50;
    config.queue.backoff_max_ms = 200;
    config.queue.heartbeat_ms = heartbeat_ms;
    s_ack_deadline_ms = ack_deadline_ms;
    s_heartbeat_ms = heartbeat_ms;
    config.queue.epoch = 3;
    s_manual = manual;
    if (manual) {
        atomic_store (&s_now, 1000000);
        config.clock = (mdl_clock_t) { s_manual_now, NULL };
    }
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    const char *names [3] = { "frontend", "backend", "events" };
    char *endpoints [3] = { s_frontend, s_backend, s_events };
    for (int i = 0; i < 3; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        int port = -1;
        cr_assert_eq (zsock_recv (s_broker, "i", &port), 0);
        cr_assert_gt (port, 0);
        snprintf (endpoints [i], 64, "tcp://127.0.0.1:%d", port);
    }
}

static void
s_start (int64_t ack_deadline_ms, int64_t max_attempts, int64_t heartbeat_ms)
{
    s_start_with (ack_deadline_ms, max_attempts, heartbeat_ms, false);
}

//  Wait until the broker has fired what is due and dealt what is ready:
//  its DELIVERs are sent before TICK is answered.
static void
s_settle (void)
{
    zstr_send (s_broker, "TICK");
    int rc = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &rc), 0);
    cr_assert_eq (rc, 0);
}

//  Move the manual clock by ms, then settle.
static void
s_advance (int64_t ms)
{
    cr_assert (s_manual, "s_advance needs a broker on the manual clock");
    atomic_fetch_add (&s_now, ms);
    s_settle ();
}

static void
s_setup (void)
{
    //  Heartbeats slow enough that a test worker busy decoding under
    //  valgrind is not lost; the heartbeat test starts its own broker
    s_start (400, 3, 1000);
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
    zsock_set_rcvtimeo (sock, 3000);
    zsock_set_sndhwm (sock, 0);
    zsock_set_rcvhwm (sock, 0);
    zsock_set_linger (sock, 0);
    cr_assert_eq (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

static void
s_send (zsock_t *sock, mmp_command_t command, const char *json)
{
    cr_assert_eq (mmp_send (sock, NULL, command, json, strlen (json)), 0);
}

//  Receive the next message that is not a HEARTBEAT; fail on timeout.
static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    while (true) {
        mmp_msg_init (msg);
        mmp_error_t err;
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, &err);
        cr_assert_eq (rc, 0, "expected %s, got rc %d (%s)", mmp_command_name (command), rc,
                      rc == -2 ? err.reason : "timeout");
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

//  Nothing but heartbeats for ms milliseconds.
static void
s_expect_quiet (zsock_t *sock, int ms)
{
    int64_t until = zclock_mono () + ms;
    while (zclock_mono () < until) {
        zsock_set_rcvtimeo (sock, (int) (until - zclock_mono ()) + 1);
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, &msg, NULL);
        if (rc == 0)
            cr_assert_eq (msg.command, MMP_HEARTBEAT, "unexpected %s", mmp_command_name (msg.command));
        mmp_msg_reset (&msg);
    }
    zsock_set_rcvtimeo (sock, 3000);
}

//  Wait for a DELIVER while heartbeating every 50 ms, as a live worker does.
static void
s_expect_delivery (zsock_t *worker, mmp_msg_t *msg)
{
    int64_t until = zclock_mono () + 3000;
    zsock_set_rcvtimeo (worker, 50);
    while (zclock_mono () < until) {
        s_send (worker, MMP_HEARTBEAT, "{}");
        mmp_msg_init (msg);
        if (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, msg, NULL) == 0) {
            if (msg->command == MMP_DELIVER) {
                zsock_set_rcvtimeo (worker, 3000);
                return;
            }
            cr_assert_eq (msg->command, MMP_HEARTBEAT, "got %s", mmp_command_name (msg->command));
        }
        mmp_msg_reset (msg);
    }
    cr_assert_fail ("no DELIVER within 3 s");
}

static zsock_t *
s_worker (int64_t credit, const char *name)
{
    zsock_t *worker = s_dealer (s_backend);
    char json [128];
    snprintf (json, sizeof json, "{\"credit\":%" PRId64 ",\"name\":\"%s\"}", credit, name);
    s_send (worker, MMP_HELLO, json);
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    cr_assert_eq (msg.ack_deadline_ms, s_ack_deadline_ms);
    cr_assert_eq (msg.heartbeat_ms, s_heartbeat_ms);
    cr_assert_eq (msg.epoch, 3);
    mmp_msg_reset (&msg);
    return worker;
}

static void
s_publish_ids (zsock_t *publisher, int first, int count)
{
    char *json = malloc (256 + (size_t) count * 128);
    size_t used = (size_t) sprintf (json, "{\"messages\":[");
    for (int i = 0; i < count; i++)
        used += (size_t) sprintf (json + used, "%s{\"message_id\":\"00000000-0000-4000-8000-%012d\","
                                  "\"instance_name\":\"cattle-%04d\"}", i ? "," : "", first + i, first + i);
    sprintf (json + used, "],\"req\":\"r1\"}");
    s_send (publisher, MMP_PUBLISH, json);
    free (json);
    mmp_msg_t msg;
    s_expect (publisher, MMP_PUBACK, &msg);
    cr_assert_eq (msg.message_id_count, (size_t) count);
    cr_assert_str_eq (msg.req, "r1");
    mmp_msg_reset (&msg);
}

static void
s_ids_json (char *out, size_t size, const uint64_t *ids, size_t count)
{
    size_t used = (size_t) snprintf (out, size, "{\"delivery_ids\":[");
    for (size_t i = 0; i < count; i++)
        used += (size_t) snprintf (out + used, size - used, "%s%" PRIu64, i ? "," : "", ids [i]);
    snprintf (out + used, size - used, "]}");
}

//  A round trip on the backend: ACK an id never issued, expect its ACKED
//  and nothing else first (a DELIVER sent before it would come first).
//  Also a sign of life for a registered worker.
static void
s_ping (zsock_t *worker)
{
    s_send (worker, MMP_ACK, "{\"delivery_ids\":[1]}");
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.unknown_count, 1);
    mmp_msg_reset (&acked);
}

//  One counter of STATS.
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

//  The suite's broker, replaced by one with other settings. (A test's own
//  .init would run after the suite's, not instead of it.)
static void
s_restart (int64_t ack_deadline_ms, int64_t max_attempts, int64_t heartbeat_ms)
{
    zactor_destroy (&s_broker);
    s_start (ack_deadline_ms, max_attempts, heartbeat_ms);
}

//  The same on the manual clock.
static void
s_restart_manual (int64_t ack_deadline_ms, int64_t max_attempts, int64_t heartbeat_ms)
{
    zactor_destroy (&s_broker);
    s_start_with (ack_deadline_ms, max_attempts, heartbeat_ms, true);
}

TestSuite (brk_server, .init = s_setup, .fini = s_teardown, .timeout = 30);

Test (brk_server, publish_deliver_ack)
{
    zsock_t *publisher = s_dealer (s_frontend);
    s_send (publisher, MMP_PUBLISH,
            "{\"messages\":[{\"instance_name\":\"cattle-ab12\"},"
            "{\"message_id\":\"6F1C4A7E-1111-4222-8333-444455556666\",\"instance_name\":\"cattle-cd34\","
            "\"hostname\":\"cd34.internal\",\"attributes\":{\"zone\":\"a\"}}]}");
    mmp_msg_t ack;
    s_expect (publisher, MMP_PUBACK, &ack);
    cr_assert_eq (ack.message_id_count, 2);
    cr_assert_eq (ack.other_id_count, 0);
    cr_assert_str_eq (ack.durability, "memory");
    cr_assert_str_eq (ack.message_ids [1], "6f1c4a7e-1111-4222-8333-444455556666", "lower-cased");
    char made [37];
    snprintf (made, sizeof made, "%s", ack.message_ids [0]);
    mmp_msg_reset (&ack);

    zsock_t *worker = s_worker (10, "w1");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 2);
    cr_assert_str_eq (deliver.deliveries [0].message.message_id, made);
    cr_assert_str_eq (deliver.deliveries [0].message.hostname, "cattle-ab12.example.net");
    cr_assert_str_eq (deliver.deliveries [1].message.hostname, "cd34.internal");
    cr_assert_not_null (deliver.deliveries [1].message.attributes);
    cr_assert_eq (deliver.deliveries [0].attempt, 1);
    cr_assert_eq (deliver.deliveries [0].deadline_ms, 400);
    cr_assert_eq (deliver.deliveries [0].delivery_id >> 32, 3);
    uint64_t ids [2] = { deliver.deliveries [0].delivery_id, deliver.deliveries [1].delivery_id };
    mmp_msg_reset (&deliver);

    char json [256];
    s_ids_json (json, sizeof json, ids, 2);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 2);
    cr_assert_eq (acked.stale_count, 0);
    cr_assert_eq (acked.unknown_count, 0);
    mmp_msg_reset (&acked);

    s_send (publisher, MMP_STATS, "{\"req\":\"s\"}");
    mmp_msg_t stats;
    s_expect (publisher, MMP_STATS, &stats);
    cr_assert_eq (cJSON_GetObjectItem (stats.body, "acked")->valuedouble, 2);
    cr_assert_eq (cJSON_GetObjectItem (stats.body, "in_flight")->valuedouble, 0);
    cr_assert_eq (cJSON_GetObjectItem (stats.body, "workers")->valuedouble, 1);
    mmp_msg_reset (&stats);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, unacked_is_redelivered_with_attempt_2)
{
    //  Deadline 400 ms, then the first backoff (50 ms), to the millisecond
    s_restart_manual (400, 3, 1000);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 1);
    zsock_t *worker = s_worker (10, "w1");
    mmp_msg_t first;
    s_expect (worker, MMP_DELIVER, &first);
    uint64_t id = first.deliveries [0].delivery_id;
    cr_assert_eq (first.deliveries [0].attempt, 1);
    mmp_msg_reset (&first);
    s_advance (399);
    s_ping (worker);                    //  Still leased at 399 ms
    cr_assert_eq (s_stat (publisher, "expired"), 0);
    s_advance (1);
    s_ping (worker);                    //  Expired at 400 ms, now waiting out its backoff
    cr_assert_eq (s_stat (publisher, "expired"), 1);
    cr_assert_eq (s_stat (publisher, "delayed"), 1);
    s_advance (49);
    s_ping (worker);
    s_advance (1);
    mmp_msg_t again;
    s_expect (worker, MMP_DELIVER, &again);
    cr_assert_eq (again.deliveries [0].attempt, 2);
    cr_assert_neq (again.deliveries [0].delivery_id, id);
    mmp_msg_reset (&again);
    //  The first lease is stale now
    char json [128];
    s_ids_json (json, sizeof json, &id, 1);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 0);
    cr_assert_eq (acked.stale_count, 1);
    cr_assert_eq (acked.stale [0], id);
    mmp_msg_reset (&acked);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, extend_keeps_the_lease)
{
    s_restart_manual (400, 3, 1000);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 1);
    zsock_t *worker = s_worker (10, "w1");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    uint64_t id = deliver.deliveries [0].delivery_id;
    mmp_msg_reset (&deliver);
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"extension_ms\":400}", id);
    //  Extend every 300 ms for 1.8 s: four and a half original deadlines
    for (int i = 0; i < 6; i++) {
        s_advance (300);
        s_send (worker, MMP_EXTEND, json);
        mmp_msg_t extended;
        s_expect (worker, MMP_EXTENDED, &extended);
        cr_assert_eq (extended.id_count, 1, "extend %d", i);
        cr_assert_eq (extended.deadline_ms, 400);
        mmp_msg_reset (&extended);
    }
    //  The last extension runs out 400 ms after it, not before
    s_advance (399);
    s_ping (worker);
    s_ids_json (json, sizeof json, &id, 1);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 1, "still leased after 2.2 s");
    mmp_msg_reset (&acked);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, nack_with_delay)
{
    s_restart_manual (400, 3, 1000);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 1);
    zsock_t *worker = s_worker (10, "w1");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    uint64_t id = deliver.deliveries [0].delivery_id;
    mmp_msg_reset (&deliver);
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"delay_ms\":300,\"reason\":\"busy\"}", id);
    s_send (worker, MMP_NACK, json);
    mmp_msg_t nacked;
    s_expect (worker, MMP_NACKED, &nacked);
    cr_assert_eq (nacked.id_count, 1);
    mmp_msg_reset (&nacked);
    s_advance (299);
    s_ping (worker);                    //  Not before its delay
    s_advance (1);
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.deliveries [0].attempt, 2);
    mmp_msg_reset (&deliver);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, stale_and_unknown_acks_are_reported)
{
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 1);
    zsock_t *worker = s_worker (10, "w1");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    uint64_t id = deliver.deliveries [0].delivery_id;
    mmp_msg_reset (&deliver);
    uint64_t ids [3] = { id, id, id + 1000 };
    char json [256];
    s_ids_json (json, sizeof json, ids, 3);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 1);
    cr_assert_eq (acked.stale_count, 1);
    cr_assert_eq (acked.unknown_count, 1);
    cr_assert_eq (acked.unknown [0], id + 1000);
    mmp_msg_reset (&acked);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, lost_heartbeats_return_leases_early)
{
    //  100 ms heartbeats and a 5 s deadline: lost means 3 silent heartbeats
    //  (checked every half heartbeat), long before the deadline
    s_restart_manual (5000, 3, 100);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 2);
    zsock_t *silent = s_worker (2, "silent");
    mmp_msg_t deliver;
    s_expect (silent, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 2);
    mmp_msg_reset (&deliver);
    zsock_t *live = s_worker (10, "live");
    //  live shows signs of life; silent says nothing after its HELLO
    s_advance (150);
    s_ping (live);
    s_advance (149);
    s_ping (live);                      //  At 299 ms silent is not lost yet
    cr_assert_eq (s_stat (publisher, "workers_lost"), 0);
    s_advance (61);                     //  360 ms: past 3 heartbeats and a scan
    size_t got = 0;
    while (got < 2) {
        s_expect (live, MMP_DELIVER, &deliver);
        for (size_t i = 0; i < deliver.delivery_count; i++)
            cr_assert_eq (deliver.deliveries [i].attempt, 2);
        got += deliver.delivery_count;
        mmp_msg_reset (&deliver);
    }
    cr_assert_eq (s_stat (publisher, "workers_lost"), 1);
    cr_assert_eq (s_stat (publisher, "workers"), 1);
    cr_assert_eq (s_stat (publisher, "expired"), 2);
    zsock_destroy (&live);
    zsock_destroy (&silent);
    zsock_destroy (&publisher);
}

Test (brk_server, credit_is_never_exceeded)
{
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 20);
    zsock_t *worker = s_worker (3, "w1");
    uint64_t held [20];
    size_t held_count = 0;
    size_t total = 0;
    while (total < 20) {
        mmp_msg_t deliver;
        s_expect (worker, MMP_DELIVER, &deliver);
        for (size_t i = 0; i < deliver.delivery_count; i++)
            held [held_count++] = deliver.deliveries [i].delivery_id;
        total += deliver.delivery_count;
        mmp_msg_reset (&deliver);
        cr_assert_leq (held_count, 3, "holding %zu with credit 3", held_count);
        //  Nothing more may come while we hold 3
        if (held_count == 3)
            s_expect_quiet (worker, 50);
        char json [256];
        s_ids_json (json, sizeof json, held, 1);
        s_send (worker, MMP_ACK, json);
        mmp_msg_t acked;
        s_expect (worker, MMP_ACKED, &acked);
        cr_assert_eq (acked.id_count, 1);
        mmp_msg_reset (&acked);
        memmove (held, held + 1, --held_count * sizeof held [0]);
    }
    //  Hand back what is still held, then CREDIT 0: nothing more even with room
    for (size_t i = 0; i < held_count; i++) {
        char json [64];
        s_ids_json (json, sizeof json, &held [i], 1);
        s_send (worker, MMP_ACK, json);
        mmp_msg_t acked;
        s_expect (worker, MMP_ACKED, &acked);
        cr_assert_eq (acked.id_count, 1);
        mmp_msg_reset (&acked);
    }
    s_send (worker, MMP_CREDIT, "{\"credit\":0}");
    s_ping (worker);                    //  The broker has the new credit
    s_publish_ids (publisher, 100, 2);
    s_settle ();                        //  The broker has dealt what it would
    s_ping (worker);                    //  A DELIVER made for the publish would come first
    s_expect_quiet (worker, 100);
    //  Credit returns: both arrive, and no more than the credit allows
    s_send (worker, MMP_CREDIT, "{\"credit\":1}");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1, "credit 1");
    char json [64];
    s_ids_json (json, sizeof json, &deliver.deliveries [0].delivery_id, 1);
    mmp_msg_reset (&deliver);
    s_send (worker, MMP_CREDIT, "{\"credit\":5}");
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1, "the second of the two");
    mmp_msg_reset (&deliver);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, 1);
    mmp_msg_reset (&acked);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, duplicates_are_detected)
{
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 1, 3);
    //  Same ids again, plus one new and one repeated inside the batch
    s_send (publisher, MMP_PUBLISH,
            "{\"messages\":[{\"message_id\":\"00000000-0000-4000-8000-000000000002\",\"instance_name\":\"a\"},"
            "{\"message_id\":\"00000000-0000-4000-8000-000000000009\",\"instance_name\":\"b\"},"
            "{\"message_id\":\"00000000-0000-4000-8000-000000000009\",\"instance_name\":\"b\"}]}");
    mmp_msg_t ack;
    s_expect (publisher, MMP_PUBACK, &ack);
    cr_assert_eq (ack.message_id_count, 3);
    cr_assert_eq (ack.other_id_count, 2);
    cr_assert_str_eq (ack.other_ids [0], "00000000-0000-4000-8000-000000000002");
    cr_assert_str_eq (ack.other_ids [1], "00000000-0000-4000-8000-000000000009");
    mmp_msg_reset (&ack);
    zsock_t *worker = s_worker (100, "w1");
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 4, "3 + 1 new, no duplicate queued");
    mmp_msg_reset (&deliver);
    s_expect_quiet (worker, 100);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, dead_lettered_after_max_attempts_then_replayed)
{
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish_ids (publisher, 7, 1);
    zsock_t *worker = s_worker (10, "w1");
    for (int attempt = 1; attempt <= 3; attempt++) {
        mmp_msg_t deliver;
        s_send (worker, MMP_HEARTBEAT, "{}");
        s_expect (worker, MMP_DELIVER, &deliver);
        cr_assert_eq (deliver.deliveries [0].attempt, attempt);
        char json [160];
        snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"delay_ms\":0,\"reason\":\"exit 1\"}",
                  deliver.deliveries [0].delivery_id);
        mmp_msg_reset (&deliver);
        s_send (worker, MMP_NACK, json);
        mmp_msg_t nacked;
        s_expect (worker, MMP_NACKED, &nacked);
        mmp_msg_reset (&nacked);
    }
    s_expect_quiet (worker, 100);
    s_send (publisher, MMP_DEADLETTERS, "{}");
    mmp_msg_t dead;
    s_expect (publisher, MMP_DEADLETTERS, &dead);
    cJSON *list = cJSON_GetObjectItem (dead.body, "dead_letters");
    cr_assert_eq (cJSON_GetArraySize (list), 1);
    cJSON *letter = cJSON_GetArrayItem (list, 0);
    cr_assert_str_eq (cJSON_GetObjectItem (cJSON_GetObjectItem (letter, "message"), "message_id")->valuestring,
                      "00000000-0000-4000-8000-000000000007");
    cr_assert (strstr (cJSON_GetObjectItem (letter, "reason")->valuestring, "exit 1"));
    cr_assert_eq (cJSON_GetArraySize (cJSON_GetObjectItem (letter, "history")), 3);
    mmp_msg_reset (&dead);

    s_send (publisher, MMP_REPLAY, "{\"message_ids\":[\"00000000-0000-4000-8000-000000000007\","
                                   "\"00000000-0000-4000-8000-000000000008\"]}");
    mmp_msg_t replayed;
    s_expect (publisher, MMP_REPLAYED, &replayed);
    cr_assert_eq (replayed.message_id_count, 1);
    cr_assert_eq (replayed.other_id_count, 1);
    mmp_msg_reset (&replayed);
    mmp_msg_t deliver;
    s_expect_delivery (worker, &deliver);
    cr_assert_eq (deliver.deliveries [0].attempt, 1, "fresh budget");
    mmp_msg_reset (&deliver);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, malformed_flood_while_a_worker_is_served)
{
    zsock_t *publisher = s_dealer (s_frontend);
    zsock_t *worker = s_worker (1000, "w1");
    zsock_t *attacker = s_dealer (s_frontend);
    zsock_t *bad_worker = s_dealer (s_backend);
    const char *garbage [] = { "{", "[]", "{\"messages\":7}", "{\"messages\":[{\"instance_name\":\"-bad\"}]}",
                               "\"x\"", "{\"messages\":[],\"zzz\":1}", "" };
    size_t acked_total = 0;
    for (int round = 0; round < 20; round++) {
        s_send (worker, MMP_HEARTBEAT, "{}");
        for (int i = 0; i < 50; i++) {
            const char *body = garbage [i % 7];
            s_send (attacker, MMP_PUBLISH, body);
            zstr_sendx (attacker, "NOT-MMP", NULL);
            zstr_sendx (bad_worker, "MMP1", "ACK", "{\"delivery_ids\":[1]}", NULL);
            zstr_sendx (bad_worker, "MMP1", "FROB", "{}", "extra", NULL);
        }
        s_publish_ids (publisher, round * 10, 10);
        size_t got = 0;
        while (got < 10) {
            mmp_msg_t deliver;
            s_expect (worker, MMP_DELIVER, &deliver);
            uint64_t ids [10];
            for (size_t i = 0; i < deliver.delivery_count; i++)
                ids [i] = deliver.deliveries [i].delivery_id;
            char json [512];
            s_ids_json (json, sizeof json, ids, deliver.delivery_count);
            got += deliver.delivery_count;
            mmp_msg_reset (&deliver);
            s_send (worker, MMP_ACK, json);
            mmp_msg_t acked;
            s_expect (worker, MMP_ACKED, &acked);
            acked_total += acked.id_count;
            mmp_msg_reset (&acked);
        }
    }
    cr_assert_eq (acked_total, 200);
    //  A heartbeat without HELLO is answered: say HELLO
    zstr_sendx (bad_worker, "MMP1", "HEARTBEAT", "{}", NULL);
    //  Every bad message got an ERROR back
    size_t errors = 0;
    zsock_set_rcvtimeo (attacker, 1000);
    while (errors < 20 * 50 * 2) {
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        int rc = mmp_recv (attacker, true, NULL, MMP_FROM_BROKER, &msg, NULL);
        cr_assert_eq (rc, 0, "only %zu errors", errors);
        cr_assert_eq (msg.command, MMP_ERROR);
        errors++;
        mmp_msg_reset (&msg);
    }
    //  An ACK needs no HELLO (ids are the authority): id 1 was never issued;
    //  the 4-frame message is bad_frames; the HEARTBEAT needs a HELLO first
    size_t acked = 0, bad_frames = 0, hello_first = 0;
    while (acked + bad_frames + hello_first < 20 * 50 * 2 + 1) {
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        cr_assert_eq (mmp_recv (bad_worker, true, NULL, MMP_FROM_BROKER, &msg, NULL), 0,
                      "%zu acked, %zu bad_frames, %zu hello_first", acked, bad_frames, hello_first);
        if (msg.command == MMP_ACKED) {
            cr_assert_eq (msg.unknown_count, 1);
            cr_assert_eq (msg.unknown [0], 1);
            acked++;
        }
        else {
            cr_assert_eq (msg.command, MMP_ERROR);
            if (streq (msg.code, MMP_ERR_BAD_FRAMES))
                bad_frames++;
            else {
                cr_assert_str_eq (msg.code, MMP_ERR_UNEXPECTED);
                hello_first++;
            }
        }
        mmp_msg_reset (&msg);
    }
    cr_assert_eq (acked, 1000);
    cr_assert_eq (bad_frames, 1000);
    cr_assert_eq (hello_first, 1);
    zsock_destroy (&bad_worker);
    zsock_destroy (&attacker);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, no_reply_dropped_with_over_1000_in_flight)
{
    //  This test is about replies, not leases: none may expire on a slow run
    s_restart (30000, 3, 1000);
    //  Default ROUTER HWM (1000) would drop replies to this DEALER silently
    zsock_t *publisher = s_dealer (s_frontend);
    enum { N = 3000 };
    for (int i = 0; i < N; i += 500)
        s_publish_ids (publisher, i, 500);
    zsock_t *worker = s_worker (N, "big");
    uint64_t *ids = malloc (N * sizeof *ids);
    size_t got = 0;
    while (got < N) {
        //  Stay alive however slowly this runs (valgrind, sanitizers)
        s_send (worker, MMP_HEARTBEAT, "{}");
        mmp_msg_t deliver;
        s_expect (worker, MMP_DELIVER, &deliver);
        for (size_t i = 0; i < deliver.delivery_count; i++)
            ids [got++] = deliver.deliveries [i].delivery_id;
        mmp_msg_reset (&deliver);
    }
    //  One ACK per id, all sent before reading any reply
    for (size_t i = 0; i < N; i++) {
        char json [64];
        s_ids_json (json, sizeof json, &ids [i], 1);
        s_send (worker, MMP_ACK, json);
    }
    size_t replies = 0;
    while (replies < N) {
        mmp_msg_t acked;
        s_expect (worker, MMP_ACKED, &acked);
        cr_assert_eq (acked.id_count, 1);
        replies++;
        mmp_msg_reset (&acked);
    }
    free (ids);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, events_are_published)
{
    zsock_t *sub = zsock_new_sub (s_events, "");
    cr_assert_not_null (sub);
    zsock_set_rcvtimeo (sub, 3000);
    //  A subscription takes a moment to reach the broker; publish until one arrives
    zsock_t *publisher = s_dealer (s_frontend);
    char *name = NULL;
    for (int i = 0; i < 50 && !name; i++) {
        s_publish_ids (publisher, 1000 + i, 1);
        zsock_set_rcvtimeo (sub, 100);
        name = zstr_recv (sub);
    }
    cr_assert_not_null (name, "no event");
    cr_assert_str_eq (name, "published");
    char *json = zstr_recv (sub);
    cJSON *event = cJSON_Parse (json);
    cr_assert_not_null (event);
    cr_assert_str_eq (cJSON_GetObjectItem (event, "event")->valuestring, "published");
    cr_assert_not_null (cJSON_GetObjectItem (event, "message_id"));
    cJSON_Delete (event);
    zstr_free (&json);
    zstr_free (&name);
    zsock_destroy (&sub);
    zsock_destroy (&publisher);
}

Test (brk_server, attributes_are_delivered_as_sent)
{
    //  Attributes are the publisher's bytes: numbers as written (no
    //  rounding, no exponent form), white space and escapes kept
    const char *attributes [] = {
        "{\"ts\":1732612345678901234}", "{\"n\":-9007199254740993,\"z\":0,\"m\":-0}",
        "{\"f\":0.1,\"g\":1e300,\"h\":-2.5e-7,\"i\":123456.789}",
        "{\"s\":\"tab\\tquote\\\"back\\\\slash\\u0001\\u00e9\",\"b\":true,\"c\":false,\"d\":null}",
        "{\"a\":[1,[2,[3,{\"x\":\"y\"}]],{}],\"e\":{}}", "{\"big\":18446744073709551615,\"p\":4503599627370497}",
        "{\"x\":0.30000000000000004,\"y\":123456789012345678,\"z\":1e400}", "{ \"w\" : [ 1 , 2 ] }"
    };
    zsock_t *publisher = s_dealer (s_frontend);
    zsock_t *worker = s_worker (100, "w1");
    for (size_t i = 0; i < sizeof attributes / sizeof attributes [0]; i++) {
        char json [512];
        snprintf (json, sizeof json, "{\"messages\":[{\"instance_name\":\"a%zu\",\"attributes\":%s}]}",
                  i, attributes [i]);
        s_send (publisher, MMP_PUBLISH, json);
        mmp_msg_t ack;
        s_expect (publisher, MMP_PUBACK, &ack);
        mmp_msg_reset (&ack);
        //  Read the DELIVER frame raw, to compare bytes, not values
        char *body = NULL;
        while (!body) {
            zmsg_t *raw = zmsg_recv (worker);
            cr_assert_not_null (raw, "no DELIVER");
            cr_assert_eq (zmsg_size (raw), 3);
            zmsg_first (raw);
            zframe_t *command = zmsg_next (raw);
            if (zframe_streq (command, "DELIVER"))
                body = zframe_strdup (zmsg_last (raw));
            zmsg_destroy (&raw);
        }
        cr_assert (strstr (body, attributes [i]) != NULL, "published %s; the broker sent %s",
                   attributes [i], body);
        cJSON *parsed = cJSON_Parse (body);
        cJSON *first = cJSON_GetArrayItem (cJSON_GetObjectItem (parsed, "deliveries"), 0);
        char ack_json [128];
        snprintf (ack_json, sizeof ack_json, "{\"delivery_ids\":[%.0f]}",
                  cJSON_GetObjectItem (first, "delivery_id")->valuedouble);
        cJSON_Delete (parsed);
        zstr_free (&body);
        s_send (worker, MMP_ACK, ack_json);
        mmp_msg_t acked;
        s_expect (worker, MMP_ACKED, &acked);
        mmp_msg_reset (&acked);
    }
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server, error_carries_req)
{
    //  PROTOCOL.md 4.3: a malformed request whose req can be read gets it back
    zsock_t *publisher = s_dealer (s_frontend);
    s_send (publisher, MMP_PUBLISH, "{\"req\":\"b7\",\"messages\":[{\"instance_name\":\"bad_name\"}]}");
    mmp_msg_t msg;
    s_expect (publisher, MMP_ERROR, &msg);
    cr_assert_str_eq (msg.code, MMP_ERR_BAD_INSTANCE_NAME);
    cr_assert_not_null (msg.req);
    cr_assert_str_eq (msg.req, "b7");
    mmp_msg_reset (&msg);
    s_send (publisher, MMP_STATS, "{\"req\":\"s1\",\"bogus\":1}");
    s_expect (publisher, MMP_ERROR, &msg);
    cr_assert_str_eq (msg.code, MMP_ERR_UNKNOWN_FIELD);
    cr_assert_str_eq (msg.req, "s1");
    mmp_msg_reset (&msg);
    //  Invalid UTF-8 is refused and never echoed
    s_send (publisher, MMP_STATS, "{\"req\":\"\xc0\xaf\"}");
    s_expect (publisher, MMP_ERROR, &msg);
    cr_assert_str_eq (msg.code, MMP_ERR_BAD_JSON);
    cr_assert_null (msg.req);
    mmp_msg_reset (&msg);
    zsock_destroy (&publisher);
}

Test (brk_server, stats_fields_are_documented)
{
    //  Every STATS counter the broker sends is named in PROTOCOL.md, and
    //  every counter the document names is sent (journal ones aside: this
    //  broker has none)
    //  Found beside this file, or from the build or source directory
    char path [512];
    snprintf (path, sizeof path, "%s", __FILE__);
    char *slash = strrchr (path, '/');
    cr_assert_not_null (slash);
    snprintf (slash, sizeof path - (size_t) (slash - path), "/../proto/PROTOCOL.md");
    FILE *file = fopen (path, "r");
    const char *others [] = { "proto/PROTOCOL.md", "../proto/PROTOCOL.md", "../../proto/PROTOCOL.md" };
    for (size_t i = 0; !file && i < 3; i++)
        file = fopen (others [i], "r");
    cr_assert_not_null (file, "cannot read %s", path);
    static char text [200000];
    size_t size = fread (text, 1, sizeof text - 1, file);
    fclose (file);
    text [size] = 0;
    char *start = strstr (text, "#### STATS");
    cr_assert_not_null (start);
    char *end = strstr (start, "#### DEADLETTERS");
    cr_assert_not_null (end);
    *end = 0;
    zsock_t *client = s_dealer (s_frontend);
    s_send (client, MMP_STATS, "{}");
    mmp_msg_t msg;
    s_expect (client, MMP_STATS, &msg);
    for (cJSON *item = msg.body->child; item; item = item->next) {
        char quoted [80];
        snprintf (quoted, sizeof quoted, "`%s`", item->string);
        cr_assert (strstr (start, quoted), "STATS sends %s, PROTOCOL.md does not list it", quoted);
    }
    //  Names in the paragraph, each `name`, must be in the reply
    const char *journal = strstr (start, "`journal`");
    for (char *cursor = strstr (start, "Known counters"); cursor && *cursor; ) {
        char *open = strchr (cursor, '`');
        if (!open || (journal && open >= journal))
            break;
        char *close = strchr (open + 1, '`');
        cr_assert_not_null (close);
        char name [64];
        snprintf (name, sizeof name, "%.*s", (int) (close - open - 1), open + 1);
        cr_assert_not_null (cJSON_GetObjectItemCaseSensitive (msg.body, name),
                            "PROTOCOL.md lists `%s`, STATS does not send it", name);
        cursor = close + 1;
    }
    mmp_msg_reset (&msg);
    zsock_destroy (&client);
}

Test (brk_server, large_requests_fit_deliver_frames, .timeout = 60)
{
    //  300 requests with 4 KB attributes at credit 1000: DELIVER is cut by
    //  bytes, so every lease reaches the worker (a frame of all 300 would
    //  be over MMP_MAX_BODY and refused by the worker's decoder)
    zsock_t *publisher = s_dealer (s_frontend);
    char attributes [MMP_MAX_ATTRIBUTES + 1];
    memset (attributes, 'x', MMP_MAX_ATTRIBUTES);
    memcpy (attributes, "{\"pad\":\"", 8);
    memcpy (attributes + MMP_MAX_ATTRIBUTES - 2, "\"}", 2);
    attributes [MMP_MAX_ATTRIBUTES] = 0;
    for (int batch = 0; batch < 3; batch++) {
        mmp_buf_t body;
        mmp_buf_init (&body);
        mmp_encode_publish_begin (&body);
        for (int i = 0; i < 100; i++) {
            char request [MMP_MAX_ATTRIBUTES + 128];
            int size = snprintf (request, sizeof request,
                                 "{\"instance_name\":\"big-%d\",\"attributes\":%s}", batch * 100 + i, attributes);
            mmp_encode_publish_add (&body, request, (size_t) size);
        }
        cr_assert_eq (mmp_encode_publish_end (&body, NULL), 0);
        cr_assert_eq (mmp_send (publisher, NULL, MMP_PUBLISH, mmp_buf_data (&body), mmp_buf_size (&body)), 0);
        mmp_buf_free (&body);
        mmp_msg_t ack;
        s_expect (publisher, MMP_PUBACK, &ack);
        mmp_msg_reset (&ack);
    }
    zsock_t *worker = s_worker (1000, "big");
    size_t first_attempts = 0, frames = 0;
    int64_t deadline = zclock_mono () + 30000;
    while (first_attempts < 300 && zclock_mono () < deadline) {
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        int rc = mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err);
        cr_assert_eq (rc, 0, "rc %d: %s", rc, rc == -2 ? err.reason : "timeout");
        if (msg.command != MMP_DELIVER) {
            mmp_msg_reset (&msg);       //  ACKED, HEARTBEAT
            continue;
        }
        frames++;
        uint64_t ids [MMP_MAX_DELIVERIES];
        for (size_t i = 0; i < msg.delivery_count; i++) {
            cr_assert_eq (msg.deliveries [i].message.attributes_size, (size_t) MMP_MAX_ATTRIBUTES);
            if (msg.deliveries [i].attempt == 1)
                first_attempts++;
            ids [i] = msg.deliveries [i].delivery_id;
        }
        mmp_buf_t body;
        mmp_buf_init (&body);
        cr_assert_eq (mmp_encode_ack (&body, ids, msg.delivery_count), 0);
        cr_assert_eq (mmp_send (worker, NULL, MMP_ACK, mmp_buf_data (&body), mmp_buf_size (&body)), 0);
        mmp_buf_free (&body);
        mmp_msg_reset (&msg);
    }
    cr_assert_eq (first_attempts, 300, "only %zu of 300 arrived", first_attempts);
    cr_assert_geq (frames, 2);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}
