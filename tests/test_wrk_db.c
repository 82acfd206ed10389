/*  Tests for wrk_db (the interface: URLs, dispatch) and wrk_db_sqlite
    (the SQLite save thread, against a real file). */
#include <criterion/criterion.h>
#include <poll.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_log.h"
#include "wrk_db.h"
#include "wrk_db_sqlite.h"

typedef struct {
    int calls;
    int ok;
    char error [256];
} saved_t;

static void
s_saved (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    (void) message_id;
    (void) token;
    saved_t *s = arg;
    s->calls++;
    s->ok += ok;
    snprintf (s->error, sizeof s->error, "%s", error);
}

//  Wait, as the worker's loop does, on what the store says to watch, and
//  service it until nothing is pending or timeout_ms passed. Returns 0
//  when everything was reported.
static int
s_wait_all (wrk_db_t *db, saved_t *saved, int64_t timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (wrk_db_pending (db) > 0 && zclock_mono () < deadline) {
        wrk_db_watch_t watch;
        wrk_db_watch (db, &watch);
        zmq_pollitem_t item = { watch.sock ? zsock_resolve (watch.sock) : NULL,
                                watch.fd, watch.sock ? ZMQ_POLLIN : watch.events, 0 };
        if (zmq_poll (&item, 1, 100) < 0)
            return -1;
        wrk_db_service (db, s_saved, saved);
    }
    return wrk_db_pending (db) == 0 ? 0 : -1;
}

static void
s_save (wrk_db_t *db, const char *id, uint64_t token, int64_t attempt, int64_t wall,
        const char *attributes)
{
    wrk_db_row_t row = {
        .message_id = id, .token = token, .instance_name = "cattle-1",
        .hostname = "cattle-1.example.net", .attributes = attributes,
        .attributes_size = attributes ? strlen (attributes) : 0,
        .attempt = attempt, .received_wall_ms = wall
    };
    cr_assert_eq (wrk_db_save (db, &row), 0);
}

static int
s_query_int (const char *path, const char *sql)
{
    sqlite3 *db;
    cr_assert_eq (sqlite3_open (path, &db), SQLITE_OK);
    sqlite3_stmt *stmt;
    cr_assert_eq (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK, "%s", sqlite3_errmsg (db));
    int value = sqlite3_step (stmt) == SQLITE_ROW ? sqlite3_column_int (stmt, 0) : -1;
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    return value;
}

Test (wrk_db, url_picks_a_known_scheme, .timeout = 10)
{
    char error [200];
    cr_assert_eq (wrk_db_check_url ("sqlite:/tmp/x.db", error, sizeof error), 0);
    cr_assert_eq (wrk_db_check_url ("sqlite:", error, sizeof error), -1);
    cr_assert (strstr (error, "names no database"), "%s", error);
    cr_assert_eq (wrk_db_check_url ("mysql://db/x", error, sizeof error), -1);
    cr_assert (strstr (error, "unsupported"), "%s", error);
    cr_assert_eq (wrk_db_check_url (NULL, error, sizeof error), -1);
    //  A password never reaches an error message
    wrk_db_check_url ("mysql://u:secret@db/x", error, sizeof error);
    cr_assert_null (strstr (error, "secret"), "%s", error);
}

Test (wrk_db, url_redact_hides_passwords, .timeout = 10)
{
    char out [200];
    wrk_db_url_redact ("postgresql://mandrill:s3cret@db:5432/m", out, sizeof out);
    cr_assert_str_eq (out, "postgresql://mandrill:***@db:5432/m");
    wrk_db_url_redact ("postgresql://mandrill@db/m?password=s3cret", out, sizeof out);
    cr_assert_str_eq (out, "postgresql://mandrill@db/m?...");
    wrk_db_url_redact ("postgresql://db/m", out, sizeof out);
    cr_assert_str_eq (out, "postgresql://db/m");
    wrk_db_url_redact ("sqlite:/var/lib/m:x@y.db", out, sizeof out);
    cr_assert_str_eq (out, "sqlite:/var/lib/m:x@y.db");
    wrk_db_url_redact ("postgresql://h/d?x=1@2:3", out, sizeof out);
    cr_assert_str_eq (out, "postgresql://h/d?...");
}

