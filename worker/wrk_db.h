/*  wrk_db: the worker's "save" step, SQLite written from its own thread.

    The database is a CZMQ actor (zactor) that owns the sqlite3 handle; the
    loop never touches the disk. The loop queues saves and outcome updates
    in a local batch (wrk_db_save, wrk_db_outcome) and hands the whole
    batch over with wrk_db_flush (one pointer message on the actor pipe).
    The thread drains every batch waiting on its pipe, writes them all in
    ONE transaction (group commit: the transaction grows with the load, so
    at high rates a commit covers thousands of rows, at low rates a row is
    on disk within a millisecond or two), then sends each batch back with
    its results; wrk_db_recv () reports them. A failed transaction is
    rolled back and every save of it is reported failed with SQLite's
    message (the worker's core retries with backoff).

    Several workers may share one file, and may all start at the same
    moment on a file that does not exist yet. The busy timeout (5 s) is
    set before anything else touches the file, and because SQLite answers
    SQLITE_BUSY without waiting in some cases (two connections racing to
    create the file or switch it to WAL, WAL recovery), every locking
    statement is also retried with a short growing sleep: set-up for up to
    30 s (then wrk_db_new fails), a batch's BEGIN IMMEDIATE and COMMIT for
    up to 10 s (then the batch fails and the core retries the saves). The
    schema is checked and created in one write transaction.

    On disk (schema version 1, PRAGMA user_version = 1; WAL mode,
    synchronous NORMAL):

      CREATE TABLE restarts (
          message_id      TEXT PRIMARY KEY,   -- a redelivered save is an upsert
          instance_name   TEXT NOT NULL,
          hostname        TEXT NOT NULL,
          attempt         INTEGER NOT NULL,   -- delivery attempt of the last save
          worker          TEXT NOT NULL,      -- --name of the worker that saved
          received_at     INTEGER NOT NULL,   -- unix ms the worker got the delivery
          saved_at        INTEGER NOT NULL,   -- unix ms of the commit
          restart_outcome TEXT,               -- NULL until known: "restarted", the failure
          saves           INTEGER NOT NULL    -- how many times it was saved (1 normally)
      );

    Only "sqlite:PATH" URLs are accepted for now; wrk_db_parse_url says so
    clearly for anything else (PostgreSQL comes later).
*/
#ifndef WRK_DB_H_INCLUDED
#define WRK_DB_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

typedef struct _wrk_db_t wrk_db_t;

//  "sqlite:PATH" -> PATH. Returns 0, or -1 with a reason in error.
int wrk_db_parse_url (const char *url, char *path, size_t path_size,
                      char *error, size_t error_size);

//  Open (create) the database at path in a new thread. Returns NULL, with a
//  reason in error, when it cannot be opened or its schema is unknown.
wrk_db_t *wrk_db_new (const char *path, const char *worker_name,
                      char *error, size_t error_size);

//  Send what is queued, let the thread commit what it holds, close the
//  database and join the thread. Results not yet read are dropped.
void wrk_db_destroy (wrk_db_t **self_p);

//  Queue a save of one message; token comes back with its result.
//  Returns 0 or -1 (out of memory).
int wrk_db_save (wrk_db_t *self, const char *message_id, uint64_t token,
                 const char *instance_name, const char *hostname,
                 int64_t attempt, int64_t received_wall_ms);

//  Queue an update of a saved message's restart outcome (no result).
int wrk_db_outcome (wrk_db_t *self, const char *message_id, const char *outcome);

//  Hand the queued batch to the thread (no-op when empty). Returns 0 or -1.
int wrk_db_flush (wrk_db_t *self);

//  The socket to watch for results (the actor).
zactor_t *wrk_db_actor (wrk_db_t *self);

//  Read one result batch and report each save. Returns the number of saves
//  reported, or -1 when nothing was read.
typedef void (wrk_db_done_fn) (void *arg, const char *message_id, uint64_t token,
                               bool ok, const char *error);
int wrk_db_recv (wrk_db_t *self, wrk_db_done_fn *done, void *arg);

//  Batches handed over and not yet answered.
size_t wrk_db_pending (wrk_db_t *self);

#endif
