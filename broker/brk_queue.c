/*  brk_queue: see brk_queue.h.

    A message is in exactly one state:
      HELD     in the held list, until its PUBLISH record is durable
      READY    in the ready list, waiting for a worker (FIFO)
      DELAYED  in the delay heap, waiting out a backoff or a NACK delay
      LEASED   held by one open lease (in the lease heap and lease map)
      DEAD     in the dead list, until replayed
      DONE     acked; kept (without its body) in the done list only so that
               a late re-publish of the same id is still a duplicate; the
               oldest are forgotten beyond dedup_window.
    HELD, READY, DELAYED and LEASED messages are also on the pending list in
    publish order, whose head is the oldest unacked message.

    The classes it moves around live in their own files: brk_msg (a
    request, its body and history) and brk_worker (a registration and its
    lease list); their fields are shared through brk_queue_internal.h. The
    lease has no file of its own: only the queue opens and closes leases.
    At about 1,680 lines this file is over the house's 800 on purpose: it is
    one state machine whose transitions all touch the same lists, heaps
    and maps, and cutting it would spread one transition over files. The
    restart policy added about 400 of them (dispatch under a policy, the
    "waiting" events, the INFLIGHT and WORKERS listings, the
    host lock and in-doubt hold on every lease end); its rules live in
    brk_policy.c and its waiting lists in brk_group.c, so what is here is
    only where the policy meets a transition. The in-doubt rule (the
    recorded start, restore in doubt, dead_letter at lease time) is
    about 100 more. Late ACK/PROGRESS and the
    requeue NACK added about 130 more (one transition each), for the same reason.

    Under a policy (brk_queue_set_policy) a READY message is not on the
    ready list but in its group's list or parked on its leased target
    (brk_group.h), or COALESCED: a follower of the request waiting for the
    same target, still on the pending list, completed with it.

    Costs: publish, lease, ack, extend, nack are O(log N) (heap) plus a
    hash look-up; tick is O(log N) per thing that fires; worker liveness is
    checked by a scan of the workers once per heartbeat, O(workers).
    A message costs two allocations (itself and its body). Closed leases
    go on a free list for the next lease, so the queue holds as many lease
    structs as it ever had open at once (bounded by the workers' credit),
    and the maps (mdl_map) allocate nothing per entry: leasing and acking
    allocate nothing in the steady state.

    Late ACK and PROGRESS (brk_queue.h): a lease that ends by expiry or
    worker loss leaves its id in the late map while its message waits
    (READY or DELAYED); the entry goes when the message is leased again,
    completes or is dead-lettered, so the map holds at most one id per
    waiting message that failed. A requeue (shutdown NACK) undoes the
    attempt count of its delivery and readies the message at once.
*/
#include "brk_queue.h"
#include "brk_queue_internal.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#include "brk_group.h"
#include "brk_names.h"
#include "brk_policy.h"
#include "mdl_heap.h"
#include "mdl_log.h"
#include "mdl_map.h"

typedef struct {
    brk_msg_t *head, *tail;     //  Linked through next/prev
    size_t size;                //  Members
} s_list_t;

struct _brk_queue_t {
    brk_queue_config_t config;  //  Copy of the settings
    mdl_clock_t clock;          //  Injected time
    mdl_strmap_t *messages;     //  message_id (inside the message) -> brk_msg_t, every state
    mdl_map_t *leases;          //  delivery_id -> brk_lease_t, open leases
    mdl_map_t *late;            //  delivery_id -> brk_msg_t: a READY or DELAYED message's
                                //  last lease, ended by expiry or loss (late ACK/PROGRESS)
    size_t pending;             //  Messages on the pending list
    size_t in_doubt;            //  Pending messages in doubt (s_doubt_counts)
    size_t *group_in_doubt;     //  The same per policy group, or NULL without a policy
    uint64_t body_bytes;        //  Bytes of request bodies held (pending and dead)
    brk_lease_t *spare_leases;  //  Closed leases for reuse, linked through wnext
    mdl_heap_t *lease_heap;     //  Open leases by deadline
    mdl_heap_t *delay_heap;     //  Delayed messages by time ready
    s_list_t held;              //  HELD, by sequence number
    s_list_t ready;             //  READY, FIFO
    s_list_t dead;              //  DEAD, oldest first
    s_list_t done;              //  DONE, oldest first
    brk_msg_t *pending_head;    //  Oldest pending message
    brk_msg_t *pending_tail;    //  Newest pending message
    size_t in_flight;           //  LEASED messages
    brk_worker_t *workers;      //  Registered workers, round-robin order
    size_t worker_count;        //  Length of workers
    brk_worker_t *cursor;       //  Where the next dispatch round starts
    uint64_t next_seq;          //  Low bits of the next delivery id
    uint64_t next_worker_id;    //  Id of the next registered worker
    int64_t next_liveness;      //  When to scan workers for silence next
    brk_event_fn *store;        //  Store handler, or NULL
    void *store_arg;            //  Its argument
    brk_event_fn *event;        //  Event handler, or NULL
    void *event_arg;            //  Its argument
    bool events;                //  Call event at all?
    brk_queue_stats_t counters; //  Cumulative counters (the "now" ones are computed)
    brk_policy_t *policy;       //  Restart policy (not owned), or NULL
    brk_room_t *room;           //  Its groups' ready lists and targets, or NULL
    size_t group_cursor;        //  Group the next policy dispatch starts with
    brk_names_t *names;         //  Publishers' names, interned (messages point into it)
    const char *publisher;      //  Who publishes next (brk_queue_set_publisher), or NULL
};

#define S_SEQ_BITS 32
#define S_SEQ_MASK ((UINT64_C (1) << S_SEQ_BITS) - 1)

static const char *s_event_names [BRK_EVENT_COUNT] = {
    "published", "delivered", "extended", "acked", "nacked", "expired",
    "dead_lettered", "replayed", "progress", "worker_joined", "worker_lost",
    "coalesced", "in_doubt", "group_paused", "epoch", "waiting", "requeued"
};

const char *
brk_event_name (brk_event_t event)
{
    return event < BRK_EVENT_COUNT ? s_event_names [event] : NULL;
}

void
brk_queue_config_defaults (brk_queue_config_t *config)
{
    config->ack_deadline_ms = 10000;
    config->max_attempts = 5;
    config->backoff_base_ms = 500;
    config->backoff_max_ms = 30000;
    config->heartbeat_ms = 1000;
    config->dedup_window = 100000;
    config->epoch = 1;
    config->first_seq = 1;
    config->restart_timeout_ms = BRK_POLICY_RESTART_TIMEOUT_DEFAULT;
}

//  --------------------------------------------------------------------------
//  Lists

static void
s_list_push (s_list_t *list, brk_msg_t *msg)
{
    msg->next = NULL;
    msg->prev = list->tail;
    if (list->tail)
        list->tail->next = msg;
    else
        list->head = msg;
    list->tail = msg;
    list->size++;
}

static void
s_list_unlink (s_list_t *list, brk_msg_t *msg)
{
    if (msg->prev)
        msg->prev->next = msg->next;
    else
        list->head = msg->next;
    if (msg->next)
        msg->next->prev = msg->prev;
    else
        list->tail = msg->prev;
    msg->next = msg->prev = NULL;
    list->size--;
}

//  Forget the oldest acked ids beyond dedup_window.
static void
s_done_trim (brk_queue_t *self)
{
    while (self->done.size > (size_t) self->config.dedup_window) {
        brk_msg_t *old = self->done.head;
        s_list_unlink (&self->done, old);
        mdl_strmap_delete (self->messages, old->id);
        brk_msg_destroy (&old);
    }
}

//  Is msg's restart in doubt: a started restart's lease ended unfinished,
//  and no restart was reported done since? The in-doubt counts hold the
//  pending messages for which this is true.
static bool
s_doubt_counts (const brk_msg_t *msg)
{
    return msg->policy && msg->policy->in_doubt && !(msg->steps & BRK_STEP_RESTART);
}

