/*  Tests of wrk_metrics and the job table's timed effect: a real job
    table under the manual clock and recording effects of the shared
    harness (support/wrk_jobs_fake.h), with the timed effect wired to
    wrk_metrics as wrk_worker wires it; the registry is read back through
    mdl_metrics_render, so durations and totals are checked exactly.
*/
#include "support/wrk_jobs_fake.h"

#include "mdl_metrics.h"
#include "wrk_metrics.h"

static wrk_metrics_t *s_metrics;

static void
s_timed (void *arg, wrk_timed_t step, bool ok, int64_t ms)
{
    (void) arg;
    wrk_metrics_timed (s_metrics, step, ok, ms);
}

//  s_new, with the timed effect.
static wrk_jobs_t *
s_new_timed (wrk_config_t *config)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    fake = calloc (1, sizeof *fake);
    cr_assert_not_null (fake);
    fake->randoms [0] = 0.5;
    fake->random_count = 1;
    wrk_effects_t effects = { NULL, s_extend, s_ack, s_nack, s_progress,
                              s_save, s_restart, s_kill, NULL, s_timed, NULL, NULL };
    mdl_random_t random = { s_random, NULL };
    wrk_jobs_t *jobs = wrk_jobs_new (config, &effects, mdl_clock_manual (&fake->now), random);
    cr_assert_not_null (jobs);
    return jobs;
}

static double
s_rendered (mdl_metrics_t *registry, const char *series)
{
    size_t size, length = strlen (series);
    char *text = mdl_metrics_render (registry, &size);
    cr_assert_not_null (text);
    double result = -1;
    for (const char *line = text; line; line = strchr (line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp (line, series, length) == 0 && line [length] == ' ') {
            result = strtod (line + length + 1, NULL);
            break;
        }
    }
    free (text);
    return result;
}

Test (wrk_metrics, durations_and_totals_by_outcome, .timeout = 10)
{
    mdl_metrics_t *registry = mdl_metrics_new ();
    cr_assert_not_null (registry);
    mdl_metrics_set_collect_interval (registry, 0);
    s_metrics = wrk_metrics_new (registry);
    cr_assert_not_null (s_metrics);
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new_timed (&config);
    cr_assert_eq (wrk_metrics_attach (s_metrics, jobs, fake->now), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_worker_deliveries_total"), 0);

    //  One that succeeds: saved after 30 ms, restarted after 250 ms
    int64_t start = fake->now;
    s_deliver (jobs, 11, 1, 0, 10000);
    fake->now = start + 30;
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    fake->now = start + 250;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);

    //  One whose save fails after 10 ms and restart after 100 ms
    start = fake->now;
    s_deliver (jobs, 12, 2, 0, 10000);
    fake->now = start + 10;
    wrk_jobs_saved (jobs, s_ids [2], s_token ("save", 1), false, "disk on fire");
    wrk_metrics_db_error (s_metrics);
    fake->now = start + 100;
    wrk_jobs_restarted (jobs, s_ids [2], s_token ("restart", 1), false, "exit 1");
    s_flush (jobs);
    cr_assert_eq (s_count ("nack"), 1);

    cr_expect_eq (mdl_metrics_collect (registry, fake->now), 1);
    const char *h = "mandrill_worker_";
    char name [128];
#define VALUE(suffix) (snprintf (name, sizeof name, "%s%s", h, suffix), s_rendered (registry, name))
    cr_expect_eq (VALUE ("save_duration_seconds_count{outcome=\"ok\"}"), 1);
    cr_expect_float_eq (VALUE ("save_duration_seconds_sum{outcome=\"ok\"}"), 0.030, 1e-9);
    cr_expect_eq (VALUE ("save_duration_seconds_count{outcome=\"failed\"}"), 1);
    cr_expect_float_eq (VALUE ("save_duration_seconds_sum{outcome=\"failed\"}"), 0.010, 1e-9);
    cr_expect_eq (VALUE ("restart_duration_seconds_count{outcome=\"ok\"}"), 1);
    cr_expect_float_eq (VALUE ("restart_duration_seconds_sum{outcome=\"ok\"}"), 0.250, 1e-9);
    cr_expect_eq (VALUE ("restart_duration_seconds_bucket{outcome=\"ok\",le=\"0.1\"}"), 0);
    cr_expect_eq (VALUE ("restart_duration_seconds_bucket{outcome=\"ok\",le=\"0.25\"}"), 1);
    cr_expect_eq (VALUE ("restart_duration_seconds_count{outcome=\"failed\"}"), 1);
    cr_expect_float_eq (VALUE ("restart_duration_seconds_sum{outcome=\"failed\"}"), 0.100, 1e-9);
    cr_expect_eq (VALUE ("deliveries_total"), 2);
    cr_expect_eq (VALUE ("restarts_total{outcome=\"ok\"}"), 1);
    cr_expect_eq (VALUE ("restarts_total{outcome=\"failed\"}"), 1);
    cr_expect_eq (VALUE ("restarts_total{outcome=\"skipped\"}"), 0);
    cr_expect_eq (VALUE ("saves_total{outcome=\"ok\"}"), 1);
    cr_expect_eq (VALUE ("saves_total{outcome=\"failed\"}"), 1);
    cr_expect_eq (VALUE ("acks_total{result=\"confirmed\"}"), 1);
    cr_expect_eq (VALUE ("nacked_total"), 1);
    cr_expect_eq (VALUE ("db_errors_total"), 1);
    cr_expect_eq (VALUE ("in_flight"), 0);
    cr_expect_eq (VALUE ("unconfirmed{command=\"ack\"}"), 0);
#undef VALUE
    s_end (&jobs);
    wrk_metrics_destroy (&s_metrics);
    wrk_metrics_destroy (&s_metrics);
    cr_expect_null (s_metrics);
    mdl_metrics_destroy (&registry);
}
