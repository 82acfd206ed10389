/*  brk_queue: the broker's state machine, without sockets.

    Holds every known message (ready, delayed, leased, dead, recently done),
    the workers with their credit and liveness, and the open leases; decides
    who gets what and when a lease or a worker has run out. All time comes
    from an injected clock, so every rule here is tested exactly
    (tests/test_brk_queue.c). brk_server owns one queue and does the I/O.

    Time: one heap of lease deadlines, one heap of delayed redeliveries;
    brk_queue_tick () fires whatever is due and says when to call it next.

    Ownership: the queue owns messages, leases and workers. Pointers it hands
    out (brk_worker_t *) stay valid until brk_queue_worker_remove () or the
    queue's destruction.
*/
#ifndef BRK_QUEUE_H_INCLUDED
#define BRK_QUEUE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "brk_msg.h"
#include "brk_policy.h"
#include "brk_worker.h"
#include "mdl_clock.h"

typedef struct _brk_queue_t brk_queue_t;

typedef struct {
    int64_t ack_deadline_ms;    //  Lease length of a delivery (10 s)
    int64_t max_attempts;       //  Deliveries before a message is dead-lettered (5)
    int64_t backoff_base_ms;    //  Redelivery delay after the first failure (500 ms)
    int64_t backoff_max_ms;     //  Cap of the exponential backoff (30 s)
    int64_t heartbeat_ms;       //  Worker heartbeat interval (1 s); silent 3x = lost
    int64_t dedup_window;       //  Acked message ids remembered for duplicate detection (100000)
    int64_t epoch;              //  Upper bits of delivery ids, unique per broker run (>= 1)
    uint64_t first_seq;         //  Low bits of the run's first delivery id (1; tests start near 2^32)
    int64_t restart_timeout_ms; //  In-doubt hold without a policy (BRK_POLICY_RESTART_TIMEOUT_DEFAULT)
} brk_queue_config_t;

//  Fill config with the defaults above.
void brk_queue_config_defaults (brk_queue_config_t *config);

//  What happened, for the events socket and the journal.
typedef enum {
    BRK_EVENT_PUBLISHED,
    BRK_EVENT_DELIVERED,
    BRK_EVENT_EXTENDED,
    BRK_EVENT_ACKED,
    BRK_EVENT_NACKED,
    BRK_EVENT_EXPIRED,
    BRK_EVENT_DEAD_LETTERED,
    BRK_EVENT_REPLAYED,
    BRK_EVENT_PROGRESS,
    BRK_EVENT_WORKER_JOINED,
    BRK_EVENT_WORKER_LOST,
    BRK_EVENT_COALESCED,        //  Under a policy: reason is the id it joined
    BRK_EVENT_IN_DOUBT,         //  A started restart's lease ended unfinished
    BRK_EVENT_GROUP_PAUSED,     //  Error stop: reason is "GROUP: why"
    BRK_EVENT_EPOCH,            //  Store only (never an event): delivery_id is the new epoch's first
    BRK_EVENT_WAITING,          //  Under a policy: cannot start now; reason full, paused,
                                //  window, interval or target_busy (once per reason change)
    BRK_EVENT_REQUEUED,         //  Store only (never an event): a lease given back unused;
                                //  attempt is the count with its attempt returned
    BRK_EVENT_COUNT
} brk_event_t;

//  Event name as on the events socket, e.g. "dead_lettered".
const char *brk_event_name (brk_event_t event);

//  Called for each event when the owner asked for events. msg may be NULL
//  (worker events), worker may be NULL, delivery_id 0 when there is none.
typedef struct {
    brk_event_t event;          //  What happened
    const brk_msg_t *msg;       //  The message, or NULL
    const brk_worker_t *worker; //  The worker, or NULL
    uint64_t delivery_id;       //  The lease, or 0
    int64_t attempt;            //  Delivery number of msg, or 0
    const char *reason;         //  Nack / dead-letter / loss reason, or NULL
} brk_event_info_t;
typedef void (brk_event_fn) (void *arg, const brk_event_info_t *info);

