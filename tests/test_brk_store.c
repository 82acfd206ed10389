/*  Tests for brk_store: the memory store (a null object), the journal
    store over a temporary directory, and the seam itself: a broker actor
    on a recording store that the test drives (its durable position, its
    failure), to check the server asks the store for what it must and
    waits for it where it must.
*/
#include <criterion/criterion.h>
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "brk_server.h"
#include "brk_store_journal.h"
#include "brk_store_memory.h"
#include "mdl_log.h"
#include "mmp.h"

//  --------------------------------------------------------------------------
//  Memory store

Test (brk_store, memory_is_durable_at_once, .timeout = 10)
{
    brk_store_t *store = brk_store_memory_new (42);
    cr_assert_not_null (store);
    cr_assert_str_eq (brk_store_name (store), "memory");
    cr_assert_not (brk_store_deferred (store));
    cr_assert_eq (brk_store_epoch (store), 42);
    cr_assert_eq (brk_store_durable (store), 0);
    brk_store_record_t record = { .kind = BRK_STORE_PUBLISH, .message_id = "x", .request = "{}" };
    cr_assert_eq (brk_store_append (store, &record), 1);
    record.kind = BRK_STORE_ACK;
    cr_assert_eq (brk_store_append (store, &record), 2);
    cr_assert_eq (brk_store_durable (store), 2, "durable as soon as appended");
    cr_assert_eq (brk_store_commit (store), 0);
    cr_assert_eq (brk_store_sync (store), 0);
    cr_assert_eq (brk_store_fd (store), -1);
    cr_assert_eq (brk_store_status (store), 0);
    brk_store_stats_t stats;
    brk_store_stats (store, &stats);
    cr_assert_not (stats.persistent);
    cr_assert_null (stats.dir);
    cr_assert_eq (stats.appended, 2);
    cr_assert_eq (stats.durable, 2);
    cr_assert_eq (stats.fsync_max_us, -1);
    brk_store_destroy (&store);
    cr_assert_null (store);
    brk_store_destroy (&store);
}

Test (brk_store, memory_epoch_is_at_least_one, .timeout = 10)
{
    brk_store_t *store = brk_store_memory_new (0);
    cr_assert_eq (brk_store_epoch (store), 1);
    brk_store_destroy (&store);
}

//  --------------------------------------------------------------------------
//  Journal store

static int
s_remove (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) st; (void) flag; (void) ftw;
    return remove (path);
}

typedef struct {
    int count;                  //  Messages recovered
    char id [37];               //  The last one's id
    char json [128];            //  Its request
    int64_t attempts;           //  Its attempts
} s_recovered_t;

static int
s_recover_into (void *arg, const brk_restore_t *restore)
{
    s_recovered_t *recovered = (s_recovered_t *) arg;
    recovered->count++;
    snprintf (recovered->id, sizeof recovered->id, "%s", restore->message_id);
    snprintf (recovered->json, sizeof recovered->json, "%.*s", (int) restore->json_len, restore->json);
    recovered->attempts = restore->attempts;
    return 0;
}

