/*  brk_server: the broker actor; see brk_server.h.

    One thread, one zmq_poll over the pipe, three sockets and the journal's
    descriptor. Every wake-up
    drains each ready socket (up to a batch, so one busy peer cannot starve
    the others), then fires what is due in the queue, deals ready messages
    to workers with credit, and sends heartbeats. Replies are built with
    mmp_buf on the hot paths (DELIVER, ACKED, PUBACK) and with cJSON where
    speed does not matter (STATS).

    The server owns the queue (brk_queue), the journal (brk_journal, when
    there is a data dir) and a map of backend peers, each with its routing
    id, its queue worker and a DELIVER being assembled. Frontend peers need
    no state: every request gets exactly one reply, which for PUBLISH may
    wait in the PUBACK list until the journal says the batch is durable.
*/
#include "brk_server.h"

#include <ctype.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_util.h"
#include "mmp.h"

#define S_DRAIN_BATCH 256       //  Messages taken from one socket per turn

typedef struct {
    char key [2 * 256 + 1];     //  Routing id in hex, the map key
    zframe_t *routing_id;       //  For replies
    brk_worker_t *worker;       //  Queue registration
    mmp_buf_t deliver;          //  DELIVER being assembled
    size_t deliver_count;       //  Deliveries in it
    bool pending;               //  In the server's flush list
    bool gone;                  //  A send failed: remove after this turn
} s_peer_t;

//  A reply waiting for the journal: a PUBACK, or an ACKED / PROGRESSED
//  whose records must be on disk before the peer may forget its work.
typedef struct _s_reply_t {
    zsock_t *sock;              //  Frontend or backend
    zframe_t *routing_id;       //  Peer to answer
    mmp_command_t command;      //  What to send
    char *json;                 //  The reply body
    size_t size;                //  Its length
    uint64_t seq;               //  Send once the journal is durable up to here
    struct _s_reply_t *next;    //  Next waiting, in arrival order
} s_reply_t;

typedef struct {
    zsock_t *pipe;              //  Actor pipe
    zsock_t *frontend;          //  ROUTER for publishers and control
    zsock_t *backend;           //  ROUTER for workers
    zsock_t *events;            //  XPUB for lifecycle events
    brk_server_config_t config; //  Settings, copied
    char *data_dir;             //  Copy of config.data_dir, or NULL
    brk_queue_t *queue;         //  The state machine
    brk_journal_t *journal;     //  The journal, or NULL in memory mode
    const char *durability;     //  "memory", "none", "batch" or "sync"
    bool journal_dirty;         //  Appended since the last commit
    uint64_t durable;           //  Journal sequence known durable
    int journal_error;          //  Last journal status seen (errno or 0)
    s_reply_t *replies;         //  Replies waiting for the journal, oldest first
    s_reply_t *replies_tail;    //  Newest of them
    size_t reply_count;         //  How many
    uint64_t last_seq;          //  Sequence of the newest journal record
    uint64_t duplicates;        //  Publishes refused as duplicates
    mdl_clock_t clock;          //  Monotonic time
    zhashx_t *peers;            //  Routing id hex -> s_peer_t, backend peers
    s_peer_t **flush;           //  Peers with a DELIVER to send
    size_t flush_count;         //  Entries in flush
    size_t flush_capacity;      //  Slots in flush
    mmp_buf_t reply;            //  Scratch for replies
    mmp_buf_t event;            //  Scratch for events
    int64_t subscriptions;      //  Topics subscribed on events (XPUB)
    int64_t next_heartbeat;     //  When to send heartbeats next
    int64_t started;            //  Monotonic ms at start
    int ports [3];              //  Last bound port per socket
    bool terminated;            //  $TERM received
    int64_t log_window;         //  Start of the current warn-rate window
    int log_count;              //  Warn lines in that window
    int64_t log_suppressed;     //  Lines held back in that window
    brk_auth_t *auth;           //  ZAP handler and role checks, or NULL without CURVE
} s_server_t;

void
brk_server_config_defaults (brk_server_config_t *config)
{
    memset (config, 0, sizeof *config);
    brk_queue_config_defaults (&config->queue);
    brk_journal_config_defaults (&config->journal);
    config->data_dir = NULL;
}

//  --------------------------------------------------------------------------
//  Logging peers' mistakes, at most 20 lines a second so that a flood of
//  garbage cannot turn into a flood of log.

static void
s_hex (const zframe_t *frame, char *out, size_t size)
{
    static const char digits [] = "0123456789abcdef";
    const byte *data = zframe_data ((zframe_t *) frame);
    size_t len = zframe_size ((zframe_t *) frame);
    size_t used = 0;
    for (size_t i = 0; i < len && used + 2 < size; i++) {
        out [used++] = digits [data [i] >> 4];
        out [used++] = digits [data [i] & 15];
    }
    out [used] = 0;
}

static bool
s_warn_allowed (s_server_t *self)
{
    int64_t now = mdl_clock_now (&self->clock);
    if (now - self->log_window >= 1000) {
        if (self->log_suppressed)
            mdl_warn ("%" PRId64 " more bad-input warnings suppressed in the last second",
                      self->log_suppressed);
        self->log_window = now;
        self->log_count = 0;
        self->log_suppressed = 0;
    }
    if (self->log_count < 20) {
        self->log_count++;
        return true;
    }
    self->log_suppressed++;
    return false;
}

static void
s_reject (s_server_t *self, zsock_t *sock, const char *side, zframe_t *routing_id,
          const char *code, const char *reason, const char *req)
{
    if (s_warn_allowed (self)) {
        char peer [64];
        s_hex (routing_id, peer, sizeof peer);
        mdl_warn ("%s peer %s: %s: %s", side, peer, code, reason);
    }
    mmp_send_error (sock, routing_id, code, reason, req);
}

//  --------------------------------------------------------------------------
//  Events