//  Called for each new lease by brk_queue_dispatch ().
typedef void (brk_deliver_fn) (void *arg, brk_worker_t *worker, uint64_t delivery_id,
                               const brk_msg_t *msg, int64_t attempt);

//  Outcome of an operation on a delivery id.
typedef enum {
    BRK_OK = 0,                 //  Took effect
    BRK_STALE = 1,              //  Issued once, lease no longer open
    BRK_UNKNOWN = 2             //  Never issued
} brk_result_t;

//  Create a queue. Returns NULL when out of memory.
brk_queue_t *brk_queue_new (const brk_queue_config_t *config, mdl_clock_t clock);
void brk_queue_destroy (brk_queue_t **self_p);

void brk_queue_set_event_handler (brk_queue_t *self, brk_event_fn *handler, void *arg);

//  The store handler sees every change that must survive a restart
//  (delivered, acked, dead_lettered, replayed, progress, and epoch: after
//  2^32 leases the delivery ids move to the next epoch, which the store
//  must make durable before the lease it is told for goes out) whether or
//  not events are enabled: the journal hangs here.
void brk_queue_set_store_handler (brk_queue_t *self, brk_event_fn *handler, void *arg);

//  Set the epoch (upper bits of delivery ids) before the first dispatch,
//  once the journal has said which run this is.
void brk_queue_set_epoch (brk_queue_t *self, int64_t epoch);

//  Ask for events only while someone listens: a disabled queue does not
//  call the handler at all (the bench path pays nothing for events).
void brk_queue_set_events_enabled (brk_queue_t *self, bool enabled);

//  Add a message. message_id is a canonical lower-case uuid; json is the
//  request as it will be delivered (copied). seq is the journal sequence
//  number of its PUBLISH record: a message with seq > 0 is held back (not
//  delivered) until brk_queue_release (seq) says that record is durable,
//  so a request is never acted on before the broker could remember it;
//  seq 0 makes it ready at once. Returns 0 when queued, 1 when the id is
//  already known (a duplicate: nothing changes), -1 when out of memory.
int brk_queue_publish (brk_queue_t *self, const char *message_id,
                       const char *json, size_t json_len, uint64_t seq);

//  Who sends the messages of the next brk_queue_publish calls: the
//  authenticated name of the PUBLISH's sender (brk_msg_publisher), or
//  NULL for none. The name is interned in the queue's table (brk_names.h:
//  one pointer per message, no copy); a full table or no memory leaves
//  the messages unnamed, never refused.
void brk_queue_set_publisher (brk_queue_t *self, const char *publisher);

//  Messages held for records up to durable_seq become ready.
void brk_queue_release (brk_queue_t *self, uint64_t durable_seq);

//  The message with this id in any state, or NULL.
brk_msg_t *brk_queue_lookup (brk_queue_t *self, const char *message_id);

//  A message as recovered from the journal at start.
typedef struct {
    const char *message_id;     //  Canonical lower-case uuid
    const char *json;           //  Request as delivered
    size_t json_len;            //  Bytes of json
    int64_t published_ms;       //  Unix ms of the publish
    const char *publisher;      //  Authenticated publisher name, or NULL
    int64_t attempts;           //  Deliveries before the restart
    uint64_t delivery_id;       //  Last lease before the restart, 0 if none
    unsigned steps;             //  Progress reported
    bool dead;                  //  A dead letter
    const char *dead_reason;    //  When dead
    const char *dead_history;   //  When dead: history as JSON text
    int64_t dead_ms;            //  When dead: unix ms
    bool done;                  //  An acked id kept for duplicate detection: only message_id counts
} brk_restore_t;

