/*  wrk_link: the worker's connection to the broker's backend.

    Owns the DEALER and everything that keeps it usable: HELLO at start and
    after every reconnect (and again when the broker answers ERROR
    unexpected_command, i.e. it restarted and forgot us, at most every
    500 ms), a heartbeat every heartbeat interval (ours, or the broker's
    from WELCOME), and liveness: a broker silent for three intervals is
    presumed gone, and the DEALER is destroyed and recreated with
    exponential backoff (0.5 s doubling to 10 s between attempts). It
    builds and sends every command the worker sends (HELLO, CREDIT,
    EXTEND, ACK, NACK, PROGRESS, HEARTBEAT, BYE).

    Every decoded message from the broker goes to the owner's on_message
    callback, after the link took what it needs (WELCOME: heartbeat, the
    reconnect counter); malformed ones are logged and dropped. After each
    burst of reading (at most 256 messages, so timers stay fair) the
    owner's after callback runs, and its return value (0, or -1 to end the
    loop) is the reader's.

    Sends never block the loop: the DEALER has a zero send timeout, and a
    message that cannot go now is dropped with a debug line; the lease
    logic (extend again, resend unconfirmed, expiry and redelivery)
    recovers. Between a lost connection and the reconnect nothing is sent.
*/
#ifndef WRK_LINK_H_INCLUDED
#define WRK_LINK_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stdint.h>

#include "mmp.h"
#include "wrk_worker.h"

typedef struct _wrk_link_t wrk_link_t;

typedef void (wrk_link_message_fn) (void *arg, mmp_msg_t *msg);
typedef int (wrk_link_after_fn) (void *arg);

//  Connect to options->broker, register with loop and send HELLO. options
//  is copied (its strings must outlive the link). Returns NULL (logged)
//  when the socket cannot be made or connected.
wrk_link_t *wrk_link_new (const wrk_options_t *options, zloop_t *loop,
                          wrk_link_message_fn *on_message, wrk_link_after_fn *after,
                          void *arg);

//  Unregister, let what is queued go out for up to 2 s, close.
void wrk_link_destroy (wrk_link_t **self_p);

//  Commands with ids (count <= MMP_MAX_IDS).
void wrk_link_extend (wrk_link_t *self, const uint64_t *ids, size_t count);
void wrk_link_ack (wrk_link_t *self, const uint64_t *ids, size_t count);
void wrk_link_nack (wrk_link_t *self, const uint64_t *ids, size_t count, const char *reason);
//  NACK with "requeue": the leases are given back unused because the
//  worker is shutting down; the broker counts no attempt for them.
void wrk_link_nack_requeue (wrk_link_t *self, const uint64_t *ids, size_t count,
                            const char *reason);
void wrk_link_progress (wrk_link_t *self, const uint64_t *ids, size_t count, unsigned steps);

//  Take no more work: CREDIT 0 now, and credit 0 in every later HELLO.
void wrk_link_stop_taking_work (wrk_link_t *self);

//  Say goodbye (BYE).
void wrk_link_bye (wrk_link_t *self);

//  Heartbeat when due; reconnect when the broker has been silent too long
//  and the backoff allows. Call at least every 100 ms.
void wrk_link_tick (wrk_link_t *self);

//  The heartbeat interval in force (ms).
int64_t wrk_link_heartbeat_ms (wrk_link_t *self);

#endif
