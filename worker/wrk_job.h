/*  wrk_job: the worker's per-message state machine, without sockets.

    For every delivery the worker holds, wrk_jobs_t keeps one wrk_job_t
    (the in-flight table, indexed by delivery_id and by message_id) and
    drives its two concurrent steps:

      save     handed to the save effect at once; its completion comes back
               through wrk_jobs_saved (). A failure is retried locally with
               exponential backoff (save_retry_base_ms doubling up to
               save_retry_max_ms) at most save_attempts times; it never
               causes a second restart.
      restart  started at the same moment. In WRK_RESTART_SIMULATE mode the
               core itself completes it after U[0,1) * restart_latency_ms
               and fails it with probability fail_rate (both drawn from the
               injected random source). In WRK_RESTART_EXTERNAL mode the
               restart effect starts it (exec) and wrk_jobs_restarted ()
               reports the outcome; after restart_timeout_ms the core calls
               the kill effect and counts it as failed.

    While either step runs, the lease is extended every extend_every_ms
    (or every half lease if that is shorter). All due extends of one tick
    go out as one EXTEND. When both steps are done the delivery is ACKed;
    a restart failure NACKs it (no delay_ms: the broker's backoff applies
    and the broker counts attempts). A restart success is reported at once
    with PROGRESS [restart]; a delivery that carries "restart" in its steps
    skips the restart, one with "save" skips the save. When a NACK follows
    a successful save, PROGRESS [save] precedes it.

    Bounded by construction (the tutorial's extend-forever deadlock cannot
    happen): every job has a hard ceiling, max_job_ms after delivery, at
    which whatever still runs is killed and the delivery NACKed; a restart
    is bounded by restart_timeout_ms (external) or restart_latency_ms
    (simulated); a save by save_attempts.

    One deadline structure: each job sits once in an mdl_heap keyed on the
    earliest of its timers (extend due, restart completion or timeout, save
    retry, hard ceiling). wrk_jobs_tick () services everything due and
    wrk_jobs_next_wake () tells the loop when to call it next, so the loop
    keeps a single timer whatever the number of messages.

    Outgoing commands are collected and handed to the effects in batches by
    wrk_jobs_flush (): PROGRESS first, then ACK, then NACK (one per reason),
    then EXTEND, each split at MMP_MAX_IDS. The loop calls it after every
    handler.

    Nothing is done until the broker says so. An ACK, a NACK and a PROGRESS
    count only once the broker's ACKED, NACKED or PROGRESSED lists the id
    (in ok, stale or unknown; wrk_jobs_reply () takes the replies). Until
    then the job keeps what is unconfirmed (a few bytes per job, in the job
    itself) and sends it again when no reply came within confirm_timeout_ms
    (the loop sets it to the heartbeat interval) and whenever the loop calls
    wrk_jobs_resend () (after every WELCOME, i.e. after a reconnect or a
    re-HELLO to a restarted broker, which answered our commands with ERROR
    before it knew us). EXTEND is never resent: the next period sends a
    fresh one. A job whose ACK or NACK is out no longer works, is never
    extended and does not count in wrk_jobs_size (); it stays in the table
    until the reply comes, or until one ack deadline after its lease has
    certainly ended (the later of its last lease deadline and the moment it
    finished), when it is dropped with a warning: by then the broker has
    delivered the message again, so keeping it helps nothing, and the table
    stays bounded. A stale or unknown verdict on an ACK is logged (the
    broker may deliver the request again); the done job is then remembered,
    doing nothing, until that same give-up time. A message redelivered to
    us while its ACK is unconfirmed or was refused is acked under the new
    lease at once, without running a step again; one whose NACK is
    unconfirmed starts over.

    Logging: one INFO line per event ("Consumed", "Saved", "Restarted",
    "Extended deadline", "Done. Acked") while the rate stays under
    log_burst lines per second; above it, per-message lines are dropped and
    one summary line per second gives the counts, so logging never becomes
    the bottleneck.

    Ownership: the jobs own their copies of the request strings. Effects get
    const pointers valid for the duration of the call.
*/
#ifndef WRK_JOB_H_INCLUDED
#define WRK_JOB_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdl_clock.h"
#include "mmp.h"

typedef struct _wrk_jobs_t wrk_jobs_t;
typedef struct _wrk_job_t wrk_job_t;

