/*  wrk_metrics: the worker's series and collector; see wrk_metrics.h. */
#include "wrk_metrics.h"

#include <stdlib.h>

#include "mdl_metrics_process.h"

//  exec restarts may run long
static const double s_restart_buckets [] = {
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120
};

struct _wrk_metrics_t {
    mdl_metrics_t *registry;            //  Borrowed
    wrk_jobs_t *jobs;                   //  Collected from, once attached
    mdl_counter_t *deliveries;          //  wrk_stats_t.consumed
    mdl_counter_t *restarts_ok;         //  .restarted
    mdl_counter_t *restarts_failed;     //  .restart_failures
    mdl_counter_t *restarts_skipped;    //  .restarts_skipped
    mdl_counter_t *restarts_verified;   //  .verified
    mdl_counter_t *restarts_refused;    //  .starts_refused
    mdl_counter_t *health_timeouts;     //  .health_timeouts
    mdl_counter_t *saves_ok;            //  .saved
    mdl_counter_t *saves_failed;        //  .save_failures
    mdl_histogram_t *restart_ok;        //  restart_duration_seconds{outcome="ok"}
    mdl_histogram_t *restart_failed;    //  {outcome="failed"}
    mdl_histogram_t *save_ok;           //  save_duration_seconds{outcome="ok"}
    mdl_histogram_t *save_failed;       //  {outcome="failed"}
    mdl_gauge_t *in_flight;             //  wrk_jobs_size ()
    mdl_gauge_t *unconfirmed_ack;       //  wrk_jobs_unconfirmed () acks
    mdl_gauge_t *unconfirmed_nack;      //  and nacks
    mdl_counter_t *db_errors;           //  Added to as failures are reported
    mdl_counter_t *acks_confirmed;      //  .acks_confirmed
    mdl_counter_t *acks_refused;        //  .acks_refused
    mdl_counter_t *acks_abandoned;      //  .acks_abandoned
    mdl_counter_t *nacked;              //  .nacked
    mdl_counter_t *extends;             //  .extends
};

void
wrk_metrics_destroy (wrk_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free (*self_p);
    *self_p = NULL;
}

#define COUNTER(field, name, help, ...) \
    if (!(self->field = mdl_metrics_counter (r, name, help, __VA_ARGS__))) goto failed
#define GAUGE(field, name, help, ...) \
    if (!(self->field = mdl_metrics_gauge (r, name, help, __VA_ARGS__))) goto failed
#define HISTOGRAM(field, name, help, bounds, count, ...) \
    if (!(self->field = mdl_metrics_histogram (r, name, help, bounds, count, __VA_ARGS__))) \
        goto failed

