/*  Tests for the durable broker: brk_server with a journal, restarted in
    the same process on the same data directory, and with write faults
    injected through the journal's io seam. The restart test runs its
    second broker on a manual clock, to see a recovered lease run out at
    exactly one ack deadline.
*/
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

static char s_dir [64];
static zactor_t *s_broker;
static char s_frontend [64];
static char s_backend [64];
static atomic_int s_fail_writes;        //  errno to fail pwrite/fsync with, or 0
static atomic_llong s_now;              //  Manual clock (ms) for brokers started on it
static uint64_t s_first_seq;            //  queue.first_seq of the next broker, 0: default

static int64_t
s_manual_now (void *arg)
{
    (void) arg;
    return (int64_t) atomic_load (&s_now);
}

static ssize_t
s_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    (void) arg;
    int error = atomic_load (&s_fail_writes);
    if (error) {
        errno = error;
        return -1;
    }
    return pwrite (fd, data, size, offset);
}

static int
s_fsync (void *arg, int fd)
{
    (void) arg;
    int error = atomic_load (&s_fail_writes);
    if (error) {
        errno = error;
        return -1;
    }
    return fsync (fd);
}

static brk_journal_io_t s_io;

static void
s_start_with (brk_journal_mode_t mode, bool manual)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.ack_deadline_ms = 500;
    config.queue.max_attempts = 2;
    config.queue.backoff_base_ms = 10;
    config.queue.backoff_max_ms = 10;
    //  Long enough that a test worker waiting on the publisher is not lost
    config.queue.heartbeat_ms = 2000;
    config.data_dir = s_dir;
    if (s_first_seq)
        config.queue.first_seq = s_first_seq;
    config.journal.mode = mode;
    config.journal.retry_interval_ms = 20;
    s_io = *brk_journal_io_system ();
    s_io.pwrite = s_pwrite;
    s_io.fsync = s_fsync;
    config.journal.io = &s_io;
    if (manual) {
        atomic_store (&s_now, 1000000);
        config.clock = (mdl_clock_t) { s_manual_now, NULL };
    }
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    zstr_send (s_broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &status), 0);
    cr_assert_eq (status, BRK_SERVER_OK);
    char *endpoints [2] = { s_frontend, s_backend };
    const char *names [2] = { "frontend", "backend" };
    for (int i = 0; i < 2; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        int port = -1;
        cr_assert_eq (zsock_recv (s_broker, "i", &port), 0);
        cr_assert_gt (port, 0);
        snprintf (endpoints [i], 64, "tcp://127.0.0.1:%d", port);
    }
}

static void
s_start (brk_journal_mode_t mode)
{
    s_start_with (mode, false);
}

//  Move the manual clock; what is due has fired when this returns.
static void
s_advance (int64_t ms)
{
    atomic_fetch_add (&s_now, ms);
    zstr_send (s_broker, "TICK");
    int rc = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &rc), 0);
    cr_assert_eq (rc, 0);
}

static int
s_remove (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) flag;
    (void) ftw;
    (void) st;
    return remove (path);
}

static void
s_setup (void)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/test_brk_durable.XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    atomic_store (&s_fail_writes, 0);
    s_first_seq = 0;
}

static void
s_teardown (void)
{
    zactor_destroy (&s_broker);
    nftw (s_dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
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

static int
s_recv (zsock_t *sock, mmp_msg_t *msg)
{
    while (true) {
        mmp_msg_init (msg);
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, NULL);
        if (rc != 0 || msg->command != MMP_HEARTBEAT)
            return rc;
        mmp_msg_reset (msg);
    }
}

static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    int rc = s_recv (sock, msg);
    cr_assert_eq (rc, 0, "expected %s: nothing came", mmp_command_name (command));
    cr_assert_eq (msg->command, command, "expected %s, got %s (%s)", mmp_command_name (command),
                  mmp_command_name (msg->command), msg->reason ? msg->reason : "");
}

