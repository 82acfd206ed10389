/*  wrk_jobs: the worker's in-flight table, its one timer heap, and the
    batching and resending of what it sends; no sockets.

    For every delivery the worker holds, the table keeps one wrk_job_t
    (wrk_job.h: the state machine of one message), indexed by delivery_id
    and by message_id, and routes to it the completions (wrk_jobs_saved,
    wrk_jobs_restarted) and the broker's replies (wrk_jobs_reply).

    One deadline structure: each job sits once in an mdl_heap keyed on the
    earliest of its timers (extend due, restart completion or timeout, save
    retry, resend, give-up, hard ceiling). wrk_jobs_tick () services
    everything due and wrk_jobs_next_wake () tells the loop when to call it
    next, so the loop keeps a single timer whatever the number of messages.
    O(log n) per timer change, O(1) per lookup.

    Outgoing commands are collected and handed to the effects in batches by
    wrk_jobs_flush (): PROGRESS first ([started] before the others), then ACK, then NACK (one per reason),
    then EXTEND, each split at MMP_MAX_IDS. All due extends of one tick go
    out as one EXTEND. The loop calls flush after every handler.

    Nothing is done until the broker says so. An ACK, a NACK and a PROGRESS
    count only once the broker's ACKED, NACKED or PROGRESSED lists the id
    (in ok, stale or unknown; wrk_jobs_reply () takes the replies). Until
    then the job keeps what is unconfirmed and sends it again when no reply
    came within confirm_timeout_ms (the loop sets it to the heartbeat
    interval) and whenever the loop calls wrk_jobs_resend () (after every
    WELCOME, i.e. after a reconnect or a re-HELLO to a restarted broker,
    which answered our commands with ERROR before it knew us). EXTEND is
    never resent: the next period sends a fresh one. A job whose ACK or
    NACK is out no longer works, is never extended and does not count in
    wrk_jobs_size (); it stays in the table until the reply comes, or until
    one ack deadline after its lease has certainly ended, when it is
    dropped with a warning: by then the broker has delivered the message
    again, so keeping it helps nothing, and the table stays bounded. A
    stale or unknown verdict on an ACK is logged (the broker may deliver
    the request again); the done job is then remembered, doing nothing,
    until that same give-up time. A message redelivered to us while its
    ACK is unconfirmed or was refused is acked under the new lease at once,
    without running a step again; one whose NACK is unconfirmed starts over.

    Failures are answered, never left to a timeout: a delivery the table
    cannot take (out of memory for the job, or for an index insert) is
    NACKed "refused" at once; an id that cannot be queued for sending is
    logged, and its job asks again at its next resend.

    Logging: one INFO line per event ("Consumed", "Saved", "Restarted",
    "Extended deadline", "Done. Acked") while the rate stays under
    log_burst lines per second; above it, per-message lines are dropped and
    one summary line per second gives the counts, so logging never becomes
    the bottleneck.
*/
#ifndef WRK_JOBS_H_INCLUDED
#define WRK_JOBS_H_INCLUDED

#include "wrk_job.h"

//  Create the table. config and effects are copied.
wrk_jobs_t *wrk_jobs_new (const wrk_config_t *config, const wrk_effects_t *effects,
                          mdl_clock_t clock, mdl_random_t random);
void wrk_jobs_destroy (wrk_jobs_t **self_p);

//  The broker's ack deadline, learnt from WELCOME.
void wrk_jobs_set_ack_deadline (wrk_jobs_t *self, int64_t ms);

//  How long to wait for a reply before resending (ms > 0).
void wrk_jobs_set_confirm_timeout (wrk_jobs_t *self, int64_t ms);

//  Take a new delivery: start its steps. Returns 0, or -1 when the
//  delivery is refused (out of memory), in which case it is NACKed.
int wrk_jobs_deliver (wrk_jobs_t *self, const mmp_delivery_t *delivery);