typedef enum {
    WRK_RESTART_SIMULATE,       //  Random latency and failures inside the core
    WRK_RESTART_EXTERNAL        //  Started by the restart effect (exec)
} wrk_restart_mode_t;

typedef struct {
    int64_t extend_every_ms;    //  Extend period while work runs
    int64_t extension_ms;       //  Lease length an EXTEND asks for; -1 = broker's ack deadline
    int64_t ack_deadline_ms;    //  Broker's ack deadline (from WELCOME), for the period
    wrk_restart_mode_t restart_mode;   //  Simulate or external
    int64_t restart_latency_ms; //  Simulated latency upper bound
    double fail_rate;           //  Simulated failure probability 0..1
    int64_t restart_timeout_ms; //  External restart is killed after this
    int64_t save_retry_base_ms; //  First local save retry delay
    int64_t save_retry_max_ms;  //  Retry delay cap
    int save_attempts;          //  Save tries per delivery before giving up
    int64_t max_job_ms;         //  Hard ceiling per delivery
    int log_burst;              //  Per-message log lines per second before summarising
    int64_t confirm_timeout_ms; //  Resend an unanswered ACK/NACK/PROGRESS after this
    const char *const *allow_hosts;     //  fnmatch globs on the hostname; a delivery matching
                                        //  none is NACKed "host_not_allowed", never run
    size_t allow_host_count;            //  0: every host allowed
} wrk_config_t;

//  Defaults as documented in mandrill-worker --help.
void wrk_config_defaults (wrk_config_t *config);

//  What the core asks the outside world to do. Every pointer must be set.
typedef struct {
    void *arg;                  //  Passed to every effect
    //  Send one command with ids (count <= MMP_MAX_IDS).
    void (*extend) (void *arg, const uint64_t *ids, size_t count);
    void (*ack) (void *arg, const uint64_t *ids, size_t count);
    void (*nack) (void *arg, const uint64_t *ids, size_t count, const char *reason);
    void (*progress) (void *arg, const uint64_t *ids, size_t count, unsigned steps);
    //  Queue a save; the outcome comes back through wrk_jobs_saved ().
    //  Returns 0, or -1 if it could not even be queued (counts as a failure).
    int (*save) (void *arg, const wrk_job_t *job);
    //  Start an external restart; outcome through wrk_jobs_restarted ().
    //  Returns 0, or -1 if it could not be started (counts as a failure).
    int (*restart) (void *arg, const wrk_job_t *job);
    //  Kill an external restart that is still running (timeout, ceiling,
    //  shutdown). Its later completion is ignored.
    void (*restart_kill) (void *arg, const wrk_job_t *job);
    //  Record the final restart outcome of a saved message (may be NULL).
    void (*outcome) (void *arg, const wrk_job_t *job, const char *outcome);
} wrk_effects_t;

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

//  Counters since start.
typedef struct {
    uint64_t consumed;          //  Deliveries taken
    uint64_t saved;             //  Saves completed
    uint64_t save_failures;     //  Save attempts that failed
    uint64_t restarted;         //  Restarts succeeded
    uint64_t restart_failures;  //  Restarts failed or timed out
    uint64_t restarts_skipped;  //  Deliveries whose restart was already done
    uint64_t extends;           //  Lease extensions sent (per id)
    uint64_t acked;             //  Deliveries acked (ACK queued)
    uint64_t nacked;            //  Deliveries nacked (NACK queued)
    uint64_t acks_confirmed;    //  ACKs the broker answered ok
    uint64_t acks_refused;      //  ACKs the broker answered stale or unknown
    uint64_t acks_abandoned;    //  ACKs never answered, dropped after the lease
    uint64_t resent;            //  Jobs whose unconfirmed commands were sent again
} wrk_stats_t;
void wrk_jobs_stats (wrk_jobs_t *self, wrk_stats_t *stats);

//  Accessors for the effects.
uint64_t wrk_job_delivery_id (const wrk_job_t *job);
uint64_t wrk_job_token (const wrk_job_t *job);
int64_t wrk_job_attempt (const wrk_job_t *job);
int64_t wrk_job_received_wall (const wrk_job_t *job);
const char *wrk_job_message_id (const wrk_job_t *job);
const char *wrk_job_instance_name (const wrk_job_t *job);
const char *wrk_job_hostname (const wrk_job_t *job);

#endif
