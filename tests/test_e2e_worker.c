/*  End-to-end tests of mandrill-worker: a real mandrill-broker and real
    workers as child processes on 127.0.0.1 ports found free at run time,
    restarts in exec mode through tests/scripts/restart_append.sh (which
    appends "hostname message_id" to a file when a restart completes).
    Requests are published with the MMP codec over a DEALER to the broker's
    frontend; progress is read from the broker's STATS and DEADLETTERS.

    Every process is killed by its PID when a test ends, and every temp
    directory removed. Waits poll STATS with a deadline, so a test fails
    instead of hanging. The databases the workers wrote are read with the
    SQLite API.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_support.h"
#include "mmp.h"

#define MAX_PROCS 8

//  The state of one test: processes, ports, directory.
typedef struct {
    char dir [64];              //  Temp directory, removed at the end
    pid_t pids [MAX_PROCS];     //  Children still to reap
    int frontend;               //  Broker ports
    int backend;
    int events;
    pid_t broker;               //  Broker pid
    zsock_t *client;            //  DEALER to the frontend
    char script [512];          //  Path of restart_append.sh
} env_t;

static env_t env;

static pid_t
s_spawn (const char *log_name, char *const argv [])
{
    pid_t pid = e2e_spawn (env.dir, log_name, argv);
    for (int i = 0; i < MAX_PROCS; i++)
        if (env.pids [i] == 0) {
            env.pids [i] = pid;
            return pid;
        }
    cr_assert_fail ("too many processes");
    return -1;
}

//  Wait up to timeout_ms for pid to exit. Returns its wait status, or -1.
static int
s_wait_exit (pid_t pid, int timeout_ms)
{
    int status = e2e_wait_exit (pid, timeout_ms);
    if (status != -1)
        for (int i = 0; i < MAX_PROCS; i++)
            if (env.pids [i] == pid)
                env.pids [i] = 0;
    return status;
}

static void
s_kill (pid_t pid)
{
    kill (pid, SIGKILL);
    s_wait_exit (pid, 5000);
}

static void
s_setup (void)
{
    memset (&env, 0, sizeof env);
    e2e_dir_new (env.dir, sizeof env.dir, "mandrill_e2e_");
    const char *source = getenv ("MANDRILL_SOURCE_DIR");
    snprintf (env.script, sizeof env.script, "%s/tests/scripts/restart_append.sh",
              source ? source : ".");
}

static void
s_teardown (void)
{
    zsock_destroy (&env.client);
    for (int i = 0; i < MAX_PROCS; i++)
        if (env.pids [i] > 0)
            s_kill (env.pids [i]);
    e2e_dir_remove (env.dir);
}

static void
s_start_broker (const char *ack_deadline, const char *max_attempts)
{
    if (!env.frontend) {
        env.frontend = e2e_free_port ();
        env.backend = e2e_free_port ();
        env.events = e2e_free_port ();
    }
    char frontend [64], backend [64], events [64], data_dir [256];
    snprintf (data_dir, sizeof data_dir, "%s/broker-data", env.dir);
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", env.frontend);
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", env.events);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", frontend, "--backend", backend,
        "--events", events, "--ack-deadline", (char *) ack_deadline,
        "--max-attempts", (char *) max_attempts, "--heartbeat", "200ms",
        "--backoff-base", "100ms", "--backoff-max", "500ms", "--data-dir", data_dir, NULL
    };
    env.broker = s_spawn ("broker.log", argv);
    zsock_destroy (&env.client);
    env.client = e2e_dealer (frontend, 5000, 5000);
}

//  Start a worker in exec mode; extra flags may be NULL-terminated after.
static pid_t
s_start_worker (const char *name, const char *db, const char *restart_cmd,
                const char *extra1, const char *extra2, const char *extra3, const char *extra4)
{
    char backend [64], db_url [256], log [64];
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (db_url, sizeof db_url, "sqlite:%s/%s", env.dir, db);
    snprintf (log, sizeof log, "%s.log", name);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", backend, "--name", (char *) name,
        "--db", db_url, "--restart", "exec", "--restart-cmd", (char *) restart_cmd,
        "--extend-every", "300ms",
        (char *) extra1, (char *) extra2, (char *) extra3, (char *) extra4, NULL
    };
    return s_spawn (log, argv);
}

static cJSON *
s_request (mmp_command_t command, const char *body, mmp_command_t expect)
{
    mmp_msg_t msg;
    int rc = e2e_request (env.client, command, body, &msg);
    cr_assert_neq (rc, -3, "cannot send %s", mmp_command_name (command));
    cr_assert_eq (rc, 0, "no valid reply to %s (rc %d)", mmp_command_name (command), rc);
    cr_assert_eq (msg.command, expect, "got %s", mmp_command_name (msg.command));
    cJSON *body_copy = cJSON_Duplicate (msg.body, true);
    mmp_msg_reset (&msg);
    return body_copy;
}

static int64_t
s_stat (const char *name)
{
    cJSON *stats = s_request (MMP_STATS, "{}", MMP_STATS);
    cJSON *item = cJSON_GetObjectItemCaseSensitive (stats, name);
    int64_t value = cJSON_IsNumber (item) ? (int64_t) item->valuedouble : -1;
    cJSON_Delete (stats);
    return value;
}

//  Poll STATS until name >= value or timeout. Returns the last value.
static int64_t
s_wait_stat (const char *name, int64_t value, int timeout_ms)
{
    int64_t now = zclock_mono (), last = -1;
    while (zclock_mono () - now < timeout_ms) {
        last = s_stat (name);
        if (last >= value)
            break;
        zclock_sleep (50);
    }
    return last;
}

static char s_ids [200][37];
static int s_published;             //  Ids made so far: every publish is new

static void
s_publish (int count)
{
    cr_assert_leq (count, 200);
    char *body = malloc (200 * 128 + 64);
    size_t used = (size_t) sprintf (body, "{\"messages\":[");
    for (int i = 0; i < count; i++) {
        snprintf (s_ids [i], 37, "%08x-0000-4000-8000-%012d", (unsigned) getpid (), s_published++);
        used += (size_t) sprintf (body + used, "%s{\"message_id\":\"%s\",\"instance_name\":\"cattle-%04d\"}",
                                  i ? "," : "", s_ids [i], i);
    }
    sprintf (body + used, "]}");
    cJSON *reply = s_request (MMP_PUBLISH, body, MMP_PUBACK);
    cJSON *ids = cJSON_GetObjectItemCaseSensitive (reply, "message_ids");
    cr_assert_eq (cJSON_GetArraySize (ids), count);
    cJSON_Delete (reply);
    free (body);
}

//  Lines of the restart record naming id.
static int
s_restarts_of (const char *id)
{
    char path [128], line [256];
    snprintf (path, sizeof path, "%s/restarts.txt", env.dir);
    FILE *file = fopen (path, "r");
    if (!file)
        return 0;
    int count = 0;
    while (fgets (line, sizeof line, file))
        if (strstr (line, id))
            count++;
    fclose (file);
    return count;
}

static int
s_restart_lines (void)
{
    char path [128], line [256];
    snprintf (path, sizeof path, "%s/restarts.txt", env.dir);
    FILE *file = fopen (path, "r");
    if (!file)
        return 0;
    int count = 0;
    while (fgets (line, sizeof line, file))
        count++;
    fclose (file);
    return count;
}

static bool
s_log_has (const char *log_name, const char *text)
{
    return e2e_log_has (env.dir, log_name, text);
}

//  Lines of log_name containing text.
static int
s_log_count (const char *log_name, const char *text)
{
    char path [128], line [1024];
    snprintf (path, sizeof path, "%s/%s", env.dir, log_name);
    FILE *file = fopen (path, "r");
    if (!file)
        return 0;
    int count = 0;
    while (fgets (line, sizeof line, file))
        if (strstr (line, text))
            count++;
    fclose (file);
    return count;
}

//  Poll log_name until it has count lines with text, or timeout. Returns
//  the last count.
static int
s_wait_log_count (const char *log_name, const char *text, int count, int timeout_ms)
{
    int64_t start = zclock_mono ();
    int last = s_log_count (log_name, text);
    while (last < count && zclock_mono () - start < timeout_ms) {
        zclock_sleep (50);
        last = s_log_count (log_name, text);
    }
    return last;
}

//  Poll STATS for ms: name must stay at most value all along. Returns the
//  highest value seen (fails fast instead of sleeping through).
static int64_t
s_stat_stays (const char *name, int64_t value, int ms)
{
    int64_t start = zclock_mono (), highest = -1;
    while (zclock_mono () - start < ms) {
        int64_t now = s_stat (name);
        if (now > highest)
            highest = now;
        if (highest > value)
            break;
        zclock_sleep (100);
    }
    return highest;
}

//  The first column of the first row of sql on db_name, or -1 if no row.
static int
s_db_int (const char *db_name, const char *sql)
{
    char path [128];
    snprintf (path, sizeof path, "%s/%s", env.dir, db_name);
    sqlite3 *db;
    cr_assert_eq (sqlite3_open (path, &db), SQLITE_OK);
    sqlite3_stmt *stmt;
    cr_assert_eq (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL), SQLITE_OK, "%s", sql);
    int value = sqlite3_step (stmt) == SQLITE_ROW ? sqlite3_column_int (stmt, 0) : -1;
    sqlite3_finalize (stmt);
    sqlite3_close (db);
    return value;
}

static char s_cmd [1024];

static const char *
s_restart_cmd (const char *delay, const char *status)
{
    snprintf (s_cmd, sizeof s_cmd, "sh %s %s/restarts.txt {hostname} {message_id} %s %s",
              env.script, env.dir, delay, status);
    return s_cmd;
}

//  --------------------------------------------------------------------------

TestSuite (e2e_worker, .init = s_setup, .fini = s_teardown);

Test (e2e_worker, two_workers_ack_save_and_restart_each_once, .timeout = 90)
{
    enum { N = 200 };
    s_start_broker ("2s", "5");
    pid_t a = s_start_worker ("wa", "m.db", s_restart_cmd ("0", "0"), "--credit", "50", NULL, NULL);
    pid_t b = s_start_worker ("wb", "m.db", s_restart_cmd ("0", "0"), "--credit", "50", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 2, 10000), 2, "workers did not register");
    s_publish (N);
    cr_assert_eq (s_wait_stat ("acked", N, 60000), N, "not all acked");
    cr_assert_eq (s_stat ("in_flight"), 0);

    kill (a, SIGTERM);
    kill (b, SIGTERM);
    int status = s_wait_exit (a, 10000);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "worker a status %d", status);
    status = s_wait_exit (b, 10000);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "worker b status %d", status);

    cr_assert_eq (s_restart_lines (), N);
    for (int i = 0; i < N; i++)
        cr_assert_eq (s_restarts_of (s_ids [i]), 1, "message %d restarted %d times",
                      i, s_restarts_of (s_ids [i]));
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts"), N);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE saves = 1"), N);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE restart_outcome = 'restarted'"), N);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(DISTINCT worker) FROM restarts"), 2,
                  "both workers should have taken work");
    cr_assert (s_log_has ("wa.log", "Shutdown complete"));
}

Test (e2e_worker, kill9_other_worker_finishes_without_second_restart, .timeout = 90)
{
    enum { N = 20 };
    s_start_broker ("30s", "5");
    //  Worker a restarts everything but cannot save: its database is locked
    pid_t a = s_start_worker ("wa", "a.db", s_restart_cmd ("0", "0"), "--credit", "100", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    char path [128];
    snprintf (path, sizeof path, "%s/a.db", env.dir);
    sqlite3 *lock;
    cr_assert_eq (sqlite3_open (path, &lock), SQLITE_OK);
    cr_assert_eq (sqlite3_exec (lock, "BEGIN EXCLUSIVE", NULL, NULL, NULL), SQLITE_OK);

    s_publish (N);
    int64_t start = zclock_mono ();
    while (s_restart_lines () < N && zclock_mono () - start < 20000)
        zclock_sleep (50);
    cr_assert_eq (s_restart_lines (), N, "worker a did not restart everything");
    cr_assert_eq (s_stat ("acked"), 0, "nothing can be acked while the save is blocked");
    zclock_sleep (300);         //  Let PROGRESS [restart] reach the broker
    kill (a, SIGKILL);
    s_wait_exit (a, 5000);
    sqlite3_exec (lock, "ROLLBACK", NULL, NULL, NULL);
    sqlite3_close (lock);

    //  Worker b gets the redeliveries (the broker loses a within 3 heartbeats)
    s_start_worker ("wb", "b.db", s_restart_cmd ("0", "0"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("acked", N, 30000), N, "not all acked after the kill");
    cr_assert_eq (s_restart_lines (), N, "a completed restart ran again");
    for (int i = 0; i < N; i++)
        cr_assert_eq (s_restarts_of (s_ids [i]), 1);
    cr_assert (s_log_has ("wb.log", "restart already done"));
}

Test (e2e_worker, sigterm_mid_flight_finishes_within_grace, .timeout = 60)
{
    enum { N = 10 };
    s_start_broker ("5s", "5");
    pid_t a = s_start_worker ("wa", "m.db", s_restart_cmd ("1", "0"), "--grace", "10s", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (N);
    cr_assert_eq (s_wait_stat ("in_flight", N, 10000), N);
    //  The broker counts a lease in flight when it sends DELIVER; wait until
    //  the worker holds every one, so "mid flight" means in the worker.
    cr_assert_eq (s_wait_log_count ("wa.log", "Consumed", N, 10000), N);
    int64_t start = zclock_mono ();
    kill (a, SIGTERM);
    int status = s_wait_exit (a, 12000);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
    cr_assert_lt (zclock_mono () - start, 10000);
    cr_assert_eq (s_stat ("acked"), N, "in-flight messages were not finished");
    cr_assert_eq (s_restart_lines (), N);
    cr_assert (s_log_has ("wa.log", "Received exit signal SIGTERM"));
    cr_assert (s_log_has ("wa.log", "Nacking 0 outstanding messages"));
    cr_assert (s_log_has ("wa.log", "every ack and nack confirmed"), "acks left unconfirmed");
    cr_assert (s_log_has ("wa.log", "Closing database connections"));
    cr_assert (s_log_has ("wa.log", "Shutdown complete"));
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts"), N);
}

Test (e2e_worker, sigterm_after_grace_nacks_and_nothing_is_lost, .timeout = 60)
{
    enum { N = 10 };
    s_start_broker ("5s", "5");
    pid_t a = s_start_worker ("wa", "m.db", s_restart_cmd ("30", "0"), "--grace", "300ms", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (N);
    cr_assert_eq (s_wait_stat ("in_flight", N, 10000), N);
    //  In flight at the broker is not yet held by the worker: wait until it
    //  holds every one, so all N are outstanding when the grace ends.
    cr_assert_eq (s_wait_log_count ("wa.log", "Consumed", N, 10000), N);
    kill (a, SIGTERM);
    int status = s_wait_exit (a, 5000);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
    cr_assert (s_log_has ("wa.log", "Nacking 10 outstanding messages"));
    cr_assert_eq (s_stat ("in_flight"), 0, "leases were not given back");
    //  Another worker finishes all of them
    s_start_worker ("wb", "m.db", s_restart_cmd ("0", "0"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("acked", N, 20000), N);
    cr_assert_eq (s_restart_lines (), N);
}

Test (e2e_worker, failing_restart_is_retried_then_dead_lettered, .timeout = 60)
{
    s_start_broker ("5s", "3");
    s_start_worker ("wa", "m.db", s_restart_cmd ("0", "3"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (2);
    cr_assert_eq (s_wait_stat ("dead_letters", 2, 20000), 2);
    cJSON *reply = s_request (MMP_DEADLETTERS, "{}", MMP_DEADLETTERS);
    cJSON *letters = cJSON_GetObjectItemCaseSensitive (reply, "dead_letters");
    cr_assert_eq (cJSON_GetArraySize (letters), 2);
    cJSON *letter;
    cJSON_ArrayForEach (letter, letters) {
        cJSON *attempts = cJSON_GetObjectItemCaseSensitive (letter, "attempts");
        cr_assert (cJSON_IsNumber (attempts));
        cr_assert_eq ((int) attempts->valuedouble, 3);
    }
    cJSON_Delete (reply);
    cr_assert_eq (s_stat ("acked"), 0);
    cr_assert (s_log_has ("wa.log", "exited with status 3"));
}

Test (e2e_worker, hanging_restart_is_killed_at_the_timeout, .timeout = 60)
{
    s_start_broker ("5s", "2");
    s_start_worker ("wa", "m.db", s_restart_cmd ("60", "0"),
                    "--restart-timeout", "500ms", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    int64_t start = zclock_mono ();
    s_publish (1);
    cr_assert_eq (s_wait_stat ("dead_letters", 1, 20000), 1);
    //  Two attempts of 500 ms plus a short backoff, far from the 60 s sleep
    cr_assert_lt (zclock_mono () - start, 10000);
    cr_assert (s_log_has ("wa.log", "timed out"));
    cr_assert_eq (s_restart_lines (), 0);
}

Test (e2e_worker, worker_rejoins_a_restarted_broker, .timeout = 60)
{
    s_start_broker ("5s", "5");
    s_start_worker ("wa", "m.db", s_restart_cmd ("1", "0"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (5);
    char old_ids [5][37];
    memcpy (old_ids, s_ids, sizeof old_ids);
    cr_assert_eq (s_wait_stat ("in_flight", 5, 10000), 5);
    cr_assert_eq (s_wait_log_count ("wa.log", "Consumed", 5, 10000), 5);
    //  The broker dies with leases out and comes back on the same ports and
    //  journal: it still knows the 5 leases, so the worker's acks by their
    //  old delivery ids count
    s_kill (env.broker);
    s_start_broker ("5s", "5");
    cr_assert_eq (s_wait_stat ("workers", 1, 15000), 1, "worker did not register again");
    s_publish (5);
    cr_assert_eq (s_wait_stat ("acked", 10, 15000), 10, "worker does not finish its leases and new work");
    cr_assert_eq (s_stat ("redelivered"), 0, "a held lease was delivered again");
    for (int i = 0; i < 5; i++) {
        cr_assert_eq (s_restarts_of (s_ids [i]), 1, "new message %d restarted %d times", i,
                      s_restarts_of (s_ids [i]));
        cr_assert_eq (s_restarts_of (old_ids [i]), 1, "old message %d restarted %d times", i,
                      s_restarts_of (old_ids [i]));
    }
    cr_assert (s_log_has ("wa.log", "HELLO again") || s_log_has ("wa.log", "reconnecting"));
}

Test (e2e_worker, acks_made_while_the_broker_is_down_are_resent, .timeout = 60)
{
    s_start_broker ("5s", "5");
    s_start_worker ("wa", "m.db", s_restart_cmd ("2", "0"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (5);
    cr_assert_eq (s_wait_stat ("in_flight", 5, 10000), 5);
    zclock_sleep (500);         //  The leases reach the broker's journal
    //  The broker dies; the worker finishes all five while it is gone, so
    //  its ACKs (and PROGRESS) reach nobody
    s_kill (env.broker);
    int64_t start = zclock_mono ();
    while (s_restart_lines () < 5 && zclock_mono () - start < 10000)
        zclock_sleep (50);
    cr_assert_eq (s_restart_lines (), 5);
    //  Every job finished and its ACK went out (to nobody)
    cr_assert_eq (s_wait_log_count ("wa.log", "Done. Acked", 5, 5000), 5);
    //  Back on the same journal: the leases are open one more ack deadline,
    //  and the worker must ack them again by their old ids once it is known
    s_start_broker ("5s", "5");
    cr_assert_eq (s_wait_stat ("acked", 5, 4000), 5, "unconfirmed acks were not resent");
    cr_assert_eq (s_stat ("redelivered"), 0);
    //  Past the extra ack deadline: nothing comes back
    cr_assert_eq (s_stat_stays ("redelivered", 0, 6000), 0, "acked leases were delivered again");
    cr_assert_eq (s_restart_lines (), 5, "a restart ran twice");
    cr_assert (s_log_has ("wa.log", "Resending unconfirmed"));
}

Test (e2e_worker, sigterm_waits_for_acked_then_reports_unconfirmed, .timeout = 60)
{
    s_start_broker ("5s", "5");
    pid_t a = s_start_worker ("wa", "m.db", s_restart_cmd ("1", "0"), "--grace", "2s", NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    s_publish (3);
    cr_assert_eq (s_wait_stat ("in_flight", 3, 10000), 3);
    //  A restart runs only once the broker recorded its start
    cr_assert_eq (s_wait_log_count ("wa.log", "Broker recorded the start", 3, 10000), 3);
    s_kill (env.broker);        //  Nobody will ever answer the ACKs
    int64_t start = zclock_mono ();
    while (s_restart_lines () < 3 && zclock_mono () - start < 10000)
        zclock_sleep (50);
    cr_assert_eq (s_restart_lines (), 3);
    cr_assert_eq (s_wait_log_count ("wa.log", "Done. Acked", 3, 5000), 3);
    start = zclock_mono ();
    kill (a, SIGTERM);
    int status = s_wait_exit (a, 8000);
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "status %d", status);
    int64_t took = zclock_mono () - start;
    cr_assert_geq (took, 1800, "did not wait for ACKED within the grace (%" PRId64 " ms)", took);
    cr_assert (s_log_has ("wa.log", "3 acks and 0 nacks left unconfirmed"));
    cr_assert (s_log_has ("wa.log", "Nacking 0 outstanding messages"));
    cr_assert (s_log_has ("wa.log", "Shutdown complete"));
}

//  The saved row (schema 2): attributes as JSON text, attempt, worker name,
//  saved time and restart outcome time, through the real programs.
Test (e2e_worker, saved_row_has_attributes_attempt_worker_and_times, .timeout = 60)
{
    s_start_broker ("5s", "5");
    s_start_worker ("wa", "m.db", s_restart_cmd ("0", "0"), NULL, NULL, NULL, NULL);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1);
    cJSON *reply = s_request (MMP_PUBLISH,
        "{\"messages\":[{\"message_id\":\"00000000-0000-4000-8000-0000000000a1\","
        "\"instance_name\":\"cattle-a1\",\"attributes\":{\"zone\":\"eu-1\",\"tags\":[\"db\",2]}},"
        "{\"message_id\":\"00000000-0000-4000-8000-0000000000a2\",\"instance_name\":\"cattle-a2\"}]}",
        MMP_PUBACK);
    cJSON_Delete (reply);
    cr_assert_eq (s_wait_stat ("acked", 2, 15000), 2);
    //  The outcome update follows the ack in the next batch: poll for it
    int64_t start = zclock_mono ();
    while (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE outcome_at IS NOT NULL") < 2
    &&     zclock_mono () - start < 5000)
        zclock_sleep (50);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE outcome_at IS NOT NULL"
                                    " AND outcome_at >= saved_at AND saved_at >= received_at"), 2);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE worker = 'wa'"
                                    " AND attempt = 1 AND restart_outcome = 'restarted'"), 2);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE message_id ="
                                    " '00000000-0000-4000-8000-0000000000a1' AND attributes ="
                                    " '{\"zone\":\"eu-1\",\"tags\":[\"db\",2]}'"), 1);
    //  Without CURVE nobody is named: the row has no publisher
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE publisher IS NULL"), 2);
    cr_assert_eq (s_db_int ("m.db", "SELECT count(*) FROM restarts WHERE message_id ="
                                    " '00000000-0000-4000-8000-0000000000a2' AND attributes IS NULL"), 1);
    cr_assert_eq (s_db_int ("m.db", "PRAGMA user_version"), 3);
}
