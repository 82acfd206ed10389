/*  brk_frontend: publishers and control clients; see
    brk_server_internal.h.

    Frontend peers need no state: every request gets exactly one reply.
    PUBLISH is all or nothing per batch, idempotent on message_id, and its
    PUBACK waits until the store is durable up to the batch's last record
    (brk_durable); STATS, DEADLETTERS and REPLAY are answered at once;
    the restart-policy commands go to brk_control.c.
    At the memory bounds (max_pending, max_memory: brk_server.h) a whole
    PUBLISH batch is refused with ERROR unavailable before anything of it
    is stored or queued (refused_full counts them).
    Failure: bad input, a command for the other socket, a store that
    cannot write (ERROR unavailable) or no memory (ERROR internal; what
    was queued of a batch stays, and a retry finds it as duplicates) are
    all answered; the loop carries on.
    Cost: PUBLISH is O(requests) with one store append each; DEADLETTERS
    O(limit); STATS O(1).
*/
#include "brk_server_internal.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

#include "mdl_log.h"
#include "mdl_uuid.h"

//  Memory bounds (brk_server.h): may a batch be queued now? Checked before
//  the batch, so one batch accepted below a limit may pass it by its size.
//  Returns 0, or -1 after answering ERROR unavailable.
static int
s_admit (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    char reason [160];
    if (self->config.max_pending > 0 && stats.pending >= (uint64_t) self->config.max_pending)
        snprintf (reason, sizeof reason, "max_pending: %" PRIu64 " requests pending (limit %"
                  PRId64 "); retry later", stats.pending, self->config.max_pending);
    else
    if (self->config.max_memory > 0 && stats.memory_bytes >= (uint64_t) self->config.max_memory)
        snprintf (reason, sizeof reason, "max_memory: %" PRIu64 " bytes of requests held (limit %"
                  PRId64 "); retry later", stats.memory_bytes, self->config.max_memory);
    else
        return 0;
    self->refused_full++;
    s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE, reason, msg->req);
    return -1;
}