//  Add delta to the in-doubt counts if msg is in doubt (and pending).
static void
s_doubt_count (brk_queue_t *self, const brk_msg_t *msg, int delta)
{
    if (!s_doubt_counts (msg))
        return;
    size_t *group = self->group_in_doubt && msg->policy->target
                  ? &self->group_in_doubt [msg->policy->target->group] : NULL;
    if (delta > 0) {
        self->in_doubt++;
        if (group)
            (*group)++;
    }
    else {
        assert (self->in_doubt > 0 && (!group || *group > 0));
        self->in_doubt--;
        if (group)
            (*group)--;
    }
}

static bool
s_is_pending (const brk_queue_t *self, const brk_msg_t *msg)
{
    return msg->pprev || msg->pnext || self->pending_head == msg;
}

//  Change msg's in-doubt mark or steps, keeping the counts: call with the
//  mark and steps it is to have.
static void
s_doubt_update (brk_queue_t *self, brk_msg_t *msg, bool in_doubt, unsigned steps)
{
    bool pending = s_is_pending (self, msg);
    if (pending)
        s_doubt_count (self, msg, -1);
    msg->policy->in_doubt = in_doubt;
    msg->steps = steps;
    if (pending)
        s_doubt_count (self, msg, 1);
}

static void
s_pending_push (brk_queue_t *self, brk_msg_t *msg)
{
    msg->pnext = NULL;
    msg->pprev = self->pending_tail;
    if (self->pending_tail)
        self->pending_tail->pnext = msg;
    else
        self->pending_head = msg;
    self->pending_tail = msg;
    self->pending++;
    s_doubt_count (self, msg, 1);
}

static void
s_pending_unlink (brk_queue_t *self, brk_msg_t *msg)
{
    s_doubt_count (self, msg, -1);
    if (msg->pprev)
        msg->pprev->pnext = msg->pnext;
    else
        self->pending_head = msg->pnext;
    if (msg->pnext)
        msg->pnext->pprev = msg->pprev;
    else
        self->pending_tail = msg->pprev;
    msg->pnext = msg->pprev = NULL;
    self->pending--;
}

//  msg is READY: to the ready list, or under a policy to its group's list
//  (or its target's, or coalesced into the request waiting for its target).
static void s_emit (brk_queue_t *self, brk_event_t event, const brk_msg_t *msg,
                    const brk_worker_t *worker, uint64_t delivery_id, const char *reason);

//  Why a request under a policy cannot start now, as the "waiting" event
//  says it: codes 1.. index this table (0 = not told yet).
static const char *s_waiting_names [] = {
    NULL, "full", "paused", "window", "interval", "target_busy"
};
#define S_WAIT_FULL         1
#define S_WAIT_PAUSED       2
#define S_WAIT_WINDOW       3
#define S_WAIT_INTERVAL     4
#define S_WAIT_TARGET_BUSY  5

static unsigned char
s_wait_code (brk_policy_verdict_t verdict)
{
    switch (verdict) {
        case BRK_POLICY_KILLED:
        case BRK_POLICY_PAUSED:
            return S_WAIT_PAUSED;
        case BRK_POLICY_FULL:
            return S_WAIT_FULL;
        case BRK_POLICY_WINDOW:
            return S_WAIT_WINDOW;
        case BRK_POLICY_INTERVAL:
            return S_WAIT_INTERVAL;
        default:
            return 0;
    }
}

//  Tell (once per reason change per request) that msg waits, only while
//  someone listens: without subscribers this costs one test.
static void
s_waiting (brk_queue_t *self, brk_msg_t *msg, unsigned char code)
{
    if (!self->events || !self->event || !code || !msg->policy || msg->policy->waiting == code)
        return;
    msg->policy->waiting = code;
    s_emit (self, BRK_EVENT_WAITING, msg, NULL, 0, s_waiting_names [code]);
}

//  A group cannot lease now (code): tell its waiting requests that have
//  not heard this reason, newest first, stopping at the first that has
//  (those before it were told in an earlier call), and its head, which
//  dispatch may have put back. O(requests told) per call.
static void
s_waiting_group (brk_queue_t *self, size_t group, unsigned char code)
{
    if (!self->events || !self->event || !code)
        return;
    for (brk_msg_t *msg = brk_room_tail (self->room, group); msg; msg = msg->prev) {
        if (msg->policy && msg->policy->waiting == code)
            break;
        s_waiting (self, msg, code);
    }
    brk_msg_t *head = brk_room_peek (self->room, group);
    if (head)
        s_waiting (self, head, code);
}

static void
s_make_ready (brk_queue_t *self, brk_msg_t *msg)
{
    if (self->room && msg->policy) {
        if (brk_room_push (self->room, msg) == 1) {
            self->counters.coalesced++;
            s_emit (self, BRK_EVENT_COALESCED, msg, NULL, 0, msg->policy->leader->id);
        }
        else
        if (self->events && self->event && msg->policy->target) {
            brk_target_t *target = msg->policy->target;
            if (target->leased && target->leased != msg)
                s_waiting (self, msg, S_WAIT_TARGET_BUSY);
            else
                s_waiting (self, msg, s_wait_code (brk_policy_group_check (
                    self->policy, (size_t) target->group)));
        }
        return;
    }
    msg->state = BRK_MSG_READY;
    s_list_push (&self->ready, msg);
}

brk_queue_t *
brk_queue_new (const brk_queue_config_t *config, mdl_clock_t clock)
{
    assert (config);
    assert (config->max_attempts >= 1);
    assert (config->ack_deadline_ms >= 0 && config->heartbeat_ms > 0);
    brk_queue_t *self = calloc (1, sizeof (brk_queue_t));
    if (!self)
        return NULL;
    self->config = *config;
    if (self->config.epoch < 1)
        self->config.epoch = 1;
    if (self->config.first_seq < 1 || self->config.first_seq > S_SEQ_MASK + 1)
        self->config.first_seq = 1;
    if (self->config.restart_timeout_ms <= 0)
        self->config.restart_timeout_ms = BRK_POLICY_RESTART_TIMEOUT_DEFAULT;
    self->clock = clock;
    self->messages = mdl_strmap_new ();
    self->leases = mdl_map_new ();
    self->late = mdl_map_new ();
    self->lease_heap = mdl_heap_new ();
    self->delay_heap = mdl_heap_new ();
    self->names = brk_names_new ();
    if (!self->messages || !self->leases || !self->late || !self->lease_heap || !self->delay_heap
    ||  !self->names) {
        brk_queue_destroy (&self);
        return NULL;
    }
    self->next_seq = self->config.first_seq;
    self->next_liveness = mdl_clock_now (&self->clock) + self->config.heartbeat_ms;
    return self;
}

void
brk_queue_destroy (brk_queue_t **self_p)
{
    assert (self_p);
    brk_queue_t *self = *self_p;
    if (!self)
        return;
    //  Heaps first: they touch their nodes, which live in leases and messages
    mdl_heap_destroy (&self->lease_heap);
    mdl_heap_destroy (&self->delay_heap);
    if (self->leases) {
        size_t cursor = 0;
        brk_lease_t *lease;
        while ((lease = mdl_map_next (self->leases, &cursor)))
            free (lease);
        mdl_map_destroy (&self->leases);
    }
    mdl_map_destroy (&self->late);      //  Its values are messages, freed below
    while (self->spare_leases) {
        brk_lease_t *lease = self->spare_leases;
        self->spare_leases = lease->wnext;
        free (lease);
    }
    while (self->workers) {
        brk_worker_t *worker = self->workers;
        self->workers = worker->next;
        brk_worker_destroy (&worker);
    }
    if (self->messages) {
        size_t cursor = 0;
        brk_msg_t *msg;
        while ((msg = mdl_strmap_next (self->messages, &cursor))) {
            free (msg->policy);
            brk_msg_destroy (&msg);
        }
        mdl_strmap_destroy (&self->messages);
    }
    brk_names_destroy (&self->names);
    brk_room_destroy (&self->room);
    free (self->group_in_doubt);
    free (self);
    *self_p = NULL;
}