//  A store with no database: every save fails at the next service. Shows
//  that the interface takes any implementation (the seam for faults).
typedef struct {
    size_t queued;              //  Saved, not flushed
    size_t flushed;             //  Flushed, not reported
    uint64_t tokens [8];        //  Their tokens
    int destroyed;              //  Set through a pointer the test keeps
    int *destroyed_p;
} fake_t;

static int
s_fake_save (void *self_, const wrk_db_row_t *row)
{
    fake_t *self = self_;
    if (self->queued + self->flushed >= 8)
        return -1;
    self->tokens [self->queued + self->flushed] = row->token;
    self->queued++;
    return 0;
}
static int
s_fake_outcome (void *self_, const char *id, const char *outcome, int64_t wall)
{
    (void) self_, (void) id, (void) outcome, (void) wall;
    return 0;
}
static int
s_fake_flush (void *self_)
{
    fake_t *self = self_;
    self->flushed += self->queued;
    self->queued = 0;
    return 0;
}
static void
s_fake_watch (void *self_, wrk_db_watch_t *watch)
{
    (void) self_, (void) watch;     //  Nothing to watch: next_wake only
}
static int64_t
s_fake_next_wake (void *self_)
{
    fake_t *self = self_;
    return self->flushed ? zclock_mono () : -1;
}
static int
s_fake_service (void *self_, wrk_db_done_fn *done, void *arg)
{
    fake_t *self = self_;
    int reported = (int) self->flushed;
    for (size_t i = 0; i < self->flushed; i++)
        done (arg, "00000000-0000-4000-8000-000000000001", self->tokens [i], false, "down");
    self->flushed = 0;
    return reported;
}
static size_t
s_fake_pending (void *self_)
{
    return ((fake_t *) self_)->flushed;
}
static void
s_fake_destroy (void **self_p)
{
    fake_t *self = *self_p;
    (*self->destroyed_p)++;
    free (self);
    *self_p = NULL;
}
static const wrk_db_ops_t s_fake_ops = {
    "fake", s_fake_save, s_fake_outcome, s_fake_flush, s_fake_watch, s_fake_next_wake,
    s_fake_service, s_fake_pending, s_fake_destroy
};

