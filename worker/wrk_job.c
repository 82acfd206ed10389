/*  wrk_job: see wrk_job.h. A job costs one allocation holding the struct,
    its strings and its attributes; its heap node is its first member, so
    the table's heap hands back the job itself.

    At about 960 lines this file is over the house's 800 on purpose: it is
    one state machine, and the restart-safety steps (the recorded start,
    verify, health wait: about 200 lines) are transitions of the same
    restart step, sharing its timers and its finish; apart, every one of
    them would need the struct and the statics through a private header.
*/
#include "wrk_job.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_log.h"
#include "wrk_jobs.h"

#define NEVER INT64_MAX

typedef enum {
    STEP_RUNNING,               //  Handed to the effect (save) or running (restart)
    STEP_WAITING,               //  Save: waiting for the retry timer
    STEP_DONE,                  //  Finished now or by an earlier attempt
    STEP_FAILED,                //  Gave up
    STEP_STARTING,              //  Restart: PROGRESS [started] sent, waiting for PROGRESSED
    STEP_VERIFYING              //  Restart: the verify command runs (delivery in doubt)
} step_state_t;

//  The health wait after a restart (only with a health effect).
typedef enum {
    HEALTH_NONE,                //  Not asked (no effect, or the restart not done yet)
    HEALTH_RUNNING,             //  A try runs
    HEALTH_WAITING,             //  Between two tries
    HEALTH_DONE,                //  Answered healthy
    HEALTH_FAILED               //  Timed out
} health_state_t;

static const char *s_nack_names [WRK_NACK_COUNT] = {
    "restart_failed", "restart_timeout", "save_failed", "job_timeout", "shutdown", "refused",
    "host_not_allowed", "health_timeout"
};

struct _wrk_job_t {
    mdl_heap_node_t node;       //  In the timer heap, keyed on the earliest timer
    uint64_t delivery_id;       //  Current lease (0: none); key of the table's by_delivery
    uint64_t token;             //  Unique per job, tags save/restart completions
    int64_t attempt;            //  Delivery attempt (1 = first)
    int64_t received_at;        //  Monotonic ms of delivery
    int64_t received_wall;      //  Unix ms of delivery, for the database
    int64_t restart_started;    //  Monotonic ms the restart started (timed effect)
    int64_t save_started;       //  Monotonic ms the current save try started (timed effect)
    int64_t extend_at;          //  Next extend due; NEVER when not extending
    int64_t restart_at;         //  Simulated completion or external timeout; NEVER
    int64_t retry_at;           //  Save retry due; NEVER
    int64_t hard_deadline;      //  Ceiling: failed and NACKed at this time
    uint32_t extensions;        //  Extends sent
    uint16_t save_tries;        //  Save attempts made by this delivery
    uint8_t save;               //  step_state_t of the save
    uint8_t restart;            //  step_state_t of the restart
    bool restart_prior;         //  Restart was done by an earlier attempt
    bool in_doubt;              //  The delivery said an earlier restart may have run
    uint8_t health;             //  health_state_t
    int64_t health_at;          //  Next health try, or the health deadline while one runs; NEVER
    int64_t health_until;       //  Health wait ends (health_timeout_ms after the restart)
    bool lease_lost;            //  Broker called the lease stale/unknown: no extends
    uint8_t fail_kind;          //  wrk_nack_t when the restart failed
    uint8_t final;              //  wrk_final_t: working, or which reply it waits for
    uint8_t final_reason;       //  wrk_nack_t of the NACK waiting for NACKED
    uint8_t progress_sent;      //  MMP_STEP_* reported and not yet confirmed
    uint8_t progress_waiting;   //  PROGRESS commands of this job still unanswered
    int64_t lease_until;        //  Latest lease deadline the broker may hold for us
    int64_t confirm_at;         //  Resend what is unconfirmed at this time; NEVER
    int64_t give_up_at;         //  Finished: forget an unconfirmed ACK/NACK then; NEVER
    const char *fail_reason;    //  Why the restart failed (static text), or NULL
    char *message_id;           //  Points into strings; key of the table's by_message
    char *instance_name;        //  Points into strings
    char *hostname;             //  Points into strings
    char *attributes;           //  Points into strings: JSON text, or NULL
    size_t attributes_size;     //  Bytes of attributes
    char *publisher;            //  Points into strings: the broker's name for the publisher, or NULL
    char strings [];            //  The strings, null-terminated
};

//  --------------------------------------------------------------------------

void
wrk_config_defaults (wrk_config_t *config)
{
    memset (config, 0, sizeof *config);
    config->extend_every_ms = 2000;
    config->extension_ms = -1;
    config->ack_deadline_ms = 10000;
    config->restart_mode = WRK_RESTART_SIMULATE;
    config->restart_latency_ms = 1000;
    config->fail_rate = 0;
    config->restart_timeout_ms = 60000;
    config->save_retry_base_ms = 200;
    config->save_retry_max_ms = 5000;
    config->save_attempts = 5;
    config->max_job_ms = 300000;
    config->log_burst = 200;
    config->confirm_timeout_ms = 1000;
    config->health_timeout_ms = 300000;
    config->health_interval_ms = 5000;
}

const char *
wrk_nack_name (wrk_nack_t reason)
{
    return reason < WRK_NACK_COUNT ? s_nack_names [reason] : "refused";
}

