/*  Tests for mdl_metrics (registry, exposition text, collectors) and
    mdl_http (the /metrics endpoint), scraped over real sockets on
    127.0.0.1 by a plain socket client, and checked by promtool. */
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
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
//  The exposition text, exactly

Test (mdl_metrics, renders_exact_text, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    cr_assert_not_null (metrics);
    mdl_counter_t *published = mdl_metrics_counter (metrics, "mandrill_published_total",
                                                    "Restart requests accepted.", NULL);
    mdl_counter_t *ok = mdl_metrics_counter (metrics, "mandrill_restarts_total",
                                             "Restarts finished, by outcome.", "outcome", "ok", NULL);
    mdl_counter_t *failed = mdl_metrics_counter (metrics, "mandrill_restarts_total",
                                                 "Restarts finished, by outcome.", "outcome", "failed", NULL);
    mdl_gauge_t *ready = mdl_metrics_gauge (metrics, "mandrill_ready", "Ready messages.", NULL);
    mdl_gauge_t *ratio = mdl_metrics_gauge (metrics, "mandrill_odd", "Odd values.", "kind", "tenth", NULL);
    mdl_gauge_t *neg = mdl_metrics_gauge (metrics, "mandrill_odd", "Odd values.", "kind", "negative", NULL);
    mdl_gauge_t *nan = mdl_metrics_gauge (metrics, "mandrill_odd", "Odd values.", "kind", "nan", NULL);
    mdl_gauge_t *inf = mdl_metrics_gauge (metrics, "mandrill_odd", "Odd values.", "kind", "inf", NULL);
    double bounds [] = { 0.25, 0.5, 1 };
    mdl_histogram_t *duration = mdl_metrics_histogram (
        metrics, "mandrill_restart_duration_seconds", "Restart durations.", bounds, 3,
        "outcome", "ok", NULL);
    mdl_histogram_t *plain = mdl_metrics_histogram (
        metrics, "mandrill_save_duration_seconds", "Save durations.", bounds, 3, NULL);
    cr_assert (published && ok && failed && ready && ratio && neg && nan && inf && duration && plain);

    mdl_counter_add (published, 3);
    mdl_counter_inc (ok);
    mdl_counter_inc (ok);
    mdl_counter_inc (failed);
    mdl_gauge_set (ready, 7);
    mdl_gauge_set (ratio, 0.1);
    mdl_gauge_set (neg, 2);
    mdl_gauge_add (neg, -3.5);
    mdl_gauge_set (nan, NAN);
    mdl_gauge_set (inf, INFINITY);
    double values [] = { 0.125, 0.25, 0.375, 0.5, 0.75, 2 };
    for (size_t i = 0; i < 6; i++)
        mdl_histogram_observe (duration, values [i]);
    mdl_histogram_observe_ms (plain, 1500);

    const char *expected =
        "# HELP mandrill_published_total Restart requests accepted.\n"
        "# TYPE mandrill_published_total counter\n"
        "mandrill_published_total 3\n"
        "# HELP mandrill_restarts_total Restarts finished, by outcome.\n"
        "# TYPE mandrill_restarts_total counter\n"
        "mandrill_restarts_total{outcome=\"ok\"} 2\n"
        "mandrill_restarts_total{outcome=\"failed\"} 1\n"
        "# HELP mandrill_ready Ready messages.\n"
        "# TYPE mandrill_ready gauge\n"
        "mandrill_ready 7\n"
        "# HELP mandrill_odd Odd values.\n"
        "# TYPE mandrill_odd gauge\n"
        "mandrill_odd{kind=\"tenth\"} 0.1\n"
        "mandrill_odd{kind=\"negative\"} -1.5\n"
        "mandrill_odd{kind=\"nan\"} NaN\n"
        "mandrill_odd{kind=\"inf\"} +Inf\n"
        "# HELP mandrill_restart_duration_seconds Restart durations.\n"
        "# TYPE mandrill_restart_duration_seconds histogram\n"
        "mandrill_restart_duration_seconds_bucket{outcome=\"ok\",le=\"0.25\"} 2\n"
        "mandrill_restart_duration_seconds_bucket{outcome=\"ok\",le=\"0.5\"} 4\n"
        "mandrill_restart_duration_seconds_bucket{outcome=\"ok\",le=\"1\"} 5\n"
        "mandrill_restart_duration_seconds_bucket{outcome=\"ok\",le=\"+Inf\"} 6\n"
        "mandrill_restart_duration_seconds_sum{outcome=\"ok\"} 4\n"
        "mandrill_restart_duration_seconds_count{outcome=\"ok\"} 6\n"
        "# HELP mandrill_save_duration_seconds Save durations.\n"
        "# TYPE mandrill_save_duration_seconds histogram\n"
        "mandrill_save_duration_seconds_bucket{le=\"0.25\"} 0\n"
        "mandrill_save_duration_seconds_bucket{le=\"0.5\"} 0\n"
        "mandrill_save_duration_seconds_bucket{le=\"1\"} 0\n"
        "mandrill_save_duration_seconds_bucket{le=\"+Inf\"} 1\n"
        "mandrill_save_duration_seconds_sum 1.5\n"
        "mandrill_save_duration_seconds_count 1\n";
    size_t size = 0;
    char *text = mdl_metrics_render (metrics, &size);
    cr_assert_not_null (text);
    cr_assert_str_eq (text, expected);
    cr_assert_eq (size, strlen (expected));
    free (text);

    cr_assert_eq (mdl_counter_value (ok), 2);
    cr_assert_eq (mdl_gauge_value (neg), -1.5);
    cr_assert_eq (mdl_histogram_count (duration), 6);
    cr_assert_eq (mdl_histogram_sum (duration), 4.0);
    mdl_metrics_destroy (&metrics);
    mdl_metrics_destroy (&metrics);
    cr_assert_null (metrics);
}

