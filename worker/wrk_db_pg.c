/*  wrk_db_pg: see wrk_db_pg.h. Batches move through three lists: queued
    (flushed, not sent), inflight (sent, waiting for their group's sync)
    and done (fate known, waiting for wrk_db_pg_recv). The last batch of a
    group carries ends_group; the group's PGRES_PIPELINE_SYNC settles every
    batch up to it.

    About 900 lines, over the house limit on purpose: it is one state
    machine over one connection (connect, set-up, pipeline, results,
    breakage), and every part of it changes the same fields; the schema
    and its statements are apart, in wrk_db_pg_schema.c, and the store
    interface's adapter in wrk_db_pg_ops.c.
*/
#include "wrk_db_pg.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <czmq.h>
#include <inttypes.h>
#include <libpq-fe.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_array.h"
#include "mdl_log.h"
#include "wrk_db_pg_schema.h"

#define BACKOFF_MIN_MS      100     //  First reconnect delay
#define BACKOFF_MAX_MS      2000    //  Reconnect delay cap
#define CONNECT_TIMEOUT_MS  10000   //  One connection attempt, and its set-up
#define ANSWER_TIMEOUT_MS   30000   //  No answer to a group in flight this long: reconnect
#define STARTUP_TIMEOUT_MS  10000   //  wrk_db_pg_new waits this long
#define DESTROY_WAIT_MS     5000    //  wrk_db_pg_destroy waits this long for answers
#define MAX_GROUPS          2       //  Syncs (commits) in flight at once
#define GROUP_SAVES         2000    //  A group stops taking batches past this many saves
#define OUTCOME_TRIES       10      //  An outcome update is sent at most this often
#define STATEMENT_ROWS      1000    //  Rows per upsert statement, at most
#define COLUMNS             7       //  Array parameters of the upsert

//  One save request.
typedef struct {
    char message_id [37];       //  Canonical uuid
    uint64_t token;             //  Echoed back to the core
    char *instance_name;        //  Owned copy
    char *hostname;             //  Owned copy
    char *attributes;           //  Owned copy of the JSON text, or NULL
    char *publisher;            //  Owned copy of the publisher's name, or NULL
    int64_t attempt;            //  Delivery attempt
    int64_t received_wall;      //  Unix ms
} save_t;

//  One outcome update.
typedef struct {
    char message_id [37];       //  Canonical uuid
    char *outcome;              //  Owned copy
    int64_t wall;               //  Unix ms it was recorded
    int tries;                  //  Times sent so far
} outcome_t;

typedef struct _batch_t batch_t;
struct _batch_t {
    save_t *saves;              //  Save requests
    size_t save_count;          //  Used
    size_t save_capacity;       //  Allocated
    outcome_t *outcomes;        //  Outcome updates
    size_t outcome_count;       //  Used
    size_t outcome_capacity;    //  Allocated
    bool ends_group;            //  The group's sync follows this batch
    bool ok;                    //  Result: committed
    char error [256];           //  Result: why not, or ""
    batch_t *next;              //  In its list
};

typedef struct {
    batch_t *head;              //  Oldest
    batch_t *tail;              //  Newest
} list_t;

typedef enum { S_DOWN, S_CONNECTING, S_SETUP, S_READY } state_t;

//  A growing text buffer.
typedef struct {
    char *data;                 //  Text, null-terminated when used > 0
    size_t used;                //  Bytes used
    size_t size;                //  Bytes allocated
} text_t;