static void
s_event (void *arg, const brk_event_info_t *info)
{
    s_server_t *self = (s_server_t *) arg;
    mmp_buf_t *buf = &self->event;
    const char *name = brk_event_name (info->event);
    mmp_buf_clear (buf);
    mmp_buf_printf (buf, "{\"event\":\"%s\",\"at_ms\":%" PRId64, name, mdl_clock_wall ());
    if (info->msg) {
        mmp_buf_printf (buf, ",\"message_id\":\"%s\"", brk_msg_id (info->msg));
        if (info->attempt)
            mmp_buf_printf (buf, ",\"attempt\":%" PRId64, info->attempt);
    }
    if (info->delivery_id) {
        mmp_buf_puts (buf, ",\"delivery_id\":");
        mmp_buf_u64 (buf, info->delivery_id);
    }
    if (info->worker) {
        mmp_buf_puts (buf, ",\"worker\":");
        mmp_buf_json_string (buf, brk_worker_name (info->worker));
    }
    if (info->reason) {
        mmp_buf_puts (buf, ",\"reason\":");
        mmp_buf_json_string (buf, info->reason);
    }
    mmp_buf_puts (buf, "}");
    if (buf->failed)
        return;
    void *handle = zsock_resolve (self->events);
    //  A slow subscriber loses events (PUB semantics), never the broker's time
    if (zmq_send (handle, name, strlen (name), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send (handle, buf->data, buf->size, ZMQ_DONTWAIT);
}

static void
s_handle_subscriptions (s_server_t *self)
{
    void *handle = zsock_resolve (self->events);
    for (int i = 0; i < S_DRAIN_BATCH; i++) {
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, handle, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&msg);
            break;
        }
        const byte *data = zmq_msg_data (&msg);
        if (zmq_msg_size (&msg) >= 1) {
            if (data [0] == 1)
                self->subscriptions++;
            else
            if (data [0] == 0 && self->subscriptions > 0)
                self->subscriptions--;
        }
        zmq_msg_close (&msg);
    }
    brk_queue_set_events_enabled (self->queue, self->subscriptions > 0);
}

//  --------------------------------------------------------------------------
//  Backend peers

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

static void
s_peer_destructor (void **item)
{
    s_peer_destroy ((s_peer_t **) item);
}

static s_peer_t *
s_peer_lookup (s_server_t *self, zframe_t *routing_id)
{
    char key [2 * 256 + 1];
    s_hex (routing_id, key, sizeof key);
    return zhashx_lookup (self->peers, key);
}

//  Forget a peer: its leases go back to the queue at once.
static void
s_peer_remove (s_server_t *self, s_peer_t *peer, const char *reason, bool left)
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
static void
s_worker_lost (void *arg, void *handle)
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

static int
s_send_backend (s_server_t *self, s_peer_t *peer, mmp_command_t command,
                const char *json, size_t len)
{
    if (mmp_send (self->backend, peer->routing_id, command, json, len) != 0) {
        //  Unreachable on a mandatory ROUTER: the peer has gone
        peer->gone = true;
        return -1;
    }
    return 0;
}

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

static void
s_dispatch (s_server_t *self)
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
            s_peer_remove (self, peer, "unreachable", false);
            peer = zhashx_first (self->peers);
        }
        else
            peer = zhashx_next (self->peers);
    }
}

static int s_reply_when_durable (s_server_t *self, zsock_t *sock, zframe_t *routing_id,
                                 mmp_command_t command, const mmp_buf_t *buf, uint64_t seq);

//  Reply {ok, stale, unknown[, deadline_ms]} for an operation on ids.
typedef brk_result_t (s_id_op_fn) (s_server_t *self, uint64_t id, const mmp_msg_t *msg);

static brk_result_t
s_op_ack (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
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
    return brk_queue_nack (self->queue, id, msg->delay_ms, msg->reason);
}

static brk_result_t
s_op_progress (s_server_t *self, uint64_t id, const mmp_msg_t *msg)
{
    return brk_queue_progress (self->queue, id, msg->steps);
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
    uint64_t *sorted = malloc (3 * msg->id_count * sizeof (uint64_t));
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
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"ok\":");
    mmp_buf_id_array (buf, runs [BRK_OK], counts [BRK_OK]);
    mmp_buf_puts (buf, ",\"stale\":");
    mmp_buf_id_array (buf, runs [BRK_STALE], counts [BRK_STALE]);
    mmp_buf_puts (buf, ",\"unknown\":");
    mmp_buf_id_array (buf, runs [BRK_UNKNOWN], counts [BRK_UNKNOWN]);
    if (reply_command == MMP_EXTENDED)
        mmp_buf_printf (buf, ",\"deadline_ms\":%" PRId64,
                        msg->extension_ms >= 0 ? msg->extension_ms : self->config.queue.ack_deadline_ms);
    mmp_buf_puts (buf, "}");
    free (sorted);
    if (counts [BRK_STALE] + counts [BRK_UNKNOWN])
        mdl_debug ("%s from %s: %zu stale, %zu unknown ids", mmp_command_name (msg->command),
                   peer ? brk_worker_name (peer->worker) : "an unregistered peer",
                   counts [BRK_STALE], counts [BRK_UNKNOWN]);
    if (buf->failed)
        return;
    //  While the disk fails, acks are answered at once: they keep working
    //  (in memory), at the price of a possible redelivery after a crash
    uint64_t wait_for = 0;
    if (self->journal && self->config.journal.mode != BRK_JOURNAL_NONE && !self->journal_error
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
        s_hex (routing_id, peer->key, sizeof peer->key);
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
        mdl_info ("worker %s (%s) joined with credit %" PRId64, name, peer->key, msg->credit);
    }
    else {
        brk_queue_worker_set_credit (self->queue, peer->worker, msg->credit);
        mdl_info ("worker %s said HELLO again, credit %" PRId64,
                  brk_worker_name (peer->worker), msg->credit);
    }
    char json [160];
    int len = snprintf (json, sizeof json,
                        "{\"ack_deadline_ms\":%" PRId64 ",\"heartbeat_ms\":%" PRId64 ",\"epoch\":%" PRId64 "}",
                        self->config.queue.ack_deadline_ms, self->config.queue.heartbeat_ms,
                        brk_queue_epoch (self->queue));
    s_send_backend (self, peer, MMP_WELCOME, json, (size_t) len);
}