void
brk_queue_set_event_handler (brk_queue_t *self, brk_event_fn *handler, void *arg)
{
    self->event = handler;
    self->event_arg = arg;
}

void
brk_queue_set_events_enabled (brk_queue_t *self, bool enabled)
{
    self->events = enabled;
}

void
brk_queue_set_store_handler (brk_queue_t *self, brk_event_fn *handler, void *arg)
{
    self->store = handler;
    self->store_arg = arg;
}

void
brk_queue_set_epoch (brk_queue_t *self, int64_t epoch)
{
    assert (epoch >= 1);
    self->config.epoch = epoch;
    self->next_seq = self->config.first_seq;
}

static void
s_emit (brk_queue_t *self, brk_event_t event, const brk_msg_t *msg,
        const brk_worker_t *worker, uint64_t delivery_id, const char *reason)
{
    bool stored = self->store && (event == BRK_EVENT_DELIVERED || event == BRK_EVENT_ACKED
                               || event == BRK_EVENT_DEAD_LETTERED || event == BRK_EVENT_REPLAYED
                               || event == BRK_EVENT_PROGRESS || event == BRK_EVENT_EPOCH
                               || event == BRK_EVENT_REQUEUED);
    if (!stored && (!self->events || !self->event))
        return;
    brk_event_info_t info = {
        .event = event, .msg = msg, .worker = worker, .delivery_id = delivery_id,
        .attempt = msg ? msg->attempts : 0, .reason = reason
    };
    if (stored)
        self->store (self->store_arg, &info);
    if (self->events && self->event && event != BRK_EVENT_EPOCH && event != BRK_EVENT_REQUEUED)
        self->event (self->event_arg, &info);
}

//  --------------------------------------------------------------------------
//  Publishing

int
brk_queue_publish (brk_queue_t *self, const char *message_id,
                   const char *json, size_t json_len, uint64_t seq)
{
    assert (self && message_id && json);
    assert (strlen (message_id) == 36);
    //  Insert first, so that a new id (the usual case) costs one probe of
    //  the map, not a look-up and then an insert
    brk_msg_t *msg = brk_msg_new (message_id);
    if (!msg)
        return -1;
    int rc = mdl_strmap_insert (self->messages, msg->id, msg);
    if (rc != 0) {
        brk_msg_destroy (&msg);
        if (rc < 0)
            return -1;
        self->counters.duplicates++;
        return 1;
    }
    if (brk_msg_set_body (msg, json, json_len) != 0) {
        mdl_strmap_delete (self->messages, msg->id);
        brk_msg_destroy (&msg);
        return -1;
    }
    msg->published_at = mdl_clock_now (&self->clock);
    msg->seq = seq;
    msg->publisher = self->publisher;
    if (self->room && brk_room_attach (self->room, msg) != 0) {
        mdl_strmap_delete (self->messages, msg->id);
        brk_room_detach (self->room, msg);
        brk_msg_destroy (&msg);
        return -1;
    }
    //  Under a policy a request that joins one already waiting for its
    //  target does so at once, even before its record is durable: it is
    //  never leased itself (nothing is acted on), and so the PUBACK can say
    //  whom it joined. The PUBACK still waits for the record.
    if (seq && !(self->room && brk_room_would_coalesce (self->room, msg))) {
        msg->state = BRK_MSG_HELD;
        s_list_push (&self->held, msg);
    }
    else
        s_make_ready (self, msg);
    s_pending_push (self, msg);
    self->body_bytes += json_len;
    self->counters.published++;
    s_emit (self, BRK_EVENT_PUBLISHED, msg, NULL, 0, NULL);
    return 0;
}

void
brk_queue_set_publisher (brk_queue_t *self, const char *publisher)
{
    assert (self);
    self->publisher = brk_names_intern (self->names, publisher);
}

bool
brk_queue_known (brk_queue_t *self, const char *message_id)
{
    return mdl_strmap_lookup (self->messages, message_id) != NULL;
}

brk_msg_t *
brk_queue_lookup (brk_queue_t *self, const char *message_id)
{
    return mdl_strmap_lookup (self->messages, message_id);
}

void
brk_queue_release (brk_queue_t *self, uint64_t durable_seq)
{
    //  Sequence numbers grow in publish order, so the held list is sorted
    while (self->held.head && self->held.head->seq <= durable_seq) {
        brk_msg_t *msg = self->held.head;
        s_list_unlink (&self->held, msg);
        s_make_ready (self, msg);
    }
}

static int s_lease_open (brk_queue_t *self, brk_msg_t *msg, brk_worker_t *worker,
                         uint64_t delivery_id, int64_t now);
static int64_t s_restart_timeout (brk_queue_t *self, const brk_msg_t *msg);

//  A restored request in doubt without a lease to reopen: marked, and
//  delayed restart_timeout from now. 0, or -1 out of memory (then it is
//  ready at once, as before this rule).
static int
s_restore_doubt (brk_queue_t *self, brk_msg_t *msg, int64_t now)
{
    if (!msg->policy && !(msg->policy = calloc (1, sizeof (brk_msg_policy_t))))
        return -1;
    s_doubt_update (self, msg, true, msg->steps);
    brk_msg_extra_t *extra = brk_msg_extra (msg);
    if (!extra || mdl_heap_insert (self->delay_heap, &extra->delay,
                                   now + s_restart_timeout (self, msg)) != 0)
        return -1;
    msg->state = BRK_MSG_DELAYED;
    return 0;
}

int
brk_queue_restore (brk_queue_t *self, const brk_restore_t *restore)
{
    assert (self && restore && restore->message_id && (restore->json || restore->done));
    if (mdl_strmap_lookup (self->messages, restore->message_id))
        return 1;
    brk_msg_t *msg = brk_msg_new (restore->message_id);
    if (!msg)
        return -1;
    if (restore->done) {
        //  As s_complete leaves an acked message: its id only
        if (mdl_strmap_insert (self->messages, msg->id, msg) != 0) {
            brk_msg_destroy (&msg);
            return -1;
        }
        msg->state = BRK_MSG_DONE;
        s_list_push (&self->done, msg);
        s_done_trim (self);
        return 0;
    }
    if (brk_msg_set_body (msg, restore->json, restore->json_len) != 0) {
        brk_msg_destroy (&msg);
        return -1;
    }
    int64_t now = mdl_clock_now (&self->clock);
    int64_t age = mdl_clock_wall () - restore->published_ms;
    msg->published_at = now - (age > 0 ? age : 0);
    msg->attempts = restore->attempts;
    msg->steps = restore->steps;
    msg->publisher = brk_names_intern (self->names, restore->publisher);
    if ((restore->dead && !brk_msg_extra (msg))
    ||  (self->room && brk_room_attach (self->room, msg) != 0)) {
        if (self->room)
            brk_room_detach (self->room, msg);
        brk_msg_destroy (&msg);
        return -1;
    }
    if (mdl_strmap_insert (self->messages, msg->id, msg) != 0) {
        if (self->room)
            brk_room_detach (self->room, msg);
        brk_msg_destroy (&msg);
        return -1;
    }
    self->body_bytes += restore->json_len;
    if (restore->dead) {
        msg->state = BRK_MSG_DEAD;
        msg->extra->dead_reason = strdup (restore->dead_reason ? restore->dead_reason : "");
        msg->extra->history_json = restore->dead_history ? strdup (restore->dead_history) : NULL;
        msg->extra->dead_at = restore->dead_ms;
        s_list_push (&self->dead, msg);
        return 0;
    }
    s_pending_push (self, msg);
    //  Under a policy a target holds one lease: a second recovered lease
    //  for it waits as a fresh delivery instead
    bool locked = msg->policy && msg->policy->target && msg->policy->target->leased;
    bool doubt = (msg->steps & BRK_STEP_STARTED) && !(msg->steps & BRK_STEP_RESTART);
    if (restore->delivery_id && restore->attempts > 0 && !locked
    &&  s_lease_open (self, msg, NULL, restore->delivery_id, now) == 0) {
        //  Its restart may still run: counted as started at the recovery,
        //  so the lease's end holds it for restart_timeout from now
        if (doubt)
            msg->lease->started_at = now ? now : 1;
        return 0;
    }
    if (doubt && s_restore_doubt (self, msg, now) == 0)
        return 0;
    s_make_ready (self, msg);
    return 0;
}

