/*  pub_window: see pub_window.h. */
#include "pub_window.h"
#include "cli_reply.h"
#include "mdl_clock.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mmp.h"

#include <assert.h>
#include <czmq.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define BODY_OVERHEAD       64  //  PUBLISH body bytes besides the requests: {"req":"p63-<n>","messages":[]}
#define BACKOFF_FIRST_MS    100     //  First wait after ERROR unavailable
#define BACKOFF_MAX_MS      5000    //  Cap of the doubling wait

//  A PUBLISH awaiting its PUBACK.
typedef struct {
    bool used;                  //  Slot holds a batch
    char req [32];              //  Correlation string echoed by the broker
    char *body;                 //  The full PUBLISH body, resent unchanged
    size_t body_size;           //  strlen (body)
    pub_request_t *requests;    //  The requests (owned; json freed with the batch)
    size_t count;               //  Number of requests
    int attempts;               //  Sends so far that may count toward --retries
    bool refused;               //  Last answer was ERROR unavailable: the resend is no retry
    int64_t resend_at;          //  Monotonic ms at which it is sent again
} batch_t;

struct _pub_window_t {
    int index;                  //  0 .. publishers-1
    const pub_options_t *opts;  //  Shared options
    pub_totals_t *totals;       //  Shared counters and the stop request
    pub_request_t *list;        //  List mode: its requests (not owned by batches until taken)
    size_t list_count;          //  List mode: how many
    size_t list_next;           //  List mode: next to take
    int64_t mock_count;         //  Mock: how many to make (-1 = forever)
    double mock_rate;           //  Mock: this publisher's msgs/s (0 = U[0,1) pacing)
    pub_mock_t *mock;           //  Mock: the source, made when the thread starts
    uint64_t random_state;      //  Mock: xorshift state
    uint64_t seq;               //  Next req number
    batch_t window [PUB_WINDOW];    //  Batches in flight
    int result;                 //  Exit code contribution
    int64_t backoff_ms;         //  Current wait after ERROR unavailable, 0 when none
    int64_t paused_until;       //  Monotonic ms before which nothing is sent (backoff)
    int oom;                    //  Out of memory building a batch: stop (PUB_UNCONFIRMED)
};

pub_window_t *
pub_window_new (int index, const pub_options_t *options, pub_totals_t *totals,
                pub_request_t *list, size_t count, int64_t mock_count, double mock_rate)
{
    assert (options && totals);
    pub_window_t *self = calloc (1, sizeof (pub_window_t));
    if (!self)
        return NULL;
    self->index = index;
    self->opts = options;
    self->totals = totals;
    self->list = list;
    self->list_count = count;
    self->mock_count = mock_count;
    self->mock_rate = mock_rate;
    return self;
}

void
pub_window_destroy (pub_window_t **self_p)
{
    assert (self_p);
    pub_window_t *self = *self_p;
    if (self) {
        pub_mock_destroy (&self->mock);
        free (self);
        *self_p = NULL;
    }
}

int
pub_window_result (const pub_window_t *self)
{
    assert (self);
    return self->result;
}

static void
s_batch_free (batch_t *batch)
{
    for (size_t i = 0; i < batch->count; i++)
        pub_request_free (&batch->requests [i]);
    free (batch->requests);
    free (batch->body);
    memset (batch, 0, sizeof *batch);
}

//  Take the next request that is due at now. Returns 1 (filled), 0 (none
//  due yet; pub_mock_due says when) or -1 (no more).
static int
s_next_request (pub_window_t *self, int64_t now, pub_request_t *request)
{
    if (!self->opts->mock) {
        if (self->list_next >= self->list_count)
            return -1;
        *request = self->list [self->list_next];
        self->list [self->list_next++].json = NULL;     //  Ownership moves to the batch
        return 1;
    }
    return pub_mock_next (self->mock, now, request);
}

static int
s_send_batch (zsock_t *sock, pub_window_t *self, batch_t *batch, int64_t now)
{
    //  A resend after ERROR unavailable is the backoff's, not a retry
    if (!batch->refused)
        batch->attempts++;
    batch->resend_at = now + self->opts->timeout_ms;
    if (batch->attempts > 1 && !batch->refused) {
        atomic_fetch_add (&self->totals->resends, 1);
        mdl_warn ("no PUBACK for batch %s (%zu requests) within %" PRId64 " ms, sending it again "
                  "(attempt %d, same message ids)", batch->req, batch->count,
                  self->opts->timeout_ms, batch->attempts);
    }
    if (mmp_send (sock, NULL, MMP_PUBLISH, batch->body, batch->body_size) != 0) {
        mdl_warn ("send of batch %s failed, will retry", batch->req);
        return -1;
    }
    batch->refused = false;
    return 0;
}