Test (wrk_db, any_implementation_behind_the_interface, .timeout = 10)
{
    int destroyed = 0;
    fake_t *fake = calloc (1, sizeof *fake);
    cr_assert_not_null (fake);
    fake->destroyed_p = &destroyed;
    wrk_db_t *db = wrk_db_new_with (&s_fake_ops, fake);
    cr_assert_not_null (db);
    cr_assert_str_eq (wrk_db_name (db), "fake");
    s_save (db, "00000000-0000-4000-8000-000000000001", 7, 1, 1000, NULL);
    wrk_db_watch_t watch;
    wrk_db_watch (db, &watch);
    cr_assert_null (watch.sock);
    cr_assert_eq (watch.fd, -1);
    cr_assert_eq (wrk_db_next_wake (db), -1);
    cr_assert_eq (wrk_db_pending (db), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    cr_assert_eq (wrk_db_pending (db), 1);
    cr_assert_geq (wrk_db_next_wake (db), 0);
    saved_t saved = { 0 };
    cr_assert_eq (wrk_db_service (db, s_saved, &saved), 1);
    cr_assert_eq (saved.calls, 1);
    cr_assert_eq (saved.ok, 0);
    cr_assert_str_eq (saved.error, "down");
    wrk_db_destroy (&db);
    wrk_db_destroy (&db);
    cr_assert_eq (destroyed, 1);
}

Test (wrk_db, saves_in_batches_upserts_and_records_outcome, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path [128];
    snprintf (path, sizeof path, "%s/m.db", dir);
    char error [256];
    char url [140];
    snprintf (url, sizeof url, "sqlite:%s", path);
    wrk_db_t *db = wrk_db_new (url, "w1", error, sizeof error);
    cr_assert_not_null (db, "%s", error);
    cr_assert_str_eq (wrk_db_name (db), "sqlite");

    char id [37];
    for (int i = 0; i < 100; i++) {
        snprintf (id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        s_save (db, id, (uint64_t) i, 1, 1000, NULL);
    }
    cr_assert_eq (wrk_db_pending (db), 0);      //  Queued, not handed over
    cr_assert_eq (wrk_db_flush (db), 0);
    //  The same message again (a redelivery): an upsert, not a second row
    s_save (db, id, 500, 2, 2000, NULL);
    cr_assert_eq (wrk_db_outcome (db, id, "restarted", 3000), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    cr_assert_eq (wrk_db_pending (db), 101);
    wrk_db_watch_t watch;
    wrk_db_watch (db, &watch);
    cr_assert_not_null (watch.sock);
    cr_assert_eq (wrk_db_next_wake (db), -1);

    saved_t saved = { 0 };
    cr_assert_eq (s_wait_all (db, &saved, 5000), 0);
    cr_assert_eq (saved.calls, 101);
    cr_assert_eq (saved.ok, 101, "%s", saved.error);
    wrk_db_destroy (&db);
    wrk_db_destroy (&db);

    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts"), 100);
    cr_assert_eq (s_query_int (path, "SELECT saves FROM restarts WHERE message_id = "
                                     "'00000000-0000-4000-8000-000000000099'"), 2);
    cr_assert_eq (s_query_int (path, "SELECT attempt FROM restarts WHERE restart_outcome = 'restarted'"), 2);
    cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 3);

    //  Reopening keeps the rows
    db = wrk_db_new (url, "w2", error, sizeof error);
    cr_assert_not_null (db, "%s", error);
    wrk_db_destroy (&db);
    char command [256];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    cr_assert_eq (system (command), 0);
}

Test (wrk_db, unopenable_path_is_an_error, .timeout = 10)
{
    char error [256];
    wrk_db_t *db = wrk_db_new ("sqlite:/nonexistent-dir/x/m.db", "w", error, sizeof error);
    cr_assert_null (db);
    cr_assert (strstr (error, "cannot open"), "%s", error);
}

//  One process of the start-up race: wait for the start signal (the pipe
//  closing), open the shared new file, save one row. Exit 0 when saved.
static int
s_racer (const char *path, int start_fd, int index)
{
    char byte;
    if (read (start_fd, &byte, 1) < 0)
        return 3;
    char name [16], id [37], error [256], url [140];
    snprintf (name, sizeof name, "w%d", index);
    snprintf (url, sizeof url, "sqlite:%s", path);
    wrk_db_t *db = wrk_db_new (url, name, error, sizeof error);
    if (!db) {
        fprintf (stderr, "racer %d: %s\n", index, error);
        return 1;
    }
    snprintf (id, sizeof id, "00000000-0000-4000-8000-%012d", index);
    saved_t saved = { 0 };
    wrk_db_row_t row = { .message_id = id, .token = 1, .instance_name = "cattle-1",
                         .hostname = "cattle-1.example.net", .attempt = 1,
                         .received_wall_ms = 1000 };
    int rc = wrk_db_save (db, &row) == 0 && wrk_db_flush (db) == 0 ? 0 : 2;
    if (rc == 0 && s_wait_all (db, &saved, 20000) != 0)
        rc = 2;
    if (rc == 0 && saved.ok != 1) {
        fprintf (stderr, "racer %d: save failed: %s\n", index, saved.error);
        rc = 2;
    }
    wrk_db_destroy (&db);
    return rc;
}

//  Several workers started at the same moment on a file that does not
//  exist yet: every one must open it, none may fail with "database is
//  locked". The race is narrow, so it is run many times.
Test (wrk_db, simultaneous_start_on_a_new_file, .timeout = 120)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    enum { ROUNDS = 150, RACERS = 4 };
    for (int round = 0; round < ROUNDS; round++) {
        char dir [] = "/tmp/wrk_db_race_XXXXXX";
        cr_assert_not_null (mkdtemp (dir));
        char path [128];
        snprintf (path, sizeof path, "%s/m.db", dir);
        int start [2];
        cr_assert_eq (pipe (start), 0);
        pid_t pids [RACERS];
        for (int i = 0; i < RACERS; i++) {
            pids [i] = fork ();
            cr_assert_geq (pids [i], 0);
            if (pids [i] == 0) {
                close (start [1]);
                _exit (s_racer (path, start [0], i));
            }
        }
        close (start [0]);
        close (start [1]);          //  Go: every racer's read returns now
        int failed = 0;
        for (int i = 0; i < RACERS; i++) {
            int status;
            cr_assert_eq (waitpid (pids [i], &status, 0), pids [i]);
            if (!WIFEXITED (status) || WEXITSTATUS (status) != 0)
                failed++;
        }
        cr_assert_eq (failed, 0, "round %d: %d of %d workers could not start or save "
                      "(see stderr)", round, failed, RACERS);
        cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts"), RACERS);
        cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 3);
        char command [256];
        snprintf (command, sizeof command, "rm -rf '%s'", dir);
        cr_assert_eq (system (command), 0);
    }
}

