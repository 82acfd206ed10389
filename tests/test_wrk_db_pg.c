/*  Tests for wrk_db_pg: the PostgreSQL save module, against a real server
    that each test starts itself (tests/support/pg_support). Without the
    postgresql package, or when not run as root, the tests FAIL and say why.
*/
#include <criterion/criterion.h>
#include <czmq.h>
#include <libpq-fe.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "mdl_log.h"
#include "pg_support.h"
#include "wrk_db_pg.h"

static pg_server_t *server;

static void
s_setup (void)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char error [512] = "";
    server = pg_server_new (error, sizeof error);
    cr_assert_not_null (server, "cannot start a PostgreSQL server for the test: %s", error);
}

static void
s_teardown (void)
{
    pg_server_destroy (&server);
}

TestSuite (wrk_db_pg, .init = s_setup, .fini = s_teardown, .timeout = 120);

//  What the module reported, per token (tokens are 0..count-1).
typedef struct {
    size_t count;               //  Tokens known
    int *ok;                    //  Ok reports per token
    int *failed;                //  Failed reports per token
    bool *outstanding;          //  Saved and not reported yet
    size_t oks;                 //  Total ok reports
    size_t failures;            //  Total failed reports
    char error [256];           //  Last error reported
} results_t;

static void
s_results_init (results_t *r, size_t count)
{
    memset (r, 0, sizeof *r);
    r->count = count;
    r->ok = calloc (count, sizeof *r->ok);
    r->failed = calloc (count, sizeof *r->failed);
    r->outstanding = calloc (count, sizeof *r->outstanding);
    cr_assert (r->ok && r->failed && r->outstanding);
}

static void
s_results_free (results_t *r)
{
    free (r->ok);
    free (r->failed);
    free (r->outstanding);
}

static void
s_done (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    (void) message_id;
    results_t *r = arg;
    cr_assert_lt (token, r->count, "unknown token %llu", (unsigned long long) token);
    cr_assert (r->outstanding [token], "token %llu reported twice", (unsigned long long) token);
    r->outstanding [token] = false;
    if (ok) {
        r->ok [token]++;
        r->oks++;
        cr_assert_str_eq (error, "");
    }
    else {
        r->failed [token]++;
        r->failures++;
        cr_assert_neq (strlen (error), 0, "a failure without a reason");
        snprintf (r->error, sizeof r->error, "%s", error);
    }
}

static void
s_id (char *id, size_t size, size_t i)
{
    snprintf (id, size, "00000000-0000-4000-8000-%012zu", i);
}

static void
s_save (wrk_db_pg_t *db, results_t *r, size_t i, int64_t attempt, const char *attributes)
{
    char id [37];
    s_id (id, sizeof id, i);
    cr_assert_eq (wrk_db_pg_save (db, id, i, "cattle-ab12", "cattle-ab12.example.net",
                                  attributes, attributes ? strlen (attributes) : 0,
                                  attempt, 1700000000000 + (int64_t) i, NULL), 0);
    r->outstanding [i] = true;
}

//  Wait at most max_ms for what the module watches, as the worker's loop does.
static void
s_wait (wrk_db_pg_t *db, int max_ms)
{
    int64_t timeout = wrk_db_pg_timeout_ms (db);
    int wait = timeout >= 0 && timeout < max_ms ? (int) timeout : max_ms;
    int events = wrk_db_pg_events (db);
    struct pollfd item = { .fd = wrk_db_pg_fd (db),
                           .events = (short) ((events & WRK_DB_PG_READ ? POLLIN : 0)
                                              | (events & WRK_DB_PG_WRITE ? POLLOUT : 0)) };
    poll (&item, item.fd >= 0 ? 1 : 0, wait);
}

//  Run the loop until nothing is pending or timeout_ms passed. Returns
//  what is still pending.
static size_t
s_drain (wrk_db_pg_t *db, results_t *r, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (true) {
        wrk_db_pg_recv (db, s_done, r);
        if (wrk_db_pg_pending (db) == 0 || zclock_mono () >= deadline)
            break;
        s_wait (db, 50);
        wrk_db_pg_ready (db);
    }
    return wrk_db_pg_pending (db);
}