static void
s_handle_backend (s_server_t *self)
{
    for (int i = 0; i < S_DRAIN_BATCH; i++) {
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
                    s_peer_remove (self, peer, "said BYE", true);
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


//  --------------------------------------------------------------------------
//  Journal

static void s_history_json (mmp_buf_t *buf, const brk_msg_t *msg);

//  Changes the queue makes on its own (leases, acks, dead letters...) go
//  to the journal here. A refused append is not fatal: the change is in
//  memory, and after a crash the message comes back (at least once).
static void
s_store (void *arg, const brk_event_info_t *info)
{
    s_server_t *self = (s_server_t *) arg;
    const char *id = brk_msg_id (info->msg);
    uint64_t seq = 0;
    switch (info->event) {
        case BRK_EVENT_DELIVERED:
            seq = brk_journal_append_attempt (self->journal, id, (uint32_t) info->attempt,
                                              info->delivery_id);
            break;
        case BRK_EVENT_ACKED:
            seq = brk_journal_append_ack (self->journal, id);
            break;
        case BRK_EVENT_PROGRESS:
            seq = brk_journal_append_progress (self->journal, id, brk_msg_steps (info->msg));
            break;
        case BRK_EVENT_REPLAYED:
            seq = brk_journal_append_replay (self->journal, id);
            break;
        case BRK_EVENT_DEAD_LETTERED: {
            mmp_buf_t history;
            mmp_buf_init (&history);
            s_history_json (&history, info->msg);
            seq = history.failed ? 0
                : brk_journal_append_dead (self->journal, id, info->reason ? info->reason : "",
                                           history.data, (uint64_t) brk_msg_dead_at (info->msg));
            mmp_buf_free (&history);
            break;
        }
        default:
            return;
    }
    if (seq) {
        self->journal_dirty = true;
        self->last_seq = seq;
    }
    else
    if (s_warn_allowed (self))
        mdl_warn ("journal: could not record %s of %s (%s); it may be redone after a crash",
                  brk_event_name (info->event), id, strerror (brk_journal_status (self->journal)));
}

static int
s_replay (const brk_journal_message_t *message, void *arg)
{
    s_server_t *self = (s_server_t *) arg;
    brk_restore_t restore = {
        .message_id = message->message_id,
        .json = message->request,
        .json_len = message->request_size,
        .published_ms = (int64_t) message->published_ms,
        .attempts = message->attempts,
        .delivery_id = message->delivery_id,
        .steps = message->steps,
        .dead = message->dead,
        .dead_reason = message->dead_reason,
        .dead_history = message->dead_history,
        .dead_ms = (int64_t) message->dead_ms
    };
    if (strlen (message->message_id) != 36) {
        mdl_warn ("journal: skipping a message with a malformed id");
        return 0;
    }
    return brk_queue_restore (self->queue, &restore) < 0 ? -1 : 0;
}

static int
s_journal_open (s_server_t *self)
{
    brk_journal_config_t config = self->config.journal;
    config.dir = self->data_dir;
    brk_journal_report_t report;
    memset (&report, 0, sizeof report);
    self->journal = brk_journal_new (&config, s_replay, self, &report);
    if (!self->journal) {
        mdl_error ("journal: cannot open %s: %s", self->data_dir, report.message);
        if (report.code == EILSEQ) {
            mdl_error ("journal: the journal is corrupt before its end; start with --salvage "
                       "to keep what can be read and skip the rest");
            return BRK_SERVER_CORRUPT;
        }
        return report.code == EBUSY ? BRK_SERVER_LOCKED : BRK_SERVER_FAILED;
    }
    if (report.torn_bytes || report.salvaged_bytes)
        mdl_warn ("journal: %s", report.message);
    brk_queue_set_epoch (self->queue, (int64_t) brk_journal_epoch (self->journal));
    brk_queue_set_store_handler (self->queue, s_store, self);
    self->durability = brk_journal_mode_name (config.mode);
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    mdl_info ("journal: %s, %s durability; recovered %" PRIu64 " pending (%" PRIu64
              " of them leased before the restart) and %" PRIu64 " dead letters in %" PRId64
              " ms; epoch %" PRIu64, self->data_dir, self->durability,
              stats.ready + stats.in_flight, stats.in_flight, stats.dead, report.elapsed_ms,
              report.epoch);
    return BRK_SERVER_OK;
}

//  The journal moved on: release held messages and waiting PUBACKs, and
//  say when writing starts or stops failing.
static void
s_journal_progress (s_server_t *self)
{
    uint64_t durable = brk_journal_durable (self->journal);
    int error = brk_journal_status (self->journal);
    if (error != self->journal_error) {
        if (error)
            mdl_error ("journal: writing to %s fails: %s; PUBLISH is refused until it works again",
                       self->data_dir, strerror (error));
        else
            mdl_info ("journal: writing to %s works again", self->data_dir);
        self->journal_error = error;
    }
    if (durable == self->durable)
        return;
    self->durable = durable;
    brk_queue_release (self->queue, durable);
    s_reply_t **link = &self->replies;
    self->replies_tail = NULL;
    while (*link) {
        s_reply_t *reply = *link;
        if (reply->seq <= durable) {
            //  A peer gone meanwhile is no matter: it will ask again
            mmp_send (reply->sock, reply->routing_id, reply->command, reply->json, reply->size);
            *link = reply->next;
            zframe_destroy (&reply->routing_id);
            free (reply->json);
            free (reply);
            self->reply_count--;
        }
        else {
            self->replies_tail = reply;
            link = &reply->next;
        }
    }
}

//  Send the reply in buf now if the journal is durable up to seq (or
//  there is no such promise to keep), else hold it until it is. Returns 0,
//  or -1 when out of memory (nothing was sent).
static int
s_reply_when_durable (s_server_t *self, zsock_t *sock, zframe_t *routing_id,
                      mmp_command_t command, const mmp_buf_t *buf, uint64_t seq)
{
    if (seq == 0 || seq <= self->durable) {
        mmp_send (sock, routing_id, command, buf->data, buf->size);
        return 0;
    }
    s_reply_t *reply = calloc (1, sizeof (s_reply_t));
    if (reply) {
        reply->routing_id = zframe_dup (routing_id);
        reply->json = malloc (buf->size);
        if (reply->json)
            memcpy (reply->json, buf->data, buf->size);
    }
    if (!reply || !reply->routing_id || !reply->json) {
        if (reply) {
            zframe_destroy (&reply->routing_id);
            free (reply->json);
            free (reply);
        }
        return -1;
    }
    reply->sock = sock;
    reply->command = command;
    reply->size = buf->size;
    reply->seq = seq;
    if (self->replies_tail)
        self->replies_tail->next = reply;
    else
        self->replies = reply;
    self->replies_tail = reply;
    self->reply_count++;
    return 0;
}

//  --------------------------------------------------------------------------
//  Frontend

//  --------------------------------------------------------------------------
//  Attributes, printed as cJSON_PrintUnformatted prints them (the text a
//  worker receives must not depend on how the broker got it), straight
//  into the request being built: no intermediate allocation, and no
//  printf for the common number, an integral one. cJSON prints a number
//  that is not a small int with "%1.15g", reads it back, and uses
//  "%1.17g" when that does not come back close enough; for an integer of
//  16 to 19 digits (a nanosecond timestamp) both texts are worked out
//  here in integer arithmetic with the same rounding. Anything else, and
//  the rare exact tie where rounding direction would matter, is left to
//  cJSON itself.

static const uint64_t s_pow10 [20] = {
    UINT64_C (1), UINT64_C (10), UINT64_C (100), UINT64_C (1000), UINT64_C (10000),
    UINT64_C (100000), UINT64_C (1000000), UINT64_C (10000000), UINT64_C (100000000),
    UINT64_C (1000000000), UINT64_C (10000000000), UINT64_C (100000000000),
    UINT64_C (1000000000000), UINT64_C (10000000000000), UINT64_C (100000000000000),
    UINT64_C (1000000000000000), UINT64_C (10000000000000000),
    UINT64_C (100000000000000000), UINT64_C (1000000000000000000),
    UINT64_C (10000000000000000000)
};

//  value (of digits digits) rounded to keep significant digits, to the
//  nearest: *mantissa has keep digits, *exponent is the decimal exponent
//  of its first digit. Returns -1 on an exact tie.
static int
s_round_digits (uint64_t value, int digits, int keep, uint64_t *mantissa, int *exponent)
{
    *exponent = digits - 1;
    if (digits <= keep) {
        *mantissa = value * s_pow10 [keep - digits];
        return 0;
    }
    uint64_t unit = s_pow10 [digits - keep];
    uint64_t rest = value % unit;
    uint64_t kept = value / unit;
    if (rest == unit / 2)
        return -1;
    if (rest > unit / 2 && ++kept == s_pow10 [keep]) {
        kept /= 10;
        (*exponent)++;
    }
    *mantissa = kept;
    return 0;
}

//  Writes "%1.<keep>g" of the rounded integer: exponent notation when the
//  exponent reaches the precision, trailing zeros dropped as %g drops them.
static size_t
s_format_g (char *text, bool negative, uint64_t mantissa, int keep, int exponent)
{
    char digits [20] = "";      //  Zeroed only to calm the sanitizer build's flow analysis
    for (int i = keep - 1; i >= 0; i--) {
        digits [i] = (char) ('0' + mantissa % 10);
        mantissa /= 10;
    }
    size_t size = 0;
    if (negative)
        text [size++] = '-';
    if (exponent < keep) {
        //  Fixed notation; an integer has no fraction to print
        memcpy (text + size, digits, (size_t) exponent + 1);
        return size + (size_t) exponent + 1;
    }
    int last = keep - 1;
    while (last > 0 && digits [last] == '0')
        last--;
    text [size++] = digits [0];
    if (last > 0) {
        text [size++] = '.';
        memcpy (text + size, digits + 1, (size_t) last);
        size += (size_t) last;
    }
    text [size++] = 'e';
    text [size++] = '+';
    text [size++] = (char) ('0' + exponent / 10);
    text [size++] = (char) ('0' + exponent % 10);
    return size;
}

//  cJSON's text of an integral number, or 0 when it is one left to cJSON.
static size_t
s_format_integral (double number, char *text)
{
    double magnitude = fabs (number);
    if (!(magnitude >= 1 && magnitude < 1e19) || magnitude != floor (magnitude))
        return 0;
    uint64_t value = (uint64_t) magnitude;
    int digits = 1;
    while (digits < 20 && value >= s_pow10 [digits])
        digits++;
    bool negative = number < 0;
    if (digits <= 15)
        //  Both "%d" and "%1.15g" print its plain digits
        return s_format_g (text, negative, value, digits, digits - 1);
    uint64_t mantissa;
    int exponent;
    if (s_round_digits (value, digits, 15, &mantissa, &exponent))
        return 0;
    //  What reading the 15-digit text back gives, compared as cJSON does
    double back = (double) (mantissa * s_pow10 [exponent - 14]);
    double larger = back > magnitude ? back : magnitude;
    if (fabs (back - magnitude) <= larger * DBL_EPSILON)
        return s_format_g (text, negative, mantissa, 15, exponent);
    if (s_round_digits (value, digits, 17, &mantissa, &exponent))
        return 0;
    return s_format_g (text, negative, mantissa, 17, exponent);
}


//  Recursion is bounded by the codec's nesting limit (MMP_MAX_DEPTH).
static void
s_print_attributes (mmp_buf_t *buf, const cJSON *item)
{
    if (cJSON_IsNumber (item)) {
        char text [32];
        size_t size = s_format_integral (item->valuedouble, text);
        if (size) {
            mmp_buf_append (buf, text, size);
            return;
        }
    }
    else
    if (cJSON_IsString (item)) {
        mmp_buf_json_string_valid (buf, item->valuestring);
        return;
    }
    else
    if (cJSON_IsTrue (item)) {
        mmp_buf_append (buf, "true", 4);
        return;
    }
    else
    if (cJSON_IsFalse (item)) {
        mmp_buf_append (buf, "false", 5);
        return;
    }
    else
    if (cJSON_IsNull (item)) {
        mmp_buf_append (buf, "null", 4);
        return;
    }
    else
    if (cJSON_IsArray (item) || cJSON_IsObject (item)) {
        bool object = cJSON_IsObject (item);
        mmp_buf_append (buf, object ? "{" : "[", 1);
        for (const cJSON *child = item->child; child; child = child->next) {
            if (child != item->child)
                mmp_buf_append (buf, ",", 1);
            if (object) {
                mmp_buf_json_string_valid (buf, child->string);
                mmp_buf_append (buf, ":", 1);
            }
            s_print_attributes (buf, child);
        }
        mmp_buf_append (buf, object ? "}" : "]", 1);
        return;
    }
    //  Other numbers (and anything unexpected): cJSON's own printer
    char *text = cJSON_PrintUnformatted (item);
    if (!text) {
        buf->failed = true;
        return;
    }
    mmp_buf_puts (buf, text);
    cJSON_free (text);
}

static void
s_handle_publish (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    if (self->journal && self->journal_error) {
        s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                  "the broker cannot write its journal now; retry later", msg->req);
        return;
    }
    uint64_t wait_for = 0;      //  Journal sequence this PUBACK waits for
    //  Normalise every request first: the batch is all or nothing
    char (*ids) [37] = malloc (msg->message_count * sizeof *ids);
    bool *duplicate = calloc (msg->message_count, sizeof (bool));
    mmp_buf_t json;
    mmp_buf_init (&json);
    if (!ids || !duplicate) {
        free (ids);
        free (duplicate);
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
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        mmp_buf_clear (&json);
        mmp_buf_append (&json, "{\"message_id\":\"", 15);
        mmp_buf_append (&json, ids [i], 36);
        mmp_buf_append (&json, "\",\"instance_name\":", 18);
        mmp_buf_json_string (&json, request->instance_name);
        mmp_buf_puts (&json, ",\"hostname\":");
        if (request->hostname)
            mmp_buf_json_string (&json, request->hostname);
        else {
            mmp_buf_puts (&json, "\"");
            mmp_buf_puts (&json, request->instance_name);
            mmp_buf_puts (&json, ".example.net\"");
        }
        if (request->attributes) {
            mmp_buf_puts (&json, ",\"attributes\":");
            s_print_attributes (&json, request->attributes);
        }
        mmp_buf_puts (&json, "}");
        int rc = json.failed ? -1 : 0;
        brk_msg_t *known = brk_queue_lookup (self->queue, ids [i]);
        if (known) {
            rc = 1;
            self->duplicates++;
            //  A duplicate still waiting for the disk: its PUBACK waits too
            if (brk_msg_held (known) && brk_msg_seq (known) > wait_for)
                wait_for = brk_msg_seq (known);
        }
        else
        if (rc == 0) {
            uint64_t seq = 0;
            if (self->journal) {
                seq = brk_journal_append_publish (self->journal, ids [i], json.data,
                                                  (uint64_t) mdl_clock_wall ());
                if (seq == 0) {
                    //  Those before it are journaled and queued: a retry of
                    //  the batch finds them as duplicates
                    mmp_buf_free (&json);
                    free (ids);
                    free (duplicate);
                    self->journal_dirty = true;
                    s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                              "the broker cannot write its journal now; retry later", msg->req);
                    return;
                }
                self->journal_dirty = true;
                if (self->config.journal.mode != BRK_JOURNAL_NONE)
                    wait_for = seq;
                else
                    seq = 0;    //  No promise to wait for: deliver at once
            }
            rc = brk_queue_publish (self->queue, ids [i], json.data, json.size, seq);
        }
        if (rc < 0) {
            //  Out of memory part-way: what was queued stays queued (the
            //  publisher retries the batch and those are duplicates)
            mmp_buf_free (&json);
            free (ids);
            free (duplicate);
            mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                            "out of memory; retry the batch", msg->req);
            return;
        }
        duplicate [i] = rc == 1;
        if (!duplicate [i])
            accepted++;
    }
    mmp_buf_free (&json);

    mmp_buf_t *buf = &self->reply;
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"message_ids\":[");
    for (size_t i = 0; i < msg->message_count; i++) {
        mmp_buf_puts (buf, i ? ",\"" : "\"");
        mmp_buf_append (buf, ids [i], 36);
        mmp_buf_puts (buf, "\"");
    }
    mmp_buf_puts (buf, "],\"duplicates\":[");
    bool first = true;
    for (size_t i = 0; i < msg->message_count; i++)
        if (duplicate [i]) {
            mmp_buf_puts (buf, first ? "\"" : ",\"");
            mmp_buf_append (buf, ids [i], 36);
            mmp_buf_puts (buf, "\"");
            first = false;
        }
    mmp_buf_printf (buf, "],\"durability\":\"%s\"", self->durability);
    if (msg->req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string (buf, msg->req);
    }
    mmp_buf_puts (buf, "}");
    if (msg->message_count - accepted)
        mdl_debug ("PUBLISH: %zu accepted, %zu duplicates", accepted, msg->message_count - accepted);
    free (ids);
    free (duplicate);
    if (buf->failed) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory building PUBACK; retry the batch", msg->req);
        return;
    }
    if (s_reply_when_durable (self, self->frontend, routing_id, MMP_PUBACK, buf, wait_for) != 0)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory holding the PUBACK; retry the batch", msg->req);
}