//  publisher: the authenticated name of the sender's key, or NULL without CURVE.
static void
s_handle_publish (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg,
                  const char *publisher)
{
    if (self->store_error) {
        s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                  "the broker cannot write its journal now; retry later", msg->req);
        return;
    }
    if (s_admit (self, routing_id, msg) != 0)
        return;
    uint64_t wait_for = 0;      //  Journal sequence this PUBACK waits for
    //  Normalise every request first: the batch is all or nothing
    char (*ids) [37] = malloc (msg->message_count * sizeof *ids);
    bool *duplicate = calloc (msg->message_count, sizeof (bool));
    //  Under a policy: the id each request was coalesced with, or NULL
    const char **coalesced = self->policy ? calloc (msg->message_count, sizeof (char *)) : NULL;
    mmp_buf_t json;
    mmp_buf_init (&json);
    if (!ids || !duplicate || (self->policy && !coalesced)) {
        free (ids);
        free (duplicate);
        free (coalesced);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        if (request->message_id) {
            //  The codec checked it is a uuid: only hex digits change case
            for (size_t c = 0; c < 36; c++) {
                char digit = request->message_id [c];
                ids [i][c] = digit >= 'A' && digit <= 'F' ? (char) (digit + 'a' - 'A') : digit;
            }
            ids [i][36] = 0;
        }
        else
            mdl_uuid4 (ids [i]);
    }
    size_t accepted = 0;
    //  Every message of the batch came from the one connection
    brk_queue_set_publisher (self->queue, publisher);
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        //  A large batch takes a millisecond or more. Replies that became
        //  durable meanwhile (the PUBACK of the batch before this one)
        //  go out now, not after it: a publisher that pipelines a few
        //  batches then has its next one ready when this one is done.
        //  Held messages are released after the batch, so coalescing
        //  inside it does not depend on the disk's timing (PROTOCOL.md).
        //  Cost: one read of the store's position per 64 requests.
        if (i % 64 == 63)
            brk_durable_send_replies (self);
        //  Attributes are stored and forwarded as the publisher's bytes
        char hostname [MMP_MAX_INSTANCE + 16];
        if (!request->hostname)
            snprintf (hostname, sizeof hostname, "%s.example.net", request->instance_name);
        int rc = mmp_encode_request (&json, ids [i], request->instance_name,
                                     request->hostname ? request->hostname : hostname,
                                     request->attributes, request->attributes_size);
        brk_msg_t *known = brk_queue_lookup (self->queue, ids [i]);
        if (known) {
            rc = 1;
            self->duplicates++;
            //  A duplicate still waiting for the disk: its PUBACK waits too
            //  (also one coalesced at publish, which is not held)
            if ((brk_msg_held (known) || brk_msg_seq (known) > self->durable)
            &&  brk_msg_seq (known) > wait_for)
                wait_for = brk_msg_seq (known);
        }
        else
        if (rc == 0) {
            brk_store_record_t record = {
                .kind = BRK_STORE_PUBLISH, .message_id = ids [i], .request = mmp_buf_data (&json),
                .published_ms = (uint64_t) mdl_clock_wall (), .publisher = publisher
            };
            uint64_t seq = brk_store_append (self->store, &record);
            if (seq == 0) {
                //  Those before it are stored and queued: a retry of
                //  the batch finds them as duplicates
                mmp_buf_free (&json);
                free (ids);
                free (duplicate);
                free (coalesced);
                self->store_dirty = true;
                s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                          "the broker cannot write its journal now; retry later", msg->req);
                return;
            }
            self->store_dirty = true;
            if (brk_store_deferred (self->store))
                wait_for = seq;
            else
                seq = 0;        //  No promise to wait for: deliver at once
            rc = brk_queue_publish (self->queue, ids [i], mmp_buf_data (&json), mmp_buf_size (&json), seq);
            if (rc == 0 && coalesced) {
                brk_msg_t *queued = brk_queue_lookup (self->queue, ids [i]);
                coalesced [i] = queued ? brk_queue_msg_coalesced_with (queued) : NULL;
            }
        }
        if (rc < 0) {
            //  Out of memory part-way: what was queued stays queued (the
            //  publisher retries the batch and those are duplicates)
            mmp_buf_free (&json);
            free (ids);
            free (duplicate);
            free (coalesced);
            mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                            "out of memory; retry the batch", msg->req);
            return;
        }
        duplicate [i] = rc == 1;
        if (!duplicate [i])
            accepted++;
    }
    mmp_buf_free (&json);
    //  A large batch is committed at once, not at the end of the turn: the
    //  writer makes it durable while the next PUBLISH (already read, in a
    //  drain) is parsed, and that one's loop sends this PUBACK on the way
    if (accepted >= 64 && self->store_dirty) {
        brk_store_commit (self->store);
        self->store_dirty = false;
    }

    mmp_buf_t *buf = &self->reply;
    int failed = mmp_encode_puback_coalesced (buf, ids [0], sizeof ids [0], duplicate, coalesced,
                                              msg->message_count, self->durability, msg->req);
    free (coalesced);
    if (msg->message_count - accepted)
        mdl_debug ("PUBLISH: %zu accepted, %zu duplicates", accepted, msg->message_count - accepted);
    free (ids);
    free (duplicate);
    if (failed) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory building PUBACK; retry the batch", msg->req);
        return;
    }
    if (s_reply_when_durable (self, self->frontend, routing_id, MMP_PUBACK, buf, wait_for) != 0)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory holding the PUBACK; retry the batch", msg->req);
}