Test (brk_store, journal_keeps_what_it_was_given, .timeout = 30)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [64];
    snprintf (dir, sizeof dir, "/tmp/test_brk_store.XXXXXX");
    cr_assert_not_null (mkdtemp (dir));
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = dir;
    config.mode = BRK_JOURNAL_SYNC;
    int status = -1;
    brk_store_t *store = brk_store_journal_new (&config, s_recover_into, NULL, &status);
    cr_assert_not_null (store);
    cr_assert_eq (status, BRK_STORE_OK);
    cr_assert_str_eq (brk_store_name (store), "sync");
    cr_assert (brk_store_deferred (store));
    uint64_t epoch = brk_store_epoch (store);
    cr_assert_geq (brk_store_fd (store), 0);
    const char *id = "00000000-0000-4000-8000-000000000001";
    brk_store_record_t record = {
        .kind = BRK_STORE_PUBLISH, .message_id = id,
        .request = "{\"message_id\":\"00000000-0000-4000-8000-000000000001\"}", .published_ms = 1
    };
    uint64_t seq = brk_store_append (store, &record);
    cr_assert_gt (seq, 0);
    record = (brk_store_record_t) { .kind = BRK_STORE_ATTEMPT, .message_id = id,
                                    .attempt = 1, .delivery_id = 77 };
    cr_assert_gt (brk_store_append (store, &record), seq);
    cr_assert_eq (brk_store_commit (store), 0);
    cr_assert_eq (brk_store_sync (store), 0);
    cr_assert_geq (brk_store_durable (store), seq + 1);
    brk_store_stats_t stats;
    brk_store_stats (store, &stats);
    cr_assert (stats.persistent);
    cr_assert_str_eq (stats.dir, dir);
    cr_assert_gt (stats.disk_bytes, 0);
    cr_assert_eq (stats.live_messages, 1);

    //  A second store on the same directory is refused while this one holds it
    int locked = -1;
    cr_assert_null (brk_store_journal_new (&config, NULL, NULL, &locked));
    cr_assert_eq (locked, BRK_STORE_LOCKED);
    brk_store_destroy (&store);

    s_recovered_t recovered;
    memset (&recovered, 0, sizeof recovered);
    store = brk_store_journal_new (&config, s_recover_into, &recovered, &status);
    cr_assert_not_null (store);
    cr_assert_eq (recovered.count, 1);
    cr_assert_str_eq (recovered.id, id);
    cr_assert_str_eq (recovered.json, "{\"message_id\":\"00000000-0000-4000-8000-000000000001\"}");
    cr_assert_eq (recovered.attempts, 1);
    cr_assert_eq (brk_store_epoch (store), epoch + 1, "every open is a new epoch");
    brk_store_destroy (&store);
    nftw (dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
}

Test (brk_store, journal_in_none_mode_does_not_defer, .timeout = 30)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [64];
    snprintf (dir, sizeof dir, "/tmp/test_brk_store.XXXXXX");
    cr_assert_not_null (mkdtemp (dir));
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = dir;
    config.mode = BRK_JOURNAL_NONE;
    int status = -1;
    brk_store_t *store = brk_store_journal_new (&config, NULL, NULL, &status);
    cr_assert_not_null (store);
    cr_assert_str_eq (brk_store_name (store), "none");
    cr_assert_not (brk_store_deferred (store), "none mode: changes are acted on at once");
    cr_assert_eq (brk_store_epoch (store), 1, "a new directory starts at epoch 1");
    brk_store_destroy (&store);
    nftw (dir, s_remove, 16, FTW_DEPTH | FTW_PHYS);
}

//  --------------------------------------------------------------------------
//  The seam: a broker on a store that records what it is asked

typedef struct {
    brk_store_kind_t kind;      //  What
    char message_id [37];       //  Of which message
    uint64_t delivery_id;       //  ATTEMPT
    uint32_t attempt;           //  ATTEMPT
    bool has_request;           //  PUBLISH: came with its JSON
    uint64_t epoch;             //  EPOCH
    int syncs_before;           //  sync () calls made before this append
} s_call_t;

//  Shared by the test thread and the broker's: under s_lock.
static pthread_mutex_t s_lock = PTHREAD_MUTEX_INITIALIZER;
static s_call_t s_calls [256];
static size_t s_call_count;
static uint64_t s_appended;             //  Last sequence handed out
static uint64_t s_durable;              //  Set by the test
static int s_status;                    //  Set by the test
static int s_commits;                   //  commit () calls
static int s_syncs;                     //  sync () calls
static int s_destroys;                  //  destroy () calls
static int s_event_fd = -1;             //  Readable when the test moved durable or status
static size_t s_commit_at [64];         //  s_call_count at each commit () (the first 64)
static bool s_commit_durable;           //  commit () makes everything durable at once
static char s_slow_id [37];             //  Its append takes 300 ms (the loop is busy)
static char s_hold_id [37];             //  Its append waits for s_released (at most 2 s)
static bool s_released;                 //  Set by the test
static bool s_hold_timed_out;           //  The wait for s_released ran out
static char s_durable_at_id [37];       //  Its append makes everything so far durable
static const char *const *s_seam_specs; //  Restart groups for the next seam broker
static size_t s_seam_spec_count;
static pthread_cond_t s_release_cond = PTHREAD_COND_INITIALIZER;