static void
s_add_req (cJSON *reply, const char *req)
{
    if (req)
        cJSON_AddStringToObject (reply, "req", req);
}

static void
s_handle_stats (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    cJSON *reply = cJSON_CreateObject ();
    if (!reply) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    cJSON_AddNumberToObject (reply, "published", (double) stats.published);
    cJSON_AddNumberToObject (reply, "duplicates", (double) (stats.duplicates + self->duplicates));
    cJSON_AddNumberToObject (reply, "delivered", (double) stats.delivered);
    cJSON_AddNumberToObject (reply, "redelivered", (double) stats.redelivered);
    cJSON_AddNumberToObject (reply, "acked", (double) stats.acked);
    cJSON_AddNumberToObject (reply, "nacked", (double) stats.nacked);
    cJSON_AddNumberToObject (reply, "expired", (double) stats.expired);
    cJSON_AddNumberToObject (reply, "dead_lettered", (double) stats.dead_lettered);
    cJSON_AddNumberToObject (reply, "replayed", (double) stats.replayed);
    cJSON_AddNumberToObject (reply, "workers_lost", (double) stats.workers_lost);
    cJSON_AddNumberToObject (reply, "workers_left", (double) stats.workers_left);
    cJSON_AddNumberToObject (reply, "ready", (double) stats.ready);
    cJSON_AddNumberToObject (reply, "delayed", (double) stats.delayed);
    cJSON_AddNumberToObject (reply, "in_flight", (double) stats.in_flight);
    cJSON_AddNumberToObject (reply, "dead_letters", (double) stats.dead);
    cJSON_AddNumberToObject (reply, "workers", (double) stats.workers);
    cJSON_AddNumberToObject (reply, "oldest_unacked_ms", (double) stats.oldest_unacked_ms);
    cJSON_AddNumberToObject (reply, "uptime_ms", (double) (mdl_clock_now (&self->clock) - self->started));
    cJSON_AddNumberToObject (reply, "epoch", (double) brk_queue_epoch (self->queue));
    cJSON_AddNumberToObject (reply, "held", (double) stats.held);
    cJSON_AddStringToObject (reply, "durability", self->durability);
    cJSON_AddNumberToObject (reply, "replies_waiting", (double) self->reply_count);
    if (self->journal) {
        brk_journal_stats_t journal;
        brk_journal_stats (self->journal, &journal);
        cJSON *object = cJSON_AddObjectToObject (reply, "journal");
        if (object) {
            cJSON_AddStringToObject (object, "dir", self->data_dir);
            cJSON_AddNumberToObject (object, "disk_bytes", (double) journal.disk_bytes);
            cJSON_AddNumberToObject (object, "files", (double) journal.files);
            cJSON_AddNumberToObject (object, "live_messages", (double) journal.live_messages);
            cJSON_AddNumberToObject (object, "fsyncs", (double) journal.fsyncs);
            cJSON_AddNumberToObject (object, "compactions", (double) journal.compactions);
            cJSON_AddStringToObject (object, "status", journal.error ? strerror (journal.error) : "ok");
        }
    }
    cJSON_AddStringToObject (reply, "version", MANDRILL_VERSION);
    s_add_req (reply, msg->req);
    mmp_send_json (self->frontend, routing_id, MMP_STATS, reply);
    cJSON_Delete (reply);
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
    mmp_buf_puts (buf, ctx->count++ ? ",{\"message\":" : "{\"message\":");
    mmp_buf_append (buf, json, len);
    mmp_buf_puts (buf, ",\"reason\":");
    mmp_buf_json_string (buf, brk_msg_dead_reason (msg) ? brk_msg_dead_reason (msg) : "");
    mmp_buf_printf (buf, ",\"attempts\":%" PRId64 ",\"dead_at_ms\":%" PRId64 ",\"history\":",
                    brk_msg_attempts (msg), brk_msg_dead_at (msg));
    s_history_json (buf, msg);
    mmp_buf_puts (buf, "}");
}

