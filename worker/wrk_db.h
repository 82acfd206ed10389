/*  wrk_db: the worker's "save" step, behind one interface.

    The loop never touches a database itself. It talks to a wrk_db_t, whose
    implementation is picked by the URL's scheme (wrk_db_new):

      sqlite:PATH                 wrk_db_sqlite.c: a thread (CZMQ actor)
                                  that owns the sqlite3 handle; the loop
                                  watches the actor's pipe (a zsock).
      postgresql://... postgres://...
                                  wrk_db_pg.c: libpq's asynchronous API in
                                  the loop's own thread; the loop watches
                                  the connection's socket (PQsocket, an fd).

    The loop side, in order, for every handler:

      1. wrk_db_save () and wrk_db_outcome () queue work locally; they never
         block and never report a result.
      2. wrk_db_flush () hands what is queued to the store (one message to
         the thread; one pipeline write to PostgreSQL). After every handler.
      3. wrk_db_watch () says what the loop must poll now: a zsock (readable),
         an fd (with ZMQ_POLLIN and/or ZMQ_POLLOUT), or nothing. It may
         change after any call into wrk_db (a PostgreSQL reconnect has a new
         socket; a pipeline with unsent bytes also wants ZMQ_POLLOUT), so the
         loop reads it again after every call and re-registers its poller
         when it differs from what it registered.
      4. wrk_db_next_wake () says when the store wants to be serviced even if
         nothing is ready (a reconnect backoff, a flush deadline), or -1.
         mandrill-worker checks it every 100 ms (its housekeeping timer),
         so a wake time is honoured within 100 ms, never early.
      5. When the watched thing is ready, or the wake time has come, the
         loop calls wrk_db_service (), which does what can be done without
         blocking and reports results.

    How results are reported (the contract every implementation keeps):

      - Every save accepted by wrk_db_save () (it returned 0) is reported
        exactly once, through the done callback given to wrk_db_service (),
        with the message_id and token given to wrk_db_save (); unless the
        store is destroyed first, which drops unreported results.
      - done is called ONLY from inside wrk_db_service (), never from
        save, outcome, flush or destroy; so the callback may queue new
        saves (they go out with the next flush).
      - ok = true means the row is committed and durable as the
        implementation's header promises (SQLite: survives power loss,
        see wrk_db_sqlite.h; PostgreSQL: the server confirmed the COMMIT).
        The worker acks a delivery only after its save reported ok.
      - ok = false means this save is not known to be stored; error says
        why (text valid during the call). The caller retries with backoff
        (wrk_job); a retry is an upsert on message_id, so a save that did
        land after all is counted twice in "saves", never duplicated.
      - A store that cannot reach its database (PostgreSQL down) either
        keeps saves queued and reports them when it can, or reports them
        failed; it never blocks the loop and never reports ok for a row not
        committed. It reports failures within a bounded time (its header
        says which), so the worker's save retries and lease extension stay
        in charge.
      - Outcome updates have no result; a failed one is logged by the
        implementation and lost (the row keeps restart_outcome NULL).
      - wrk_db_service () returns the number of saves reported by this call
        (0 is fine: nothing was ready; a spurious wake-up is harmless). A
        store that breaks for good reports every pending save failed and
        keeps failing new ones at the next service; it never leaves a save
        unreported, so no job waits for its time ceiling because of it.

    The saved row (both stores keep the same columns; schema version 3):

      message_id        canonical uuid, primary key; a redelivered save is
                        an upsert (attempt, worker, times updated, saves+1)
      instance_name     RFC 1123 label
      hostname          DNS name
      attributes        the request's attributes as JSON text, or NULL
                        (PostgreSQL: JSONB)
      attempt           delivery attempt of the last save
      worker            who saved it: the name of the worker's own key
                        (its --curve-cert's metadata name) when it runs
                        with CURVE, else its --name (wrk_worker_db_name)
      received_at       unix ms the worker got the delivery
      saved_at          unix ms of the save (the store's clock at commit)
      restart_outcome   NULL until known: "restarted", or the failure text
      outcome_at        unix ms the restart outcome was recorded, or NULL
      saves             how many times it was saved (1 normally)
      publisher         the authenticated name of the publisher's key, as
                        the broker's DELIVER said (the worker declares the
                        "publisher" feature), or NULL without CURVE
                        (schema 3; a version 1 or 2 file is migrated when
                        opened, its old rows NULL)

    Cost: save and outcome copy their strings (O(length)); flush is O(1)
    for SQLite (a pointer message) and O(rows) bytes for PostgreSQL.

    Adding a store: write wrk_db_NAME.c and wrk_db_NAME.h, the header
    declaring exactly

        wrk_db_open_fn wrk_db_NAME_open;
        extern const wrk_db_ops_t wrk_db_NAME_ops;

    and add its line to the scheme table in wrk_db.c. The PostgreSQL lines
    are there already, compiled when MANDRILL_WITH_PG is defined:
    worker/CMakeLists.txt defines it, and links libpq, when
    worker/wrk_db_pg.c exists. Tests may also wrap any ops table (fault
    injection) with wrk_db_new_with ().
*/
#ifndef WRK_DB_H_INCLUDED
#define WRK_DB_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _wrk_db_t wrk_db_t;