//  --------------------------------------------------------------------------
//  Workers

brk_worker_t *
brk_queue_worker_add (brk_queue_t *self, const char *name, int64_t credit, void *handle)
{
    assert (self);
    brk_worker_t *worker = brk_worker_new (self->next_worker_id + 1, name, credit, handle,
                                           mdl_clock_now (&self->clock));
    if (!worker)
        return NULL;
    self->next_worker_id++;
    //  New workers go to the end of the round-robin
    if (self->workers) {
        brk_worker_t *last = self->workers;
        while (last->next)
            last = last->next;
        last->next = worker;
        worker->prev = last;
    }
    else
        self->workers = worker;
    self->worker_count++;
    s_emit (self, BRK_EVENT_WORKER_JOINED, NULL, worker, 0, NULL);
    return worker;
}

void
brk_queue_worker_set_credit (brk_queue_t *self, brk_worker_t *worker, int64_t credit)
{
    assert (self && worker);
    brk_worker_set_credit (worker, credit);
}

void
brk_queue_worker_seen (brk_queue_t *self, brk_worker_t *worker)
{
    worker->last_seen = mdl_clock_now (&self->clock);
}

//  --------------------------------------------------------------------------
//  Outcomes

int64_t
brk_queue_backoff (const brk_queue_t *self, int64_t attempt)
{
    int64_t delay = self->config.backoff_base_ms;
    for (int64_t i = 1; i < attempt && delay < self->config.backoff_max_ms; i++)
        delay *= 2;
    return delay < self->config.backoff_max_ms ? delay : self->config.backoff_max_ms;
}

static void
s_record (brk_queue_t *self, brk_msg_t *msg, brk_lease_t *lease,
          const char *outcome, const char *reason)
{
    size_t keep = (size_t) self->config.max_attempts;
    if (keep > 64)
        keep = 64;
    brk_msg_record (msg, keep, lease->delivery_id, lease->worker ? lease->worker->name : "(gone)",
                    outcome, reason, mdl_clock_wall ());
}

//  Close a lease: out of the map, the heap and its holder's list.
static void
s_lease_close (brk_queue_t *self, brk_lease_t *lease)
{
    mdl_map_delete (self->leases, lease->delivery_id);
    mdl_heap_remove (self->lease_heap, &lease->deadline);
    brk_worker_t *worker = lease->worker;
    if (worker)
        brk_worker_lease_remove (worker, lease);
    lease->msg->lease = NULL;
    lease->msg->last_worker = worker ? worker->id : 0;
    self->in_flight--;
    //  Free for reuse from here on: callers read what they need before
    lease->wnext = self->spare_leases;
    self->spare_leases = lease;
}

static void s_dead_letter_as (brk_queue_t *self, brk_msg_t *msg, const char *text);
static void s_hold_end (brk_queue_t *self, brk_msg_t *msg);
static void s_late_forget (brk_queue_t *self, brk_msg_t *msg);

static void
s_dead_letter (brk_queue_t *self, brk_msg_t *msg, const char *outcome, const char *reason)
{
    char text [256];
    snprintf (text, sizeof text, "%s after %" PRId64 " attempts%s%s", outcome,
              msg->attempts, reason && *reason ? ": " : "", reason ? reason : "");
    s_dead_letter_as (self, msg, text);
}

//  Dead-letter msg with this reason; requests coalesced into it go with it.
static void
s_dead_letter_as (brk_queue_t *self, brk_msg_t *msg, const char *text)
{
    s_hold_end (self, msg);
    s_late_forget (self, msg);
    //  Out of memory, the message is still dead-lettered, without a reason
    brk_msg_extra_t *extra = brk_msg_extra (msg);
    if (extra) {
        free (extra->dead_reason);
        extra->dead_reason = strdup (text);
        extra->dead_at = mdl_clock_wall ();
    }
    msg->state = BRK_MSG_DEAD;
    s_pending_unlink (self, msg);
    s_list_push (&self->dead, msg);
    self->counters.dead_lettered++;
    mdl_warn ("dead-lettered %s: %s", msg->id, text);
    s_emit (self, BRK_EVENT_DEAD_LETTERED, msg, NULL, 0, extra ? extra->dead_reason : NULL);
    if (msg->policy) {
        if (self->room && msg->policy->target)
            brk_room_unwait (self->room, msg);
        brk_msg_t *follower = msg->policy->followers;
        msg->policy->followers = NULL;
        while (follower) {
            brk_msg_t *next = follower->policy->fnext;
            follower->policy->fnext = NULL;
            follower->policy->leader = NULL;
            s_dead_letter_as (self, follower, text);
            follower = next;
        }
    }
}

//  A lease ended without an ack: give the message another go after a
//  delay, or dead-letter it when it has had all its attempts.
static void
s_retry (brk_queue_t *self, brk_msg_t *msg, int64_t delay_ms,
         const char *outcome, const char *reason)
{
    if (msg->attempts >= self->config.max_attempts) {
        s_dead_letter (self, msg, outcome, reason);
        return;
    }
    if (delay_ms < 0)
        delay_ms = brk_queue_backoff (self, msg->attempts);
    if (delay_ms == 0)
        s_make_ready (self, msg);
    else {
        msg->state = BRK_MSG_DELAYED;
        brk_msg_extra_t *extra = brk_msg_extra (msg);
        if (!extra
        ||  mdl_heap_insert (self->delay_heap, &extra->delay,
                             mdl_clock_now (&self->clock) + delay_ms) != 0) {
            //  No memory for the heap slot: retry at once rather than lose it
            s_make_ready (self, msg);
        }
    }
}

//  --------------------------------------------------------------------------
//  Leases

static brk_result_t
s_classify (brk_queue_t *self, uint64_t delivery_id, brk_lease_t **lease_p)
{
    brk_lease_t *lease = mdl_map_lookup (self->leases, delivery_id);
    if (lease) {
        *lease_p = lease;
        return BRK_OK;
    }
    uint64_t epoch = delivery_id >> S_SEQ_BITS;
    uint64_t seq = delivery_id & S_SEQ_MASK;
    if (epoch == 0 || epoch > (uint64_t) self->config.epoch)
        return BRK_UNKNOWN;
    if (epoch == (uint64_t) self->config.epoch && (seq == 0 || seq >= self->next_seq))
        return BRK_UNKNOWN;
    return BRK_STALE;
}

static uint64_t
s_next_delivery_id (brk_queue_t *self)
{
    if (self->next_seq > S_SEQ_MASK) {
        //  4 billion leases in one run: move to the next epoch, and have
        //  the store keep it before the lease goes out, so the next start
        //  moves past it instead of issuing these ids again
        self->config.epoch++;
        self->next_seq = 1;
        s_emit (self, BRK_EVENT_EPOCH, NULL, NULL,
                ((uint64_t) self->config.epoch << S_SEQ_BITS) | 1, NULL);
    }
    return ((uint64_t) self->config.epoch << S_SEQ_BITS) | self->next_seq++;
}

//  msg's last lease no longer takes a late ACK or PROGRESS (a newer lease
//  exists, or msg is done or dead).
static void
s_late_forget (brk_queue_t *self, brk_msg_t *msg)
{
    if (msg->extra && msg->extra->late_id) {
        mdl_map_delete (self->late, msg->extra->late_id);
        msg->extra->late_id = 0;
    }
}