struct _wrk_db_pg_t {
    char *url;                  //  As given; holds the password, never logged
    char masked [512];          //  The URL for logs and errors
    char *worker;               //  Worker name for the rows
    char app_name [64];         //  application_name of the connection
    mdl_clock_t clock;          //  For backoff and timeouts
    PGconn *conn;               //  The connection, NULL when DOWN
    state_t state;              //  Where the state machine is
    PostgresPollingStatusType poll; //  CONNECTING: what PQconnectPoll waits for
    bool want_write;            //  SETUP/READY: PQflush left output
    bool starting;              //  Inside wrk_db_pg_new: no reconnect logs
    int64_t deadline;           //  CONNECTING/SETUP: give up; READY with groups: answer due
    int64_t reconnect_at;       //  DOWN: next attempt
    int64_t backoff;            //  Delay after the next failure
    batch_t *batch;             //  Being filled, or NULL
    list_t queued;              //  Flushed, not sent
    list_t inflight;            //  Sent, waiting for their sync
    list_t done;                //  Settled, waiting for recv
    size_t groups;              //  Syncs in flight
    bool group_failed;          //  The group being answered had an error
    char group_error [256];     //  Its first error
    size_t pending;             //  Saves flushed and not reported
    char last_error [256];      //  Why the connection went down
    text_t columns [COLUMNS];   //  Array literals of the upsert being built
    size_t rows;                //  Rows in them
    zhashx_t *row_ids;          //  Message ids in them (keys borrowed)
};

static void s_broken (wrk_db_pg_t *self, const char *reason);

//  --------------------------------------------------------------------------
//  Helpers

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

static void
s_list_push (list_t *list, batch_t *batch)
{
    batch->next = NULL;
    if (list->tail)
        list->tail->next = batch;
    else
        list->head = batch;
    list->tail = batch;
}

static batch_t *
s_list_pop (list_t *list)
{
    batch_t *batch = list->head;
    if (batch) {
        list->head = batch->next;
        if (!list->head)
            list->tail = NULL;
        batch->next = NULL;
    }
    return batch;
}

static void
s_list_free (list_t *list)
{
    batch_t *batch;
    while ((batch = s_list_pop (list)))
        s_batch_free (&batch);
}

//  libpq's messages end in a newline and may span lines: make one line.
static void
s_one_line (char *out, size_t size, const char *text)
{
    snprintf (out, size, "%s", text && *text ? text : "unknown error");
    char *to = out;
    for (const char *from = out; *from; from++) {
        bool blank = *from == ' ' || *from == '\n' || *from == '\t' || *from == '\r';
        if (!blank)
            *to++ = *from;
        else
        if (to > out && to [-1] != ' ')
            *to++ = ' ';
    }
    while (to > out && to [-1] == ' ')
        to--;
    *to = 0;
}

static int64_t
s_now (wrk_db_pg_t *self)
{
    return mdl_clock_now (&self->clock);
}

static batch_t *
s_batch (wrk_db_pg_t *self)
{
    if (!self->batch)
        self->batch = calloc (1, sizeof (batch_t));
    return self->batch;
}

static int
s_add_outcome (batch_t *batch, const char *message_id, char *outcome, int64_t wall, int tries)
{
    if (mdl_array_reserve (&batch->outcomes, &batch->outcome_capacity, batch->outcome_count + 1,
                           sizeof *batch->outcomes) != 0)
        return -1;
    outcome_t *entry = &batch->outcomes [batch->outcome_count++];
    snprintf (entry->message_id, sizeof entry->message_id, "%s", message_id);
    entry->outcome = outcome;
    entry->wall = wall;
    entry->tries = tries;
    return 0;
}

//  The outcome updates of a batch that failed go into the open batch
//  again, unless they were tried often enough.
static void
s_requeue_outcomes (wrk_db_pg_t *self, batch_t *failed)
{
    for (size_t i = 0; i < failed->outcome_count; i++) {
        outcome_t *entry = &failed->outcomes [i];
        batch_t *batch = entry->tries < OUTCOME_TRIES ? s_batch (self) : NULL;
        if (batch && s_add_outcome (batch, entry->message_id, entry->outcome,
                                    entry->wall, entry->tries) == 0)
            entry->outcome = NULL;      //  Moved
        else
            mdl_warn ("restart outcome of %s not recorded in PostgreSQL: %s",
                      entry->message_id, failed->error);
    }
}

static void
s_settle (wrk_db_pg_t *self, batch_t *batch, bool ok, const char *error)
{
    batch->ok = ok;
    //  A longer error is cut short: it is only logged
    const char *text = ok || !error ? "" : error;
    size_t length = strnlen (text, sizeof batch->error - 1);
    memcpy (batch->error, text, length);
    batch->error [length] = 0;
    if (!ok)
        s_requeue_outcomes (self, batch);
    s_list_push (&self->done, batch);
}

