/*  wrk_job: see wrk_job.h. The in-flight table is two zhashx indexes
    whose keys point into the jobs (no key copies); each job is one heap
    node keyed on its earliest timer. A job costs one allocation holding
    the struct and its strings.
*/
#include "wrk_job.h"

#include <assert.h>
#include <czmq.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_heap.h"
#include "mdl_log.h"
#include "mdl_util.h"

#define NEVER INT64_MAX

typedef enum {
    STEP_RUNNING,               //  Handed to the effect (save) or running (restart)
    STEP_WAITING,               //  Save: waiting for the retry timer
    STEP_DONE,                  //  Finished now or by an earlier attempt
    STEP_FAILED                 //  Gave up
} step_state_t;

//  NACK reasons; one NACK per reason per flush.
typedef enum {
    NACK_RESTART_FAILED,
    NACK_RESTART_TIMEOUT,
    NACK_SAVE_FAILED,
    NACK_JOB_TIMEOUT,
    NACK_SHUTDOWN,
    NACK_REFUSED,
    NACK_HOST_NOT_ALLOWED,
    NACK_COUNT
} nack_reason_t;

static const char *s_nack_names [NACK_COUNT] = {
    "restart_failed", "restart_timeout", "save_failed", "job_timeout", "shutdown", "refused",
    "host_not_allowed"
};

//  Where a job is after its steps stopped.
typedef enum {
    FINAL_NONE,                 //  Still working
    FINAL_ACK,                  //  ACK sent, waiting for ACKED
    FINAL_NACK,                 //  NACK sent, waiting for NACKED
    FINAL_GONE                  //  Done, but the ACK came back stale/unknown
} final_t;

struct _wrk_job_t {
    mdl_heap_node_t node;       //  In the timer heap, keyed on the earliest timer
    uint64_t delivery_id;       //  Current lease; key of by_delivery
    uint64_t token;             //  Unique per job, tags save/restart completions
    int64_t attempt;            //  Delivery attempt (1 = first)
    int64_t received_at;        //  Monotonic ms of delivery
    int64_t received_wall;      //  Unix ms of delivery, for the database
    int64_t extend_at;          //  Next extend due; NEVER when not extending
    int64_t restart_at;         //  Simulated completion or external timeout; NEVER
    int64_t retry_at;           //  Save retry due; NEVER
    int64_t hard_deadline;      //  Ceiling: failed and NACKed at this time
    uint32_t extensions;        //  Extends sent
    uint16_t save_tries;        //  Save attempts made by this delivery
    uint8_t save;               //  step_state_t of the save
    uint8_t restart;            //  step_state_t of the restart
    bool restart_prior;         //  Restart was done by an earlier attempt
    bool lease_lost;            //  Broker called the lease stale/unknown: no extends
    uint8_t fail_kind;          //  nack_reason_t when the restart failed
    uint8_t final;              //  final_t: working, or which reply it waits for
    uint8_t final_reason;       //  nack_reason_t of the NACK waiting for NACKED
    uint8_t progress_sent;      //  MMP_STEP_* reported and not yet confirmed
    uint8_t progress_waiting;   //  PROGRESS commands of this job still unanswered
    int64_t lease_until;        //  Latest lease deadline the broker may hold for us
    int64_t confirm_at;         //  Resend what is unconfirmed at this time; NEVER
    int64_t give_up_at;         //  Finished: forget an unconfirmed ACK/NACK then; NEVER
    const char *fail_reason;    //  Why the restart failed (static text), or NULL
    char *message_id;           //  Points into strings; key of by_message
    char *instance_name;        //  Points into strings
    char *hostname;             //  Points into strings
    char strings [];            //  The three strings, null-terminated
};

//  A growing array of ids waiting for flush.
typedef struct {
    uint64_t *ids;              //  The ids
    size_t size;                //  Used
    size_t capacity;            //  Allocated
} id_list_t;

struct _wrk_jobs_t {
    wrk_config_t config;        //  Copied at creation
    wrk_effects_t effects;      //  Copied at creation
    mdl_clock_t clock;          //  Monotonic time source
    mdl_random_t random;        //  U[0,1) source for simulated restarts
    mdl_heap_t *heap;           //  One node per job
    zhashx_t *by_delivery;      //  delivery_id -> job
    zhashx_t *by_message;       //  message_id -> job
    uint64_t next_token;        //  Next job token
    id_list_t pending_extend;   //  Ids to EXTEND at flush
    id_list_t pending_ack;      //  Ids to ACK at flush
    id_list_t pending_nack [NACK_COUNT];    //  Ids to NACK at flush, by reason
    id_list_t pending_restart;  //  Ids for PROGRESS [restart]
    id_list_t pending_saved;    //  Ids for PROGRESS [save]
    size_t finished;            //  Jobs waiting for ACKED or NACKED
    size_t finished_acks;       //  Of which waiting for ACKED
    size_t gone;                //  Done jobs whose ACK was refused, remembered
    wrk_stats_t stats;          //  Counters since start
    int64_t log_window;         //  Start of the current one-second log window
    int log_lines;              //  Per-message lines printed in this window
    uint64_t log_dropped;       //  Per-message lines dropped in this window
    wrk_stats_t log_mark;       //  Counters at the start of the window
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
}

