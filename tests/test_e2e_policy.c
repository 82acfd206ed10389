/*  test_e2e_policy: the restart policy with real processes.

    mandrill-broker with --group, mandrill-worker in exec mode whose
    restart command is a script that appends "start HOST NS" and "end
    HOST NS" (date +%s%N) to a file, and mandrill-ctl. From the recorded
    intervals: the group's concurrency never exceeds its cap and one host
    is never restarted twice at once. A pause given with mandrill-ctl
    holds across kill -9 of the broker (journal, batch mode) and resume
    lets the work go on. Every process is stopped by its PID; the temp
    directory is removed (MANDRILL_KEEP_TMP keeps it).
*/
#include "e2e_support.h"
#include "mmp.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define S_CAP 2

static struct {
    char dir [64];              //  Temp dir: logs, data, script, restarts.txt
    int frontend, backend, events;
    char endpoint [64];         //  Frontend
    pid_t broker;
    pid_t workers [2];
    zsock_t *client;            //  DEALER to the frontend
} env;

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    memset (&env, 0, sizeof env);
    e2e_program ("MANDRILL_BROKER");
    e2e_dir_new (env.dir, sizeof env.dir, "mandrill-e2e-policy-");
    env.frontend = e2e_free_port ();
    env.backend = e2e_free_port ();
    env.events = e2e_free_port ();
    snprintf (env.endpoint, sizeof env.endpoint, "tcp://127.0.0.1:%d", env.frontend);
    char path [128];
    snprintf (path, sizeof path, "%s/restart.sh", env.dir);
    FILE *script = fopen (path, "w");
    cr_assert_not_null (script);
    fprintf (script, "#!/bin/sh\n"
                     "echo \"start $2 $(date +%%s%%N)\" >> \"$1\"\n"
                     "sleep 0.2\n"
                     "echo \"end $2 $(date +%%s%%N)\" >> \"$1\"\n");
    fclose (script);
}

static void
s_stop (pid_t *pid)
{
    if (*pid <= 0)
        return;
    kill (*pid, SIGTERM);
    if (e2e_wait_exit (*pid, 10000) == -1)
        e2e_kill (*pid);
    *pid = 0;
}

static void
s_teardown (void)
{
    zsock_destroy (&env.client);
    for (int i = 0; i < 2; i++)
        s_stop (&env.workers [i]);
    s_stop (&env.broker);
    e2e_dir_remove (env.dir);
}

static cJSON *
s_ask (mmp_command_t command, const char *body, int timeout_ms)
{
    zsock_t *sock = e2e_dealer (env.endpoint, timeout_ms, timeout_ms);
    mmp_msg_t msg;
    cJSON *result = NULL;
    int rc = e2e_request (sock, command, body, &msg);
    if (rc == 0) {
        mmp_command_t expected = command == MMP_PUBLISH ? MMP_PUBACK : command;
        if (msg.command == expected)
            result = cJSON_Duplicate (msg.body, true);
        else
            cr_log_warn ("%s: got %s %s", mmp_command_name (command), mmp_command_name (msg.command),
                         msg.reason ? msg.reason : "");
        mmp_msg_reset (&msg);
    }

    zsock_destroy (&sock);
    return result;
}

static double
s_stat (const char *name)
{
    cJSON *stats = s_ask (MMP_STATS, "{}", 3000);
    cr_assert_not_null (stats, "no STATS");
    const cJSON *item = cJSON_GetObjectItemCaseSensitive (stats, name);
    double value = cJSON_IsNumber (item) ? item->valuedouble : -1;
    cJSON_Delete (stats);
    return value;
}

static void
s_broker_start (void)
{
    char frontend [64], backend [64], events [64], data [128];
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", env.frontend);
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", env.events);
    snprintf (data, sizeof data, "%s/data", env.dir);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", frontend, "--backend", backend,
        "--events", events, "--data-dir", data, "--durability", "batch", "--heartbeat", "200ms",
        "--ack-deadline", "5s", "--group", "cattle:cattle-*:2", "--group", "db:db-*:1", NULL
    };
    env.broker = e2e_spawn (env.dir, "broker.log", argv);
    for (int i = 0; i < 100; i++) {
        cJSON *stats = s_ask (MMP_STATS, "{}", 100);
        if (stats) {
            cJSON_Delete (stats);
            return;
        }
    }
    cr_assert_fail ("broker did not start");
}

static pid_t
s_worker_start (const char *name)
{
    char backend [64], db [128], cmd [256], log [64];
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (db, sizeof db, "sqlite:%s/%s.db", env.dir, name);
    snprintf (cmd, sizeof cmd, "sh %s/restart.sh %s/restarts.txt {hostname}", env.dir, env.dir);
    snprintf (log, sizeof log, "%s.log", name);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", backend, "--name", (char *) name,
        "--db", db, "--restart", "exec", "--restart-cmd", cmd, "--credit", "5",
        "--extend-every", "300ms", NULL
    };
    return e2e_spawn (env.dir, log, argv);
}

