/*  mandrill-publish: publishes restart requests to a mandrill-broker.

    Sources: one request (--instance), a file of JSON requests, one per
    line (--file PATH or - for stdin), or a mock stream of cattle-xxxx
    requests (--mock) paced like the tutorial's publisher (U[0,1) s between
    messages) or at a fixed --rate, forever or for --count messages.

    Delivery contract: every request gets its message_id here (a uuid4 when
    the input has none) before it is first sent, and a batch that is not
    confirmed by PUBACK within --timeout is sent again unchanged. The broker
    is idempotent on message_id, so a retry of a batch that did arrive is
    reported as duplicates and never queued twice. An ERROR reply is
    retried only when it is "unavailable"; any other code means the broker
    refused the batch and it is reported, not retried. An ERROR without
    req (the broker could not read the body) is pinned on the one batch in
    flight, or, with several in flight, stops the run at once.

    Input is checked with the protocol's decoder (mmp_decode on the
    one-request PUBLISH each line would make), never by a second set of
    rules here, so whatever passes locally passes at the broker.

    Concurrency: --publishers K threads, each with its own DEALER and its
    own share of the requests, each keeping up to WINDOW batches in flight
    matched to their PUBACK by the "req" field. The main thread only
    watches signals (signalfd) and prints progress.
*/
#include "mdl_clock.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_util.h"
#include "mmp.h"

#include <czmq.h>
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

//  Exit codes (also in --help).
#define EXIT_OK             0   //  Every request confirmed by the broker
#define EXIT_USAGE          1   //  Bad command line
#define EXIT_UNCONFIRMED    2   //  Some requests not confirmed (timeouts after retries, stopped)
#define EXIT_BAD_INPUT      3   //  Invalid request in the input (see --keep-going)
#define EXIT_REFUSED        4   //  The broker refused a batch (ERROR other than unavailable)

#define WINDOW              4   //  Batches in flight per publisher
#define S_STRINGIFY_(x)     #x
#define S_STRINGIFY(x)      S_STRINGIFY_(x)
#define BODY_OVERHEAD       64  //  PUBLISH body bytes besides the requests: {"req":"p63-<n>","messages":[]}
#define PROGRESS_MIN        1000    //  Show progress from this many requests (or --rate >= 100)

//  One request ready to send: its printed JSON and what the logs name.
typedef struct {
    char *json;                 //  Printed request object, message_id included
    char id [37];               //  Its message_id
    char name [64];             //  Its instance_name
} request_t;

//  A PUBLISH awaiting its PUBACK.
typedef struct {
    bool used;                  //  Slot holds a batch
    char req [32];              //  Correlation string echoed by the broker
    char *body;                 //  The full PUBLISH body, resent unchanged
    size_t body_size;           //  strlen (body)
    request_t *requests;        //  The requests (owned; json freed with the batch)
    size_t count;               //  Number of requests
    int attempts;               //  Sends so far
    int64_t resend_at;          //  Monotonic ms at which it is sent again
} batch_t;

//  Options shared by every publisher.
typedef struct {
    const char *broker;         //  Frontend endpoint
    int64_t batch;              //  Requests per PUBLISH, at most
    int64_t timeout_ms;         //  PUBACK wait before a resend
    int64_t retries;            //  Resends before giving up on a batch
    bool mock;                  //  Generate requests
    double rate;                //  Mock: msgs/s for all publishers (0 = U[0,1) pacing)
    int64_t count;              //  Mock: total to send (-1 = forever)
    int64_t publishers;         //  Threads
    const char *curve_cert;     //  Own secret certificate (CURVE), or NULL
    const char *broker_cert;    //  The broker's public certificate, or NULL
} opts_t;

//  One publisher thread: its socket, its share of the work, its batches.
typedef struct {
    int index;                  //  0 .. publishers-1
    const opts_t *opts;         //  Shared options
    request_t *list;            //  List mode: its requests (not owned by batches until taken)
    size_t list_count;          //  List mode: how many
    size_t list_next;           //  List mode: next to take
    int64_t mock_count;         //  Mock: how many to make (-1 = forever)
    int64_t mock_made;          //  Mock: made so far
    double mock_rate;           //  Mock: this publisher's msgs/s (0 = U[0,1) pacing)
    int64_t mock_t0;            //  Mock: start, monotonic ms
    int64_t next_due;           //  Mock: when the next request is due, monotonic ms
    uint64_t random_state;      //  Mock: xorshift state
    mdl_random_t random;        //  Mock: U[0,1) source
    uint64_t seq;               //  Next req number
    batch_t window [WINDOW];    //  Batches in flight
    int result;                 //  Exit code contribution
} publisher_t;

//  Totals across publishers, read by the progress printer.
static _Atomic int64_t s_sent;          //  Requests sent at least once
static _Atomic int64_t s_confirmed;     //  Requests in a PUBACK
static _Atomic int64_t s_duplicates;    //  Of those, reported as already known
static _Atomic int64_t s_resends;       //  Batches sent again
static _Atomic int64_t s_failed;        //  Requests given up on or refused
static _Atomic int s_stop;              //  1: stop taking work, 2: stop now
static bool s_summarise;                //  Large runs: per-batch lines at DEBUG, progress at INFO

static int64_t
s_now (void)
{
    return zclock_mono ();
}

static void
s_request_free (request_t *request)
{
    free (request->json);
    request->json = NULL;
}