static wrk_db_pg_t *
s_open (void)
{
    char error [512] = "";
    wrk_db_pg_t *db = wrk_db_pg_new (server->url, "w1", error, sizeof error);
    cr_assert_not_null (db, "%s", error);
    return db;
}

static long long
s_int (const char *sql)
{
    char error [512] = "";
    long long value = pg_server_query_int (server, sql, error, sizeof error);
    cr_assert_neq (value, -1, "%s", error);
    return value;
}

static void
s_text (const char *sql, char *out, size_t size)
{
    char error [512] = "";
    cr_assert_eq (pg_server_query_text (server, sql, out, size, error, sizeof error), 0, "%s", error);
}

Test (wrk_db_pg, connect_creates_schema, .timeout = 120)
{
    wrk_db_pg_t *db = s_open ();
    cr_assert (wrk_db_pg_connected (db));
    cr_assert_geq (wrk_db_pg_fd (db), 0);
    cr_assert_eq (s_int ("SELECT max (version) FROM mandrill_schema_version"), 2);
    cr_assert_eq (s_int ("SELECT count (*) FROM mandrill_schema_version"), 1);
    cr_assert_eq (s_int ("SELECT count (*) FROM information_schema.columns"
                         " WHERE table_name = 'restarts'"), 12);
    char type [64];
    s_text ("SELECT data_type FROM information_schema.columns WHERE table_name = 'restarts'"
            " AND column_name = 'attributes'", type, sizeof type);
    cr_assert_str_eq (type, "jsonb");
    cr_assert_eq (wrk_db_pg_pending (db), 0);
    cr_assert_eq (wrk_db_pg_timeout_ms (db), -1, "idle: only the socket matters");
    wrk_db_pg_destroy (&db);
    cr_assert_null (db);
    wrk_db_pg_destroy (&db);
}

Test (wrk_db_pg, reopen_migrates_nothing_and_keeps_rows, .timeout = 120)
{
    results_t r;
    s_results_init (&r, 20);
    wrk_db_pg_t *db = s_open ();
    for (size_t i = 0; i < 10; i++)
        s_save (db, &r, i, 1, NULL);
    cr_assert_eq (wrk_db_pg_flush (db), 0);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, 10, "%s", r.error);
    wrk_db_pg_destroy (&db);
    char applied [64], applied_again [64];
    s_text ("SELECT applied_at::text FROM mandrill_schema_version", applied, sizeof applied);

    db = s_open ();
    cr_assert_eq (s_int ("SELECT count (*) FROM mandrill_schema_version"), 1);
    s_text ("SELECT applied_at::text FROM mandrill_schema_version", applied_again,
            sizeof applied_again);
    cr_assert_str_eq (applied, applied_again, "the schema was applied again");
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts"), 10);
    for (size_t i = 10; i < 20; i++)
        s_save (db, &r, i, 1, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, 20, "%s", r.error);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts"), 20);
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

Test (wrk_db_pg, newer_schema_is_refused, .timeout = 120)
{
    wrk_db_pg_t *db = s_open ();
    wrk_db_pg_destroy (&db);
    char text [64];
    s_text ("INSERT INTO mandrill_schema_version (version) VALUES (3) RETURNING version",
            text, sizeof text);
    char error [512] = "";
    db = wrk_db_pg_new (server->url, "w1", error, sizeof error);
    cr_assert_null (db);
    cr_assert (strstr (error, "schema version 3"), "%s", error);
    cr_assert (strstr (error, "knows version 2"), "%s", error);
}

