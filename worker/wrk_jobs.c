/*  wrk_jobs: see wrk_jobs.h. The in-flight table is two zhashx indexes
    whose keys point into the jobs (no key copies); each job is one heap
    node keyed on its earliest timer. The jobs' transitions live in
    wrk_job.c and call back wrk_jobs_queue, _rearm, _remove, _final_changed.
*/
#include "wrk_jobs.h"

#include <assert.h>
#include <czmq.h>
#include <fnmatch.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_array.h"
#include "mdl_heap.h"
#include "mdl_log.h"
#include "mdl_map.h"
#include "mdl_rate.h"

//  A growing array of ids waiting for flush.
typedef struct {
    uint64_t *ids;              //  The ids
    size_t size;                //  Used
    size_t capacity;            //  Allocated
} id_list_t;

struct _wrk_jobs_t {
    wrk_job_ctx_t ctx;          //  What the jobs read: config, effects, clock, counters
    mdl_heap_t *heap;           //  One node per job
    zhashx_t *by_delivery;      //  delivery_id -> job
    zhashx_t *by_message;       //  message_id -> job
    uint64_t next_token;        //  Next job token
    id_list_t pending_extend;   //  Ids to EXTEND at flush
    id_list_t pending_ack;      //  Ids to ACK at flush
    id_list_t pending_nack [WRK_NACK_COUNT];    //  Ids to NACK at flush, by reason
    id_list_t pending_restart;  //  Ids for PROGRESS [restart]
    id_list_t pending_saved;    //  Ids for PROGRESS [save]
    id_list_t pending_started;  //  Ids for PROGRESS [started]
    size_t finished;            //  Jobs waiting for ACKED or NACKED
    size_t finished_acks;       //  Of which waiting for ACKED
    size_t gone;                //  Done jobs whose ACK was refused, remembered
    bool unarmed;               //  A job is out of the heap (insert failed): re-arm at tick
    mdl_rate_t *log_rate;       //  Per-message lines: log_burst a second
    wrk_stats_t log_mark;       //  Counters at the start of the window
};

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
    self->ctx.config = *config;
    self->ctx.effects = *effects;
    self->ctx.clock = clock;
    self->ctx.random = random;
    self->ctx.jobs = self;
    self->heap = mdl_heap_new ();
    self->log_rate = mdl_rate_new (clock, config->log_burst > 0 ? config->log_burst : 0, 1000);
    self->by_delivery = zhashx_new ();
    self->by_message = zhashx_new ();
    if (!self->heap || !self->log_rate || !self->by_delivery || !self->by_message) {
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
                wrk_job_destroy (&job);
                job = zhashx_next (self->by_message);
            }
        }
        zhashx_destroy (&self->by_delivery);
        zhashx_destroy (&self->by_message);
        mdl_rate_destroy (&self->log_rate);
        free (self->pending_extend.ids);
        free (self->pending_ack.ids);
        for (int i = 0; i < WRK_NACK_COUNT; i++)
            free (self->pending_nack [i].ids);
        free (self->pending_restart.ids);
        free (self->pending_saved.ids);
        free (self->pending_started.ids);
        free (self);
        *self_p = NULL;
    }
}

void
wrk_jobs_set_ack_deadline (wrk_jobs_t *self, int64_t ms)
{
    if (ms > 0)
        self->ctx.config.ack_deadline_ms = ms;
}

void
wrk_jobs_set_confirm_timeout (wrk_jobs_t *self, int64_t ms)
{
    if (ms > 0)
        self->ctx.config.confirm_timeout_ms = ms;
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
    *stats = self->ctx.stats;
}

//  --------------------------------------------------------------------------
//  What the jobs call back

//  Out of memory while queueing an id loses that one command for now; the
//  job's confirm timer sends an ACK, NACK or PROGRESS again, a lost EXTEND
//  is followed by the next period's.
static int
s_list_push (id_list_t *list, uint64_t id)
{
    if (mdl_array_reserve (&list->ids, &list->capacity, list->size + 1, sizeof *list->ids) != 0) {
        mdl_error ("out of memory queueing delivery %" PRIu64, id);
        return -1;
    }
    list->ids [list->size++] = id;
    return 0;
}