static void
s_batch_free (batch_t *batch)
{
    for (size_t i = 0; i < batch->count; i++)
        s_request_free (&batch->requests [i]);
    free (batch->requests);
    free (batch->body);
    memset (batch, 0, sizeof *batch);
}

//  --------------------------------------------------------------- validation

//  A line is checked by the protocol's own decoder, as the body of a
//  one-request PUBLISH, so the publisher and the broker cannot disagree on
//  what is valid. The wrapper's bytes come before the line's.
#define CHECK_PREFIX        "{\"messages\":["
#define CHECK_SUFFIX        "]}"

//  Decode body as a PUBLISH the broker would receive. Returns the decoded
//  request object (owned by *msg) or NULL with err filled.
static cJSON *
s_decode_one (const char *body, size_t size, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_msg_init (msg);
    if (mmp_decode (MMP_SIGNATURE, strlen (MMP_SIGNATURE), "PUBLISH", 7, body, size,
                    MMP_TO_BROKER, msg, err) != 0)
        return NULL;
    //  A line such as {...},{...} decodes as two requests: it is not one
    //  JSON value. (Closing the array early leaves "]}" as text after the
    //  body, which the decoder already refuses.)
    if (msg->message_count != 1 || msg->req) {
        mmp_msg_reset (msg);
        err->code = MMP_ERR_BAD_JSON;
        snprintf (err->reason, sizeof err->reason, "body is not one JSON object");
        return NULL;
    }
    return cJSON_GetArrayItem (cJSON_GetObjectItemCaseSensitive (msg->body, "messages"), 0);
}

//  Turn the decoder's error on a wrapped line into text about the line:
//  field paths lose their "messages[0]." and byte offsets become columns.
//  column_base is the line's column of the request's first byte, minus 1.
static void
s_explain (const mmp_error_t *err, size_t column_base, char *error, size_t error_size)
{
    const char *reason = err->reason;
    const char *prefix = "messages[0]";
    if (strncmp (reason, prefix, strlen (prefix)) == 0) {
        reason += strlen (prefix);
        if (*reason == '.')
            reason++;
        else
        if (*reason == ':')
            reason = reason + strspn (reason, ": ");
    }
    else
    if (strncmp (reason, "req", 3) == 0 || strncmp (reason, "messages", 8) == 0) {
        //  The line closed the wrapper's array and went on outside it.
        snprintf (error, error_size, "%s: line is not one JSON object", MMP_ERR_BAD_JSON);
        return;
    }
    char text [sizeof err->reason + 64];
    snprintf (text, sizeof text, "%s", reason);
    if (strncmp (text, "body ", 5) == 0)
        memcpy (text, "line ", 5);
    //  "... at byte N" counts bytes of the wrapped body.
    char *at = strstr (text, " at byte ");
    size_t offset;
    char rest;
    if (at && sscanf (at + 9, "%zu%c", &offset, &rest) == 1 && offset >= strlen (CHECK_PREFIX))
        snprintf (at, sizeof text - (size_t) (at - text), " at column %zu",
                  offset - strlen (CHECK_PREFIX) + column_base + 1);
    if (streq (err->code, MMP_ERR_BAD_INSTANCE_NAME))
        //  The codec's reason text names lower case only; upper case is
        //  valid too (RFC 1123 names are case-insensitive).
        snprintf (text, sizeof text, "instance_name: not an RFC 1123 label: 1 to %d letters "
                  "(A-Z or a-z, case-insensitive), digits and '-', not starting or ending with '-'",
                  MMP_MAX_INSTANCE);
    else
    if (streq (err->code, MMP_ERR_UNKNOWN_FIELD))
        strncat (text, " (a request has only message_id, instance_name, hostname, attributes)",
                 sizeof text - strlen (text) - 1);
    else
    if (streq (err->code, MMP_ERR_TOO_DEEP))
        strncat (text, " (the PUBLISH body and its messages array count as 2 levels)",
                 sizeof text - strlen (text) - 1);
    snprintf (error, error_size, "%s: %s", err->code, text);
}

