/*  brk_store: see brk_store.h. The wrapper only forwards: a store's
    behaviour is all in its functions. */
#include "brk_store.h"

#include <assert.h>
#include <errno.h>
#include <stdlib.h>

struct _brk_store_t {
    const brk_store_ops_t *ops; //  The store's functions
    void *state;                //  Theirs, owned
    const char *name;           //  Durability as PUBACK says it
    bool deferred;              //  Do changes wait for durable ()?
    uint64_t epoch;             //  This run's epoch
};

brk_store_t *
brk_store_new (const brk_store_ops_t *ops, void *state, const char *name,
               bool deferred, uint64_t epoch)
{
    assert (ops && ops->append && ops->commit && ops->durable && ops->fd
            && ops->status && ops->stats && ops->sync && ops->destroy && name);
    brk_store_t *self = calloc (1, sizeof (brk_store_t));
    if (!self) {
        ops->destroy (state);
        return NULL;
    }
    self->ops = ops;
    self->state = state;
    self->name = name;
    self->deferred = deferred;
    self->epoch = epoch < 1 ? 1 : epoch;
    return self;
}

void
brk_store_destroy (brk_store_t **self_p)
{
    assert (self_p);
    brk_store_t *self = *self_p;
    if (self) {
        self->ops->destroy (self->state);
        free (self);
        *self_p = NULL;
    }
}

const char *
brk_store_name (const brk_store_t *self)
{
    return self->name;
}

bool
brk_store_deferred (const brk_store_t *self)
{
    return self->deferred;
}

uint64_t
brk_store_epoch (const brk_store_t *self)
{
    return self->epoch;
}

uint64_t
brk_store_append (brk_store_t *self, const brk_store_record_t *record)
{
    return self->ops->append (self->state, record);
}

int
brk_store_commit (brk_store_t *self)
{
    return self->ops->commit (self->state);
}

uint64_t
brk_store_durable (brk_store_t *self)
{
    return self->ops->durable (self->state);
}

int
brk_store_fd (brk_store_t *self)
{
    return self->ops->fd (self->state);
}

int
brk_store_status (brk_store_t *self)
{
    return self->ops->status (self->state);
}

void
brk_store_stats (brk_store_t *self, brk_store_stats_t *stats)
{
    self->ops->stats (self->state, stats);
}

int
brk_store_sync (brk_store_t *self)
{
    return self->ops->sync (self->state);
}

int
brk_store_save_state (brk_store_t *self, const char *blob, size_t len)
{
    return self->ops->save_state ? self->ops->save_state (self->state, blob, len) : 0;
}

int
brk_store_post_state (brk_store_t *self, const char *blob, size_t len)
{
    if (self->ops->post_state)
        return self->ops->post_state (self->state, blob, len);
    return brk_store_save_state (self, blob, len);
}

bool
brk_store_keeps_state (const brk_store_t *self)
{
    return self->ops->save_state != NULL;
}

char *
brk_store_load_state (brk_store_t *self)
{
    if (!self->ops->load_state) {
        errno = 0;
        return NULL;
    }
    return self->ops->load_state (self->state);
}
