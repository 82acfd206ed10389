/*  brk_group: the waiting room of a queue that has a restart policy.

    Private to brk_queue.c (it moves brk_msg_t through the fields of
    brk_queue_internal.h). Holds one record per target (folded hostname:
    its group, the message that holds its lease, the one that waits for it)
    and, per group, the FIFO of READY messages whose target is free. A READY
    message whose target is leased is parked on the target instead, and
    moves (all of them) to its group's list when the lease ends, so dispatch meets a
    blocked host at most once per waiting message and lease: it looks only
    at group heads.

    Coalescing: a new request (no attempt yet) for a target that already
    has a request waiting becomes a follower of that one (state COALESCED)
    and completes with it (ack or dead letter); a redelivery never
    coalesces.

    Costs: push, pop, lease and release are O(1) after the target look-up
    (a hash probe); attach parses the request JSON once (cJSON) and, for a
    target seen for the first time, matches the group globs, O(groups).
    Memory: one target record per distinct target with pending messages
    (freed when it has none), one brk_msg_policy_t per message.
    Failure: attach returns -1 when out of memory (the publish fails).
*/
#ifndef BRK_GROUP_H_INCLUDED
#define BRK_GROUP_H_INCLUDED

#include "brk_policy.h"
#include "brk_queue_internal.h"

typedef struct _brk_room_t brk_room_t;

struct _brk_target_t {
    int group;                  //  Its group in the policy
    brk_msg_t *leased;          //  Message holding its lease, or NULL
    brk_msg_t *waiting;         //  First request waiting for it (coalescing leader), or NULL
    brk_msg_t *parked_head;     //  READY messages waiting for the lease, FIFO (next/prev)
    brk_msg_t *parked_tail;
    size_t messages;            //  Pending messages pointing here (freed at 0)
    char name [];               //  Folded hostname
};

//  A room for policy's groups (the group count must not change after).
brk_room_t *brk_room_new (brk_policy_t *policy);
void brk_room_destroy (brk_room_t **self_p);

//  Give msg its policy part and target from its JSON's hostname (or
//  instance_name + ".example.net"; unreadable JSON falls under the target
//  "(unknown)", so it is still locked). 0 or -1 out of memory.
int brk_room_attach (brk_room_t *self, brk_msg_t *msg);
//  msg is gone for good (acked or destroyed): drop its policy part.
void brk_room_detach (brk_room_t *self, brk_msg_t *msg);

//  msg became READY: to its group's list, its target's parked list, or
//  (returns 1) coalesced into the waiting request. Returns 0 otherwise.
int brk_room_push (brk_room_t *self, brk_msg_t *msg);
//  Would brk_room_push coalesce msg now (a new request for a target that
//  has a request waiting, coalescing on)? Changes nothing.
bool brk_room_would_coalesce (const brk_room_t *self, const brk_msg_t *msg);
//  The same, never coalescing (a message dispatch took but could not lease).
void brk_room_requeue (brk_room_t *self, brk_msg_t *msg);
//  Put msg back at the head of its group's list (dispatch could not lease it).
void brk_room_push_front (brk_room_t *self, brk_msg_t *msg);
//  Head of group's list, unlinked, or NULL.
brk_msg_t *brk_room_pop (brk_room_t *self, size_t group);

//  Head of group's list, left in place, or NULL.
brk_msg_t *brk_room_peek (const brk_room_t *self, size_t group);
//  Tail of group's list (the newest), or NULL; msg->prev walks to the head.
brk_msg_t *brk_room_tail (const brk_room_t *self, size_t group);

//  msg's lease opened / ended. Ending unparks the next waiting message.
void brk_room_leased (brk_room_t *self, brk_msg_t *msg);
void brk_room_released (brk_room_t *self, brk_msg_t *msg);
//  msg's lease ended in doubt: its target stays locked by it, and it is
//  the request that new ones for the target coalesce into.
void brk_room_hold (brk_room_t *self, brk_msg_t *msg);
//  msg stopped waiting (dead-lettered, delayed): no longer the coalescing leader.
void brk_room_unwait (brk_room_t *self, brk_msg_t *msg);

//  Messages READY in the room (listed and parked), in all or one group.
size_t brk_room_ready (const brk_room_t *self);
size_t brk_room_group_ready (const brk_room_t *self, size_t group);
size_t brk_room_group_count (const brk_room_t *self);

#endif