//  Open a lease on msg for worker (NULL: a lease recovered from before a
//  restart, held by nobody we know) lasting one ack deadline from now.
//  Returns 0 or -1 when out of memory.
static int
s_lease_open (brk_queue_t *self, brk_msg_t *msg, brk_worker_t *worker, uint64_t delivery_id,
              int64_t now)
{
    brk_lease_t *lease = self->spare_leases;
    if (lease)
        self->spare_leases = lease->wnext;
    else {
        lease = malloc (sizeof (brk_lease_t));
        if (!lease)
            return -1;
    }
    memset (lease, 0, sizeof *lease);
    lease->delivery_id = delivery_id;
    lease->msg = msg;
    lease->worker = worker;
    lease->opened_at = now;
    if (mdl_heap_insert (self->lease_heap, &lease->deadline,
                         now + self->config.ack_deadline_ms) != 0
    ||  mdl_map_insert (self->leases, lease->delivery_id, lease) != 0) {
        mdl_heap_remove (self->lease_heap, &lease->deadline);
        lease->wnext = self->spare_leases;
        self->spare_leases = lease;
        return -1;
    }
    if (worker)
        brk_worker_lease_add (worker, lease);
    s_late_forget (self, msg);
    msg->lease = lease;
    msg->state = BRK_MSG_LEASED;
    self->in_flight++;
    if (self->room && msg->policy && msg->policy->target) {
        brk_target_t *target = msg->policy->target;
        brk_room_leased (self->room, msg);
        //  Out of memory the last-restart stamp is lost, not the lease
        if (brk_policy_leased (self->policy, target->name, (size_t) target->group) != 0)
            mdl_warn ("policy: no memory to stamp %s", target->name);
    }
    return 0;
}

//  A lease on msg ended. Frees its target and its group slot, unless the
//  restart is in doubt (hold): then both stay taken until the hold ends
//  (s_hold_end), so an orphan restart cannot run beside a new one.
static void
s_policy_end (brk_queue_t *self, brk_msg_t *msg, brk_policy_outcome_t outcome, bool hold)
{
    if (!self->room || !msg->policy || !msg->policy->target)
        return;
    size_t group = (size_t) msg->policy->target->group;
    bool was_paused = brk_policy_paused_reason (self->policy, group) != NULL;
    brk_policy_released (self->policy, group, outcome);
    const char *why = brk_policy_paused_reason (self->policy, group);
    if (why && !was_paused) {
        char reason [256];
        snprintf (reason, sizeof reason, "%s: %s",
                  brk_policy_group_config (self->policy, group)->name, why);
        mdl_warn ("group %s", reason);
        s_emit (self, BRK_EVENT_GROUP_PAUSED, NULL, NULL, 0, reason);
    }
    if (hold) {
        brk_policy_hold (self->policy, group);
        brk_room_hold (self->room, msg);
    }
    else
        brk_room_released (self->room, msg);
}

//  A message held in doubt is due again: give back its target and slot.
static void
s_hold_end (brk_queue_t *self, brk_msg_t *msg)
{
    if (!self->room || !msg->policy || !msg->policy->target
    ||  msg->policy->target->leased != msg)
        return;
    brk_policy_released (self->policy, (size_t) msg->policy->target->group, BRK_POLICY_NEUTRAL);
    brk_room_released (self->room, msg);
}

static bool
s_lease_to (brk_queue_t *self, brk_worker_t *worker, brk_msg_t *msg, int64_t now,
            brk_deliver_fn *deliver, void *arg)
{
    brk_lease_t *lease;
    if (s_lease_open (self, msg, worker, s_next_delivery_id (self), now) != 0)
        return false;
    lease = msg->lease;
    msg->attempts++;
    self->counters.delivered++;
    if (msg->attempts > 1)
        self->counters.redelivered++;
    deliver (arg, worker, lease->delivery_id, msg, msg->attempts);
    s_emit (self, BRK_EVENT_DELIVERED, msg, worker, lease->delivery_id, NULL);
    return true;
}

//  A worker with room for msg, round-robin from the cursor, another than
//  its previous holder when one has room. O(workers).
static brk_worker_t *
s_pick_worker (brk_queue_t *self, const brk_msg_t *msg)
{
    brk_worker_t *start = self->cursor ? self->cursor : self->workers;
    brk_worker_t *worker = start, *fallback = NULL;
    if (!worker)
        return NULL;
    do {
        if (worker->in_flight < worker->credit) {
            if (worker->id != msg->last_worker || msg->last_worker == 0) {
                self->cursor = worker->next ? worker->next : self->workers;
                return worker;
            }
            if (!fallback)
                fallback = worker;
        }
        worker = worker->next ? worker->next : self->workers;
    } while (worker != start);
    if (fallback)
        self->cursor = fallback->next ? fallback->next : self->workers;
    return fallback;
}

//  Dispatch under a policy: each group in turn (the first one moves each
//  call) dead-letters heads older than its max_age ("max_age"), whatever
//  its budget, then leases from the head of its list while its budget and
//  the workers' credit allow. A head whose target is leased is parked on
//  it; one held back by the least interval waits in the delay heap.
//  O(groups + workers + leases made * workers).
static size_t
s_dispatch_policy (brk_queue_t *self, brk_deliver_fn *deliver, void *arg, int64_t now)
{
    int64_t spare = 0;
    for (brk_worker_t *w = self->workers; w; w = w->next)
        if (w->in_flight < w->credit)
            spare += w->credit - w->in_flight;
    size_t leased = 0;
    size_t groups = brk_room_group_count (self->room);
    for (size_t i = 0; i < groups && brk_room_ready (self->room); i++) {
        size_t group = (self->group_cursor + i) % groups;
        //  Too old is too old even while the group may not lease: the
        //  heads are the oldest (near enough: lists are FIFO by readiness)
        int64_t max_age = brk_policy_group_config (self->policy, group)->max_age_ms;
        brk_msg_t *head;
        while (max_age && (head = brk_room_peek (self->room, group))
        &&     now - head->published_at > max_age) {
            brk_room_pop (self->room, group);
            s_dead_letter_as (self, head, "max_age");
        }
        brk_policy_verdict_t check = BRK_POLICY_OK;
        while (spare > 0 && (check = brk_policy_group_check (self->policy, group)) == BRK_POLICY_OK) {
            brk_msg_t *msg = brk_room_pop (self->room, group);
            if (!msg)
                break;
            brk_target_t *target = msg->policy->target;
            if (target->leased) {
                brk_room_requeue (self->room, msg);
                s_waiting (self, msg, S_WAIT_TARGET_BUSY);
                continue;
            }
            int64_t until = 0;
            brk_policy_verdict_t verdict = brk_policy_target_check (
                self->policy, target->name, group, now - msg->published_at, &until);
            if (verdict == BRK_POLICY_TOO_OLD) {
                s_dead_letter_as (self, msg, "max_age");
                continue;
            }
            if (verdict == BRK_POLICY_INTERVAL) {
                brk_msg_extra_t *extra = brk_msg_extra (msg);
                if (extra && mdl_heap_insert (self->delay_heap, &extra->delay, until) == 0) {
                    msg->state = BRK_MSG_DELAYED;
                    s_waiting (self, msg, S_WAIT_INTERVAL);
                    continue;
                }
                brk_room_push_front (self->room, msg);
                break;          //  Out of memory: try again next call
            }
            brk_worker_t *worker = verdict == BRK_POLICY_OK ? s_pick_worker (self, msg) : NULL;
            if (!worker) {
                brk_room_push_front (self->room, msg);
                if (verdict == BRK_POLICY_OK)
                    spare = 0;
                break;
            }
            //  in_doubt = dead_letter: only a worker that verifies may
            //  decide whether an in-doubt restart happened; else an operator
            if (msg->policy->in_doubt && !(msg->steps & BRK_STEP_RESTART)
            &&  !(worker->features & BRK_FEATURE_VERIFY)
            &&  brk_policy_group_config (self->policy, group)->in_doubt == BRK_IN_DOUBT_DEAD_LETTER) {
                s_dead_letter_as (self, msg, "in_doubt");
                continue;
            }
            if (!s_lease_to (self, worker, msg, now, deliver, arg)) {
                brk_room_push_front (self->room, msg);
                return leased;
            }
            spare--;
            leased++;
        }
        if (spare > 0 && check != BRK_POLICY_OK)
            s_waiting_group (self, group, s_wait_code (check));
    }
    if (groups)
        self->group_cursor = (self->group_cursor + 1) % groups;
    return leased;
}

