/*  brk_dispatch: matching ready messages to worker credit; see
    brk_server_internal.h.

    Once per loop turn the queue deals what is ready (brk_queue_dispatch);
    each lease is appended to its peer's DELIVER being assembled, and every
    peer's DELIVER is sent once at the end of the deal (or when it holds
    MMP_MAX_DELIVERIES), so a burst costs one frame per worker, not one per
    message. Peers whose send failed are removed afterwards, their leases
    returned. Failure: out of memory while building a DELIVER, it is not
    sent and logged; its leases expire and are redelivered, so nothing is
    lost, only late. Cost: O(leases made) plus O(peers) for the gone-peer
    sweep.
*/
#include "brk_server_internal.h"

#include <string.h>

#include "mdl_log.h"

static void
s_flush_deliveries (s_server_t *self, s_peer_t *peer)
{
    if (!peer->deliver_count)
        return;
    mmp_buf_puts (&peer->deliver, "]}");
    if (!peer->deliver.failed)
        s_send_backend (self, peer, MMP_DELIVER, peer->deliver.data, peer->deliver.size);
    else
        mdl_error ("out of memory building DELIVER for %s; leases will expire and be redelivered",
                   peer->key);
    mmp_buf_clear (&peer->deliver);
    peer->deliver_count = 0;
}

//  Copy a literal or a number's digits to cursor, returning the new end:
//  a delivery's head is put together on the stack and appended once.
#define S_PUT(cursor, literal) \
    (memcpy ((cursor), (literal), sizeof (literal) - 1), (cursor) + sizeof (literal) - 1)

static char *
s_put_u64 (char *cursor, uint64_t value)
{
    char digits [24];
    char *start = digits + sizeof digits;
    do {
        *--start = (char) ('0' + value % 10);
        value /= 10;
    } while (value);
    size_t size = (size_t) (digits + sizeof digits - start);
    memcpy (cursor, start, size);
    return cursor + size;
}

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id,
           const brk_msg_t *msg, int64_t attempt)
{
    s_server_t *self = (s_server_t *) arg;
    s_peer_t *peer = (s_peer_t *) brk_worker_handle (worker);
    mmp_buf_t *buf = &peer->deliver;
    //  Longest head: 16 + 3 * 20 digits + the literals, well under 200
    char head [200];
    char *cursor = head;
    if (peer->deliver_count == 0)
        cursor = S_PUT (cursor, "{\"deliveries\":[");
    else
        cursor = S_PUT (cursor, ",");
    cursor = S_PUT (cursor, "{\"delivery_id\":");
    cursor = s_put_u64 (cursor, delivery_id);
    cursor = S_PUT (cursor, ",\"attempt\":");
    cursor = s_put_u64 (cursor, (uint64_t) attempt);
    cursor = S_PUT (cursor, ",\"deadline_ms\":");
    cursor = s_put_u64 (cursor, (uint64_t) self->config.queue.ack_deadline_ms);
    unsigned steps = brk_msg_steps (msg);
    cursor = S_PUT (cursor, ",\"steps\":[");
    if (steps & MMP_STEP_SAVE)
        cursor = (steps & MMP_STEP_RESTART) ? S_PUT (cursor, "\"save\",") : S_PUT (cursor, "\"save\"");
    if (steps & MMP_STEP_RESTART)
        cursor = S_PUT (cursor, "\"restart\"");
    cursor = S_PUT (cursor, "],\"message\":");
    mmp_buf_append (buf, head, (size_t) (cursor - head));
    size_t len;
    const char *json = brk_msg_json (msg, &len);
    mmp_buf_append (buf, json, len);
    mmp_buf_append (buf, "}", 1);
    peer->deliver_count++;
    if (!peer->pending) {
        if (self->flush_count == self->flush_capacity) {
            size_t capacity = self->flush_capacity ? self->flush_capacity * 2 : 16;
            s_peer_t **flush = realloc (self->flush, capacity * sizeof *flush);
            if (!flush) {
                //  Send at once instead of later
                s_flush_deliveries (self, peer);
                return;
            }
            self->flush = flush;
            self->flush_capacity = capacity;
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
