/*  wrk_db_sqlite: see wrk_db_sqlite.h. A batch travels by pointer: the
    loop owns it while filling it, the thread owns it between "BATCH" and
    "DONE", then the loop again until it frees it in s_service ().
*/
#include "wrk_db_sqlite.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "mdl_array.h"
#include "mdl_clock.h"
#include "mdl_log.h"

#define SCHEMA_VERSION 3
#define BUSY_TIMEOUT_MS     5000    //  SQLite's own wait for a lock, per statement
#define SETUP_DEADLINE_MS   30000   //  Opening: retry busy set-up this long
#define WRITE_DEADLINE_MS   10000   //  A batch: retry a busy BEGIN/COMMIT this long

//  One save request and, after the thread, its result.
typedef struct {
    char message_id [37];       //  Canonical uuid
    uint64_t token;             //  Echoed back to the core
    char *instance_name;        //  Owned copy
    char *hostname;             //  Owned copy
    char *attributes;           //  Owned copy of the JSON text, or NULL
    size_t attributes_size;     //  Its bytes
    char *publisher;            //  Owned copy of the publisher's name, or NULL
    int64_t attempt;            //  Delivery attempt
    int64_t received_wall;      //  Unix ms
    bool ok;                    //  Result: committed
} save_t;

//  One outcome update.
typedef struct {
    char message_id [37];       //  Canonical uuid
    char *outcome;              //  Owned copy
    int64_t outcome_wall;       //  Unix ms the outcome was known
} outcome_t;

typedef struct {
    save_t *saves;              //  Save requests
    size_t save_count;          //  Used
    size_t save_capacity;       //  Allocated
    outcome_t *outcomes;        //  Outcome updates
    size_t outcome_count;       //  Used
    size_t outcome_capacity;    //  Allocated
    char error [256];           //  Result: why the transaction failed, or ""
} batch_t;

//  What the thread gets at start and fills before it signals.
typedef struct {
    const char *path;           //  Database file
    const char *worker;         //  Worker name for the rows
    int status;                 //  0 opened, -1 failed
    int synchronous;            //  PRAGMA synchronous read back after setting it
    int migrated_from;          //  Schema version migrated from, or 0
    char error [256];           //  Why it failed
} start_t;

typedef struct {
    zactor_t *actor;            //  The database thread
    batch_t *batch;             //  Being filled by the loop, or NULL
    size_t batches;             //  Batches with the thread
    size_t pending;             //  Saves in those batches
    start_t *start;             //  Start arguments; the thread uses start->worker
} store_t;

static void
s_batch_free (batch_t **batch_p)
{
    batch_t *batch = *batch_p;
    if (batch) {
        for (size_t i = 0; i < batch->save_count; i++) {
            free (batch->saves [i].instance_name);
            free (batch->saves [i].hostname);
            free (batch->saves [i].attributes);
            free (batch->saves [i].publisher);
        }
        for (size_t i = 0; i < batch->outcome_count; i++)
            free (batch->outcomes [i].outcome);
        free (batch->saves);
        free (batch->outcomes);
        free (batch);
        *batch_p = NULL;
    }
}

//  --------------------------------------------------------------------------
//  The thread

typedef struct {
    sqlite3 *db;                //  The handle
    sqlite3_stmt *upsert;       //  Save statement
    sqlite3_stmt *update;       //  Outcome statement
    const char *worker;         //  Name for the rows
} db_thread_t;

//  SQLite returns SQLITE_BUSY without calling the busy handler in a few
//  cases (two connections racing to create a file or to switch it to WAL,
//  WAL recovery, a lock upgrade that could deadlock), so every statement
//  that takes a lock is retried here until a deadline, with a short sleep
//  that grows from 1 ms to 50 ms.
static bool
s_busy (int rc)
{
    return (rc & 0xff) == SQLITE_BUSY || (rc & 0xff) == SQLITE_LOCKED;
}

static void
s_busy_pause (int *pause_ms)
{
    zclock_sleep (*pause_ms);
    if (*pause_ms < 50)
        *pause_ms *= 2;
}

