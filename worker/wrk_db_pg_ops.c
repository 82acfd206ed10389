/*  wrk_db_pg_ops: the PostgreSQL store (wrk_db_pg) behind the store
    interface of wrk_db.h, for postgresql:// and postgres:// URLs.

    Translation only, no state of its own: watch gives wrk_db_pg's socket
    and events (WRK_DB_PG_READ/WRITE are ZMQ_POLLIN/ZMQ_POLLOUT), next_wake
    turns wrk_db_pg_timeout_ms into a zclock_mono () time, and service
    advances the state machine, then reports what is settled; so results
    come only from service, as wrk_db.h requires. Failures are reported
    within a bounded time: at once while the server is down, within 30 s
    for a commit without an answer, within 20 s for saves waiting on a
    connection attempt and its set-up.

    Compiled when MANDRILL_WITH_PG is defined (worker/CMakeLists.txt),
    which also lets wrk_db.c list the postgresql:// and postgres:// schemes.
*/
#if defined (MANDRILL_WITH_PG)

#include "wrk_db_pg.h"

#include <czmq.h>

void *
wrk_db_pg_open (const char *target, const char *worker_name, char *error, size_t error_size)
{
    return wrk_db_pg_new (target, worker_name, error, error_size);
}

static int
s_save (void *self, const wrk_db_row_t *row)
{
    return wrk_db_pg_save (self, row->message_id, row->token, row->instance_name, row->hostname,
                           row->attributes, row->attributes_size, row->attempt,
                           row->received_wall_ms, row->publisher);
}

static int
s_outcome (void *self, const char *message_id, const char *outcome, int64_t outcome_wall_ms)
{
    return wrk_db_pg_outcome (self, message_id, outcome, outcome_wall_ms);
}

static int
s_flush (void *self)
{
    return wrk_db_pg_flush (self);
}

static void
s_watch (void *self, wrk_db_watch_t *watch)
{
    watch->sock = NULL;
    watch->fd = wrk_db_pg_fd (self);
    int events = watch->fd >= 0 ? wrk_db_pg_events (self) : 0;
    watch->events = (short) ((events & WRK_DB_PG_READ ? ZMQ_POLLIN : 0)
                             | (events & WRK_DB_PG_WRITE ? ZMQ_POLLOUT : 0));
}

static int64_t
s_next_wake (void *self)
{
    int64_t timeout = wrk_db_pg_timeout_ms (self);
    return timeout < 0 ? -1 : zclock_mono () + timeout;
}

static int
s_service (void *self, wrk_db_done_fn *done, void *arg)
{
    wrk_db_pg_ready (self);
    return wrk_db_pg_recv (self, done, arg);
}

static size_t
s_pending (void *self)
{
    return wrk_db_pg_pending (self);
}

static void
s_destroy (void **self_p)
{
    wrk_db_pg_t *self = *self_p;
    wrk_db_pg_destroy (&self);
    *self_p = NULL;
}

const wrk_db_ops_t wrk_db_pg_ops = {
    .name = "postgresql",
    .save = s_save,
    .outcome = s_outcome,
    .flush = s_flush,
    .watch = s_watch,
    .next_wake = s_next_wake,
    .service = s_service,
    .pending = s_pending,
    .destroy = s_destroy
};

#endif
