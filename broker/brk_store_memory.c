/*  brk_store_memory: see brk_store_memory.h. Nothing survives the run,
    so an EPOCH record (the queue's delivery ids moved to the next epoch)
    needs no keeping either: a memory broker's next start takes its epoch
    from the clock (main.c), and every lease it made is gone with it. */
#include "brk_store_memory.h"

#include <stdlib.h>
#include <string.h>

typedef struct {
    uint64_t appended;          //  Last sequence number handed out
} s_memory_t;

static uint64_t
s_append (void *state, const brk_store_record_t *record)
{
    (void) record;
    return ++((s_memory_t *) state)->appended;
}

static int
s_commit (void *state)
{
    (void) state;
    return 0;
}

static uint64_t
s_durable (void *state)
{
    return ((s_memory_t *) state)->appended;
}

static int
s_fd (void *state)
{
    (void) state;
    return -1;
}

static int
s_status (void *state)
{
    (void) state;
    return 0;
}

static void
s_stats (void *state, brk_store_stats_t *stats)
{
    memset (stats, 0, sizeof *stats);
    stats->appended = stats->durable = ((s_memory_t *) state)->appended;
    stats->fsync_max_us = -1;
}

static int
s_sync (void *state)
{
    (void) state;
    return 0;
}

static void
s_destroy (void *state)
{
    free (state);
}

static const brk_store_ops_t s_ops = {
    s_append, s_commit, s_durable, s_fd, s_status, s_stats, s_sync, s_destroy,
    NULL, NULL, NULL    //  No policy state: a memory broker forgets it with everything else
};

brk_store_t *
brk_store_memory_new (uint64_t epoch)
{
    s_memory_t *state = calloc (1, sizeof (s_memory_t));
    if (!state)
        return NULL;
    return brk_store_new (&s_ops, state, "memory", false, epoch);
}