wrk_metrics_t *
wrk_metrics_new (mdl_metrics_t *registry)
{
    wrk_metrics_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->registry = registry;
    mdl_metrics_t *r = registry;
    mdl_gauge_t *info = mdl_metrics_gauge (r, "mandrill_build_info",
                                           "Always 1; the program and its version in labels.",
                                           "program", "worker", "version", MANDRILL_VERSION, NULL);
    if (!info)
        goto failed;
    mdl_gauge_set (info, 1);
    COUNTER (deliveries, "mandrill_worker_deliveries_total", "Deliveries taken.", NULL);
    const char *restarts = "Restarts by outcome (skipped: done by an earlier attempt; verified: "
                           "in doubt, a verify command said done; refused: start not recorded, "
                           "not run; health_timeout: host never healthy).";
    COUNTER (restarts_ok, "mandrill_worker_restarts_total", restarts, "outcome", "ok", NULL);
    COUNTER (restarts_failed, "mandrill_worker_restarts_total", restarts, "outcome", "failed", NULL);
    COUNTER (restarts_skipped, "mandrill_worker_restarts_total", restarts,
             "outcome", "skipped", NULL);
    COUNTER (restarts_verified, "mandrill_worker_restarts_total", restarts,
             "outcome", "verified", NULL);
    COUNTER (restarts_refused, "mandrill_worker_restarts_total", restarts,
             "outcome", "refused", NULL);
    COUNTER (health_timeouts, "mandrill_worker_restarts_total", restarts,
             "outcome", "health_timeout", NULL);
    const char *saves = "Save tries by outcome.";
    COUNTER (saves_ok, "mandrill_worker_saves_total", saves, "outcome", "ok", NULL);
    COUNTER (saves_failed, "mandrill_worker_saves_total", saves, "outcome", "failed", NULL);
    size_t rcount = sizeof s_restart_buckets / sizeof s_restart_buckets [0];
    const char *rhelp = "Time from the start of a restart to its outcome.";
    HISTOGRAM (restart_ok, "mandrill_worker_restart_duration_seconds", rhelp,
               s_restart_buckets, rcount, "outcome", "ok", NULL);
    HISTOGRAM (restart_failed, "mandrill_worker_restart_duration_seconds", rhelp,
               s_restart_buckets, rcount, "outcome", "failed", NULL);
    const char *shelp = "Time from handing a save to the database to its result.";
    HISTOGRAM (save_ok, "mandrill_worker_save_duration_seconds", shelp, NULL, 0,
               "outcome", "ok", NULL);
    HISTOGRAM (save_failed, "mandrill_worker_save_duration_seconds", shelp, NULL, 0,
               "outcome", "failed", NULL);
    GAUGE (in_flight, "mandrill_worker_in_flight", "Deliveries still working.", NULL);
    const char *unconfirmed = "ACKs and NACKs sent and not yet answered by the broker.";
    GAUGE (unconfirmed_ack, "mandrill_worker_unconfirmed", unconfirmed, "command", "ack", NULL);
    GAUGE (unconfirmed_nack, "mandrill_worker_unconfirmed", unconfirmed, "command", "nack", NULL);
    COUNTER (db_errors, "mandrill_worker_db_errors_total",
             "Saves the database reported failed.", NULL);
    const char *acks = "ACKs by the broker's answer (abandoned: never answered).";
    COUNTER (acks_confirmed, "mandrill_worker_acks_total", acks, "result", "confirmed", NULL);
    COUNTER (acks_refused, "mandrill_worker_acks_total", acks, "result", "refused", NULL);
    COUNTER (acks_abandoned, "mandrill_worker_acks_total", acks, "result", "abandoned", NULL);
    COUNTER (nacked, "mandrill_worker_nacked_total", "Deliveries nacked.", NULL);
    COUNTER (extends, "mandrill_worker_extends_total", "Lease extensions sent (per lease).", NULL);
    if (mdl_metrics_add_process (r) != 0)
        goto failed;
    return self;
failed:
    wrk_metrics_destroy (&self);
    return NULL;
}

static void
s_collect (mdl_metrics_t *metrics, void *arg)
{
    (void) metrics;
    wrk_metrics_t *self = arg;
    wrk_stats_t s;
    wrk_jobs_stats (self->jobs, &s);
    mdl_counter_set (self->deliveries, s.consumed);
    mdl_counter_set (self->restarts_ok, s.restarted);
    mdl_counter_set (self->restarts_failed, s.restart_failures);
    mdl_counter_set (self->restarts_skipped, s.restarts_skipped);
    mdl_counter_set (self->restarts_verified, s.verified);
    mdl_counter_set (self->restarts_refused, s.starts_refused);
    mdl_counter_set (self->health_timeouts, s.health_timeouts);
    mdl_counter_set (self->saves_ok, s.saved);
    mdl_counter_set (self->saves_failed, s.save_failures);
    mdl_counter_set (self->acks_confirmed, s.acks_confirmed);
    mdl_counter_set (self->acks_refused, s.acks_refused);
    mdl_counter_set (self->acks_abandoned, s.acks_abandoned);
    mdl_counter_set (self->nacked, s.nacked);
    mdl_counter_set (self->extends, s.extends);
    mdl_gauge_set (self->in_flight, (double) wrk_jobs_size (self->jobs));
    size_t acks = 0, nacks = 0;
    wrk_jobs_unconfirmed (self->jobs, &acks, &nacks);
    mdl_gauge_set (self->unconfirmed_ack, (double) acks);
    mdl_gauge_set (self->unconfirmed_nack, (double) nacks);
}

int
wrk_metrics_attach (wrk_metrics_t *self, wrk_jobs_t *jobs, int64_t now_ms)
{
    self->jobs = jobs;
    if (mdl_metrics_add_collector (self->registry, s_collect, self) != 0)
        return -1;
    mdl_metrics_collect (self->registry, now_ms);
    return 0;
}

void
wrk_metrics_timed (wrk_metrics_t *self, wrk_timed_t step, bool ok, int64_t ms)
{
    mdl_histogram_t *histogram = step == WRK_TIMED_RESTART
                               ? (ok ? self->restart_ok : self->restart_failed)
                               : (ok ? self->save_ok : self->save_failed);
    mdl_histogram_observe_ms (histogram, ms < 0 ? 0 : ms);
}

void
wrk_metrics_db_error (wrk_metrics_t *self)
{
    mdl_counter_inc (self->db_errors);
}
