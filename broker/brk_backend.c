/*  brk_backend: the workers' side of the broker; see
    brk_server_internal.h.

    A peer is known from its HELLO on (a map of routing id -> s_peer_t,
    each with its queue worker). EXTEND/ACK/NACK/PROGRESS are served for
    any peer, registered or not (delivery ids are the authority); PROGRESS
    ["started"] goes to brk_queue_started (stored, so PROGRESSED waits for
    the store like any progress); HELLO's features are the worker's
    (brk_queue_worker_set_features); CREDIT,
    HEARTBEAT and BYE need a HELLO first. Every message from a known peer
    counts as a sign of life. A peer whose send fails is marked gone and
    removed after the turn (brk_dispatch); one silent for 3 heartbeats is
    removed by the queue's tick (brk_backend_worker_lost). Either way its
    leases go back at once. Cost: one map look-up per message, one reply
    per request; heartbeats are O(peers) once per interval.
*/
#include "brk_server_internal.h"

#include <string.h>

#include "mdl_log.h"

_Static_assert (MMP_FEATURE_IN_DOUBT == BRK_FEATURE_IN_DOUBT && MMP_FEATURE_VERIFY == BRK_FEATURE_VERIFY
                && MMP_STEP_STARTED == BRK_STEP_STARTED, "feature and step bits agree");

static void
s_peer_destroy (s_peer_t **peer_p)
{
    s_peer_t *peer = *peer_p;
    if (peer) {
        zframe_destroy (&peer->routing_id);
        mmp_buf_free (&peer->deliver);
        free (peer);
        *peer_p = NULL;
    }
}

void
brk_backend_peer_destructor (void **item)
{
    s_peer_destroy ((s_peer_t **) item);
}

static s_peer_t *
s_peer_lookup (s_server_t *self, zframe_t *routing_id)
{
    char key [2 * 256 + 1];
    brk_server_hex (routing_id, key, sizeof key);
    return zhashx_lookup (self->peers, key);
}

//  Forget a peer: its leases go back to the queue at once.
void
brk_backend_peer_remove (s_server_t *self, s_peer_t *peer, const char *reason, bool left)
{
    if (peer->worker) {
        mdl_info ("worker %s (%s) left: %s, %" PRId64 " leases returned",
                  brk_worker_name (peer->worker), peer->key, reason,
                  brk_worker_in_flight (peer->worker));
        if (left)
            brk_queue_worker_leave (self->queue, &peer->worker);
        else
            brk_queue_worker_remove (self->queue, &peer->worker, reason);
    }
    //  Take it out of the flush list too
    for (size_t i = 0; i < self->flush_count; i++)
        if (self->flush [i] == peer) {
            self->flush [i] = self->flush [--self->flush_count];
            break;
        }
    zhashx_delete (self->peers, peer->key);
}

//  The queue found a worker silent for 3 heartbeats.
void
brk_backend_worker_lost (void *arg, void *handle)
{
    s_server_t *self = (s_server_t *) arg;
    s_peer_t *peer = (s_peer_t *) handle;
    mdl_warn ("worker %s (%s) lost: no heartbeat for %" PRId64 " ms, %" PRId64 " leases returned",
              brk_worker_name (peer->worker), peer->key, 3 * self->config.queue.heartbeat_ms,
              brk_worker_in_flight (peer->worker));
    //  The queue removes the worker itself after this call
    peer->worker = NULL;
    for (size_t i = 0; i < self->flush_count; i++)
        if (self->flush [i] == peer) {
            self->flush [i] = self->flush [--self->flush_count];
            break;
        }
    zhashx_delete (self->peers, peer->key);
}

//  Reply {ok, stale, unknown[, deadline_ms]} for an operation on ids.
typedef brk_result_t (s_id_op_fn) (s_server_t *self, uint64_t id, const mmp_msg_t *msg);

static brk_result_t
s_op_ack (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
    (void) msg;
    return brk_queue_ack (self->queue, id);
}

static brk_result_t
s_op_extend (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
    return brk_queue_extend (self->queue, id, msg->extension_ms);
}

static brk_result_t
s_op_nack (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
    //  A worker shutting down gives back what it never started: no attempt used
    if (msg->requeue)
        return brk_queue_requeue (self->queue, id, msg->reason);
    return brk_queue_nack (self->queue, id, msg->delay_ms, msg->reason);
}

//  "started" (the restart command is about to run) goes to
//  brk_queue_started, the finished steps to brk_queue_progress; both are
//  stored, so PROGRESSED (sent once the store is durable) tells the worker
//  that the broker will remember the start across a crash.
static brk_result_t
s_op_progress (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
    unsigned done = msg->steps & ~MMP_STEP_STARTED;
    brk_result_t result = BRK_OK;
    if (msg->steps & MMP_STEP_STARTED)
        result = brk_queue_started (self->queue, id);
    if (done && result == BRK_OK)
        result = brk_queue_progress (self->queue, id, done);
    return result;
}