int
brk_queue_set_policy (brk_queue_t *self, brk_policy_t *policy)
{
    assert (self && policy);
    assert (mdl_strmap_size (self->messages) == 0);
    brk_room_t *room = brk_room_new (policy);
    size_t *group_in_doubt = calloc (brk_policy_group_count (policy) + 1, sizeof (size_t));
    if (!room || !group_in_doubt) {
        brk_room_destroy (&room);
        free (group_in_doubt);
        return -1;
    }
    brk_room_destroy (&self->room);
    free (self->group_in_doubt);
    self->group_in_doubt = group_in_doubt;
    self->room = room;
    self->policy = policy;
    return 0;
}

brk_policy_t *
brk_queue_policy (brk_queue_t *self)
{
    return self->policy;
}

int
brk_queue_group_stats (brk_queue_t *self, size_t group, brk_group_stats_t *stats)
{
    if (!self->policy || group >= brk_policy_group_count (self->policy))
        return -1;
    brk_policy_group_stats (self->policy, group, stats);
    stats->waiting = (int64_t) brk_room_group_ready (self->room, group);
    stats->in_doubt = (int64_t) self->group_in_doubt [group];
    return 0;
}

size_t
brk_queue_dispatch (brk_queue_t *self, brk_deliver_fn *deliver, void *arg)
{
    assert (self && deliver);
    if (self->room)
        return s_dispatch_policy (self, deliver, arg, mdl_clock_now (&self->clock));
    size_t leased = 0;
    //  One reading for the whole deal: the leases it makes start together
    int64_t now = mdl_clock_now (&self->clock);
    //  Deal in rounds of a fair share (at most a chunk) per worker, so that
    //  a burst spreads over every worker with room, not all to the first.
    int64_t chunk = 64;
    while (self->ready.size && self->workers) {
        size_t spare_workers = 0;
        for (brk_worker_t *w = self->workers; w; w = w->next)
            if (w->in_flight < w->credit)
                spare_workers++;
        if (spare_workers == 0)
            break;
        int64_t share = ((int64_t) self->ready.size + (int64_t) spare_workers - 1)
                      / (int64_t) spare_workers;
        if (share < chunk)
            chunk = share;
        size_t round = 0;
        brk_worker_t *start = self->cursor ? self->cursor : self->workers;
        brk_worker_t *worker = start;
        do {
            int64_t room = worker->credit - worker->in_flight;
            if (room > chunk)
                room = chunk;
            //  Redeliveries this worker had last wait for another worker,
            //  when there is one with room; they go back to the front after.
            s_list_t skipped = { NULL, NULL, 0 };
            while (room > 0 && self->ready.head) {
                brk_msg_t *msg = self->ready.head;
                s_list_unlink (&self->ready, msg);
                if (msg->last_worker == worker->id && spare_workers > 1) {
                    s_list_push (&skipped, msg);
                    continue;
                }
                if (!s_lease_to (self, worker, msg, now, deliver, arg)) {
                    s_list_push (&skipped, msg);
                    room = 0;
                    break;
                }
                room--;
                round++;
            }
            while (skipped.tail) {
                brk_msg_t *msg = skipped.tail;
                s_list_unlink (&skipped, msg);
                msg->next = self->ready.head;
                msg->prev = NULL;
                if (self->ready.head)
                    self->ready.head->prev = msg;
                else
                    self->ready.tail = msg;
                self->ready.head = msg;
                self->ready.size++;
            }
            worker = worker->next ? worker->next : self->workers;
        } while (worker != start && self->ready.size);
        self->cursor = worker;
        leased += round;
        if (round == 0)
            break;              //  Only skipped redeliveries remain
    }
    //  Skipped messages with nobody else free go to their previous worker
    //  rather than wait: "preferably another worker", not "never the same".
    if (self->ready.size) {
        for (brk_worker_t *w = self->workers; w && self->ready.head; w = w->next)
            while (w->in_flight < w->credit && self->ready.head) {
                brk_msg_t *msg = self->ready.head;
                s_list_unlink (&self->ready, msg);
                if (!s_lease_to (self, w, msg, now, deliver, arg)) {
                    msg->next = self->ready.head;
                    if (self->ready.head)
                        self->ready.head->prev = msg;
                    else
                        self->ready.tail = msg;
                    self->ready.head = msg;
                    self->ready.size++;
                    return leased;
                }
                leased++;
            }
    }
    return leased;
}

//  A lease that ends while its restart was started and not finished puts
//  the request in doubt; returns how long it must wait (0 when not in doubt).
static int64_t
s_in_doubt (brk_queue_t *self, brk_lease_t *lease, int64_t now)
{
    brk_msg_t *msg = lease->msg;
    if (!lease->started_at || (msg->steps & BRK_STEP_RESTART))
        return 0;
    if (!msg->policy) {
        msg->policy = calloc (1, sizeof (brk_msg_policy_t));
        if (!msg->policy)
            return 0;       //  Not marked, but still held below
    }
    s_doubt_update (self, msg, true, msg->steps);
    int64_t left = lease->started_at + s_restart_timeout (self, msg) - now;
    return left > 0 ? left : 0;
}

//  A started restart's own time limit: its group's, or the queue's.
static int64_t
s_restart_timeout (brk_queue_t *self, const brk_msg_t *msg)
{
    if (self->policy && msg->policy && msg->policy->target)
        return brk_policy_group_config (self->policy,
                                        (size_t) msg->policy->target->group)->restart_timeout_ms;
    return self->config.restart_timeout_ms;
}

//  A lease ended without an ack (outcome, reason for the history).
static void
s_lease_failed (brk_queue_t *self, brk_lease_t *lease, int64_t delay_ms,
                const char *outcome, const char *reason, const char *event_reason)
{
    int64_t now = mdl_clock_now (&self->clock);
    brk_msg_t *msg = lease->msg;
    s_record (self, msg, lease, outcome, reason);
    brk_worker_t *worker = lease->worker;
    uint64_t delivery_id = lease->delivery_id;
    int64_t hold = s_in_doubt (self, lease, now);
    s_lease_close (self, lease);
    self->counters.expired++;
    s_policy_end (self, msg, BRK_POLICY_FAILURE, hold > 0);
    s_emit (self, BRK_EVENT_EXPIRED, msg, worker, delivery_id, event_reason);
    if (hold > 0)
        s_emit (self, BRK_EVENT_IN_DOUBT, msg, worker, delivery_id, "restart started, not finished");
    if (hold > 0) {
        int64_t backoff = delay_ms < 0 ? brk_queue_backoff (self, msg->attempts) : delay_ms;
        delay_ms = hold > backoff ? hold : backoff;
    }
    s_retry (self, msg, delay_ms, outcome, reason);
    //  Its worker may still finish it: until msg is leased again, the
    //  old id's ACK and PROGRESS are taken (brk_queue_ack). Out of memory,
    //  the id is only stale, as it always was.
    if ((msg->state == BRK_MSG_READY || msg->state == BRK_MSG_DELAYED) && msg->extra) {
        s_late_forget (self, msg);
        if (mdl_map_insert (self->late, delivery_id, msg) == 0)
            msg->extra->late_id = delivery_id;
    }
}

