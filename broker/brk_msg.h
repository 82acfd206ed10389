/*  brk_msg: one restart request as the broker holds it.

    A message carries its canonical id, the request's JSON text exactly as
    it is delivered, its publisher's authenticated name (a pointer into the
    queue's name table), its attempt count and progress steps, and, once it has
    failed at least once, an extra part: its delay-heap slot, the ring of
    its latest attempt outcomes and, when dead, the reason and time.

    brk_queue owns every message and decides its state; everyone else sees
    a const brk_msg_t * through the accessors below, valid for the duration
    of the callback that handed it out (or until the next queue call).
    Cost: two allocations per message (itself and its body); the extra part
    is a third, only for messages that failed.
*/
#ifndef BRK_MSG_H_INCLUDED
#define BRK_MSG_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct _brk_msg_t brk_msg_t;

//  One attempt's outcome (at most max_attempts entries are kept, the latest).
typedef struct {
    int64_t attempt;            //  Delivery number
    uint64_t delivery_id;       //  The lease
    char worker [64];           //  Worker name
    const char *outcome;        //  "expired", "nacked", "worker_lost" (static)
    char reason [128];          //  Nack reason, or empty
    int64_t at_ms;              //  Unix ms of the outcome
} brk_attempt_t;

const char *brk_msg_id (const brk_msg_t *msg);
//  The request as delivered; *len (if len) gets its length. NULL once acked.
const char *brk_msg_json (const brk_msg_t *msg, size_t *len);
int64_t brk_msg_attempts (const brk_msg_t *msg);
unsigned brk_msg_steps (const brk_msg_t *msg);
//  Why it was dead-lettered, or NULL.
const char *brk_msg_dead_reason (const brk_msg_t *msg);
//  Unix ms it was dead-lettered, or 0.
int64_t brk_msg_dead_at (const brk_msg_t *msg);
//  Store sequence number of the message's PUBLISH record (0 if none).
uint64_t brk_msg_seq (const brk_msg_t *msg);
//  Is the message still waiting for its PUBLISH record to be durable?
bool brk_msg_held (const brk_msg_t *msg);
//  The authenticated name of the publisher's key (the NAME of its ZAP
//  User-Id "ROLE:NAME"), or NULL when it was published without CURVE.
//  The text belongs to the queue's name table (brk_names.h) and lives as
//  long as the queue: no copy is made per message.
const char *brk_msg_publisher (const brk_msg_t *msg);
//  History of a dead letter recovered from the store, as JSON text, or NULL.
const char *brk_msg_history_json (const brk_msg_t *msg);
//  The attempt history, oldest first; returns the number of entries.
size_t brk_msg_history (const brk_msg_t *msg, const brk_attempt_t **history);

#endif