//  Delivery ids are the authority, so these are served for any peer,
//  also one that has not said HELLO (yet): after a broker restart a
//  worker's acks may arrive before its new HELLO. peer may be NULL.
//  ACKED and PROGRESSED wait until what they confirm is durable, so a
//  worker forgets its work only once the broker cannot.
static void
s_handle_ids (s_server_t *self, zframe_t *routing_id, s_peer_t *peer, const mmp_msg_t *msg,
              s_id_op_fn *op, mmp_command_t reply_command)
{
    //  Results are written into three runs of one array, in input order
    uint64_t *sorted = calloc (3 * msg->id_count, sizeof (uint64_t));
    if (!sorted) {
        mmp_send_error (self->backend, routing_id, MMP_ERR_INTERNAL, "out of memory", NULL);
        return;
    }
    uint64_t seq_before = self->last_seq;
    uint64_t *runs [3] = { sorted, sorted + msg->id_count, sorted + 2 * msg->id_count };
    size_t counts [3] = { 0, 0, 0 };
    for (size_t i = 0; i < msg->id_count; i++) {
        brk_result_t result = op (self, msg->ids [i], msg);
        runs [result][counts [result]++] = msg->ids [i];
    }
    mmp_buf_t *buf = &self->reply;
    int64_t deadline_ms = reply_command != MMP_EXTENDED ? -1
                        : msg->extension_ms >= 0 ? msg->extension_ms : self->config.queue.ack_deadline_ms;
    int failed = mmp_encode_id_reply (buf, runs [BRK_OK], counts [BRK_OK],
                                      runs [BRK_STALE], counts [BRK_STALE],
                                      runs [BRK_UNKNOWN], counts [BRK_UNKNOWN], deadline_ms);
    free (sorted);
    if (counts [BRK_STALE] + counts [BRK_UNKNOWN])
        mdl_debug ("%s from %s: %zu stale, %zu unknown ids", mmp_command_name (msg->command),
                   peer ? brk_worker_name (peer->worker) : "an unregistered peer",
                   counts [BRK_STALE], counts [BRK_UNKNOWN]);
    if (failed)
        return;
    //  While the disk fails, acks are answered at once: they keep working
    //  (in memory), at the price of a possible redelivery after a crash
    uint64_t wait_for = 0;
    if (brk_store_deferred (self->store) && !self->store_error
    &&  (reply_command == MMP_ACKED || reply_command == MMP_PROGRESSED)
    &&  self->last_seq > seq_before)
        wait_for = self->last_seq;
    if (s_reply_when_durable (self, self->backend, routing_id, reply_command, buf, wait_for) != 0)
        mmp_send_error (self->backend, routing_id, MMP_ERR_INTERNAL, "out of memory; send again", NULL);
}

//  user_id is the connection's ZAP User-Id ("" without CURVE): with CURVE
//  the worker's name starts with its key's name, so events and logs say
//  who it is by its certificate, not only by what it claims in HELLO.
static void
s_handle_hello (s_server_t *self, zframe_t *routing_id, s_peer_t *peer, const mmp_msg_t *msg,
                const char *user_id)
{
    if (!peer) {
        peer = calloc (1, sizeof (s_peer_t));
        if (!peer) {
            mmp_send_error (self->backend, routing_id, MMP_ERR_INTERNAL, "out of memory", NULL);
            return;
        }
        brk_server_hex (routing_id, peer->key, sizeof peer->key);
        peer->routing_id = zframe_dup (routing_id);
        mmp_buf_init (&peer->deliver);
        char name [80];
        const char *key_name = NULL;
        if (brk_auth_role (user_id, &key_name) != BRK_ROLE_NONE && msg->name && !streq (msg->name, key_name))
            snprintf (name, sizeof name, "%.31s/%.31s", key_name, msg->name);
        else
        if (brk_auth_role (user_id, &key_name) != BRK_ROLE_NONE)
            snprintf (name, sizeof name, "%.63s", key_name);
        else
            snprintf (name, sizeof name, "%.63s", msg->name ? msg->name : peer->key);
        peer->worker = brk_queue_worker_add (self->queue, name, msg->credit, peer);
        if (!peer->routing_id || !peer->worker || zhashx_insert (self->peers, peer->key, peer) != 0) {
            if (peer->worker)
                brk_queue_worker_remove (self->queue, &peer->worker, "out of memory");
            s_peer_destroy (&peer);
            mmp_send_error (self->backend, routing_id, MMP_ERR_INTERNAL, "out of memory", NULL);
            return;
        }
        mdl_info ("worker %s (%s) joined with credit %" PRId64 "%s%s", name, peer->key, msg->credit,
                  msg->features & MMP_FEATURE_IN_DOUBT ? ", in_doubt" : "",
                  msg->features & MMP_FEATURE_VERIFY ? ", verify" : "");
    }
    else {
        brk_queue_worker_set_credit (self->queue, peer->worker, msg->credit);
        mdl_info ("worker %s said HELLO again, credit %" PRId64,
                  brk_worker_name (peer->worker), msg->credit);
    }
    //  MMP_FEATURE_* and BRK_FEATURE_* are the same bits
    brk_queue_worker_set_features (self->queue, peer->worker, msg->features);
    mmp_buf_t *buf = &self->reply;
    if (mmp_encode_welcome (buf, self->config.queue.ack_deadline_ms, self->config.queue.heartbeat_ms,
                            brk_queue_epoch (self->queue)) == 0)
        s_send_backend (self, peer, MMP_WELCOME, mmp_buf_data (buf), mmp_buf_size (buf));
}