//  A database a version-1 worker made gains the publisher column; its
//  rows stay (publisher NULL) and a new save names its publisher.
Test (wrk_db_pg, version_1_is_migrated_to_2, .timeout = 120)
{
    char text [128];
    //  Each test has a server of its own: the database is empty here
    s_text ("CREATE TABLE mandrill_schema_version (version integer PRIMARY KEY,"
            "  applied_at timestamptz NOT NULL DEFAULT now ());"
            "INSERT INTO mandrill_schema_version (version) VALUES (1);"
            "CREATE TABLE restarts (message_id text PRIMARY KEY, instance_name text NOT NULL,"
            "  hostname text NOT NULL, attributes jsonb, attempt integer NOT NULL,"
            "  worker text NOT NULL, received_at bigint NOT NULL, saved_at bigint NOT NULL,"
            "  restart_outcome text, outcome_at bigint, saves integer NOT NULL);"
            "INSERT INTO restarts VALUES ('00000000-0000-4000-8000-000000000900', 'cattle-9',"
            "  'cattle-9.example.net', NULL, 1, 'old', 10, 11, 'restarted', 12, 1)"
            " RETURNING message_id", text, sizeof text);
    results_t r;
    s_results_init (&r, 2);
    wrk_db_pg_t *db = s_open ();
    cr_assert_eq (s_int ("SELECT max (version) FROM mandrill_schema_version"), 2);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE publisher IS NULL"
                         " AND worker = 'old' AND outcome_at = 12"), 1);
    char id [37];
    s_id (id, sizeof id, 1);
    cr_assert_eq (wrk_db_pg_save (db, id, 1, "cattle-1", "cattle-1.example.net", NULL, 0, 1, 5,
                                  "alice"), 0);
    r.outstanding [1] = true;
    cr_assert_eq (wrk_db_pg_flush (db), 0);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, 1, "%s", r.error);
    s_text ("SELECT publisher FROM restarts WHERE message_id = '00000000-0000-4000-8000-000000000001'",
            text, sizeof text);
    cr_assert_str_eq (text, "alice");
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

Test (wrk_db_pg, ten_thousand_saves_arrive_exactly_once, .timeout = 180)
{
    const size_t count = 10000;
    results_t r;
    s_results_init (&r, count);
    wrk_db_pg_t *db = s_open ();
    //  As the worker's loop: a flush after every burst, answers read as
    //  they come
    for (size_t i = 0; i < count; i++) {
        s_save (db, &r, i, 1, NULL);
        if (i % 100 == 99) {
            cr_assert_eq (wrk_db_pg_flush (db), 0);
            wrk_db_pg_ready (db);
            wrk_db_pg_recv (db, s_done, &r);
        }
    }
    cr_assert_eq (s_drain (db, &r, 60000), 0);
    cr_assert_eq (r.failures, 0, "%s", r.error);
    cr_assert_eq (r.oks, count);
    for (size_t i = 0; i < count; i++)
        cr_assert_eq (r.ok [i], 1, "token %zu reported %d times", i, r.ok [i]);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts"), (long long) count);
    cr_assert_eq (s_int ("SELECT sum (saves) FROM restarts"), (long long) count);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE worker = 'w1' AND attempt = 1"),
                  (long long) count);

    //  A redelivery saves again: an upsert that counts
    for (size_t i = 0; i < 100; i++)
        s_save (db, &r, i, 2, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, count + 100, "%s", r.error);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts"), (long long) count);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE saves = 2 AND attempt = 2"), 100);

    //  The same message twice in one batch: two upserts, counted twice
    char id [37];
    s_id (id, sizeof id, 0);
    cr_assert_eq (wrk_db_pg_save (db, id, 0, "cattle-ab12", "cattle-ab12.example.net", NULL, 0,
                                  3, 0, NULL), 0);
    cr_assert_eq (wrk_db_pg_save (db, id, 1, "cattle-ab12", "cattle-ab12.example.net", NULL, 0,
                                  4, 0, "alice"), 0);
    r.outstanding [0] = r.outstanding [1] = true;
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.failures, 0, "%s", r.error);
    cr_assert_eq (s_int ("SELECT saves FROM restarts WHERE message_id LIKE '%-000000000000'"), 4);
    cr_assert_eq (s_int ("SELECT attempt FROM restarts WHERE message_id LIKE '%-000000000000'"), 4);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE message_id LIKE '%-000000000000'"
                         " AND publisher = 'alice'"), 1);
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