static zsock_t *
s_worker (void)
{
    zsock_t *worker = s_dealer (s_backend);
    s_send (worker, MMP_HELLO, "{\"credit\":100,\"name\":\"w\"}");
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    mmp_msg_reset (&msg);
    return worker;
}

static const char *
s_id (int n)
{
    static char ids [4][37];
    char *id = ids [n % 4];
    snprintf (id, 37, "00000000-0000-4000-8000-%012d", n);
    return id;
}

static void
s_publish (zsock_t *publisher, int n, const char *expect_durability)
{
    char json [256];
    snprintf (json, sizeof json, "{\"messages\":[{\"message_id\":\"%s\",\"instance_name\":\"cattle-%04d\"}]}",
              s_id (n), n);
    s_send (publisher, MMP_PUBLISH, json);
    mmp_msg_t ack;
    s_expect (publisher, MMP_PUBACK, &ack);
    cr_assert_str_eq (ack.durability, expect_durability);
    mmp_msg_reset (&ack);
}

static void
s_ack (zsock_t *worker, uint64_t id, size_t expect_ok)
{
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "]}", id);
    s_send (worker, MMP_ACK, json);
    mmp_msg_t acked;
    s_expect (worker, MMP_ACKED, &acked);
    cr_assert_eq (acked.id_count, expect_ok);
    mmp_msg_reset (&acked);
}

//  Make the broker quiet before a fault is switched on: the lease on id
//  is extended well past the test (so the ack below is answered ok however
//  slow the machine), and a PROGRESS is waited for. PROGRESSED comes only
//  once its record is durable, and the journal makes records durable in
//  order, so the ATTEMPT record of the delivery is on disk too: nothing is
//  left for the writer, and the first write the fault meets is the test's.
static void
s_settle (zsock_t *worker, uint64_t id)
{
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"extension_ms\":20000}", id);
    s_send (worker, MMP_EXTEND, json);
    mmp_msg_t reply;
    s_expect (worker, MMP_EXTENDED, &reply);
    cr_assert_eq (reply.id_count, 1, "the lease to settle is not open");
    mmp_msg_reset (&reply);
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"steps\":[\"save\"]}", id);
    s_send (worker, MMP_PROGRESS, json);
    s_expect (worker, MMP_PROGRESSED, &reply);
    cr_assert_eq (reply.id_count, 1, "PROGRESS on the lease to settle was refused");
    mmp_msg_reset (&reply);
}

TestSuite (brk_durable, .init = s_setup, .fini = s_teardown, .timeout = 30);

Test (brk_durable, pending_messages_survive_a_restart)
{
    s_start (BRK_JOURNAL_BATCH);
    zsock_t *publisher = s_dealer (s_frontend);
    for (int i = 1; i <= 3; i++)
        s_publish (publisher, i, "batch");
    zsock_t *worker = s_worker ();
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 3);
    uint64_t first = deliver.deliveries [0].delivery_id;
    uint64_t second = deliver.deliveries [1].delivery_id;
    mmp_msg_reset (&deliver);
    s_ack (worker, first, 1);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
    zactor_destroy (&s_broker);

    //  On a manual clock, to see the recovered lease run out to the millisecond
    s_start_with (BRK_JOURNAL_BATCH, true);
    worker = s_worker ();
    //  Message 2's worker finished while the broker was down: its old id is good
    s_ack (worker, second, 1);
    //  Message 3's lease is waited out (one ack deadline, 500 ms), then
    //  redelivered after the first backoff (10 ms)
    s_advance (499);
    s_ack (worker, 1, 0);               //  A round trip: no DELIVER came before it
    s_advance (1);
    s_ack (worker, 1, 0);               //  Expired, now waiting out its backoff
    s_advance (10);
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1);
    cr_assert_str_eq (deliver.deliveries [0].message.message_id, s_id (3));
    cr_assert_eq (deliver.deliveries [0].attempt, 2, "the attempt count survives");
    cr_assert_gt (deliver.deliveries [0].delivery_id >> 32, first >> 32, "a new epoch");
    s_ack (worker, deliver.deliveries [0].delivery_id, 1);
    mmp_msg_reset (&deliver);
    //  A re-publish of a journaled id is still a duplicate, not new work
    publisher = s_dealer (s_frontend);
    s_send (publisher, MMP_PUBLISH, "{\"messages\":[{\"message_id\":\"00000000-0000-4000-8000-000000000009\","
                                    "\"instance_name\":\"x\"}]}");
    mmp_msg_t ack;
    s_expect (publisher, MMP_PUBACK, &ack);
    mmp_msg_reset (&ack);
    zsock_destroy (&publisher);
    zsock_destroy (&worker);
}