void
brk_backend_handle (s_server_t *self)
{
    for (int i = 0; i < BRK_DRAIN_BATCH; i++) {
        zframe_t *routing_id = NULL;
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        mmp_meta_t meta;
        int rc = mmp_recv_meta (self->backend, false, &routing_id, MMP_TO_BROKER, &msg, &err, &meta);
        if (rc == -1) {
            zframe_destroy (&routing_id);
            break;
        }
        if (rc == -2) {
            s_peer_t *peer = routing_id ? s_peer_lookup (self, routing_id) : NULL;
            if (peer)
                brk_queue_worker_seen (self->queue, peer->worker);
            if (routing_id)
                s_reject (self, self->backend, "backend", routing_id, err.code, err.reason, NULL);
            zframe_destroy (&routing_id);
            continue;
        }
        s_peer_t *peer = s_peer_lookup (self, routing_id);
        if (peer)
            brk_queue_worker_seen (self->queue, peer->worker);
        if (self->config.verbose)
            mdl_debug ("backend %s: %s", peer ? brk_worker_name (peer->worker) : "(new)",
                       mmp_command_name (msg.command));
        if (self->auth && brk_auth_check (self->auth, meta.user_id, meta.key, msg.command) != 0) {
            mmp_send_error (self->backend, routing_id, MMP_ERR_FORBIDDEN,
                            "your role may not use this command", msg.req);
            mmp_msg_reset (&msg);
            zframe_destroy (&routing_id);
            continue;
        }
        switch (msg.command) {
            case MMP_HELLO:
                s_handle_hello (self, routing_id, peer, &msg, meta.user_id);
                break;
            case MMP_EXTEND:
                s_handle_ids (self, routing_id, peer, &msg, s_op_extend, MMP_EXTENDED);
                break;
            case MMP_ACK:
                s_handle_ids (self, routing_id, peer, &msg, s_op_ack, MMP_ACKED);
                break;
            case MMP_NACK:
                s_handle_ids (self, routing_id, peer, &msg, s_op_nack, MMP_NACKED);
                break;
            case MMP_PROGRESS:
                s_handle_ids (self, routing_id, peer, &msg, s_op_progress, MMP_PROGRESSED);
                break;
            case MMP_CREDIT:
            case MMP_HEARTBEAT:
            case MMP_BYE:
                if (!peer) {
                    s_reject (self, self->backend, "backend", routing_id, MMP_ERR_UNEXPECTED,
                              "say HELLO first (the broker may have restarted)", NULL);
                    break;
                }
                if (msg.command == MMP_CREDIT)
                    brk_queue_worker_set_credit (self->queue, peer->worker, msg.credit);
                else
                if (msg.command == MMP_BYE)
                    brk_backend_peer_remove (self, peer, "said BYE", true);
                break;
            default:
                s_reject (self, self->backend, "backend", routing_id, MMP_ERR_UNEXPECTED,
                          "command not accepted on the backend socket", msg.req);
                break;
        }
        mmp_msg_reset (&msg);
        zframe_destroy (&routing_id);
    }
}

void
brk_backend_send_heartbeats (s_server_t *self)
{
    mmp_buf_t *buf = &self->reply;
    if (mmp_encode_empty (buf) != 0)
        return;                 //  Out of memory: the next interval tries again
    s_peer_t *peer = zhashx_first (self->peers);
    while (peer) {
        s_send_backend (self, peer, MMP_HEARTBEAT, mmp_buf_data (buf), mmp_buf_size (buf));
        peer = zhashx_next (self->peers);
    }
}