uint64_t wrk_job_delivery_id (const wrk_job_t *job) { return job->delivery_id; }
uint64_t wrk_job_token (const wrk_job_t *job) { return job->token; }
int64_t wrk_job_attempt (const wrk_job_t *job) { return job->attempt; }
int64_t wrk_job_received_wall (const wrk_job_t *job) { return job->received_wall; }
const char *wrk_job_message_id (const wrk_job_t *job) { return job->message_id; }
const char *wrk_job_instance_name (const wrk_job_t *job) { return job->instance_name; }
const char *wrk_job_hostname (const wrk_job_t *job) { return job->hostname; }
const char *wrk_job_publisher (const wrk_job_t *job) { return job->publisher; }
wrk_final_t wrk_job_final (const wrk_job_t *job) { return (wrk_final_t) job->final; }
bool wrk_job_progress_unconfirmed (const wrk_job_t *job) { return job->progress_sent != 0; }
bool wrk_job_progress_waiting (const wrk_job_t *job) { return job->progress_waiting != 0; }
uint64_t *wrk_job_delivery_key (wrk_job_t *job) { return &job->delivery_id; }
mdl_heap_node_t *wrk_job_node (wrk_job_t *job) { return &job->node; }
wrk_job_t *wrk_job_of_node (mdl_heap_node_t *node) { return (wrk_job_t *) node; }

const char *
wrk_job_attributes (const wrk_job_t *job, size_t *size)
{
    if (size)
        *size = job->attributes_size;
    return job->attributes;
}

int64_t
wrk_job_wake (const wrk_job_t *job)
{
    int64_t key = job->hard_deadline;
    if (job->extend_at < key)
        key = job->extend_at;
    if (job->restart_at < key)
        key = job->restart_at;
    if (job->retry_at < key)
        key = job->retry_at;
    if (job->confirm_at < key)
        key = job->confirm_at;
    if (job->give_up_at < key)
        key = job->give_up_at;
    if (job->health_at < key)
        key = job->health_at;
    return key;
}

#define s_event(ctx, ...) \
    do { if (wrk_jobs_log_budget ((ctx)->jobs)) mdl_info (__VA_ARGS__); } while (0)

static void s_check (wrk_job_ctx_t *ctx, wrk_job_t *job);
static void s_restart_done (wrk_job_ctx_t *ctx, wrk_job_t *job, bool ok, wrk_nack_t kind,
                            const char *reason);
static void s_health_begin (wrk_job_ctx_t *ctx, wrk_job_t *job);

//  --------------------------------------------------------------------------
//  Timers

static int64_t
s_extend_period (wrk_job_ctx_t *ctx, int64_t lease_ms)
{
    //  Extend at least twice per lease so one lost EXTEND is not fatal
    int64_t period = ctx->config.extend_every_ms;
    if (lease_ms > 0 && lease_ms / 2 < period)
        period = lease_ms / 2;
    return period > 0 ? period : 1;
}

static int64_t
s_lease_ms (wrk_job_ctx_t *ctx)
{
    return ctx->config.extension_ms > 0 ? ctx->config.extension_ms
                                        : ctx->config.ack_deadline_ms;
}

static bool
s_working (const wrk_job_t *job)
{
    return job->save == STEP_RUNNING || job->save == STEP_WAITING
        || job->restart == STEP_RUNNING || job->restart == STEP_STARTING
        || job->restart == STEP_VERIFYING
        || job->health == HEALTH_RUNNING || job->health == HEALTH_WAITING;
}

//  A child of this job may run (restart, verify or health command): the
//  kill effect stops every one of them.
static bool
s_child_running (wrk_job_ctx_t *ctx, const wrk_job_t *job)
{
    return ctx->config.restart_mode == WRK_RESTART_EXTERNAL
        && (job->restart == STEP_RUNNING || job->restart == STEP_VERIFYING
            || job->health == HEALTH_RUNNING);
}

static double
s_age (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    return (double) (mdl_clock_now (&ctx->clock) - job->received_at) / 1000.0;
}

static void
s_set_final (wrk_job_ctx_t *ctx, wrk_job_t *job, wrk_final_t final)
{
    wrk_final_t old = (wrk_final_t) job->final;
    job->final = (uint8_t) final;
    wrk_jobs_final_changed (ctx->jobs, old, final);
}

//  Something that needs a reply was just queued for this job: resend it
//  if no reply comes within the confirm timeout (counted from now).
static void
s_expect_reply (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    job->confirm_at = mdl_clock_now (&ctx->clock) + ctx->config.confirm_timeout_ms;
}

//  Report a finished step (PROGRESS), kept until PROGRESSED. The caller
//  re-arms the job.
static void
s_progress (wrk_job_ctx_t *ctx, wrk_job_t *job, unsigned step)
{
    if (!job->delivery_id)
        return;
    wrk_jobs_queue (ctx->jobs, step == MMP_STEP_RESTART ? WRK_QUEUE_PROGRESS_RESTART
                             : step == MMP_STEP_STARTED ? WRK_QUEUE_PROGRESS_STARTED
                                                        : WRK_QUEUE_PROGRESS_SAVE,
                    0, job->delivery_id);
    job->progress_sent |= (uint8_t) step;
    if (job->progress_waiting < UINT8_MAX)
        job->progress_waiting++;
    s_expect_reply (ctx, job);
}