static uint64_t
s_rec_append (void *state, const brk_store_record_t *record)
{
    (void) state;
    pthread_mutex_lock (&s_lock);
    uint64_t seq = 0;
    if (!(s_status && record->kind == BRK_STORE_PUBLISH) && s_call_count < 256) {
        s_call_t *call = &s_calls [s_call_count++];
        call->kind = record->kind;
        snprintf (call->message_id, sizeof call->message_id, "%s",
                  record->message_id ? record->message_id : "");
        call->epoch = record->epoch;
        call->syncs_before = s_syncs;
        call->delivery_id = record->delivery_id;
        call->attempt = record->attempt;
        call->has_request = record->request && record->message_id
                         && strstr (record->request, record->message_id);
        seq = ++s_appended;
    }
    const char *id = record->message_id ? record->message_id : "";
    bool moved = false;
    if (*s_durable_at_id && streq (id, s_durable_at_id)) {
        s_durable = s_appended;
        moved = true;
    }
    if (*s_hold_id && streq (id, s_hold_id)) {
        struct timespec until;
        clock_gettime (CLOCK_REALTIME, &until);
        until.tv_sec += 2;
        while (!s_released && !s_hold_timed_out)
            if (pthread_cond_timedwait (&s_release_cond, &s_lock, &until) == ETIMEDOUT)
                s_hold_timed_out = true;
    }
    pthread_mutex_unlock (&s_lock);
    uint64_t one = 1;
    if (moved && write (s_event_fd, &one, sizeof one) != (ssize_t) sizeof one)
        return 0;
    if (*s_slow_id && streq (id, s_slow_id))
        zclock_sleep (300);
    return seq;
}

static int
s_rec_commit (void *state)
{
    (void) state;
    pthread_mutex_lock (&s_lock);
    if (s_commits < 64)
        s_commit_at [s_commits] = s_call_count;
    s_commits++;
    bool signal = s_commit_durable && s_durable != s_appended;
    if (s_commit_durable)
        s_durable = s_appended;
    pthread_mutex_unlock (&s_lock);
    uint64_t one = 1;
    if (signal && write (s_event_fd, &one, sizeof one) != (ssize_t) sizeof one)
        return -1;
    return 0;
}

static uint64_t
s_rec_durable (void *state)
{
    (void) state;
    uint64_t count;
    if (read (s_event_fd, &count, sizeof count) < 0)
        count = 0;              //  Not signalled: nothing to clear
    pthread_mutex_lock (&s_lock);
    uint64_t durable = s_durable;
    pthread_mutex_unlock (&s_lock);
    return durable;
}

static int
s_rec_fd (void *state)
{
    (void) state;
    return s_event_fd;
}

static int
s_rec_status (void *state)
{
    (void) state;
    pthread_mutex_lock (&s_lock);
    int status = s_status;
    pthread_mutex_unlock (&s_lock);
    return status;
}

static void
s_rec_stats (void *state, brk_store_stats_t *stats)
{
    (void) state;
    memset (stats, 0, sizeof *stats);
    stats->appended = s_appended;
    pthread_mutex_lock (&s_lock);
    stats->durable = s_durable;
    pthread_mutex_unlock (&s_lock);
    stats->fsync_max_us = -1;
}

static int
s_rec_sync (void *state)
{
    (void) state;
    pthread_mutex_lock (&s_lock);
    s_syncs++;
    s_durable = s_appended;
    pthread_mutex_unlock (&s_lock);
    return 0;
}