static size_t
s_hash_str (const void *key)
{
    //  FNV-1a: message ids are uuids, already well spread
    uint64_t h = 1469598103934665603ULL;
    for (const unsigned char *p = key; *p; p++)
        h = (h ^ *p) * 1099511628211ULL;
    return (size_t) h;
}

static int
s_compare_str (const void *a, const void *b)
{
    return strcmp (a, b);
}

wrk_jobs_t *
wrk_jobs_new (const wrk_config_t *config, const wrk_effects_t *effects,
              mdl_clock_t clock, mdl_random_t random)
{
    assert (config && effects);
    assert (effects->extend && effects->ack && effects->nack && effects->progress
            && effects->save && effects->restart && effects->restart_kill);
    wrk_jobs_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->config = *config;
    self->effects = *effects;
    self->clock = clock;
    self->random = random;
    self->heap = mdl_heap_new ();
    self->by_delivery = zhashx_new ();
    self->by_message = zhashx_new ();
    if (!self->heap || !self->by_delivery || !self->by_message) {
        wrk_jobs_destroy (&self);
        return NULL;
    }
    zhashx_set_key_duplicator (self->by_delivery, NULL);
    zhashx_set_key_destructor (self->by_delivery, NULL);
    zhashx_set_key_hasher (self->by_delivery, mdl_hash_u64);
    zhashx_set_key_comparator (self->by_delivery, mdl_compare_u64);
    zhashx_set_key_duplicator (self->by_message, NULL);
    zhashx_set_key_destructor (self->by_message, NULL);
    zhashx_set_key_hasher (self->by_message, s_hash_str);
    zhashx_set_key_comparator (self->by_message, s_compare_str);
    self->next_token = 1;
    self->log_window = mdl_clock_now (&self->clock);
    return self;
}

void
wrk_jobs_destroy (wrk_jobs_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        wrk_jobs_t *self = *self_p;
        mdl_heap_destroy (&self->heap);     //  Touches the nodes: before the jobs go
        if (self->by_message) {
            wrk_job_t *job = zhashx_first (self->by_message);
            while (job) {
                free (job);
                job = zhashx_next (self->by_message);
            }
        }
        zhashx_destroy (&self->by_delivery);
        zhashx_destroy (&self->by_message);
        free (self->pending_extend.ids);
        free (self->pending_ack.ids);
        for (int i = 0; i < NACK_COUNT; i++)
            free (self->pending_nack [i].ids);
        free (self->pending_restart.ids);
        free (self->pending_saved.ids);
        free (self);
        *self_p = NULL;
    }
}

void
wrk_jobs_set_ack_deadline (wrk_jobs_t *self, int64_t ms)
{
    if (ms > 0)
        self->config.ack_deadline_ms = ms;
}

void
wrk_jobs_set_confirm_timeout (wrk_jobs_t *self, int64_t ms)
{
    if (ms > 0)
        self->config.confirm_timeout_ms = ms;
}

size_t
wrk_jobs_size (wrk_jobs_t *self)
{
    return zhashx_size (self->by_message) - self->finished - self->gone;
}

size_t
wrk_jobs_unconfirmed (wrk_jobs_t *self, size_t *acks, size_t *nacks)
{
    if (acks)
        *acks = self->finished_acks;
    if (nacks)
        *nacks = self->finished - self->finished_acks;
    return self->finished;
}

void
wrk_jobs_stats (wrk_jobs_t *self, wrk_stats_t *stats)
{
    *stats = self->stats;
}

uint64_t wrk_job_delivery_id (const wrk_job_t *job) { return job->delivery_id; }
uint64_t wrk_job_token (const wrk_job_t *job) { return job->token; }
int64_t wrk_job_attempt (const wrk_job_t *job) { return job->attempt; }
int64_t wrk_job_received_wall (const wrk_job_t *job) { return job->received_wall; }
const char *wrk_job_message_id (const wrk_job_t *job) { return job->message_id; }
const char *wrk_job_instance_name (const wrk_job_t *job) { return job->instance_name; }
const char *wrk_job_hostname (const wrk_job_t *job) { return job->hostname; }

//  --------------------------------------------------------------------------
//  Batches and logging

//  Out of memory while queueing an id loses that one command; the lease
//  then expires at the broker and the message is redelivered, so this is
//  logged, not fatal.
static void
s_list_push (id_list_t *list, uint64_t id)
{
    if (list->size == list->capacity) {
        size_t capacity = list->capacity ? list->capacity * 2 : 64;
        uint64_t *ids = realloc (list->ids, capacity * sizeof *ids);
        if (!ids) {
            mdl_error ("out of memory queueing delivery %" PRIu64, id);
            return;
        }
        list->ids = ids;
        list->capacity = capacity;
    }
    list->ids [list->size++] = id;
}

