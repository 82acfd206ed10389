/*  brk_worker: one worker registration as the broker's queue sees it.

    A worker has a name (for logs, events and history), its credit (the
    most leases it holds at once), the leases it holds now, the time of
    its last sign of life, and an opaque handle that belongs to whoever
    registered it (the server's backend peer). brk_queue owns workers;
    a brk_worker_t * stays valid until brk_queue_worker_remove () or
    brk_queue_worker_leave (), or the loss the queue reports from its tick.
    Cost: one allocation per registration; lease bookkeeping is O(1).
*/
#ifndef BRK_WORKER_H_INCLUDED
#define BRK_WORKER_H_INCLUDED

#include <stdint.h>

typedef struct _brk_worker_t brk_worker_t;

void *brk_worker_handle (const brk_worker_t *worker);
const char *brk_worker_name (const brk_worker_t *worker);
int64_t brk_worker_in_flight (const brk_worker_t *worker);
int64_t brk_worker_credit (const brk_worker_t *worker);
//  MMP_FEATURE_* bits the worker declared in HELLO (0 until set, by
//  brk_queue_worker_set_features): the broker sends a newer optional field
//  only to a worker that declared it.
unsigned brk_worker_features (const brk_worker_t *worker);

#endif