static void
s_rec_destroy (void *state)
{
    (void) state;
    pthread_mutex_lock (&s_lock);
    s_destroys++;
    pthread_mutex_unlock (&s_lock);
}

static const brk_store_ops_t s_rec_ops = {
    s_rec_append, s_rec_commit, s_rec_durable, s_rec_fd, s_rec_status, s_rec_stats,
    s_rec_sync, s_rec_destroy, NULL, NULL, NULL
};

static const char *s_recovered_id = "00000000-0000-4000-8000-0000000000aa";
static const char *s_acked_id = "00000000-0000-4000-8000-0000000000bb";
static uint64_t s_first_seq;            //  queue.first_seq of the next seam broker, 0: default

static brk_store_t *
s_rec_open (void *arg, brk_store_recover_fn *recover, void *recover_arg, int *status)
{
    (void) arg;
    //  Hand back one message, leased once before "the restart"
    char json [160];
    snprintf (json, sizeof json, "{\"message_id\":\"%s\",\"instance_name\":\"kept\","
              "\"hostname\":\"kept.example.net\"}", s_recovered_id);
    brk_restore_t restore = {
        .message_id = s_recovered_id, .json = json, .json_len = strlen (json),
        .published_ms = 0, .attempts = 1, .delivery_id = (UINT64_C (8) << 32) | 5
    };
    //  And one acked id, kept for duplicate detection
    brk_restore_t done = { .message_id = s_acked_id, .done = true };
    if (recover (recover_arg, &done) != 0 || recover (recover_arg, &restore) != 0) {
        *status = BRK_STORE_FAILED;
        return NULL;
    }
    *status = BRK_STORE_OK;
    return brk_store_new (&s_rec_ops, NULL, "sync", true, 9);
}

static zactor_t *s_broker;
static char s_frontend [64];
static char s_backend [64];

static void
s_seam_setup (void)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    s_event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    cr_assert_geq (s_event_fd, 0);
    s_call_count = 0;
    s_appended = s_durable = 0;
    s_status = s_commits = s_syncs = s_destroys = 0;
    s_commit_durable = s_released = s_hold_timed_out = false;
    s_slow_id [0] = s_hold_id [0] = s_durable_at_id [0] = 0;
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.heartbeat_ms = 5000;
    config.store_open = s_rec_open;
    config.group_specs = s_seam_specs;
    config.group_spec_count = s_seam_spec_count;
    if (s_first_seq)
        config.queue.first_seq = s_first_seq;
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
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
s_seam_teardown (void)
{
    zactor_destroy (&s_broker);
    close (s_event_fd);
    s_event_fd = -1;
}

//  Make everything appended so far durable (or set a failure) and tell the broker.
static void
s_store_moves (bool all_durable, int status)
{
    pthread_mutex_lock (&s_lock);
    if (all_durable)
        s_durable = s_appended;
    s_status = status;
    pthread_mutex_unlock (&s_lock);
    uint64_t one = 1;
    cr_assert_eq (write (s_event_fd, &one, sizeof one), (ssize_t) sizeof one);
}

static size_t
s_count (brk_store_kind_t kind, const char *message_id)
{
    size_t count = 0;
    pthread_mutex_lock (&s_lock);
    for (size_t i = 0; i < s_call_count; i++)
        if (s_calls [i].kind == kind && (!message_id || streq (s_calls [i].message_id, message_id)))
            count++;
    pthread_mutex_unlock (&s_lock);
    return count;
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
    cr_assert_eq (s_recv (sock, msg), 0, "expected %s: nothing came", mmp_command_name (command));
    cr_assert_eq (msg->command, command, "expected %s, got %s (%s)", mmp_command_name (command),
                  mmp_command_name (msg->command), msg->reason ? msg->reason : "");
}