Test (brk_durable, dead_letters_survive_a_restart)
{
    s_start (BRK_JOURNAL_SYNC);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish (publisher, 5, "sync");
    zsock_t *worker = s_worker ();
    for (int attempt = 1; attempt <= 2; attempt++) {
        mmp_msg_t deliver;
        s_expect (worker, MMP_DELIVER, &deliver);
        char json [160];
        snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"delay_ms\":0,\"reason\":\"exit 3\"}",
                  deliver.deliveries [0].delivery_id);
        mmp_msg_reset (&deliver);
        s_send (worker, MMP_NACK, json);
        mmp_msg_t nacked;
        s_expect (worker, MMP_NACKED, &nacked);
        mmp_msg_reset (&nacked);
    }
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
    zactor_destroy (&s_broker);

    s_start (BRK_JOURNAL_SYNC);
    publisher = s_dealer (s_frontend);
    s_send (publisher, MMP_DEADLETTERS, "{}");
    mmp_msg_t dead;
    s_expect (publisher, MMP_DEADLETTERS, &dead);
    cJSON *list = cJSON_GetObjectItem (dead.body, "dead_letters");
    cr_assert_eq (cJSON_GetArraySize (list), 1);
    cJSON *letter = cJSON_GetArrayItem (list, 0);
    cr_assert (strstr (cJSON_GetObjectItem (letter, "reason")->valuestring, "exit 3"));
    cr_assert_eq (cJSON_GetArraySize (cJSON_GetObjectItem (letter, "history")), 2);
    mmp_msg_reset (&dead);
    s_send (publisher, MMP_REPLAY, "{\"message_ids\":[\"00000000-0000-4000-8000-000000000005\"]}");
    mmp_msg_t replayed;
    s_expect (publisher, MMP_REPLAYED, &replayed);
    cr_assert_eq (replayed.message_id_count, 1);
    mmp_msg_reset (&replayed);
    worker = s_worker ();
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.deliveries [0].attempt, 1);
    mmp_msg_reset (&deliver);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

//  A batch-mode broker holding message 1, leased to a new worker on its
//  first attempt. Returns the delivery id.
static uint64_t
s_start_one_lease (zsock_t **publisher, zsock_t **worker)
{
    s_start (BRK_JOURNAL_BATCH);
    *publisher = s_dealer (s_frontend);
    s_publish (*publisher, 1, "batch");
    *worker = s_worker ();
    mmp_msg_t deliver;
    s_expect (*worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1);
    cr_assert_eq (deliver.deliveries [0].attempt, 1);
    uint64_t leased = deliver.deliveries [0].delivery_id;
    mmp_msg_reset (&deliver);
    return leased;
}

