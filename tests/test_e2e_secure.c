/*  End-to-end test of a secure Mandrill: the built mandrill-broker,
    mandrill-worker, mandrill-publish and mandrill-ctl as child processes on
    127.0.0.1, every connection CURVE, keys made by `mandrill-ctl keygen`.
    Restarts run in exec mode through tests/scripts/restart_append.sh, which
    appends "hostname message_id" to a file when a restart completes.

    Every process is killed by its PID when the test ends, and the temp
    directory removed. Waits poll with deadlines, never fixed sleeps.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_support.h"
#include "mdl_curve.h"
#include <sqlite3.h>

#define MAX_PROCS 4

static char s_dir [64];
static pid_t s_pids [MAX_PROCS];
static int s_ports [3];
static char s_frontend [64], s_backend [64], s_events [64];
static int s_runs;                  //  Log file counter for one-shot programs

static void
s_setup (void)
{
    memset (s_pids, 0, sizeof s_pids);
    e2e_dir_new (s_dir, sizeof s_dir, "mandrill_secure_");
}

static void
s_teardown (void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] > 0)
            e2e_kill (s_pids [i]);
    e2e_dir_remove (s_dir);
}

static void
s_keep (pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] == 0) {
            s_pids [i] = pid;
            return;
        }
    cr_assert_fail ("too many processes");
}

//  Run a one-shot program to its end (at most timeout_ms) and return its
//  exit status; its output goes to the log file named in log_name (size 64).
static int
s_run (char *const argv [], int timeout_ms, char *log_name)
{
    snprintf (log_name, 64, "run-%d.log", ++s_runs);
    pid_t pid = e2e_spawn (s_dir, log_name, argv);
    int status = e2e_wait_exit (pid, timeout_ms);
    if (status == -1) {
        e2e_kill (pid);
        cr_assert_fail ("%s did not finish within %d ms", argv [0], timeout_ms);
    }
    return WIFEXITED (status) ? WEXITSTATUS (status) : 128 + WTERMSIG (status);
}

static void
s_path (char *path, size_t size, const char *name)
{
    snprintf (path, size, "%s/%s", s_dir, name);
}

//  mandrill-ctl keygen NAME --dir DIR/keys, then the public file copied
//  into DIR/ROLE (when role is not NULL).
static void
s_keygen (const char *name, const char *role)
{
    char keys [128], log [64];
    s_path (keys, sizeof keys, "keys");
    mkdir (keys, 0700);
    char *argv [] = { (char *) e2e_program ("MANDRILL_CTL"), "keygen", (char *) name, "--dir", keys, NULL };
    cr_assert_eq (s_run (argv, 10000, log), 0, "keygen %s failed", name);
    if (role) {
        char command [512];
        snprintf (command, sizeof command, "mkdir -p '%s/%s' && cp '%s/%s.key' '%s/%s/'",
                  s_dir, role, keys, name, s_dir, role);
        cr_assert_eq (system (command), 0);
    }
}

static bool
s_file_has (const char *name, const char *text)
{
    return e2e_log_has (s_dir, name, text);
}

//  How many times text occurs in the file name.
static int
s_file_count (const char *name, const char *text)
{
    char path [256];
    s_path (path, sizeof path, name);
    char *data = NULL;
    size_t size = 0;
    FILE *file = fopen (path, "r");
    if (file) {
        data = calloc (1, 1 << 20);
        size = data ? fread (data, 1, (1 << 20) - 1, file) : 0;
        fclose (file);
    }
    int count = 0;
    for (const char *at = data; size && at && (at = strstr (at, text)) != NULL; at += strlen (text))
        count++;
    free (data);
    return count;
}

static bool
s_wait_file_has (const char *name, const char *text, int timeout_ms)
{
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until) {
        if (s_file_has (name, text))
            return true;
        zclock_sleep (50);
    }
    return s_file_has (name, text);
}

//  mandrill-ctl as key (NULL: no CURVE) with the command words given.
static int
s_ctl (const char *key, const char *word1, const char *word2, char *log)
{
    char cert [128], broker [128];
    snprintf (cert, sizeof cert, "%s/keys/%s.key_secret", s_dir, key ? key : "none");
    snprintf (broker, sizeof broker, "%s/keys/broker.key", s_dir);
    char *argv [16];
    int argc = 0;
    argv [argc++] = (char *) e2e_program ("MANDRILL_CTL");
    argv [argc++] = "--broker";
    argv [argc++] = s_frontend;
    argv [argc++] = "--events";
    argv [argc++] = s_events;
    argv [argc++] = "--timeout";
    argv [argc++] = "1500ms";
    argv [argc++] = "--json";
    if (key) {
        argv [argc++] = "--curve-cert";
        argv [argc++] = cert;
        argv [argc++] = "--broker-cert";
        argv [argc++] = broker;
    }
    argv [argc++] = (char *) word1;
    if (word2)
        argv [argc++] = (char *) word2;
    argv [argc] = NULL;
    return s_run (argv, 20000, log);
}

//  mandrill-publish one request as key; the exit status.
static int
s_publish (const char *key, const char *instance, const char *hostname)
{
    char cert [128], broker [128], log [64];
    snprintf (cert, sizeof cert, "%s/keys/%s.key_secret", s_dir, key);
    snprintf (broker, sizeof broker, "%s/keys/broker.key", s_dir);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_PUBLISH"), "--broker", s_frontend, "--curve-cert", cert,
        "--broker-cert", broker, "--timeout", "1s", "--retries", "1", "--instance", (char *) instance,
        "--hostname", (char *) hostname, NULL
    };
    return s_run (argv, 20000, log);
}

//  A SUB on the events feed as key, returned once its CURVE handshake is
//  done (a socket monitor says so), so that no event after this is missed.
static zsock_t *
s_events_sub (const char *key)
{
    char cert [128], broker [128], error [256];
    snprintf (cert, sizeof cert, "%s/keys/%s.key_secret", s_dir, key);
    snprintf (broker, sizeof broker, "%s/keys/broker.key", s_dir);
    zsock_t *sub = zsock_new (ZMQ_SUB);
    cr_assert_not_null (sub);
    cr_assert_eq (mdl_curve_client_files (sub, cert, broker, error, sizeof error), 0, "%s", error);
    zsock_set_subscribe (sub, "");
    zsock_set_rcvtimeo (sub, 200);
    char monitor [64];
    snprintf (monitor, sizeof monitor, "inproc://events-monitor-%d", getpid ());
    cr_assert_eq (zmq_socket_monitor (zsock_resolve (sub), monitor, ZMQ_EVENT_HANDSHAKE_SUCCEEDED), 0);
    zsock_t *pair = zsock_new_pair (monitor);
    cr_assert_not_null (pair);
    zsock_set_rcvtimeo (pair, 20000);
    cr_assert_eq (zsock_connect (sub, "%s", s_events), 0);
    zmsg_t *event = zmsg_recv (pair);
    cr_assert_not_null (event, "the events socket did not complete its CURVE handshake");
    zmsg_destroy (&event);
    zmq_socket_monitor (zsock_resolve (sub), NULL, 0);
    zsock_destroy (&pair);
    return sub;
}

//  Read events until one named event whose JSON holds text arrives (true),
//  or timeout_ms passed (false). Other events are skipped.
static bool
s_wait_event (zsock_t *sub, const char *event, const char *text, int timeout_ms)
{
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until) {
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            continue;
        char *topic = zmsg_popstr (msg);
        char *json = zmsg_popstr (msg);
        bool found = topic && json && streq (topic, event) && strstr (json, text);
        zstr_free (&topic);
        zstr_free (&json);
        zmsg_destroy (&msg);
        if (found)
            return true;
    }
    return false;
}

//  The text of the first column of the first row of sql on the worker's
//  SQLite file, into out ("" when no row). Polls until a row comes, at
//  most timeout_ms: the worker commits its save before it acks.
static void
s_db_text (const char *sql, char *out, size_t size, int timeout_ms)
{
    char path [128];
    s_path (path, sizeof path, "worker.db");
    out [0] = 0;
    int64_t until = zclock_mono () + timeout_ms;
    do {
        sqlite3 *db = NULL;
        if (sqlite3_open_v2 (path, &db, SQLITE_OPEN_READONLY, NULL) == SQLITE_OK) {
            sqlite3_busy_timeout (db, 1000);
            sqlite3_stmt *stmt = NULL;
            if (sqlite3_prepare_v2 (db, sql, -1, &stmt, NULL) == SQLITE_OK
            &&  sqlite3_step (stmt) == SQLITE_ROW && sqlite3_column_text (stmt, 0))
                snprintf (out, size, "%s", (const char *) sqlite3_column_text (stmt, 0));
            sqlite3_finalize (stmt);
        }
        sqlite3_close (db);
        if (out [0])
            return;
        zclock_sleep (100);
    } while (zclock_mono () < until);
}

TestSuite (e2e_secure, .init = s_setup, .fini = s_teardown);

Test (e2e_secure, broker_worker_publish_and_ctl_over_curve, .timeout = 120)
{
    s_keygen ("broker", NULL);
    s_keygen ("pub", "publishers");
    s_keygen ("wrk", "workers");
    s_keygen ("op", "operators");
    s_keygen ("obs", "observers");
    s_keygen ("stranger", NULL);
    //  keygen never overwrites
    char log [64];
    char keys [128];
    s_path (keys, sizeof keys, "keys");
    char *again [] = { (char *) e2e_program ("MANDRILL_CTL"), "keygen", "pub", "--dir", keys, NULL };
    cr_expect_eq (s_run (again, 10000, log), 1, "keygen over an existing key: not written is exit 1");
    struct stat info;
    char secret [128];
    s_path (secret, sizeof secret, "keys/pub.key_secret");
    cr_assert_eq (stat (secret, &info), 0);
    cr_expect_eq (info.st_mode & 0777, 0600);

    for (int i = 0; i < 3; i++)
        s_ports [i] = e2e_free_port ();
    snprintf (s_frontend, sizeof s_frontend, "tcp://127.0.0.1:%d", s_ports [0]);
    snprintf (s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", s_ports [1]);
    snprintf (s_events, sizeof s_events, "tcp://127.0.0.1:%d", s_ports [2]);
    char cert [128], pubs [128], wrks [128], ops [128], obss [128], data [128];
    s_path (cert, sizeof cert, "keys/broker.key_secret");
    s_path (pubs, sizeof pubs, "publishers");
    s_path (wrks, sizeof wrks, "workers");
    s_path (ops, sizeof ops, "operators");
    s_path (obss, sizeof obss, "observers");
    s_path (data, sizeof data, "data");
    char *broker [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", s_frontend, "--backend", s_backend,
        "--events", s_events, "--curve-cert", cert, "--publishers", pubs, "--workers", wrks,
        "--operators", ops, "--observers", obss, "--data-dir", data, "--max-attempts", "2",
        "--backoff-base", "50ms", "--backoff-max", "100ms", "--heartbeat", "200ms", NULL
    };
    s_keep (e2e_spawn (s_dir, "broker.log", broker));
    cr_assert (s_wait_file_has ("broker.log", "ready", 20000), "the broker did not start");

    const char *source = getenv ("MANDRILL_SOURCE_DIR");
    char command [512], worker_cert [128], broker_public [128], db [160];
    snprintf (command, sizeof command, "sh %s/tests/scripts/restart_append.sh %s/restarts.txt {hostname} {message_id}",
              source ? source : ".", s_dir);
    s_path (worker_cert, sizeof worker_cert, "keys/wrk.key_secret");
    s_path (broker_public, sizeof broker_public, "keys/broker.key");
    snprintf (db, sizeof db, "sqlite:%s/worker.db", s_dir);
    char *worker [] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", s_backend, "--name", "w1",
        "--db", db, "--restart", "exec", "--restart-cmd", command,
        "--curve-cert", worker_cert, "--broker-cert", broker_public,
        "--allow-hosts", "*.example.net", NULL
    };
    //  The operator watches the events from before the first publish
    zsock_t *events = s_events_sub ("op");
    s_keep (e2e_spawn (s_dir, "worker.log", worker));

    //  The publisher's key publishes; the request is restarted by the worker
    cr_expect_eq (s_publish ("pub", "cattle-0001", "cattle-0001.example.net"), 0);
    cr_expect (s_wait_event (events, "published", "\"publisher\":\"pub\"", 20000),
               "no published event naming the publisher's key");
    cr_expect (s_wait_file_has ("restarts.txt", "cattle-0001.example.net", 30000),
               "the published request was not restarted");
    //  The worker's row names the publisher's key and the worker as the
    //  broker names it: its own key, then its --name w1
    char text [128];
    s_db_text ("SELECT publisher || ' ' || worker FROM restarts WHERE instance_name = 'cattle-0001'",
               text, sizeof text, 20000);
    cr_expect_str_eq (text, "pub wrk/w1");
    //  A host outside --allow-hosts is never restarted and ends as a dead letter
    cr_expect_eq (s_publish ("pub", "cattle-0002", "cattle-0002.evil.org"), 0);
    bool dead = false;
    int64_t until = zclock_mono () + 30000;
    while (!dead && zclock_mono () < until) {
        cr_assert_eq (s_ctl ("op", "deadletters", NULL, log), 0);
        dead = s_file_has (log, "host_not_allowed");
        if (!dead)
            zclock_sleep (100);
    }
    cr_expect (dead, "no dead letter naming host_not_allowed");
    //  The dead letter and its history name the publisher's key
    cr_expect_eq (s_file_count (log, "\"publisher\""), 3,
                  "the dead letter and its two attempts do not name the publisher");
    cr_expect (s_wait_event (events, "dead_lettered", "\"publisher\":\"pub\"", 20000),
               "no dead_lettered event naming the publisher's key");
    zsock_destroy (&events);

    cr_expect_not (s_file_has ("restarts.txt", "evil.org"), "a host outside --allow-hosts was restarted");

    //  An unknown key and plain TCP get no service at all
    cr_expect_eq (s_publish ("stranger", "cattle-0003", "cattle-0003.example.net"), 1);
    cr_expect_eq (s_ctl (NULL, "stats", NULL, log), 1, "plain ctl got an answer");
    cr_expect_eq (s_ctl ("stranger", "stats", NULL, log), 1, "an unknown key got an answer");

    //  Roles: the observer reads stats only, the publisher nothing
    cr_expect_eq (s_ctl ("obs", "stats", NULL, log), 0);
    cr_expect_eq (s_ctl ("obs", "deadletters", NULL, log), 4);
    cr_expect (s_file_has (log, "forbidden"));
    cr_expect_eq (s_ctl ("pub", "stats", NULL, log), 4);
    cr_expect (s_file_has (log, "forbidden"));
    cr_expect_eq (s_ctl ("op", "stats", NULL, log), 0);
    cr_expect (s_file_has ("broker.log", "forbidden: observer obs (key "),
               "the broker's forbidden line does not name the key");
    cr_expect (s_file_has ("broker.log", "forbidden: publisher pub (key "),
               "the broker's forbidden line does not name the key");
    cr_expect (s_file_has ("broker.log", "refused"), "the broker did not log the refused key");

    //  The names survive a restart: the journal carries the publisher (and
    //  the dead letter's history its text)
    pid_t old = s_pids [0];
    kill (old, SIGTERM);
    cr_assert_neq (e2e_wait_exit (old, 20000), -1, "the broker did not stop on SIGTERM");
    s_pids [0] = 0;
    s_keep (e2e_spawn (s_dir, "broker-2.log", broker));
    cr_assert (s_wait_file_has ("broker-2.log", "ready", 20000), "the broker did not start again");
    cr_assert_eq (s_ctl ("op", "deadletters", NULL, log), 0);
    cr_expect (s_file_has (log, "host_not_allowed"), "the dead letter did not survive the restart");
    //  Named three times: the dead letter itself and its two attempts
    //  (--max-attempts 2)
    cr_expect_eq (s_file_count (log, "\"publisher\""), 3,
                   "the dead letter lost its publisher in the restart");
}

Test (e2e_secure, without_curve_the_broker_binds_loopback_only, .timeout = 60)
{
    char log [64], data [128];
    s_path (data, sizeof data, "data");
    int port = e2e_free_port ();
    char wildcard [64];
    snprintf (wildcard, sizeof wildcard, "tcp://*:%d", port);
    char *broker [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", wildcard, "--data-dir", data,
        "--backend", "tcp://127.0.0.1:0", "--events", "tcp://127.0.0.1:0", NULL
    };
    cr_expect_eq (s_run (broker, 20000, log), 1, "bound a wildcard address without CURVE");
    cr_expect (s_file_has (log, "without CURVE"));

    //  --insecure binds it, and says so loudly
    char *insecure [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", wildcard, "--data-dir", data,
        "--backend", "tcp://127.0.0.1:0", "--events", "tcp://127.0.0.1:0", "--insecure", NULL
    };
    pid_t pid = e2e_spawn (s_dir, "insecure.log", insecure);
    s_keep (pid);
    cr_expect (s_wait_file_has ("insecure.log", "ready", 20000), "--insecure did not start");
    cr_expect (s_file_has ("insecure.log", "INSECURE"));
}