//  Nothing (but heartbeats) within ms.
static void
s_expect_nothing (zsock_t *sock, int ms)
{
    zsock_set_rcvtimeo (sock, ms);
    mmp_msg_t msg;
    int rc = s_recv (sock, &msg);
    if (rc == 0) {
        mmp_command_t command = msg.command;
        mmp_msg_reset (&msg);
        cr_assert_fail ("unexpected %s", mmp_command_name (command));
    }
    zsock_set_rcvtimeo (sock, 3000);
}

TestSuite (brk_store_seam, .init = s_seam_setup, .fini = s_seam_teardown, .timeout = 30);

Test (brk_store_seam, the_broker_waits_for_the_store)
{
    zsock_t *worker = s_dealer (s_backend);
    s_send (worker, MMP_HELLO, "{\"credit\":10,\"name\":\"w\"}");
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    cr_assert_eq (msg.epoch, 9, "the epoch is the store's");
    mmp_msg_reset (&msg);
    //  The recovered message reaches the queue; its old lease is waited
    //  out first, so it is not delivered at once
    zsock_t *client = s_dealer (s_frontend);
    s_send (client, MMP_STATS, "{}");
    s_expect (client, MMP_STATS, &msg);
    cr_assert_eq (cJSON_GetObjectItem (msg.body, "in_flight")->valuedouble, 1);
    cr_assert_str_eq (cJSON_GetObjectItem (msg.body, "durability")->valuestring, "sync");
    mmp_msg_reset (&msg);

    //  PUBLISH: appended with its request, committed, but neither
    //  acknowledged nor delivered before the store says it is durable
    const char *id = "00000000-0000-4000-8000-000000000001";
    s_send (client, MMP_PUBLISH, "{\"messages\":[{\"message_id\":\"00000000-0000-4000-8000-000000000001\","
                                 "\"instance_name\":\"cattle-1\"}],\"req\":\"p\"}");
    s_expect_nothing (client, 200);
    cr_assert_eq (s_count (BRK_STORE_PUBLISH, id), 1);
    pthread_mutex_lock (&s_lock);
    cr_assert (s_calls [0].has_request, "PUBLISH carries the request text");
    cr_assert_gt (s_commits, 0, "a commit was asked for");
    pthread_mutex_unlock (&s_lock);
    s_expect_nothing (worker, 50);
    s_store_moves (true, 0);
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_str_eq (msg.req, "p");
    cr_assert_str_eq (msg.durability, "sync");
    mmp_msg_reset (&msg);

    //  Now it is delivered, and the lease is recorded
    s_expect (worker, MMP_DELIVER, &msg);
    cr_assert_eq (msg.delivery_count, 1);
    uint64_t delivery_id = msg.deliveries [0].delivery_id;
    cr_assert_eq (delivery_id >> 32, 9);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_count (BRK_STORE_ATTEMPT, id), 1);
    pthread_mutex_lock (&s_lock);
    bool found = false;
    for (size_t i = 0; i < s_call_count; i++)
        if (s_calls [i].kind == BRK_STORE_ATTEMPT && streq (s_calls [i].message_id, id)) {
            cr_assert_eq (s_calls [i].delivery_id, delivery_id);
            cr_assert_eq (s_calls [i].attempt, 1);
            found = true;
        }
    pthread_mutex_unlock (&s_lock);
    cr_assert (found);

    //  PROGRESS and ACK: recorded, answered only once durable
    char json [128];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "],\"steps\":[\"save\"]}", delivery_id);
    s_send (worker, MMP_PROGRESS, json);
    s_expect_nothing (worker, 100);
    cr_assert_eq (s_count (BRK_STORE_PROGRESS, id), 1);
    s_store_moves (true, 0);
    s_expect (worker, MMP_PROGRESSED, &msg);
    cr_assert_eq (msg.id_count, 1);
    mmp_msg_reset (&msg);
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "]}", delivery_id);
    s_send (worker, MMP_ACK, json);
    s_expect_nothing (worker, 100);
    cr_assert_eq (s_count (BRK_STORE_ACK, id), 1);
    s_store_moves (true, 0);
    s_expect (worker, MMP_ACKED, &msg);
    cr_assert_eq (msg.id_count, 1);
    mmp_msg_reset (&msg);

    //  An ACK that changes nothing needs no store and is answered at once
    s_send (worker, MMP_ACK, json);
    s_expect (worker, MMP_ACKED, &msg);
    cr_assert_eq (msg.stale_count, 1);
    mmp_msg_reset (&msg);
    zsock_destroy (&client);
    zsock_destroy (&worker);

    //  At the stop: a final sync, then the store is closed
    zactor_destroy (&s_broker);
    cr_assert_eq (s_syncs, 1);
    cr_assert_eq (s_destroys, 1);
}