Test (wrk_db_pg, attributes_round_trip_as_jsonb_and_outcome_recorded, .timeout = 120)
{
    results_t r;
    s_results_init (&r, 3);
    wrk_db_pg_t *db = s_open ();
    s_save (db, &r, 0, 1, "{\"zone\":\"eu-west\",\"tags\":[\"a\",\"b\"],\"n\":3,\"q\":\"it's \\\"x\\\"\"}");
    s_save (db, &r, 1, 1, NULL);
    char id [37];
    s_id (id, sizeof id, 2);
    cr_assert_eq (wrk_db_pg_save (db, id, 2, "cattle-ab12", "cattle-ab12.example.net",
                                  "{\"broken\":", 10, 1, 0, NULL), -1, "invalid JSON must be refused");
    //  Only attributes_size bytes count: what follows is not JSON
    const char *longer = "{\"k\":1}garbage";
    s_id (id, sizeof id, 2);
    cr_assert_eq (wrk_db_pg_save (db, id, 2, "cattle-ab12", "cattle-ab12.example.net",
                                  longer, 7, 1, 0, NULL), 0);
    r.outstanding [2] = true;
    s_id (id, sizeof id, 0);
    cr_assert_eq (wrk_db_pg_outcome (db, id, "restarted", 1700000001234), 0);
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, 3, "%s", r.error);

    char text [256];
    s_text ("SELECT attributes::text FROM restarts WHERE message_id LIKE '%2'", text, sizeof text);
    cr_assert_str_eq (text, "{\"k\": 1}");
    s_text ("SELECT jsonb_typeof (attributes) FROM restarts WHERE message_id LIKE '%0'", text, sizeof text);
    cr_assert_str_eq (text, "object");
    s_text ("SELECT attributes->>'zone' FROM restarts WHERE message_id LIKE '%0'", text, sizeof text);
    cr_assert_str_eq (text, "eu-west");
    s_text ("SELECT attributes->'tags'->>1 FROM restarts WHERE message_id LIKE '%0'", text, sizeof text);
    cr_assert_str_eq (text, "b");
    s_text ("SELECT attributes->>'q' FROM restarts WHERE message_id LIKE '%0'", text, sizeof text);
    cr_assert_str_eq (text, "it's \"x\"");
    cr_assert_eq (s_int ("SELECT (attributes->>'n')::int FROM restarts WHERE message_id LIKE '%0'"), 3);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE attributes IS NULL"), 1);
    s_text ("SELECT restart_outcome FROM restarts WHERE message_id LIKE '%0'", text, sizeof text);
    cr_assert_str_eq (text, "restarted");
    cr_assert_eq (s_int ("SELECT outcome_at FROM restarts WHERE message_id LIKE '%0'"),
                  1700000001234LL);
    cr_assert_eq (s_int ("SELECT received_at FROM restarts WHERE message_id LIKE '%1'"),
                  1700000000001LL);
    int64_t wall = zclock_time ();
    long long saved_at = s_int ("SELECT saved_at FROM restarts WHERE message_id LIKE '%1'");
    cr_assert (saved_at > wall - 60000 && saved_at <= wall + 1000, "saved_at %lld, now %lld",
               saved_at, (long long) wall);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE restart_outcome IS NULL"
                         " AND outcome_at IS NULL"), 2);
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