Test (brk_durable, full_disk_refuses_publish_keeps_acks_and_recovers)
{
    zsock_t *publisher, *worker;
    uint64_t leased = s_start_one_lease (&publisher, &worker);
    mmp_msg_t deliver;
    s_settle (worker, leased);

    atomic_store (&s_fail_writes, ENOSPC);
    //  This batch cannot be made durable: no PUBACK while the disk is full
    s_send (publisher, MMP_PUBLISH, "{\"messages\":[{\"message_id\":\"00000000-0000-4000-8000-000000000002\","
                                    "\"instance_name\":\"b\"}],\"req\":\"two\"}");
    zsock_set_rcvtimeo (publisher, 300);
    mmp_msg_t reply;
    int rc = s_recv (publisher, &reply);
    cr_assert_neq (rc, 0, "%s came for a batch the disk refused (%s)",
                   mmp_command_name (reply.command), reply.code ? reply.code : "");
    //  Once the broker knows, a new batch is refused outright
    bool refused = false;
    for (int i = 0; i < 20 && !refused; i++) {
        s_send (publisher, MMP_PUBLISH, "{\"messages\":[{\"instance_name\":\"c\"}],\"req\":\"three\"}");
        if (s_recv (publisher, &reply) == 0) {
            cr_assert_eq (reply.command, MMP_ERROR);
            cr_assert_str_eq (reply.code, MMP_ERR_UNAVAILABLE);
            refused = true;
            mmp_msg_reset (&reply);
        }
    }
    cr_assert (refused, "PUBLISH was not refused on a full disk");
    //  Acks keep working
    s_ack (worker, leased, 1);
    //  Space comes back: the held batch is confirmed, publishing works again
    atomic_store (&s_fail_writes, 0);
    zsock_set_rcvtimeo (publisher, 3000);
    s_expect (publisher, MMP_PUBACK, &reply);
    cr_assert_str_eq (reply.req, "two");
    mmp_msg_reset (&reply);
    s_publish (publisher, 4, "batch");
    s_expect (worker, MMP_DELIVER, &deliver);
    size_t got = deliver.delivery_count;
    mmp_msg_reset (&deliver);
    if (got < 2) {
        s_expect (worker, MMP_DELIVER, &deliver);
        got += deliver.delivery_count;
        mmp_msg_reset (&deliver);
    }
    cr_assert_eq (got, 2, "the held message and the new one");
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_durable, none_mode_says_so)
{
    s_start (BRK_JOURNAL_NONE);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish (publisher, 1, "none");
    zsock_destroy (&publisher);
}

Test (brk_durable, a_second_broker_on_the_same_dir_is_refused)
{
    s_start (BRK_JOURNAL_BATCH);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.data_dir = s_dir;
    zactor_t *second = zactor_new (brk_server, &config);
    zstr_send (second, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (second, "i", &status), 0);
    cr_assert_eq (status, BRK_SERVER_LOCKED);
    zactor_destroy (&second);
}

//  A publisher that retries across a restart must not queue a finished
//  request again: the acked id is still a duplicate after the restart,
//  and after the next one (snapshots: test_brk_journal_v3).
Test (brk_durable, acked_ids_stay_duplicates_after_a_restart)
{
    s_start (BRK_JOURNAL_BATCH);
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish (publisher, 1, "batch");
    s_publish (publisher, 2, "batch");
    zsock_t *worker = s_worker ();
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 2);
    uint64_t first = deliver.deliveries [0].delivery_id;
    cr_assert_str_eq (deliver.deliveries [0].message.message_id, s_id (1));
    mmp_msg_reset (&deliver);
    s_ack (worker, first, 1);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
    zactor_destroy (&s_broker);

    for (int run = 0; run < 2; run++) {
        s_start (BRK_JOURNAL_BATCH);
        publisher = s_dealer (s_frontend);
        char json [256];
        snprintf (json, sizeof json, "{\"messages\":[{\"message_id\":\"%s\","
                  "\"instance_name\":\"cattle-0001\"}],\"req\":\"again\"}", s_id (1));
        s_send (publisher, MMP_PUBLISH, json);
        mmp_msg_t ack;
        s_expect (publisher, MMP_PUBACK, &ack);
        cr_assert_eq (ack.message_id_count, 1);
        cr_assert_eq (ack.other_id_count, 1, "run %d: the acked id is a duplicate", run);
        cr_assert_str_eq (ack.other_ids [0], s_id (1));
        mmp_msg_reset (&ack);
        //  Only message 2 is pending: the retry queued nothing
        s_send (publisher, MMP_STATS, "{}");
        mmp_msg_t stats;
        s_expect (publisher, MMP_STATS, &stats);
        cr_assert_eq (cJSON_GetObjectItem (stats.body, "ready")->valuedouble
                      + cJSON_GetObjectItem (stats.body, "in_flight")->valuedouble, 1);
        mmp_msg_reset (&stats);
        zsock_destroy (&publisher);
        zactor_destroy (&s_broker);
    }
}