//  Per-message lines share a budget of log_burst lines per second; the
//  rest are counted and summarised once per window.
static bool
s_log_budget (wrk_jobs_t *self)
{
    if (!mdl_log_enabled (MDL_LOG_INFO))
        return false;
    int64_t now = mdl_clock_now (&self->clock);
    if (now - self->log_window >= 1000) {
        if (self->log_dropped) {
            wrk_stats_t *a = &self->stats, *b = &self->log_mark;
            mdl_info ("Busy: %" PRIu64 " per-message lines not shown; last %.1fs: "
                      "consumed %" PRIu64 ", saved %" PRIu64 ", restarted %" PRIu64
                      ", extended %" PRIu64 ", acked %" PRIu64 ", nacked %" PRIu64
                      ", in flight %zu",
                      self->log_dropped, (double) (now - self->log_window) / 1000.0,
                      a->consumed - b->consumed, a->saved - b->saved,
                      a->restarted - b->restarted, a->extends - b->extends,
                      a->acked - b->acked, a->nacked - b->nacked,
                      wrk_jobs_size (self));
        }
        self->log_window = now;
        self->log_lines = 0;
        self->log_dropped = 0;
        self->log_mark = self->stats;
    }
    if (self->log_lines < self->config.log_burst) {
        self->log_lines++;
        return true;
    }
    self->log_dropped++;
    return false;
}

#define s_event(self, ...) do { if (s_log_budget (self)) mdl_info (__VA_ARGS__); } while (0)

//  --------------------------------------------------------------------------
//  Timers

static int64_t
s_extend_period (wrk_jobs_t *self, int64_t lease_ms)
{
    //  Extend at least twice per lease so one lost EXTEND is not fatal
    int64_t period = self->config.extend_every_ms;
    if (lease_ms > 0 && lease_ms / 2 < period)
        period = lease_ms / 2;
    return period > 0 ? period : 1;
}

static int64_t
s_lease_ms (wrk_jobs_t *self)
{
    return self->config.extension_ms > 0 ? self->config.extension_ms
                                         : self->config.ack_deadline_ms;
}

static void
s_rearm (wrk_jobs_t *self, wrk_job_t *job)
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
    if (mdl_heap_contains (&job->node))
        mdl_heap_update (self->heap, &job->node, key);
    else
    if (mdl_heap_insert (self->heap, &job->node, key) != 0)
        mdl_error ("out of memory arming timer of %s", job->message_id);
}

static bool
s_working (const wrk_job_t *job)
{
    return job->save == STEP_RUNNING || job->save == STEP_WAITING
        || job->restart == STEP_RUNNING;
}

static void
s_remove (wrk_jobs_t *self, wrk_job_t *job)
{
    if (job->final == FINAL_ACK || job->final == FINAL_NACK) {
        self->finished--;
        if (job->final == FINAL_ACK)
            self->finished_acks--;
    }
    if (job->final == FINAL_GONE)
        self->gone--;
    mdl_heap_remove (self->heap, &job->node);
    zhashx_delete (self->by_delivery, &job->delivery_id);
    zhashx_delete (self->by_message, job->message_id);
    free (job);
}

static double
s_age (wrk_jobs_t *self, wrk_job_t *job)
{
    return (double) (mdl_clock_now (&self->clock) - job->received_at) / 1000.0;
}

//  Something that needs a reply was just queued for this job: resend it
//  if no reply comes within the confirm timeout (counted from now).
static void
s_expect_reply (wrk_jobs_t *self, wrk_job_t *job)
{
    job->confirm_at = mdl_clock_now (&self->clock) + self->config.confirm_timeout_ms;
}

//  Report a finished step (PROGRESS), kept until PROGRESSED. The caller
//  re-arms the job.
static void
s_progress (wrk_jobs_t *self, wrk_job_t *job, unsigned step)
{
    if (!job->delivery_id)
        return;
    s_list_push (step == MMP_STEP_RESTART ? &self->pending_restart : &self->pending_saved,
                 job->delivery_id);
    job->progress_sent |= (uint8_t) step;
    if (job->progress_waiting < UINT8_MAX)
        job->progress_waiting++;
    s_expect_reply (self, job);
}

//  Queue the final ACK or NACK of a job that has a lease. The job stays in
//  the table, doing nothing but waiting for the reply, until the broker
//  answers it (any verdict) or until one ack deadline after its lease has
//  certainly ended (the later of its last lease deadline and now; the
//  extra ack deadline covers a broker that restarted and keeps open leases
//  one more ack deadline).
static void
s_finalize (wrk_jobs_t *self, wrk_job_t *job, final_t final, nack_reason_t reason)
{
    assert (job->delivery_id && job->final == FINAL_NONE);
    int64_t now = mdl_clock_now (&self->clock);
    if (final == FINAL_ACK)
        s_list_push (&self->pending_ack, job->delivery_id);
    else
        s_list_push (&self->pending_nack [reason], job->delivery_id);
    job->final = (uint8_t) final;
    job->final_reason = (uint8_t) reason;
    self->finished++;
    if (final == FINAL_ACK)
        self->finished_acks++;
    job->extend_at = NEVER;
    job->restart_at = NEVER;
    job->retry_at = NEVER;
    job->hard_deadline = NEVER;
    job->give_up_at = (job->lease_until > now ? job->lease_until : now)
                    + self->config.ack_deadline_ms;
    s_expect_reply (self, job);
    s_rearm (self, job);
}