//  Queue the final ACK or NACK of a job that has a lease. The job stays in
//  the table, doing nothing but waiting for the reply, until the broker
//  answers it (any verdict) or until one ack deadline after its lease has
//  certainly ended (the later of its last lease deadline and now; the
//  extra ack deadline covers a broker that restarted and keeps open leases
//  one more ack deadline).
static void
s_finalize (wrk_job_ctx_t *ctx, wrk_job_t *job, wrk_final_t final, wrk_nack_t reason)
{
    assert (job->delivery_id && job->final == WRK_FINAL_NONE);
    int64_t now = mdl_clock_now (&ctx->clock);
    //  A failed queue is answered by the confirm timer set below: the
    //  resend queues it again
    if (final == WRK_FINAL_ACK)
        wrk_jobs_queue (ctx->jobs, WRK_QUEUE_ACK, 0, job->delivery_id);
    else
        wrk_jobs_queue (ctx->jobs, WRK_QUEUE_NACK, (int) reason, job->delivery_id);
    s_set_final (ctx, job, final);
    job->final_reason = (uint8_t) reason;
    job->extend_at = NEVER;
    job->restart_at = NEVER;
    job->retry_at = NEVER;
    job->hard_deadline = NEVER;
    job->health_at = NEVER;
    job->give_up_at = (job->lease_until > now ? job->lease_until : now)
                    + ctx->config.ack_deadline_ms;
    s_expect_reply (ctx, job);
    wrk_jobs_rearm (ctx->jobs, job);
}

void
wrk_job_resend (wrk_job_t *job, wrk_job_ctx_t *ctx)
{
    unsigned steps = job->progress_sent;
    job->progress_sent = 0;
    job->progress_waiting = 0;
    job->confirm_at = NEVER;
    if (job->delivery_id) {
        if (steps & MMP_STEP_STARTED)
            s_progress (ctx, job, MMP_STEP_STARTED);
        if (steps & MMP_STEP_RESTART)
            s_progress (ctx, job, MMP_STEP_RESTART);
        if (steps & MMP_STEP_SAVE)
            s_progress (ctx, job, MMP_STEP_SAVE);
        if (job->final == WRK_FINAL_ACK)
            wrk_jobs_queue (ctx->jobs, WRK_QUEUE_ACK, 0, job->delivery_id);
        else
        if (job->final == WRK_FINAL_NACK)
            wrk_jobs_queue (ctx->jobs, WRK_QUEUE_NACK, job->final_reason, job->delivery_id);
        if (job->final != WRK_FINAL_NONE)
            s_expect_reply (ctx, job);
        if (steps || job->final != WRK_FINAL_NONE)
            ctx->stats.resent++;
    }
    wrk_jobs_rearm (ctx->jobs, job);
}

//  Decide a job whose steps have all stopped running: ACK or NACK.
static void
s_finish (wrk_job_ctx_t *ctx, wrk_job_t *job, wrk_nack_t reason, const char *why)
{
    if (s_child_running (ctx, job))
        ctx->effects.restart_kill (ctx->effects.arg, job);

    if (job->delivery_id == 0) {
        mdl_info ("Finished %s (%s) without a lease: save %s, restart %s; nothing to ack",
                  job->message_id, job->instance_name,
                  job->save == STEP_DONE ? "done" : "not done",
                  job->restart == STEP_DONE ? "done" : "not done");
        wrk_jobs_remove (ctx->jobs, job);
        return;
    }
    if (job->save == STEP_DONE && job->restart == STEP_DONE
    &&  (job->health == HEALTH_NONE || job->health == HEALTH_DONE)) {
        ctx->stats.acked++;
        if (ctx->effects.outcome)
            ctx->effects.outcome (ctx->effects.arg, job, job->restart_prior
                                  ? "restarted by an earlier attempt" : "restarted");
        s_event (ctx, "Done. Acked %s (%s) after %.3fs, %u extensions",
                 job->message_id, job->instance_name, s_age (ctx, job), job->extensions);
        s_finalize (ctx, job, WRK_FINAL_ACK, WRK_NACK_REFUSED);
    }
    else {
        if (job->save == STEP_DONE)
            s_progress (ctx, job, MMP_STEP_SAVE);
        ctx->stats.nacked++;
        if (ctx->effects.outcome && job->save == STEP_DONE && job->restart == STEP_FAILED)
            ctx->effects.outcome (ctx->effects.arg, job, why);
        //  A failure is always worth its own line
        mdl_info ("Nacked %s (%s) attempt %" PRId64 " after %.3fs: %s",
                  job->message_id, job->instance_name, job->attempt,
                  s_age (ctx, job), why);
        s_finalize (ctx, job, WRK_FINAL_NACK, reason);
    }
}

//  Both steps stopped? Then finish; else keep timers right.
static void
s_check (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    if (job->final != WRK_FINAL_NONE)
        return;                 //  Decided already
    if (s_working (job)) {
        wrk_jobs_rearm (ctx->jobs, job);
        return;
    }
    if (job->restart == STEP_FAILED)
        s_finish (ctx, job, (wrk_nack_t) job->fail_kind,
                  job->fail_reason ? job->fail_reason : "restart failed");
    else
    if (job->save == STEP_FAILED)
        s_finish (ctx, job, WRK_NACK_SAVE_FAILED, "save failed");
    else
    if (job->health == HEALTH_FAILED)
        s_finish (ctx, job, WRK_NACK_HEALTH_TIMEOUT, "host not healthy before the health timeout");
    else
        s_finish (ctx, job, WRK_NACK_REFUSED, "done");
}