static void
s_handle_stats (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_int (buf, "published", (int64_t) stats.published);
    mmp_encode_member_int (buf, "duplicates", (int64_t) (stats.duplicates + self->duplicates));
    mmp_encode_member_int (buf, "delivered", (int64_t) stats.delivered);
    mmp_encode_member_int (buf, "redelivered", (int64_t) stats.redelivered);
    mmp_encode_member_int (buf, "acked", (int64_t) stats.acked);
    mmp_encode_member_int (buf, "nacked", (int64_t) stats.nacked);
    mmp_encode_member_int (buf, "expired", (int64_t) stats.expired);
    mmp_encode_member_int (buf, "dead_lettered", (int64_t) stats.dead_lettered);
    mmp_encode_member_int (buf, "replayed", (int64_t) stats.replayed);
    mmp_encode_member_int (buf, "workers_lost", (int64_t) stats.workers_lost);
    mmp_encode_member_int (buf, "workers_left", (int64_t) stats.workers_left);
    mmp_encode_member_int (buf, "ready", (int64_t) stats.ready);
    mmp_encode_member_int (buf, "delayed", (int64_t) stats.delayed);
    mmp_encode_member_int (buf, "in_flight", (int64_t) stats.in_flight);
    mmp_encode_member_int (buf, "dead_letters", (int64_t) stats.dead);
    mmp_encode_member_int (buf, "workers", (int64_t) stats.workers);
    mmp_encode_member_int (buf, "oldest_unacked_ms", (int64_t) stats.oldest_unacked_ms);
    mmp_encode_member_int (buf, "in_doubt", (int64_t) stats.in_doubt);
    mmp_encode_member_int (buf, "uptime_ms", (int64_t) (mdl_clock_now (&self->clock) - self->started));
    mmp_encode_member_int (buf, "epoch", (int64_t) brk_queue_epoch (self->queue));
    mmp_encode_member_int (buf, "held", (int64_t) stats.held);
    mmp_encode_member_string (buf, "durability", self->durability);
    mmp_encode_member_int (buf, "replies_waiting", (int64_t) self->reply_count);
    mmp_encode_member_int (buf, "coalesced", (int64_t) stats.coalesced);
    brk_control_stats_groups (self, buf);
    mmp_encode_member_int (buf, "max_pending", self->config.max_pending);
    mmp_encode_member_int (buf, "max_memory", self->config.max_memory);
    mmp_encode_member_int (buf, "memory_bytes", (int64_t) stats.memory_bytes);
    mmp_encode_member_int (buf, "refused_full", (int64_t) self->refused_full);
    mmp_encode_member_int (buf, "requeued", (int64_t) stats.requeued);
    mmp_encode_member_int (buf, "late", (int64_t) stats.late);
    brk_store_stats_t journal;
    brk_store_stats (self->store, &journal);
    if (journal.persistent) {
        mmp_encode_member_object (buf, "journal");
        mmp_encode_member_string (buf, "dir", self->data_dir);
        mmp_encode_member_int (buf, "disk_bytes", (int64_t) journal.disk_bytes);
        mmp_encode_member_int (buf, "files", (int64_t) journal.files);
        mmp_encode_member_int (buf, "live_messages", (int64_t) journal.live_messages);
        mmp_encode_member_int (buf, "fsyncs", (int64_t) journal.fsyncs);
        mmp_encode_member_int (buf, "compactions", (int64_t) journal.compactions);
        mmp_encode_member_string (buf, "status", journal.error ? strerror (journal.error) : "ok");
        mmp_encode_close_object (buf);
    }
    mmp_encode_member_string (buf, "version", MANDRILL_VERSION);
    if (mmp_encode_close (buf, msg->req) == 0)
        mmp_send (self->frontend, routing_id, MMP_STATS, mmp_buf_data (buf), mmp_buf_size (buf));
    else
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
}

typedef struct {
    mmp_buf_t *buf;             //  Where the list goes
    size_t count;               //  Written so far
} s_dead_ctx_t;

static void
s_dead_letter_json (void *arg, const brk_msg_t *msg)
{
    s_dead_ctx_t *ctx = (s_dead_ctx_t *) arg;
    mmp_buf_t *buf = ctx->buf;
    size_t len;
    const char *json = brk_msg_json (msg, &len);
    ctx->count++;
    mmp_encode_item_object (buf);
    mmp_encode_member_raw (buf, "message", json, len);
    mmp_encode_member_string (buf, "reason", brk_msg_dead_reason (msg) ? brk_msg_dead_reason (msg) : "");
    mmp_encode_member_int (buf, "attempts", brk_msg_attempts (msg));
    mmp_encode_member_int (buf, "dead_at_ms", brk_msg_dead_at (msg));
    if (brk_msg_publisher (msg))
        mmp_encode_member_string (buf, "publisher", brk_msg_publisher (msg));
    mmp_encode_member_raw (buf, "history", "", 0);
    s_history_json (buf, msg);
    mmp_encode_close_object (buf);
}

//  The attempt history of a message as a JSON array: the live one, or the
//  text recovered from the journal.
void
s_history_json (mmp_buf_t *buf, const brk_msg_t *msg)
{
    const brk_attempt_t *history;
    size_t entries = brk_msg_history (msg, &history);
    if (entries == 0 && brk_msg_history_json (msg)) {
        mmp_buf_puts (buf, brk_msg_history_json (msg));
        return;
    }
    mmp_buf_append (buf, "[", 1);
    for (size_t i = 0; i < entries; i++)
        mmp_encode_history_entry (buf, history [i].attempt, history [i].delivery_id,
                                  history [i].worker, brk_msg_publisher (msg), history [i].outcome,
                                  history [i].reason, history [i].at_ms);
    mmp_encode_close_array (buf);
}

