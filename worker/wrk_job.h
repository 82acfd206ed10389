/*  wrk_job: one message's state machine, without sockets or tables.

    A job is one delivery the worker holds and its two concurrent steps:

      save     handed to the save effect at once; its completion comes back
               through wrk_job_saved (). A failure is retried locally with
               exponential backoff (save_retry_base_ms doubling up to
               save_retry_max_ms) at most save_attempts times; it never
               causes a second restart.
      restart  started at the same moment. In WRK_RESTART_SIMULATE mode the
               job itself completes it after U[0,1) * restart_latency_ms
               and fails it with probability fail_rate (both drawn from the
               injected random source). In WRK_RESTART_EXTERNAL mode the
               restart effect starts it (exec) and wrk_job_restarted ()
               reports the outcome; after restart_timeout_ms the job calls
               the kill effect and counts it as failed.

    Restart safety (docs/POLICY.md, "In doubt"). In external mode the job
    first sends PROGRESS [started] and runs the restart effect only once
    the broker answered it ok: PROGRESSED comes only after the broker's
    record of the start is durable, so a restart only ever runs under a
    lease the broker knows may have started it (after a crash the broker
    holds the request in doubt instead of leasing it again at once). A
    stale or unknown answer means the lease is gone: the restart is not
    run and the job is dropped (the save's late result is ignored; the
    broker delivers the request again). A delivery marked in_doubt, with
    a verify effect, runs verify first (bounded by restart_timeout_ms):
    success means the host was restarted, so the restart step counts as
    done (PROGRESS [restart], then ACK once saved); failure or timeout
    runs the restart as above. With a health effect, a restart that
    succeeded (also one done by an earlier attempt or verified) is
    followed by the health effect, again every health_interval_ms while
    it fails, keeping the lease, until it succeeds (then ACK) or
    health_timeout_ms pass (its child killed, NACK "health_timeout").

    While either step runs, the lease is extended every extend_every_ms
    (or every half lease if that is shorter). When both steps are done the
    delivery is ACKed; a restart failure NACKs it (no delay_ms: the
    broker's backoff applies and the broker counts attempts). A restart
    success is reported at once with PROGRESS [restart]; a delivery that
    carries "restart" in its steps skips the restart, one with "save"
    skips the save. When a NACK follows a successful save, PROGRESS [save]
    precedes it.

    Bounded by construction (the tutorial's extend-forever deadlock cannot
    happen): every job has a hard ceiling, max_job_ms after delivery
    (plus health_timeout_ms with a health effect, plus restart_timeout_ms
    for an in-doubt delivery with a verify effect), at
    which whatever still runs is killed and the delivery NACKed; a restart
    is bounded by restart_timeout_ms (external) or restart_latency_ms
    (simulated); a save by save_attempts.

    A finished job keeps what the broker has not confirmed (its ACK or
    NACK, the PROGRESS steps not answered: a few bytes in the job) until
    the table (wrk_jobs) hands it the reply, and asks to be resent after
    confirm_timeout_ms; after its lease has certainly ended (the later of
    its last lease deadline and the moment it finished, plus one ack
    deadline) it gives up.

    A job lives in exactly one table (wrk_jobs_t), which owns it: the job
    queues its commands, re-keys its timer and leaves the table only through
    the table's wrk_jobs_queue (), wrk_jobs_rearm () and wrk_jobs_remove ()
    (declared in wrk_jobs.h for this file). After wrk_jobs_remove () the job
    is freed: a transition never touches it again.

    Ownership: a job owns its copies of the request strings and attributes
    (one allocation). Effects get const pointers valid during the call.
    Cost: every transition is O(1) but for the strings copied at creation.
*/
#ifndef WRK_JOB_H_INCLUDED
#define WRK_JOB_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdl_clock.h"
#include "mdl_heap.h"
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
    int64_t health_timeout_ms;  //  Health wait after a restart before NACK health_timeout (5 min)
    int64_t health_interval_ms; //  Between two health tries (5 s)
} wrk_config_t;

//  Defaults as documented in mandrill-worker --help.
void wrk_config_defaults (wrk_config_t *config);