static void
s_start_save (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    job->save = STEP_RUNNING;
    job->retry_at = NEVER;
    job->save_tries++;
    job->save_started = mdl_clock_now (&ctx->clock);
    if (ctx->effects.save (ctx->effects.arg, job) != 0)
        wrk_job_saved (job, ctx, false, "could not queue the save");
    else
        wrk_jobs_rearm (ctx->jobs, job);
}

//  --------------------------------------------------------------------------
//  Restart safety: started, verify, health (wrk_job.h)

//  One health try, or the timeout when the wait is over.
static void
s_health_try (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    int64_t now = mdl_clock_now (&ctx->clock);
    if (now >= job->health_until) {
        if (job->health == HEALTH_RUNNING)
            ctx->effects.restart_kill (ctx->effects.arg, job);
        job->health = HEALTH_FAILED;
        job->health_at = NEVER;
        ctx->stats.health_timeouts++;
        mdl_warn ("Health of %s (%s) not confirmed within %.1fs; giving the request back",
                  job->hostname, job->message_id, (double) ctx->config.health_timeout_ms / 1000.0);
        s_check (ctx, job);
        return;
    }
    job->health = HEALTH_RUNNING;
    job->health_at = job->health_until;     //  A try that hangs ends with the wait
    if (ctx->effects.health (ctx->effects.arg, job) != 0) {
        wrk_job_healthy (job, ctx, false, "health command could not start");
        return;
    }
    wrk_jobs_rearm (ctx->jobs, job);
}

//  The restart is done (now, earlier, or verified): wait for health if asked.
static void
s_health_begin (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    if (!ctx->effects.health || job->health != HEALTH_NONE || !job->delivery_id)
        return;
    job->health_until = mdl_clock_now (&ctx->clock) + ctx->config.health_timeout_ms;
    s_event (ctx, "Health-checking %s (%s) every %.1fs for up to %.1fs before acking",
             job->hostname, job->message_id, (double) ctx->config.health_interval_ms / 1000.0,
             (double) ctx->config.health_timeout_ms / 1000.0);
    s_health_try (ctx, job);
}

//  The broker recorded the start durably: run the restart command.
static void
s_restart_run (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    int64_t now = mdl_clock_now (&ctx->clock);
    job->restart = STEP_RUNNING;
    job->restart_started = now;
    job->restart_at = now + ctx->config.restart_timeout_ms;
    if (ctx->effects.restart (ctx->effects.arg, job) != 0) {
        s_restart_done (ctx, job, false, WRK_NACK_RESTART_FAILED, "restart could not start");
        return;
    }
    wrk_jobs_rearm (ctx->jobs, job);
}

//  Ask the broker to record that the restart is about to run; the command
//  runs only once it says ok (wrk_job_confirm_progress).
static void
s_restart_announce (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    job->restart = STEP_STARTING;
    job->restart_at = NEVER;
    s_event (ctx, "Waiting for the broker to record the start of the restart of %s (%s)",
             job->hostname, job->message_id);
    s_progress (ctx, job, MMP_STEP_STARTED);
    wrk_jobs_rearm (ctx->jobs, job);
}

//  The restart step of a delivery starts: verify first when in doubt.
static void
s_restart_begin (wrk_job_ctx_t *ctx, wrk_job_t *job)
{
    if (!job->in_doubt || !ctx->effects.verify) {
        if (job->in_doubt)
            mdl_warn ("Restart of %s (%s) is in doubt (an earlier attempt may have run it) "
                      "and there is no --verify-cmd: restarting again", job->hostname,
                      job->message_id);
        s_restart_announce (ctx, job);
        return;
    }
    int64_t now = mdl_clock_now (&ctx->clock);
    job->restart = STEP_VERIFYING;
    job->restart_started = now;
    job->restart_at = now + ctx->config.restart_timeout_ms;
    mdl_info ("Verifying %s (%s): an earlier attempt's restart is in doubt",
              job->hostname, job->message_id);
    if (ctx->effects.verify (ctx->effects.arg, job) != 0) {
        wrk_job_verified (job, ctx, false, "verify command could not start");
        return;
    }
    wrk_jobs_rearm (ctx->jobs, job);
}

//  reason is static text; kind the NACK reason if it failed.
static void
s_restart_done (wrk_job_ctx_t *ctx, wrk_job_t *job, bool ok, wrk_nack_t kind,
                const char *reason)
{
    job->restart_at = NEVER;
    if (ctx->effects.timed)
        ctx->effects.timed (ctx->effects.arg, WRK_TIMED_RESTART, ok,
                            mdl_clock_now (&ctx->clock) - job->restart_started);
    if (ok) {
        job->restart = STEP_DONE;
        ctx->stats.restarted++;
        s_progress (ctx, job, MMP_STEP_RESTART);
        s_event (ctx, "Restarted %s (%s) in %.3fs", job->hostname,
                 job->message_id, s_age (ctx, job));
        s_health_begin (ctx, job);
    }
    else {
        job->restart = STEP_FAILED;
        job->fail_reason = reason;
        job->fail_kind = (uint8_t) kind;
        ctx->stats.restart_failures++;
    }
    //  A failed restart does not wait for the save: its completion is
    //  ignored (the row is an upsert) and the redelivery saves again
    //  unless PROGRESS [save] got there first.
    if (!ok) {
        if (job->save == STEP_WAITING)
            job->save = STEP_FAILED;
        if (job->save == STEP_RUNNING)
            job->save = STEP_FAILED;
    }
    s_check (ctx, job);
}