int
wrk_jobs_queue (wrk_jobs_t *self, wrk_queue_t what, int reason, uint64_t id)
{
    switch (what) {
        case WRK_QUEUE_EXTEND: return s_list_push (&self->pending_extend, id);
        case WRK_QUEUE_ACK: return s_list_push (&self->pending_ack, id);
        case WRK_QUEUE_PROGRESS_RESTART: return s_list_push (&self->pending_restart, id);
        case WRK_QUEUE_PROGRESS_SAVE: return s_list_push (&self->pending_saved, id);
        case WRK_QUEUE_PROGRESS_STARTED: return s_list_push (&self->pending_started, id);
        case WRK_QUEUE_NACK:
            if (reason < 0 || reason >= WRK_NACK_COUNT)
                reason = WRK_NACK_REFUSED;
            return s_list_push (&self->pending_nack [reason], id);
    }
    return -1;
}

void
wrk_jobs_rearm (wrk_jobs_t *self, wrk_job_t *job)
{
    mdl_heap_node_t *node = wrk_job_node (job);
    int64_t key = wrk_job_wake (job);
    if (mdl_heap_contains (node))
        mdl_heap_update (self->heap, node, key);
    else
    if (mdl_heap_insert (self->heap, node, key) != 0) {
        //  Without a timer the job would wait for nothing: remember that
        //  one is missing; next_wake asks for a tick soon, which tries again
        mdl_error ("out of memory arming timer of %s; retrying", wrk_job_message_id (job));
        self->unarmed = true;
    }
}

static void
s_count (wrk_jobs_t *self, wrk_final_t final, int delta)
{
    if (final == WRK_FINAL_ACK || final == WRK_FINAL_NACK) {
        self->finished += (size_t) delta;
        if (final == WRK_FINAL_ACK)
            self->finished_acks += (size_t) delta;
    }
    if (final == WRK_FINAL_GONE)
        self->gone += (size_t) delta;
}

void
wrk_jobs_final_changed (wrk_jobs_t *self, wrk_final_t old, wrk_final_t new_)
{
    s_count (self, old, -1);
    s_count (self, new_, 1);
}

void
wrk_jobs_remove (wrk_jobs_t *self, wrk_job_t *job)
{
    s_count (self, wrk_job_final (job), -1);
    mdl_heap_remove (self->heap, wrk_job_node (job));
    if (zhashx_lookup (self->by_delivery, wrk_job_delivery_key (job)) == job)
        zhashx_delete (self->by_delivery, wrk_job_delivery_key (job));
    if (zhashx_lookup (self->by_message, wrk_job_message_id (job)) == job)
        zhashx_delete (self->by_message, wrk_job_message_id (job));
    wrk_job_destroy (&job);
}

//  Per-message lines share a budget of log_burst lines per second; the
//  rest are counted and summarised once per window.
bool
wrk_jobs_log_budget (wrk_jobs_t *self)
{
    if (!mdl_log_enabled (MDL_LOG_INFO))
        return false;
    mdl_rate_window_t window;
    bool allowed = mdl_rate_allow (self->log_rate, &window);
    if (window.closed) {
        if (window.dropped) {
            wrk_stats_t *a = &self->ctx.stats, *b = &self->log_mark;
            mdl_info ("Busy: %" PRId64 " per-message lines not shown; last %.1fs: "
                      "consumed %" PRIu64 ", saved %" PRIu64 ", restarted %" PRIu64
                      ", extended %" PRIu64 ", acked %" PRIu64 ", nacked %" PRIu64
                      ", in flight %zu",
                      window.dropped, (double) window.elapsed_ms / 1000.0,
                      a->consumed - b->consumed, a->saved - b->saved,
                      a->restarted - b->restarted, a->extends - b->extends,
                      a->acked - b->acked, a->nacked - b->nacked,
                      wrk_jobs_size (self));
        }
        self->log_mark = self->ctx.stats;
    }
    return allowed;
}

