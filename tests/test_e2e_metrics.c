/*  End-to-end tests of --metrics: a real mandrill-broker and a real
    mandrill-worker (simulated restarts) as child processes on 127.0.0.1
    ports found free at run time, each serving GET /metrics. Requests are
    published with the MMP codec over a DEALER to the broker's frontend;
    both endpoints are scraped over a plain TCP socket (HTTP/1.0, read to
    the end), their totals checked, and each scrape checked by
    `promtool check metrics` (Debian's prometheus package; a missing
    promtool fails the test and says so).

    Every process is killed by its PID when a test ends, and the temp
    directory removed. Waits poll a scrape with a deadline (counters
    mirrored from the loops lag by up to a second), never fixed sleeps.
*/
#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "e2e_support.h"
#include "mmp.h"

#define MAX_PROCS 4
#define SCRAPE_MAX (1024 * 1024)

//  The state of one test: processes, ports, directory.
typedef struct {
    char dir [64];              //  Temp directory, removed at the end
    pid_t pids [MAX_PROCS];     //  Children still to reap
    int frontend;               //  Broker ports
    int backend;
    int events;
    int broker_metrics;         //  HTTP ports
    int worker_metrics;
    zsock_t *client;            //  DEALER to the frontend
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
s_setup (void)
{
    memset (&env, 0, sizeof env);
    e2e_dir_new (env.dir, sizeof env.dir, "mandrill_e2e_metrics_");
    env.frontend = e2e_free_port ();
    env.backend = e2e_free_port ();
    env.events = e2e_free_port ();
    env.broker_metrics = e2e_free_port ();
    env.worker_metrics = e2e_free_port ();
}

static void
s_teardown (void)
{
    zsock_destroy (&env.client);
    for (int i = 0; i < MAX_PROCS; i++)
        if (env.pids [i] > 0) {
            kill (env.pids [i], SIGKILL);
            s_wait_exit (env.pids [i], 5000);
        }
    e2e_dir_remove (env.dir);
}

//  Start the broker; metrics is the --metrics value or NULL.
static pid_t
s_start_broker (const char *metrics)
{
    char frontend [64], backend [64], events [64], data_dir [256];
    snprintf (data_dir, sizeof data_dir, "%s/broker-data", env.dir);
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", env.frontend);
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", env.events);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", frontend, "--backend", backend,
        "--events", events, "--heartbeat", "200ms", "--data-dir", data_dir,
        metrics ? "--metrics" : NULL, (char *) metrics, NULL
    };
    pid_t pid = s_spawn ("broker.log", argv);
    zsock_destroy (&env.client);
    env.client = e2e_dealer (frontend, 5000, 5000);
    return pid;
}

//  Start a worker with simulated restarts; metrics as for the broker.
static pid_t
s_start_worker (const char *metrics)
{
    char backend [64], db_url [256];
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", env.backend);
    snprintf (db_url, sizeof db_url, "sqlite:%s/worker.db", env.dir);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_WORKER"), "--broker", backend, "--name", "w1",
        "--db", db_url, "--restart-latency", "20ms",
        metrics ? "--metrics" : NULL, (char *) metrics, NULL
    };
    return s_spawn ("worker.log", argv);
}

static void
s_publish (int count)
{
    char *body = malloc ((size_t) count * 128 + 64);
    cr_assert_not_null (body);
    size_t used = (size_t) sprintf (body, "{\"messages\":[");
    for (int i = 0; i < count; i++)
        used += (size_t) sprintf (body + used,
                                  "%s{\"message_id\":\"%08x-0000-4000-8000-%012d\","
                                  "\"instance_name\":\"cattle-%04d\"}",
                                  i ? "," : "", (unsigned) getpid (), i, i);
    sprintf (body + used, "]}");
    mmp_msg_t reply;
    int rc = e2e_request (env.client, MMP_PUBLISH, body, &reply);
    free (body);
    cr_assert_eq (rc, 0, "no valid reply to PUBLISH (rc %d)", rc);
    cr_assert_eq (reply.command, MMP_PUBACK, "got %s", mmp_command_name (reply.command));
    mmp_msg_reset (&reply);
}