//  Build and send one PUBLISH from the requests due now. Returns the
//  number of requests sent, 0 for none due, -1 when the source is done.
static int
s_fill_batch (zsock_t *sock, pub_window_t *self, batch_t *batch, int64_t now)
{
    pub_request_t request;
    int got = s_next_request (self, now, &request);
    if (got <= 0)
        return got;
    batch->requests = malloc (sizeof (pub_request_t) * (size_t) self->opts->batch);
    if (!batch->requests) {
        mdl_error ("out of memory building a batch of %" PRId64 " requests; stopping",
                   self->opts->batch);
        pub_request_free (&request);
        atomic_fetch_add (&self->totals->failed, 1);
        self->oom = 1;
        return -1;
    }
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
    char prefix [16];
    snprintf (prefix, sizeof prefix, "p%d", self->index);
    cli_req_make (batch->req, sizeof batch->req, prefix, self->seq++);
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_encode_publish_begin (&buf);
    for (size_t i = 0; i < batch->count; i++)
        mmp_encode_publish_add (&buf, batch->requests [i].json, strlen (batch->requests [i].json));
    int failed = mmp_encode_publish_end (&buf, batch->req);
    //  Ownership of the text moves to the batch
    batch->body = failed ? NULL : mmp_buf_detach (&buf, &batch->body_size);
    if (!batch->body) {
        mmp_buf_free (&buf);
        mdl_error ("out of memory building batch %s (%zu requests); stopping", batch->req, batch->count);
        atomic_fetch_add (&self->totals->failed, (int64_t) batch->count);
        s_batch_free (batch);
        self->oom = 1;
        return -1;
    }
    atomic_fetch_add (&self->totals->sent, (int64_t) batch->count);
    s_send_batch (sock, self, batch, now);
    return (int) batch->count;
}

//  Log a confirmed batch: per message when small, one summary otherwise.
static void
s_log_confirmed (const pub_window_t *self, batch_t *batch, mmp_msg_t *reply)
{
    size_t duplicates = reply->other_id_count;
    if (batch->count <= 5 && !self->totals->summarise) {
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
    if (!self->totals->summarise)
        mdl_info ("Published %zu messages (%s .. %s), %zu duplicates, durability %s",
                  batch->count, batch->requests [0].name, batch->requests [batch->count - 1].name,
                  duplicates, reply->durability ? reply->durability : "?");
    else
        mdl_debug ("Published %zu messages (%s .. %s), %zu duplicates, durability %s",
                  batch->count, batch->requests [0].name, batch->requests [batch->count - 1].name,
                  duplicates, reply->durability ? reply->durability : "?");
}

static void
s_give_up (pub_window_t *self, batch_t *batch, const char *why, int code)
{
    mdl_error ("giving up on batch %s (%zu requests): %s; unconfirmed message ids follow",
               batch->req, batch->count, why);
    for (size_t i = 0; i < batch->count; i++)
        mdl_error ("unconfirmed: %s %s", batch->requests [i].id, batch->requests [i].name);
    atomic_fetch_add (&self->totals->failed, (int64_t) batch->count);
    if (self->result == PUB_OK || code == PUB_REFUSED)
        self->result = code;
    s_batch_free (batch);
}

//  An ERROR without req: the broker could not read the body far enough to
//  find req (too large, not JSON), so it cannot say which batch it refuses.
//  Retrying would be refused the same way, so this never waits for a
//  timeout: with one batch in flight it is that batch; with more, which one
//  is unknowable, so the whole run stops at once.
static void
s_handle_anonymous_error (pub_window_t *self, mmp_msg_t *reply)
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
    for (int i = 0; i < PUB_WINDOW; i++)
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
        s_give_up (self, batch, why, PUB_REFUSED);
        return;
    }
    mdl_error ("%s; %d batches were in flight, so which one is unknown: stopping", why, inflight);
    for (int i = 0; i < PUB_WINDOW; i++)
        if (self->window [i].used)
            s_give_up (self, &self->window [i], why, PUB_REFUSED);
    atomic_store (&self->totals->stop, PUB_STOP_NOW);
}

static void
s_handle_reply (pub_window_t *self, mmp_msg_t *reply, int64_t now)
{
    const char *reqs [PUB_WINDOW];
    for (int i = 0; i < PUB_WINDOW; i++)
        reqs [i] = self->window [i].used ? self->window [i].req : NULL;
    int match = cli_reply_match (reply, reqs, PUB_WINDOW);
    if (match == CLI_REPLY_ANONYMOUS) {
        s_handle_anonymous_error (self, reply);
        return;
    }
    batch_t *batch = match >= 0 ? &self->window [match] : NULL;
    if (!batch) {
        //  A late reply to a batch already confirmed by an earlier reply.
        mdl_debug ("reply for %s, which is no longer in flight", reply->req ? reply->req : "(no req)");
        return;
    }
    if (reply->command == MMP_PUBACK) {
        if (reply->message_id_count != batch->count)
            mdl_warn ("PUBACK for %s lists %zu ids for %zu requests",
                      batch->req, reply->message_id_count, batch->count);
        atomic_fetch_add (&self->totals->confirmed, (int64_t) batch->count);
        atomic_fetch_add (&self->totals->duplicates, (int64_t) reply->other_id_count);
        s_log_confirmed (self, batch, reply);
        s_batch_free (batch);
        if (self->backoff_ms) {
            mdl_info ("broker accepting again after backing off");
            self->backoff_ms = 0;
        }
    }
    else
    if (reply->command == MMP_ERROR) {
        if (reply->code && streq (reply->code, MMP_ERR_UNAVAILABLE)) {
            //  Full or cannot write: the whole window waits, the wait doubles
            //  up to BACKOFF_MAX_MS per refusal after the last wait ended,
            //  and each wait is logged once (not per batch)
            if (now >= self->paused_until) {
                self->backoff_ms = self->backoff_ms
                    ? (self->backoff_ms * 2 < BACKOFF_MAX_MS ? self->backoff_ms * 2 : BACKOFF_MAX_MS)
                    : BACKOFF_FIRST_MS;
                self->paused_until = now + self->backoff_ms;
                mdl_warn ("broker unavailable (%s); backing off %" PRId64 " ms",
                          reply->reason ? reply->reason : "", self->backoff_ms);
            }
            batch->refused = true;
            batch->resend_at = self->paused_until;
        }
        else {
            char why [320];
            snprintf (why, sizeof why, "broker refused it: %s: %s",
                      reply->code ? reply->code : "?", reply->reason ? reply->reason : "");
            s_give_up (self, batch, why, PUB_REFUSED);
        }
    }
    else
        mdl_warn ("unexpected %s reply from the broker", mmp_command_name (reply->command));
}