static void
s_query_text (const char *path, const char *sql, char *out, size_t size)
{
    sqlite3 *db;
    cr_assert_eq (sqlite3_open (path, &db), SQLITE_OK);
    sqlite3_stmt *stmt;
    cr_assert_eq (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK, "%s", sqlite3_errmsg (db));
    out [0] = 0;
    if (sqlite3_step (stmt) == SQLITE_ROW) {
        const unsigned char *text = sqlite3_column_text (stmt, 0);
        snprintf (out, size, "%s", text ? (const char *) text : "(null)");
    }
    sqlite3_finalize (stmt);
    sqlite3_close (db);
}

static void
s_exec (const char *path, const char *sql)
{
    sqlite3 *db;
    cr_assert_eq (sqlite3_open (path, &db), SQLITE_OK);
    char *error = NULL;
    cr_assert_eq (sqlite3_exec (db, sql, NULL, NULL, &error), SQLITE_OK, "%s", error);
    sqlite3_close (db);
}

static void
s_temp_path (char *dir, char *path, size_t size)
{
    cr_assert_not_null (mkdtemp (dir));
    snprintf (path, size, "%s/m.db", dir);
}

static void
s_remove_dir (const char *dir)
{
    char command [256];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    cr_assert_eq (system (command), 0);
}