//  Put a recovered message back. A message that had been delivered keeps
//  its last lease open for one ack deadline (its worker may still ack it
//  by its old delivery id); then it is redelivered as usual. One whose
//  steps have STARTED without RESTART is in doubt: its restart may still
//  run as an orphan, so it is not delivered again before restart_timeout
//  from now (the recovery), and its next delivery is marked. With
//  restore->done, the id goes on the done list instead (its publish is a
//  duplicate until dedup_window later acks push it out). Returns 0,
//  1 for an id already known, -1 when out of memory.
int brk_queue_restore (brk_queue_t *self, const brk_restore_t *restore);

//  Is message_id known (pending, leased, dead or recently done)?
bool brk_queue_known (brk_queue_t *self, const char *message_id);

//  Register a worker with its credit (the most leases it holds at once).
//  handle is the owner's, returned by brk_worker_handle (). NULL when out of memory.
brk_worker_t *brk_queue_worker_add (brk_queue_t *self, const char *name,
                                    int64_t credit, void *handle);

//  Change a worker's credit; leases it holds above it stay.
void brk_queue_worker_set_credit (brk_queue_t *self, brk_worker_t *worker, int64_t credit);

//  The worker showed a sign of life.
void brk_queue_worker_seen (brk_queue_t *self, brk_worker_t *worker);

//  Remove a lost worker (silent, unreachable); its leases are given back
//  at once (outcome "worker_lost") and *worker_p is nulled.
void brk_queue_worker_remove (brk_queue_t *self, brk_worker_t **worker_p,
                              const char *reason);

//  The same for a worker that said BYE: counted as left, not lost, and
//  its leases are given back unused (brk_queue_requeue) unless a restart
//  was reported started on one.
void brk_queue_worker_leave (brk_queue_t *self, brk_worker_t **worker_p);

//  Lease ready messages to workers with spare credit, round-robin, calling
//  deliver for each lease. A redelivery avoids the worker that had it last
//  when another worker has room. Returns the number of leases made.
size_t brk_queue_dispatch (brk_queue_t *self, brk_deliver_fn *deliver, void *arg);

//  Operations on delivery ids; see brk_result_t.
//  ACK and PROGRESS also take the id of a message's last lease after it
//  expired or its worker was lost, as long as the message has not been
//  leased again (it is READY or DELAYED): a worker that finished just after
//  the deadline is heard. A late ACK completes the request (under a policy
//  only while it is DELAYED: a READY one in its group's list stays, and the
//  ACK is stale); a late PROGRESS records the steps for the next delivery.
//  Once a newer lease exists, or the request is done or dead, the id is
//  stale. Cost: one map entry per message waiting after such a lease.
brk_result_t brk_queue_ack (brk_queue_t *self, uint64_t delivery_id);
//  extension_ms < 0 means the ack deadline. Sets the deadline to now + extension.
brk_result_t brk_queue_extend (brk_queue_t *self, uint64_t delivery_id, int64_t extension_ms);
//  delay_ms < 0 means the exponential backoff.
brk_result_t brk_queue_nack (brk_queue_t *self, uint64_t delivery_id, int64_t delay_ms,
                             const char *reason);
brk_result_t brk_queue_progress (brk_queue_t *self, uint64_t delivery_id, unsigned steps);
//  Is delivery_id an open lease now? O(1); changes nothing.
bool brk_queue_lease_open (brk_queue_t *self, uint64_t delivery_id);
//  A NACK from a worker that is shutting down (MMP NACK "requeue"): the
//  delivery never ran, so it uses up no attempt (the next DELIVER has the
//  same attempt number), counts as neither success nor failure for the
//  restart policy, and the request is ready again at once, preferably for
//  another worker. Recorded in the history as "nacked" with reason.
brk_result_t brk_queue_requeue (brk_queue_t *self, uint64_t delivery_id, const char *reason);
//  (brk_queue_worker_leave gives back the same way the leases its worker
//  still holds, except one whose restart was reported started.)