//  msg is acked: done, with every request coalesced into it.
static void
s_complete (brk_queue_t *self, brk_msg_t *msg, brk_worker_t *worker, uint64_t delivery_id)
{
    s_late_forget (self, msg);
    msg->state = BRK_MSG_DONE;
    s_pending_unlink (self, msg);
    self->body_bytes -= msg->json_len;
    self->counters.acked++;
    s_emit (self, BRK_EVENT_ACKED, msg, worker, delivery_id, NULL);
    brk_msg_t *follower = msg->policy ? msg->policy->followers : NULL;
    if (msg->policy) {
        msg->policy->followers = NULL;
        if (self->room)
            brk_room_detach (self->room, msg);
        else {
            free (msg->policy);
            msg->policy = NULL;
        }
    }
    //  Keep only the id, to recognise a late re-publish
    brk_msg_forget_body (msg);
    s_list_push (&self->done, msg);
    while (follower) {
        brk_msg_t *next = follower->policy->fnext;
        follower->policy->fnext = NULL;
        s_complete (self, follower, worker, delivery_id);
        follower = next;
    }
}

//  The message whose last lease was delivery_id, when that lease ended by
//  expiry or loss and msg has not been leased again since; or NULL.
static brk_msg_t *
s_late (brk_queue_t *self, uint64_t delivery_id)
{
    brk_msg_t *msg = mdl_map_lookup (self->late, delivery_id);
    if (msg && (msg->state == BRK_MSG_READY || msg->state == BRK_MSG_DELAYED))
        return msg;
    return NULL;
}

//  A late ACK: take msg out of the delay heap or the ready list so it can
//  complete. Under a policy a READY message sits in its group's lists,
//  which cannot give up one member: it stays (false), and the ACK is stale.
static bool
s_late_take (brk_queue_t *self, brk_msg_t *msg)
{
    if (msg->state == BRK_MSG_DELAYED) {
        mdl_heap_remove (self->delay_heap, &msg->extra->delay);
        s_hold_end (self, msg);
        return true;
    }
    if (msg->state == BRK_MSG_READY && !(self->room && msg->policy)) {
        s_list_unlink (&self->ready, msg);
        return true;
    }
    return false;
}

brk_result_t
brk_queue_ack (brk_queue_t *self, uint64_t delivery_id)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result == BRK_STALE) {
        brk_msg_t *msg = s_late (self, delivery_id);
        if (!msg || !s_late_take (self, msg))
            return BRK_STALE;
        self->counters.late++;
        s_complete (self, msg, NULL, delivery_id);
        s_done_trim (self);
        return BRK_OK;
    }
    if (result != BRK_OK)
        return result;
    brk_msg_t *msg = lease->msg;
    brk_worker_t *worker = lease->worker;
    s_lease_close (self, lease);
    s_policy_end (self, msg, BRK_POLICY_SUCCESS, false);
    s_complete (self, msg, worker, delivery_id);
    s_done_trim (self);
    return BRK_OK;
}

brk_result_t
brk_queue_extend (brk_queue_t *self, uint64_t delivery_id, int64_t extension_ms)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result != BRK_OK)
        return result;
    if (extension_ms < 0)
        extension_ms = self->config.ack_deadline_ms;
    mdl_heap_update (self->lease_heap, &lease->deadline,
                     mdl_clock_now (&self->clock) + extension_ms);
    s_emit (self, BRK_EVENT_EXTENDED, lease->msg, lease->worker, delivery_id, NULL);
    return BRK_OK;
}

brk_result_t
brk_queue_nack (brk_queue_t *self, uint64_t delivery_id, int64_t delay_ms, const char *reason)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result != BRK_OK)
        return result;
    brk_msg_t *msg = lease->msg;
    s_record (self, msg, lease, "nacked", reason);
    brk_worker_t *worker = lease->worker;
    s_lease_close (self, lease);
    self->counters.nacked++;
    s_policy_end (self, msg, BRK_POLICY_FAILURE, false);
    s_emit (self, BRK_EVENT_NACKED, msg, worker, delivery_id, reason);
    s_retry (self, msg, delay_ms, "nacked", reason);
    return BRK_OK;
}

//  Give a lease back unused: no attempt spent, no policy failure, ready
//  again at once (preferably for another worker).
static void
s_requeue (brk_queue_t *self, brk_lease_t *lease, const char *reason)
{
    brk_msg_t *msg = lease->msg;
    uint64_t delivery_id = lease->delivery_id;
    s_record (self, msg, lease, "nacked", reason);
    brk_worker_t *worker = lease->worker;
    s_lease_close (self, lease);
    //  The delivery never ran: it does not count as an attempt
    if (msg->attempts > 0)
        msg->attempts--;
    self->counters.nacked++;
    self->counters.requeued++;
    s_policy_end (self, msg, BRK_POLICY_NEUTRAL, false);
    s_emit (self, BRK_EVENT_NACKED, msg, worker, delivery_id, reason);
    //  Journaled too, so a restart before the next delivery neither counts
    //  the attempt again nor holds the message as leased
    s_emit (self, BRK_EVENT_REQUEUED, msg, NULL, 0, NULL);
    s_make_ready (self, msg);
}

brk_result_t
brk_queue_requeue (brk_queue_t *self, uint64_t delivery_id, const char *reason)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result != BRK_OK)
        return result;
    s_requeue (self, lease, reason ? reason : "requeue");
    return BRK_OK;
}

brk_result_t
brk_queue_progress (brk_queue_t *self, uint64_t delivery_id, unsigned steps)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result == BRK_STALE) {
        //  A late report of the last lease: the step is done, so the next
        //  delivery skips it; a finished restart is no longer in doubt
        brk_msg_t *msg = s_late (self, delivery_id);
        if (!msg)
            return BRK_STALE;
        if (msg->policy)
            s_doubt_update (self, msg, msg->policy->in_doubt && !(steps & BRK_STEP_RESTART),
                            msg->steps | steps);
        else
            msg->steps |= steps;
        self->counters.late++;
        s_emit (self, BRK_EVENT_PROGRESS, msg, NULL, delivery_id, NULL);
        return BRK_OK;
    }
    if (result != BRK_OK)
        return result;
    if (lease->msg->policy)
        s_doubt_update (self, lease->msg, lease->msg->policy->in_doubt, lease->msg->steps | steps);
    else
        lease->msg->steps |= steps;
    if (steps & BRK_STEP_RESTART)
        lease->started_at = 0;
    s_emit (self, BRK_EVENT_PROGRESS, lease->msg, lease->worker, delivery_id, NULL);
    return BRK_OK;
}

bool
brk_queue_lease_open (brk_queue_t *self, uint64_t delivery_id)
{
    return mdl_map_lookup (self->leases, delivery_id) != NULL;
}

brk_result_t
brk_queue_started (brk_queue_t *self, uint64_t delivery_id)
{
    brk_lease_t *lease;
    brk_result_t result = s_classify (self, delivery_id, &lease);
    if (result != BRK_OK)
        return result;
    if (!(lease->msg->steps & BRK_STEP_RESTART))
        lease->started_at = mdl_clock_now (&self->clock);
    //  0 means "not started": a clock at 0 still counts as started
    if (lease->started_at == 0 && !(lease->msg->steps & BRK_STEP_RESTART))
        lease->started_at = 1;
    //  Stored like any progress (the journal's PROGRESS ORs it in), so a
    //  broker that restarts knows the restart may be running
    lease->msg->steps |= BRK_STEP_STARTED;
    s_emit (self, BRK_EVENT_PROGRESS, lease->msg, lease->worker, delivery_id, "started");
    return BRK_OK;
}

void
brk_queue_worker_set_features (brk_queue_t *self, brk_worker_t *worker, unsigned features)
{
    assert (self && worker);
    worker->features = features;
}

const char *
brk_queue_msg_coalesced_with (const brk_msg_t *msg)
{
    return msg->state == BRK_MSG_COALESCED && msg->policy && msg->policy->leader
         ? msg->policy->leader->id : NULL;
}