//  Queue again whatever of this job the broker has not confirmed.
static void
s_resend (wrk_jobs_t *self, wrk_job_t *job)
{
    unsigned steps = job->progress_sent;
    job->progress_sent = 0;
    job->progress_waiting = 0;
    job->confirm_at = NEVER;
    if (job->delivery_id) {
        if (steps & MMP_STEP_RESTART)
            s_progress (self, job, MMP_STEP_RESTART);
        if (steps & MMP_STEP_SAVE)
            s_progress (self, job, MMP_STEP_SAVE);
        if (job->final == FINAL_ACK)
            s_list_push (&self->pending_ack, job->delivery_id);
        else
        if (job->final == FINAL_NACK)
            s_list_push (&self->pending_nack [job->final_reason], job->delivery_id);
        if (job->final != FINAL_NONE)
            s_expect_reply (self, job);
        if (steps || job->final != FINAL_NONE)
            self->stats.resent++;
    }
    s_rearm (self, job);
}

//  Decide a job whose steps have all stopped running: ACK or NACK.
static void
s_finish (wrk_jobs_t *self, wrk_job_t *job, nack_reason_t reason, const char *why)
{
    if (job->restart == STEP_RUNNING
    &&  self->config.restart_mode == WRK_RESTART_EXTERNAL)
        self->effects.restart_kill (self->effects.arg, job);

    if (job->delivery_id == 0) {
        mdl_info ("Finished %s (%s) without a lease: save %s, restart %s; nothing to ack",
                  job->message_id, job->instance_name,
                  job->save == STEP_DONE ? "done" : "not done",
                  job->restart == STEP_DONE ? "done" : "not done");
        s_remove (self, job);
        return;
    }
    if (job->save == STEP_DONE && job->restart == STEP_DONE) {
        self->stats.acked++;
        if (self->effects.outcome)
            self->effects.outcome (self->effects.arg, job, job->restart_prior
                                   ? "restarted by an earlier attempt" : "restarted");
        s_event (self, "Done. Acked %s (%s) after %.3fs, %u extensions",
                 job->message_id, job->instance_name, s_age (self, job), job->extensions);
        s_finalize (self, job, FINAL_ACK, NACK_REFUSED);
    }
    else {
        if (job->save == STEP_DONE)
            s_progress (self, job, MMP_STEP_SAVE);
        self->stats.nacked++;
        if (self->effects.outcome && job->save == STEP_DONE && job->restart == STEP_FAILED)
            self->effects.outcome (self->effects.arg, job, why);
        //  A failure is always worth its own line
        mdl_info ("Nacked %s (%s) attempt %" PRId64 " after %.3fs: %s",
                  job->message_id, job->instance_name, job->attempt,
                  s_age (self, job), why);
        s_finalize (self, job, FINAL_NACK, reason);
    }
}

//  Both steps stopped? Then finish; else keep timers right.
static void
s_check (wrk_jobs_t *self, wrk_job_t *job)
{
    if (job->final != FINAL_NONE)
        return;                 //  Decided already
    if (s_working (job)) {
        s_rearm (self, job);
        return;
    }
    if (job->restart == STEP_FAILED)
        s_finish (self, job, (nack_reason_t) job->fail_kind,
                  job->fail_reason ? job->fail_reason : "restart failed");
    else
    if (job->save == STEP_FAILED)
        s_finish (self, job, NACK_SAVE_FAILED, "save failed");
    else
        s_finish (self, job, NACK_REFUSED, "done");
}

static void
s_start_save (wrk_jobs_t *self, wrk_job_t *job)
{
    job->save = STEP_RUNNING;
    job->retry_at = NEVER;
    job->save_tries++;
    if (self->effects.save (self->effects.arg, job) != 0)
        wrk_jobs_saved (self, job->message_id, job->token, false, "could not queue the save");
    else
        s_rearm (self, job);
}

