/*  End to end: a worker killed with kill -9 while its restart command
    runs must not cause a second restart by accident. A real broker and
    workers as child processes on 127.0.0.1; restarts through
    tests/scripts/doubt_restart.sh, which records "start" and "end" lines
    with the time and sleeps 3 s in between. Worker A is killed mid-restart
    (only A: its restart runs on as an orphan, as it would on a real host);
    worker B then gets the request in doubt, after the broker's
    --restart-timeout (4 s) from the start.

    With --verify-cmd (doubt_verify.sh looks for the end line) B verifies
    and acks without restarting: one start line. Without it B restarts
    again, but never before the first restart's time limit.
    Every process is killed by PID at the end, the directory removed.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "e2e_support.h"
#include "mmp.h"

#define MESSAGE_ID "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"

static struct {
    char dir [64];              //  Temp directory
    pid_t pids [4];             //  Broker and workers still running
    char backend [64];          //  Broker endpoints
    zsock_t *client;            //  DEALER to the frontend
    char record [256];          //  The restart script's record
} env;

static pid_t
s_spawn (const char *log, char *const argv [])
{
    pid_t pid = e2e_spawn (env.dir, log, argv);
    for (int i = 0; i < 4; i++)
        if (env.pids [i] == 0) {
            env.pids [i] = pid;
            return pid;
        }
    cr_assert_fail ("too many processes");
    return -1;
}

static void
s_kill (pid_t pid)
{
    e2e_kill (pid);
    for (int i = 0; i < 4; i++)
        if (env.pids [i] == pid)
            env.pids [i] = 0;
}

static void
s_setup (void)
{
    memset (&env, 0, sizeof env);
    e2e_dir_new (env.dir, sizeof env.dir, "mandrill_doubt_");
    snprintf (env.record, sizeof env.record, "%s/record.txt", env.dir);
    char frontend [64], events [64], data [128];
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (env.backend, sizeof env.backend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (data, sizeof data, "%s/data", env.dir);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", frontend, "--backend", env.backend,
        "--events", events, "--data-dir", data, "--durability", "sync", "--heartbeat", "200ms",
        "--ack-deadline", "10s", "--restart-timeout", "4s", "--backoff-base", "50ms",
        "--backoff-max", "100ms", NULL
    };
    s_spawn ("broker.log", argv);
    env.client = e2e_dealer (frontend, 5000, 5000);
}

static void
s_teardown (void)
{
    zsock_destroy (&env.client);
    for (int i = 0; i < 4; i++)
        if (env.pids [i])
            s_kill (env.pids [i]);
    //  An orphan restart still sleeping ends on its own (3 s at most)
    if (!getenv ("MANDRILL_KEEP_TMP"))
        e2e_dir_remove (env.dir);
}

static pid_t
s_worker (const char *name, bool verify)
{
    const char *source = getenv ("MANDRILL_SOURCE_DIR");
    source = source ? source : ".";
    char restart [512], check [512], db [256], log [64];
    snprintf (restart, sizeof restart, "sh %s/tests/scripts/doubt_restart.sh %s {message_id} 3",
              source, env.record);
    snprintf (check, sizeof check, "sh %s/tests/scripts/doubt_verify.sh %s {message_id}",
              source, env.record);
    snprintf (db, sizeof db, "sqlite:%s/%s.db", env.dir, name);
    snprintf (log, sizeof log, "%s.log", name);
    char *argv [20] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", env.backend, "--name", (char *) name,
        "--db", db, "--restart", "exec", "--restart-cmd", restart, "--restart-timeout", "4s",
        "--heartbeat", "200ms", "--log-level", "info", NULL
    };
    if (verify) {
        argv [17] = "--verify-cmd";
        argv [18] = check;
        argv [19] = NULL;
    }
    return s_spawn (log, argv);
}

static int64_t
s_stat (const char *name)
{
    mmp_msg_t reply;
    if (e2e_request (env.client, MMP_STATS, "{}", &reply) != 0)
        return -1;
    cJSON *item = reply.body ? cJSON_GetObjectItemCaseSensitive (reply.body, name) : NULL;
    int64_t value = cJSON_IsNumber (item) ? (int64_t) item->valuedouble : -1;
    mmp_msg_reset (&reply);
    return value;
}

static int64_t
s_wait_stat (const char *name, int64_t value, int timeout_ms)
{
    int64_t start = zclock_mono (), last = -1;
    while (zclock_mono () - start < timeout_ms && (last = s_stat (name)) < value)
        zclock_sleep (50);
    return last;
}

//  Lines of the record starting with kind ("start" or "end"); their
//  times (ms) into at, up to 4.
static int
s_lines (const char *kind, int64_t at [4])
{
    FILE *file = fopen (env.record, "r");
    if (!file)
        return 0;
    char line [256], word [16], id [64];
    long long ms;
    int count = 0;
    while (fgets (line, sizeof line, file))
        if (sscanf (line, "%15s %63s %lld", word, id, &ms) == 3 && strcmp (word, kind) == 0) {
            if (at && count < 4)
                at [count] = (int64_t) ms;
            count++;
        }
    fclose (file);
    return count;
}

static int
s_wait_lines (const char *kind, int count, int timeout_ms)
{
    int64_t start = zclock_mono ();
    int last = 0;
    while (zclock_mono () - start < timeout_ms && (last = s_lines (kind, NULL)) < count)
        zclock_sleep (20);
    return last;
}

//  Publish one request, let worker A start its restart, kill A mid-restart.
static void
s_orphan_restart (void)
{
    pid_t a = s_worker ("wa", false);
    cr_assert_eq (s_wait_stat ("workers", 1, 10000), 1, "worker A did not join");
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (env.client, MMP_PUBLISH,
                               "{\"messages\":[{\"message_id\":\"" MESSAGE_ID "\","
                               "\"instance_name\":\"cattle-ab12\"}]}", &reply), 0);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    cr_assert_eq (s_wait_lines ("start", 1, 10000), 1, "worker A never started the restart");
    s_kill (a);                 //  Not its process group: the restart runs on
    cr_assert_eq (s_lines ("end", NULL), 0, "the restart ended before the kill");
}

Test (e2e_doubt, verify_cmd_prevents_a_second_restart, .init = s_setup, .fini = s_teardown,
      .timeout = 60)
{
    s_orphan_restart ();
    s_worker ("wb", true);
    cr_assert_eq (s_wait_stat ("acked", 1, 30000), 1, "the request was not acked");
    cr_assert_eq (s_wait_lines ("end", 1, 5000), 1, "the orphan restart did not finish");
    cr_assert_eq (s_lines ("start", NULL), 1, "the host was restarted twice");
    cr_assert (e2e_log_has (env.dir, "wb.log", "Verifying"), "B did not run its verify command");
    cr_assert (e2e_log_has (env.dir, "wb.log", "Verified"), "B's verify did not confirm");
    cr_assert_eq (s_stat ("dead_letters"), 0);
}

Test (e2e_doubt, without_verify_the_restart_waits_for_its_time_limit, .init = s_setup,
      .fini = s_teardown, .timeout = 60)
{
    s_orphan_restart ();
    s_worker ("wb", false);
    cr_assert_eq (s_wait_stat ("acked", 1, 30000), 1, "the request was not acked");
    int64_t starts [4] = { 0 }, ends [4] = { 0 };
    cr_assert_eq (s_lines ("start", starts), 2, "expected exactly one second restart");
    cr_assert_eq (s_lines ("end", ends), 2);
    //  Never beside the orphan: not before its restart_timeout (4 s) from its start
    cr_assert_geq (starts [1] - starts [0], 3900, "second restart %lld ms after the first",
                   (long long) (starts [1] - starts [0]));
    cr_assert_geq (starts [1], ends [0], "the restarts overlapped");
    cr_assert (e2e_log_has (env.dir, "wb.log", "in doubt"), "B did not log the doubt");
}