//  One save, as the loop hands it over. Every pointer is valid only during
//  wrk_db_save (); the store copies what it keeps.
typedef struct {
    const char *message_id;     //  Canonical uuid (36 characters)
    uint64_t token;             //  Echoed back with the result
    const char *instance_name;  //  RFC 1123 label
    const char *hostname;       //  DNS name
    const char *attributes;     //  JSON object text, or NULL when the request had none
    size_t attributes_size;     //  Bytes of attributes (not null-terminated necessarily)
    int64_t attempt;            //  Delivery attempt
    int64_t received_wall_ms;   //  Unix ms the worker got the delivery
    const char *publisher;      //  The publisher's authenticated name (DELIVER), or NULL
} wrk_db_row_t;

//  What the loop must poll now. At most one of sock and fd is set; neither
//  means "nothing to watch, rely on wrk_db_next_wake ()".
typedef struct {
    zsock_t *sock;              //  Poll for ZMQ_POLLIN, or NULL
    int fd;                     //  Poll for events, or -1
    short events;               //  For fd: ZMQ_POLLIN and/or ZMQ_POLLOUT
} wrk_db_watch_t;

//  A save's result; see "How results are reported" above.
typedef void (wrk_db_done_fn) (void *arg, const char *message_id, uint64_t token,
                               bool ok, const char *error);

//  What an implementation provides. self is what its constructor returned.
typedef struct {
    const char *name;           //  "sqlite", "postgresql": for logs
    //  Queue one save. Returns 0, or -1 (out of memory; nothing queued, no
    //  result will come).
    int (*save) (void *self, const wrk_db_row_t *row);
    //  Queue an update of a saved row's restart outcome and outcome_at.
    //  Returns 0 or -1 (out of memory).
    int (*outcome) (void *self, const char *message_id, const char *outcome,
                    int64_t outcome_wall_ms);
    //  Hand what is queued to the store; no-op when nothing is. Returns 0,
    //  or -1 when it could not (kept, tried again at the next flush).
    int (*flush) (void *self);
    //  What to poll now (see wrk_db_watch_t). Never fails.
    void (*watch) (void *self, wrk_db_watch_t *watch);
    //  Monotonic ms (zclock_mono) at which to call service even if nothing
    //  is ready, or -1.
    int64_t (*next_wake) (void *self);
    //  Do what is possible without blocking; report results. Returns the
    //  number of saves reported (>= 0).
    int (*service) (void *self, wrk_db_done_fn *done, void *arg);
    //  Saves handed over (flushed) and not yet reported.
    size_t (*pending) (void *self);
    //  Commit what is queued if the store can within a few seconds (bounded),
    //  close, free, null *self_p. Unreported results are dropped.
    void (*destroy) (void **self_p);
} wrk_db_ops_t;

//  An implementation's constructor. target is what follows the scheme
//  table's rule (SQLite: the path after "sqlite:"; PostgreSQL: the whole
//  URL, for PQconnectStart). Returns NULL with a reason in error (never
//  containing a password).
typedef void *(wrk_db_open_fn) (const char *target, const char *worker_name,
                                char *error, size_t error_size);

//  Check a --db URL without opening anything: a known scheme with a usable
//  target. Returns 0, or -1 with a reason in error.
int wrk_db_check_url (const char *url, char *error, size_t error_size);

//  The URL with any password replaced by "***", for logs.
void wrk_db_url_redact (const char *url, char *out, size_t out_size);

//  Open the store the URL names. Returns NULL, with a reason in error,
//  when the URL is unknown or the store cannot be opened (file, schema
//  version, connection refused at start).
wrk_db_t *wrk_db_new (const char *url, const char *worker_name,
                      char *error, size_t error_size);

//  Wrap an implementation already opened (tests, fault injection).
//  Takes ownership of impl. Returns NULL when out of memory (impl destroyed).
wrk_db_t *wrk_db_new_with (const wrk_db_ops_t *ops, void *impl);

//  See wrk_db_ops_t destroy. Safe twice; nulls *self_p.
void wrk_db_destroy (wrk_db_t **self_p);

//  The loop's calls, forwarded to the implementation (see wrk_db_ops_t).
int wrk_db_save (wrk_db_t *self, const wrk_db_row_t *row);
int wrk_db_outcome (wrk_db_t *self, const char *message_id, const char *outcome,
                    int64_t outcome_wall_ms);
int wrk_db_flush (wrk_db_t *self);
void wrk_db_watch (wrk_db_t *self, wrk_db_watch_t *watch);
int64_t wrk_db_next_wake (wrk_db_t *self);
int wrk_db_service (wrk_db_t *self, wrk_db_done_fn *done, void *arg);
size_t wrk_db_pending (wrk_db_t *self);
const char *wrk_db_name (wrk_db_t *self);

#endif