char *
wrk_db_pg_mask_url (const char *url, char *out, size_t out_size)
{
    snprintf (out, out_size, "%s", url ? url : "");
    char *authority = strstr (out, "://");
    if (authority) {
        authority += 3;
        size_t end = strcspn (authority, "/?");
        char *at = memrchr (authority, '@', end);
        char *colon = at ? memchr (authority, ':', (size_t) (at - authority)) : NULL;
        if (colon && (size_t) (at - colon) > 1) {
            char rest [512];
            snprintf (rest, sizeof rest, "%s", at);
            snprintf (colon + 1, out_size - (size_t) (colon + 1 - out), "***%s", rest);
        }
    }
    //  password=... as a query parameter
    char *query = strchr (out, '?');
    for (char *p = query; p && *p; ) {
        p++;
        if (strncmp (p, "password=", 9) == 0) {
            char *value = p + 9;
            char rest [512];
            snprintf (rest, sizeof rest, "%s", value + strcspn (value, "&"));
            snprintf (value, out_size - (size_t) (value - out), "***%s", rest);
        }
        p = strchr (p, '&');
    }
    return out;
}

bool
wrk_db_pg_handles (const char *url)
{
    return url && (strncmp (url, "postgresql://", 13) == 0 || strncmp (url, "postgres://", 11) == 0);
}

static void
s_notice (void *arg, const char *message)
{
    (void) arg;
    char line [512];
    s_one_line (line, sizeof line, message);
    mdl_info ("PostgreSQL: %s", line);
}

//  --------------------------------------------------------------------------
//  Connection

static void
s_connect_start (wrk_db_pg_t *self)
{
    const char *keys [] = { "keepalives", "keepalives_idle", "keepalives_interval",
                            "keepalives_count", "application_name", "client_encoding",
                            "dbname", NULL };
    //  dbname last: the URL it expands to overrides the defaults before it
    const char *values [] = { "1", "10", "5", "3", self->app_name, "UTF8", self->url, NULL };
    self->conn = PQconnectStartParams (keys, values, 1);
    if (!self->conn) {
        s_broken (self, "out of memory");
        return;
    }
    if (PQstatus (self->conn) == CONNECTION_BAD) {
        s_broken (self, PQerrorMessage (self->conn));
        return;
    }
    PQsetNoticeProcessor (self->conn, s_notice, NULL);
    self->state = S_CONNECTING;
    self->poll = PGRES_POLLING_WRITING;
    self->deadline = s_now (self) + CONNECT_TIMEOUT_MS;
}

//  Write what libpq holds. Returns 0, or -1 when the connection broke.
static int
s_flush_out (wrk_db_pg_t *self)
{
    int rc = PQflush (self->conn);
    if (rc < 0) {
        s_broken (self, PQerrorMessage (self->conn));
        return -1;
    }
    self->want_write = rc == 1;
    return 0;
}

static void
s_connect_poll (wrk_db_pg_t *self)
{
    self->poll = PQconnectPoll (self->conn);
    if (self->poll == PGRES_POLLING_FAILED)
        s_broken (self, PQerrorMessage (self->conn));
    else
    if (self->poll == PGRES_POLLING_OK) {
        if (PQsetnonblocking (self->conn, 1) != 0
        ||  PQsendQuery (self->conn, wrk_db_pg_setup_sql) != 1) {
            s_broken (self, PQerrorMessage (self->conn));
            return;
        }
        self->state = S_SETUP;
        self->group_failed = false;
        self->deadline = s_now (self) + CONNECT_TIMEOUT_MS;
        s_flush_out (self);
    }
}

static void s_send (wrk_db_pg_t *self);