static void
s_handle_dead_letters (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    //  A reply must fit one frame the client accepts: stop well before 1 MiB
    size_t limit = msg->limit > 0 ? (size_t) msg->limit : 1000;
    if (limit > 1000)
        limit = 1000;
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_array (buf, "dead_letters");
    s_dead_ctx_t ctx = { buf, 0 };
    brk_queue_dead_letters (self->queue, limit, s_dead_letter_json, &ctx);
    mmp_encode_close_array (buf);
    mmp_encode_member_int (buf, "total", (int64_t) stats.dead);
    if (mmp_encode_close (buf, msg->req) != 0 || mmp_buf_size (buf) > MMP_MAX_BODY)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_TOO_LARGE,
                        "dead letters do not fit one reply; ask with a smaller limit", msg->req);
    else
        mmp_send (self->frontend, routing_id, MMP_DEADLETTERS, mmp_buf_data (buf), mmp_buf_size (buf));
}

static void
s_handle_replay (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    //  Ids lower-cased into one block; replayed ones fill it from the front,
    //  unknown ones from the back
    size_t count = msg->message_id_count;
    char (*ids) [37] = malloc ((count ? count : 1) * sizeof *ids);
    const char **lists = malloc ((count ? count : 1) * sizeof *lists);
    if (!ids || !lists) {
        free (ids);
        free (lists);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    size_t replayed = 0, unknown = 0;
    for (size_t i = 0; i < count; i++) {
        for (size_t c = 0; c < 36; c++)
            ids [i][c] = (char) tolower ((unsigned char) msg->message_ids [i][c]);
        ids [i][36] = 0;
        bool done = brk_queue_replay (self->queue, ids [i]) == 0;
        if (done) {
            lists [replayed++] = ids [i];
            mdl_info ("replayed dead letter %s", ids [i]);
        }
        else
            lists [count - ++unknown] = ids [i];
    }
    mmp_buf_t *buf = &self->reply;
    if (mmp_encode_replayed (buf, lists, replayed, lists + count - unknown, unknown, msg->req) == 0)
        mmp_send (self->frontend, routing_id, MMP_REPLAYED, mmp_buf_data (buf), mmp_buf_size (buf));
    else
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
    free (ids);
    free (lists);
}

void
brk_frontend_handle (s_server_t *self)
{
    for (int i = 0; i < BRK_DRAIN_BATCH; i++) {
        zframe_t *routing_id = NULL;
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        mmp_meta_t meta;
        int rc = mmp_recv_meta (self->frontend, false, &routing_id, MMP_TO_BROKER, &msg, &err, &meta);
        if (rc == -1) {
            zframe_destroy (&routing_id);
            break;
        }
        if (rc == -2) {
            if (routing_id)
                s_reject (self, self->frontend, "frontend", routing_id, err.code, err.reason,
                          err.req [0] ? err.req : NULL);
            zframe_destroy (&routing_id);
            continue;
        }
        if (self->config.verbose)
            mdl_debug ("frontend: %s", mmp_command_name (msg.command));
        if (self->auth && brk_auth_check (self->auth, meta.user_id, meta.key, msg.command) != 0) {
            mmp_send_error (self->frontend, routing_id, MMP_ERR_FORBIDDEN,
                            "your role may not use this command", msg.req);
            mmp_msg_reset (&msg);
            zframe_destroy (&routing_id);
            continue;
        }
        switch (msg.command) {
            case MMP_PUBLISH: {
                const char *publisher = NULL;
                if (brk_auth_role (meta.user_id, &publisher) == BRK_ROLE_NONE)
                    publisher = NULL;
                s_handle_publish (self, routing_id, &msg, publisher);
                break;
            }
            case MMP_STATS:
                s_handle_stats (self, routing_id, &msg);
                break;
            case MMP_DEADLETTERS:
                s_handle_dead_letters (self, routing_id, &msg);
                break;
            case MMP_REPLAY:
                s_handle_replay (self, routing_id, &msg);
                break;
            case MMP_PAUSE:
            case MMP_RESUME:
            case MMP_GROUPS:
            case MMP_INFLIGHT:
            case MMP_WORKERS:
            case MMP_RELOAD:
                brk_control_handle (self, routing_id, &msg);
                break;
            default:
                s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNEXPECTED,
                          "command not accepted on the frontend socket", msg.req);
                break;
        }
        mmp_msg_reset (&msg);
        zframe_destroy (&routing_id);
    }
}