//  Publish count requests for instance names prefix-(i % hosts), one batch.
//  Returns how many the PUBACK says were coalesced.
static int
s_publish (const char *prefix, int count, int hosts)
{
    char body [8192];
    size_t used = (size_t) snprintf (body, sizeof body, "{\"messages\":[");
    for (int i = 0; i < count; i++)
        used += (size_t) snprintf (body + used, sizeof body - used, "%s{\"instance_name\":\"%s-%d\"}",
                                   i ? "," : "", prefix, i % hosts);
    snprintf (body + used, sizeof body - used, "]}");
    cJSON *puback = s_ask (MMP_PUBLISH, body, 5000);
    cr_assert_not_null (puback, "no PUBACK");
    int coalesced = cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (puback, "coalesced_with"));
    cJSON_Delete (puback);
    return coalesced;
}

//  Wait (bounded) until nothing is pending.
static void
s_wait_idle (int timeout_ms)
{
    int64_t until = zclock_mono () + timeout_ms;
    while (zclock_mono () < until) {
        cJSON *stats = s_ask (MMP_STATS, "{}", 1000);
        if (stats) {
            double pending = 0;
            const char *names [] = { "held", "ready", "delayed", "in_flight" };
            for (int i = 0; i < 4; i++)
                pending += cJSON_GetObjectItemCaseSensitive (stats, names [i])->valuedouble;
            cJSON_Delete (stats);
            if (pending == 0)
                return;
        }
        zclock_sleep (50);
    }
    cr_assert_fail ("requests still pending after %d ms", timeout_ms);
}

typedef struct {
    char host [128];
    long long start, end;       //  ns; end 0 while running
} s_interval_t;

//  The recorded intervals; returns how many, every one finished.
static size_t
s_intervals (s_interval_t *out, size_t max)
{
    char path [128];
    snprintf (path, sizeof path, "%s/restarts.txt", env.dir);
    FILE *file = fopen (path, "r");
    if (!file)
        return 0;
    size_t count = 0;
    char kind [16], host [128];
    long long ns;
    while (fscanf (file, "%15s %127s %lld", kind, host, &ns) == 3) {
        if (strcmp (kind, "start") == 0 && count < max) {
            snprintf (out [count].host, sizeof out [count].host, "%s", host);
            out [count].start = ns;
            out [count].end = 0;
            count++;
        }
        else
        if (strcmp (kind, "end") == 0)
            for (size_t i = 0; i < count; i++)
                if (out [i].end == 0 && strcmp (out [i].host, host) == 0) {
                    out [i].end = ns;
                    break;
                }
    }
    fclose (file);
    return count;
}

Test (e2e_policy, cap_and_one_restart_per_host, .init = s_setup, .fini = s_teardown, .timeout = 120)
{
    s_broker_start ();
    env.workers [0] = s_worker_start ("w1");
    env.workers [1] = s_worker_start ("w2");
    for (int i = 0; i < 100 && s_stat ("workers") < 2; i++)
        zclock_sleep (50);
    cr_assert_eq (s_stat ("workers"), 2);
    //  20 requests over 10 hosts, in two batches so that the second
    //  request for a host meets the first leased or waiting
    cr_assert_eq (s_publish ("cattle", 10, 10), 0);
    //  Most of the first batch waits behind the cap (a restart takes
    //  200 ms): the PUBACK names whom the second batch's requests joined
    int joined = s_publish ("cattle", 10, 10);
    s_wait_idle (60000);
    static s_interval_t runs [64];
    size_t count = s_intervals (runs, 64);
    cr_assert_geq (count, 10, "only %zu restarts", count);
    int most = 0;
    for (size_t i = 0; i < count; i++) {
        cr_assert_neq (runs [i].end, 0, "restart of %s never ended", runs [i].host);
        //  Concurrency at the moment run i started
        int open = 0;
        for (size_t j = 0; j < count; j++)
            if (runs [j].start <= runs [i].start && runs [j].end > runs [i].start) {
                open++;
                cr_assert (j == i || strcmp (runs [j].host, runs [i].host) != 0,
                           "%s restarted twice at once", runs [i].host);
            }
        if (open > most)
            most = open;
    }
    double coalesced = s_stat ("coalesced");
    cr_log_info ("%zu restarts of 20 requests over 10 hosts; most at once %d (cap %d); coalesced %.0f "
                 "(%d named in the PUBACK)", count, most, S_CAP, coalesced, joined);
    cr_expect_geq (joined, 1, "batch mode: the PUBACK named no coalesced request");
    cr_expect_eq (joined, (int) coalesced);
    cr_assert_leq (most, S_CAP, "%d restarts at once in a group of cap %d", most, S_CAP);
    cr_assert_geq (most, 1);
}