//  reason is static text; kind the NACK reason if it failed.
static void
s_restart_done (wrk_jobs_t *self, wrk_job_t *job, bool ok, nack_reason_t kind,
                const char *reason)
{
    job->restart_at = NEVER;
    if (ok) {
        job->restart = STEP_DONE;
        self->stats.restarted++;
        s_progress (self, job, MMP_STEP_RESTART);
        s_event (self, "Restarted %s (%s) in %.3fs", job->hostname,
                 job->message_id, s_age (self, job));
    }
    else {
        job->restart = STEP_FAILED;
        job->fail_reason = reason;
        job->fail_kind = (uint8_t) kind;
        self->stats.restart_failures++;
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
    s_check (self, job);
}

//  --------------------------------------------------------------------------

int
wrk_jobs_deliver (wrk_jobs_t *self, const mmp_delivery_t *delivery)
{
    int64_t now = mdl_clock_now (&self->clock);
    const mmp_request_t *request = &delivery->message;
    const char *message_id = request->message_id ? request->message_id : "";
    const char *hostname = request->hostname ? request->hostname : "";
    const char *instance = request->instance_name ? request->instance_name : "";

    //  --allow-hosts: defence in depth against a leaked publisher key. The
    //  host is never touched (no save, no restart); the NACK's reason ends
    //  in the dead letter once the broker runs out of attempts.
    if (self->config.allow_host_count > 0) {
        bool allowed = false;
        for (size_t i = 0; i < self->config.allow_host_count && !allowed; i++)
            allowed = fnmatch (self->config.allow_hosts [i], hostname, FNM_CASEFOLD) == 0;
        if (!allowed) {
            s_event (self, "Refused %s: host %s matches no --allow-hosts glob; nacked",
                     message_id, hostname);
            s_list_push (&self->pending_nack [NACK_HOST_NOT_ALLOWED], delivery->delivery_id);
            self->stats.nacked++;
            return 0;
        }
    }

    wrk_job_t *held = zhashx_lookup (self->by_delivery, &delivery->delivery_id);
    if (held && streq (held->message_id, message_id)) {
        mdl_warn ("delivery %" PRIu64 " received twice; ignored", delivery->delivery_id);
        return 0;
    }
    if (held) {
        //  The broker issued this id again for another message (it lost
        //  its state, e.g. restarted without a journal in the same epoch):
        //  our old lease is certainly gone, and acking it would ack the
        //  new message. The old job finishes its work without a lease.
        mdl_warn ("delivery %" PRIu64 " reissued for %s while held for %s; "
                  "the old lease is dropped", delivery->delivery_id, message_id,
                  held->message_id);
        if (held->final != FINAL_NONE)
            s_remove (self, held);     //  Its ACK/NACK would now hit the new message
        else {
            zhashx_delete (self->by_delivery, &held->delivery_id);
            held->delivery_id = 0;
            held->lease_lost = true;
            held->extend_at = NEVER;
            held->progress_sent = 0;
            held->progress_waiting = 0;
            held->confirm_at = NEVER;
            s_rearm (self, held);
        }
    }
    held = zhashx_lookup (self->by_message, message_id);
    if (held && held->final == FINAL_NACK) {
        //  We gave it back and the broker took it (the redelivery says so):
        //  a new attempt from scratch
        s_remove (self, held);
        held = NULL;
    }
    if (held && (held->final == FINAL_ACK || held->final == FINAL_GONE)) {
        //  Done, but our ACK did not count in time (lost across a broker
        //  restart, or the lease ran out first): ack the new lease instead;
        //  the old one is gone anyway.
        mdl_info ("Redelivered %s (attempt %" PRId64 ") after it was done; acking "
                  "delivery %" PRIu64 " instead of %" PRIu64, message_id,
                  delivery->attempt, delivery->delivery_id, held->delivery_id);
        zhashx_delete (self->by_delivery, &held->delivery_id);
        held->delivery_id = delivery->delivery_id;
        held->attempt = delivery->attempt;
        held->progress_sent = 0;
        held->progress_waiting = 0;
        held->lease_until = now + delivery->deadline_ms;
        held->give_up_at = held->lease_until + self->config.ack_deadline_ms;
        zhashx_insert (self->by_delivery, &held->delivery_id, held);
        s_list_push (&self->pending_ack, held->delivery_id);
        self->stats.acked++;
        if (held->final == FINAL_GONE) {
            held->final = FINAL_ACK;
            self->gone--;
            self->finished++;
            self->finished_acks++;
        }
        s_expect_reply (self, held);
        s_rearm (self, held);
        return 0;
    }
    if (held) {
        //  The broker gave up on our old lease (expired while we worked)
        //  and gave the message back to us: carry on under the new lease
        //  instead of restarting the host a second time.
        mdl_info ("Redelivered %s (attempt %" PRId64 ") while still in flight; "
                  "continuing under delivery %" PRIu64,
                  message_id, delivery->attempt, delivery->delivery_id);
        zhashx_delete (self->by_delivery, &held->delivery_id);
        held->delivery_id = delivery->delivery_id;
        held->attempt = delivery->attempt;
        held->lease_lost = false;
        held->extend_at = now + s_extend_period (self, delivery->deadline_ms);
        held->lease_until = now + delivery->deadline_ms;
        held->progress_sent = 0;
        held->progress_waiting = 0;
        held->confirm_at = NEVER;
        zhashx_insert (self->by_delivery, &held->delivery_id, held);
        //  A restart we finished that the broker has not recorded (our
        //  PROGRESS went to the old lease): record it under the new one
        if (held->restart == STEP_DONE && !held->restart_prior
        &&  !(delivery->steps & MMP_STEP_RESTART))
            s_progress (self, held, MMP_STEP_RESTART);
        s_rearm (self, held);
        return 0;
    }

    size_t lm = strlen (message_id) + 1, li = strlen (instance) + 1, lh = strlen (hostname) + 1;
    wrk_job_t *job = calloc (1, sizeof *job + lm + li + lh);
    if (!job) {
        s_list_push (&self->pending_nack [NACK_REFUSED], delivery->delivery_id);
        return -1;
    }
    job->message_id = job->strings;
    job->instance_name = job->strings + lm;
    job->hostname = job->strings + lm + li;
    memcpy (job->message_id, message_id, lm);
    memcpy (job->instance_name, instance, li);
    memcpy (job->hostname, hostname, lh);
    job->delivery_id = delivery->delivery_id;
    job->token = self->next_token++;
    job->attempt = delivery->attempt;
    job->received_at = now;
    job->received_wall = mdl_clock_wall ();
    job->extend_at = now + s_extend_period (self, delivery->deadline_ms);
    job->restart_at = NEVER;
    job->retry_at = NEVER;
    job->hard_deadline = now + self->config.max_job_ms;
    job->lease_until = now + delivery->deadline_ms;
    job->confirm_at = NEVER;
    job->give_up_at = NEVER;
    if (zhashx_insert (self->by_message, job->message_id, job) != 0
    ||  zhashx_insert (self->by_delivery, &job->delivery_id, job) != 0) {
        zhashx_delete (self->by_message, job->message_id);
        free (job);
        s_list_push (&self->pending_nack [NACK_REFUSED], delivery->delivery_id);
        return -1;
    }
    self->stats.consumed++;
    s_event (self, "Consumed %s (%s) delivery %" PRIu64 " attempt %" PRId64 "%s%s",
             job->message_id, job->instance_name, job->delivery_id, job->attempt,
             delivery->steps & MMP_STEP_RESTART ? ", restart already done" : "",
             delivery->steps & MMP_STEP_SAVE ? ", save already done" : "");
    s_rearm (self, job);

    //  Both steps start now; neither waits for the other.
    if (delivery->steps & MMP_STEP_RESTART) {
        job->restart = STEP_DONE;
        job->restart_prior = true;
        self->stats.restarts_skipped++;
    }
    else {
        job->restart = STEP_RUNNING;
        if (self->config.restart_mode == WRK_RESTART_SIMULATE) {
            double u = mdl_random_next (&self->random);
            job->restart_at = now + (int64_t) (u * (double) self->config.restart_latency_ms);
        }
        else {
            job->restart_at = now + self->config.restart_timeout_ms;
            if (self->effects.restart (self->effects.arg, job) != 0) {
                if (delivery->steps & MMP_STEP_SAVE)
                    job->save = STEP_DONE;
                else
                    job->save = STEP_FAILED;   //  Nothing queued yet
                s_restart_done (self, job, false, NACK_RESTART_FAILED, "restart could not start");
                return 0;
            }
        }
    }
    if (delivery->steps & MMP_STEP_SAVE)
        job->save = STEP_DONE;
    else {
        s_start_save (self, job);
        //  A synchronous save failure may have finished the job already
        if (zhashx_lookup (self->by_message, message_id) != job
        ||  job->final != FINAL_NONE)
            return 0;
    }
    s_check (self, job);
    return 0;
}

static wrk_job_t *
s_find (wrk_jobs_t *self, const char *message_id, uint64_t token)
{
    wrk_job_t *job = message_id ? zhashx_lookup (self->by_message, message_id) : NULL;
    //  A finished job ignores late completions (e.g. of a killed restart)
    return job && job->token == token && job->final == FINAL_NONE ? job : NULL;
}

void
wrk_jobs_saved (wrk_jobs_t *self, const char *message_id, uint64_t token,
                bool ok, const char *error)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (!job || job->save != STEP_RUNNING)
        return;             //  An older job's completion, or already decided
    if (ok) {
        job->save = STEP_DONE;
        self->stats.saved++;
        s_event (self, "Saved %s (%s) into database", job->message_id, job->instance_name);
    }
    else {
        self->stats.save_failures++;
        if (job->save_tries >= self->config.save_attempts) {
            mdl_warn ("Save of %s failed %u times, giving up: %s", job->message_id,
                      job->save_tries, error ? error : "?");
            job->save = STEP_FAILED;
        }
        else {
            int64_t delay = self->config.save_retry_base_ms;
            for (int i = 1; i < job->save_tries && delay < self->config.save_retry_max_ms; i++)
                delay *= 2;
            if (delay > self->config.save_retry_max_ms)
                delay = self->config.save_retry_max_ms;
            mdl_warn ("Save of %s failed (try %u), retrying in %" PRId64 " ms: %s",
                      job->message_id, job->save_tries, delay, error ? error : "?");
            job->save = STEP_WAITING;
            job->retry_at = mdl_clock_now (&self->clock) + delay;
        }
    }
    s_check (self, job);
}