Test (mdl_metrics, histogram_bucket_arithmetic, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    double bounds [] = { 1, 2, 4, 8 };
    mdl_histogram_t *h = mdl_metrics_histogram (metrics, "mandrill_h", "H.", bounds, 4, NULL);
    cr_assert_not_null (h);
    //  Values 0..10 step 0.5: a bound is inclusive (le means <=)
    uint64_t expect [5] = { 0 };
    double sum = 0;
    for (int i = 0; i <= 20; i++) {
        double v = i * 0.5;
        mdl_histogram_observe (h, v);
        sum += v;
        for (int b = 0; b < 4; b++)
            if (v <= bounds [b])
                expect [b]++;
        expect [4]++;
    }
    cr_assert_eq (expect [0], 3);       //  0, 0.5, 1
    cr_assert_eq (expect [3], 17);      //  0 .. 8
    char *text = mdl_metrics_render (metrics, NULL);
    const char *les [5] = { "1", "2", "4", "8", "+Inf" };
    for (int b = 0; b < 5; b++) {
        char prefix [64];
        snprintf (prefix, sizeof prefix, "mandrill_h_bucket{le=\"%s\"}", les [b]);
        cr_assert_eq (s_sample (text, prefix), (double) expect [b], "%s in\n%s", prefix, text);
    }
    cr_assert_eq (s_sample (text, "mandrill_h_count"), 21);
    cr_assert_eq (s_sample (text, "mandrill_h_sum"), sum);
    free (text);

    //  Default bounds, and a duration in ms lands in seconds
    mdl_histogram_t *d = mdl_metrics_histogram (metrics, "mandrill_d_seconds", "D.", NULL, 0, NULL);
    cr_assert_not_null (d);
    mdl_histogram_observe_ms (d, 3);            //  0.003 s: le 0.005
    mdl_histogram_observe_ms (d, 60000);        //  past 10 s: only +Inf
    text = mdl_metrics_render (metrics, NULL);
    cr_assert_eq (s_sample (text, "mandrill_d_seconds_bucket{le=\"0.0025\"}"), 0);
    cr_assert_eq (s_sample (text, "mandrill_d_seconds_bucket{le=\"0.005\"}"), 1);
    cr_assert_eq (s_sample (text, "mandrill_d_seconds_bucket{le=\"10\"}"), 1);
    cr_assert_eq (s_sample (text, "mandrill_d_seconds_bucket{le=\"+Inf\"}"), 2);
    cr_assert_eq (s_sample (text, "mandrill_d_seconds_sum"), 60.003);
    free (text);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_metrics, escapes_label_values_and_help, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    mdl_gauge_t *g = mdl_metrics_gauge (metrics, "mandrill_group_paused",
                                        "Line one\nback\\slash \"quoted\".",
                                        "group", "a\"b\\c\nd", "zone", "h\xc3\xa9", NULL);
    cr_assert_not_null (g);
    mdl_gauge_set (g, 1);
    char *text = mdl_metrics_render (metrics, NULL);
    cr_assert_str_eq (text,
        "# HELP mandrill_group_paused Line one\\nback\\\\slash \"quoted\".\n"
        "# TYPE mandrill_group_paused gauge\n"
        "mandrill_group_paused{group=\"a\\\"b\\\\c\\nd\",zone=\"h\xc3\xa9\"} 1\n");
    free (text);
    //  The same label values find the same series
    cr_assert_eq (mdl_metrics_gauge (metrics, "mandrill_group_paused",
                                     "Line one\nback\\slash \"quoted\".",
                                     "group", "a\"b\\c\nd", "zone", "h\xc3\xa9", NULL), g);
    mdl_metrics_destroy (&metrics);
}