//  Run mandrill-ctl with args; its exit code, stdout into out.
static int
s_ctl (char *out, size_t size, const char *a, const char *b, const char *c, const char *d)
{
    char path [128];
    snprintf (path, sizeof path, "%s/ctl.out", env.dir);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_CTL"), "--broker", env.endpoint, (char *) a, (char *) b,
        (char *) c, (char *) d, NULL
    };
    pid_t pid = fork ();
    cr_assert (pid >= 0);
    if (pid == 0) {
        FILE *file = freopen (path, "w", stdout);
        if (!file)
            _exit (126);
        execv (argv [0], argv);
        _exit (127);
    }
    int status = e2e_wait_exit (pid, 20000);
    if (status == -1) {
        e2e_kill (pid);
        return -1;
    }
    FILE *file = fopen (path, "r");
    size_t got = file ? fread (out, 1, size - 1, file) : 0;
    out [got] = 0;
    if (file)
        fclose (file);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

Test (e2e_policy, pause_holds_across_a_broker_kill, .init = s_setup, .fini = s_teardown, .timeout = 120)
{
    static char out [65536];
    s_broker_start ();
    cr_assert_eq (s_ctl (out, sizeof out, "pause", "db", "--reason", "maintenance"), 0);
    cr_expect (strstr (out, "paused db: maintenance"), "%s", out);
    cr_assert_eq (s_ctl (out, sizeof out, "pause", "nosuch", NULL, NULL), 4);
    e2e_kill (env.broker);
    env.broker = 0;
    s_broker_start ();
    cr_assert_eq (s_ctl (out, sizeof out, "groups", NULL, NULL, NULL), 0);
    cr_expect (strstr (out, "paused: maintenance"), "%s", out);
    cr_assert_eq (s_ctl (out, sizeof out, "--json", "groups", NULL, NULL), 0);
    cJSON *groups = cJSON_Parse (out);
    cr_assert_not_null (groups, "%s", out);
    const cJSON *db = cJSON_GetArrayItem (cJSON_GetObjectItemCaseSensitive (groups, "groups"), 1);
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (db, "name")->valuestring, "db");
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (db, "paused")));
    cJSON_Delete (groups);

    env.workers [0] = s_worker_start ("w1");
    for (int i = 0; i < 100 && s_stat ("workers") < 1; i++)
        zclock_sleep (50);
    cr_assert_eq (s_ctl (out, sizeof out, "workers", NULL, NULL, NULL), 0);
    cr_expect (strstr (out, "w1"), "%s", out);
    s_publish ("db", 3, 3);
    //  Paused: nothing starts (a bounded look, 1 s)
    for (int i = 0; i < 10; i++) {
        cr_assert_eq (s_stat ("in_flight"), 0, "a paused group leased");
        zclock_sleep (100);
    }
    static s_interval_t runs [16];
    cr_assert_eq (s_intervals (runs, 16), 0);
    cr_assert_eq (s_ctl (out, sizeof out, "resume", "db", NULL, NULL), 0);
    cr_expect (strstr (out, "resumed db"), "%s", out);
    s_wait_idle (60000);
    size_t count = s_intervals (runs, 16);
    cr_assert_eq (count, 3);
    //  Cap 1: one after the other
    for (size_t i = 0; i < count; i++)
        for (size_t j = 0; j < count; j++)
            cr_assert (i == j || runs [j].start >= runs [i].end || runs [j].end <= runs [i].start,
                       "two restarts at once in a group of cap 1");
    cr_assert_eq (s_ctl (out, sizeof out, "inflight", NULL, NULL, NULL), 0);
    cr_expect (strstr (out, "0 open leases"), "%s", out);
    cr_assert_eq (s_ctl (out, sizeof out, "reload", NULL, NULL, NULL), 4);
}

Test (e2e_policy, bad_policy_flags_exit_2, .init = s_setup, .fini = s_teardown, .timeout = 60)
{
    const char *bad [][3] = {
        { "--group", "nocolon", NULL },
        { "--group", "a:*:0", NULL },
        { "--group", "a:*:2", "--policy=/nonexistent/policy.cfg" },
        { "--policy", "/nonexistent/policy.cfg", NULL },
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        char *argv [] = {
            (char *) e2e_program ("MANDRILL_BROKER"), "--durability", "memory",
            (char *) bad [i][0], (char *) bad [i][1], (char *) bad [i][2], NULL
        };
        pid_t pid = e2e_spawn (env.dir, "bad.log", argv);
        int status = e2e_wait_exit (pid, 10000);
        if (status == -1)
            e2e_kill (pid);
        cr_expect (status != -1 && WIFEXITED (status) && WEXITSTATUS (status) == 2,
                   "%s %s: not exit 2", bad [i][0], bad [i][1]);
    }
    cr_expect (e2e_log_has (env.dir, "bad.log", "--group 'nocolon'"));
    cr_expect (e2e_log_has (env.dir, "bad.log", "not both"));
}