//  Check one input request (size bytes of JSON text) exactly as the broker
//  would, and fill *request with its printed form (a message_id added when
//  absent, lower-cased when present). Returns 0, or -1 with the decoder's
//  code and reason in error.
static int
s_request_from_json (const char *text, size_t size, size_t column_base,
                     request_t *request, char *error, size_t error_size)
{
    memset (request, 0, sizeof *request);
    mmp_buf_t body;
    mmp_buf_init (&body);
    mmp_buf_puts (&body, CHECK_PREFIX);
    mmp_buf_append (&body, text, size);
    mmp_buf_puts (&body, CHECK_SUFFIX);
    if (body.failed) {
        mmp_buf_free (&body);
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    mmp_msg_t msg;
    mmp_error_t err;
    cJSON *item = s_decode_one (body.data, body.size, &msg, &err);
    mmp_buf_free (&body);
    if (!item) {
        s_explain (&err, column_base, error, error_size);
        return -1;
    }
    //  The decoder checked every field; item is one valid request object.
    int rc = -1;
    const mmp_request_t *decoded = &msg.messages [0];
    if (decoded->message_id) {
        //  The broker lower-cases ids; so do we, to match its replies.
        for (int i = 0; i < 36; i++)
            request->id [i] = (char) tolower ((unsigned char) decoded->message_id [i]);
        cJSON_ReplaceItemInObjectCaseSensitive (item, "message_id", cJSON_CreateString (request->id));
    }
    else {
        mdl_uuid4 (request->id);
        cJSON_AddStringToObject (item, "message_id", request->id);
    }
    snprintf (request->name, sizeof request->name, "%s", decoded->instance_name);
    request->json = cJSON_PrintUnformatted (item);
    mmp_msg_reset (&msg);
    if (!request->json) {
        snprintf (error, error_size, "out of memory");
        goto done;
    }
    //  What goes on the wire is the reprinted object: check that too, so a
    //  difference between the input and its reprint can never reach the
    //  broker unchecked.
    mmp_buf_init (&body);
    mmp_buf_puts (&body, CHECK_PREFIX);
    mmp_buf_puts (&body, request->json);
    mmp_buf_puts (&body, CHECK_SUFFIX);
    bool failed = body.failed;
    item = failed ? NULL : s_decode_one (body.data, body.size, &msg, &err);
    mmp_buf_free (&body);
    if (!item) {
        if (failed)
            snprintf (error, error_size, "out of memory");
        else {
            char reason [240];
            s_explain (&err, 0, reason, sizeof reason);
            snprintf (error, error_size, "as reprinted for sending: %s", reason);
        }
        goto done;
    }
    mmp_msg_reset (&msg);
    rc = 0;
done:
    if (rc != 0) {
        free (request->json);
        request->json = NULL;
    }
    return rc;
}

//  Read requests from a file, one JSON object per line; blank lines and
//  lines starting with '#' are skipped. An invalid line is reported with
//  its number; with keep_going it is skipped, otherwise reading stops and
//  -1 is returned (so nothing is sent). Returns 0, 1 (some skipped) or -1.
static int
s_read_file (const char *path, bool keep_going, request_t **list_p, size_t *count_p)
{
    FILE *file = streq (path, "-") ? stdin : fopen (path, "r");
    if (!file) {
        mdl_error ("cannot open %s: %s", path, strerror (errno));
        return -1;
    }
    request_t *list = NULL;
    size_t count = 0, capacity = 0;
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t length;
    int64_t number = 0;
    int rc = 0;
    while ((length = getline (&line, &line_capacity, file)) >= 0) {
        number++;
        while (length > 0 && (line [length - 1] == '\n' || line [length - 1] == '\r'))
            line [--length] = 0;
        const char *start = line + strspn (line, " \t");
        if (*start == 0 || *start == '#')
            continue;
        if (count == capacity) {
            capacity = capacity ? capacity * 2 : 256;
            request_t *grown = realloc (list, capacity * sizeof *list);
            if (!grown) {
                mdl_error ("out of memory reading %s", path);
                rc = -1;
                break;
            }
            list = grown;
        }
        char error [320];
        size_t column_base = (size_t) (start - line);
        if (s_request_from_json (start, (size_t) length - column_base, column_base,
                                 &list [count], error, sizeof error) == 0)
            count++;
        else {
            mdl_error ("%s:%" PRId64 ": invalid request: %s%s", streq (path, "-") ? "stdin" : path,
                       number, error, keep_going ? " (skipped)" : "");
            rc = keep_going ? 1 : -1;
            if (!keep_going)
                break;
        }
    }
    free (line);
    if (file != stdin)
        fclose (file);
    if (rc < 0) {
        for (size_t i = 0; i < count; i++)
            s_request_free (&list [i]);
        free (list);
        return -1;
    }
    *list_p = list;
    *count_p = count;
    return rc;
}

//  --------------------------------------------------------------- publisher

//  Make the next mock request: cattle-xxxx, uuid4, default hostname.
static void
s_mock_request (publisher_t *self, request_t *request)
{
    static const char alphabet [] = "abcdefghijklmnopqrstuvwxyz0123456789";
    memset (request, 0, sizeof *request);
    char suffix [5];
    for (int i = 0; i < 4; i++)
        suffix [i] = alphabet [(int) (mdl_random_next (&self->random) * 36)];
    suffix [4] = 0;
    snprintf (request->name, sizeof request->name, "cattle-%s", suffix);
    mdl_uuid4 (request->id);
    request->json = zsys_sprintf ("{\"message_id\":\"%s\",\"instance_name\":\"%s\"}",
                                  request->id, request->name);
}

//  Take the next request that is due at now. Returns 1 (filled), 0 (none
//  due yet; self->next_due says when) or -1 (no more).
static int
s_next_request (publisher_t *self, int64_t now, request_t *request)
{
    if (!self->opts->mock) {
        if (self->list_next >= self->list_count)
            return -1;
        *request = self->list [self->list_next];
        self->list [self->list_next++].json = NULL;     //  Ownership moves to the batch
        return 1;
    }
    if (self->mock_count >= 0 && self->mock_made >= self->mock_count)
        return -1;
    if (now < self->next_due)
        return 0;
    s_mock_request (self, request);
    self->mock_made++;
    if (self->mock_rate > 0)
        //  Open loop: due times follow the start, so a stall is caught up.
        self->next_due = self->mock_t0 + (int64_t) ((double) self->mock_made * 1000.0 / self->mock_rate);
    else
        self->next_due = now + (int64_t) (mdl_random_next (&self->random) * 1000.0);
    return 1;
}

static int
s_send_batch (zsock_t *sock, publisher_t *self, batch_t *batch, int64_t now)
{
    batch->attempts++;
    batch->resend_at = now + self->opts->timeout_ms;
    if (batch->attempts > 1) {
        atomic_fetch_add (&s_resends, 1);
        mdl_warn ("no PUBACK for batch %s (%zu requests) within %" PRId64 " ms, sending it again "
                  "(attempt %d, same message ids)", batch->req, batch->count,
                  self->opts->timeout_ms, batch->attempts);
    }
    if (mmp_send (sock, NULL, MMP_PUBLISH, batch->body, batch->body_size) != 0) {
        mdl_warn ("send of batch %s failed, will retry", batch->req);
        return -1;
    }
    return 0;
}

//  Build and send one PUBLISH from the requests due now. Returns the
//  number of requests sent, 0 for none due, -1 when the source is done.
static int
s_fill_batch (zsock_t *sock, publisher_t *self, batch_t *batch, int64_t now)
{
    request_t request;
    int got = s_next_request (self, now, &request);
    if (got <= 0)
        return got;
    batch->requests = malloc (sizeof (request_t) * (size_t) self->opts->batch);
    assert (batch->requests);
    batch->requests [0] = request;
    batch->count = 1;
    //  A body over MMP_MAX_BODY is refused before the broker can read its
    //  req; list requests can be up to a few KiB each, so batches are also
    //  cut by size (mock requests are ~100 bytes, far below the limit).
    size_t body_size = BODY_OVERHEAD + strlen (request.json);
    while ((int64_t) batch->count < self->opts->batch) {
        if (!self->opts->mock && self->list_next < self->list_count
        &&  body_size + strlen (self->list [self->list_next].json) + 1 > MMP_MAX_BODY)
            break;
        if (s_next_request (self, now, &batch->requests [batch->count]) != 1)
            break;
        body_size += strlen (batch->requests [batch->count].json) + 1;
        batch->count++;
    }
    batch->used = true;
    snprintf (batch->req, sizeof batch->req, "p%d-%" PRIu64, self->index, self->seq++);
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_printf (&buf, "{\"req\":\"%s\",\"messages\":[", batch->req);
    for (size_t i = 0; i < batch->count; i++) {
        if (i)
            mmp_buf_puts (&buf, ",");
        mmp_buf_puts (&buf, batch->requests [i].json);
    }
    mmp_buf_puts (&buf, "]}");
    assert (!buf.failed);
    batch->body = buf.data;             //  Ownership of the text moves to the batch
    batch->body_size = buf.size;
    atomic_fetch_add (&s_sent, (int64_t) batch->count);
    s_send_batch (sock, self, batch, now);
    return (int) batch->count;
}

//  Log a confirmed batch: per message when small, one summary otherwise.
static void
s_log_confirmed (batch_t *batch, mmp_msg_t *reply)
{
    size_t duplicates = reply->other_id_count;
    if (batch->count <= 5 && !s_summarise) {
        for (size_t i = 0; i < batch->count; i++) {
            bool duplicate = false;
            for (size_t j = 0; j < duplicates; j++)
                if (reply->other_ids [j] && streq (reply->other_ids [j], batch->requests [i].id))
                    duplicate = true;
            if (duplicate)
                mdl_info ("Message %s (%s) was already known to the broker: duplicate, not queued again",
                          batch->requests [i].name, batch->requests [i].id);
            else
                mdl_info ("Published message %s (%s)", batch->requests [i].name, batch->requests [i].id);
        }
    }
    else
    if (!s_summarise)
        mdl_info ("Published %zu messages (%s .. %s), %zu duplicates, durability %s",
                  batch->count, batch->requests [0].name, batch->requests [batch->count - 1].name,
                  duplicates, reply->durability ? reply->durability : "?");
    else
        mdl_debug ("Published %zu messages (%s .. %s), %zu duplicates, durability %s",
                  batch->count, batch->requests [0].name, batch->requests [batch->count - 1].name,
                  duplicates, reply->durability ? reply->durability : "?");
}

static void
s_give_up (publisher_t *self, batch_t *batch, const char *why, int code)
{
    mdl_error ("giving up on batch %s (%zu requests): %s; unconfirmed message ids follow",
               batch->req, batch->count, why);
    for (size_t i = 0; i < batch->count; i++)
        mdl_error ("unconfirmed: %s %s", batch->requests [i].id, batch->requests [i].name);
    atomic_fetch_add (&s_failed, (int64_t) batch->count);
    if (self->result == EXIT_OK || code == EXIT_REFUSED)
        self->result = code;
    s_batch_free (batch);
}

//  An ERROR without req: the broker could not read the body far enough to
//  find req (too large, not JSON), so it cannot say which batch it refuses.
//  Retrying would be refused the same way, so this never waits for a
//  timeout: with one batch in flight it is that batch; with more, which one
//  is unknowable, so the whole run stops at once.
static void
s_handle_anonymous_error (publisher_t *self, mmp_msg_t *reply)
{
    const char *code = reply->code ? reply->code : "?";
    const char *reason = reply->reason ? reply->reason : "";
    if (streq (code, MMP_ERR_UNAVAILABLE)) {
        //  Retryable, and the batch's own timeout resends it.
        mdl_warn ("broker unavailable (%s); batches in flight are sent again after --timeout", reason);
        return;
    }
    int inflight = 0;
    batch_t *batch = NULL;
    for (int i = 0; i < WINDOW; i++)
        if (self->window [i].used) {
            inflight++;
            batch = &self->window [i];
        }
    if (inflight == 0) {
        mdl_warn ("broker sent ERROR %s: %s, with no batch in flight", code, reason);
        return;
    }
    char why [400];
    snprintf (why, sizeof why, "broker refused a batch it could not read: %s: %s", code, reason);
    if (inflight == 1) {
        s_give_up (self, batch, why, EXIT_REFUSED);
        return;
    }
    mdl_error ("%s; %d batches were in flight, so which one is unknown: stopping", why, inflight);
    for (int i = 0; i < WINDOW; i++)
        if (self->window [i].used)
            s_give_up (self, &self->window [i], why, EXIT_REFUSED);
    atomic_store (&s_stop, 2);
}

static void
s_handle_reply (publisher_t *self, mmp_msg_t *reply, int64_t now)
{
    if (reply->command == MMP_ERROR && !reply->req) {
        s_handle_anonymous_error (self, reply);
        return;
    }
    batch_t *batch = NULL;
    for (int i = 0; i < WINDOW; i++)
        if (self->window [i].used && reply->req && streq (reply->req, self->window [i].req))
            batch = &self->window [i];
    if (!batch) {
        //  A late reply to a batch already confirmed by an earlier reply.
        mdl_debug ("reply for %s, which is no longer in flight", reply->req ? reply->req : "(no req)");
        return;
    }
    if (reply->command == MMP_PUBACK) {
        if (reply->message_id_count != batch->count)
            mdl_warn ("PUBACK for %s lists %zu ids for %zu requests",
                      batch->req, reply->message_id_count, batch->count);
        atomic_fetch_add (&s_confirmed, (int64_t) batch->count);
        atomic_fetch_add (&s_duplicates, (int64_t) reply->other_id_count);
        s_log_confirmed (batch, reply);
        s_batch_free (batch);
    }
    else
    if (reply->command == MMP_ERROR) {
        if (reply->code && streq (reply->code, MMP_ERR_UNAVAILABLE)) {
            int64_t delay = (int64_t) 100 << (batch->attempts < 7 ? batch->attempts : 7);
            mdl_warn ("broker unavailable for batch %s (%s), retrying in %" PRId64 " ms",
                      batch->req, reply->reason ? reply->reason : "", delay);
            batch->resend_at = now + delay;
        }
        else {
            char why [320];
            snprintf (why, sizeof why, "broker refused it: %s: %s",
                      reply->code ? reply->code : "?", reply->reason ? reply->reason : "");
            s_give_up (self, batch, why, EXIT_REFUSED);
        }
    }
    else
        mdl_warn ("unexpected %s reply from the broker", mmp_command_name (reply->command));
}

static void *
s_publisher_thread (void *arg)
{
    publisher_t *self = (publisher_t *) arg;
    const opts_t *opts = self->opts;
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    char curve_error [300];
    if (sock && mdl_curve_client_files (sock, opts->curve_cert, opts->broker_cert,
                                        curve_error, sizeof curve_error) != 0) {
        mdl_error ("CURVE: %s", curve_error);
        zsock_destroy (&sock);
    }
    if (!sock || zsock_connect (sock, "%s", opts->broker) != 0) {
        mdl_error ("cannot connect to %s: %s", opts->broker, zmq_strerror (zmq_errno ()));
        zsock_destroy (&sock);
        //  Nothing was sent, and none of this publisher's share is confirmed.
        int64_t share = opts->mock ? self->mock_count : (int64_t) self->list_count;
        if (share > 0)
            atomic_fetch_add (&s_failed, share);
        self->result = EXIT_UNCONFIRMED;
        return NULL;
    }
    zsock_set_linger (sock, 0);
    //  While the broker is away the socket queues resends; once its queue
    //  is full a send fails after 100 ms (and is retried later) instead of
    //  blocking the thread past a stop signal.
    zsock_set_sndtimeo (sock, 100);
    self->random = mdl_random_system (&self->random_state);
    self->random_state ^= (uint64_t) (self->index + 1) * 0x9E3779B97F4A7C15ULL;
    self->mock_t0 = self->next_due = s_now ();
    bool exhausted = false;
    int64_t drain_deadline = 0;
    while (true) {
        int64_t now = s_now ();
        int stop = atomic_load (&s_stop);
        int inflight = 0;
        for (int i = 0; i < WINDOW; i++)
            inflight += self->window [i].used;
        if (stop >= 2)
            break;
        if (stop && !drain_deadline)
            drain_deadline = now + opts->timeout_ms;
        if ((exhausted || stop) && inflight == 0)
            break;
        if (drain_deadline && now >= drain_deadline)
            break;
        //  New batches, while there is room and work.
        while (!exhausted && !stop && inflight < WINDOW) {
            batch_t *free_slot = NULL;
            for (int i = 0; i < WINDOW && !free_slot; i++)
                if (!self->window [i].used)
                    free_slot = &self->window [i];
            int sent = s_fill_batch (sock, self, free_slot, now);
            if (sent < 0)
                exhausted = true;
            if (sent <= 0)
                break;
            inflight++;
        }
        //  Resends, and the earliest moment something needs doing.
        int64_t wake = now + 100;
        if (!exhausted && !stop && inflight < WINDOW && opts->mock && self->next_due < wake)
            wake = self->next_due;
        for (int i = 0; i < WINDOW; i++) {
            batch_t *batch = &self->window [i];
            if (!batch->used)
                continue;
            if (now >= batch->resend_at) {
                if (batch->attempts > opts->retries)
                    s_give_up (self, batch, "no PUBACK after all retries", EXIT_UNCONFIRMED);
                else
                    s_send_batch (sock, self, batch, now);
            }
            if (batch->used && batch->resend_at < wake)
                wake = batch->resend_at;
        }
        zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
        long timeout = wake > now ? (long) (wake - now) : 0;
        if (zmq_poll (&item, 1, timeout) <= 0)
            continue;
        while (true) {
            mmp_msg_t reply;
            mmp_error_t err;
            mmp_msg_init (&reply);
            int rc = mmp_recv (sock, false, NULL, MMP_FROM_BROKER, &reply, &err);
            if (rc == -1)
                break;
            if (rc == -2)
                mdl_warn ("malformed reply from the broker: %s: %s", err.code, err.reason);
            else
                s_handle_reply (self, &reply, s_now ());
            mmp_msg_reset (&reply);
        }
    }
    for (int i = 0; i < WINDOW; i++)
        if (self->window [i].used)
            s_give_up (self, &self->window [i], "stopped before the broker confirmed it",
                       EXIT_UNCONFIRMED);
    //  Requests never taken (stopped early) are unconfirmed too.
    if (!opts->mock && self->list_next < self->list_count) {
        mdl_error ("%zu requests were not sent (stopped)", self->list_count - self->list_next);
        atomic_fetch_add (&s_failed, (int64_t) (self->list_count - self->list_next));
        if (self->result == EXIT_OK)
            self->result = EXIT_UNCONFIRMED;
    }
    zsock_destroy (&sock);
    return NULL;
}

//  --------------------------------------------------------------- main

//  Options that take a value (the next argument).
static bool
s_takes_value (const char *key)
{
    static const char *names [] = {
        "--broker", "--instance", "--hostname", "--message-id", "--file", "--rate",
        "--count", "--publishers", "--batch", "--retries", "--timeout",
        "--curve-cert", "--broker-cert", NULL
    };
    for (int i = 0; names [i]; i++)
        if (streq (key, names [i]))
            return true;
    return false;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: mandrill-publish [options] (--instance NAME | --file PATH|- | --mock)\n"
        "Publishes restart requests to a mandrill-broker and waits for each PUBACK.\n"
        "\n"
        "  --broker EP         broker frontend (default tcp://localhost:5555)\n"
        "  --instance NAME     publish one request for this instance\n"
        "    --hostname H      its hostname (default NAME.example.net, set by the broker)\n"
        "    --message-id UUID its message id (default: a new uuid4); publishing the same\n"
        "                      id again is reported as a duplicate, never queued twice\n"
        "  --file PATH|-       one JSON request per line: {\"instance_name\": ..., \"hostname\"?,\n"
        "                      \"message_id\"?, \"attributes\"?}; blank and '#' lines skipped.\n"
        "                      Every line is checked before anything is sent, by the same\n"
        "                      protocol decoder the broker uses: an invalid line is reported\n"
        "                      with its number and error code, and nothing is published\n"
        "    --keep-going      instead skip invalid lines (reported), publish the rest, exit 3\n"
        "  --mock              publish cattle-xxxx requests forever, U[0,1) s apart\n"
        "    --rate R          instead R msgs/s in total (open loop)\n"
        "    --count N         stop after N requests\n"
        "  --publishers K      K concurrent publishers, each its own connection (default 1)\n"
        "  --batch B           requests per PUBLISH, at most (1..%d, default 100; fewer\n"
        "                      when the body would pass the broker's 1 MiB limit)\n"
        "  --timeout D         wait for PUBACK before sending a batch again (default 5s)\n"
        "  --retries N         resends before giving up on a batch (default 10)\n"
        "  --curve-cert FILE   own secret certificate (mandrill-ctl keygen): CURVE to the\n"
        "                      broker; needs --broker-cert (docs/SECURITY.md)\n"
        "  --broker-cert FILE  the broker's public certificate\n"
        "  --progress          progress every second (automatic from %d requests or 100 msgs/s)\n"
        "  -v, --verbose       debug log;  -q, --quiet  warnings and errors only\n"
        "  --version           print the version and exit\n"
        "  --help              this text\n"
        "\n"
        "Retries resend the same message ids, so the broker reports them as duplicates.\n"
        "SIGINT/SIGTERM: stop taking new requests, wait up to --timeout for the batches in\n"
        "flight, report what was confirmed; a second signal stops at once.\n"
        "\n"
        "exit codes: 0 every request confirmed; 1 usage; 2 some requests not confirmed\n"
        "(no PUBACK after the retries, broker unreachable, or stopped by a signal first);\n"
        "3 invalid input (nothing sent, or lines skipped with --keep-going); 4 the broker\n"
        "refused a batch (ERROR other than unavailable). An ERROR without req (the broker\n"
        "could not read the body) is that of the one batch in flight, or, with several in\n"
        "flight, stops the run at once; either way exit 4 without resending.\n",
        MMP_MAX_MESSAGES, PROGRESS_MIN);
}

