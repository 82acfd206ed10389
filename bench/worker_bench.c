/*  worker_bench: how fast one mandrill-worker goes, and what it costs.

    Starts a real mandrill-broker and ONE mandrill-worker (--credit 10000 by
    default, simulated restarts with U[0,1) s latency, SQLite in a temp
    directory) on free 127.0.0.1 ports, then feeds the broker from this
    process so its ready queue never runs dry, and samples once a second:
    the broker's STATS (acked, in_flight, expired) and the worker's RSS
    from /proc/PID/status. It reports:

      - sustained msgs/s: acks per second after a warm-up,
      - RSS per in-flight message: (loaded RSS - idle RSS) / in flight,
      - lease expiries (the target is none).

    Usage: worker_bench [--seconds N] [--credit N] [--latency DUR]
                        [--broker-bin PATH] [--worker-bin PATH] [--keep]
    The programs default to ../broker/mandrill-broker and
    ../worker/mandrill-worker next to this executable (the build tree).
    Not a timed test: run by hand.
*/
#include <czmq.h>
#include <fcntl.h>
#include <libgen.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_uuid.h"
#include "mmp.h"

static char s_dir [64];

static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    if (fd < 0 || bind (fd, (struct sockaddr *) &addr, sizeof addr) != 0)
        return -1;
    socklen_t len = sizeof addr;
    getsockname (fd, (struct sockaddr *) &addr, &len);
    close (fd);
    return ntohs (addr.sin_port);
}

static pid_t
s_spawn (const char *log_name, char *const argv [])
{
    char log [128];
    snprintf (log, sizeof log, "%s/%s", s_dir, log_name);
    pid_t pid = fork ();
    if (pid == 0) {
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
        }
        execv (argv [0], argv);
        _exit (127);
    }
    return pid;
}

static long
s_rss_kib (pid_t pid)
{
    char path [64], line [256];
    snprintf (path, sizeof path, "/proc/%d/status", (int) pid);
    FILE *file = fopen (path, "r");
    long kib = -1;
    if (!file)
        return -1;
    while (fgets (line, sizeof line, file))
        if (strncmp (line, "VmRSS:", 6) == 0)
            kib = strtol (line + 6, NULL, 10);
    fclose (file);
    return kib;
}

//  STATS counter, or -1.
static int64_t
s_stat (zsock_t *client, cJSON **stats_p, const char *name)
{
    if (!*stats_p) {
        mmp_buf_t body;
        mmp_buf_init (&body);
        int rc = mmp_encode_request_only (&body, NULL, 0) == 0
               ? mmp_send (client, NULL, MMP_STATS, mmp_buf_data (&body), mmp_buf_size (&body)) : -1;
        mmp_buf_free (&body);
        if (rc != 0)
            return -1;
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        while (mmp_recv (client, true, NULL, MMP_FROM_BROKER, &msg, &err) == 0) {
            if (msg.command == MMP_STATS) {
                *stats_p = cJSON_Duplicate (msg.body, true);
                mmp_msg_reset (&msg);
                break;
            }
            mmp_msg_reset (&msg);       //  A late PUBACK
        }
        if (!*stats_p)
            return -1;
    }
    cJSON *item = cJSON_GetObjectItemCaseSensitive (*stats_p, name);
    return cJSON_IsNumber (item) ? (int64_t) item->valuedouble : -1;
}

static int s_instance;

//  Publish one batch of 1000 without waiting for the PUBACK.
static void
s_publish (zsock_t *client, mmp_buf_t *buf)
{
    mmp_buf_t request;
    mmp_buf_init (&request);
    mmp_encode_publish_begin (buf);
    for (int i = 0; i < 1000; i++) {
        char id [37], name [16];
        mdl_uuid4 (id);
        snprintf (name, sizeof name, "cattle-%04x", (unsigned) (s_instance++ & 0xffff));
        mmp_encode_request (&request, id, name, NULL, NULL, 0);
        mmp_encode_publish_add (buf, mmp_buf_data (&request), mmp_buf_size (&request));
    }
    bool failed = mmp_buf_failed (&request);
    mmp_buf_free (&request);
    if (mmp_encode_publish_end (buf, NULL) == 0 && !failed)
        mmp_send (client, NULL, MMP_PUBLISH, mmp_buf_data (buf), mmp_buf_size (buf));
}