static void
s_setup_read (wrk_db_pg_t *self)
{
    if (PQconsumeInput (self->conn) != 1) {
        s_broken (self, PQerrorMessage (self->conn));
        return;
    }
    while (!PQisBusy (self->conn)) {
        PGresult *result = PQgetResult (self->conn);
        if (!result) {
            //  Every statement answered
            if (self->group_failed) {
                char reason [300];
                snprintf (reason, sizeof reason, "schema set-up failed: %s", self->group_error);
                self->group_failed = false;
                s_broken (self, reason);
                return;
            }
            if (PQenterPipelineMode (self->conn) != 1) {
                s_broken (self, PQerrorMessage (self->conn));
                return;
            }
            self->state = S_READY;
            self->backoff = BACKOFF_MIN_MS;
            self->last_error [0] = 0;
            self->groups = 0;
            mdl_info ("Saving to PostgreSQL %s (schema version %d, server %d)",
                      self->masked, WRK_DB_PG_SCHEMA_VERSION, PQserverVersion (self->conn));
            //  Outcome updates kept over the outage go now
            wrk_db_pg_flush (self);
            s_send (self);
            return;
        }
        ExecStatusType status = PQresultStatus (result);
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK && !self->group_failed) {
            self->group_failed = true;
            s_one_line (self->group_error, sizeof self->group_error,
                        PQresultErrorMessage (result));
        }
        PQclear (result);
    }
}

//  The connection is gone or unusable: fail what is in flight and queued,
//  close, and wait for the backoff.
static void
s_broken (wrk_db_pg_t *self, const char *reason)
{
    s_one_line (self->last_error, sizeof self->last_error, reason);
    char error [300];
    snprintf (error, sizeof error, "PostgreSQL connection lost: %s", self->last_error);
    batch_t *batch;
    while ((batch = s_list_pop (&self->inflight)))
        s_settle (self, batch, false, error);
    snprintf (error, sizeof error, "PostgreSQL unavailable: %s", self->last_error);
    while ((batch = s_list_pop (&self->queued)))
        s_settle (self, batch, false, error);
    PQfinish (self->conn);
    self->conn = NULL;
    self->state = S_DOWN;
    self->want_write = false;
    self->groups = 0;
    self->group_failed = false;
    self->reconnect_at = s_now (self) + self->backoff;
    if (!self->starting)
        mdl_warn ("PostgreSQL %s: %s; reconnecting in %" PRId64 " ms",
                  self->masked, self->last_error, self->backoff);
    self->backoff = self->backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : self->backoff * 2;
}

//  --------------------------------------------------------------------------
//  Pipeline

//  Make room for n more bytes and a null. Returns 0 or -1.
static int
s_text_room (text_t *text, size_t n)
{
    if (text->used + n + 1 > text->size) {
        size_t size = text->size ? text->size : 4096;
        while (size < text->used + n + 1)
            size *= 2;
        char *data = realloc (text->data, size);
        if (!data)
            return -1;
        text->data = data;
        text->size = size;
    }
    return 0;
}

//  Append one element to an array literal: NULL, as is (numbers), or
//  quoted with " and \ escaped. Returns 0 or -1.
static int
s_array_add (text_t *text, const char *value, bool quote)
{
    size_t length = value ? strlen (value) : 4;
    if (s_text_room (text, 2 * length + 3) != 0)
        return -1;
    bool first = text->used == 0;
    text->data [text->used++] = first ? '{' : ',';
    if (!value || !quote) {
        memcpy (text->data + text->used, value ? value : "NULL", length);
        text->used += length;
    }
    else {
        text->data [text->used++] = '"';
        for (const char *c = value; *c; c++) {
            if (*c == '"' || *c == '\\')
                text->data [text->used++] = '\\';
            text->data [text->used++] = *c;
        }
        text->data [text->used++] = '"';
    }
    text->data [text->used] = 0;
    return 0;
}

//  Send the rows gathered so far as one upsert. Returns 0 or -1.
static int
s_rows_send (wrk_db_pg_t *self)
{
    if (self->rows == 0)
        return 0;
    for (int i = 0; i < COLUMNS; i++) {
        if (s_text_room (&self->columns [i], 1) != 0)
            return -1;
        self->columns [i].data [self->columns [i].used++] = '}';
        self->columns [i].data [self->columns [i].used] = 0;
    }
    const char *params [8] = { self->columns [0].data, self->columns [1].data,
                               self->columns [2].data, self->columns [3].data,
                               self->columns [4].data, self->worker, self->columns [5].data,
                               self->columns [6].data };
    int rc = PQsendQueryPrepared (self->conn, WRK_DB_PG_SAVE_MANY, 8, params, NULL, NULL, 0);
    for (int i = 0; i < COLUMNS; i++)
        self->columns [i].used = 0;
    self->rows = 0;
    zhashx_purge (self->row_ids);
    return rc == 1 ? 0 : -1;
}