//  The row holds the attributes as the JSON text given (byte for byte),
//  the attempt, the worker, and the time of the restart outcome.
Test (wrk_db, row_keeps_attributes_attempt_worker_and_outcome_time, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_row_XXXXXX", path [128], url [140], error [256];
    s_temp_path (dir, path, sizeof path);
    snprintf (url, sizeof url, "sqlite:%s", path);
    wrk_db_t *db = wrk_db_new (url, "worker-7", error, sizeof error);
    cr_assert_not_null (db, "%s", error);
    const char *attributes = "{\"zone\":\"eu-1\",\"x\":0.30000000000000004,\"n\":123456789012345678}";
    s_save (db, "00000000-0000-4000-8000-000000000001", 1, 3, 1000, attributes);
    s_save (db, "00000000-0000-4000-8000-000000000002", 2, 1, 1000, NULL);
    cr_assert_eq (wrk_db_outcome (db, "00000000-0000-4000-8000-000000000001", "restarted",
                                  1234567), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    saved_t saved = { 0 };
    cr_assert_eq (s_wait_all (db, &saved, 5000), 0);
    cr_assert_eq (saved.ok, 2, "%s", saved.error);
    wrk_db_destroy (&db);

    char text [256];
    s_query_text (path, "SELECT attributes FROM restarts WHERE message_id = "
                        "'00000000-0000-4000-8000-000000000001'", text, sizeof text);
    cr_assert_str_eq (text, attributes);
    s_query_text (path, "SELECT attributes FROM restarts WHERE message_id = "
                        "'00000000-0000-4000-8000-000000000002'", text, sizeof text);
    cr_assert_str_eq (text, "(null)");
    s_query_text (path, "SELECT worker FROM restarts WHERE attempt = 3", text, sizeof text);
    cr_assert_str_eq (text, "worker-7");
    cr_assert_eq (s_query_int (path, "SELECT outcome_at FROM restarts WHERE "
                                     "restart_outcome = 'restarted'"), 1234567);
    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts WHERE outcome_at IS NULL"), 1);
    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts WHERE saved_at > 0"), 2);
    s_remove_dir (dir);
}

//  A file written by a version-1 worker is migrated in place; its rows stay.
Test (wrk_db, opens_a_version_1_file_and_migrates_it, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_v1_XXXXXX", path [128], error [256];
    s_temp_path (dir, path, sizeof path);
    //  Exactly what version 1 created
    s_exec (path,
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE IF NOT EXISTS restarts ("
        "  message_id TEXT PRIMARY KEY,"
        "  instance_name TEXT NOT NULL,"
        "  hostname TEXT NOT NULL,"
        "  attempt INTEGER NOT NULL,"
        "  worker TEXT NOT NULL,"
        "  received_at INTEGER NOT NULL,"
        "  saved_at INTEGER NOT NULL,"
        "  restart_outcome TEXT,"
        "  saves INTEGER NOT NULL);"
        "PRAGMA user_version = 1;"
        "INSERT INTO restarts VALUES ('00000000-0000-4000-8000-000000000009', 'cattle-9',"
        "  'cattle-9.example.net', 1, 'old', 10, 11, 'restarted', 1);");
    void *impl = wrk_db_sqlite_open (path, "new", error, sizeof error);
    cr_assert_not_null (impl, "%s", error);
    cr_assert_eq (wrk_db_sqlite_migrated_from (impl), 1);
    wrk_db_t *db = wrk_db_new_with (&wrk_db_sqlite_ops, impl);
    cr_assert_not_null (db);
    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts WHERE attributes IS NULL "
                                     "AND outcome_at IS NULL AND worker = 'old'"), 1);
    //  The old row upserted with the new columns
    s_save (db, "00000000-0000-4000-8000-000000000009", 1, 2, 2000, "{\"a\":1}");
    cr_assert_eq (wrk_db_outcome (db, "00000000-0000-4000-8000-000000000009", "restarted", 3000), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    saved_t saved = { 0 };
    cr_assert_eq (s_wait_all (db, &saved, 5000), 0);
    cr_assert_eq (saved.ok, 1, "%s", saved.error);
    wrk_db_destroy (&db);
    cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 3);
    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts WHERE publisher IS NULL"), 1);
    cr_assert_eq (s_query_int (path, "SELECT saves FROM restarts"), 2);
    cr_assert_eq (s_query_int (path, "SELECT outcome_at FROM restarts"), 3000);
    char text [64];
    s_query_text (path, "SELECT attributes FROM restarts", text, sizeof text);
    cr_assert_str_eq (text, "{\"a\":1}");

    //  Opening again: nothing to migrate
    impl = wrk_db_sqlite_open (path, "new", error, sizeof error);
    cr_assert_not_null (impl, "%s", error);
    cr_assert_eq (wrk_db_sqlite_migrated_from (impl), 0);
    wrk_db_sqlite_ops.destroy (&impl);
    cr_assert_null (impl);
    s_remove_dir (dir);
}