//  A step whose duration the timed effect reports.
typedef enum {
    WRK_TIMED_RESTART,          //  Start of the restart to its outcome (ok, failed, timed out)
    WRK_TIMED_SAVE              //  One save try, handed to the store until its result
} wrk_timed_t;

//  What the core asks the outside world to do. Every pointer must be set,
//  except the ones marked optional.
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
    //  A step ended after ms (the clock's): metrics (may be NULL).
    void (*timed) (void *arg, wrk_timed_t step, bool ok, int64_t ms);
    //  Optional (NULL: none). Start the verify command of an in-doubt
    //  delivery; outcome through wrk_jobs_verified (). 0, or -1 if it
    //  could not be started (counts as "not restarted").
    int (*verify) (void *arg, const wrk_job_t *job);
    //  Optional. Start one health try; outcome through wrk_jobs_healthy ().
    //  0, or -1 if it could not be started (counts as a failed try).
    int (*health) (void *arg, const wrk_job_t *job);
} wrk_effects_t;

//  Defaults as documented in mandrill-worker --help.
void wrk_config_defaults (wrk_config_t *config);

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
    uint64_t starts_refused;    //  Restarts not run: the broker no longer held the lease
    uint64_t verified;          //  In-doubt restarts a verify command confirmed done
    uint64_t health_timeouts;   //  Restarts whose host never answered healthy
} wrk_stats_t;

//  NACK reasons; the table sends one NACK per reason per flush.
typedef enum {
    WRK_NACK_RESTART_FAILED,
    WRK_NACK_RESTART_TIMEOUT,
    WRK_NACK_SAVE_FAILED,
    WRK_NACK_JOB_TIMEOUT,
    WRK_NACK_SHUTDOWN,
    WRK_NACK_REFUSED,
    WRK_NACK_HOST_NOT_ALLOWED,  //  --allow-hosts: the host matches no glob; never run
    WRK_NACK_HEALTH_TIMEOUT,    //  --health-cmd never succeeded within --health-timeout
    WRK_NACK_COUNT
} wrk_nack_t;

//  The reason's wire text ("restart_failed", ...).
const char *wrk_nack_name (wrk_nack_t reason);

//  Where a job is after its steps stopped.
typedef enum {
    WRK_FINAL_NONE,             //  Still working
    WRK_FINAL_ACK,              //  ACK sent, waiting for ACKED
    WRK_FINAL_NACK,             //  NACK sent, waiting for NACKED
    WRK_FINAL_GONE              //  Done, but the ACK came back stale/unknown
} wrk_final_t;

//  What the job hands its table to send (wrk_jobs_queue).
typedef enum {
    WRK_QUEUE_EXTEND,
    WRK_QUEUE_ACK,
    WRK_QUEUE_NACK,             //  With a wrk_nack_t
    WRK_QUEUE_PROGRESS_RESTART,
    WRK_QUEUE_PROGRESS_SAVE,
    WRK_QUEUE_PROGRESS_STARTED  //  The restart command is about to run
} wrk_queue_t;

//  What a job reads from its table: the table owns it, jobs change only
//  the counters.
typedef struct {
    wrk_config_t config;        //  Policy
    wrk_effects_t effects;      //  The outside world
    mdl_clock_t clock;          //  Monotonic time source
    mdl_random_t random;        //  U[0,1) source for simulated restarts
    wrk_stats_t stats;          //  Counters since start
    wrk_jobs_t *jobs;           //  The table, for wrk_jobs_queue/rearm/remove
} wrk_job_ctx_t;

//  A new job for a delivery, not yet started (no table, no timers). token
//  tags its completions. Returns NULL when out of memory.
wrk_job_t *wrk_job_new (wrk_job_ctx_t *ctx, const mmp_delivery_t *delivery, uint64_t token);

//  Free a job that is in no table (the table frees its own).
void wrk_job_destroy (wrk_job_t **self_p);

//  Start both steps of a job already in the table (steps: MMP_STEP_* done
//  by earlier attempts). The job may be finished (even removed) on return.
void wrk_job_start (wrk_job_t *self, wrk_job_ctx_t *ctx, unsigned steps);

