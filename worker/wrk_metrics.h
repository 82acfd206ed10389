/*  wrk_metrics: the worker's Prometheus series (common/METRICS.md, the
    worker table) and the collector that fills them.

    The registry (mdl_metrics) belongs to wrk_worker, which also serves it
    with --metrics (mdl_http); this module registers the worker's series
    into it and owns only a struct of pointers to them.

    Where each figure comes from:
      - the job table's totals (wrk_stats_t), its size and its unconfirmed
        ACKs/NACKs: mirrored by a collector that the loop runs through
        mdl_metrics_collect from its housekeeping timer, at most once a
        second, so a scrape shows them as of the last collect;
      - the restart and save durations: observed when the step ends, by
        the job table's timed effect (wrk_job.h), always current;
      - database errors: every save the store reported failed (wrk_db's
        done callback with ok false), counted when it is reported. Outcome
        updates have no result in wrk_db's interface and are not counted.

    Failure: wrk_metrics_new returns NULL (the registry logs why) when a
    registration fails or memory runs out; the worker then does not start.
    Cost: registration O(series) once; a collect is O(1): one stats copy
    and about 15 stores; an observation is O(buckets), a few ns.

    Threads: everything here runs on the loop's thread; the registry's
    render (HTTP thread) reads the series lock-free.
*/
#ifndef WRK_METRICS_H_INCLUDED
#define WRK_METRICS_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "mdl_metrics.h"
#include "wrk_jobs.h"

typedef struct _wrk_metrics_t wrk_metrics_t;

//  Register every worker series into registry (borrowed; it must outlive
//  self), with mandrill_build_info and the process_* gauges. NULL on
//  failure.
wrk_metrics_t *wrk_metrics_new (mdl_metrics_t *registry);

//  Safe twice; nulls *self_p. The series stay in the registry; no
//  mdl_metrics_collect may run after this (the collector points here).
void wrk_metrics_destroy (wrk_metrics_t **self_p);

//  Collect from jobs (borrowed: it must stay until the last collect) and
//  collect once at now_ms. 0, or -1 when the collector list is full.
int wrk_metrics_attach (wrk_metrics_t *self, wrk_jobs_t *jobs, int64_t now_ms);

//  A restart or save try ended after ms: into its histogram by outcome.
void wrk_metrics_timed (wrk_metrics_t *self, wrk_timed_t step, bool ok, int64_t ms);

//  The store reported a save failed.
void wrk_metrics_db_error (wrk_metrics_t *self);

#endif