//  Outcome of a save, identified by message_id and the job's token (a
//  completion for an older job of the same message is ignored).
void wrk_jobs_saved (wrk_jobs_t *self, const char *message_id, uint64_t token,
                     bool ok, const char *error);

//  Outcome of an external restart.
void wrk_jobs_restarted (wrk_jobs_t *self, const char *message_id, uint64_t token,
                         bool ok, const char *reason);

//  Outcome of a verify command (exit 0: the host was restarted) and of
//  one health try (exit 0: healthy), as for wrk_jobs_restarted.
void wrk_jobs_verified (wrk_jobs_t *self, const char *message_id, uint64_t token,
                        bool ok, const char *reason);
void wrk_jobs_healthy (wrk_jobs_t *self, const char *message_id, uint64_t token,
                       bool ok, const char *reason);

//  The broker says these leases are no longer ours (stale/unknown in a
//  reply): stop extending them; the work still finishes and is acked.
void wrk_jobs_lease_lost (wrk_jobs_t *self, const uint64_t *ids, size_t count);

//  A reply from the broker: EXTENDED (stale/unknown leases stop being
//  extended), ACKED, NACKED, PROGRESSED (the ids are confirmed). Other
//  commands are ignored.
void wrk_jobs_reply (wrk_jobs_t *self, const mmp_msg_t *reply);

//  Queue again every unconfirmed ACK, NACK and PROGRESS (after WELCOME).
//  Returns the number of jobs concerned; wrk_jobs_flush () sends them.
size_t wrk_jobs_resend (wrk_jobs_t *self);

//  Service every timer due now.
void wrk_jobs_tick (wrk_jobs_t *self);

//  When tick should run next (monotonic ms), or -1 when nothing is pending.
int64_t wrk_jobs_next_wake (wrk_jobs_t *self);

//  Hand the collected commands to the effects.
void wrk_jobs_flush (wrk_jobs_t *self);

//  Shutdown: kill what runs and queue a NACK (reason "shutdown") for every
//  job still working, after PROGRESS for steps already done. Jobs already
//  acked or nacked keep waiting for their reply. Returns the number of jobs
//  nacked. Call wrk_jobs_flush () afterwards to send them.
size_t wrk_jobs_nack_all (wrk_jobs_t *self);

//  Jobs still working (not yet acked or nacked).
size_t wrk_jobs_size (wrk_jobs_t *self);

//  Jobs whose ACK or NACK the broker has not confirmed yet; *acks and
//  *nacks (either may be NULL) split the number.
size_t wrk_jobs_unconfirmed (wrk_jobs_t *self, size_t *acks, size_t *nacks);

//  Log the in-flight table (message, steps done, age, extensions).
void wrk_jobs_dump (wrk_jobs_t *self);

//  Counters since start (wrk_stats_t in wrk_job.h).
void wrk_jobs_stats (wrk_jobs_t *self, wrk_stats_t *stats);


//  --------------------------------------------------------------------------
//  For wrk_job.c only: what a job asks of the table it lives in.

//  Queue one id for the next flush (reason: a wrk_nack_t for NACK).
//  Returns 0, or -1 when out of memory (logged; the job's resend timer
//  asks again).
int wrk_jobs_queue (wrk_jobs_t *self, wrk_queue_t what, int reason, uint64_t id);

//  The job's timers changed: re-key it in the heap.
void wrk_jobs_rearm (wrk_jobs_t *self, wrk_job_t *job);

//  The job's final state changed from old to new (keeps the counters).
void wrk_jobs_final_changed (wrk_jobs_t *self, wrk_final_t old, wrk_final_t new_);

//  Take the job out of the table and free it.
void wrk_jobs_remove (wrk_jobs_t *self, wrk_job_t *job);

//  Whether a per-message log line fits in this second's budget.
bool wrk_jobs_log_budget (wrk_jobs_t *self);

#endif