//  --------------------------------------------------------------------------

//  Refuse a delivery we cannot hold: NACK it at once, so the broker gives
//  it to someone else instead of waiting out the lease.
static int
s_refuse (wrk_jobs_t *self, uint64_t delivery_id, const char *why)
{
    mdl_error ("refusing delivery %" PRIu64 ": %s", delivery_id, why);
    wrk_jobs_queue (self, WRK_QUEUE_NACK, WRK_NACK_REFUSED, delivery_id);
    self->ctx.stats.nacked++;
    return -1;
}

int
wrk_jobs_deliver (wrk_jobs_t *self, const mmp_delivery_t *delivery)
{
    wrk_job_ctx_t *ctx = &self->ctx;
    const char *message_id = delivery->message.message_id ? delivery->message.message_id : "";

    //  --allow-hosts: defence in depth against a leaked publisher key. The
    //  host is never touched (no save, no restart); the NACK's reason ends
    //  in the dead letter once the broker runs out of attempts.
    if (ctx->config.allow_host_count > 0) {
        const char *hostname = delivery->message.hostname ? delivery->message.hostname : "";
        bool allowed = false;
        for (size_t i = 0; i < ctx->config.allow_host_count && !allowed; i++)
            allowed = fnmatch (ctx->config.allow_hosts [i], hostname, FNM_CASEFOLD) == 0;
        if (!allowed) {
            if (wrk_jobs_log_budget (self))
                mdl_warn ("Refused %s: host %s matches no --allow-hosts glob; nacked",
                          message_id, hostname);
            wrk_jobs_queue (self, WRK_QUEUE_NACK, WRK_NACK_HOST_NOT_ALLOWED, delivery->delivery_id);
            ctx->stats.nacked++;
            return 0;
        }
    }

    wrk_job_t *held = zhashx_lookup (self->by_delivery, &delivery->delivery_id);
    if (held && streq (wrk_job_message_id (held), message_id)) {
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
                  wrk_job_message_id (held));
        if (wrk_job_final (held) != WRK_FINAL_NONE)
            wrk_jobs_remove (self, held);  //  Its ACK/NACK would now hit the new message
        else {
            zhashx_delete (self->by_delivery, wrk_job_delivery_key (held));
            wrk_job_drop_lease (held, ctx);
        }
    }
    held = zhashx_lookup (self->by_message, message_id);
    if (held && wrk_job_final (held) == WRK_FINAL_NACK) {
        wrk_jobs_remove (self, held);       //  The broker took it back: start over
        held = NULL;
    }
    if (held) {
        if (wrk_job_delivery_id (held)
        &&  zhashx_lookup (self->by_delivery, wrk_job_delivery_key (held)) == held)
            zhashx_delete (self->by_delivery, wrk_job_delivery_key (held));
        wrk_job_redeliver (held, ctx, delivery);
        if (zhashx_insert (self->by_delivery, wrk_job_delivery_key (held), held) != 0) {
            //  Cannot happen (the id was looked up above), but never leave
            //  a lease unanswered: give it back
            wrk_jobs_remove (self, held);
            return s_refuse (self, delivery->delivery_id, "cannot index the redelivery");
        }
        return 0;
    }

    wrk_job_t *job = wrk_job_new (ctx, delivery, self->next_token);
    if (!job)
        return s_refuse (self, delivery->delivery_id, "out of memory");
    self->next_token++;
    if (zhashx_insert (self->by_message, (void *) wrk_job_message_id (job), job) != 0) {
        wrk_job_destroy (&job);
        return s_refuse (self, delivery->delivery_id, "cannot index the message");
    }
    if (zhashx_insert (self->by_delivery, wrk_job_delivery_key (job), job) != 0) {
        zhashx_delete (self->by_message, wrk_job_message_id (job));
        wrk_job_destroy (&job);
        return s_refuse (self, delivery->delivery_id, "cannot index the delivery");
    }
    wrk_job_start (job, ctx, delivery->steps);
    return 0;
}

