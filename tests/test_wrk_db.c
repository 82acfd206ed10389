/*  Tests for wrk_db: the SQLite save thread, against a real file. */
#include <criterion/criterion.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