void
wrk_jobs_restarted (wrk_jobs_t *self, const char *message_id, uint64_t token,
                    bool ok, const char *reason)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (!job || job->restart != STEP_RUNNING)
        return;
    s_restart_done (self, job, ok, NACK_RESTART_FAILED,
                    ok ? NULL : (reason ? reason : "restart failed"));
}

void
wrk_jobs_lease_lost (wrk_jobs_t *self, const uint64_t *ids, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (job && !job->lease_lost && job->final == FINAL_NONE) {
            mdl_warn ("Lease of %s (delivery %" PRIu64 ") is gone at the broker; "
                      "finishing without extending", job->message_id, ids [i]);
            job->lease_lost = true;
            job->extend_at = NEVER;
            s_rearm (self, job);
        }
    }
}

void
wrk_jobs_tick (wrk_jobs_t *self)
{
    int64_t now = mdl_clock_now (&self->clock);
    mdl_heap_node_t *node;
    while ((node = mdl_heap_top (self->heap)) && node->key <= now) {
        wrk_job_t *job = (wrk_job_t *) node;     //  node is the first member
        if (job->give_up_at <= now && job->final == FINAL_GONE) {
            s_remove (self, job);   //  Nobody redelivered it to us
            continue;
        }
        if (job->give_up_at <= now) {
            //  Bounded: the lease is certainly over at the broker, so the
            //  message is delivered again (or already was) whatever we do
            if (job->final == FINAL_ACK)
                self->stats.acks_abandoned++;
            mdl_warn ("No %s for %s (%s) delivery %" PRIu64 " before its lease certainly "
                      "ended; giving up (the broker will deliver it again)",
                      job->final == FINAL_ACK ? "ACKED" : "NACKED", job->message_id,
                      job->instance_name, job->delivery_id);
            s_remove (self, job);
            continue;
        }
        if (job->hard_deadline <= now) {
            mdl_warn ("%s (%s) hit its ceiling of %" PRId64 " ms; giving up",
                      job->message_id, job->instance_name, self->config.max_job_ms);
            if (job->restart == STEP_RUNNING)
                self->stats.restart_failures++;
            s_finish (self, job, NACK_JOB_TIMEOUT, "job exceeded its time ceiling");
            continue;
        }
        if (job->restart_at <= now) {
            job->restart_at = NEVER;
            if (self->config.restart_mode == WRK_RESTART_SIMULATE) {
                bool ok = mdl_random_next (&self->random) >= self->config.fail_rate;
                s_restart_done (self, job, ok, NACK_RESTART_FAILED, "simulated restart failure");
            }
            else {
                self->effects.restart_kill (self->effects.arg, job);
                mdl_warn ("Restart of %s timed out after %" PRId64 " ms; killed",
                          job->hostname, self->config.restart_timeout_ms);
                s_restart_done (self, job, false, NACK_RESTART_TIMEOUT, "restart timed out");
            }
            continue;           //  The job may be gone; its node is re-keyed
        }
        if (job->retry_at <= now) {
            s_start_save (self, job);
            continue;
        }
        if (job->confirm_at <= now) {
            s_resend (self, job);
            continue;
        }
        if (job->extend_at <= now) {
            s_list_push (&self->pending_extend, job->delivery_id);
            job->extensions++;
            self->stats.extends++;
            int64_t lease = s_lease_ms (self);
            if (now + lease > job->lease_until)
                job->lease_until = now + lease;
            job->extend_at = now + s_extend_period (self, lease);
            s_event (self, "Extended deadline of %s (%s) by %.1fs", job->message_id,
                     job->instance_name, (double) lease / 1000.0);
            s_rearm (self, job);
            continue;
        }
        s_rearm (self, job);    //  Defensive: key out of date
    }
}

