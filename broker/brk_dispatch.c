/*  brk_dispatch: matching ready messages to worker credit; see
    brk_server_internal.h.

    Once per loop turn the queue deals what is ready (brk_queue_dispatch);
    each lease is appended to its peer's DELIVER being assembled, and every
    peer's DELIVER is sent once at the end of the deal (or when it holds
    MMP_MAX_DELIVERIES, or the next lease would take it over MMP_MAX_BODY
    bytes), so a burst costs one frame per worker, not one per
    message. Peers whose send failed are removed afterwards, their leases
    returned. Failure: out of memory while building a DELIVER, it is not
    sent and logged; its leases expire and are redelivered, so nothing is
    lost, only late. Cost: O(leases made) plus O(peers) for the gone-peer
    sweep.
*/
#include "brk_server_internal.h"

#include <string.h>

#include "mdl_array.h"
#include "mdl_log.h"

static void
s_flush_deliveries (s_server_t *self, s_peer_t *peer)
{
    if (!peer->deliver_count)
        return;
    if (mmp_encode_deliver_end (&peer->deliver) == 0)
        s_send_backend (self, peer, MMP_DELIVER, mmp_buf_data (&peer->deliver),
                        mmp_buf_size (&peer->deliver));
    else
        mdl_error ("out of memory building DELIVER for %s; leases will expire and be redelivered",
                   peer->key);
    mmp_buf_clear (&peer->deliver);
    peer->deliver_count = 0;
}

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id,
           const brk_msg_t *msg, int64_t attempt)
{
    s_server_t *self = (s_server_t *) arg;
    s_peer_t *peer = (s_peer_t *) brk_worker_handle (worker);
    size_t len;
    const char *json = brk_msg_json (msg, &len);
    //  Only a worker that declared it gets the newer optional field
    const char *publisher = brk_worker_features (worker) & MMP_FEATURE_PUBLISHER
                          ? brk_msg_publisher (msg) : NULL;
    //  A frame is closed and sent when the next lease would take it over
    //  MMP_MAX_BODY bytes or MMP_MAX_DELIVERIES leases
    //  The in-doubt mark goes only to workers that declared they read it
    bool doubt = (brk_worker_features (worker) & MMP_FEATURE_IN_DOUBT)
              && brk_queue_msg_in_doubt (msg) && !(brk_msg_steps (msg) & MMP_STEP_RESTART);
    int rc = mmp_encode_deliver_add (&peer->deliver, peer->deliver_count, delivery_id, attempt,
                                     self->config.queue.ack_deadline_ms, brk_msg_steps (msg),
                                     doubt, publisher, json, len);
    if (rc == 1) {
        s_flush_deliveries (self, peer);
        rc = mmp_encode_deliver_add (&peer->deliver, 0, delivery_id, attempt,
                                     self->config.queue.ack_deadline_ms, brk_msg_steps (msg),
                                     doubt, publisher, json, len);
    }
    if (rc != 0) {
        mdl_error ("out of memory building DELIVER for %s; the lease will expire and be redelivered",
                   peer->key);
        return;
    }
    peer->deliver_count++;
    if (!peer->pending) {
        if (mdl_array_reserve (&self->flush, &self->flush_capacity, self->flush_count + 1,
                               sizeof *self->flush) != 0) {
            //  Send at once instead of later
            s_flush_deliveries (self, peer);
            return;
        }
        self->flush [self->flush_count++] = peer;
        peer->pending = true;
    }
    if (peer->deliver_count == MMP_MAX_DELIVERIES)
        s_flush_deliveries (self, peer);
}

void
brk_dispatch (s_server_t *self)
{
    brk_queue_dispatch (self->queue, s_deliver, self);
    //  Send what was assembled, then drop peers whose sends failed
    for (size_t i = 0; i < self->flush_count; i++) {
        s_peer_t *peer = self->flush [i];
        s_flush_deliveries (self, peer);
        peer->pending = false;
    }
    self->flush_count = 0;
    s_peer_t *peer = zhashx_first (self->peers);
    while (peer) {
        if (peer->gone) {
            brk_backend_peer_remove (self, peer, "unreachable", false);
            peer = zhashx_first (self->peers);
        }
        else
            peer = zhashx_next (self->peers);
    }
}