//  sqlite3_exec with retries while busy. Returns SQLite's last code.
static int
s_exec_retry (sqlite3 *db, const char *sql, int64_t deadline)
{
    int pause_ms = 1;
    while (true) {
        int rc = sqlite3_exec (db, sql, NULL, NULL, NULL);
        if (!s_busy (rc) || zclock_mono () >= deadline)
            return rc;
        s_busy_pause (&pause_ms);
    }
}

//  sqlite3_prepare_v2 with retries while busy (preparing reads the schema).
static int
s_prepare_retry (sqlite3 *db, const char *sql, sqlite3_stmt **stmt, int64_t deadline)
{
    int pause_ms = 1;
    while (true) {
        *stmt = NULL;
        int rc = sqlite3_prepare_v2 (db, sql, -1, stmt, NULL);
        if (!s_busy (rc) || zclock_mono () >= deadline)
            return rc;
        s_busy_pause (&pause_ms);
    }
}

//  One-row query returning text into value. Retried while busy.
static int
s_query_text (sqlite3 *db, const char *sql, char *value, size_t size, int64_t deadline)
{
    int pause_ms = 1;
    while (true) {
        sqlite3_stmt *stmt;
        int rc = s_prepare_retry (db, sql, &stmt, deadline);
        if (rc != SQLITE_OK)
            return rc;
        rc = sqlite3_step (stmt);
        if (rc == SQLITE_ROW) {
            const unsigned char *text = sqlite3_column_text (stmt, 0);
            snprintf (value, size, "%s", text ? (const char *) text : "");
            rc = SQLITE_OK;
        }
        else
        if (rc == SQLITE_DONE) {
            value [0] = 0;
            rc = SQLITE_OK;
        }
        sqlite3_finalize (stmt);
        if (!s_busy (rc) || zclock_mono () >= deadline)
            return rc;
        s_busy_pause (&pause_ms);
    }
}

