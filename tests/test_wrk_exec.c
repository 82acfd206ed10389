/*  Tests for wrk_exec: restart command templates and real children. */
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_log.h"
#include "wrk_exec.h"

Test (wrk_exec, splits_quotes_and_placeholders, .timeout = 10)
{
    char error [200];
    wrk_exec_t *exec = wrk_exec_new ("  ssh -o 'Opt=a b' \"{hostname}\" reboot --id={message_id}-x {instance_name}",
                                     error, sizeof error);
    cr_assert_not_null (exec, "%s", error);
    char **argv = wrk_exec_expand (exec, "h.example.net", "cattle-1", "uuid");
    cr_assert_not_null (argv);
    const char *expect [] = { "ssh", "-o", "Opt=a b", "h.example.net", "reboot",
                              "--id=uuid-x", "cattle-1", NULL };
    for (int i = 0; expect [i]; i++)
        cr_assert_str_eq (argv [i], expect [i]);
    cr_assert_null (argv [7]);
    wrk_exec_argv_free (&argv);
    cr_assert_null (argv);
    wrk_exec_destroy (&exec);
    wrk_exec_destroy (&exec);
}

Test (wrk_exec, refuses_bad_templates, .timeout = 10)
{
    char error [200];
    cr_assert_null (wrk_exec_new ("", error, sizeof error));
    cr_assert (strstr (error, "empty"));
    cr_assert_null (wrk_exec_new ("echo 'open", error, sizeof error));
    cr_assert (strstr (error, "unbalanced"));
    cr_assert_null (wrk_exec_new ("echo {host}", error, sizeof error));
    cr_assert (strstr (error, "{host}"), "%s", error);
}

typedef struct {
    int calls;
    bool ok [4];
    uint64_t token [4];
    char reason [4][64];
} reaped_t;

static void
s_done (void *arg, const char *message_id, uint64_t token, bool ok, const char *reason)
{
    (void) message_id;
    reaped_t *r = arg;
    cr_assert_lt (r->calls, 4);
    r->ok [r->calls] = ok;
    r->token [r->calls] = token;
    snprintf (r->reason [r->calls], 64, "%s", reason);
    r->calls++;
}

static void
s_reap_until (wrk_exec_t *exec, reaped_t *reaped, size_t running)
{
    for (int i = 0; i < 500 && wrk_exec_running (exec) > running; i++) {
        usleep (10000);
        wrk_exec_reap (exec, s_done, reaped);
    }
}

Test (wrk_exec, exit_status_decides_and_kill_is_silent, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char error [200];
    wrk_exec_t *exec = wrk_exec_new ("sh -c 'exit $0' {instance_name}", error, sizeof error);
    cr_assert_not_null (exec, "%s", error);
    reaped_t reaped = { 0 };
    cr_assert_eq (wrk_exec_start (exec, 1, "h", "0", "m1"), 0);
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (wrk_exec_start (exec, 2, "h", "3", "m2"), 0);
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (reaped.calls, 2);
    cr_assert (reaped.ok [0]);
    cr_assert_not (reaped.ok [1]);
    cr_assert (strstr (reaped.reason [1], "status 3"));
    wrk_exec_destroy (&exec);

    exec = wrk_exec_new ("sleep 30", error, sizeof error);
    cr_assert_eq (wrk_exec_start (exec, 7, "h", "i", "m3"), 0);
    cr_assert_eq (wrk_exec_running (exec), 1);
    wrk_exec_kill (exec, 7);
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (wrk_exec_running (exec), 0);
    cr_assert_eq (reaped.calls, 2, "a killed child is not reported");
    cr_assert_eq (wrk_exec_start (exec, 8, "h", "i", "m4"), 0);
    wrk_exec_kill (exec, 8);
    s_reap_until (exec, &reaped, 0);
    wrk_exec_destroy (&exec);

    exec = wrk_exec_new ("/nonexistent/restart-me", error, sizeof error);
    cr_assert_eq (wrk_exec_start (exec, 9, "h", "i", "m5"), -1);
    wrk_exec_destroy (&exec);
}


//  The kill stand-in: forwards to kill (2) and records, for a group kill,
//  whether the group's leader was still unreaped at that moment (a zombie
//  holds its pid, so the group id cannot have been reused yet).
static int s_group_kills;
static int s_group_kills_after_reap;

static int
s_recording_kill (pid_t pid, int signal)
{
    if (pid < 0) {
        siginfo_t info;
        memset (&info, 0, sizeof info);
        s_group_kills++;
        if (waitid (P_PID, (id_t) -pid, &info, WEXITED | WNOHANG | WNOWAIT) != 0)
            s_group_kills_after_reap++;     //  ECHILD: already reaped
    }
    return kill (pid, signal);
}

//  Issue 8 item 12: the group of an exited child is killed before its
//  leader is reaped, never after (its id could belong to someone else).
Test (wrk_exec, group_is_killed_before_its_leader_is_reaped, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char error [200];
    //  The leader exits at once and leaves a background child in its group
    wrk_exec_t *exec = wrk_exec_new ("sh -c 'sleep 30 & exit 0'", error, sizeof error);
    cr_assert_not_null (exec, "%s", error);
    wrk_exec_set_kill (exec, s_recording_kill);
    s_group_kills = s_group_kills_after_reap = 0;
    reaped_t reaped = { 0 };
    cr_assert_eq (wrk_exec_start (exec, 1, "h", "i", "m1"), 0);
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (reaped.calls, 1);
    cr_assert (reaped.ok [0]);
    cr_assert_eq (s_group_kills, 1);
    cr_assert_eq (s_group_kills_after_reap, 0, "the group was killed after its leader was reaped");

    //  A kill of a running child, then its reap: both while unreaped
    cr_assert_eq (wrk_exec_start (exec, 2, "h", "i", "m2"), 0);
    wrk_exec_kill (exec, 2);
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (reaped.calls, 1, "a killed child is not reported");
    cr_assert_eq (s_group_kills_after_reap, 0);
    cr_assert_geq (s_group_kills, 2);
    wrk_exec_destroy (&exec);
}

//  Issue 8 item 13: a second child for a token already running cannot be
//  tracked: it is stopped and its start fails at once (no job waits for
//  the restart timeout on an unwatched child).
Test (wrk_exec, untrackable_child_is_stopped_and_reported, .timeout = 20)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char error [200];
    wrk_exec_t *exec = wrk_exec_new ("sleep 30", error, sizeof error);
    cr_assert_not_null (exec, "%s", error);
    cr_assert_eq (wrk_exec_start (exec, 5, "h", "i", "m1"), 0);
    cr_assert_eq (wrk_exec_start (exec, 5, "h", "i", "m2"), -1);
    cr_assert_eq (wrk_exec_running (exec), 1);
    wrk_exec_kill (exec, 5);
    reaped_t reaped = { 0 };
    s_reap_until (exec, &reaped, 0);
    cr_assert_eq (wrk_exec_running (exec), 0);
    cr_assert_eq (reaped.calls, 0);
    wrk_exec_destroy (&exec);
}
