/*  End-to-end tests of the broker's memory bounds: the built
    mandrill-broker under a publisher that floods and an event subscriber
    that never reads; its peak resident memory (VmHWM in /proc/PID/status)
    must stay under a generous bound. mandrill-publish against a full
    broker: it backs off and every request is confirmed in the end. And
    the worker's shutdown NACKs, which use up no attempt: five rolling
    restarts of mandrill-worker dead-letter nothing.
    Processes are killed by PID in the teardown.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e_support.h"
#include "mmp.h"

#define MAX_PROCS 3

//  Under AddressSanitizer freed memory waits in a quarantine (256 MiB by
//  default) before it is reused, which a flood of refused 1 MiB batches
//  fills: the broker started by the flood test gets a small one, so its
//  RSS measures the broker, not the sanitizer.
#if defined (__SANITIZE_ADDRESS__)
#   define S_ASAN 1
#elif defined (__has_feature)
#   if __has_feature (address_sanitizer)
#       define S_ASAN 1
#   endif
#endif

static char s_dir [64];
static pid_t s_pids [MAX_PROCS];
static char s_frontend [64], s_backend [64], s_events [64];

static pid_t
s_spawn (const char *log_name, char *const argv [])
{
    pid_t pid = e2e_spawn (s_dir, log_name, argv);
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] == 0) {
            s_pids [i] = pid;
            return pid;
        }
    cr_assert_fail ("too many processes");
    return -1;
}

static void
s_setup (void)
{
    memset (s_pids, 0, sizeof s_pids);
    e2e_dir_new (s_dir, sizeof s_dir, "mandrill_e2e_bounds_");
    snprintf (s_frontend, sizeof s_frontend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_events, sizeof s_events, "tcp://127.0.0.1:%d", e2e_free_port ());
}

static void
s_teardown (void)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] > 0)
            e2e_kill (s_pids [i]);
    e2e_dir_remove (s_dir);
}

static pid_t
s_start_broker_with (const char *max_pending, const char *max_memory, const char *max_attempts)
{
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", s_frontend, "--backend", s_backend,
        "--events", s_events, "--durability", "memory", "--max-pending", (char *) max_pending,
        "--max-memory", (char *) max_memory, "--max-attempts", (char *) max_attempts,
        "--log-level", "error", NULL
    };
    return s_spawn ("broker.log", argv);
}

static pid_t
s_start_broker (const char *max_pending, const char *max_memory)
{
    return s_start_broker_with (max_pending, max_memory, "5");
}

//  Forget a child reaped elsewhere.
static void
s_forget (pid_t pid)
{
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] == pid)
            s_pids [i] = 0;
}

//  A line "Name:   N kB" of /proc/pid/status, in bytes; -1 if absent.
static int64_t
s_status_bytes (pid_t pid, const char *name)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    int64_t bytes = -1;
    size_t len = strlen (name);
    while (fgets (line, sizeof line, file))
        if (strncmp (line, name, len) == 0 && line [len] == ':') {
            bytes = strtoll (line + len + 1, NULL, 10) * 1024;
            break;
        }
    fclose (file);
    return bytes;
}

//  One STATS counter; fails the test without an answer.
static double
s_stat (const char *name)
{
    zsock_t *client = e2e_dealer (s_frontend, 10000, 5000);
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (client, MMP_STATS, "{}", &reply), 0, "no STATS reply");
    cJSON *item = cJSON_GetObjectItem (reply.body, name);
    cr_assert (cJSON_IsNumber (item), "STATS has no %s", name);
    double value = item->valuedouble;
    mmp_msg_reset (&reply);
    zsock_destroy (&client);
    return value;
}

#define FLOOD_BATCHES   300         //  PUBLISH batches offered
#define FLOOD_BATCH     1000        //  Requests per batch
#define FLOOD_PAD       900         //  Attribute bytes per request: ~1 KiB each, ~1 MiB a batch
#define FLOOD_WINDOW    8           //  Batches awaiting a reply, as a publisher keeps

//  Build batch number b into buf (its ids are unique across batches).
static size_t
s_flood_batch (char *buf, int b)
{
    size_t used = (size_t) sprintf (buf, "{\"req\":\"f%d\",\"messages\":[", b);
    for (int i = 0; i < FLOOD_BATCH; i++) {
        used += (size_t) sprintf (buf + used, "%s{\"message_id\":\"00000000-0000-4000-8000-%06d%06d\","
                                  "\"instance_name\":\"cattle-%d\",\"attributes\":{\"p\":\"",
                                  i ? "," : "", b, i, i);
        memset (buf + used, 'x', FLOOD_PAD);
        used += FLOOD_PAD;
        used += (size_t) sprintf (buf + used, "\"}}");
    }
    used += (size_t) sprintf (buf + used, "]}");
    return used;
}

TestSuite (e2e_bounds, .init = s_setup, .fini = s_teardown, .timeout = 120);

Test (e2e_bounds, flood_with_a_subscriber_that_never_reads_keeps_the_broker_bounded)
{
#ifdef S_ASAN
    const char *asan = getenv ("ASAN_OPTIONS");
    char options [512];
    snprintf (options, sizeof options, "%s%squarantine_size_mb=4", asan ? asan : "", asan ? ":" : "");
    setenv ("ASAN_OPTIONS", options, 1);
#endif
    pid_t broker = s_start_broker ("20000", "64M");
    //  A subscriber to everything that never reads
    zsock_t *subscriber = zsock_new (ZMQ_SUB);
    cr_assert_not_null (subscriber);
    zsock_set_rcvhwm (subscriber, 10);
    zsock_set_subscribe (subscriber, "");
    zsock_set_linger (subscriber, 0);
    cr_assert_eq (zsock_connect (subscriber, "%s", s_events), 0);
    //  The broker builds events only once it has seen the subscription
    zsock_t *flood = e2e_dealer (s_frontend, 10000, 10000);
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (flood, MMP_STATS, "{}", &reply), 0, "broker not up");
    mmp_msg_reset (&reply);
    char *buf = malloc (FLOOD_BATCH * (FLOOD_PAD + 128) + 64);
    cr_assert_not_null (buf);
    int sent = 0, answered = 0, acked = 0, refused = 0;
    while (answered < FLOOD_BATCHES) {
        while (sent < FLOOD_BATCHES && sent - answered < FLOOD_WINDOW) {
            size_t size = s_flood_batch (buf, sent);
            cr_assert_eq (mmp_send (flood, NULL, MMP_PUBLISH, buf, size), 0, "send %d", sent);
            sent++;
        }
        mmp_msg_init (&reply);
        mmp_error_t err;
        cr_assert_eq (mmp_recv (flood, true, NULL, MMP_FROM_BROKER, &reply, &err), 0,
                      "no reply after %d of %d batches", answered, sent);
        answered++;
        if (reply.command == MMP_PUBACK)
            acked++;
        else {
            cr_assert_eq (reply.command, MMP_ERROR);
            cr_assert_str_eq (reply.code, MMP_ERR_UNAVAILABLE);
            cr_assert (strstr (reply.reason, "max_pending") || strstr (reply.reason, "max_memory"),
                       "reason: %s", reply.reason);
            refused++;
        }
        mmp_msg_reset (&reply);
    }
    free (buf);
    double pending = s_stat ("ready") + s_stat ("in_flight") + s_stat ("held") + s_stat ("delayed");
    int64_t peak = s_status_bytes (broker, "VmHWM");
    int64_t rss = s_status_bytes (broker, "VmRSS");
    cr_log_info ("flood: %d batches accepted, %d refused; %.0f pending; broker VmRSS %" PRId64
                 " MiB, peak %" PRId64 " MiB", acked, refused, pending, rss >> 20, peak >> 20);
    cr_assert_gt (refused, 0, "the limits were reached");
    cr_assert_leq (pending, 20000 + FLOOD_BATCH, "at most one batch past max_pending");
    cr_assert_eq (s_stat ("refused_full"), refused);
    //  ~300 MiB of requests offered; about 21 MiB of them kept
    cr_assert_gt (peak, 0, "no VmHWM for %d", (int) broker);
    cr_assert_lt (peak, (int64_t) 200 << 20, "broker peak RSS %" PRId64 " MiB", peak >> 20);
    zsock_destroy (&flood);
    zsock_destroy (&subscriber);
}

Test (e2e_bounds, publisher_backs_off_from_a_full_broker_and_gets_everything_confirmed)
{
    s_start_broker ("200", "1G");
    char db [256];
    snprintf (db, sizeof db, "sqlite:%s/worker.db", s_dir);
    char *worker [] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", s_backend, "--name", "w1",
        "--db", db, "--restart-latency", "1ms", "--credit", "20", NULL
    };
    s_spawn ("worker.log", worker);
    char *publish [] = {
        (char *) e2e_program ("MANDRILL_PUBLISH"), "--broker", s_frontend, "--mock",
        "--count", "2000", "--rate", "100000", "--batch", "100", "--timeout", "5s", NULL
    };
    pid_t publisher = s_spawn ("publish.log", publish);
    int status = e2e_wait_exit (publisher, 100000);
    for (int i = 0; i < MAX_PROCS; i++)
        if (s_pids [i] == publisher && status != -1)
            s_pids [i] = 0;
    cr_assert_neq (status, -1, "mandrill-publish did not finish");
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0,
               "mandrill-publish exit status %d (see %s/publish.log)", status, s_dir);
    cr_assert (e2e_log_has (s_dir, "publish.log", "backing off"), "never backed off");
    cr_assert_gt (s_stat ("refused_full"), 0);
    cr_assert_eq (s_stat ("published"), 2000, "every request queued once");
}

//  Poll STATS until name reaches value or timeout_ms passes; the last value.
static double
s_wait_stat (const char *name, double value, int timeout_ms)
{
    int64_t until = zclock_mono () + timeout_ms;
    double now = s_stat (name);
    while (now < value && zclock_mono () < until) {
        zclock_sleep (20);
        now = s_stat (name);
    }
    return now;
}

Test (e2e_bounds, rolling_worker_restarts_do_not_dead_letter_work_never_started)
{
    s_start_broker_with ("1000", "1G", "3");
    zsock_t *publisher = e2e_dealer (s_frontend, 5000, 5000);
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (publisher, MMP_PUBLISH,
                               "{\"messages\":[{\"instance_name\":\"cattle-roll\"}]}", &reply), 0);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
    zsock_destroy (&publisher);
    char db [256];
    snprintf (db, sizeof db, "sqlite:%s/worker.db", s_dir);
    //  Each worker takes the request, whose restart takes far longer than
    //  its grace; SIGTERM makes it NACK the request back as it stops
    for (int restart = 0; restart < 5; restart++) {
        char name [16], log [32];
        snprintf (name, sizeof name, "w%d", restart);
        snprintf (log, sizeof log, "%s.log", name);
        char *argv [] = {
            (char *) e2e_program ("MANDRILL_WORKER"), "--broker", s_backend, "--name", name,
            "--db", db, "--restart-latency", "23h", "--max-job-time", "24h", "--grace", "100ms", NULL
        };
        pid_t worker = s_spawn (log, argv);
        cr_assert_eq (s_wait_stat ("delivered", restart + 1, 20000), restart + 1,
                      "restart %d: not delivered", restart);
        kill (worker, SIGTERM);
        int status = e2e_wait_exit (worker, 20000);
        cr_assert_neq (status, -1, "worker %d did not stop", restart);
        s_forget (worker);
        cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0, "worker exit %d", status);
    }
    cr_assert_eq (s_wait_stat ("requeued", 5, 10000), 5, "five shutdown NACKs");
    cr_assert_eq (s_stat ("dead_letters"), 0, "max_attempts 3, five restarts: nothing dead");
    cr_assert_eq (s_stat ("ready"), 1, "waiting for the next worker");
}