static int
s_open (db_thread_t *self, start_t *start)
{
    if (sqlite3_open_v2 (start->path, &self->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE
                         | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        snprintf (start->error, sizeof start->error, "cannot open %s: %s", start->path,
                  self->db ? sqlite3_errmsg (self->db) : "out of memory");
        return -1;
    }
    //  Before anything else touches the file: several workers may be
    //  creating or opening it at this very moment
    sqlite3_busy_timeout (self->db, BUSY_TIMEOUT_MS);
    int64_t deadline = zclock_mono () + SETUP_DEADLINE_MS;
    char mode [32];
    int rc = s_query_text (self->db, "PRAGMA journal_mode = WAL", mode, sizeof mode, deadline);
    if (rc != SQLITE_OK) {
        snprintf (start->error, sizeof start->error, "cannot set up %s: %s", start->path,
                  sqlite3_errmsg (self->db));
        return -1;
    }
    if (strcasecmp (mode, "wal") != 0)
        mdl_warn ("%s: journal mode is %s, not WAL; writers will block readers",
                  start->path, mode);
    //  FULL: under WAL, NORMAL may lose the last commits on power loss,
    //  and the worker acks a request once its save is reported committed
    rc = s_exec_retry (self->db, "PRAGMA synchronous = FULL", deadline);
    char synchronous [16] = "";
    if (rc == SQLITE_OK)
        rc = s_query_text (self->db, "PRAGMA synchronous", synchronous, sizeof synchronous,
                           deadline);
    start->synchronous = atoi (synchronous);
    if (rc == SQLITE_OK && start->synchronous < 2) {
        snprintf (start->error, sizeof start->error, "%s: synchronous is %d, not FULL (2)",
                  start->path, start->synchronous);
        return -1;
    }
    //  Schema check and creation in one write transaction, so two workers
    //  on a new file never both see version 0 half way
    if (rc == SQLITE_OK)
        rc = s_exec_retry (self->db, "BEGIN IMMEDIATE", deadline);
    if (rc != SQLITE_OK) {
        snprintf (start->error, sizeof start->error, "cannot set up %s: %s", start->path,
                  sqlite3_errmsg (self->db));
        return -1;
    }
    char version [32];
    rc = s_query_text (self->db, "PRAGMA user_version", version, sizeof version, deadline);
    int user_version = rc == SQLITE_OK ? atoi (version) : -1;
    if (rc == SQLITE_OK && user_version == 0)
        rc = sqlite3_exec (self->db,
            "CREATE TABLE IF NOT EXISTS restarts ("
            "  message_id TEXT PRIMARY KEY,"
            "  instance_name TEXT NOT NULL,"
            "  hostname TEXT NOT NULL,"
            "  attempt INTEGER NOT NULL,"
            "  worker TEXT NOT NULL,"
            "  received_at INTEGER NOT NULL,"
            "  saved_at INTEGER NOT NULL,"
            "  restart_outcome TEXT,"
            "  saves INTEGER NOT NULL,"
            "  attributes TEXT,"
            "  outcome_at INTEGER,"
            "  publisher TEXT);"
            "PRAGMA user_version = 3;", NULL, NULL, NULL);
    else
    if (rc == SQLITE_OK && (user_version == 1 || user_version == 2)) {
        //  Version 1 -> 2: attributes and outcome_at; 2 -> 3: publisher.
        //  The new columns are NULL in the old rows. One transaction.
        mdl_info ("%s: migrating schema version %d to 3", start->path, user_version);
        if (user_version == 1)
            rc = sqlite3_exec (self->db,
                "ALTER TABLE restarts ADD COLUMN attributes TEXT;"
                "ALTER TABLE restarts ADD COLUMN outcome_at INTEGER;", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            rc = sqlite3_exec (self->db,
                "ALTER TABLE restarts ADD COLUMN publisher TEXT;"
                "PRAGMA user_version = 3;", NULL, NULL, NULL);
        if (rc == SQLITE_OK)
            start->migrated_from = user_version;
    }
    if (rc == SQLITE_OK && user_version > 2 && user_version != SCHEMA_VERSION) {
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
        snprintf (start->error, sizeof start->error,
                  "%s has schema version %d; this worker knows version %d",
                  start->path, user_version, SCHEMA_VERSION);
        return -1;
    }
    if (rc == SQLITE_OK)
        rc = s_exec_retry (self->db, "COMMIT", deadline);
    if (rc != SQLITE_OK) {
        snprintf (start->error, sizeof start->error, "cannot set up %s: %s", start->path,
                  sqlite3_errmsg (self->db));
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    if (s_prepare_retry (self->db,
            "INSERT INTO restarts (message_id, instance_name, hostname, attempt, worker,"
            " received_at, saved_at, saves, attributes, publisher)"
            " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1, ?8, ?9)"
            " ON CONFLICT (message_id) DO UPDATE SET attempt = excluded.attempt,"
            " worker = excluded.worker, received_at = excluded.received_at,"
            " saved_at = excluded.saved_at, attributes = excluded.attributes,"
            " publisher = excluded.publisher, saves = saves + 1", &self->upsert, deadline) != SQLITE_OK
    ||  s_prepare_retry (self->db,
            "UPDATE restarts SET restart_outcome = ?2, outcome_at = ?3 WHERE message_id = ?1",
            &self->update, deadline) != SQLITE_OK) {
        snprintf (start->error, sizeof start->error, "cannot prepare statements: %s",
                  sqlite3_errmsg (self->db));
        return -1;
    }
    return 0;
}

static void
s_close (db_thread_t *self)
{
    sqlite3_finalize (self->upsert);
    sqlite3_finalize (self->update);
    if (self->db && sqlite3_close (self->db) != SQLITE_OK)
        mdl_error ("closing database: %s", sqlite3_errmsg (self->db));
    self->db = NULL;
}

static int
s_exec_step (sqlite3_stmt *stmt)
{
    int rc = sqlite3_step (stmt);
    sqlite3_reset (stmt);
    return rc == SQLITE_DONE ? 0 : -1;
}

//  Write every batch in one transaction. Returns 0 or -1 (error set in each).
static int
s_write (db_thread_t *self, batch_t **batches, size_t count)
{
    int64_t now = mdl_clock_wall ();
    //  Another worker holding the write lock makes us wait, not fail
    int64_t deadline = zclock_mono () + WRITE_DEADLINE_MS;
    bool failed = s_exec_retry (self->db, "BEGIN IMMEDIATE", deadline) != SQLITE_OK;
    for (size_t b = 0; b < count && !failed; b++) {
        batch_t *batch = batches [b];
        for (size_t i = 0; i < batch->save_count && !failed; i++) {
            save_t *save = &batch->saves [i];
            sqlite3_bind_text (self->upsert, 1, save->message_id, -1, SQLITE_STATIC);
            sqlite3_bind_text (self->upsert, 2, save->instance_name, -1, SQLITE_STATIC);
            sqlite3_bind_text (self->upsert, 3, save->hostname, -1, SQLITE_STATIC);
            sqlite3_bind_int64 (self->upsert, 4, save->attempt);
            sqlite3_bind_text (self->upsert, 5, self->worker, -1, SQLITE_STATIC);
            sqlite3_bind_int64 (self->upsert, 6, save->received_wall);
            sqlite3_bind_int64 (self->upsert, 7, now);
            if (save->attributes)
                sqlite3_bind_text (self->upsert, 8, save->attributes,
                                   (int) save->attributes_size, SQLITE_STATIC);
            else
                sqlite3_bind_null (self->upsert, 8);
            if (save->publisher)
                sqlite3_bind_text (self->upsert, 9, save->publisher, -1, SQLITE_STATIC);
            else
                sqlite3_bind_null (self->upsert, 9);
            failed = s_exec_step (self->upsert) != 0;
        }
        for (size_t i = 0; i < batch->outcome_count && !failed; i++) {
            sqlite3_bind_text (self->update, 1, batch->outcomes [i].message_id, -1, SQLITE_STATIC);
            sqlite3_bind_text (self->update, 2, batch->outcomes [i].outcome, -1, SQLITE_STATIC);
            sqlite3_bind_int64 (self->update, 3, batch->outcomes [i].outcome_wall);
            failed = s_exec_step (self->update) != 0;
        }
    }
    //  A busy COMMIT leaves the transaction open: retrying it is safe
    if (!failed)
        failed = s_exec_retry (self->db, "COMMIT", deadline) != SQLITE_OK;
    const char *error = failed ? sqlite3_errmsg (self->db) : "";
    for (size_t b = 0; b < count; b++) {
        snprintf (batches [b]->error, sizeof batches [b]->error, "%s", error);
        for (size_t i = 0; i < batches [b]->save_count; i++)
            batches [b]->saves [i].ok = !failed;
    }
    if (failed) {
        mdl_warn ("database write failed, rolled back: %s", error);
        sqlite3_exec (self->db, "ROLLBACK", NULL, NULL, NULL);
        return -1;
    }
    return 0;
}

//  Hand a batch back. The loop counts every batch until it comes back,
//  and its jobs wait for the results, so a failed send is retried (the
//  pipe is inproc: only a full queue or the context ending stops it);
//  when the context is ending nobody waits any more.
static void
s_send_done (zsock_t *pipe, batch_t *batch)
{
    int pause_ms = 1;
    while (zsock_send (pipe, "sp", "DONE", batch) != 0) {
        if (errno == ETERM || zsys_interrupted) {
            mdl_error ("database thread: cannot return a batch (%s); dropped",
                       zmq_strerror (errno));
            s_batch_free (&batch);
            return;
        }
        s_busy_pause (&pause_ms);
    }
}

static void
s_db_actor (zsock_t *pipe, void *args)
{
    start_t *start = (start_t *) args;
    db_thread_t self = { .worker = start->worker };
    start->status = s_open (&self, start);
    zsock_signal (pipe, 0);
    if (start->status != 0)
        s_close (&self);

    size_t capacity = 0;
    batch_t **batches = NULL;
    bool terminated = false;
    while (!terminated) {
        char *command = NULL;
        void *pointer = NULL;
        if (zsock_recv (pipe, "sp", &command, &pointer) != 0)
            break;              //  Interrupted
        size_t count = 0;
        //  Take this batch and every batch already waiting: one commit
        while (command) {
            if (streq (command, "$TERM"))
                terminated = true;
            else
            if (streq (command, "BATCH") && pointer) {
                if (mdl_array_reserve (&batches, &capacity, count + 1, sizeof *batches) == 0)
                    batches [count++] = pointer;
                else {
                    batch_t *batch = pointer;
                    snprintf (batch->error, sizeof batch->error, "out of memory");
                    s_send_done (pipe, batch);
                }
            }
            zstr_free (&command);
            pointer = NULL;
            if (!(zsock_events (pipe) & ZMQ_POLLIN))
                break;
            if (zsock_recv (pipe, "sp", &command, &pointer) != 0)
                break;
        }
        if (count == 0)
            continue;
        if (self.db)
            s_write (&self, batches, count);
        else
            for (size_t b = 0; b < count; b++)
                snprintf (batches [b]->error, sizeof batches [b]->error, "database not open");
        for (size_t b = 0; b < count; b++)
            s_send_done (pipe, batches [b]);
    }
    free (batches);
    s_close (&self);
}

//  --------------------------------------------------------------------------
//  The loop side

void *
wrk_db_sqlite_open (const char *path, const char *worker_name, char *error, size_t error_size)
{
    store_t *self = calloc (1, sizeof *self);
    start_t *start = calloc (1, sizeof *start);
    char *worker = strdup (worker_name);
    char *path_copy = strdup (path);
    if (!self || !start || !worker || !path_copy) {
        snprintf (error, error_size, "out of memory");
        free (self);
        free (start);
        free (worker);
        free (path_copy);
        return NULL;
    }
    start->path = path_copy;
    start->worker = worker;
    //  zactor_new returns after the thread signalled, so start->status is set
    self->actor = zactor_new (s_db_actor, start);
    int status = self->actor ? start->status : -1;
    if (status != 0) {
        snprintf (error, error_size, "%s", self->actor ? start->error
                                                      : "cannot start the database thread");
        zactor_destroy (&self->actor);
        free (worker);
        free (path_copy);
        free (start);
        free (self);
        return NULL;
    }
    free (path_copy);
    start->path = NULL;
    self->start = start;    //  The thread keeps using start->worker
    return self;
}

static void
s_ignore (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    (void) arg, (void) message_id, (void) token, (void) ok, (void) error;
}

static int s_flush (void *self_);
static int s_recv (store_t *self, wrk_db_done_fn *done, void *arg);

static void
s_destroy (void **self_p)
{
    assert (self_p);
    if (*self_p) {
        store_t *self = *self_p;
        s_flush (self);
        //  Wait for the batches still with the thread (written before it
        //  reads $TERM anyway) so their memory comes back
        zsock_set_rcvtimeo (self->actor, 10000);
        while (self->batches > 0 && s_recv (self, s_ignore, NULL) >= 0)
            ;
        zactor_destroy (&self->actor);
        s_batch_free (&self->batch);
        if (self->start)
            free ((char *) self->start->worker);
        free (self->start);
        free (self);
        *self_p = NULL;
    }
}

static batch_t *
s_batch (store_t *self)
{
    if (!self->batch)
        self->batch = calloc (1, sizeof (batch_t));
    return self->batch;
}

static int
s_save (void *self_, const wrk_db_row_t *row)
{
    store_t *self = self_;
    batch_t *batch = s_batch (self);
    if (!batch)
        return -1;
    if (mdl_array_reserve (&batch->saves, &batch->save_capacity, batch->save_count + 1,
                           sizeof *batch->saves) != 0)
        return -1;
    save_t *save = &batch->saves [batch->save_count];
    memset (save, 0, sizeof *save);
    snprintf (save->message_id, sizeof save->message_id, "%s", row->message_id);
    save->token = row->token;
    save->instance_name = strdup (row->instance_name);
    save->hostname = strdup (row->hostname);
    save->attempt = row->attempt;
    save->received_wall = row->received_wall_ms;
    if (row->attributes && row->attributes_size <= INT_MAX) {
        save->attributes = malloc (row->attributes_size + 1);
        if (save->attributes) {
            memcpy (save->attributes, row->attributes, row->attributes_size);
            save->attributes [row->attributes_size] = 0;
            save->attributes_size = row->attributes_size;
        }
    }
    save->publisher = row->publisher ? strdup (row->publisher) : NULL;
    if (!save->instance_name || !save->hostname || (row->attributes && !save->attributes)
    ||  (row->publisher && !save->publisher)) {
        free (save->instance_name);
        free (save->hostname);
        free (save->attributes);
        free (save->publisher);
        return -1;
    }
    batch->save_count++;
    return 0;
}

static int
s_outcome (void *self_, const char *message_id, const char *outcome, int64_t outcome_wall_ms)
{
    store_t *self = self_;
    batch_t *batch = s_batch (self);
    if (!batch)
        return -1;
    if (mdl_array_reserve (&batch->outcomes, &batch->outcome_capacity, batch->outcome_count + 1,
                           sizeof *batch->outcomes) != 0)
        return -1;
    outcome_t *entry = &batch->outcomes [batch->outcome_count];
    snprintf (entry->message_id, sizeof entry->message_id, "%s", message_id);
    entry->outcome = strdup (outcome);
    entry->outcome_wall = outcome_wall_ms;
    if (!entry->outcome)
        return -1;
    batch->outcome_count++;
    return 0;
}

static int
s_flush (void *self_)
{
    store_t *self = self_;
    if (!self->batch || (self->batch->save_count == 0 && self->batch->outcome_count == 0))
        return 0;
    if (zsock_send (self->actor, "sp", "BATCH", self->batch) != 0)
        return -1;          //  Kept: sent with the next flush
    self->pending += self->batch->save_count;
    self->batch = NULL;
    self->batches++;
    return 0;
}

static void
s_watch (void *self_, wrk_db_watch_t *watch)
{
    store_t *self = self_;
    watch->sock = zactor_sock (self->actor);
}

static int64_t
s_next_wake (void *self_)
{
    (void) self_;
    return -1;
}

//  Read one result batch (blocking up to the pipe's receive timeout) and
//  report each save. Returns the number reported, or -1 when nothing was read.
static int
s_recv (store_t *self, wrk_db_done_fn *done, void *arg)
{
    char *command = NULL;
    void *pointer = NULL;
    if (zsock_recv (self->actor, "sp", &command, &pointer) != 0)
        return -1;
    batch_t *batch = pointer;
    int reported = -1;
    if (command && streq (command, "DONE") && batch) {
        self->batches--;
        self->pending -= batch->save_count;
        reported = 0;
        for (size_t i = 0; i < batch->save_count; i++, reported++)
            done (arg, batch->saves [i].message_id, batch->saves [i].token,
                  batch->saves [i].ok, batch->error);
        s_batch_free (&batch);
    }
    zstr_free (&command);
    return reported;
}

#define MAX_SERVICE_BATCHES 256     //  Per call, so other readers get their turn

static int
s_service (void *self_, wrk_db_done_fn *done, void *arg)
{
    store_t *self = self_;
    int reported = 0;
    for (int i = 0; i < MAX_SERVICE_BATCHES && self->batches > 0
                    && (zsock_events (self->actor) & ZMQ_POLLIN); i++) {
        int rc = s_recv (self, done, arg);
        if (rc < 0)
            break;
        reported += rc;
    }
    return reported;
}

static size_t
s_pending (void *self_)
{
    store_t *self = self_;
    return self->pending;
}

const wrk_db_ops_t wrk_db_sqlite_ops = {
    .name = "sqlite",
    .save = s_save,
    .outcome = s_outcome,
    .flush = s_flush,
    .watch = s_watch,
    .next_wake = s_next_wake,
    .service = s_service,
    .pending = s_pending,
    .destroy = s_destroy
};

int
wrk_db_sqlite_synchronous (void *self_)
{
    store_t *self = self_;
    return self->start->synchronous;
}

int
wrk_db_sqlite_migrated_from (void *self_)
{
    store_t *self = self_;
    return self->start->migrated_from;
}
