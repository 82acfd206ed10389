/*  wrk_db_sqlite: the SQLite store behind wrk_db.h ("sqlite:PATH").

    The contract every store keeps (results, the row) is in wrk_db.h; this
    is what SQLite adds. The loop watches the actor's pipe (a zsock);
    next_wake is always -1.

    The database is a CZMQ actor (zactor) that owns the sqlite3 handle; the
    loop never touches the disk. The loop queues saves and outcome updates
    in a local batch (save, outcome) and hands the whole batch over with
    flush (one pointer message on the actor pipe).
    The thread drains every batch waiting on its pipe, writes them all in
    ONE transaction (group commit: the transaction grows with the load, so
    at high rates a commit covers thousands of rows, at low rates a row is
    on disk within a millisecond or two), then sends each batch back with
    its results; service reports them (never blocking: it reads only
    while the pipe is readable, at most 256 batches per call). A failed
    transaction is rolled back and every save of it is reported failed with SQLite's
    message (the worker's core retries with backoff).

    Several workers may share one file, and may all start at the same
    moment on a file that does not exist yet. The busy timeout (5 s) is
    set before anything else touches the file, and because SQLite answers
    SQLITE_BUSY without waiting in some cases (two connections racing to
    create the file or switch it to WAL, WAL recovery), every locking
    statement is also retried with a short growing sleep: set-up for up to
    30 s (then wrk_db_sqlite_open fails), a batch's BEGIN IMMEDIATE and
    COMMIT for up to 10 s (then the batch fails and the core retries the saves). The
    schema is checked and created in one write transaction.

    On disk (schema version 3, PRAGMA user_version = 3; the columns are
    those of wrk_db.h "The saved row"):

      CREATE TABLE restarts (
          message_id      TEXT PRIMARY KEY,   -- a redelivered save is an upsert
          instance_name   TEXT NOT NULL,
          hostname        TEXT NOT NULL,
          attempt         INTEGER NOT NULL,   -- delivery attempt of the last save
          worker          TEXT NOT NULL,      -- the saving worker's key name, else --name
          received_at     INTEGER NOT NULL,   -- unix ms the worker got the delivery
          saved_at        INTEGER NOT NULL,   -- unix ms of the commit
          restart_outcome TEXT,               -- NULL until known: "restarted", the failure
          saves           INTEGER NOT NULL,   -- how many times it was saved (1 normally)
          attributes      TEXT,               -- since v2: the attributes' JSON text, or NULL
          outcome_at      INTEGER,            -- since v2: unix ms of restart_outcome, or NULL
          publisher       TEXT                -- since v3: the publisher's key name, or NULL
      );

    Versions: 0 (a new file) is created as 3; 1 and 2 are migrated to 3 at
    open, in the same write transaction as the check (ALTER TABLE ADD
    COLUMN: O(1), SQLite does not rewrite the rows; old rows keep NULL in
    the new columns: 1 -> 2 adds attributes and outcome_at, 2 -> 3 publisher);
    any other version is refused (wrk_db_sqlite_open fails with a reason),
    so an older worker never writes a newer file.

    Durability: WAL mode with synchronous = FULL. Under WAL, NORMAL syncs
    only at checkpoints, so the last commits before a power loss can
    vanish, yet the worker acks a request as soon as its save is reported
    committed: an acked request without its row. FULL syncs the WAL at
    every commit. The cost is one fsync per transaction, not per row: the
    thread's group commit puts every batch waiting on its pipe into one
    transaction, so under load an fsync covers thousands of rows. The
    setting is read back at open; a connection that is not FULL fails
    to open.
*/
#ifndef WRK_DB_SQLITE_H_INCLUDED
#define WRK_DB_SQLITE_H_INCLUDED

#include "wrk_db.h"

wrk_db_open_fn wrk_db_sqlite_open;
extern const wrk_db_ops_t wrk_db_sqlite_ops;

//  For tests, on what wrk_db_sqlite_open returned: PRAGMA synchronous as
//  read back at open (2 = FULL), and the schema version migrated from at
//  open (0: none).
int wrk_db_sqlite_synchronous (void *impl);
int wrk_db_sqlite_migrated_from (void *impl);

#endif