Test (brk_store_seam, a_failing_store_refuses_publish)
{
    zsock_t *client = s_dealer (s_frontend);
    s_store_moves (false, ENOSPC);
    //  The broker learns of the failure from the fd; publish until refused
    bool refused = false;
    for (int i = 0; i < 50 && !refused; i++) {
        s_send (client, MMP_PUBLISH, "{\"messages\":[{\"instance_name\":\"c\"}],\"req\":\"x\"}");
        mmp_msg_t msg;
        cr_assert_eq (s_recv (client, &msg), 0, "no reply to PUBLISH");
        if (msg.command == MMP_ERROR) {
            cr_assert_str_eq (msg.code, MMP_ERR_UNAVAILABLE);
            refused = true;
        }
        mmp_msg_reset (&msg);
    }
    cr_assert (refused);
    cr_assert_eq (s_count (BRK_STORE_PUBLISH, NULL), 0, "nothing was stored");
    //  Writing works again: PUBLISH is taken (and acknowledged once durable)
    s_store_moves (false, 0);
    bool taken = false;
    zsock_set_rcvtimeo (client, 50);
    for (int i = 0; i < 100 && !taken; i++) {
        s_send (client, MMP_PUBLISH, "{\"messages\":[{\"instance_name\":\"d\"}]}");
        //  Its PUBACK waits for durability: keep making things durable
        mmp_msg_t msg;
        int rc = -1;
        for (int tries = 0; tries < 60 && rc != 0; tries++) {
            s_store_moves (true, 0);
            rc = s_recv (client, &msg);
        }
        cr_assert_eq (rc, 0, "no reply to PUBLISH");
        taken = msg.command == MMP_PUBACK;
        mmp_msg_reset (&msg);
    }
    cr_assert (taken);
    cr_assert_geq (s_count (BRK_STORE_PUBLISH, NULL), 1);
    zsock_destroy (&client);
}

Test (brk_store_seam, an_acked_id_the_store_kept_is_a_duplicate)
{
    zsock_t *client = s_dealer (s_frontend);
    char json [160];
    snprintf (json, sizeof json, "{\"messages\":[{\"message_id\":\"%s\","
              "\"instance_name\":\"cattle-1\"}],\"req\":\"d\"}", s_acked_id);
    s_send (client, MMP_PUBLISH, json);
    mmp_msg_t msg;
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_eq (msg.other_id_count, 1, "the kept id is a duplicate");
    cr_assert_str_eq (msg.other_ids [0], s_acked_id);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_count (BRK_STORE_PUBLISH, NULL), 0, "nothing new was stored");
    zsock_destroy (&client);
}