//  Add one save to the rows of the next upsert. Returns 0 or -1.
static int
s_rows_add (wrk_db_pg_t *self, save_t *save)
{
    //  One statement may not upsert a row twice
    if ((zhashx_lookup (self->row_ids, save->message_id) || self->rows == STATEMENT_ROWS)
    &&  s_rows_send (self) != 0)
        return -1;
    char attempt [24], received [24];
    snprintf (attempt, sizeof attempt, "%" PRId64, save->attempt);
    snprintf (received, sizeof received, "%" PRId64, save->received_wall);
    if (s_array_add (&self->columns [0], save->message_id, true) != 0
    ||  s_array_add (&self->columns [1], save->instance_name, true) != 0
    ||  s_array_add (&self->columns [2], save->hostname, true) != 0
    ||  s_array_add (&self->columns [3], save->attributes, true) != 0
    ||  s_array_add (&self->columns [4], attempt, false) != 0
    ||  s_array_add (&self->columns [5], received, false) != 0
    ||  s_array_add (&self->columns [6], save->publisher, true) != 0
    ||  zhashx_insert (self->row_ids, save->message_id, save) != 0)
        return -1;
    self->rows++;
    return 0;
}

//  Queue a group's statements in libpq's output buffer, from batch first
//  to the end of inflight: its saves (outcomes after them, so an outcome
//  finds a row saved in the same group), then the sync. Returns 0 or -1.
static int
s_send_group (wrk_db_pg_t *self, batch_t *first)
{
    for (batch_t *batch = first; batch; batch = batch->next)
        for (size_t i = 0; i < batch->save_count; i++)
            if (s_rows_add (self, &batch->saves [i]) != 0)
                return -1;
    if (s_rows_send (self) != 0)
        return -1;
    char wall [24];
    for (batch_t *batch = first; batch; batch = batch->next)
        for (size_t i = 0; i < batch->outcome_count; i++) {
            outcome_t *entry = &batch->outcomes [i];
            entry->tries++;
            snprintf (wall, sizeof wall, "%" PRId64, entry->wall);
            const char *params [3] = { entry->message_id, entry->outcome, wall };
            if (PQsendQueryPrepared (self->conn, WRK_DB_PG_OUTCOME, 3, params, NULL, NULL, 0) != 1)
                return -1;
        }
    return PQpipelineSync (self->conn) == 1 ? 0 : -1;
}

//  Send queued batches as groups while fewer than MAX_GROUPS are in flight.
static void
s_send (wrk_db_pg_t *self)
{
    bool sent = false;
    while (self->state == S_READY && self->queued.head && self->groups < MAX_GROUPS) {
        size_t saves = 0;
        batch_t *first = self->queued.head;
        while (self->queued.head && saves < GROUP_SAVES) {
            batch_t *batch = s_list_pop (&self->queued);
            batch->ends_group = false;
            s_list_push (&self->inflight, batch);
            saves += batch->save_count;
        }
        self->inflight.tail->ends_group = true;
        if (s_send_group (self, first) != 0) {
            //  Rows half gathered belong to batches failed here
            for (int i = 0; i < COLUMNS; i++)
                self->columns [i].used = 0;
            self->rows = 0;
            zhashx_purge (self->row_ids);
            s_broken (self, PQerrorMessage (self->conn));
            return;
        }
        if (self->groups++ == 0)
            self->deadline = s_now (self) + ANSWER_TIMEOUT_MS;
        sent = true;
    }
    if (sent)
        s_flush_out (self);
}

