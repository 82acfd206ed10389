/*  pub_window: one publisher of mandrill-publish: its DEALER, its share of
    the requests, and its send window of PUBLISH batches awaiting PUBACK.

    Delivery contract: every request has its message_id before it is first
    sent, and a batch that is not confirmed by PUBACK within --timeout is
    sent again unchanged, up to --retries times. The broker is idempotent
    on message_id, so a retry of a batch that did arrive is reported as
    duplicates and never queued twice. An ERROR reply is retried only when
    it is "unavailable" (the broker is full, --max-pending / --max-memory,
    or cannot write its journal): the publisher then sends nothing for a
    backoff that starts at 100 ms and doubles up to 5 s while refusals go
    on (one log line per backoff), and the refused batch is sent again
    after it; such resends do not count toward --retries, so a full broker
    is waited for, not given up on. Any other code means the broker
    refused the batch and it is reported, not retried. Out of memory
    building a batch stops this publisher (PUB_UNCONFIRMED). An ERROR without req (the broker could
    not read the body) is pinned on the one batch in flight, or, with
    several in flight, stops the run at once (PUB_STOP_NOW).

    Replies are matched to batches by "req" (cli_reply). Up to PUB_WINDOW
    batches are in flight; a batch is cut by count (--batch) and by size,
    so its body never passes the broker's MMP_MAX_BODY.

    Threads: each publisher runs pub_window_run on its own thread; the only
    state they share is pub_totals_t (atomics), read by main for progress.
    Cost: one poll per wake-up; O(PUB_WINDOW) per reply.
*/
#ifndef PUB_WINDOW_H_INCLUDED
#define PUB_WINDOW_H_INCLUDED

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdl_opt.h"
#include "pub_mock.h"
#include "pub_request.h"

#define PUB_WINDOW          4   //  Batches in flight per publisher

//  mandrill-publish's exit codes (also in --help); a run's result is the
//  largest of its publishers'. The first four are every program's.
#define PUB_OK              MDL_EXIT_OK         //  Every request confirmed by the broker
#define PUB_UNCONFIRMED     MDL_EXIT_FAILURE    //  Some not confirmed (timeouts after retries, stopped)
#define PUB_USAGE           MDL_EXIT_USAGE      //  Bad command line, environment or configuration file
#define PUB_BAD_INPUT       MDL_EXIT_DATA       //  Invalid request in the input (see --keep-going)
#define PUB_REFUSED         4   //  The broker refused a batch (ERROR other than unavailable)

//  Options shared by every publisher.
typedef struct {
    const char *broker;         //  Frontend endpoint
    int64_t batch;              //  Requests per PUBLISH, at most
    int64_t timeout_ms;         //  PUBACK wait before a resend
    int64_t retries;            //  Resends before giving up on a batch
    bool mock;                  //  Generate requests
    double rate;                //  Mock: msgs/s for all publishers (0 = U[0,1) pacing)
    int64_t count;              //  Mock: total to send (-1 = forever)
    int64_t publishers;         //  Threads
    const char *curve_cert;     //  Own secret certificate (CURVE), or NULL
    const char *broker_cert;    //  The broker's public certificate, or NULL
} pub_options_t;

#define PUB_STOP_DRAIN      1   //  Stop taking work, wait for the batches in flight
#define PUB_STOP_NOW        2   //  Stop at once

//  Totals across publishers, and the stop request.
typedef struct {
    _Atomic int64_t sent;       //  Requests sent at least once
    _Atomic int64_t confirmed;  //  Requests in a PUBACK
    _Atomic int64_t duplicates; //  Of those, reported as already known
    _Atomic int64_t resends;    //  Batches sent again
    _Atomic int64_t failed;     //  Requests given up on or refused
    _Atomic int stop;           //  0, PUB_STOP_DRAIN or PUB_STOP_NOW
    bool summarise;             //  Large runs: per-batch lines at DEBUG (set before the threads)
} pub_totals_t;

typedef struct _pub_window_t pub_window_t;

//  A publisher for list requests (list, count: borrowed; each request's
//  json moves to a batch when it is taken) or, with options->mock, for
//  mock_count mock requests (-1 = forever) at mock_rate per second (0 =
//  U[0,1) s gaps). options and totals are borrowed and outlive it.
//  Returns NULL when out of memory.
pub_window_t *pub_window_new (int index, const pub_options_t *options, pub_totals_t *totals,
                              pub_request_t *list, size_t count, int64_t mock_count,
                              double mock_rate);
void pub_window_destroy (pub_window_t **self_p);

//  The thread body (arg is a pub_window_t *): connect, send, resend, match
//  replies, until the source is done and confirmed, or stopped.
void *pub_window_run (void *arg);

//  Its exit code contribution (PUB_*), once pub_window_run has returned.
int pub_window_result (const pub_window_t *self);

#endif