//  After 2^32 leases in one run the delivery ids move to the next epoch:
//  the store is told, and the new epoch is synced before its first lease
//  goes out. (The broker is started again at the last sequence number of
//  epoch 9.)
Test (brk_store_seam, a_new_epoch_is_synced_before_its_first_lease)
{
    s_seam_teardown ();
    s_first_seq = UINT64_C (0xFFFFFFFF);
    s_seam_setup ();
    s_first_seq = 0;
    zsock_t *client = s_dealer (s_frontend);
    s_send (client, MMP_PUBLISH, "{\"messages\":[{\"instance_name\":\"a\"},"
                                 "{\"instance_name\":\"b\"}]}");
    //  Make them durable once both are appended (bounded wait)
    for (int i = 0; i < 500 && s_count (BRK_STORE_PUBLISH, NULL) < 2; i++)
        zclock_sleep (10);
    cr_assert_eq (s_count (BRK_STORE_PUBLISH, NULL), 2);
    s_store_moves (true, 0);
    mmp_msg_t msg;
    s_expect (client, MMP_PUBACK, &msg);
    mmp_msg_reset (&msg);
    zsock_t *worker = s_dealer (s_backend);
    s_send (worker, MMP_HELLO, "{\"credit\":10,\"name\":\"w\"}");
    s_expect (worker, MMP_WELCOME, &msg);
    mmp_msg_reset (&msg);
    s_expect (worker, MMP_DELIVER, &msg);
    cr_assert_eq (msg.delivery_count, 2);
    cr_assert_eq (msg.deliveries [0].delivery_id, (UINT64_C (9) << 32) | 0xFFFFFFFF);
    cr_assert_eq (msg.deliveries [1].delivery_id, (UINT64_C (10) << 32) | 1);
    mmp_msg_reset (&msg);
    //  Asserted on a copy: a failed assert must not leave the lock held
    static s_call_t calls [256];
    pthread_mutex_lock (&s_lock);
    size_t count = s_call_count;
    memcpy (calls, s_calls, sizeof calls);
    pthread_mutex_unlock (&s_lock);
    int epoch_at = -1, second_at = -1, epochs = 0;
    for (size_t i = 0; i < count; i++) {
        if (calls [i].kind == BRK_STORE_EPOCH) {
            epochs++;
            cr_assert_eq (calls [i].epoch, 10);
            epoch_at = (int) i;
        }
        if (calls [i].kind == BRK_STORE_ATTEMPT && calls [i].delivery_id >> 32 == 10)
            second_at = (int) i;
    }
    cr_assert_eq (epochs, 1, "the store was told of the new epoch once");
    cr_assert_gt (second_at, epoch_at);
    cr_assert_gt (calls [second_at].syncs_before, calls [epoch_at].syncs_before,
                  "synced before the new epoch's first lease");
    zsock_destroy (&worker);
    zsock_destroy (&client);
    zactor_destroy (&s_broker);
}

//  A PUBLISH of n requests with ids ...-<prefix><index>, and the id of its last.
static void
s_publish_batch (zsock_t *client, int prefix, int n, const char *req, char *last)
{
    char *json = malloc ((size_t) n * 80 + 64);
    cr_assert_not_null (json);
    size_t size = (size_t) sprintf (json, "{\"messages\":[");
    cr_assert (prefix >= 0 && prefix < 10000 && n >= 0 && n < 100000000);
    for (int i = 0; i < n; i++) {
        char id [64];
        snprintf (id, sizeof id, "00000000-0000-4000-8000-%04d%08d", prefix, i);
        memcpy (last, id, 37);
        size += (size_t) sprintf (json + size, "%s{\"message_id\":\"%s\",\"instance_name\":\"c-%d\"}",
                                  i ? "," : "", last, i);
    }
    sprintf (json + size, "],\"req\":\"%s\"}", req);
    s_send (client, MMP_PUBLISH, json);
    free (json);
}