Test (wrk_db_pg, bad_url_wrong_port_wrong_password_say_why, .timeout = 120)
{
    char error [512] = "", url [256];
    cr_assert_null (wrk_db_pg_new ("mysql://db/x", "w1", error, sizeof error));
    cr_assert (strstr (error, "not a PostgreSQL URL"), "%s", error);
    cr_assert_null (wrk_db_pg_new ("postgresql://u:pw@127.0.0.1:notaport/db", "w1", error, sizeof error));
    cr_assert (strstr (error, "\"notaport\" for connection option \"port\""), "%s", error);
    cr_assert_null (strstr (error, ":pw@"), "the password leaked: %s", error);
    cr_assert_null (wrk_db_pg_new ("postgresql://127.0.0.1/db?nosuchoption=1", "w1", error, sizeof error));
    cr_assert (strstr (error, "bad PostgreSQL URL"), "%s", error);
    cr_assert (strstr (error, "nosuchoption"), "%s", error);
    cr_assert_null (wrk_db_pg_new ("postgresql://[::1/db", "w1", error, sizeof error));
    cr_assert (strstr (error, "bad PostgreSQL URL"), "%s", error);

    //  Nothing listens one port below the server (the server's port minus
    //  one was free when picked only by chance, so look for the reason)
    int port = server->port;
    snprintf (url, sizeof url, "postgresql://mandrill:secret@127.0.0.1:%d/postgres", port == 1 ? 2 : 1);
    cr_assert_null (wrk_db_pg_new (url, "w1", error, sizeof error));
    cr_assert (strstr (error, "Connection refused") || strstr (error, "could not connect"), "%s", error);

    snprintf (url, sizeof url, "postgresql://mandrill:wrongpw@127.0.0.1:%d/postgres", port);
    cr_assert_null (wrk_db_pg_new (url, "w1", error, sizeof error));
    cr_assert (strstr (error, "password authentication failed"), "%s", error);
    cr_assert_null (strstr (error, "wrongpw"), "the password leaked: %s", error);
    cr_assert (strstr (error, "mandrill:***@127.0.0.1"), "%s", error);

    snprintf (url, sizeof url, "postgres://mandrill:secret@127.0.0.1:%d/nosuchdb", port);
    cr_assert_null (wrk_db_pg_new (url, "w1", error, sizeof error));
    cr_assert (strstr (error, "nosuchdb"), "%s", error);

    //  The password from the environment instead of the URL
    snprintf (url, sizeof url, "postgres://mandrill@127.0.0.1:%d/postgres", port);
    unsetenv ("PGPASSWORD");
    setenv ("PGPASSFILE", "/nonexistent", 1);
    cr_assert_null (wrk_db_pg_new (url, "w1", error, sizeof error));
    cr_assert (strstr (error, "no password supplied"), "%s", error);
    setenv ("PGPASSWORD", "secret", 1);
    wrk_db_pg_t *db = wrk_db_pg_new (url, "w1", error, sizeof error);
    unsetenv ("PGPASSWORD");
    cr_assert_not_null (db, "%s", error);
    wrk_db_pg_destroy (&db);

    //  ... or from a password file
    char passfile [300];
    snprintf (passfile, sizeof passfile, "%s/pgpass", server->dir);
    FILE *file = fopen (passfile, "w");
    cr_assert_not_null (file);
    fprintf (file, "127.0.0.1:%d:*:mandrill:secret\n", port);
    cr_assert_eq (fclose (file), 0);
    cr_assert_eq (chmod (passfile, 0600), 0);
    setenv ("PGPASSFILE", passfile, 1);
    db = wrk_db_pg_new (url, "w1", error, sizeof error);
    unsetenv ("PGPASSFILE");
    cr_assert_not_null (db, "%s", error);
    wrk_db_pg_destroy (&db);
}

Test (wrk_db_pg, url_password_is_masked, .timeout = 10)
{
    char out [256];
    cr_assert_str_eq (wrk_db_pg_mask_url ("postgresql://u:s3cret@h:5432/db", out, sizeof out),
                      "postgresql://u:***@h:5432/db");
    cr_assert_str_eq (wrk_db_pg_mask_url ("postgres://u@h/db?sslmode=require&password=s3&x=1",
                                          out, sizeof out),
                      "postgres://u@h/db?sslmode=require&password=***&x=1");
    cr_assert_str_eq (wrk_db_pg_mask_url ("postgresql://h/db", out, sizeof out), "postgresql://h/db");
    cr_assert (wrk_db_pg_handles ("postgres://x") && wrk_db_pg_handles ("postgresql://x"));
    cr_assert (!wrk_db_pg_handles ("sqlite:/x.db") && !wrk_db_pg_handles (NULL));
}