static void
s_progress (int64_t t0, int64_t *last_confirmed, int64_t *last_at)
{
    int64_t now = s_now ();
    int64_t confirmed = atomic_load (&s_confirmed);
    double rate = now > *last_at ? (double) (confirmed - *last_confirmed) * 1000.0 / (double) (now - *last_at) : 0;
    mdl_info ("progress: sent %" PRId64 ", acked %" PRId64 ", duplicates %" PRId64 ", resent batches %"
              PRId64 ", failed %" PRId64 ", %.0f msgs/s, %.1f s",
              atomic_load (&s_sent), confirmed, atomic_load (&s_duplicates),
              atomic_load (&s_resends), atomic_load (&s_failed), rate, (double) (now - t0) / 1000.0);
    *last_confirmed = confirmed;
    *last_at = now;
}

int
main (int argc, char *argv [])
{
    opts_t opts = {
        .broker = "tcp://localhost:5555", .batch = 100, .timeout_ms = 5000,
        .retries = 10, .count = -1, .publishers = 1
    };
    const char *instance = NULL, *hostname = NULL, *message_id = NULL, *file = NULL;
    bool keep_going = false, progress = false;
    mdl_log_set_name ("publish");
    for (int i = 1; i < argc; i++) {
        const char *key = argv [i];
        if (streq (key, "--help") || streq (key, "-h")) {
            s_usage (stdout);
            return EXIT_OK;
        }
        if (streq (key, "--version")) {
            printf ("mandrill-publish %s\n", MANDRILL_VERSION);
            return EXIT_OK;
        }
        if (streq (key, "--mock")) { opts.mock = true; continue; }
        if (streq (key, "--keep-going")) { keep_going = true; continue; }
        if (streq (key, "--progress")) { progress = true; continue; }
        if (streq (key, "-v") || streq (key, "--verbose")) { mdl_log_set_level (MDL_LOG_DEBUG); continue; }
        if (streq (key, "-q") || streq (key, "--quiet")) { mdl_log_set_level (MDL_LOG_WARN); continue; }
        if (!s_takes_value (key)) {
            if (key [0] == '-')
                fprintf (stderr, "mandrill-publish: unknown option '%s' (see --help)\n", key);
            else
                fprintf (stderr, "mandrill-publish: unexpected argument '%s' (see --help)\n", key);
            return EXIT_USAGE;
        }
        if (i + 1 >= argc) {
            fprintf (stderr, "mandrill-publish: option %s needs a value (see --help)\n", key);
            return EXIT_USAGE;
        }
        const char *value = argv [++i];
        const char *expected = NULL;    //  What a valid value looks like, when this one is not
        if (streq (key, "--broker"))
            opts.broker = value;
        else
        if (streq (key, "--curve-cert"))
            opts.curve_cert = value;
        else
        if (streq (key, "--broker-cert"))
            opts.broker_cert = value;
        else
        if (streq (key, "--instance"))
            instance = value;
        else
        if (streq (key, "--hostname"))
            hostname = value;
        else
        if (streq (key, "--message-id"))
            message_id = value;
        else
        if (streq (key, "--file"))
            file = value;
        else
        if (streq (key, "--rate")) {
            if (mdl_parse_double (value, 0.001, 1e7, &opts.rate) != 0)
                expected = "messages per second, a number from 0.001 to 10000000";
        }
        else
        if (streq (key, "--count")) {
            if (mdl_parse_int (value, 1, INT64_C (1) << 50, &opts.count) != 0)
                expected = "a whole number from 1 to 2^50";
        }
        else
        if (streq (key, "--publishers")) {
            if (mdl_parse_int (value, 1, 64, &opts.publishers) != 0)
                expected = "a whole number from 1 to 64";
        }
        else
        if (streq (key, "--batch")) {
            if (mdl_parse_int (value, 1, MMP_MAX_MESSAGES, &opts.batch) != 0)
                expected = "a whole number from 1 to " S_STRINGIFY (MMP_MAX_MESSAGES);
        }
        else
        if (streq (key, "--retries")) {
            if (mdl_parse_int (value, 0, 1000000, &opts.retries) != 0)
                expected = "a whole number from 0 to 1000000";
        }
        else
        if (streq (key, "--timeout")) {
            if (mdl_parse_duration_ms (value, &opts.timeout_ms) != 0 || opts.timeout_ms <= 0)
                expected = "a duration such as 5s";
        }
        if (expected) {
            fprintf (stderr, "mandrill-publish: invalid value '%s' for %s: expected %s\n",
                     value, key, expected);
            return EXIT_USAGE;
        }
    }
    int sources = (instance != NULL) + (file != NULL) + opts.mock;
    if (sources != 1) {
        fprintf (stderr, "mandrill-publish: give exactly one of --instance, --file, --mock (see --help)\n");
        return EXIT_USAGE;
    }
    if (!instance && (hostname || message_id)) {
        fprintf (stderr, "mandrill-publish: --hostname and --message-id go with --instance\n");
        return EXIT_USAGE;
    }
    if (!opts.mock && (opts.rate > 0 || opts.count > 0)) {
        fprintf (stderr, "mandrill-publish: --rate and --count go with --mock\n");
        return EXIT_USAGE;
    }
    if (opts.curve_cert || opts.broker_cert) {
        char error [300] = "";
        zsys_handler_set (NULL);        //  Before the first socket: signals stay ours
        zsock_t *probe = zsock_new (ZMQ_DEALER);
        int curve = mdl_curve_client_files (probe, opts.curve_cert, opts.broker_cert, error, sizeof error);
        zsock_destroy (&probe);
        if (curve != 0) {
            fprintf (stderr, "mandrill-publish: %s\n", error);
            return EXIT_USAGE;
        }
    }

    //  Every request is built and checked before the first socket exists.
    request_t *list = NULL;
    size_t list_count = 0;
    int input_result = EXIT_OK;
    if (instance) {
        cJSON *root = cJSON_CreateObject ();
        cJSON_AddStringToObject (root, "instance_name", instance);
        if (hostname)
            cJSON_AddStringToObject (root, "hostname", hostname);
        if (message_id)
            cJSON_AddStringToObject (root, "message_id", message_id);
        char *text = cJSON_PrintUnformatted (root);
        cJSON_Delete (root);
        list = calloc (1, sizeof *list);
        char error [320] = "out of memory";
        int rc = text && list ? s_request_from_json (text, strlen (text), 0, list, error, sizeof error) : -1;
        free (text);
        if (rc != 0) {
            fprintf (stderr, "mandrill-publish: invalid request: %s\n", error);
            free (list);
            return EXIT_BAD_INPUT;
        }
        list_count = 1;
    }
    else
    if (file) {
        int rc = s_read_file (file, keep_going, &list, &list_count);
        if (rc < 0)
            return EXIT_BAD_INPUT;
        if (rc > 0)
            input_result = EXIT_BAD_INPUT;
    }
    if (!opts.mock && list_count < (size_t) opts.publishers)
        opts.publishers = list_count ? (int64_t) list_count : 1;

    //  Signals arrive on a signalfd read by this thread only; the
    //  publisher threads inherit the blocked mask.
    zsys_handler_set (NULL);
    //  CZMQ's lazy zsys_init is not thread-safe: threads that make their
    //  first sockets at once can trip its asserts, so initialise here
    zsys_init ();
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGHUP);
    sigaddset (&signals, SIGQUIT);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    int signal_fd = signalfd (-1, &signals, SFD_CLOEXEC);
    if (signal_fd < 0) {
        mdl_error ("signalfd: %s", strerror (errno));
        return EXIT_UNCONFIRMED;
    }

    int64_t planned = opts.mock ? opts.count : (int64_t) list_count;
    if (planned >= PROGRESS_MIN || opts.rate >= 100)
        progress = true;
    s_summarise = progress;
    publisher_t *publishers = calloc ((size_t) opts.publishers, sizeof *publishers);
    pthread_t *threads = calloc ((size_t) opts.publishers, sizeof *threads);
    assert (publishers && threads);
    //  List mode: contiguous shares, so each publisher keeps the file's order.
    size_t share_start = 0;
    for (int i = 0; i < opts.publishers; i++) {
        publisher_t *self = &publishers [i];
        self->index = i;
        self->opts = &opts;
        if (!opts.mock) {
            size_t share = list_count / (size_t) opts.publishers
                         + ((size_t) i < list_count % (size_t) opts.publishers);
            self->list = list + share_start;
            self->list_count = share;
            share_start += share;
        }
        else {
            self->mock_count = opts.count < 0 ? -1
                             : opts.count / opts.publishers + (i < opts.count % opts.publishers);
            self->mock_rate = opts.rate / (double) opts.publishers;
        }
    }
    mdl_info ("publishing to %s with %" PRId64 " publisher%s, batches of up to %" PRId64,
              opts.broker, opts.publishers, opts.publishers > 1 ? "s" : "", opts.batch);
    int64_t t0 = s_now ();
    for (int i = 0; i < opts.publishers; i++)
        if (pthread_create (&threads [i], NULL, s_publisher_thread, &publishers [i]) != 0) {
            mdl_error ("cannot start publisher %d", i);
            return EXIT_UNCONFIRMED;
        }

    //  Wait for the threads: poll the signalfd with a one-second tick for
    //  progress; a thread's end is seen by counting finished ones.
    int64_t last_confirmed = 0, last_at = t0;
    int joined = 0;
    while (joined < opts.publishers) {
        struct pollfd item = { signal_fd, POLLIN, 0 };
        int rc = poll (&item, 1, 100);
        if (rc > 0 && (item.revents & POLLIN)) {
            struct signalfd_siginfo info;
            if (read (signal_fd, &info, sizeof info) == (ssize_t) sizeof info) {
                int stop = atomic_fetch_add (&s_stop, 1);
                mdl_info ("Received exit signal %s, %s", strsignal ((int) info.ssi_signo),
                          stop == 0 ? "waiting for the batches in flight (again to stop now)"
                                    : "stopping now");
            }
        }
        while (joined < opts.publishers && pthread_tryjoin_np (threads [joined], NULL) == 0)
            joined++;
        if (progress && s_now () - last_at >= 1000)
            s_progress (t0, &last_confirmed, &last_at);
    }
    close (signal_fd);

    int result = input_result;
    for (int i = 0; i < opts.publishers; i++)
        if (publishers [i].result > result)
            result = publishers [i].result;
    int64_t elapsed = s_now () - t0;
    int64_t confirmed = atomic_load (&s_confirmed);
    mdl_info ("done: %" PRId64 " sent, %" PRId64 " confirmed (%" PRId64 " of them duplicates), %"
              PRId64 " not confirmed, %" PRId64 " batches resent, %.1f s, %.0f msgs/s",
              atomic_load (&s_sent), confirmed, atomic_load (&s_duplicates),
              atomic_load (&s_failed), atomic_load (&s_resends), elapsed / 1000.0,
              elapsed > 0 ? confirmed * 1000.0 / elapsed : 0.0);
    if (instance && result == EXIT_OK)
        printf ("%s\n", list [0].id);
    for (size_t i = 0; i < list_count; i++)
        s_request_free (&list [i]);
    free (list);
    free (publishers);
    free (threads);
    return result;
}