//  --------------------------------------------------------------------------

wrk_job_t *
wrk_job_new (wrk_job_ctx_t *ctx, const mmp_delivery_t *delivery, uint64_t token)
{
    int64_t now = mdl_clock_now (&ctx->clock);
    const mmp_request_t *request = &delivery->message;
    const char *message_id = request->message_id ? request->message_id : "";
    const char *hostname = request->hostname ? request->hostname : "";
    const char *instance = request->instance_name ? request->instance_name : "";
    //  The publisher's bytes, carried unchanged (not null-terminated)
    const char *attributes = request->attributes;
    size_t lm = strlen (message_id) + 1, li = strlen (instance) + 1, lh = strlen (hostname) + 1;
    size_t la = attributes ? request->attributes_size + 1 : 0;
    size_t lp = delivery->publisher ? strlen (delivery->publisher) + 1 : 0;
    wrk_job_t *job = calloc (1, sizeof *job + lm + li + lh + la + lp);
    if (!job)
        return NULL;
    job->message_id = job->strings;
    job->instance_name = job->strings + lm;
    job->hostname = job->strings + lm + li;
    memcpy (job->message_id, message_id, lm);
    memcpy (job->instance_name, instance, li);
    memcpy (job->hostname, hostname, lh);
    if (attributes) {
        job->attributes = job->strings + lm + li + lh;
        memcpy (job->attributes, attributes, la - 1);
        job->attributes [la - 1] = '\0';
        job->attributes_size = la - 1;
    }
    if (delivery->publisher) {
        job->publisher = job->strings + lm + li + lh + la;
        memcpy (job->publisher, delivery->publisher, lp);
    }
    job->delivery_id = delivery->delivery_id;
    job->token = token;
    job->attempt = delivery->attempt;
    job->received_at = now;
    job->received_wall = mdl_clock_wall ();
    job->extend_at = now + s_extend_period (ctx, delivery->deadline_ms);
    job->restart_at = NEVER;
    job->retry_at = NEVER;
    //  The ceiling covers the restart; a verify and a health wait come on top
    job->hard_deadline = now + ctx->config.max_job_ms
                       + (ctx->effects.health ? ctx->config.health_timeout_ms : 0)
                       + (ctx->effects.verify && delivery->in_doubt ? ctx->config.restart_timeout_ms : 0);
    job->lease_until = now + delivery->deadline_ms;
    job->confirm_at = NEVER;
    job->give_up_at = NEVER;
    job->health_at = NEVER;
    job->in_doubt = delivery->in_doubt;
    return job;
}

void
wrk_job_destroy (wrk_job_t **self_p)
{
    assert (self_p);
    free (*self_p);
    *self_p = NULL;
}

void
wrk_job_start (wrk_job_t *job, wrk_job_ctx_t *ctx, unsigned steps)
{
    int64_t now = mdl_clock_now (&ctx->clock);
    ctx->stats.consumed++;
    s_event (ctx, "Consumed %s (%s) delivery %" PRIu64 " attempt %" PRId64 "%s%s",
             job->message_id, job->instance_name, job->delivery_id, job->attempt,
             steps & MMP_STEP_RESTART ? ", restart already done" : "",
             steps & MMP_STEP_SAVE ? ", save already done" : "");
    wrk_jobs_rearm (ctx->jobs, job);

    //  Both steps start now; neither waits for the other.
    if (steps & MMP_STEP_RESTART) {
        job->restart = STEP_DONE;
        job->restart_prior = true;
        ctx->stats.restarts_skipped++;
    }
    else
    if (ctx->config.restart_mode == WRK_RESTART_EXTERNAL)
        s_restart_begin (ctx, job);     //  Runs beside the save, which starts below
    else {
        //  Simulated: no command, so nothing to announce or verify
        job->restart = STEP_RUNNING;
        job->restart_started = now;
        double u = mdl_random_next (&ctx->random);
        job->restart_at = now + (int64_t) (u * (double) ctx->config.restart_latency_ms);
    }
    if (job->final != WRK_FINAL_NONE)
        return;                 //  The restart (or verify) could not start
    if (steps & MMP_STEP_SAVE)
        job->save = STEP_DONE;
    else {
        s_start_save (ctx, job);
        //  A synchronous save failure may have finished the job already
        //  (NACK queued; it stays in the table: only a job without a lease
        //  leaves it by its own transition, and a new job has one)
        if (job->final != WRK_FINAL_NONE)
            return;
    }
    //  A restart done by an earlier attempt is health-checked too: a
    //  health timeout gave the request back with its restart recorded
    if (job->restart == STEP_DONE)
        s_health_begin (ctx, job);
    if (job->final != WRK_FINAL_NONE)
        return;
    s_check (ctx, job);
}