//  A sync came back: settle the batches of the oldest group.
static void
s_group_done (wrk_db_pg_t *self)
{
    bool ok = !self->group_failed;
    char error [300];
    snprintf (error, sizeof error, "PostgreSQL rejected the batch: %s", self->group_error);
    while (self->inflight.head) {
        batch_t *batch = s_list_pop (&self->inflight);
        bool last = batch->ends_group;
        s_settle (self, batch, ok, error);
        if (last)
            break;
    }
    if (!ok)
        mdl_warn ("PostgreSQL %s: %s", self->masked, error);
    self->group_failed = false;
    self->group_error [0] = 0;
    if (self->groups > 0 && --self->groups > 0)
        self->deadline = s_now (self) + ANSWER_TIMEOUT_MS;
}

static void
s_read (wrk_db_pg_t *self)
{
    if (PQconsumeInput (self->conn) != 1) {
        s_broken (self, PQerrorMessage (self->conn));
        return;
    }
    //  A NULL ends each statement's results; two in a row mean libpq has
    //  nothing more for now
    int nulls = 0;
    while (self->groups > 0 && !PQisBusy (self->conn)) {
        PGresult *result = PQgetResult (self->conn);
        if (!result) {
            if (++nulls > 1)
                break;
            continue;
        }
        nulls = 0;
        ExecStatusType status = PQresultStatus (result);
        if (status == PGRES_PIPELINE_SYNC)
            s_group_done (self);
        else
        if (status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK) {
            if (!self->group_failed)
                s_one_line (self->group_error, sizeof self->group_error,
                            status == PGRES_PIPELINE_ABORTED ? "aborted"
                                                             : PQresultErrorMessage (result));
            self->group_failed = true;
        }
        PQclear (result);
    }
    if (PQstatus (self->conn) == CONNECTION_BAD)
        s_broken (self, PQerrorMessage (self->conn));
}

//  --------------------------------------------------------------------------
//  Public

wrk_db_pg_t *
wrk_db_pg_new (const char *url, const char *worker_name, char *error, size_t error_size)
{
    assert (url && worker_name);
    char masked [512];
    wrk_db_pg_mask_url (url, masked, sizeof masked);
    if (!wrk_db_pg_handles (url)) {
        snprintf (error, error_size, "'%s' is not a PostgreSQL URL "
                  "(postgresql://USER@HOST:PORT/DB or postgres://...)", masked);
        return NULL;
    }
    char *parse_error = NULL;
    PQconninfoOption *options = PQconninfoParse (url, &parse_error);
    if (!options) {
        char line [256];
        s_one_line (line, sizeof line, parse_error ? parse_error : "out of memory");
        snprintf (error, error_size, "bad PostgreSQL URL '%s': %s", masked, line);
        PQfreemem (parse_error);
        return NULL;
    }
    PQconninfoFree (options);

    wrk_db_pg_t *self = calloc (1, sizeof *self);
    if (!self || !(self->url = strdup (url)) || !(self->worker = strdup (worker_name))) {
        snprintf (error, error_size, "out of memory");
        if (self)
            free (self->url);
        free (self);
        return NULL;
    }
    snprintf (self->masked, sizeof self->masked, "%s", masked);
    snprintf (self->app_name, sizeof self->app_name, "mandrill-worker %s", worker_name);
    self->row_ids = zhashx_new ();
    if (!self->row_ids) {
        snprintf (error, error_size, "out of memory");
        free (self->url);
        free (self->worker);
        free (self);
        return NULL;
    }
    zhashx_set_key_duplicator (self->row_ids, NULL);
    zhashx_set_key_destructor (self->row_ids, NULL);
    self->clock = mdl_clock_system ();
    self->backoff = BACKOFF_MIN_MS;
    self->starting = true;
    s_connect_start (self);
    int64_t deadline = zclock_mono () + STARTUP_TIMEOUT_MS;
    while (self->state != S_READY && self->state != S_DOWN && zclock_mono () < deadline) {
        struct pollfd item = { .fd = wrk_db_pg_fd (self), .events = 0 };
        int events = wrk_db_pg_events (self);
        item.events = (short) ((events & WRK_DB_PG_READ ? POLLIN : 0)
                               | (events & WRK_DB_PG_WRITE ? POLLOUT : 0));
        poll (&item, 1, 100);
        wrk_db_pg_ready (self);
    }
    self->starting = false;
    if (self->state != S_READY) {
        snprintf (error, error_size, "cannot use PostgreSQL %s: %s", masked,
                  self->state == S_DOWN ? self->last_error : "no answer within 10 s");
        wrk_db_pg_destroy (&self);
        return NULL;
    }
    return self;
}