void *
pub_window_run (void *arg)
{
    pub_window_t *self = (pub_window_t *) arg;
    const pub_options_t *opts = self->opts;
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
            atomic_fetch_add (&self->totals->failed, share);
        self->result = PUB_UNCONFIRMED;
        return NULL;
    }
    zsock_set_linger (sock, 0);
    //  While the broker is away the socket queues resends; once its queue
    //  is full a send fails after 100 ms (and is retried later) instead of
    //  blocking the thread past a stop signal.
    zsock_set_sndtimeo (sock, 100);
    if (opts->mock) {
        mdl_random_t random = mdl_random_system (&self->random_state);
        self->random_state ^= (uint64_t) (self->index + 1) * 0x9E3779B97F4A7C15ULL;
        self->mock = pub_mock_new (self->mock_count, self->mock_rate, random, zclock_mono ());
        if (!self->mock) {
            mdl_error ("out of memory");
            zsock_destroy (&sock);
            self->result = PUB_UNCONFIRMED;
            return NULL;
        }
    }
    bool exhausted = false;
    int64_t drain_deadline = 0;
    while (true) {
        int64_t now = zclock_mono ();
        int stop = atomic_load (&self->totals->stop);
        int inflight = 0;
        for (int i = 0; i < PUB_WINDOW; i++)
            inflight += self->window [i].used;
        if (stop >= PUB_STOP_NOW)
            break;
        if (stop && !drain_deadline)
            drain_deadline = now + opts->timeout_ms;
        if ((exhausted || stop) && inflight == 0)
            break;
        if (drain_deadline && now >= drain_deadline)
            break;
        if (self->oom)
            break;
        //  New batches, while there is room and work (and no backoff).
        while (!exhausted && !stop && inflight < PUB_WINDOW && now >= self->paused_until) {
            batch_t *free_slot = NULL;
            for (int i = 0; i < PUB_WINDOW && !free_slot; i++)
                if (!self->window [i].used)
                    free_slot = &self->window [i];
            int sent = s_fill_batch (sock, self, free_slot, now);
            if (sent < 0 && self->oom)
                break;
            if (sent < 0)
                exhausted = true;
            if (sent <= 0)
                break;
            inflight++;
        }
        //  Resends, and the earliest moment something needs doing.
        int64_t wake = now + 100;
        if (!exhausted && !stop && inflight < PUB_WINDOW && opts->mock
        &&  pub_mock_due (self->mock) < wake)
            wake = pub_mock_due (self->mock) > self->paused_until
                 ? pub_mock_due (self->mock) : self->paused_until;
        for (int i = 0; i < PUB_WINDOW; i++) {
            batch_t *batch = &self->window [i];
            if (!batch->used)
                continue;
            if (now >= batch->resend_at) {
                if (batch->attempts > opts->retries && !batch->refused)
                    s_give_up (self, batch, "no PUBACK after all retries", PUB_UNCONFIRMED);
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
                s_handle_reply (self, &reply, zclock_mono ());
            mmp_msg_reset (&reply);
        }
    }
    for (int i = 0; i < PUB_WINDOW; i++)
        if (self->window [i].used)
            s_give_up (self, &self->window [i], "stopped before the broker confirmed it",
                       PUB_UNCONFIRMED);
    if (self->oom && self->result == PUB_OK)
        self->result = PUB_UNCONFIRMED;
    //  Requests never taken (stopped early) are unconfirmed too.
    if (!opts->mock && self->list_next < self->list_count) {
        mdl_error ("%zu requests were not sent (stopped)", self->list_count - self->list_next);
        atomic_fetch_add (&self->totals->failed, (int64_t) (self->list_count - self->list_next));
        if (self->result == PUB_OK)
            self->result = PUB_UNCONFIRMED;
    }
    zsock_destroy (&sock);
    return NULL;
}

