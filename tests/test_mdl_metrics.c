/*  Tests for mdl_metrics: registration rules, the exposition text
    exactly, histogram arithmetic, escaping, collectors, and the process_*
    gauges of mdl_metrics_process. Scrapes over
    HTTP, concurrency and promtool are in test_mdl_http.c. */
#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "mdl_log.h"
#include "mdl_metrics.h"
#include "mdl_metrics_process.h"

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
    mdl_counter_t *mirror;              //  Counter set from a kept total
    uint64_t total;                     //  The total another module keeps
} collect_state_t;

static void
s_collect (mdl_metrics_t *metrics, void *arg)
{
    (void) metrics;
    collect_state_t *state = arg;
    state->runs++;
    mdl_gauge_set (state->gauge, state->value);
    if (state->mirror)
        mdl_counter_set (state->mirror, state->total);
}

Test (mdl_metrics, collectors_run_at_most_every_interval, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    collect_state_t state = { 0, NULL, 5, NULL, 40 };
    state.gauge = mdl_metrics_gauge (metrics, "mandrill_ready", "Ready.", NULL);
    state.mirror = mdl_metrics_counter (metrics, "mandrill_acked_total", "Acked.", NULL);
    cr_assert_eq (mdl_metrics_add_collector (metrics, s_collect, &state), 0);
    mdl_metrics_set_collect_interval (metrics, 100);
    cr_assert_eq (mdl_metrics_collect (metrics, 1000), 1);
    cr_assert_eq (state.runs, 1);
    cr_assert_eq (mdl_gauge_value (state.gauge), 5);
    cr_assert_eq (mdl_counter_value (state.mirror), 40);
    state.value = 6;
    state.total = 45;
    cr_assert_eq (mdl_metrics_collect (metrics, 1050), 0);
    cr_assert_eq (mdl_metrics_collect (metrics, 1099), 0);
    cr_assert_eq (mdl_gauge_value (state.gauge), 5);
    cr_assert_eq (mdl_counter_value (state.mirror), 40);
    cr_assert_eq (mdl_metrics_collect (metrics, 1100), 1);
    cr_assert_eq (mdl_gauge_value (state.gauge), 6);
    char *text = mdl_metrics_render (metrics, NULL);
    cr_assert_eq (s_sample (text, "mandrill_acked_total"), 45);
    cr_assert_eq (s_sample (text, "mandrill_ready"), 6);
    free (text);
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
//  The process_* gauges

Test (mdl_metrics_process, fills_plausible_values, .init = s_quiet, .timeout = 10)
{
    mdl_metrics_t *metrics = mdl_metrics_new ();
    cr_assert_eq (mdl_metrics_add_process (metrics), 0);
    char *text = mdl_metrics_render (metrics, NULL);
    double resident = s_sample (text, "process_resident_memory_bytes");
    double virtual = s_sample (text, "process_virtual_memory_bytes");
    double open_fds = s_sample (text, "process_open_fds");
    double max_fds = s_sample (text, "process_max_fds");
    double started = s_sample (text, "process_start_time_seconds");
    free (text);
    cr_assert_gt (resident, 4096, "resident %g", resident);
    cr_assert_geq (virtual, resident, "virtual %g < resident %g", virtual, resident);
    cr_assert_geq (open_fds, 3, "open fds %g", open_fds);
    cr_assert (max_fds == -1 || max_fds >= open_fds, "max fds %g", max_fds);
    //  Started before now and not before the test run began (criterion
    //  runs each test in a fresh process)
    double now = (double) time (NULL);
    cr_assert (started <= now + 1 && started > now - 600, "start %f, now %f", started, now);

    //  A collect sees a new descriptor
    mdl_metrics_set_collect_interval (metrics, 0);
    int fds [2];
    cr_assert_eq (pipe (fds), 0);
    cr_assert_eq (mdl_metrics_collect (metrics, 0), 1);
    text = mdl_metrics_render (metrics, NULL);
    cr_assert_eq (s_sample (text, "process_open_fds"), open_fds + 2, "%s", text);
    free (text);
    close (fds [0]);
    close (fds [1]);
    mdl_metrics_destroy (&metrics);
}