//  The attempt history of a message as a JSON array: the live one, or the
//  text recovered from the journal.
static void
s_history_json (mmp_buf_t *buf, const brk_msg_t *msg)
{
    const brk_attempt_t *history;
    size_t entries = brk_msg_history (msg, &history);
    if (entries == 0 && brk_msg_history_json (msg)) {
        mmp_buf_puts (buf, brk_msg_history_json (msg));
        return;
    }
    mmp_buf_puts (buf, "[");
    for (size_t i = 0; i < entries; i++) {
        mmp_buf_printf (buf, "%s{\"attempt\":%" PRId64 ",\"delivery_id\":", i ? "," : "", history [i].attempt);
        mmp_buf_u64 (buf, history [i].delivery_id);
        mmp_buf_puts (buf, ",\"worker\":");
        mmp_buf_json_string (buf, history [i].worker);
        mmp_buf_printf (buf, ",\"outcome\":\"%s\"", history [i].outcome);
        if (history [i].reason [0]) {
            mmp_buf_puts (buf, ",\"reason\":");
            mmp_buf_json_string (buf, history [i].reason);
        }
        mmp_buf_printf (buf, ",\"at_ms\":%" PRId64 "}", history [i].at_ms);
    }
    mmp_buf_puts (buf, "]");
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
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"dead_letters\":[");
    s_dead_ctx_t ctx = { buf, 0 };
    brk_queue_dead_letters (self->queue, limit, s_dead_letter_json, &ctx);
    mmp_buf_printf (buf, "],\"total\":%" PRIu64, stats.dead);
    if (msg->req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string (buf, msg->req);
    }
    mmp_buf_puts (buf, "}");
    if (buf->failed || buf->size > MMP_MAX_BODY)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_TOO_LARGE,
                        "dead letters do not fit one reply; ask with a smaller limit", msg->req);
    else
        mmp_send (self->frontend, routing_id, MMP_DEADLETTERS, buf->data, buf->size);
}