Test (mdl_metrics, refuses_bad_registrations, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    double bounds [] = { 1, 2 };
    double unsorted [] = { 2, 1 };
    double infinite [] = { 1, INFINITY };
    cr_assert_null (mdl_metrics_counter (metrics, "mandrill_published", "No _total.", NULL));
    cr_assert_null (mdl_metrics_counter (metrics, "9lives_total", "Digit first.", NULL));
    cr_assert_null (mdl_metrics_counter (metrics, "mandrill-x_total", "Dash.", NULL));
    cr_assert_null (mdl_metrics_counter (metrics, "", "Empty.", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", NULL, NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "__reserved", "x", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a:b", "x", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", "x", "a", "y", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", "\xff", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", "\xc0\x80", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", bounds, 2, "le", "1", NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", unsorted, 2, NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", infinite, 2, NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", bounds, 0, NULL));
    //  Nothing above was registered
    char *text = mdl_metrics_render (metrics, NULL);
    cr_assert_str_eq (text, "");
    free (text);

    //  A family, once made, keeps its type, help, label names and buckets
    cr_assert_not_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", "1", NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_g", "G.", bounds, 2, "a", "1", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "Other help.", "a", "2", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "b", "2", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", NULL));
    cr_assert_null (mdl_metrics_gauge (metrics, "mandrill_g", "G.", "a", "1", "b", "2", NULL));
    cr_assert_not_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", bounds, 2, NULL));
    double other [] = { 1, 3 };
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", other, 2, NULL));
    cr_assert_null (mdl_metrics_histogram (metrics, "mandrill_h", "H.", bounds, 1, NULL));
    text = mdl_metrics_render (metrics, NULL);
    cr_assert_eq (s_sample (text, "mandrill_g{a=\"1\"}"), 0);
    cr_assert_null (strstr (text, "a=\"2\""));
    free (text);
    mdl_metrics_destroy (&metrics);
}


//  --------------------------------------------------------------------
//  Collectors

typedef struct {
    int runs;                           //  Times the collector ran
    mdl_gauge_t *gauge;                 //  Gauge it sets
    double value;                       //  Value it sets
} collect_state_t;

static void
s_collect (mdl_metrics_t *metrics, void *arg)
{
    collect_state_t *state = arg;
    state->runs++;
    mdl_gauge_set (state->gauge, state->value);
}

Test (mdl_metrics, collectors_run_at_most_every_interval, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    collect_state_t state = { 0, NULL, 5 };
    state.gauge = mdl_metrics_gauge (metrics, "mandrill_ready", "Ready.", NULL);
    cr_assert_eq (mdl_metrics_add_collector (metrics, s_collect, &state), 0);
    mdl_metrics_set_collect_interval (metrics, 100);
    cr_assert_eq (mdl_metrics_collect (metrics, 1000), 1);
    cr_assert_eq (state.runs, 1);
    cr_assert_eq (mdl_gauge_value (state.gauge), 5);
    state.value = 6;
    cr_assert_eq (mdl_metrics_collect (metrics, 1050), 0);
    cr_assert_eq (mdl_metrics_collect (metrics, 1099), 0);
    cr_assert_eq (mdl_gauge_value (state.gauge), 5);
    cr_assert_eq (mdl_metrics_collect (metrics, 1100), 1);
    cr_assert_eq (mdl_gauge_value (state.gauge), 6);
    //  After a stall, one run, timed again from now: no catch-up burst
    cr_assert_eq (mdl_metrics_collect (metrics, 5000), 1);
    cr_assert_eq (mdl_metrics_collect (metrics, 5001), 0);
    cr_assert_eq (mdl_metrics_collect (metrics, 5099), 0);
    cr_assert_eq (state.runs, 3);
    mdl_metrics_set_collect_interval (metrics, 0);
    cr_assert_eq (mdl_metrics_collect (metrics, 5099), 1);
    cr_assert_eq (mdl_metrics_collect (metrics, 5099), 1);
    cr_assert_eq (state.runs, 5);
    //  The list is bounded
    for (int i = 1; i < 8; i++)
        cr_assert_eq (mdl_metrics_add_collector (metrics, s_collect, &state), 0);
    cr_assert_eq (mdl_metrics_add_collector (metrics, s_collect, &state), -1);
    mdl_metrics_destroy (&metrics);
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