int64_t
wrk_jobs_next_wake (wrk_jobs_t *self)
{
    mdl_heap_node_t *node = mdl_heap_top (self->heap);
    return node ? node->key : -1;
}

static void
s_flush_list (wrk_jobs_t *self, id_list_t *list, int kind, const char *reason, unsigned steps)
{
    for (size_t at = 0; at < list->size; at += MMP_MAX_IDS) {
        size_t count = list->size - at < MMP_MAX_IDS ? list->size - at : MMP_MAX_IDS;
        const uint64_t *ids = list->ids + at;
        switch (kind) {
            case 0: self->effects.progress (self->effects.arg, ids, count, steps); break;
            case 1: self->effects.ack (self->effects.arg, ids, count); break;
            case 2: self->effects.nack (self->effects.arg, ids, count, reason); break;
            default: self->effects.extend (self->effects.arg, ids, count); break;
        }
    }
    list->size = 0;
}

void
wrk_jobs_flush (wrk_jobs_t *self)
{
    //  Progress before the NACK it may precede, so the broker records the
    //  steps while the lease is still open.
    s_flush_list (self, &self->pending_restart, 0, NULL, MMP_STEP_RESTART);
    s_flush_list (self, &self->pending_saved, 0, NULL, MMP_STEP_SAVE);
    s_flush_list (self, &self->pending_ack, 1, NULL, 0);
    for (int i = 0; i < NACK_COUNT; i++)
        s_flush_list (self, &self->pending_nack [i], 2,
                      s_nack_names [i] ? s_nack_names [i] : "refused", 0);
    //  A job may have finished after its extend was queued: never extend
    //  a lease we are acking or nacking
    size_t kept = 0;
    for (size_t i = 0; i < self->pending_extend.size; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &self->pending_extend.ids [i]);
        if (job && job->final == FINAL_NONE)
            self->pending_extend.ids [kept++] = self->pending_extend.ids [i];
    }
    self->pending_extend.size = kept;
    s_flush_list (self, &self->pending_extend, 3, NULL, 0);
}

size_t
wrk_jobs_nack_all (wrk_jobs_t *self)
{
    size_t size = zhashx_size (self->by_message);
    if (size == 0)
        return 0;
    //  Collected first: jobs without a lease leave the table on the way
    wrk_job_t **working = malloc (size * sizeof *working);
    size_t count = 0;
    for (wrk_job_t *job = zhashx_first (self->by_message); job && working;
         job = zhashx_next (self->by_message))
        if (job->final == FINAL_NONE)     //  Finished ones wait for their reply
            working [count++] = job;
    if (!working) {
        mdl_error ("out of memory nacking at shutdown; the leases will expire");
        return 0;
    }
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = working [i];
        if (job->restart == STEP_RUNNING
        &&  self->config.restart_mode == WRK_RESTART_EXTERNAL)
            self->effects.restart_kill (self->effects.arg, job);
        self->stats.nacked++;
        if (!job->delivery_id) {
            s_remove (self, job);
            continue;
        }
        //  PROGRESS [restart] of a finished restart is already queued
        if (job->save == STEP_DONE)
            s_progress (self, job, MMP_STEP_SAVE);
        s_finalize (self, job, FINAL_NACK, NACK_SHUTDOWN);
    }
    free (working);
    return count;
}