static void
s_handle_replay (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    cJSON *reply = cJSON_CreateObject ();
    cJSON *replayed = cJSON_AddArrayToObject (reply, "replayed");
    cJSON *unknown = cJSON_AddArrayToObject (reply, "unknown");
    if (!reply || !replayed || !unknown) {
        cJSON_Delete (reply);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    for (size_t i = 0; i < msg->message_id_count; i++) {
        char id [37];
        for (size_t c = 0; c < 36; c++)
            id [c] = (char) tolower ((unsigned char) msg->message_ids [i][c]);
        id [36] = 0;
        bool done = brk_queue_replay (self->queue, id) == 0;
        cJSON_AddItemToArray (done ? replayed : unknown, cJSON_CreateString (id));
        if (done)
            mdl_info ("replayed dead letter %s", id);
    }
    s_add_req (reply, msg->req);
    mmp_send_json (self->frontend, routing_id, MMP_REPLAYED, reply);
    cJSON_Delete (reply);
}

static void
s_handle_frontend (s_server_t *self)
{
    for (int i = 0; i < S_DRAIN_BATCH; i++) {
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
                s_reject (self, self->frontend, "frontend", routing_id, err.code, err.reason, NULL);
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
            case MMP_PUBLISH:
                s_handle_publish (self, routing_id, &msg);
                break;
            case MMP_STATS:
                s_handle_stats (self, routing_id, &msg);
                break;
            case MMP_DEADLETTERS:
                s_handle_dead_letters (self, routing_id, &msg);
                break;
            case MMP_REPLAY:
                s_handle_replay (self, routing_id, &msg);
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

//  --------------------------------------------------------------------------
//  Pipe and loop

static zsock_t **
s_socket_named (s_server_t *self, const char *name, int *index)
{
    if (name && streq (name, "frontend")) {
        *index = 0;
        return &self->frontend;
    }
    if (name && streq (name, "backend")) {
        *index = 1;
        return &self->backend;
    }
    if (name && streq (name, "events")) {
        *index = 2;
        return &self->events;
    }
    return NULL;
}

static void
s_handle_pipe (s_server_t *self)
{
    zmsg_t *request = zmsg_recv (self->pipe);
    if (!request) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (request);
    if (command && streq (command, "$TERM"))
        self->terminated = true;
    else
    if (command && streq (command, "STATUS"))
        zsock_send (self->pipe, "i", BRK_SERVER_OK);
    else
    if (command && streq (command, "BIND")) {
        char *name = zmsg_popstr (request);
        char *endpoint = zmsg_popstr (request);
        int index;
        zsock_t **sock = s_socket_named (self, name, &index);
        int port = -1;
        if (sock && *sock && endpoint && !self->auth && !brk_auth_local (endpoint)
        &&  !self->config.insecure)
            mdl_error ("refusing to bind %s to %s without CURVE: give --curve-cert (see "
                       "docs/SECURITY.md), or --insecure to accept anyone who can reach it",
                       name, endpoint);
        else
        if (sock && *sock && endpoint) {
            if (!self->auth && !brk_auth_local (endpoint))
                mdl_warn ("INSECURE: %s bound to %s without CURVE: anyone who can reach it can %s",
                          name, endpoint, streq (name, "backend")
                          ? "pose as a worker, take restart requests and ack them unrun"
                          : streq (name, "events") ? "read every event"
                          : "make Mandrill restart hosts and replay dead letters");
            port = zsock_bind (*sock, "%s", endpoint);
            if (port == -1)
                mdl_error ("cannot bind %s to %s: %s", name, endpoint, zmq_strerror (zmq_errno ()));
            else {
                //  zsock_bind returns 0 for endpoints without a port (ipc, inproc)
                self->ports [index] = port;
                mdl_info ("%s bound to %s", name, endpoint);
            }
        }
        zsock_send (self->pipe, "i", port);
        zstr_free (&name);
        zstr_free (&endpoint);
    }
    else
    if (command && streq (command, "PORT")) {
        char *name = zmsg_popstr (request);
        int index;
        zsock_t **sock = s_socket_named (self, name, &index);
        zsock_send (self->pipe, "i", sock ? self->ports [index] : -1);
        zstr_free (&name);
    }
    else
        mdl_error ("broker actor: unknown pipe command '%s'", command ? command : "(none)");
    zstr_free (&command);
    zmsg_destroy (&request);
}

static void
s_send_heartbeats (s_server_t *self)
{
    static const char empty [] = "{}";
    s_peer_t *peer = zhashx_first (self->peers);
    while (peer) {
        s_send_backend (self, peer, MMP_HEARTBEAT, empty, 2);
        peer = zhashx_next (self->peers);
    }
}

static void
s_server_destroy (s_server_t **self_p)
{
    s_server_t *self = *self_p;
    if (!self)
        return;
    while (self->replies) {
        s_reply_t *reply = self->replies;
        self->replies = reply->next;
        zframe_destroy (&reply->routing_id);
        free (reply->json);
        free (reply);
    }
    brk_journal_destroy (&self->journal);
    free (self->data_dir);
    zhashx_destroy (&self->peers);
    brk_queue_destroy (&self->queue);
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->events);
    brk_auth_destroy (&self->auth);
    free (self->flush);
    mmp_buf_free (&self->reply);
    mmp_buf_free (&self->event);
    free (self);
    *self_p = NULL;
}

static int s_journal_open (s_server_t *self);

//  CURVE on all three sockets, each with its side as ZAP domain, and the
//  ZAP handler that maps keys to roles. Returns 0 or -1 (logged).
static int
s_curve_setup (s_server_t *self, const brk_server_config_t *config)
{
    mdl_curve_cert_t cert;
    char error [300];
    if (mdl_curve_load (config->curve_cert, true, &cert, error, sizeof error) != 0) {
        mdl_error ("broker certificate: %s", error);
        return -1;
    }
    brk_auth_config_t auth_config;
    memset (&auth_config, 0, sizeof auth_config);
    for (int role = 0; role < BRK_ROLE_COUNT; role++)
        auth_config.dirs [role] = config->role_dirs [role];
    self->auth = brk_auth_new (&auth_config);
    if (!self->auth
    ||  mdl_curve_server (self->frontend, &cert, "frontend") != 0
    ||  mdl_curve_server (self->backend, &cert, "backend") != 0
    ||  mdl_curve_server (self->events, &cert, "events") != 0) {
        mdl_error ("cannot set up CURVE: %s", self->auth ? zmq_strerror (zmq_errno ()) : "no ZAP handler");
        return -1;
    }
    mdl_info ("CURVE on every socket; broker public key %s", cert.public_txt);
    memset (&cert, 0, sizeof cert);     //  libzmq keeps its own copy of the secret
    return 0;
}

static s_server_t *
s_server_new (zsock_t *pipe, const brk_server_config_t *config, int *status)
{
    *status = BRK_SERVER_FAILED;
    s_server_t *self = calloc (1, sizeof (s_server_t));
    if (!self)
        return NULL;
    self->pipe = pipe;
    self->config = *config;
    self->clock = mdl_clock_system ();
    self->started = mdl_clock_now (&self->clock);
    self->ports [0] = self->ports [1] = self->ports [2] = -1;
    mmp_buf_init (&self->reply);
    mmp_buf_init (&self->event);
    self->frontend = zsock_new (ZMQ_ROUTER);
    self->backend = zsock_new (ZMQ_ROUTER);
    self->events = zsock_new (ZMQ_XPUB);
    self->peers = zhashx_new ();
    self->queue = brk_queue_new (&config->queue, self->clock);
    self->data_dir = config->data_dir ? strdup (config->data_dir) : NULL;
    self->config.data_dir = self->data_dir;
    if (!self->frontend || !self->backend || !self->events || !self->peers || !self->queue
    ||  (config->data_dir && !self->data_dir)) {
        s_server_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->peers, s_peer_destructor);
    //  No silent drops: unbounded queues to live peers, errors for dead ones
    zsock_set_router_mandatory (self->frontend, 1);
    zsock_set_router_mandatory (self->backend, 1);
    zsock_set_sndhwm (self->frontend, 0);
    zsock_set_sndhwm (self->backend, 0);
    zsock_set_rcvhwm (self->frontend, 0);
    zsock_set_rcvhwm (self->backend, 0);
    zsock_set_sndhwm (self->events, 100000);
    zsock_set_linger (self->frontend, 0);
    zsock_set_linger (self->backend, 0);
    zsock_set_linger (self->events, 0);
    if (config->curve_cert && s_curve_setup (self, config) != 0) {
        s_server_destroy (&self);
        return NULL;
    }
    brk_queue_set_event_handler (self->queue, s_event, self);
    self->durability = "memory";
    if (config->data_dir) {
        *status = s_journal_open (self);
        if (*status != BRK_SERVER_OK) {
            s_server_destroy (&self);
            return NULL;
        }
    }
    self->next_heartbeat = self->started + config->queue.heartbeat_ms;
    *status = BRK_SERVER_OK;
    return self;
}

void
brk_server (zsock_t *pipe, void *args)
{
    brk_server_config_t config;
    if (args)
        config = *(brk_server_config_t *) args;
    else
        brk_server_config_defaults (&config);
    int status;
    s_server_t *self = s_server_new (pipe, &config, &status);
    zsock_signal (pipe, 0);
    if (!self) {
        if (status == BRK_SERVER_FAILED)
            mdl_error ("broker: cannot start (see above)");
        //  Answer the pipe until told to stop, so the owner can tell
        while (true) {
            zmsg_t *request = zmsg_recv (pipe);
            if (!request)
                return;
            char *command = zmsg_popstr (request);
            bool term = command && streq (command, "$TERM");
            if (!term)
                zsock_send (pipe, "i", command && streq (command, "STATUS") ? status : -1);
            zstr_free (&command);
            zmsg_destroy (&request);
            if (term)
                return;
        }
    }
    zmq_pollitem_t items [5] = {
        { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->frontend), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->backend), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->events), 0, ZMQ_POLLIN, 0 },
        { NULL, self->journal ? brk_journal_fd (self->journal) : -1, ZMQ_POLLIN, 0 }
    };
    int item_count = self->journal ? 5 : 4;
    while (!self->terminated) {
        int64_t now = mdl_clock_now (&self->clock);
        int64_t next = brk_queue_tick (self->queue, s_worker_lost, self);
        if (self->next_heartbeat < next)
            next = self->next_heartbeat;
        long timeout = next <= now ? 0 : next - now > 1000 ? 1000 : (long) (next - now);
        if (zmq_poll (items, item_count, timeout) == -1 && zmq_errno () == ETERM)
            break;
        //  Only what is ready: at a few thousand wake-ups a second, asking
        //  idle sockets costs more than the work. A socket left with input
        //  after its drain batch is reported ready again.
        if (items [0].revents & ZMQ_POLLIN)
            s_handle_pipe (self);
        if (items [1].revents & ZMQ_POLLIN)
            s_handle_frontend (self);
        if (items [2].revents & ZMQ_POLLIN)
            s_handle_backend (self);
        if (items [3].revents & ZMQ_POLLIN)
            s_handle_subscriptions (self);
        if (self->journal && (items [4].revents & ZMQ_POLLIN))
            s_journal_progress (self);
        brk_queue_tick (self->queue, s_worker_lost, self);
        s_dispatch (self);
        if (self->journal_dirty) {
            brk_journal_commit (self->journal);
            self->journal_dirty = false;
        }
        now = mdl_clock_now (&self->clock);
        if (now >= self->next_heartbeat) {
            s_send_heartbeats (self);
            self->next_heartbeat = now + self->config.queue.heartbeat_ms;
        }
    }
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    if (self->journal) {
        //  Make everything durable, then answer the publishers still waiting
        if (brk_journal_sync (self->journal) == 0)
            s_journal_progress (self);
        else
            mdl_error ("journal: final flush failed: %s; %zu replies not sent",
                       strerror (errno), self->reply_count);
        mdl_info ("broker stopping: %" PRIu64 " pending and %" PRIu64 " dead letters kept in %s",
                  stats.held + stats.ready + stats.in_flight + stats.delayed, stats.dead, self->data_dir);
    }
    else
        mdl_info ("broker stopping: %" PRIu64 " ready, %" PRIu64 " in flight, %" PRIu64 " delayed, %"
                  PRIu64 " dead letters held in memory are dropped",
                  stats.ready, stats.in_flight, stats.delayed, stats.dead);
    s_server_destroy (&self);
}
