/*  brk_metrics: the broker's Prometheus series (common/METRICS.md, the
    broker table) and the collector that fills them.

    The registry (mdl_metrics) belongs to the caller, mandrill-broker's
    main, which also serves it (mdl_http); this module registers the
    broker's series into it and owns only a struct of pointers to them.

      brk_metrics_t *m = brk_metrics_new (registry);      // registers
      config.journal.io = brk_metrics_journal_io (m, config.journal.io);
      ... open the store ...
      brk_metrics_attach (m, queue, store, &dups, now);  // collector + first collect
      ... in the loop: mdl_metrics_collect (registry, now) ...
      brk_metrics_destroy (&m);                          // after the store

    The queue's and the store's totals are mirrored by a collector (run by
    mdl_metrics_collect on the actor's thread, at most once a second), so
    the hot paths carry no metrics code and a scrape shows them as of the
    last collect. The fsync histogram is current: the journal's io seam is
    wrapped, and its fsync is timed on the journal's writer thread.
    Under a restart policy (brk_queue_set_policy) the collector also
    registers, at its first run, and then sets per group:
    mandrill_broker_group_restarts_in_progress, _limit (-1: no cap),
    _paused (0/1), _failures (within the error window: a gauge, since the
    window forgets) and _waiting, each labelled group="NAME".

    Failure: brk_metrics_new returns NULL (logged by the registry) when a
    registration fails or memory runs out; the broker then does not start.
    Cost: registration O(series) once; a collect is two stats calls and
    about 30 stores, plus O(groups) under a policy; a timed fsync adds two zclock_usecs calls and one
    observation (tens of nanoseconds).

    Lifetime: the wrapped io's arg is the brk_metrics_t, so it must
    outlive the journal (destroy it after the store); the registry must
    outlive both, and mdl_metrics_collect must not be called after
    brk_metrics_destroy (the collector points here).
*/
#ifndef BRK_METRICS_H_INCLUDED
#define BRK_METRICS_H_INCLUDED

#include "brk_journal.h"
#include "brk_queue.h"
#include "brk_store.h"
#include "mdl_metrics.h"

typedef struct _brk_metrics_t brk_metrics_t;

//  Register every broker series into registry (borrowed), with
//  mandrill_build_info and the process_* gauges. NULL on failure.
brk_metrics_t *brk_metrics_new (mdl_metrics_t *registry);

//  Safe twice; nulls *self_p. The series stay in the registry.
void brk_metrics_destroy (brk_metrics_t **self_p);

//  An io seam that forwards to inner (NULL: the system's) and times every
//  fsync into mandrill_broker_journal_fsync_duration_seconds. The
//  returned table lives as long as self; call once.
const brk_journal_io_t *brk_metrics_journal_io (brk_metrics_t *self,
                                                const brk_journal_io_t *inner);

//  Start collecting from queue and store, plus the duplicates the server
//  counts itself (refused before the queue saw them, as STATS adds them;
//  may be NULL). All borrowed: they must stay until the last
//  mdl_metrics_collect. Collects once at now_ms. 0, or -1 when the
//  registry's collector list is full.
int brk_metrics_attach (brk_metrics_t *self, brk_queue_t *queue, brk_store_t *store,
                        const uint64_t *duplicates, int64_t now_ms);

#endif