void
wrk_db_pg_destroy (wrk_db_pg_t **self_p)
{
    assert (self_p);
    wrk_db_pg_t *self = *self_p;
    if (!self)
        return;
    if (self->state != S_DOWN) {
        wrk_db_pg_flush (self);
        int64_t deadline = zclock_mono () + DESTROY_WAIT_MS;
        while (self->state != S_DOWN && (self->queued.head || self->groups > 0)
        &&     zclock_mono () < deadline) {
            struct pollfd item = { .fd = wrk_db_pg_fd (self), .events = 0 };
            int events = wrk_db_pg_events (self);
            item.events = (short) ((events & WRK_DB_PG_READ ? POLLIN : 0)
                                   | (events & WRK_DB_PG_WRITE ? POLLOUT : 0));
            poll (&item, 1, 100);
            wrk_db_pg_ready (self);
        }
        if (self->groups > 0 || self->queued.head)
            mdl_warn ("PostgreSQL %s: closing with saves unanswered", self->masked);
    }
    PQfinish (self->conn);
    s_batch_free (&self->batch);
    s_list_free (&self->queued);
    s_list_free (&self->inflight);
    s_list_free (&self->done);
    for (int i = 0; i < COLUMNS; i++)
        free (self->columns [i].data);
    zhashx_destroy (&self->row_ids);
    free (self->url);
    free (self->worker);
    free (self);
    *self_p = NULL;
}

void
wrk_db_pg_set_clock (wrk_db_pg_t *self, mdl_clock_t clock)
{
    self->clock = clock;
}

int
wrk_db_pg_save (wrk_db_pg_t *self, const char *message_id, uint64_t token,
                const char *instance_name, const char *hostname,
                const char *attributes, size_t attributes_size,
                int64_t attempt, int64_t received_wall_ms, const char *publisher)
{
    if (attributes) {
        //  jsonb would reject it and fail every save of the group
        cJSON *json = cJSON_ParseWithLength (attributes, attributes_size);
        bool valid = json != NULL;
        cJSON_Delete (json);
        if (!valid) {
            mdl_warn ("save of %s refused: its attributes are not valid JSON", message_id);
            return -1;
        }
    }
    batch_t *batch = s_batch (self);
    if (!batch)
        return -1;
    if (mdl_array_reserve (&batch->saves, &batch->save_capacity, batch->save_count + 1,
                           sizeof *batch->saves) != 0)
        return -1;
    save_t *save = &batch->saves [batch->save_count];
    memset (save, 0, sizeof *save);
    snprintf (save->message_id, sizeof save->message_id, "%s", message_id);
    save->token = token;
    save->instance_name = strdup (instance_name);
    save->hostname = strdup (hostname);
    save->attributes = attributes ? strndup (attributes, attributes_size) : NULL;
    save->attempt = attempt;
    save->received_wall = received_wall_ms;
    save->publisher = publisher ? strdup (publisher) : NULL;
    if (!save->instance_name || !save->hostname || (attributes && !save->attributes)
    ||  (publisher && !save->publisher)) {
        free (save->instance_name);
        free (save->hostname);
        free (save->attributes);
        free (save->publisher);
        return -1;
    }
    batch->save_count++;
    return 0;
}

int
wrk_db_pg_outcome (wrk_db_pg_t *self, const char *message_id, const char *outcome,
                   int64_t wall_ms)
{
    batch_t *batch = s_batch (self);
    char *copy = strdup (outcome);
    if (!batch || !copy || s_add_outcome (batch, message_id, copy, wall_ms, 0) != 0) {
        free (copy);
        return -1;
    }
    return 0;
}