//  GET /metrics from 127.0.0.1:port over a plain socket. Returns the body
//  (caller frees) of a 200 answer, or NULL when the port does not answer
//  or the answer is not 200.
static char *
s_scrape (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0, "socket: %s", strerror (errno));
    struct timeval timeout = { 5, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &addr, sizeof addr) != 0) {
        close (fd);
        return NULL;
    }
    const char *request = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (write (fd, request, strlen (request)) != (ssize_t) strlen (request)) {
        close (fd);
        return NULL;
    }
    char *text = malloc (SCRAPE_MAX + 1);
    cr_assert_not_null (text);
    size_t size = 0;
    ssize_t got;
    while (size < SCRAPE_MAX && (got = read (fd, text + size, SCRAPE_MAX - size)) > 0)
        size += (size_t) got;
    close (fd);
    text [size] = 0;
    char *body = strstr (text, "\r\n\r\n");
    if (strncmp (text, "HTTP/1.", 7) != 0 || !strstr (text, " 200 ") || !body) {
        free (text);
        return NULL;
    }
    memmove (text, body + 4, strlen (body + 4) + 1);
    return text;
}

//  The value of series (name with its labels, exactly as rendered) in a
//  scrape, or -1 when the scrape lacks it.
static double
s_value (const char *scrape, const char *series)
{
    size_t length = strlen (series);
    for (const char *line = scrape; line && *line; line = strchr (line, '\n'), line = line ? line + 1 : NULL)
        if (strncmp (line, series, length) == 0 && line [length] == ' ')
            return strtod (line + length + 1, NULL);
    return -1;
}

//  Scrape port until series reaches value or timeout_ms passes. Returns
//  the last scrape (caller frees); fails the test if none answered.
static char *
s_wait_value (int port, const char *series, double value, int timeout_ms)
{
    int64_t start = zclock_mono ();
    char *scrape = NULL;
    while (true) {
        free (scrape);
        scrape = s_scrape (port);
        if (scrape && s_value (scrape, series) >= value)
            break;
        if (zclock_mono () - start > timeout_ms)
            break;
        zclock_sleep (100);
    }
    cr_assert_not_null (scrape, "nothing answered GET /metrics on port %d", port);
    return scrape;
}

//  Run promtool check metrics on scrape; fails the test with its output.
static void
s_promtool (const char *scrape, const char *what)
{
    cr_assert_eq (system ("command -v promtool >/dev/null 2>&1"), 0,
                  "promtool is missing: install Debian's prometheus package "
                  "(apt-get install -y prometheus) to check the %s's metrics", what);
    char path [128], out [128], command [400];
    snprintf (path, sizeof path, "%s/%s.prom", env.dir, what);
    snprintf (out, sizeof out, "%s/%s.promtool", env.dir, what);
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fputs (scrape, file);
    fclose (file);
    snprintf (command, sizeof command, "promtool check metrics < '%s' > '%s' 2>&1", path, out);
    int rc = system (command);
    char report [2048] = "";
    file = fopen (out, "r");
    if (file) {
        size_t n = fread (report, 1, sizeof report - 1, file);
        report [n] = 0;
        fclose (file);
    }
    cr_assert_eq (rc, 0, "promtool check metrics refused the %s's scrape:\n%s", what, report);
}

TestSuite (e2e_metrics, .init = s_setup, .fini = s_teardown);