//  A file written by a version-2 worker gains the publisher column; its
//  rows stay, with no publisher, and a new save names one.
Test (wrk_db, opens_a_version_2_file_and_migrates_it, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_v2_XXXXXX", path [128], error [256];
    s_temp_path (dir, path, sizeof path);
    //  Exactly what version 2 created
    s_exec (path,
        "PRAGMA journal_mode = WAL;"
        "CREATE TABLE IF NOT EXISTS restarts ("
        "  message_id TEXT PRIMARY KEY,"
        "  instance_name TEXT NOT NULL,"
        "  hostname TEXT NOT NULL,"
        "  attempt INTEGER NOT NULL,"
        "  worker TEXT NOT NULL,"
        "  received_at INTEGER NOT NULL,"
        "  saved_at INTEGER NOT NULL,"
        "  restart_outcome TEXT,"
        "  saves INTEGER NOT NULL,"
        "  attributes TEXT,"
        "  outcome_at INTEGER);"
        "PRAGMA user_version = 2;"
        "INSERT INTO restarts VALUES ('00000000-0000-4000-8000-000000000008', 'cattle-8',"
        "  'cattle-8.example.net', 1, 'old', 10, 11, 'restarted', 1, '{\"x\":1}', 12);");
    void *impl = wrk_db_sqlite_open (path, "key-worker", error, sizeof error);
    cr_assert_not_null (impl, "%s", error);
    cr_assert_eq (wrk_db_sqlite_migrated_from (impl), 2);
    wrk_db_t *db = wrk_db_new_with (&wrk_db_sqlite_ops, impl);
    cr_assert_not_null (db);
    cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 3);
    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts WHERE publisher IS NULL "
                                     "AND outcome_at = 12 AND worker = 'old'"), 1);
    wrk_db_row_t row = {
        .message_id = "00000000-0000-4000-8000-000000000007", .token = 1,
        .instance_name = "cattle-7", .hostname = "cattle-7.example.net",
        .attempt = 1, .received_wall_ms = 1000, .publisher = "alice"
    };
    cr_assert_eq (wrk_db_save (db, &row), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    saved_t saved = { 0 };
    cr_assert_eq (s_wait_all (db, &saved, 5000), 0);
    cr_assert_eq (saved.ok, 1, "%s", saved.error);
    wrk_db_destroy (&db);
    char text [64];
    s_query_text (path, "SELECT publisher || ' ' || worker FROM restarts WHERE message_id = "
                        "'00000000-0000-4000-8000-000000000007'", text, sizeof text);
    cr_assert_str_eq (text, "alice key-worker");
    s_remove_dir (dir);
}

Test (wrk_db, refuses_a_newer_schema, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_v4_XXXXXX", path [128], error [256];
    s_temp_path (dir, path, sizeof path);
    s_exec (path, "CREATE TABLE restarts (message_id TEXT PRIMARY KEY); PRAGMA user_version = 4;");
    void *impl = wrk_db_sqlite_open (path, "w", error, sizeof error);
    cr_assert_null (impl);
    cr_assert (strstr (error, "schema version 4"), "%s", error);
    cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 4);
    s_remove_dir (dir);
}

//  A row reported saved must survive power loss (the worker acks on it):
//  the connection runs synchronous = FULL under WAL, read back at open.
//  Power loss itself cannot be tested here; the setting and the mode can.
Test (wrk_db, commits_are_synchronous_full_under_wal, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_sync_XXXXXX", path [128], error [256];
    s_temp_path (dir, path, sizeof path);
    void *impl = wrk_db_sqlite_open (path, "w", error, sizeof error);
    cr_assert_not_null (impl, "%s", error);
    cr_assert_eq (wrk_db_sqlite_synchronous (impl), 2);
    wrk_db_sqlite_ops.destroy (&impl);
    char mode [16];
    s_query_text (path, "PRAGMA journal_mode", mode, sizeof mode);
    cr_assert_str_eq (mode, "wal");
    s_remove_dir (dir);
}