int
main (int argc, char *argv [])
{
    int seconds = 20;
    const char *credit = "10000", *latency = "1s";
    char broker_bin [1200], worker_bin [1200], self_dir [1024];
    bool keep = false;
    ssize_t len = readlink ("/proc/self/exe", self_dir, sizeof self_dir - 1);
    self_dir [len > 0 ? len : 0] = 0;
    dirname (self_dir);
    snprintf (broker_bin, sizeof broker_bin, "%s/../broker/mandrill-broker", self_dir);
    snprintf (worker_bin, sizeof worker_bin, "%s/../worker/mandrill-worker", self_dir);
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--seconds") && i + 1 < argc)
            seconds = atoi (argv [++i]);
        else if (streq (argv [i], "--credit") && i + 1 < argc)
            credit = argv [++i];
        else if (streq (argv [i], "--latency") && i + 1 < argc)
            latency = argv [++i];
        else if (streq (argv [i], "--broker-bin") && i + 1 < argc)
            snprintf (broker_bin, sizeof broker_bin, "%s", argv [++i]);
        else if (streq (argv [i], "--worker-bin") && i + 1 < argc)
            snprintf (worker_bin, sizeof worker_bin, "%s", argv [++i]);
        else if (streq (argv [i], "--keep"))
            keep = true;
        else {
            fprintf (stderr, "usage: worker_bench [--seconds N] [--credit N] [--latency DUR] "
                     "[--broker-bin PATH] [--worker-bin PATH] [--keep]\n");
            return 2;
        }
    }
    if (seconds < 5)
        seconds = 5;
    snprintf (s_dir, sizeof s_dir, "/tmp/mandrill_bench_XXXXXX");
    if (!mkdtemp (s_dir))
        return 1;
    zsys_handler_set (NULL);

    char frontend [64], backend [64], events [64], db [128];
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", s_free_port ());
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", s_free_port ());
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", s_free_port ());
    snprintf (db, sizeof db, "sqlite:%s/bench.db", s_dir);
    char *broker_argv [] = { broker_bin, "--frontend", frontend, "--backend", backend,
                             "--events", events, "--ack-deadline", "10s", NULL };
    pid_t broker = s_spawn ("broker.log", broker_argv);
    zclock_sleep (300);
    char *worker_argv [] = { worker_bin, "--broker", backend, "--credit", (char *) credit,
                             "--restart-latency", (char *) latency, "--db", db,
                             "--name", "bench", NULL };
    pid_t worker = s_spawn ("worker.log", worker_argv);

    zsock_t *client = zsock_new (ZMQ_DEALER);
    zsock_set_rcvtimeo (client, 5000);
    zsock_set_sndhwm (client, 0);
    zsock_connect (client, "%s", frontend);
    cJSON *stats = NULL;
    for (int i = 0; i < 50 && s_stat (client, &stats, "workers") < 1; i++) {
        cJSON_Delete (stats);
        stats = NULL;
        zclock_sleep (100);
    }
    cJSON_Delete (stats);
    stats = NULL;
    zclock_sleep (300);
    long idle_rss = s_rss_kib (worker);
    printf ("worker idle RSS %ld KiB; feeding for %d s with credit %s, latency U[0,1) x %s\n",
            idle_rss, seconds, credit, latency);

    mmp_buf_t buf;
    mmp_buf_init (&buf);
    int64_t start = zclock_mono (), warm_acked = -1, warm_at = 0;
    int64_t acked = 0, in_flight = 0, expired = 0, peak_in_flight = 0;
    long peak_rss = 0;
    double rss_per_msg = 0;
    for (int second = 0; second < seconds; second++) {
        //  Keep about 2 s of work queued at the broker
        int64_t ready = s_stat (client, &stats, "ready");
        cJSON_Delete (stats);
        stats = NULL;
        for (int64_t queued = ready; queued >= 0 && queued < 40000; queued += 1000)
            s_publish (client, &buf);
        zclock_sleep ((int) (start + (second + 1) * 1000 - zclock_mono ()));
        acked = s_stat (client, &stats, "acked");
        in_flight = s_stat (client, &stats, "in_flight");
        expired = s_stat (client, &stats, "expired");
        cJSON_Delete (stats);
        stats = NULL;
        long rss = s_rss_kib (worker);
        if (in_flight > peak_in_flight)
            peak_in_flight = in_flight;
        if (rss > peak_rss)
            peak_rss = rss;
        if (in_flight > 0 && rss > idle_rss)
            rss_per_msg = (double) (rss - idle_rss) * 1024.0 / (double) in_flight;
        printf ("t=%2ds acked %8" PRId64 " in flight %6" PRId64 " expired %" PRId64
                " worker RSS %ld KiB (%.0f B per in-flight message)\n",
                second + 1, acked, in_flight, expired, rss, rss_per_msg);
        fflush (stdout);
        if (second == 2) {
            warm_acked = acked;
            warm_at = zclock_mono ();
        }
    }
    double rate = warm_acked >= 0
                ? (double) (acked - warm_acked) * 1000.0 / (double) (zclock_mono () - warm_at) : 0;
    printf ("\nRESULT sustained %.0f msgs/s acked; peak in flight %" PRId64
            "; worker RSS peak %ld KiB, idle %ld KiB, %.0f bytes per in-flight message; "
            "leases expired: %" PRId64 "%s\n",
            rate, peak_in_flight, peak_rss, idle_rss, rss_per_msg, expired,
            expired == 0 ? " (none)" : "");

    kill (worker, SIGTERM);
    int status = -1;
    for (int i = 0; i < 400 && waitpid (worker, &status, WNOHANG) == 0; i++)
        zclock_sleep (50);
    printf ("worker exit: %s %d\n", WIFEXITED (status) ? "status" : "signal/timeout",
            WIFEXITED (status) ? WEXITSTATUS (status) : status);
    kill (worker, SIGKILL);
    kill (broker, SIGTERM);
    waitpid (broker, NULL, 0);
    waitpid (worker, NULL, 0);
    mmp_buf_free (&buf);
    zsock_destroy (&client);
    if (!keep) {
        char command [128];
        snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
        if (system (command) != 0)
            fprintf (stderr, "could not remove %s\n", s_dir);
    }
    else
        printf ("logs and database kept in %s\n", s_dir);
    return 0;
}