//  Fire what is due: expired leases, delayed messages now ready, workers
//  silent for 3 heartbeats (removed; lost_fn is told each one's handle
//  before it goes). Returns the monotonic time of the next thing due, or
//  INT64_MAX when nothing is.
typedef void (brk_lost_fn) (void *arg, void *handle);
int64_t brk_queue_tick (brk_queue_t *self, brk_lost_fn *lost, void *arg);

//  The owner could not run the queue for gap_ms: its process was stopped
//  (SIGSTOP, a paused VM) or one loop turn took that long. Nobody could be
//  heard meanwhile, so that time is not held against anyone: every worker
//  counts as seen now and every open lease's deadline moves gap_ms later.
//  Without it, a broker resumed after a stop would declare every worker
//  lost and every lease expired at once, and deliver each running restart
//  a second time. O(workers + leases); gap_ms <= 0 does nothing.
void brk_queue_stalled (brk_queue_t *self, int64_t gap_ms);

//  Backoff before redelivery number attempt+1, after attempt failures:
//  min (max, base * 2^(attempt-1)).
int64_t brk_queue_backoff (const brk_queue_t *self, int64_t attempt);

//  Dead letters, oldest first. The callback gets each dead message.
typedef void (brk_msg_fn) (void *arg, const brk_msg_t *msg);
size_t brk_queue_dead_letters (brk_queue_t *self, size_t limit, brk_msg_fn *fn, void *arg);

//  Put a dead letter back with a fresh attempt budget. Returns 0, or -1
//  when message_id is not a dead letter.
int brk_queue_replay (brk_queue_t *self, const char *message_id);

typedef struct {
    uint64_t published;         //  Messages accepted (not duplicates)
    uint64_t duplicates;        //  Publishes refused as duplicates
    uint64_t delivered;         //  Leases made
    uint64_t redelivered;       //  Leases with attempt > 1
    uint64_t acked;
    uint64_t nacked;
    uint64_t expired;           //  Leases that ran out
    uint64_t dead_lettered;
    uint64_t replayed;
    uint64_t workers_lost;      //  Silent or unreachable
    uint64_t workers_left;      //  Said BYE
    uint64_t held;              //  Now: waiting for the journal
    uint64_t ready;             //  Now: waiting for a worker
    uint64_t delayed;           //  Now: waiting out a backoff
    uint64_t in_flight;         //  Now: leased
    uint64_t dead;              //  Now: dead letters
    uint64_t workers;           //  Now: registered workers
    int64_t oldest_unacked_ms;  //  Now: age of the oldest pending message, 0 if none
    uint64_t coalesced;         //  Requests coalesced into one waiting for the same target
    uint64_t requeued;          //  Leases given back unused (brk_queue_requeue, BYE)
    uint64_t late;              //  ACKs and PROGRESS taken for a lease just ended
    uint64_t pending;           //  Now: held + ready + delayed + leased (+ coalesced)
    uint64_t memory_bytes;      //  Now: bytes of request bodies held (pending and dead)
    uint64_t in_doubt;          //  Now: pending requests whose restart is in doubt (a
                                //  started restart's lease ended unfinished, and no
                                //  restart was reported done since)
} brk_queue_stats_t;

void brk_queue_stats (brk_queue_t *self, brk_queue_stats_t *stats);

int64_t brk_queue_epoch (const brk_queue_t *self);

//  Restart safety (docs/POLICY.md). Put the queue under policy (not owned;
//  it must outlive the queue) before the first publish or restore; its
//  group count must not change after. From then on: one open lease per
//  target (folded hostname), requests for a waiting target coalesce (both
//  complete with the first one's ack or dead letter), and dispatch leases
//  only what the policy allows (brk_policy.h), at O(groups + workers +
//  leases made * workers) per call, never O(waiting messages): waiting
//  messages sit in per-group lists (brk_group.h). Returns 0, -1 out of memory.
int brk_queue_set_policy (brk_queue_t *self, brk_policy_t *policy);
//  The policy, or NULL.
brk_policy_t *brk_queue_policy (brk_queue_t *self);
//  Policy stats of one group, with its waiting messages. 0, or -1 without
//  a policy or for a bad index.
int brk_queue_group_stats (brk_queue_t *self, size_t group, brk_group_stats_t *stats);