bool
wrk_job_redeliver (wrk_job_t *held, wrk_job_ctx_t *ctx, const mmp_delivery_t *delivery)
{
    int64_t now = mdl_clock_now (&ctx->clock);
    const char *message_id = held->message_id;
    if (held->final == WRK_FINAL_NACK)
        //  We gave it back and the broker took it (the redelivery says so):
        //  a new attempt from scratch
        return false;
    if (held->final == WRK_FINAL_ACK || held->final == WRK_FINAL_GONE) {
        //  Done, but our ACK did not count in time (lost across a broker
        //  restart, or the lease ran out first): ack the new lease instead;
        //  the old one is gone anyway.
        mdl_info ("Redelivered %s (attempt %" PRId64 ") after it was done; acking "
                  "delivery %" PRIu64 " instead of %" PRIu64, message_id,
                  delivery->attempt, delivery->delivery_id, held->delivery_id);
        held->delivery_id = delivery->delivery_id;
        held->attempt = delivery->attempt;
        held->progress_sent = 0;
        held->progress_waiting = 0;
        held->lease_until = now + delivery->deadline_ms;
        held->give_up_at = held->lease_until + ctx->config.ack_deadline_ms;
        wrk_jobs_queue (ctx->jobs, WRK_QUEUE_ACK, 0, held->delivery_id);
        ctx->stats.acked++;
        if (held->final == WRK_FINAL_GONE)
            s_set_final (ctx, held, WRK_FINAL_ACK);
        s_expect_reply (ctx, held);
        wrk_jobs_rearm (ctx->jobs, held);
        return true;
    }
    //  The broker gave up on our old lease (expired while we worked)
    //  and gave the message back to us: carry on under the new lease
    //  instead of restarting the host a second time.
    mdl_info ("Redelivered %s (attempt %" PRId64 ") while still in flight; "
              "continuing under delivery %" PRIu64,
              message_id, delivery->attempt, delivery->delivery_id);
    held->delivery_id = delivery->delivery_id;
    held->attempt = delivery->attempt;
    held->lease_lost = false;
    held->extend_at = now + s_extend_period (ctx, delivery->deadline_ms);
    held->lease_until = now + delivery->deadline_ms;
    held->progress_sent = 0;
    held->progress_waiting = 0;
    held->confirm_at = NEVER;
    //  A restart we finished that the broker has not recorded (our
    //  PROGRESS went to the old lease): record it under the new one
    if (held->restart == STEP_DONE && !held->restart_prior
    &&  !(delivery->steps & MMP_STEP_RESTART))
        s_progress (ctx, held, MMP_STEP_RESTART);
    //  Still waiting to run the restart: the start must be recorded under
    //  the new lease, or the command would run under none
    if (held->restart == STEP_STARTING)
        s_progress (ctx, held, MMP_STEP_STARTED);
    wrk_jobs_rearm (ctx->jobs, held);
    return true;
}

void
wrk_job_drop_lease (wrk_job_t *held, wrk_job_ctx_t *ctx)
{
    assert (held->final == WRK_FINAL_NONE);
    held->delivery_id = 0;
    held->lease_lost = true;
    held->extend_at = NEVER;
    held->progress_sent = 0;
    held->progress_waiting = 0;
    held->confirm_at = NEVER;
    wrk_jobs_rearm (ctx->jobs, held);
}

void
wrk_job_saved (wrk_job_t *job, wrk_job_ctx_t *ctx, bool ok, const char *error)
{
    if (job->final != WRK_FINAL_NONE || job->save != STEP_RUNNING)
        return;             //  Already decided
    if (ctx->effects.timed)
        ctx->effects.timed (ctx->effects.arg, WRK_TIMED_SAVE, ok,
                            mdl_clock_now (&ctx->clock) - job->save_started);
    if (ok) {
        job->save = STEP_DONE;
        ctx->stats.saved++;
        s_event (ctx, "Saved %s (%s) into database", job->message_id, job->instance_name);
    }
    else {
        ctx->stats.save_failures++;
        if (job->save_tries >= ctx->config.save_attempts) {
            mdl_warn ("Save of %s failed %u times, giving up: %s", job->message_id,
                      job->save_tries, error ? error : "?");
            job->save = STEP_FAILED;
        }
        else {
            int64_t delay = ctx->config.save_retry_base_ms;
            for (int i = 1; i < job->save_tries && delay < ctx->config.save_retry_max_ms; i++)
                delay *= 2;
            if (delay > ctx->config.save_retry_max_ms)
                delay = ctx->config.save_retry_max_ms;
            mdl_warn ("Save of %s failed (try %u), retrying in %" PRId64 " ms: %s",
                      job->message_id, job->save_tries, delay, error ? error : "?");
            job->save = STEP_WAITING;
            job->retry_at = mdl_clock_now (&ctx->clock) + delay;
        }
    }
    s_check (ctx, job);
}

void
wrk_job_restarted (wrk_job_t *job, wrk_job_ctx_t *ctx, bool ok, const char *reason)
{
    if (job->final != WRK_FINAL_NONE || job->restart != STEP_RUNNING)
        return;
    s_restart_done (ctx, job, ok, WRK_NACK_RESTART_FAILED,
                    ok ? NULL : (reason ? reason : "restart failed"));
}

