/*  brk_worker: see brk_worker.h and brk_queue_internal.h. */
#include "brk_queue_internal.h"

#include <stdio.h>
#include <stdlib.h>

brk_worker_t *
brk_worker_new (uint64_t id, const char *name, int64_t credit, void *handle, int64_t now)
{
    brk_worker_t *worker = calloc (1, sizeof (brk_worker_t));
    if (!worker)
        return NULL;
    snprintf (worker->name, sizeof worker->name, "%s", name && *name ? name : "worker");
    worker->id = id;
    worker->handle = handle;
    worker->credit = credit < 0 ? 0 : credit;
    worker->last_seen = now;
    return worker;
}

void
brk_worker_destroy (brk_worker_t **worker_p)
{
    if (*worker_p) {
        free (*worker_p);
        *worker_p = NULL;
    }
}

void
brk_worker_set_credit (brk_worker_t *worker, int64_t credit)
{
    worker->credit = credit < 0 ? 0 : credit;
}

void
brk_worker_lease_add (brk_worker_t *worker, brk_lease_t *lease)
{
    lease->wprev = NULL;
    lease->wnext = worker->leases;
    if (worker->leases)
        worker->leases->wprev = lease;
    worker->leases = lease;
    worker->in_flight++;
}

void
brk_worker_lease_remove (brk_worker_t *worker, brk_lease_t *lease)
{
    if (lease->wprev)
        lease->wprev->wnext = lease->wnext;
    else
        worker->leases = lease->wnext;
    if (lease->wnext)
        lease->wnext->wprev = lease->wprev;
    lease->wnext = lease->wprev = NULL;
    worker->in_flight--;
}

void *
brk_worker_handle (const brk_worker_t *worker)
{
    return worker->handle;
}

const char *
brk_worker_name (const brk_worker_t *worker)
{
    return worker->name;
}

int64_t
brk_worker_in_flight (const brk_worker_t *worker)
{
    return worker->in_flight;
}

int64_t
brk_worker_credit (const brk_worker_t *worker)
{
    return worker->credit;
}

unsigned
brk_worker_features (const brk_worker_t *worker)
{
    return worker->features;
}

void
brk_worker_set_features (brk_worker_t *worker, unsigned features)
{
    worker->features = features;
}