//  The restart step bit (MMP_STEP_RESTART in proto/mmp.h).
#define BRK_STEP_RESTART 2u
//  The "restart started" bit (MMP_STEP_STARTED): kept in the steps (and so
//  in the journal's PROGRESS records) once reported; a request restored
//  with it and without BRK_STEP_RESTART is in doubt.
#define BRK_STEP_STARTED 4u

//  What a worker declared it can do (MMP_FEATURE_* in proto/mmp.h).
#define BRK_FEATURE_IN_DOUBT 1u     //  Understands the in-doubt mark on a delivery
#define BRK_FEATURE_VERIFY   2u     //  Runs a verify command for an in-doubt delivery

//  Set a worker's features (HELLO). Under a group with in_doubt =
//  dead_letter, an in-doubt request about to be leased to a worker without
//  BRK_FEATURE_VERIFY is dead-lettered with reason "in_doubt" instead.
void brk_queue_worker_set_features (brk_queue_t *self, brk_worker_t *worker, unsigned features);

//  The worker reports that delivery_id's restart started (before it runs
//  the command). The STARTED step is added to the request's steps and
//  stored (a PROGRESS record: the reply waits until it is durable). If
//  that lease then ends (expired, worker lost) before
//  progress reports the restart step, the request is in doubt: it is not
//  delivered again before its group's restart_timeout has passed since the
//  start (config restart_timeout_ms without a policy), its target
//  stays locked and its group slot taken until then, and its next delivery
//  says so (brk_queue_msg_in_doubt). A NACK is the worker's own word that
//  the restart did not run on: it does not put a request in doubt.
brk_result_t brk_queue_started (brk_queue_t *self, uint64_t delivery_id);
//  The id of the request msg was coalesced with (it completes with that
//  one), or NULL: what a PUBACK can report right after brk_queue_publish.
const char *brk_queue_msg_coalesced_with (const brk_msg_t *msg);
//  Is msg's next (or current) delivery a restart in doubt?
bool brk_queue_msg_in_doubt (const brk_msg_t *msg);

//  Open leases and workers, for INFLIGHT and WORKERS. fn is called for
//  each (at most limit; leases in no particular order, workers in
//  dispatch order) and must not change the queue. Returns the number
//  visited. O(open leases) / O(workers).
typedef struct {
    uint64_t delivery_id;       //  The lease
    const brk_msg_t *msg;       //  What is leased
    const brk_worker_t *worker; //  Holder, or NULL (a lease restored from the journal)
    int64_t age_ms;             //  Since the lease opened (its last extension for a restored one)
    int64_t deadline_ms;        //  Until it runs out
    int64_t attempt;            //  Delivery number
    unsigned steps;             //  Steps reported done
    bool started;               //  The worker reported the restart started
    const char *target;         //  Folded hostname under a policy, else NULL
    int group;                  //  Its group under a policy, else -1
} brk_lease_info_t;
typedef void (brk_lease_fn) (void *arg, const brk_lease_info_t *info);
size_t brk_queue_leases (brk_queue_t *self, size_t limit, brk_lease_fn *fn, void *arg);

typedef struct {
    const brk_worker_t *worker; //  The worker
    int64_t seen_ms_ago;        //  Since its last sign of life
} brk_worker_info_t;
typedef void (brk_worker_fn) (void *arg, const brk_worker_info_t *info);
size_t brk_queue_workers (brk_queue_t *self, brk_worker_fn *fn, void *arg);

#endif
