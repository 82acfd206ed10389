/*  wrk_db_pg: the worker's "save" step into PostgreSQL, driven by the
    worker's own loop through libpq's asynchronous API.

    Nothing here blocks the loop once wrk_db_pg_new has returned. The
    module is a state machine over one connection (DOWN -> CONNECTING ->
    SETUP -> READY, and back to DOWN when the connection breaks); the loop
    watches wrk_db_pg_fd for wrk_db_pg_events, arms a timer for
    wrk_db_pg_timeout_ms, and calls wrk_db_pg_ready when either fires.
    After EVERY call into the module (save, outcome, flush, ready, recv)
    the loop re-reads fd, events and timeout: the socket changes on each
    reconnect and is -1 while the module waits to reconnect.

    Saves and outcome updates are queued in a local batch and handed over
    with wrk_db_pg_flush. Batches waiting to be sent go out together as a
    group in one pipeline (libpq pipeline mode: prepared multi-row upserts
    of up to 1000 rows for the saves, split also where a message id
    repeats; one update per outcome, after the saves; then one
    PQpipelineSync). Everything up to a sync is one implicit transaction,
    so a group is one commit. At most two groups (of about 2000 saves at
    most) are in flight; while they commit, new batches wait and join the
    next group (group commit: a commit grows with the load).
    A save is reported ok only after its group's sync came back, i.e. after
    COMMIT; any error, a connection that breaks, or a group that gets no
    answer for 30 s fails every save of the group with the reason. A save
    that failed may still have been committed (the answer was lost): the
    core's retry is an upsert that counts it (saves = saves + 1), so this
    costs one count, never a lost or duplicated row. Outcome updates of a
    failed group are queued again (up to 10 tries).

    While the connection is down, flushed batches fail at once ("database
    unavailable"), so the core backs off and extends its leases; the
    module reconnects after a backoff that doubles from 100 ms to 2 s
    (reset by a successful set-up), timed on an injectable clock. A
    connection attempt that takes over 10 s is abandoned.

    URLs: postgresql://... or postgres://... (libpq connection URIs, any
    libpq parameter as a query parameter). The password comes from the URI,
    PGPASSFILE/~/.pgpass or PGPASSWORD, as libpq does it; logs and errors
    show the URL with the password replaced by "***". Keepalives are on
    (idle 10 s, 3 probes 5 s apart) unless the URL says otherwise, so a
    server that vanishes without a reset is noticed.

    wrk_db_pg_new connects and sets up at once, before the loop runs, and
    waits up to 10 s for it (a worker with a wrong URL, port or password
    fails at start with libpq's reason). Every new connection checks and,
    if needed, creates the schema (wrk_db_pg_schema.h: the tables, the
    version table mandrill_schema_version, the statements).

    Costs and limits: O(1) per save queued; memory grows with the saves
    queued, in flight and not yet reported (the core's credit bounds it).
    libpq resolves host names synchronously while connecting: give
    hostaddr= (or an IP literal) where DNS may be slow. Not thread-safe:
    one loop owns an instance.
*/
#ifndef WRK_DB_PG_H_INCLUDED
#define WRK_DB_PG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdl_clock.h"

typedef struct _wrk_db_pg_t wrk_db_pg_t;

//  Events for wrk_db_pg_events: the same bits as ZMQ_POLLIN and
//  ZMQ_POLLOUT (and POLLIN/POLLOUT of poll(2) on Linux).
#define WRK_DB_PG_READ  1
#define WRK_DB_PG_WRITE 2

//  True if url has a scheme this module takes (postgresql:// or postgres://).
bool wrk_db_pg_handles (const char *url);

//  Copy url into out with its password (user:PASSWORD@ or password=...)
//  replaced by "***". Returns out.
char *wrk_db_pg_mask_url (const char *url, char *out, size_t out_size);

//  Connect to url and set up the schema, waiting up to 10 s. Returns NULL
//  with a reason in error (the URL masked) when the URL is bad, the server
//  cannot be reached, refuses the login, or has a newer schema.
wrk_db_pg_t *wrk_db_pg_new (const char *url, const char *worker_name,
                            char *error, size_t error_size);

//  Send what is queued, wait up to 5 s for the answers of what is in flight
//  (blocking: this is for shutdown), close the connection, free everything.
//  Results not yet read are dropped. Safe on NULL; nulls *self_p.
void wrk_db_pg_destroy (wrk_db_pg_t **self_p);

//  Use this clock for backoff and timeouts from now on (tests). Deadlines
//  already set keep their value, so call it right after wrk_db_pg_new.
void wrk_db_pg_set_clock (wrk_db_pg_t *self, mdl_clock_t clock);

//  Queue a save. attributes is a JSON object's text of attributes_size
//  bytes (no terminating null needed), or NULL. token comes back with the
//  result. Returns 0, or -1 when out of memory or when attributes is not
//  valid JSON (logged; nothing queued, no result will come). publisher
//  is the publisher's authenticated name for the row, or NULL.
int wrk_db_pg_save (wrk_db_pg_t *self, const char *message_id, uint64_t token,
                    const char *instance_name, const char *hostname,
                    const char *attributes, size_t attributes_size,
                    int64_t attempt, int64_t received_wall_ms, const char *publisher);

//  Queue the restart outcome of a saved message, recorded at wall_ms (no
//  result is reported). Returns 0 or -1 (out of memory).
int wrk_db_pg_outcome (wrk_db_pg_t *self, const char *message_id, const char *outcome,
                       int64_t wall_ms);

//  Hand the queued batch over: sent now when the connection is ready and
//  a group may start, failed at once (reported by recv) when it is down,
//  else kept until it can go. No-op when empty. Returns 0.
int wrk_db_pg_flush (wrk_db_pg_t *self);

//  The socket to watch, or -1 when there is none (waiting to reconnect).
int wrk_db_pg_fd (wrk_db_pg_t *self);

//  What to wait for on wrk_db_pg_fd: WRK_DB_PG_READ and/or WRK_DB_PG_WRITE
//  (0 when the fd is -1).
int wrk_db_pg_events (wrk_db_pg_t *self);

//  Milliseconds until the loop must call wrk_db_pg_ready even without
//  socket activity: 0 when results wait to be read or work is due now, -1
//  when only the socket matters.
int64_t wrk_db_pg_timeout_ms (wrk_db_pg_t *self);

//  Advance the state machine: connect, set up, send, read answers, notice
//  a broken connection, reconnect when the backoff is over. Never blocks;
//  harmless when nothing is ready.
void wrk_db_pg_ready (wrk_db_pg_t *self);

//  Report every save whose fate is known, in order, through done (error is
//  "" when ok). Returns the number of saves reported (0 when none).
typedef void (wrk_db_pg_done_fn) (void *arg, const char *message_id, uint64_t token,
                                  bool ok, const char *error);
int wrk_db_pg_recv (wrk_db_pg_t *self, wrk_db_pg_done_fn *done, void *arg);

//  Saves handed over (flushed) and not yet reported by recv.
size_t wrk_db_pg_pending (wrk_db_pg_t *self);

//  True when connected and set up (for logs and tests).
bool wrk_db_pg_connected (wrk_db_pg_t *self);

#if defined (MANDRILL_WITH_PG)
//  The store interface of wrk_db.h (wrk_db_pg_ops.c): open takes the whole
//  URL; the ops forward to the functions above.
#include "wrk_db.h"
wrk_db_open_fn wrk_db_pg_open;
extern const wrk_db_ops_t wrk_db_pg_ops;
#endif

#endif