size_t
wrk_jobs_resend (wrk_jobs_t *self)
{
    size_t count = 0;
    for (wrk_job_t *job = zhashx_first (self->by_message); job;
         job = zhashx_next (self->by_message))
        if (job->progress_sent || job->final == FINAL_ACK || job->final == FINAL_NACK) {
            s_resend (self, job);
            count++;
        }
    return count;
}

//  Settle the ACK or NACK of each id: any verdict ends it.
static void
s_confirm_final (wrk_jobs_t *self, final_t final, const uint64_t *ids, size_t count,
                 const char *verdict)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (!job || job->final != final)
            continue;           //  Already settled (a resend's second reply)
        if (final == FINAL_ACK) {
            if (verdict) {
                self->stats.acks_refused++;
                if (s_log_budget (self))
                    mdl_warn ("Ack of %s (%s) delivery %" PRIu64 " answered %s: the broker "
                              "no longer holds that lease; it may deliver the message again",
                              job->message_id, job->instance_name, job->delivery_id, verdict);
                //  Remembered until its give-up time: if the message comes
                //  back to us it is acked at once, not restarted again
                self->finished--;
                self->finished_acks--;
                self->gone++;
                job->final = FINAL_GONE;
                job->progress_sent = 0;
                job->progress_waiting = 0;
                job->confirm_at = NEVER;
                s_rearm (self, job);
                continue;
            }
            self->stats.acks_confirmed++;
        }
        else
        if (verdict && s_log_budget (self))
            mdl_info ("Nack of %s delivery %" PRIu64 " answered %s", job->message_id,
                      job->delivery_id, verdict);
        s_remove (self, job);
    }
}

//  A reply to one PROGRESS of each id. Replies come in the order the
//  commands went out, so once every PROGRESS of a job is answered all its
//  steps are recorded. stale/unknown: the lease is gone, nothing to record.
static void
s_confirm_progress (wrk_jobs_t *self, const uint64_t *ids, size_t count, bool ok)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (!job || !job->progress_waiting)
            continue;
        job->progress_waiting = ok ? job->progress_waiting - 1 : 0;
        if (job->progress_waiting == 0) {
            job->progress_sent = 0;
            if (job->final == FINAL_NONE) {
                job->confirm_at = NEVER;
                s_rearm (self, job);
            }
        }
    }
}

void
wrk_jobs_reply (wrk_jobs_t *self, const mmp_msg_t *reply)
{
    switch (reply->command) {
        case MMP_EXTENDED: {
            int64_t now = mdl_clock_now (&self->clock);
            for (size_t i = 0; i < reply->id_count && reply->deadline_ms > 0; i++) {
                wrk_job_t *job = zhashx_lookup (self->by_delivery, &reply->ids [i]);
                if (job && now + reply->deadline_ms > job->lease_until)
                    job->lease_until = now + reply->deadline_ms;
            }
            wrk_jobs_lease_lost (self, reply->stale, reply->stale_count);
            wrk_jobs_lease_lost (self, reply->unknown, reply->unknown_count);
            break;
        }
        case MMP_ACKED:
        case MMP_NACKED: {
            final_t final = reply->command == MMP_ACKED ? FINAL_ACK : FINAL_NACK;
            s_confirm_final (self, final, reply->ids, reply->id_count, NULL);
            s_confirm_final (self, final, reply->stale, reply->stale_count, "stale");
            s_confirm_final (self, final, reply->unknown, reply->unknown_count, "unknown");
            break;
        }
        case MMP_PROGRESSED:
            s_confirm_progress (self, reply->ids, reply->id_count, true);
            s_confirm_progress (self, reply->stale, reply->stale_count, false);
            s_confirm_progress (self, reply->unknown, reply->unknown_count, false);
            break;
        default:
            break;
    }
}

void
wrk_jobs_dump (wrk_jobs_t *self)
{
    static const char *names [] = { "running", "retry-wait", "done", "failed" };
    static const char *finals [] = { "", " waiting for ACKED", " waiting for NACKED",
                                     " done, ack refused" };
    int64_t now = mdl_clock_now (&self->clock);
    mdl_info ("In-flight table: %zu messages working, %zu waiting for a reply, "
              "%zu done with a refused ack", wrk_jobs_size (self), self->finished, self->gone);
    for (wrk_job_t *job = zhashx_first (self->by_message); job;
         job = zhashx_next (self->by_message))
        mdl_info ("  %s %s delivery %" PRIu64 " attempt %" PRId64 " save %s restart %s%s "
                  "age %.3fs extensions %u%s%s%s",
                  job->message_id, job->instance_name, job->delivery_id, job->attempt,
                  names [job->save], names [job->restart],
                  job->restart_prior ? " (earlier attempt)" : "",
                  (double) (now - job->received_at) / 1000.0, job->extensions,
                  job->lease_lost ? " lease lost" : "", finals [job->final],
                  job->progress_sent ? " progress unconfirmed" : "");
    mdl_log_flush ();
}
