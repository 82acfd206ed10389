/*  brk_server_internal: the broker actor's state, shared by the files that
    make up the server. Not for use outside them (tests use brk_server.h).

    Who owns what:
      brk_server.c    the actor: its pipe, the poll loop, start and stop
      brk_frontend.c  publishers and control clients (PUBLISH, STATS,
                      DEADLETTERS, REPLAY)
      brk_backend.c   workers: HELLO, CREDIT, EXTEND/ACK/NACK/PROGRESS,
                      BYE, heartbeats both ways, the peer table
      brk_dispatch.c  leasing ready messages to worker credit and
                      assembling and sending DELIVER
      brk_events.c    the XPUB event feed and its subscriptions
      brk_durable.c   what waits for the store: recovery into the queue,
                      the queue's changes appended to the store, replies
                      held until the store is durable
      brk_reject.c    answering and logging peers' mistakes, rate-limited
      brk_server_policy.c  the restart policy: built from the config,
                      its state saved and restored through the store,
                      reloads, group events
      brk_control.c   the policy's frontend commands (PAUSE, RESUME,
                      GROUPS, INFLIGHT, WORKERS, RELOAD), STATS' groups
    One thread runs all of them (the actor's); nothing here is locked.

    Some shared functions and types keep their s_ names (s_server_t,
    s_peer_t, s_send_backend, s_reject, s_reply_when_durable,
    s_history_json) although they are not static: they kept them while
    the DELIVER, PUBACK, STATS and dead-letter builders moved to the
    proto/ encoders (mmp_encode_*), so that change applied unchanged.
    Give them brk_ names in a change of their own.
*/
#ifndef BRK_SERVER_INTERNAL_H_INCLUDED
#define BRK_SERVER_INTERNAL_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "brk_metrics.h"
#include "brk_queue.h"
#include "brk_server.h"
#include "brk_store.h"
#include "mdl_clock.h"
#include "mdl_rate.h"
#include "mmp.h"

#define BRK_DRAIN_BATCH 256     //  Messages taken from one socket per turn

//  A backend peer (a worker's DEALER).
typedef struct {
    char key [2 * 256 + 1];     //  Routing id in hex, the map key
    zframe_t *routing_id;       //  For replies
    brk_worker_t *worker;       //  Queue registration
    mmp_buf_t deliver;          //  DELIVER being assembled
    size_t deliver_count;       //  Deliveries in it
    bool pending;               //  In the server's flush list
    bool gone;                  //  A send failed: remove after this turn
} s_peer_t;

//  A reply waiting for the store: a PUBACK, or an ACKED / PROGRESSED
//  whose records must be durable before the peer may forget its work.
typedef struct _brk_reply_t {
    zsock_t *sock;              //  Frontend or backend
    zframe_t *routing_id;       //  Peer to answer
    mmp_command_t command;      //  What to send
    char *json;                 //  The reply body
    size_t size;                //  Its length
    uint64_t seq;               //  Send once the store is durable up to here
    struct _brk_reply_t *next;  //  Next waiting, in arrival order
} brk_reply_t;

typedef struct {
    zsock_t *pipe;              //  Actor pipe
    zsock_t *frontend;          //  ROUTER for publishers and control
    zsock_t *backend;           //  ROUTER for workers
    zsock_t *events;            //  XPUB for lifecycle events
    brk_server_config_t config; //  Settings, copied
    char *data_dir;             //  Copy of config.data_dir, or NULL
    brk_queue_t *queue;         //  The state machine
    brk_store_t *store;         //  Durability (a journal, memory, a test's)
    const char *durability;     //  The store's name: "memory", "none", "batch", "sync"
    bool store_dirty;           //  Appended since the last commit
    uint64_t durable;           //  Store sequence known durable
    uint64_t released;          //  Held messages released up to this sequence
    int store_error;            //  Last store status seen (errno or 0)
    brk_reply_t *replies;       //  Replies waiting for the store, oldest first
    brk_reply_t *replies_tail;  //  Newest of them
    size_t reply_count;         //  How many
    uint64_t last_seq;          //  Sequence of the newest store record
    uint64_t duplicates;        //  Publishes refused as duplicates
    uint64_t refused_full;      //  PUBLISH batches refused at max_pending / max_memory
    mdl_clock_t clock;          //  Monotonic time, injectable
    zhashx_t *peers;            //  Routing id hex -> s_peer_t, backend peers
    s_peer_t **flush;           //  Peers with a DELIVER to send
    size_t flush_count;         //  Entries in flush
    size_t flush_capacity;      //  Slots in flush
    mmp_buf_t reply;            //  Scratch for replies
    mmp_buf_t event;            //  Scratch for events
    int64_t subscriptions;      //  Topics subscribed on events (XPUB)
    int64_t next_heartbeat;     //  When to send heartbeats next
    bool watch_stalls;          //  System clock: notice when the loop did not run (brk_server.c)
    int64_t started;            //  Monotonic ms at start
    int ports [3];              //  Last bound port per socket
    bool terminated;            //  $TERM received
    mdl_rate_t *warn_rate;      //  Bad-input warnings: 20 a second
    brk_auth_t *auth;           //  ZAP handler and role checks, or NULL without CURVE
    brk_metrics_t *metrics;     //  Series in config.metrics, or NULL
    brk_policy_t *policy;       //  Restart policy, owned, or NULL for none
    char *policy_file;          //  Copy of config.policy_file, or NULL
    uint64_t policy_saved;      //  brk_policy_changes () at the last save
    uint64_t policy_saved_urgent;   //  Its urgent count then
    int64_t policy_saved_at;    //  Monotonic ms of the last save
    int64_t policy_swept_at;    //  Monotonic ms of the last brk_policy_forget_stale
    bool policy_save_failed;    //  The last save failed (logged once per failure run)
} s_server_t;