bool
brk_queue_msg_in_doubt (const brk_msg_t *msg)
{
    return msg->policy && msg->policy->in_doubt;
}

static void
s_worker_remove (brk_queue_t *self, brk_worker_t **worker_p, const char *reason, bool lost)
{
    assert (self && worker_p);
    brk_worker_t *worker = *worker_p;
    if (!worker)
        return;
    //  Give back its leases at once: no need to wait for their deadlines.
    //  A worker that says BYE has answered all it received, so a lease it
    //  still holds is one it never got (a DELIVER that crossed its BYE): it
    //  is given back unused, unless its restart was reported started
    while (worker->leases) {
        brk_lease_t *lease = worker->leases;
        if (!lost && !lease->started_at)
            s_requeue (self, lease, "worker left before receiving it");
        else
            s_lease_failed (self, lease, 0, "worker_lost", reason, "worker_lost");
    }
    if (worker->prev)
        worker->prev->next = worker->next;
    else
        self->workers = worker->next;
    if (worker->next)
        worker->next->prev = worker->prev;
    if (self->cursor == worker)
        self->cursor = worker->next;
    self->worker_count--;
    if (lost)
        self->counters.workers_lost++;
    else
        self->counters.workers_left++;
    s_emit (self, BRK_EVENT_WORKER_LOST, NULL, worker, 0, reason);
    brk_worker_destroy (worker_p);
}

void
brk_queue_worker_remove (brk_queue_t *self, brk_worker_t **worker_p, const char *reason)
{
    s_worker_remove (self, worker_p, reason, true);
}

void
brk_queue_worker_leave (brk_queue_t *self, brk_worker_t **worker_p)
{
    s_worker_remove (self, worker_p, "said BYE", false);
}

int64_t
brk_queue_tick (brk_queue_t *self, brk_lost_fn *lost, void *arg)
{
    int64_t now = mdl_clock_now (&self->clock);

    mdl_heap_node_t *node;
    while ((node = mdl_heap_top (self->lease_heap)) && node->key <= now) {
        brk_lease_t *lease = (brk_lease_t *) ((char *) node - offsetof (brk_lease_t, deadline));
        s_lease_failed (self, lease, -1, "expired", NULL, "deadline");
    }
    while ((node = mdl_heap_top (self->delay_heap)) && node->key <= now) {
        mdl_heap_pop (self->delay_heap);
        brk_msg_t *msg = ((brk_msg_extra_t *) ((char *) node - offsetof (brk_msg_extra_t, delay)))->msg;
        s_hold_end (self, msg);
        s_make_ready (self, msg);
    }
    if (now >= self->next_liveness) {
        int64_t silence = 3 * self->config.heartbeat_ms;
        brk_worker_t *worker = self->workers;
        while (worker) {
            brk_worker_t *next = worker->next;
            if (now - worker->last_seen >= silence) {
                if (lost)
                    lost (arg, worker->handle);
                brk_queue_worker_remove (self, &worker, "no heartbeat");
            }
            worker = next;
        }
        //  From now, not from the missed slot: a stall is no burst of scans
        self->next_liveness = now + self->config.heartbeat_ms / 2 + 1;
    }

    int64_t next = self->workers ? self->next_liveness : INT64_MAX;
    if ((node = mdl_heap_top (self->lease_heap)) && node->key < next)
        next = node->key;
    if ((node = mdl_heap_top (self->delay_heap)) && node->key < next)
        next = node->key;
    return next;
}

void
brk_queue_stalled (brk_queue_t *self, int64_t gap_ms)
{
    assert (self);
    if (gap_ms <= 0)
        return;
    int64_t now = mdl_clock_now (&self->clock);
    for (brk_worker_t *worker = self->workers; worker; worker = worker->next)
        if (worker->last_seen < now)
            worker->last_seen = now;
    //  The same shift for every key keeps the heap's order
    size_t cursor = 0;
    brk_lease_t *lease;
    while ((lease = (brk_lease_t *) mdl_map_next (self->leases, &cursor)))
        if (mdl_heap_contains (&lease->deadline))
            mdl_heap_update (self->lease_heap, &lease->deadline, lease->deadline.key + gap_ms);
    if (self->next_liveness < now + self->config.heartbeat_ms)
        self->next_liveness = now + self->config.heartbeat_ms;
}

//  --------------------------------------------------------------------------
//  Dead letters

size_t
brk_queue_dead_letters (brk_queue_t *self, size_t limit, brk_msg_fn *fn, void *arg)
{
    size_t count = 0;
    for (brk_msg_t *msg = self->dead.head; msg && count < limit; msg = msg->next, count++)
        fn (arg, msg);
    return count;
}

int
brk_queue_replay (brk_queue_t *self, const char *message_id)
{
    brk_msg_t *msg = mdl_strmap_lookup (self->messages, message_id);
    if (!msg || msg->state != BRK_MSG_DEAD)
        return -1;
    s_list_unlink (&self->dead, msg);
    //  The operator's word: a replayed request is not in doubt (it may
    //  have been dead-lettered "in_doubt" for someone to check the host),
    //  as it is not after a restart either (recovery keeps no mark for a
    //  dead letter)
    if (msg->policy)
        s_doubt_update (self, msg, false, msg->steps);
    msg->attempts = 0;
    msg->last_worker = 0;
    msg->published_at = mdl_clock_now (&self->clock);
    s_pending_push (self, msg);
    s_make_ready (self, msg);
    self->counters.replayed++;
    s_emit (self, BRK_EVENT_REPLAYED, msg, NULL, 0, NULL);
    return 0;
}

//  --------------------------------------------------------------------------
//  Counters

void
brk_queue_stats (brk_queue_t *self, brk_queue_stats_t *stats)
{
    *stats = self->counters;
    stats->held = self->held.size;
    stats->ready = self->ready.size + (self->room ? brk_room_ready (self->room) : 0);
    stats->delayed = mdl_heap_size (self->delay_heap);
    stats->in_flight = self->in_flight;
    stats->pending = self->pending;
    stats->in_doubt = self->in_doubt;
    stats->memory_bytes = self->body_bytes;
    stats->dead = self->dead.size;
    stats->workers = self->worker_count;
    stats->oldest_unacked_ms = self->pending_head
        ? mdl_clock_now (&self->clock) - self->pending_head->published_at : 0;
}

int64_t
brk_queue_epoch (const brk_queue_t *self)
{
    return self->config.epoch;
}

//  --------------------------------------------------------------------------
//  Listings (INFLIGHT, WORKERS)

size_t
brk_queue_leases (brk_queue_t *self, size_t limit, brk_lease_fn *fn, void *arg)
{
    int64_t now = mdl_clock_now (&self->clock);
    size_t cursor = 0, count = 0;
    brk_lease_t *lease;
    while (count < limit && (lease = mdl_map_next (self->leases, &cursor))) {
        const brk_msg_t *msg = lease->msg;
        const brk_target_t *target = msg->policy ? msg->policy->target : NULL;
        brk_lease_info_t info = {
            .delivery_id = lease->delivery_id, .msg = msg, .worker = lease->worker,
            .age_ms = now - lease->opened_at, .deadline_ms = lease->deadline.key - now,
            .attempt = msg->attempts, .steps = msg->steps, .started = lease->started_at != 0,
            .target = target ? target->name : NULL, .group = target ? target->group : -1
        };
        fn (arg, &info);
        count++;
    }
    return count;
}

size_t
brk_queue_workers (brk_queue_t *self, brk_worker_fn *fn, void *arg)
{
    int64_t now = mdl_clock_now (&self->clock);
    size_t count = 0;
    for (brk_worker_t *worker = self->workers; worker; worker = worker->next, count++) {
        brk_worker_info_t info = { worker, now - worker->last_seen };
        fn (arg, &info);
    }
    return count;
}