Test (e2e_metrics, broker_and_worker_count_every_request, .timeout = 90)
{
    enum { N = 40 };
    char broker_address [64], worker_address [64];
    snprintf (broker_address, sizeof broker_address, "127.0.0.1:%d", env.broker_metrics);
    snprintf (worker_address, sizeof worker_address, "127.0.0.1:%d", env.worker_metrics);
    s_start_broker (broker_address);
    s_start_worker (worker_address);
    s_publish (N);

    char *broker = s_wait_value (env.broker_metrics, "mandrill_broker_acked_total", N, 30000);
    char *worker = s_wait_value (env.worker_metrics, "mandrill_worker_saves_total{outcome=\"ok\"}",
                                 N, 10000);
    free (worker);
    //  Restarts are counted with saves, but mirrored by the same collect
    worker = s_wait_value (env.worker_metrics, "mandrill_worker_restarts_total{outcome=\"ok\"}",
                           N, 10000);
    cr_expect_eq (s_value (broker, "mandrill_broker_acked_total"), N);
    cr_expect_eq (s_value (broker, "mandrill_broker_published_total"), N);
    cr_expect_eq (s_value (broker, "mandrill_broker_delivered_total"), N);
    cr_expect_eq (s_value (broker, "mandrill_broker_workers"), 1);
    cr_expect_eq (s_value (broker, "mandrill_build_info{program=\"broker\",version=\""
                           MANDRILL_VERSION "\"}"), 1);
    cr_expect_gt (s_value (broker, "mandrill_broker_journal_fsync_duration_seconds_count"), 0,
                  "no fsync was timed");
    cr_expect_eq (s_value (broker, "mandrill_broker_journal_fsync_duration_seconds_count"),
                  s_value (broker, "mandrill_broker_journal_fsyncs_total"));
    cr_expect_eq (s_value (worker, "mandrill_worker_restarts_total{outcome=\"ok\"}"), N);
    cr_expect_eq (s_value (worker, "mandrill_worker_saves_total{outcome=\"ok\"}"), N);
    cr_expect_eq (s_value (worker, "mandrill_worker_deliveries_total"), N);
    cr_expect_eq (s_value (worker, "mandrill_worker_restart_duration_seconds_count"
                           "{outcome=\"ok\"}"), N);
    cr_expect_eq (s_value (worker, "mandrill_worker_save_duration_seconds_count"
                           "{outcome=\"ok\"}"), N);
    cr_expect_eq (s_value (worker, "mandrill_worker_db_errors_total"), 0);
    cr_expect_geq (s_value (worker, "process_open_fds"), 1);
    s_promtool (broker, "broker");
    s_promtool (worker, "worker");
    cr_expect (e2e_log_has (env.dir, "broker.log", "metrics: serving http://127.0.0.1:"));
    free (broker);
    free (worker);
}

Test (e2e_metrics, without_the_flag_nothing_listens, .timeout = 60)
{
    s_start_broker (NULL);
    s_start_worker (NULL);
    s_publish (1);
    //  Both are up (the publish was acked by a running broker); neither
    //  opened an HTTP port
    int64_t start = zclock_mono ();
    while (!e2e_log_has (env.dir, "worker.log", "Done. Acked") && zclock_mono () - start < 20000)
        zclock_sleep (50);
    cr_assert (e2e_log_has (env.dir, "worker.log", "Done. Acked"), "the worker did not ack");
    cr_expect (!e2e_log_has (env.dir, "broker.log", "metrics:"));
    cr_expect (!e2e_log_has (env.dir, "worker.log", "metrics:"));
    char *scrape = s_scrape (env.broker_metrics);
    cr_expect_null (scrape, "something answered on the broker's would-be metrics port");
    free (scrape);
}

Test (e2e_metrics, bad_address_is_a_usage_error, .timeout = 30)
{
    pid_t broker = s_start_broker ("127.0.0.1:99999");
    int status = s_wait_exit (broker, 10000);
    cr_assert_neq (status, -1, "broker still running with a bad --metrics");
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 2, "broker status %d", status);
    cr_expect (e2e_log_has (env.dir, "broker.log", "invalid --metrics: '127.0.0.1:99999'"));

    pid_t worker = s_start_worker ("metrics.example.net:9101");
    status = s_wait_exit (worker, 10000);
    cr_assert_neq (status, -1, "worker still running with a bad --metrics");
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 2, "worker status %d", status);
    cr_expect (e2e_log_has (env.dir, "worker.log", "invalid --metrics: 'metrics.example.net:9101'"));
}

Test (e2e_metrics, port_in_use_is_a_start_up_failure, .timeout = 30)
{
    //  Hold the port ourselves
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t length = sizeof addr;
    cr_assert_eq (bind (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    cr_assert_eq (listen (fd, 1), 0);
    cr_assert_eq (getsockname (fd, (struct sockaddr *) &addr, &length), 0);
    char address [64];
    snprintf (address, sizeof address, "127.0.0.1:%d", ntohs (addr.sin_port));

    pid_t broker = s_start_broker (address);
    int status = s_wait_exit (broker, 10000);
    pid_t worker = s_start_worker (address);
    int worker_status = s_wait_exit (worker, 10000);
    close (fd);
    cr_assert_neq (status, -1, "broker still running on a port in use");
    cr_expect (WIFEXITED (status) && WEXITSTATUS (status) == 1, "broker status %d", status);
    cr_expect (e2e_log_has (env.dir, "broker.log", "cannot serve metrics on"));
    cr_assert_neq (worker_status, -1, "worker still running on a port in use");
    cr_expect (WIFEXITED (worker_status) && WEXITSTATUS (worker_status) == 1,
               "worker status %d", worker_status);
    cr_expect (e2e_log_has (env.dir, "worker.log", "Address already in use"));
}
