/*  Tests for mdl_http, the /metrics endpoint: scraped over real sockets
    on 127.0.0.1 by a plain socket client, while another thread updates
    and registers; checked by promtool; addresses that are bad or taken. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "mdl_http.h"
#include "mdl_log.h"
#include "mdl_metrics.h"
#include "mdl_metrics_process.h"

//  Under valgrind --trace-children=yes (scripts/test.sh) promtool, a Go
//  program, would run under valgrind too and fail on its runtime's
//  tricks: there the promtool test checks the scrape only.
#if defined (__has_include)
#   if __has_include (<valgrind/valgrind.h>)
#       include <valgrind/valgrind.h>
#   endif
#endif
#ifndef RUNNING_ON_VALGRIND
#   define RUNNING_ON_VALGRIND 0
#endif

//  --------------------------------------------------------------------
//  A plain HTTP/1.0 client: one request, read to EOF, 5 s receive timeout

typedef struct {
    int status;                         //  Status code, -1 when no answer
    char head [2048];                   //  Status line and headers
    char *body;                         //  Body, null-terminated, owned
    size_t body_size;                   //  Bytes of body
} reply_t;

static int
s_connect (int port)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct timeval timeout = { 5, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) port) };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0,
                  "connect to 127.0.0.1:%d: %s", port, strerror (errno));
    return fd;
}

static void
s_request (int port, const char *method, const char *path, reply_t *reply)
{
    memset (reply, 0, sizeof *reply);
    reply->status = -1;
    int fd = s_connect (port);
    char request [512];
    int len = snprintf (request, sizeof request,
                        "%s %s HTTP/1.0\r\nHost: 127.0.0.1\r\nUser-Agent: test\r\n\r\n",
                        method, path);
    cr_assert_eq (send (fd, request, (size_t) len, MSG_NOSIGNAL), len);
    size_t size = 0, capacity = 65536;
    char *data = malloc (capacity);
    for (;;) {
        if (capacity - size < 4096)
            data = realloc (data, capacity *= 2);
        ssize_t got = recv (fd, data + size, capacity - size - 1, 0);
        if (got <= 0)
            break;
        size += (size_t) got;
    }
    close (fd);
    data [size] = 0;
    char *end = strstr (data, "\r\n\r\n");
    cr_assert_not_null (end, "no complete HTTP head in %zu bytes: %s", size, data);
    size_t head = (size_t) (end - data);
    cr_assert_lt (head, sizeof reply->head);
    memcpy (reply->head, data, head);
    reply->head [head] = 0;
    reply->body_size = size - head - 4;
    reply->body = malloc (reply->body_size + 1);
    memcpy (reply->body, end + 4, reply->body_size);
    reply->body [reply->body_size] = 0;
    cr_assert_eq (sscanf (data, "HTTP/1.%*d %d", &reply->status), 1, "status line: %s", data);
    free (data);
}

static void
s_reply_free (reply_t *reply)
{
    free (reply->body);
    reply->body = NULL;
}

static mdl_http_t *
s_server (mdl_metrics_t *metrics)
{
    mdl_http_t *http = mdl_http_new ("127.0.0.1:0", metrics);
    cr_assert_not_null (http, "mdl_http_new: %s", strerror (errno));
    cr_assert_gt (mdl_http_port (http), 0);
    return http;
}

static void
s_quiet (void)
{
    mdl_log_set_level (MDL_LOG_ERROR);
}
//  The value on the line that starts with prefix + ' ', or -1 if none
static double
s_sample (const char *text, const char *prefix)
{
    size_t len = strlen (prefix);
    const char *line = text;
    while (line && *line) {
        if (strncmp (line, prefix, len) == 0 && line [len] == ' ')
            return strtod (line + len + 1, NULL);
        line = strchr (line, '\n');
        if (line)
            line++;
    }
    return -1;
}


//  --------------------------------------------------------------------
//  Over HTTP

Test (mdl_http, scrape_returns_the_render, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_counter_t *acked = mdl_metrics_counter (metrics, "mandrill_acked_total", "Acks.", NULL);
    mdl_counter_add (acked, 42);
    mdl_http_t *http = s_server (metrics);
    int port = mdl_http_port (http);

    reply_t reply;
    s_request (port, "GET", "/metrics", &reply);
    cr_assert_eq (reply.status, 200, "%s", reply.head);
    cr_assert_not_null (strcasestr (reply.head,
                        "\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8"), "%s", reply.head);
    cr_assert_str_eq (reply.body,
        "# HELP mandrill_acked_total Acks.\n"
        "# TYPE mandrill_acked_total counter\n"
        "mandrill_acked_total 42\n");
    s_reply_free (&reply);

    //  Series registered while serving appear in the next scrape
    mdl_gauge_t *workers = mdl_metrics_gauge (metrics, "mandrill_workers", "Workers.", NULL);
    mdl_gauge_set (workers, 3);
    mdl_counter_inc (acked);
    s_request (port, "GET", "/metrics?name=x", &reply);
    cr_assert_eq (reply.status, 200);
    cr_assert_eq (s_sample (reply.body, "mandrill_acked_total"), 43);
    cr_assert_eq (s_sample (reply.body, "mandrill_workers"), 3);
    s_reply_free (&reply);

    //  HEAD: same head, no body
    s_request (port, "HEAD", "/metrics", &reply);
    cr_assert_eq (reply.status, 200);
    cr_assert_eq (reply.body_size, 0);
    s_reply_free (&reply);

    mdl_http_destroy (&http);
    mdl_http_destroy (&http);
    cr_assert_null (http);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_http, other_paths_404_other_methods_405, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_http_t *http = s_server (metrics);
    int port = mdl_http_port (http);
    reply_t reply;
    const char *paths [] = { "/", "/metrics/", "/metricsx", "/favicon.ico", "/../metrics" };
    for (size_t i = 0; i < sizeof paths / sizeof paths [0]; i++) {
        s_request (port, "GET", paths [i], &reply);
        cr_assert_eq (reply.status, 404, "GET %s: %s", paths [i], reply.head);
        s_reply_free (&reply);
    }
    const char *methods [] = { "POST", "PUT", "DELETE", "OPTIONS", "PATCH" };
    for (size_t i = 0; i < sizeof methods / sizeof methods [0]; i++) {
        s_request (port, methods [i], "/metrics", &reply);
        cr_assert_eq (reply.status, 405, "%s /metrics: %s", methods [i], reply.head);
        cr_assert_not_null (strcasestr (reply.head, "\r\nAllow: GET, HEAD"), "%s", reply.head);
        s_reply_free (&reply);
    }
    //  A request that is not HTTP gets an error, and the server carries on
    int fd = s_connect (port);
    const char junk [] = "\x01\x02 garbage\r\n\r\n";
    cr_assert_eq (send (fd, junk, sizeof junk - 1, MSG_NOSIGNAL), (ssize_t) sizeof junk - 1);
    char buffer [512];
    ssize_t got = recv (fd, buffer, sizeof buffer - 1, 0);
    close (fd);
    cr_assert_geq (got, 0, "no answer to junk: %s", strerror (errno));
    s_request (port, "GET", "/metrics", &reply);
    cr_assert_eq (reply.status, 200);
    s_reply_free (&reply);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_http, idle_client_does_not_block_scrapes, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_metrics_counter (metrics, "mandrill_x_total", "X.", NULL);
    mdl_http_t *http = s_server (metrics);
    int port = mdl_http_port (http);
    //  One client that connects and sends half a request, then waits
    int idle = s_connect (port);
    cr_assert_eq (send (idle, "GET /metr", 9, MSG_NOSIGNAL), 9);
    reply_t reply;
    for (int i = 0; i < 3; i++) {
        s_request (port, "GET", "/metrics", &reply);
        cr_assert_eq (reply.status, 200);
        s_reply_free (&reply);
    }
    close (idle);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}


//  --------------------------------------------------------------------
//  Updates from another thread while scraping

typedef struct {
    mdl_metrics_t *metrics;             //  Registry
    mdl_counter_t *counter;             //  Incremented in a loop
    mdl_histogram_t *histogram;         //  Observed in a loop
    mdl_gauge_t *gauge;                 //  Set to the loop count
    atomic_bool stop;                   //  Main asks the thread to end
    uint64_t done;                      //  Iterations made
} writer_t;

static void *
s_writer (void *arg)
{
    writer_t *w = arg;
    uint64_t i = 0;
    while (!atomic_load (&w->stop)) {
        mdl_counter_inc (w->counter);
        mdl_histogram_observe (w->histogram, (double) (i % 7) * 0.25);
        mdl_gauge_set (w->gauge, (double) i);
        //  New series now and then, as groups appear
        if (i % 50000 == 0) {
            char group [32];
            snprintf (group, sizeof group, "g%" PRIu64, i / 50000);
            mdl_counter_t *c = mdl_metrics_counter (w->metrics, "mandrill_group_restarts_total",
                                                    "Per group.", "group", group, NULL);
            if (c)
                mdl_counter_inc (c);
        }
        i++;
        //  Let the server thread run too: under valgrind (one thread at a
        //  time) a writer that never yields starves it past its timeouts
        if (i % 1024 == 0)
            sched_yield ();
    }
    w->done = i;
    return NULL;
}

Test (mdl_http, concurrent_updates_only_grow, .init = s_quiet, .timeout = 60)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    double bounds [] = { 0.25, 0.5, 1 };
    writer_t w = { .metrics = metrics };
    w.counter = mdl_metrics_counter (metrics, "mandrill_delivered_total", "Delivered.", NULL);
    w.histogram = mdl_metrics_histogram (metrics, "mandrill_lat_seconds", "Lat.", bounds, 3, NULL);
    w.gauge = mdl_metrics_gauge (metrics, "mandrill_iter", "Iter.", NULL);
    atomic_init (&w.stop, false);
    mdl_http_t *http = s_server (metrics);
    int port = mdl_http_port (http);
    pthread_t thread;
    cr_assert_eq (pthread_create (&thread, NULL, s_writer, &w), 0);

    double last_counter = 0, last_count = 0;
    double last_buckets [4] = { 0 };
    const char *names [4] = {
        "mandrill_lat_seconds_bucket{le=\"0.25\"}", "mandrill_lat_seconds_bucket{le=\"0.5\"}",
        "mandrill_lat_seconds_bucket{le=\"1\"}", "mandrill_lat_seconds_bucket{le=\"+Inf\"}"
    };
    for (int scrape = 0; scrape < 40; scrape++) {
        reply_t reply;
        s_request (port, "GET", "/metrics", &reply);
        cr_assert_eq (reply.status, 200);
        double counter = s_sample (reply.body, "mandrill_delivered_total");
        double count = s_sample (reply.body, "mandrill_lat_seconds_count");
        cr_assert_geq (counter, last_counter, "counter went down: %g < %g", counter, last_counter);
        cr_assert_geq (count, last_count);
        double previous = 0;
        for (int b = 0; b < 4; b++) {
            double v = s_sample (reply.body, names [b]);
            cr_assert_geq (v, previous, "buckets not cumulative at %s", names [b]);
            cr_assert_geq (v, last_buckets [b], "bucket %s went down", names [b]);
            last_buckets [b] = previous = v;
        }
        cr_assert_eq (last_buckets [3], count, "+Inf %g != _count %g", last_buckets [3], count);
        last_counter = counter;
        last_count = count;
        s_reply_free (&reply);
    }
    atomic_store (&w.stop, true);
    pthread_join (thread, NULL);
    cr_assert_gt (w.done, 0);
    cr_assert_eq (mdl_counter_value (w.counter), w.done);
    cr_assert_eq (mdl_histogram_count (w.histogram), w.done);
    reply_t reply;
    s_request (port, "GET", "/metrics", &reply);
    cr_assert_eq (s_sample (reply.body, "mandrill_delivered_total"), (double) w.done);
    cr_assert_eq (s_sample (reply.body, "mandrill_iter"), (double) (w.done - 1));
    cr_assert_eq (s_sample (reply.body, "mandrill_group_restarts_total{group=\"g0\"}"), 1);
    s_reply_free (&reply);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}


//  --------------------------------------------------------------------
//  promtool, from Debian's prometheus package

static const char *
s_find_promtool (void)
{
    static char path [4096];
    const char *env = getenv ("PATH");
    char dirs [4096];
    snprintf (dirs, sizeof dirs, "%s:/usr/bin:/usr/local/bin", env ? env : "");
    for (char *save = NULL, *dir = strtok_r (dirs, ":", &save); dir;
         dir = strtok_r (NULL, ":", &save)) {
        snprintf (path, sizeof path, "%s/promtool", dir);
        if (access (path, X_OK) == 0)
            return path;
    }
    return NULL;
}

//  Run promtool check metrics on text; returns its exit status and its
//  output in out. The child is killed by its PID if it runs past 30 s.
static int
s_promtool (const char *promtool, const char *text, char *out, size_t out_size)
{
    char input [] = "/tmp/mdl_metrics_scrape_XXXXXX";
    char output [] = "/tmp/mdl_metrics_promtool_XXXXXX";
    int in_fd = mkstemp (input);
    int out_fd = mkstemp (output);
    cr_assert (in_fd >= 0 && out_fd >= 0);
    size_t len = strlen (text);
    cr_assert_eq (write (in_fd, text, len), (ssize_t) len);
    lseek (in_fd, 0, SEEK_SET);
    pid_t pid = fork ();
    cr_assert_geq (pid, 0);
    if (pid == 0) {
        dup2 (in_fd, 0);
        dup2 (out_fd, 1);
        dup2 (out_fd, 2);
        execl (promtool, "promtool", "check", "metrics", (char *) NULL);
        _exit (127);
    }
    int status = 0;
    pid_t done = 0;
    for (int waited = 0; waited < 3000 && done == 0; waited++) {
        done = waitpid (pid, &status, WNOHANG);
        if (done == 0)
            poll (NULL, 0, 10);
    }
    if (done == 0) {
        kill (pid, SIGKILL);
        waitpid (pid, &status, 0);
        cr_assert_fail ("promtool ran past 30 s; killed pid %d", (int) pid);
    }
    ssize_t got = pread (out_fd, out, out_size - 1, 0);
    out [got > 0 ? got : 0] = 0;
    close (in_fd);
    close (out_fd);
    unlink (input);
    unlink (output);
    return WIFEXITED (status) ? WEXITSTATUS (status) : -1;
}

Test (mdl_http, promtool_accepts_a_scrape, .init = s_quiet, .timeout = 60)
{
    const char *promtool = s_find_promtool ();
    if (!promtool)
        cr_assert_fail ("promtool not found on PATH: install Debian's 'prometheus' package "
                 "(scripts/deps.sh and .ci/run do)");
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_counter_add (mdl_metrics_counter (metrics, "mandrill_published_total",
                                          "Restart requests accepted.", NULL), 5);
    mdl_counter_add (mdl_metrics_counter (metrics, "mandrill_restarts_total", "Restarts by outcome.",
                                          "outcome", "ok", NULL), 3);
    mdl_counter_add (mdl_metrics_counter (metrics, "mandrill_restarts_total", "Restarts by outcome.",
                                          "outcome", "failed", NULL), 1);
    mdl_gauge_set (mdl_metrics_gauge (metrics, "mandrill_oldest_unacked_age_seconds",
                                      "Age of the oldest lease.", NULL), 1.25);
    mdl_gauge_set (mdl_metrics_gauge (metrics, "mandrill_group_paused", "Paused groups.\nWith \\.",
                                      "group", "we\"ird\\na\nme", NULL), 1);
    cr_assert_eq (mdl_metrics_add_process (metrics), 0);
    mdl_histogram_t *h = mdl_metrics_histogram (metrics, "mandrill_journal_fsync_duration_seconds",
                                                "Journal fsync latency.", NULL, 0, NULL);
    for (int i = 0; i < 100; i++)
        mdl_histogram_observe (h, i * 0.001);
    mdl_http_t *http = s_server (metrics);
    reply_t reply;
    s_request (mdl_http_port (http), "GET", "/metrics", &reply);
    cr_assert_eq (reply.status, 200);
    cr_assert_not_null (strstr (reply.body, "\nmandrill_published_total 5\n"), "%s", reply.body);
    if (RUNNING_ON_VALGRIND) {
        cr_log_info ("under valgrind: promtool not run (the other builds run it)");
        s_reply_free (&reply);
        mdl_http_destroy (&http);
        mdl_metrics_destroy (&metrics);
        return;
    }
    char out [8192];
    int rc = s_promtool (promtool, reply.body, out, sizeof out);
    cr_assert_eq (rc, 0, "promtool check metrics exited %d:\n%s\non:\n%s", rc, out, reply.body);

    //  The check is real: promtool refuses a broken exposition
    rc = s_promtool (promtool, "# TYPE x counter\nx{a=\"b} 1\n", out, sizeof out);
    cr_assert_neq (rc, 0, "promtool accepted a broken label");
    s_reply_free (&reply);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}


//  --------------------------------------------------------------------
//  Addresses

Test (mdl_http, bad_addresses_are_clear_errors, .init = s_quiet, .timeout = 30)
{
    struct { const char *text; const char *says; } bad [] = {
        { "",                   "empty" },
        { "127.0.0.1",          "missing :PORT" },
        { ":9100",              "missing host" },
        { "127.0.0.1:",         "port" },
        { "127.0.0.1:65536",    "port" },
        { "127.0.0.1:123456",   "port" },
        { "127.0.0.1:-1",       "port" },
        { "127.0.0.1:80x",      "port" },
        { "127.0.0.1: 80",      "port" },
        { "::1:9100",           "brackets" },
        { "[::1]9100",          "[ADDRESS]:PORT" },
        { "[::1:9100",          "[ADDRESS]:PORT" },
        { "[]:9100",            "empty" },
        { "[127.0.0.1]:9100",   "not an IPv6" },
        { "[::g]:9100",         "not an IPv6" },
        { "300.1.1.1:9100",     "not an IPv4" },
        { "1.2.3:9100",         "not an IPv4" },
        { "broker:9100",        "not an IPv4" },
    };
    mdl_metrics_t *metrics = mdl_metrics_new ();
    for (size_t i = 0; i < sizeof bad / sizeof bad [0]; i++) {
        mdl_http_address_t address;
        char error [300] = "";
        cr_assert_eq (mdl_http_parse_address (bad [i].text, &address, error, sizeof error), -1,
                      "'%s' parsed", bad [i].text);
        cr_assert_not_null (strstr (error, bad [i].says), "'%s': error '%s' lacks '%s'",
                            bad [i].text, error, bad [i].says);
        errno = 0;
        cr_assert_null (mdl_http_new (bad [i].text, metrics), "'%s' served", bad [i].text);
        cr_assert_eq (errno, EINVAL, "'%s': errno %d", bad [i].text, errno);
    }
    mdl_http_address_t address;
    char error [300];
    cr_assert_eq (mdl_http_parse_address (NULL, &address, error, sizeof error), -1);
    const char *good [] = { "127.0.0.1:0", "localhost:9100", "*:65535", "0.0.0.0:1", "[::1]:0" };
    for (size_t i = 0; i < sizeof good / sizeof good [0]; i++)
        cr_assert_eq (mdl_http_parse_address (good [i], &address, error, sizeof error), 0,
                      "'%s': %s", good [i], error);
    cr_assert_eq (address.addr.ss_family, AF_INET6);

    //  An address that is not this machine's cannot be bound
    errno = 0;
    cr_assert_null (mdl_http_new ("192.0.2.1:0", metrics));
    cr_assert_eq (errno, EADDRNOTAVAIL, "errno %d", errno);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_http, port_in_use_fails_with_eaddrinuse, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_http_t *first = s_server (metrics);
    char address [64];
    snprintf (address, sizeof address, "127.0.0.1:%d", mdl_http_port (first));
    errno = 0;
    cr_assert_null (mdl_http_new (address, metrics));
    cr_assert_eq (errno, EADDRINUSE, "errno %d", errno);

    //  Also when somebody else's plain socket holds the port
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    cr_assert_eq (bind (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    cr_assert_eq (listen (fd, 1), 0);
    socklen_t len = sizeof addr;
    getsockname (fd, (struct sockaddr *) &addr, &len);
    snprintf (address, sizeof address, "127.0.0.1:%d", ntohs (addr.sin_port));
    errno = 0;
    cr_assert_null (mdl_http_new (address, metrics));
    cr_assert_eq (errno, EADDRINUSE, "errno %d", errno);
    close (fd);

    //  Once freed, the port is ours again (the first server still serves)
    mdl_http_t *second = mdl_http_new (address, metrics);
    cr_assert_not_null (second, "%s: %s", address, strerror (errno));
    reply_t reply;
    s_request (mdl_http_port (first), "GET", "/metrics", &reply);
    cr_assert_eq (reply.status, 200);
    s_reply_free (&reply);
    mdl_http_destroy (&second);
    mdl_http_destroy (&first);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_http, serves_ipv6_loopback_when_there, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_counter_inc (mdl_metrics_counter (metrics, "mandrill_x_total", "X.", NULL));
    int probe = socket (AF_INET6, SOCK_STREAM, 0);
    struct sockaddr_in6 addr = { .sin6_family = AF_INET6, .sin6_addr = IN6ADDR_LOOPBACK_INIT };
    bool have_ipv6 = probe >= 0 && bind (probe, (struct sockaddr *) &addr, sizeof addr) == 0;
    if (probe >= 0)
        close (probe);
    if (!have_ipv6) {
        cr_log_warn ("no IPv6 loopback here; only the refusal is checked");
        cr_assert_null (mdl_http_new ("[::1]:0", metrics));
        mdl_metrics_destroy (&metrics);
        return;
    }
    mdl_http_t *http = mdl_http_new ("[::1]:0", metrics);
    cr_assert_not_null (http, "[::1]:0: %s", strerror (errno));
    int fd = socket (AF_INET6, SOCK_STREAM, 0);
    struct timeval timeout = { 5, 0 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    addr.sin6_port = htons ((uint16_t) mdl_http_port (http));
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0);
    const char request [] = "GET /metrics HTTP/1.0\r\n\r\n";
    cr_assert_eq (send (fd, request, sizeof request - 1, MSG_NOSIGNAL), (ssize_t) sizeof request - 1);
    char buffer [4096];
    size_t size = 0;
    ssize_t got;
    while ((got = recv (fd, buffer + size, sizeof buffer - 1 - size, 0)) > 0)
        size += (size_t) got;
    buffer [size] = 0;
    close (fd);
    cr_assert_not_null (strstr (buffer, "200"), "%s", buffer);
    cr_assert_not_null (strstr (buffer, "\nmandrill_x_total 1\n"), "%s", buffer);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}

//  The blocked-signal mask of thread tid, from /proc
static unsigned long long
s_sigblk (const char *tid)
{
    char path [300], line [256];
    snprintf (path, sizeof path, "/proc/self/task/%s/status", tid);
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file, "%s: %s", path, strerror (errno));
    unsigned long long mask = 0;
    bool found = false;
    while (fgets (line, sizeof line, file))
        if (sscanf (line, "SigBlk: %llx", &mask) == 1) {
            found = true;
            break;
        }
    fclose (file);
    cr_assert (found, "no SigBlk in %s", path);
    return mask;
}

Test (mdl_http, server_thread_blocks_signals, .init = s_quiet, .timeout = 30)
{
    char before [4096] = "";
    DIR *dir = opendir ("/proc/self/task");
    cr_assert_not_null (dir);
    struct dirent *entry;
    while ((entry = readdir (dir)))
        if (entry->d_name [0] != '.') {
            strcat (before, " ");
            strcat (before, entry->d_name);
            strcat (before, " ");
        }
    closedir (dir);
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_http_t *http = s_server (metrics);
    unsigned long long wanted = (1ULL << (SIGTERM - 1)) | (1ULL << (SIGINT - 1))
                              | (1ULL << (SIGHUP - 1)) | (1ULL << (SIGQUIT - 1))
                              | (1ULL << (SIGPIPE - 1));
    int fresh = 0;
    dir = opendir ("/proc/self/task");
    while ((entry = readdir (dir))) {
        if (entry->d_name [0] == '.')
            continue;
        char key [300];
        snprintf (key, sizeof key, " %s ", entry->d_name);
        unsigned long long mask = s_sigblk (entry->d_name);
        if (strstr (before, key)) {
            //  The caller's mask is as it was
            if (atoi (entry->d_name) == getpid ())
                cr_assert_eq (mask & (1ULL << (SIGTERM - 1)), 0, "main thread mask %llx", mask);
            continue;
        }
        fresh++;
        cr_assert_eq (mask & wanted, wanted, "server thread %s mask %llx", entry->d_name, mask);
    }
    closedir (dir);
    cr_assert_geq (fresh, 1, "no server thread found");
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}

//  Every metric that common/METRICS.md proposes, registered with its type
//  and labels as the table gives them, is accepted by the registry and by
//  promtool's lint: the catalogue cannot drift into names that fail.
Test (mdl_http, catalogue_in_metrics_md_is_valid, .init = s_quiet, .timeout = 60)
{
    char path [4096];
    snprintf (path, sizeof path, "%s", __FILE__);
    char *slash = strrchr (path, '/');
    cr_assert_not_null (slash, "__FILE__ %s has no directory", __FILE__);
    strcpy (slash, "/../common/METRICS.md");
    FILE *file = fopen (path, "r");
    cr_assert_not_null (file, "%s: %s", path, strerror (errno));
    mdl_metrics_t *metrics = mdl_metrics_new ();
    char line [1024];
    int rows = 0;
    while (fgets (line, sizeof line, file)) {
        if (strncmp (line, "| `mandrill_", 12) != 0)
            continue;
        //  | `name` | type ... | `label` = `value`, ... | source |
        char name [128], type [32];
        cr_assert_eq (sscanf (line, "| `%127[^`]` | %31[a-z]", name, type), 2, "row: %s", line);
        char *labels = strchr (strchr (line + 1, '|') + 1, '|') + 1;
        char *end = strchr (labels, '|');
        cr_assert_not_null (end, "row: %s", line);
        *end = 0;
        //  Either `label` = `value`, `value2` ... (the first value is
        //  used) or `label1`, `label2` (label names, a made-up value)
        const char *names [2] = { NULL, NULL };
        char label [2][64] = { "", "" }, value [64] = "x";
        char *tick = strchr (labels, '`');
        if (tick && sscanf (tick, "`%63[^`]` = `%63[^`]`", label [0], value) == 2)
            names [0] = label [0];
        else
        if (tick) {
            int got = sscanf (tick, "`%63[^`]`, `%63[^`]`", label [0], label [1]);
            cr_assert_geq (got, 1, "labels: %s", labels);
            names [0] = label [0];
            names [1] = got == 2 ? label [1] : NULL;
        }
        const char *help = "From METRICS.md.";
        void *series;
        if (strcmp (type, "counter") == 0)
            series = names [1] ? (void *) mdl_metrics_counter (metrics, name, help, names [0], value,
                                                               names [1], value, NULL)
                   : names [0] ? (void *) mdl_metrics_counter (metrics, name, help, names [0], value, NULL)
                   : (void *) mdl_metrics_counter (metrics, name, help, NULL);
        else
        if (strcmp (type, "gauge") == 0)
            series = names [1] ? (void *) mdl_metrics_gauge (metrics, name, help, names [0], value,
                                                             names [1], value, NULL)
                   : names [0] ? (void *) mdl_metrics_gauge (metrics, name, help, names [0], value, NULL)
                   : (void *) mdl_metrics_gauge (metrics, name, help, NULL);
        else {
            cr_assert_str_eq (type, "histogram", "row: %s", line);
            cr_assert_null (names [1], "row: %s", line);
            series = names [0] ? (void *) mdl_metrics_histogram (metrics, name, help, NULL, 0,
                                                                 names [0], value, NULL)
                   : (void *) mdl_metrics_histogram (metrics, name, help, NULL, 0, NULL);
        }
        cr_assert_not_null (series, "%s refused: %s", name, line);
        rows++;
    }
    fclose (file);
    cr_assert_geq (rows, 30, "only %d metric rows in %s", rows, path);
    const char *promtool = s_find_promtool ();
    cr_assert_not_null (promtool, "promtool not found on PATH: install Debian's 'prometheus' package");
    if (!RUNNING_ON_VALGRIND) {
        char *text = mdl_metrics_render (metrics, NULL);
        char out [8192];
        int rc = s_promtool (promtool, text, out, sizeof out);
        cr_assert_eq (rc, 0, "promtool check metrics exited %d:\n%s", rc, out);
        free (text);
    }
    mdl_metrics_destroy (&metrics);
}

//  Prometheus keeps its connection open between scrapes (HTTP/1.1)
Test (mdl_http, keep_alive_serves_scrapes_on_one_connection, .init = s_quiet, .timeout = 30)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_counter_t *c = mdl_metrics_counter (metrics, "mandrill_x_total", "X.", NULL);
    mdl_http_t *http = s_server (metrics);
    int fd = s_connect (mdl_http_port (http));
    const char request [] = "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n";
    for (uint64_t round = 1; round <= 3; round++) {
        mdl_counter_inc (c);
        cr_assert_eq (send (fd, request, sizeof request - 1, MSG_NOSIGNAL), (ssize_t) sizeof request - 1);
        //  Read the head, then exactly Content-Length bytes
        char data [8192];
        size_t size = 0;
        char *end = NULL;
        while (!end) {
            ssize_t got = recv (fd, data + size, sizeof data - 1 - size, 0);
            cr_assert_gt (got, 0, "round %" PRIu64 ": connection closed or timed out", round);
            size += (size_t) got;
            data [size] = 0;
            end = strstr (data, "\r\n\r\n");
        }
        cr_assert_not_null (strstr (data, "HTTP/1.1 200"), "%s", data);
        cr_assert_null (strcasestr (data, "\r\nConnection: close"), "round %" PRIu64 ": %s", round, data);
        char *length = strcasestr (data, "\r\nContent-Length:");
        cr_assert_not_null (length, "%s", data);
        size_t body = strtoul (length + 17, NULL, 10);
        size_t have = size - (size_t) (end + 4 - data);
        while (have < body) {
            ssize_t got = recv (fd, data + size, sizeof data - 1 - size, 0);
            cr_assert_gt (got, 0);
            size += (size_t) got;
            have += (size_t) got;
        }
        data [size] = 0;
        cr_assert_eq (have, body, "more bytes than Content-Length");
        cr_assert_eq (s_sample (end + 4, "mandrill_x_total"), (double) round);
    }
    close (fd);
    mdl_http_destroy (&http);
    mdl_metrics_destroy (&metrics);
}