static wrk_job_t *
s_find (wrk_jobs_t *self, const char *message_id, uint64_t token)
{
    wrk_job_t *job = message_id ? zhashx_lookup (self->by_message, message_id) : NULL;
    //  A finished job ignores late completions (e.g. of a killed restart)
    return job && wrk_job_token (job) == token && wrk_job_final (job) == WRK_FINAL_NONE
         ? job : NULL;
}

void
wrk_jobs_saved (wrk_jobs_t *self, const char *message_id, uint64_t token,
                bool ok, const char *error)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (job)
        wrk_job_saved (job, &self->ctx, ok, error);
}

void
wrk_jobs_restarted (wrk_jobs_t *self, const char *message_id, uint64_t token,
                    bool ok, const char *reason)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (job)
        wrk_job_restarted (job, &self->ctx, ok, reason);
}

void
wrk_jobs_verified (wrk_jobs_t *self, const char *message_id, uint64_t token,
                   bool ok, const char *reason)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (job)
        wrk_job_verified (job, &self->ctx, ok, reason);
}

void
wrk_jobs_healthy (wrk_jobs_t *self, const char *message_id, uint64_t token,
                  bool ok, const char *reason)
{
    wrk_job_t *job = s_find (self, message_id, token);
    if (job)
        wrk_job_healthy (job, &self->ctx, ok, reason);
}

void
wrk_jobs_lease_lost (wrk_jobs_t *self, const uint64_t *ids, size_t count)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (job)
            wrk_job_lease_lost (job, &self->ctx);
    }
}

#define REARM_RETRY_MS 100          //  After a failed heap insert

void
wrk_jobs_tick (wrk_jobs_t *self)
{
    int64_t now = mdl_clock_now (&self->ctx.clock);
    if (self->unarmed) {
        //  O(n), only after an allocation failure
        self->unarmed = false;
        for (wrk_job_t *job = zhashx_first (self->by_message); job;
             job = zhashx_next (self->by_message))
            if (!mdl_heap_contains (wrk_job_node (job)))
                wrk_jobs_rearm (self, job);
    }
    mdl_heap_node_t *node;
    while ((node = mdl_heap_top (self->heap)) && node->key <= now)
        //  Each call removes the job or re-keys it past now
        wrk_job_tick (wrk_job_of_node (node), &self->ctx, now);
}

int64_t
wrk_jobs_next_wake (wrk_jobs_t *self)
{
    mdl_heap_node_t *node = mdl_heap_top (self->heap);
    if (self->unarmed) {
        int64_t soon = mdl_clock_now (&self->ctx.clock) + REARM_RETRY_MS;
        return node && node->key < soon ? node->key : soon;
    }
    return node ? node->key : -1;
}

static void
s_flush_list (wrk_jobs_t *self, id_list_t *list, int kind, const char *reason, unsigned steps)
{
    wrk_effects_t *effects = &self->ctx.effects;
    for (size_t at = 0; at < list->size; at += MMP_MAX_IDS) {
        size_t count = list->size - at < MMP_MAX_IDS ? list->size - at : MMP_MAX_IDS;
        const uint64_t *ids = list->ids + at;
        switch (kind) {
            case 0: effects->progress (effects->arg, ids, count, steps); break;
            case 1: effects->ack (effects->arg, ids, count); break;
            case 2: effects->nack (effects->arg, ids, count, reason); break;
            default: effects->extend (effects->arg, ids, count); break;
        }
    }
    list->size = 0;
}