//  The same message delivered again under a new lease while we hold it.
//  The job goes on under the new delivery id (acked at once when it was
//  done; carried on when it still works); the table un-indexes the old id
//  before and indexes the new one after. Returns false, doing nothing,
//  for a job whose NACK is unconfirmed: the broker took it back, so the
//  table drops it and starts a new job.
bool wrk_job_redeliver (wrk_job_t *self, wrk_job_ctx_t *ctx, const mmp_delivery_t *delivery);

//  The delivery id was reissued for another message: a working job loses
//  its lease and finishes without one (a finished one the table removes:
//  its ACK would hit the new message). The table un-indexes it first.
void wrk_job_drop_lease (wrk_job_t *self, wrk_job_ctx_t *ctx);

//  Completions (a finished job, or one of another token, ignores them).
void wrk_job_saved (wrk_job_t *self, wrk_job_ctx_t *ctx, bool ok, const char *error);
void wrk_job_restarted (wrk_job_t *self, wrk_job_ctx_t *ctx, bool ok, const char *reason);
void wrk_job_verified (wrk_job_t *self, wrk_job_ctx_t *ctx, bool ok, const char *reason);
void wrk_job_healthy (wrk_job_t *self, wrk_job_ctx_t *ctx, bool ok, const char *reason);

//  The broker no longer holds this lease: stop extending.
void wrk_job_lease_lost (wrk_job_t *self, wrk_job_ctx_t *ctx);

//  Service what is due at now. The job may be removed on return.
void wrk_job_tick (wrk_job_t *self, wrk_job_ctx_t *ctx, int64_t now);

//  Queue again what the broker has not confirmed.
void wrk_job_resend (wrk_job_t *self, wrk_job_ctx_t *ctx);

//  The broker answered this job's ACK or NACK (verdict NULL for ok, else
//  "stale" or "unknown"). The job may be removed on return.
void wrk_job_confirm_final (wrk_job_t *self, wrk_job_ctx_t *ctx, wrk_final_t final,
                            const char *verdict);

//  The broker answered one PROGRESS of this job.
void wrk_job_confirm_progress (wrk_job_t *self, wrk_job_ctx_t *ctx, bool ok);

//  Shutdown: kill what runs; NACK (after PROGRESS [save] when saved). The
//  job may be removed on return.
void wrk_job_shutdown (wrk_job_t *self, wrk_job_ctx_t *ctx);

//  A lease extended by the broker until now + deadline_ms.
void wrk_job_extended (wrk_job_t *self, int64_t until);

//  Log one line about the job.
void wrk_job_dump (const wrk_job_t *self, int64_t now);

//  The earliest timer of the job (monotonic ms): its heap key.
int64_t wrk_job_wake (const wrk_job_t *self);

//  The job's heap node (first member) and back.
mdl_heap_node_t *wrk_job_node (wrk_job_t *self);
wrk_job_t *wrk_job_of_node (mdl_heap_node_t *node);

//  State for the table.
wrk_final_t wrk_job_final (const wrk_job_t *self);
bool wrk_job_progress_unconfirmed (const wrk_job_t *self);
bool wrk_job_progress_waiting (const wrk_job_t *self);
uint64_t *wrk_job_delivery_key (wrk_job_t *self);   //  Key of the table's by-delivery index

//  Accessors for the effects and the store.
uint64_t wrk_job_delivery_id (const wrk_job_t *job);
uint64_t wrk_job_token (const wrk_job_t *job);
int64_t wrk_job_attempt (const wrk_job_t *job);
int64_t wrk_job_received_wall (const wrk_job_t *job);
const char *wrk_job_message_id (const wrk_job_t *job);
const char *wrk_job_instance_name (const wrk_job_t *job);
const char *wrk_job_hostname (const wrk_job_t *job);
//  The publisher's authenticated name as DELIVER gave it, or NULL.
const char *wrk_job_publisher (const wrk_job_t *job);

const char *wrk_job_attributes (const wrk_job_t *job, size_t *size);

#endif