void
wrk_job_verified (wrk_job_t *job, wrk_job_ctx_t *ctx, bool ok, const char *reason)
{
    if (job->final != WRK_FINAL_NONE || job->restart != STEP_VERIFYING)
        return;
    job->restart_at = NEVER;
    if (!ok) {
        mdl_info ("Verify of %s (%s) says it was not restarted (%s); restarting",
                  job->hostname, job->message_id, reason ? reason : "failed");
        s_restart_announce (ctx, job);
        return;
    }
    job->restart = STEP_DONE;
    job->restart_prior = true;
    ctx->stats.verified++;
    mdl_info ("Verified %s (%s): restarted by an earlier attempt; not restarting again",
              job->hostname, job->message_id);
    s_progress (ctx, job, MMP_STEP_RESTART);
    s_health_begin (ctx, job);
    s_check (ctx, job);
}

void
wrk_job_healthy (wrk_job_t *job, wrk_job_ctx_t *ctx, bool ok, const char *reason)
{
    if (job->final != WRK_FINAL_NONE || job->health != HEALTH_RUNNING)
        return;
    if (ok) {
        job->health = HEALTH_DONE;
        job->health_at = NEVER;
        s_event (ctx, "Healthy: %s (%s) after %.3fs", job->hostname, job->message_id,
                 s_age (ctx, job));
        s_check (ctx, job);
        return;
    }
    int64_t now = mdl_clock_now (&ctx->clock);
    job->health = HEALTH_WAITING;
    job->health_at = now + ctx->config.health_interval_ms;
    if (job->health_at > job->health_until)
        job->health_at = job->health_until;
    s_event (ctx, "Not healthy yet: %s (%s): %s; next check in %.1fs", job->hostname,
             job->message_id, reason ? reason : "failed",
             (double) (job->health_at - now) / 1000.0);
    wrk_jobs_rearm (ctx->jobs, job);
}

void
wrk_job_lease_lost (wrk_job_t *job, wrk_job_ctx_t *ctx)
{
    if (!job->lease_lost && job->final == WRK_FINAL_NONE) {
        mdl_warn ("Lease of %s (delivery %" PRIu64 ") is gone at the broker; "
                  "finishing without extending", job->message_id, job->delivery_id);
        job->lease_lost = true;
        job->extend_at = NEVER;
        wrk_jobs_rearm (ctx->jobs, job);
    }
}

void
wrk_job_extended (wrk_job_t *job, int64_t until)
{
    if (until > job->lease_until)
        job->lease_until = until;
}

void
wrk_job_tick (wrk_job_t *job, wrk_job_ctx_t *ctx, int64_t now)
{
    if (job->give_up_at <= now && job->final == WRK_FINAL_GONE) {
        wrk_jobs_remove (ctx->jobs, job);   //  Nobody redelivered it to us
        return;
    }
    if (job->give_up_at <= now) {
        //  Bounded: the lease is certainly over at the broker, so the
        //  message is delivered again (or already was) whatever we do
        if (job->final == WRK_FINAL_ACK)
            ctx->stats.acks_abandoned++;
        mdl_warn ("No %s for %s (%s) delivery %" PRIu64 " before its lease certainly "
                  "ended; giving up (the broker will deliver it again)",
                  job->final == WRK_FINAL_ACK ? "ACKED" : "NACKED", job->message_id,
                  job->instance_name, job->delivery_id);
        wrk_jobs_remove (ctx->jobs, job);
        return;
    }
    if (job->hard_deadline <= now) {
        mdl_warn ("%s (%s) hit its ceiling of %" PRId64 " ms; giving up",
                  job->message_id, job->instance_name, ctx->config.max_job_ms);
        if (job->restart == STEP_RUNNING || job->restart == STEP_STARTING
        ||  job->restart == STEP_VERIFYING)
            ctx->stats.restart_failures++;
        s_finish (ctx, job, WRK_NACK_JOB_TIMEOUT, "job exceeded its time ceiling");
        return;
    }
    if (job->health_at <= now) {
        job->health_at = NEVER;
        s_health_try (ctx, job);
        return;
    }
    if (job->restart_at <= now && job->restart == STEP_VERIFYING) {
        ctx->effects.restart_kill (ctx->effects.arg, job);
        mdl_warn ("Verify of %s timed out after %" PRId64 " ms; killed",
                  job->hostname, ctx->config.restart_timeout_ms);
        wrk_job_verified (job, ctx, false, "verify timed out");
        return;
    }
    if (job->restart_at <= now) {
        job->restart_at = NEVER;
        if (ctx->config.restart_mode == WRK_RESTART_SIMULATE) {
            bool ok = mdl_random_next (&ctx->random) >= ctx->config.fail_rate;
            s_restart_done (ctx, job, ok, WRK_NACK_RESTART_FAILED, "simulated restart failure");
        }
        else {
            ctx->effects.restart_kill (ctx->effects.arg, job);
            mdl_warn ("Restart of %s timed out after %" PRId64 " ms; killed",
                      job->hostname, ctx->config.restart_timeout_ms);
            s_restart_done (ctx, job, false, WRK_NACK_RESTART_TIMEOUT, "restart timed out");
        }
        return;                 //  The job may be gone; its node is re-keyed
    }
    if (job->retry_at <= now) {
        s_start_save (ctx, job);
        return;
    }
    if (job->confirm_at <= now) {
        wrk_job_resend (job, ctx);
        return;
    }
    if (job->extend_at <= now) {
        wrk_jobs_queue (ctx->jobs, WRK_QUEUE_EXTEND, 0, job->delivery_id);
        job->extensions++;
        ctx->stats.extends++;
        int64_t lease = s_lease_ms (ctx);
        if (now + lease > job->lease_until)
            job->lease_until = now + lease;
        job->extend_at = now + s_extend_period (ctx, lease);
        s_event (ctx, "Extended deadline of %s (%s) by %.1fs", job->message_id,
                 job->instance_name, (double) lease / 1000.0);
        wrk_jobs_rearm (ctx->jobs, job);
        return;
    }
    wrk_jobs_rearm (ctx->jobs, job);    //  Defensive: key out of date
}

