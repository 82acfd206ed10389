/*  brk_store_memory: the store that keeps nothing (--durability memory).

    A real null object, not a NULL pointer: every append is accepted and
    durable at once (append returns the next sequence number, durable ()
    the last one), commit and sync do nothing, status is always 0, fd is
    -1, nothing is recovered. A restart loses every message; PUBACK says
    "memory" so publishers know. Cost: a counter increment per record.
*/
#ifndef BRK_STORE_MEMORY_H_INCLUDED
#define BRK_STORE_MEMORY_H_INCLUDED

#include "brk_store.h"

//  A memory store for a run with this epoch (>= 1; the caller picks it,
//  since there is no previous run to count from). NULL when out of memory.
brk_store_t *brk_store_memory_new (uint64_t epoch);

#endif
