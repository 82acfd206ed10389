/*  Tests for wrk_db: the SQLite save thread, against a real file. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_log.h"
#include "wrk_db.h"

typedef struct {
    int calls;
    int ok;
    char error [256];
} saved_t;

static void
s_saved (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    saved_t *s = arg;
    s->calls++;
    s->ok += ok;
    snprintf (s->error, sizeof s->error, "%s", error);
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

Test (wrk_db, url_must_be_sqlite, .timeout = 10)
{
    char path [100], error [200];
    cr_assert_eq (wrk_db_parse_url ("sqlite:/tmp/x.db", path, sizeof path, error, sizeof error), 0);
    cr_assert_str_eq (path, "/tmp/x.db");
    cr_assert_eq (wrk_db_parse_url ("postgres://db/x", path, sizeof path, error, sizeof error), -1);
    cr_assert (strstr (error, "only sqlite"));
    cr_assert_eq (wrk_db_parse_url ("sqlite:", path, sizeof path, error, sizeof error), -1);
}

Test (wrk_db, saves_in_batches_upserts_and_records_outcome, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/wrk_db_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    char path [128];
    snprintf (path, sizeof path, "%s/m.db", dir);
    char error [256];
    wrk_db_t *db = wrk_db_new (path, "w1", error, sizeof error);
    cr_assert_not_null (db, "%s", error);

    char id [37];
    for (int i = 0; i < 100; i++) {
        snprintf (id, sizeof id, "00000000-0000-4000-8000-%012d", i);
        cr_assert_eq (wrk_db_save (db, id, (uint64_t) i, "cattle-1", "cattle-1.example.net", 1, 1000), 0);
    }
    cr_assert_eq (wrk_db_flush (db), 0);
    //  The same message again (a redelivery): an upsert, not a second row
    cr_assert_eq (wrk_db_save (db, id, 500, "cattle-1", "cattle-1.example.net", 2, 2000), 0);
    cr_assert_eq (wrk_db_outcome (db, id, "restarted"), 0);
    cr_assert_eq (wrk_db_flush (db), 0);
    cr_assert_eq (wrk_db_pending (db), 2);

    saved_t saved = { 0 };
    zsock_set_rcvtimeo (wrk_db_actor (db), 5000);
    while (wrk_db_pending (db) > 0)
        cr_assert_geq (wrk_db_recv (db, s_saved, &saved), 0);
    cr_assert_eq (saved.calls, 101);
    cr_assert_eq (saved.ok, 101, "%s", saved.error);
    wrk_db_destroy (&db);
    wrk_db_destroy (&db);

    cr_assert_eq (s_query_int (path, "SELECT count(*) FROM restarts"), 100);
    cr_assert_eq (s_query_int (path, "SELECT saves FROM restarts WHERE message_id = "
                                     "'00000000-0000-4000-8000-000000000099'"), 2);
    cr_assert_eq (s_query_int (path, "SELECT attempt FROM restarts WHERE restart_outcome = 'restarted'"), 2);
    cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 1);

    //  Reopening keeps the rows
    db = wrk_db_new (path, "w2", error, sizeof error);
    cr_assert_not_null (db, "%s", error);
    wrk_db_destroy (&db);
    char command [256];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    cr_assert_eq (system (command), 0);
}

Test (wrk_db, unopenable_path_is_an_error, .timeout = 10)
{
    char error [256];
    wrk_db_t *db = wrk_db_new ("/nonexistent-dir/x/m.db", "w", error, sizeof error);
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
    char name [16], id [37], error [256];
    snprintf (name, sizeof name, "w%d", index);
    wrk_db_t *db = wrk_db_new (path, name, error, sizeof error);
    if (!db) {
        fprintf (stderr, "racer %d: %s\n", index, error);
        return 1;
    }
    snprintf (id, sizeof id, "00000000-0000-4000-8000-%012d", index);
    saved_t saved = { 0 };
    int rc = wrk_db_save (db, id, 1, "cattle-1", "cattle-1.example.net", 1, 1000) == 0
          && wrk_db_flush (db) == 0 ? 0 : 2;
    zsock_set_rcvtimeo (wrk_db_actor (db), 20000);
    while (rc == 0 && wrk_db_pending (db) > 0)
        if (wrk_db_recv (db, s_saved, &saved) < 0)
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
        cr_assert_eq (s_query_int (path, "PRAGMA user_version"), 1);
        char command [256];
        snprintf (command, sizeof command, "rm -rf '%s'", dir);
        cr_assert_eq (system (command), 0);
    }
}