void
wrk_jobs_flush (wrk_jobs_t *self)
{
    //  Progress before the NACK it may precede, so the broker records the
    //  steps while the lease is still open.
    s_flush_list (self, &self->pending_started, 0, NULL, MMP_STEP_STARTED);
    s_flush_list (self, &self->pending_restart, 0, NULL, MMP_STEP_RESTART);
    s_flush_list (self, &self->pending_saved, 0, NULL, MMP_STEP_SAVE);
    s_flush_list (self, &self->pending_ack, 1, NULL, 0);
    for (int i = 0; i < WRK_NACK_COUNT; i++)
        s_flush_list (self, &self->pending_nack [i], 2, wrk_nack_name ((wrk_nack_t) i), 0);
    //  A job may have finished after its extend was queued: never extend
    //  a lease we are acking or nacking
    size_t kept = 0;
    for (size_t i = 0; i < self->pending_extend.size; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &self->pending_extend.ids [i]);
        if (job && wrk_job_final (job) == WRK_FINAL_NONE)
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
    if (!working) {
        //  Without the list, one pass that restarts after every removal:
        //  O(n^2) but bounded, and every working job still gets its NACK
        mdl_error ("out of memory nacking at shutdown; nacking one by one");
        size_t count = 0;
        bool again = true;
        while (again) {
            again = false;
            for (wrk_job_t *job = zhashx_first (self->by_message); job;
                 job = zhashx_next (self->by_message))
                if (wrk_job_final (job) == WRK_FINAL_NONE) {
                    wrk_job_shutdown (job, &self->ctx);
                    count++;
                    again = true;
                    break;
                }
        }
        return count;
    }
    size_t count = 0;
    for (wrk_job_t *job = zhashx_first (self->by_message); job;
         job = zhashx_next (self->by_message))
        if (wrk_job_final (job) == WRK_FINAL_NONE)     //  Finished ones wait for their reply
            working [count++] = job;
    for (size_t i = 0; i < count; i++)
        wrk_job_shutdown (working [i], &self->ctx);
    free (working);
    return count;
}

size_t
wrk_jobs_resend (wrk_jobs_t *self)
{
    size_t count = 0;
    for (wrk_job_t *job = zhashx_first (self->by_message); job;
         job = zhashx_next (self->by_message)) {
        wrk_final_t final = wrk_job_final (job);
        if (wrk_job_progress_unconfirmed (job) || final == WRK_FINAL_ACK
        ||  final == WRK_FINAL_NACK) {
            wrk_job_resend (job, &self->ctx);
            count++;
        }
    }
    return count;
}

//  Settle the ACK or NACK of each id: any verdict ends it.
static void
s_confirm_final (wrk_jobs_t *self, wrk_final_t final, const uint64_t *ids, size_t count,
                 const char *verdict)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (job)
            wrk_job_confirm_final (job, &self->ctx, final, verdict);
    }
}

static void
s_confirm_progress (wrk_jobs_t *self, const uint64_t *ids, size_t count, bool ok)
{
    for (size_t i = 0; i < count; i++) {
        wrk_job_t *job = zhashx_lookup (self->by_delivery, &ids [i]);
        if (job)
            wrk_job_confirm_progress (job, &self->ctx, ok);
    }
}

void
wrk_jobs_reply (wrk_jobs_t *self, const mmp_msg_t *reply)
{
    switch (reply->command) {
        case MMP_EXTENDED: {
            int64_t now = mdl_clock_now (&self->ctx.clock);
            for (size_t i = 0; i < reply->id_count && reply->deadline_ms > 0; i++) {
                wrk_job_t *job = zhashx_lookup (self->by_delivery, &reply->ids [i]);
                if (job)
                    wrk_job_extended (job, now + reply->deadline_ms);
            }
            wrk_jobs_lease_lost (self, reply->stale, reply->stale_count);
            wrk_jobs_lease_lost (self, reply->unknown, reply->unknown_count);
            break;
        }
        case MMP_ACKED:
        case MMP_NACKED: {
            wrk_final_t final = reply->command == MMP_ACKED ? WRK_FINAL_ACK : WRK_FINAL_NACK;
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
    int64_t now = mdl_clock_now (&self->ctx.clock);
    mdl_info ("In-flight table: %zu messages working, %zu waiting for a reply, "
              "%zu done with a refused ack", wrk_jobs_size (self), self->finished, self->gone);
    for (wrk_job_t *job = zhashx_first (self->by_message); job;
         job = zhashx_next (self->by_message))
        wrk_job_dump (job, now);
    mdl_log_flush ();
}