//  Two large batches read in one turn: the first is committed as soon as
//  it is handled, and its PUBACK leaves while the second is handled.
Test (brk_store_seam, a_large_batch_is_committed_and_answered_while_the_next_is_handled)
{
    zsock_t *client = s_dealer (s_frontend);
    zsock_set_rcvtimeo (client, 1500);
    char slow [37], last_a [37], last_b [37];
    pthread_mutex_lock (&s_lock);
    s_commit_durable = true;
    snprintf (s_slow_id, sizeof s_slow_id, "00000000-0000-4000-8000-000900000000");
    snprintf (s_hold_id, sizeof s_hold_id, "00000000-0000-4000-8000-000200000069");
    pthread_mutex_unlock (&s_lock);
    //  The slow append keeps the loop busy while A and B arrive: one drain
    //  reads all three
    s_publish_batch (client, 9, 1, "s", slow);
    s_publish_batch (client, 1, 70, "a", last_a);
    s_publish_batch (client, 2, 70, "b", last_b);
    cr_assert_str_eq (last_b, s_hold_id);
    //  B's last append waits until A's PUBACK is here: it comes before B is done
    mmp_msg_t msg;
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_str_eq (msg.req, "s");
    mmp_msg_reset (&msg);
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_str_eq (msg.req, "a");
    mmp_msg_reset (&msg);
    pthread_mutex_lock (&s_lock);
    s_released = true;
    pthread_cond_broadcast (&s_release_cond);
    bool timed_out = s_hold_timed_out;
    pthread_mutex_unlock (&s_lock);
    cr_assert_not (timed_out, "A's PUBACK waited for the end of B");
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_str_eq (msg.req, "b");
    mmp_msg_reset (&msg);
    //  Committed right after A's last append
    bool committed_after_a = false;
    pthread_mutex_lock (&s_lock);
    for (int i = 0; i < s_commits && i < 64; i++)
        if (s_commit_at [i] > 0 && s_calls [s_commit_at [i] - 1].kind == BRK_STORE_PUBLISH
        &&  streq (s_calls [s_commit_at [i] - 1].message_id, last_a))
            committed_after_a = true;
    pthread_mutex_unlock (&s_lock);
    cr_assert (committed_after_a, "no commit between A and B");
    zsock_destroy (&client);
}

//  Under a policy, two requests for one host in one batch: the second
//  joins the first only after the PUBACK is built (PROTOCOL.md), even when
//  part of the batch becomes durable while it is handled.
static const char *const s_web_group [] = { "web:web-*:2" };

static void
s_policy_seam_setup (void)
{
    s_seam_specs = s_web_group;
    s_seam_spec_count = 1;
    s_seam_setup ();
    s_seam_specs = NULL;
    s_seam_spec_count = 0;
}

//  Its own suite: a test's .init runs after the suite's, not instead
TestSuite (brk_store_seam_policy, .init = s_policy_seam_setup, .fini = s_seam_teardown,
           .timeout = 30);

Test (brk_store_seam_policy, coalescing_inside_a_batch_does_not_depend_on_the_disk)
{
    zsock_t *client = s_dealer (s_frontend);
    pthread_mutex_lock (&s_lock);
    s_commit_durable = true;
    snprintf (s_durable_at_id, sizeof s_durable_at_id, "00000000-0000-4000-8000-000300000010");
    pthread_mutex_unlock (&s_lock);
    //  70 requests; 0 and 64 name the same host
    char *json = malloc (70 * 100 + 64);
    cr_assert_not_null (json);
    size_t size = (size_t) sprintf (json, "{\"messages\":[");
    for (int i = 0; i < 70; i++)
        size += (size_t) sprintf (json + size, "%s{\"message_id\":\"00000000-0000-4000-8000-0003%08d\","
                                  "\"instance_name\":\"%s-%d\"}", i ? "," : "", i,
                                  i == 0 || i == 64 ? "web-same" : "web", i == 0 || i == 64 ? 0 : i);
    sprintf (json + size, "],\"req\":\"c\"}");
    s_send (client, MMP_PUBLISH, json);
    free (json);
    mmp_msg_t msg;
    s_expect (client, MMP_PUBACK, &msg);
    cr_assert_str_eq (msg.req, "c");
    cr_assert_null (cJSON_GetObjectItemCaseSensitive (msg.body, "coalesced_with"),
                    "request 64 joined request 0 at publish: it was released in mid-batch");
    mmp_msg_reset (&msg);
    zsock_destroy (&client);
}
