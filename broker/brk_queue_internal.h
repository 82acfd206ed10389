/*  brk_queue_internal: the insides of the queue's classes (brk_msg,
    brk_worker and the lease), shared by brk_queue.c, brk_msg.c and
    brk_worker.c only. Everyone else uses brk_msg.h, brk_worker.h and
    brk_queue.h.

    The queue is the state machine: it moves messages between its lists
    and heaps and reads and writes these fields directly; the classes own
    their allocation, their accessors, and the bookkeeping that concerns
    only themselves (a message's history ring, a worker's lease list).
*/
#ifndef BRK_QUEUE_INTERNAL_H_INCLUDED
#define BRK_QUEUE_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "brk_msg.h"
#include "brk_worker.h"
#include "mdl_heap.h"

//  A message's state; see brk_queue.c for what each means.
typedef enum {
    BRK_MSG_HELD,
    BRK_MSG_READY,
    BRK_MSG_DELAYED,
    BRK_MSG_LEASED,
    BRK_MSG_DEAD,
    BRK_MSG_DONE,
    BRK_MSG_COALESCED
} brk_msg_state_t;

typedef struct _brk_lease_t brk_lease_t;
typedef struct _brk_target_t brk_target_t;

//  What a message needs only under a restart policy (brk_group.c) or once
//  its restart is in doubt; NULL otherwise, so no policy costs 8 bytes.
typedef struct {
    brk_target_t *target;       //  Its target (host lock, group), or NULL
    brk_msg_t *followers;       //  Requests coalesced into this one
    brk_msg_t *fnext;           //  Next follower of the same leader
    brk_msg_t *leader;          //  When COALESCED: the request it completes with
    bool in_doubt;              //  A started restart's lease ended unfinished
    unsigned char waiting;      //  Last "waiting" event's reason (brk_queue.c), 0 = none
} brk_msg_policy_t;

//  What only a message that failed at least once (or came back dead from
//  the store) needs, kept apart so that the common message, published,
//  leased once and acked, stays small: 56 bytes less per message.
typedef struct {
    brk_msg_t *msg;             //  Owner, found from the delay heap's node
    mdl_heap_node_t delay;      //  Position in the delay heap when DELAYED
    brk_attempt_t *history;     //  Ring of the latest outcomes, or NULL
    size_t history_size;        //  Entries used
    char *history_json;         //  Recovered dead letter's history, or NULL
    char *dead_reason;          //  Why it was dead-lettered, or NULL
    int64_t dead_at;            //  Unix ms it was dead-lettered
    uint64_t late_id;           //  Last lease, ended by expiry or loss, whose ACK or
                                //  PROGRESS is still taken (in the queue's late map), or 0
} brk_msg_extra_t;

struct _brk_msg_t {
    char id [37];               //  message_id, canonical lower-case uuid
    brk_msg_state_t state;      //  See brk_queue.c
    uint64_t seq;               //  Store sequence number of the PUBLISH record
    char *json;                 //  Request as delivered; NULL once DONE
    size_t json_len;            //  Bytes of json
    int64_t attempts;           //  Deliveries made since publish or replay
    unsigned steps;             //  MMP_STEP_* reported done
    int64_t published_at;       //  Monotonic ms of publish (or replay)
    const char *publisher;      //  Publisher's authenticated name (the queue's brk_names), or NULL
    brk_lease_t *lease;         //  Open lease when LEASED
    uint64_t last_worker;       //  Id of the previous lease's holder, or 0
    brk_msg_t *next, *prev;     //  Ready, dead or done list
    brk_msg_t *pnext, *pprev;   //  Pending list (READY, DELAYED, LEASED)
    brk_msg_extra_t *extra;     //  Delay, history, dead letter; NULL until needed
    brk_msg_policy_t *policy;   //  Target and coalescing; NULL without a policy
};

struct _brk_lease_t {
    uint64_t delivery_id;       //  Key in the lease map
    brk_msg_t *msg;             //  What is leased
    brk_worker_t *worker;       //  Holder, or NULL once the worker is gone
    mdl_heap_node_t deadline;   //  Position in the lease heap
    brk_lease_t *wnext, *wprev; //  Holder's lease list
    int64_t started_at;         //  Monotonic ms the restart was reported started, 0 = not
    int64_t opened_at;          //  Monotonic ms the lease opened (INFLIGHT's age)
};

struct _brk_worker_t {
    uint64_t id;                //  Unique per registration, never reused
    char name [64];             //  For logs, events and history
    void *handle;               //  Owner's, opaque
    int64_t credit;             //  Most leases held at once
    int64_t in_flight;          //  Leases held now
    int64_t last_seen;          //  Monotonic ms of the last sign of life
    unsigned features;          //  BRK_FEATURE_* declared in HELLO
    brk_lease_t *leases;        //  Open leases held
    brk_worker_t *next, *prev;  //  All workers, in dispatch order
};

//  brk_msg.c
//  A message with this id (36 characters) and no body. NULL when out of memory.
brk_msg_t *brk_msg_new (const char *message_id);
//  Free a message, its body and its extra part. Safe twice.
void brk_msg_destroy (brk_msg_t **msg_p);
//  Copy json (len bytes, null-terminated in the copy) in. 0 or -1.
int brk_msg_set_body (brk_msg_t *msg, const char *json, size_t len);
//  Drop the body and the history (an acked message keeps only its id).
void brk_msg_forget_body (brk_msg_t *msg);
//  The extra part, made on first use. NULL when out of memory.
brk_msg_extra_t *brk_msg_extra (brk_msg_t *msg);
//  Add an outcome to the history ring (keeping the latest keep entries);
//  best effort: out of memory, nothing is recorded.
void brk_msg_record (brk_msg_t *msg, size_t keep, uint64_t delivery_id, const char *worker,
                     const char *outcome, const char *reason, int64_t at_ms);

//  brk_worker.c
//  A worker; credit below 0 is 0, an empty name is "worker". NULL when out of memory.
brk_worker_t *brk_worker_new (uint64_t id, const char *name, int64_t credit,
                              void *handle, int64_t now);
void brk_worker_destroy (brk_worker_t **worker_p);
void brk_worker_set_credit (brk_worker_t *worker, int64_t credit);
//  A lease joins or leaves the worker's list (in_flight follows).
void brk_worker_lease_add (brk_worker_t *worker, brk_lease_t *lease);
void brk_worker_lease_remove (brk_worker_t *worker, brk_lease_t *lease);

#endif