//  A run that used up 2^32 delivery ids moved to the next epoch; the next
//  start must pass that one too, or an old ACK could end a new lease.
Test (brk_durable, an_epoch_raised_during_a_run_is_not_reused)
{
    s_first_seq = UINT64_C (0xFFFFFFFF);
    s_start (BRK_JOURNAL_BATCH);
    s_first_seq = 0;
    zsock_t *publisher = s_dealer (s_frontend);
    s_publish (publisher, 1, "batch");
    s_publish (publisher, 2, "batch");
    zsock_t *worker = s_worker ();
    mmp_msg_t deliver;
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 2);
    uint64_t first = deliver.deliveries [0].delivery_id;
    uint64_t second = deliver.deliveries [1].delivery_id;
    mmp_msg_reset (&deliver);
    cr_assert_eq (first & 0xFFFFFFFF, 0xFFFFFFFF);
    cr_assert_eq (second >> 32, (first >> 32) + 1, "the second lease is in the next epoch");
    cr_assert_eq (second & 0xFFFFFFFF, 1);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
    //  kill -9 is not needed: the EPOCH record was synced when it was
    //  made, and a clean stop adds nothing about epochs
    zactor_destroy (&s_broker);

    s_start (BRK_JOURNAL_BATCH);
    worker = s_dealer (s_backend);
    s_send (worker, MMP_HELLO, "{\"credit\":100,\"name\":\"w\"}");
    mmp_msg_t welcome;
    s_expect (worker, MMP_WELCOME, &welcome);
    cr_assert_gt ((uint64_t) welcome.epoch, second >> 32, "epoch %" PRId64 " after %" PRIu64,
                  (int64_t) welcome.epoch, second >> 32);
    mmp_msg_reset (&welcome);
    zsock_destroy (&worker);
}

//  Issue 8: a lease given back unused (here by BYE, as a worker shutting
//  down gives back what crossed its BYE) is journaled as given back, so a
//  restart before the next delivery neither holds the message as leased
//  for an ack deadline nor counts the returned attempt again.
Test (brk_durable, a_requeued_lease_stays_given_back_after_a_restart)
{
    zsock_t *publisher, *worker;
    s_start_one_lease (&publisher, &worker);
    mmp_msg_t deliver;
    s_send (worker, MMP_BYE, "{}");
    //  Until STATS counts the lease given back
    double requeued = 0;
    for (int tries = 0; tries < 100 && requeued < 1; tries++) {
        s_send (publisher, MMP_STATS, "{}");
        mmp_msg_t stats;
        s_expect (publisher, MMP_STATS, &stats);
        cJSON *item = cJSON_GetObjectItem (stats.body, "requeued");
        requeued = item ? item->valuedouble : 0;
        mmp_msg_reset (&stats);
        if (requeued < 1)
            zclock_sleep (20);
    }
    cr_assert_eq (requeued, 1, "the BYE gave nothing back");
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
    zactor_destroy (&s_broker);

    //  On a manual clock that does not move: a lease held over from the
    //  first run would never run out
    s_start_with (BRK_JOURNAL_BATCH, true);
    worker = s_worker ();
    s_expect (worker, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1);
    cr_assert_str_eq (deliver.deliveries [0].message.message_id, s_id (1));
    cr_expect_eq (deliver.deliveries [0].attempt, 1, "the given-back attempt was counted again");
    s_ack (worker, deliver.deliveries [0].delivery_id, 1);
    mmp_msg_reset (&deliver);
    zsock_destroy (&worker);
}