int
wrk_db_pg_flush (wrk_db_pg_t *self)
{
    batch_t *batch = self->batch;
    if (!batch || (batch->save_count == 0 && batch->outcome_count == 0))
        return 0;
    if (self->state == S_DOWN) {
        //  Saves fail now so that the core backs off; outcomes wait for
        //  the connection in the open batch
        if (batch->save_count == 0)
            return 0;
        batch_t *failed = calloc (1, sizeof *failed);
        if (!failed)
            return 0;               //  Kept: tried again at the next flush
        failed->saves = batch->saves;
        failed->save_count = batch->save_count;
        failed->save_capacity = batch->save_capacity;
        batch->saves = NULL;
        batch->save_count = batch->save_capacity = 0;
        char error [300];
        snprintf (error, sizeof error, "PostgreSQL unavailable: %s", self->last_error);
        self->pending += failed->save_count;
        s_settle (self, failed, false, error);
        return 0;
    }
    self->batch = NULL;
    self->pending += batch->save_count;
    s_list_push (&self->queued, batch);
    s_send (self);
    return 0;
}

int
wrk_db_pg_fd (wrk_db_pg_t *self)
{
    return self->conn ? PQsocket (self->conn) : -1;
}

int
wrk_db_pg_events (wrk_db_pg_t *self)
{
    if (!self->conn || PQsocket (self->conn) < 0)
        return 0;
    if (self->state == S_CONNECTING)
        return self->poll == PGRES_POLLING_READING ? WRK_DB_PG_READ : WRK_DB_PG_WRITE;
    return WRK_DB_PG_READ | (self->want_write ? WRK_DB_PG_WRITE : 0);
}

int64_t
wrk_db_pg_timeout_ms (wrk_db_pg_t *self)
{
    if (self->done.head)
        return 0;
    int64_t at;
    if (self->state == S_DOWN)
        at = self->reconnect_at;
    else
    if (self->state == S_CONNECTING || self->state == S_SETUP
    ||  (self->state == S_READY && self->groups > 0))
        at = self->deadline;
    else
        return -1;
    int64_t delay = at - s_now (self);
    return delay > 0 ? delay : 0;
}

//  Is the socket ready for what libpq waits for? PQconnectPoll must not
//  be called before, and ready () may be called by a timer.
static bool
s_socket_ready (wrk_db_pg_t *self)
{
    int events = wrk_db_pg_events (self);
    struct pollfd item = { .fd = wrk_db_pg_fd (self),
                           .events = (short) ((events & WRK_DB_PG_READ ? POLLIN : 0)
                                              | (events & WRK_DB_PG_WRITE ? POLLOUT : 0)) };
    return item.fd >= 0 && poll (&item, 1, 0) > 0;
}

void
wrk_db_pg_ready (wrk_db_pg_t *self)
{
    int64_t now = s_now (self);
    if (self->state == S_DOWN && now >= self->reconnect_at)
        s_connect_start (self);
    if (self->state == S_CONNECTING) {
        if (s_socket_ready (self))
            s_connect_poll (self);
        else
        if (now >= self->deadline)
            s_broken (self, "no answer to the connection attempt within 10 s");
    }
    if (self->state == S_SETUP) {
        if (self->want_write)
            s_flush_out (self);
        if (self->state == S_SETUP)
            s_setup_read (self);
        if (self->state == S_SETUP && now >= self->deadline)
            s_broken (self, "no answer to the schema set-up within 10 s");
    }
    if (self->state == S_READY) {
        if (self->want_write)
            s_flush_out (self);
        if (self->state == S_READY)
            s_read (self);
        if (self->state == S_READY)
            s_send (self);
        if (self->state == S_READY && self->groups > 0 && now >= self->deadline)
            s_broken (self, "no answer from the server within 30 s");
    }
}

int
wrk_db_pg_recv (wrk_db_pg_t *self, wrk_db_pg_done_fn *done, void *arg)
{
    int reported = 0;
    batch_t *batch;
    while ((batch = s_list_pop (&self->done))) {
        for (size_t i = 0; i < batch->save_count; i++, reported++)
            done (arg, batch->saves [i].message_id, batch->saves [i].token,
                  batch->ok, batch->error);
        assert (self->pending >= batch->save_count);
        self->pending -= batch->save_count;
        s_batch_free (&batch);
    }
    return reported;
}

size_t
wrk_db_pg_pending (wrk_db_pg_t *self)
{
    return self->pending;
}

bool
wrk_db_pg_connected (wrk_db_pg_t *self)
{
    return self->state == S_READY;
}