//  Send on the backend; a failure marks the peer gone (it is removed after
//  this turn: on a mandatory ROUTER only a vanished peer fails). 0 or -1.
static inline int
s_send_backend (s_server_t *self, s_peer_t *peer, mmp_command_t command,
                const char *json, size_t len)
{
    if (mmp_send (self->backend, peer->routing_id, command, json, len) != 0) {
        peer->gone = true;
        return -1;
    }
    return 0;
}

//  brk_reject.c
//  Routing id as hex into out (truncated to size).
void brk_server_hex (const zframe_t *frame, char *out, size_t size);
//  May a warning about bad input be logged now? At most 20 a second.
bool brk_server_warn_allowed (s_server_t *self);
//  Log (rate-limited) and answer ERROR code/reason to a peer.
void s_reject (s_server_t *self, zsock_t *sock, const char *side, zframe_t *routing_id,
               const char *code, const char *reason, const char *req);

//  brk_frontend.c
//  Drain the frontend socket (up to BRK_DRAIN_BATCH messages).
void brk_frontend_handle (s_server_t *self);
//  A message's attempt history as a JSON array, into buf.
void s_history_json (mmp_buf_t *buf, const brk_msg_t *msg);

//  brk_backend.c
//  Drain the backend socket (up to BRK_DRAIN_BATCH messages).
void brk_backend_handle (s_server_t *self);
//  Forget a peer; its leases go back to the queue at once. left: it said BYE.
void brk_backend_peer_remove (s_server_t *self, s_peer_t *peer, const char *reason, bool left);
//  For the peer map's destructor.
void brk_backend_peer_destructor (void **item);
//  brk_queue_tick's callback: the queue found a worker silent for 3 heartbeats.
void brk_backend_worker_lost (void *arg, void *handle);
//  HEARTBEAT to every peer.
void brk_backend_send_heartbeats (s_server_t *self);

//  brk_dispatch.c
//  Lease what is ready to workers with credit, send the DELIVERs, drop
//  peers whose sends failed.
void brk_dispatch (s_server_t *self);

//  brk_events.c
//  The queue's event handler: one topic frame and one JSON frame on XPUB.
void brk_events_publish (void *arg, const brk_event_info_t *info);
//  Count (un)subscriptions; events are made only while someone listens.
void brk_events_handle_subscriptions (s_server_t *self);

//  brk_server_policy.c
//  Build the policy from the config (before the store opens, so recovered
//  messages are sorted into its groups). 0, or -1 logged.
int brk_server_policy_open (s_server_t *self);
//  After the store opened: restore the state it kept (a bad blob is
//  logged and ignored: the policy starts clean).
void brk_server_policy_restore (s_server_t *self);
//  Save the state if it changed: at once after an urgent change (or with
//  force), else at most every 100 ms. Called once per loop turn.
void brk_server_policy_save (s_server_t *self, bool force);
//  Reload the policy file. 0, or -1 with err (nothing changed); logged.
int brk_server_policy_reload (s_server_t *self, char *err, size_t err_size);
//  A group event (group_paused, group_resumed) on the events socket.
void brk_server_group_event (s_server_t *self, const char *event, const char *group,
                             const char *reason);

//  brk_control.c
//  The restart-policy commands of the frontend: PAUSE, RESUME, GROUPS,
//  INFLIGHT, WORKERS, RELOAD. Each gets one reply.
void brk_control_handle (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg);
//  STATS' "groups" array (only under a policy).
void brk_control_stats_groups (s_server_t *self, mmp_buf_t *buf);

//  brk_durable.c
//  Open the store (config.store_open, or the journal with a data dir, or
//  memory), recovering into the queue. Returns BRK_SERVER_*.
int brk_durable_open (s_server_t *self);
//  The store's fd was readable: release held messages and send waiting
//  replies up to its durable position; log changes of its status.
void brk_durable_progress (s_server_t *self);
//  The same, but only the replies: the queue is left as it is (for the
//  middle of a PUBLISH, so the batch's own requests change state only
//  after it). Cost: one read of the store's position.
void brk_durable_send_replies (s_server_t *self);
//  Send the reply in buf now if the store is durable up to seq (or seq is
//  0), else hold it until it is. 0, or -1 when out of memory (nothing sent).
int s_reply_when_durable (s_server_t *self, zsock_t *sock, zframe_t *routing_id,
                          mmp_command_t command, const mmp_buf_t *buf, uint64_t seq);
//  Free every held reply without sending it.
void brk_durable_drop_replies (s_server_t *self);

#endif