//  Drive the module (real time, bounded) until it has no connection.
static void
s_until_down (wrk_db_pg_t *db, results_t *r)
{
    int64_t deadline = zclock_mono () + 15000;
    while (wrk_db_pg_fd (db) >= 0 && zclock_mono () < deadline) {
        s_wait (db, 50);
        wrk_db_pg_ready (db);
        wrk_db_pg_recv (db, s_done, r);
    }
    cr_assert_eq (wrk_db_pg_fd (db), -1, "the module did not notice the server stopped");
}

Test (wrk_db_pg, reconnect_backoff_follows_the_injected_clock, .timeout = 120)
{
    results_t r;
    s_results_init (&r, 10);
    char error [512] = "";
    wrk_db_pg_t *db = s_open ();
    int64_t now = 1000000;
    wrk_db_pg_set_clock (db, mdl_clock_manual (&now));
    cr_assert_eq (pg_server_stop_immediate (server, error, sizeof error), 0, "%s", error);
    s_until_down (db, &r);
    cr_assert_eq (wrk_db_pg_timeout_ms (db), 100);
    cr_assert_eq (wrk_db_pg_events (db), 0);

    //  While down, a save fails at once and says why
    s_save (db, &r, 0, 1, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (wrk_db_pg_timeout_ms (db), 0, "a result waits");
    cr_assert_eq (wrk_db_pg_recv (db, s_done, &r), 1);
    cr_assert_eq (r.failed [0], 1);
    cr_assert (strstr (r.error, "PostgreSQL unavailable"), "%s", r.error);
    cr_assert_eq (wrk_db_pg_pending (db), 0);

    now += 99;
    wrk_db_pg_ready (db);
    cr_assert_eq (wrk_db_pg_fd (db), -1, "reconnected before the backoff was over");
    cr_assert_eq (wrk_db_pg_timeout_ms (db), 1);
    //  Each refused attempt doubles the wait: 200, 400, 800 ms
    for (int64_t expect = 200; expect <= 800; expect *= 2) {
        now += wrk_db_pg_timeout_ms (db);
        wrk_db_pg_ready (db);
        s_until_down (db, &r);
        cr_assert_eq (wrk_db_pg_timeout_ms (db), expect);
    }
    cr_assert_eq (pg_server_start (server, error, sizeof error), 0, "%s", error);
    now += 800;
    int64_t deadline = zclock_mono () + 15000;
    while (!wrk_db_pg_connected (db) && zclock_mono () < deadline) {
        wrk_db_pg_ready (db);
        s_wait (db, 50);
    }
    cr_assert (wrk_db_pg_connected (db), "no reconnection after the server came back");
    s_save (db, &r, 1, 1, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.ok [1], 1, "%s", r.error);
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

Test (wrk_db_pg, immediate_stop_mid_run_fails_in_flight_then_retries_succeed, .timeout = 180)
{
    const size_t count = 3000, burst = 50;
    results_t r;
    s_results_init (&r, count);
    char error [512] = "";
    wrk_db_pg_t *db = s_open ();

    //  A lock held by another session keeps the batch sent before the
    //  stop from committing: it is surely in flight when the server dies
    PGconn *locker = PQconnectdb (server->url);
    cr_assert_eq (PQstatus (locker), CONNECTION_OK, "%s", PQerrorMessage (locker));
    size_t next = 0, held_from = 0, held_to = 0;
    for (size_t b = 0; next < count; b++) {
        if (b == 20) {
            PGresult *result = PQexec (locker, "BEGIN; LOCK TABLE restarts IN EXCLUSIVE MODE");
            cr_assert_eq (PQresultStatus (result), PGRES_COMMAND_OK, "%s", PQerrorMessage (locker));
            PQclear (result);
            held_from = next;
        }
        for (size_t i = 0; i < burst && next < count; i++)
            s_save (db, &r, next++, 1, NULL);
        wrk_db_pg_flush (db);
        wrk_db_pg_ready (db);
        wrk_db_pg_recv (db, s_done, &r);
        if (b == 20) {
            held_to = next;
            cr_assert_eq (pg_server_stop_immediate (server, error, sizeof error), 0, "%s", error);
        }
        if (b == 40)
            cr_assert_eq (pg_server_start (server, error, sizeof error), 0, "%s", error);
        if (b < 20 || b > 40)
            s_wait (db, 5);
    }
    PQfinish (locker);
    for (size_t i = held_from; i < held_to; i++)
        cr_assert_eq (r.ok [i], 0, "token %zu reported ok while its commit was blocked", i);

    //  The core's part: save again what failed, until everything is saved
    int64_t deadline = zclock_mono () + 90000;
    while (r.oks < count && zclock_mono () < deadline) {
        size_t queued = 0;
        for (size_t i = 0; i < count; i++)
            if (!r.ok [i] && !r.outstanding [i]) {
                s_save (db, &r, i, 2, NULL);
                if (++queued % burst == 0)
                    wrk_db_pg_flush (db);
            }
        wrk_db_pg_flush (db);
        s_wait (db, 50);
        wrk_db_pg_ready (db);
        wrk_db_pg_recv (db, s_done, &r);
    }
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.oks, count, "%zu of %zu saved; last error: %s", r.oks, count, r.error);
    cr_assert_gt (r.failures, 0, "nothing failed: the stop did not hit the run");
    for (size_t i = held_from; i < held_to; i++)
        cr_assert_geq (r.failed [i], 1, "token %zu in flight at the stop was not reported failed", i);

    //  Every save reported ok is in the table; one never failed was saved once
    PGconn *conn = PQconnectdb (server->url);
    cr_assert_eq (PQstatus (conn), CONNECTION_OK, "%s", PQerrorMessage (conn));
    PGresult *result = PQexec (conn, "SELECT message_id, saves FROM restarts");
    cr_assert_eq (PQresultStatus (result), PGRES_TUPLES_OK, "%s", PQerrorMessage (conn));
    cr_assert_eq ((size_t) PQntuples (result), count);
    bool *seen = calloc (count, sizeof *seen);
    for (int row = 0; row < PQntuples (result); row++) {
        const char *id = PQgetvalue (result, row, 0);
        size_t i = (size_t) strtoull (id + 24, NULL, 10);
        cr_assert_lt (i, count, "%s", id);
        seen [i] = true;
        int saves = atoi (PQgetvalue (result, row, 1));
        if (r.failed [i] == 0)
            cr_assert_eq (saves, 1, "%s saved once, counted %d", id, saves);
        else
            cr_assert (saves >= 1 && saves <= r.failed [i] + 1, "%s counted %d", id, saves);
    }
    for (size_t i = 0; i < count; i++)
        cr_assert (seen [i], "token %zu reported ok but not in the table", i);
    free (seen);
    PQclear (result);
    PQfinish (conn);
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}

typedef struct {
    const char *url;            //  Where to connect
    char name [16];             //  Worker name
    wrk_db_pg_t *db;            //  Result
    char error [512];           //  Why not
} opener_t;

static void *
s_opener (void *arg)
{
    opener_t *opener = arg;
    opener->db = wrk_db_pg_new (opener->url, opener->name, opener->error, sizeof opener->error);
    return NULL;
}

Test (wrk_db_pg, workers_starting_together_create_the_schema_once, .timeout = 120)
{
    enum { WORKERS = 4 };
    opener_t openers [WORKERS];
    pthread_t threads [WORKERS];
    for (int i = 0; i < WORKERS; i++) {
        memset (&openers [i], 0, sizeof openers [i]);
        openers [i].url = server->url;
        snprintf (openers [i].name, sizeof openers [i].name, "w%d", i);
        cr_assert_eq (pthread_create (&threads [i], NULL, s_opener, &openers [i]), 0);
    }
    for (int i = 0; i < WORKERS; i++)
        pthread_join (threads [i], NULL);
    for (int i = 0; i < WORKERS; i++)
        cr_assert_not_null (openers [i].db, "worker %d: %s", i, openers [i].error);
    cr_assert_eq (s_int ("SELECT count (*) FROM mandrill_schema_version"), 1);
    for (int i = 0; i < WORKERS; i++)
        wrk_db_pg_destroy (&openers [i].db);
}

Test (wrk_db_pg, unanswered_group_fails_and_its_outcome_is_sent_again, .timeout = 120)
{
    results_t r;
    s_results_init (&r, 10);
    char id [37];
    wrk_db_pg_t *db = s_open ();
    int64_t now = 1000000;
    wrk_db_pg_set_clock (db, mdl_clock_manual (&now));
    s_save (db, &r, 0, 1, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    cr_assert_eq (r.ok [0], 1, "%s", r.error);

    //  The table locked by another session: the group waits for ever
    PGconn *locker = PQconnectdb (server->url);
    cr_assert_eq (PQstatus (locker), CONNECTION_OK, "%s", PQerrorMessage (locker));
    PGresult *result = PQexec (locker, "BEGIN; LOCK TABLE restarts IN EXCLUSIVE MODE");
    cr_assert_eq (PQresultStatus (result), PGRES_COMMAND_OK, "%s", PQerrorMessage (locker));
    PQclear (result);
    s_id (id, sizeof id, 0);
    cr_assert_eq (wrk_db_pg_outcome (db, id, "restarted", 1700000005000), 0);
    s_save (db, &r, 1, 1, NULL);
    wrk_db_pg_flush (db);
    cr_assert_eq (wrk_db_pg_timeout_ms (db), 30000, "the answer is due in 30 s");
    cr_assert_eq (s_drain (db, &r, 300), 1, "answered while the table was locked");
    now += 30000;
    wrk_db_pg_ready (db);
    cr_assert_eq (wrk_db_pg_fd (db), -1, "the connection was not dropped");
    cr_assert_eq (wrk_db_pg_recv (db, s_done, &r), 1);
    cr_assert_eq (r.failed [1], 1);
    cr_assert (strstr (r.error, "within 30 s"), "%s", r.error);
    //  The server still runs the abandoned group: end it before the lock
    //  goes, so that only the module's resend can record the outcome
    result = PQexec (locker, "SELECT count (pg_terminate_backend (pid)) FROM pg_stat_activity"
                             " WHERE application_name = 'mandrill-worker w1'");
    cr_assert_eq (PQresultStatus (result), PGRES_TUPLES_OK, "%s", PQerrorMessage (locker));
    cr_assert_str_eq (PQgetvalue (result, 0, 0), "1");
    PQclear (result);
    int64_t gone_by = zclock_mono () + 10000;
    bool gone = false;
    while (!gone && zclock_mono () < gone_by) {
        //  From a session of its own: a transaction sees one snapshot of the stats
        gone = s_int ("SELECT count (*) FROM pg_stat_activity"
                      " WHERE application_name = 'mandrill-worker w1'") == 0;
        if (!gone)
            zclock_sleep (10);      //  Polling another process, bounded
    }
    cr_assert (gone, "the abandoned backend did not end");
    result = PQexec (locker, "ROLLBACK");
    PQclear (result);
    PQfinish (locker);
    cr_assert_eq (s_int ("SELECT count (*) FROM restarts WHERE restart_outcome IS NOT NULL"
                         " OR message_id LIKE '%1'"), 0);

    //  After the backoff, the outcome goes again by itself
    now += wrk_db_pg_timeout_ms (db);
    int64_t deadline = zclock_mono () + 15000;
    while (!wrk_db_pg_connected (db) && zclock_mono () < deadline) {
        wrk_db_pg_ready (db);
        s_wait (db, 50);
    }
    cr_assert (wrk_db_pg_connected (db), "no reconnection");
    cr_assert_eq (s_drain (db, &r, 10000), 0);
    char text [64] = "";
    deadline = zclock_mono () + 10000;
    while (strcmp (text, "restarted") != 0 && zclock_mono () < deadline) {
        s_text ("SELECT coalesce (restart_outcome, '') FROM restarts WHERE message_id LIKE '%0'",
                text, sizeof text);
        if (strcmp (text, "restarted") != 0)
            s_wait (db, 20);
    }
    cr_assert_str_eq (text, "restarted");
    wrk_db_pg_destroy (&db);
    s_results_free (&r);
}