void
wrk_job_shutdown (wrk_job_t *job, wrk_job_ctx_t *ctx)
{
    if (s_child_running (ctx, job))
        ctx->effects.restart_kill (ctx->effects.arg, job);
    ctx->stats.nacked++;
    if (!job->delivery_id) {
        wrk_jobs_remove (ctx->jobs, job);
        return;
    }
    //  PROGRESS [restart] of a finished restart is already queued
    if (job->save == STEP_DONE)
        s_progress (ctx, job, MMP_STEP_SAVE);
    s_finalize (ctx, job, WRK_FINAL_NACK, WRK_NACK_SHUTDOWN);
}

void
wrk_job_confirm_final (wrk_job_t *job, wrk_job_ctx_t *ctx, wrk_final_t final,
                       const char *verdict)
{
    if (job->final != final)
        return;             //  Already settled (a resend's second reply)
    if (final == WRK_FINAL_ACK) {
        if (verdict) {
            ctx->stats.acks_refused++;
            if (wrk_jobs_log_budget (ctx->jobs))
                mdl_warn ("Ack of %s (%s) delivery %" PRIu64 " answered %s: the broker "
                          "no longer holds that lease; it may deliver the message again",
                          job->message_id, job->instance_name, job->delivery_id, verdict);
            //  Remembered until its give-up time: if the message comes
            //  back to us it is acked at once, not restarted again
            s_set_final (ctx, job, WRK_FINAL_GONE);
            job->progress_sent = 0;
            job->progress_waiting = 0;
            job->confirm_at = NEVER;
            wrk_jobs_rearm (ctx->jobs, job);
            return;
        }
        ctx->stats.acks_confirmed++;
    }
    else
    if (verdict && wrk_jobs_log_budget (ctx->jobs))
        mdl_info ("Nack of %s delivery %" PRIu64 " answered %s", job->message_id,
                  job->delivery_id, verdict);
    wrk_jobs_remove (ctx->jobs, job);
}

//  Replies come in the order the commands went out, so once every PROGRESS
//  of a job is answered all its steps are recorded. stale/unknown: the
//  lease is gone, nothing to record.
void
wrk_job_confirm_progress (wrk_job_t *job, wrk_job_ctx_t *ctx, bool ok)
{
    if (!job->progress_waiting)
        return;
    if (job->restart == STEP_STARTING && (job->progress_sent & MMP_STEP_STARTED)
    &&  job->final == WRK_FINAL_NONE) {
        //  The answer to PROGRESS [started]: the only one a starting job
        //  has out (finished steps are reported later)
        job->progress_sent &= (uint8_t) ~MMP_STEP_STARTED;
        job->progress_waiting--;
        if (!job->progress_sent) {
            job->progress_waiting = 0;
            job->confirm_at = NEVER;
        }
        if (!ok) {
            ctx->stats.starts_refused++;
            mdl_warn ("Not restarting %s (%s): the broker no longer holds delivery %" PRIu64
                      " (it may have restarted and lost the lease); dropping the job, the "
                      "request will be delivered again", job->hostname, job->message_id,
                      job->delivery_id);
            wrk_jobs_remove (ctx->jobs, job);
            return;
        }
        s_event (ctx, "Broker recorded the start; restarting %s (%s)", job->hostname,
                 job->message_id);
        s_restart_run (ctx, job);
        return;
    }
    job->progress_waiting = ok ? job->progress_waiting - 1 : 0;
    if (job->progress_waiting == 0) {
        job->progress_sent = 0;
        if (job->final == WRK_FINAL_NONE) {
            job->confirm_at = NEVER;
            wrk_jobs_rearm (ctx->jobs, job);
        }
    }
}

void
wrk_job_dump (const wrk_job_t *job, int64_t now)
{
    static const char *names [] = { "running", "retry-wait", "done", "failed",
                                    "waiting for start record", "verifying" };
    static const char *finals [] = { "", " waiting for ACKED", " waiting for NACKED",
                                     " done, ack refused" };
    mdl_info ("  %s %s delivery %" PRIu64 " attempt %" PRId64 " save %s restart %s%s "
              "age %.3fs extensions %u%s%s%s",
              job->message_id, job->instance_name, job->delivery_id, job->attempt,
              names [job->save], names [job->restart],
              job->restart_prior ? " (earlier attempt)" : "",
              (double) (now - job->received_at) / 1000.0, job->extensions,
              job->lease_lost ? " lease lost" : "", finals [job->final],
              job->progress_sent ? " progress unconfirmed" : "");
}
