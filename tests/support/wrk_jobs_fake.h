/*  The test harness of test_wrk_job.c and test_wrk_jobs.c: a manual
    clock, scripted random numbers and recording effects around a real job
    table, so tests run with exact times and no sockets or threads. Each
    test file gets its own copy (static functions, one fake per file).
*/
#ifndef WRK_JOBS_FAKE_H_INCLUDED
#define WRK_JOBS_FAKE_H_INCLUDED

#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_log.h"
#include "wrk_jobs.h"

//  One recorded effect call.
typedef struct {
    char kind [16];             //  "extend", "ack", "nack", "progress", "save", "restart", "kill",
                                //  "verify", "health", "started" (PROGRESS [started])
    int64_t at;                 //  Clock when called
    uint64_t ids [16];          //  First ids of the call
    size_t count;               //  Ids in the call
    unsigned steps;             //  progress steps
    char reason [64];           //  nack reason
    uint64_t token;             //  save/restart/kill: job token
    bool replied;               //  ack/nack/progress: the broker's reply was given
    char attributes [128];      //  save: the job's attributes text, or ""
} call_t;

typedef struct {
    int64_t now;                //  The manual clock
    double randoms [16];        //  Scripted random values, cycled
    int random_count;
    int random_next;
    call_t calls [512];
    int call_count;
    int save_result;            //  Returned by the save effect
    int restart_result;         //  Returned by the restart effect
    bool with_verify;           //  s_new gives the table a verify effect
    bool with_health;           //  s_new gives the table a health effect
    bool silent_broker;         //  When set, s_flush does not answer ACK/NACK/PROGRESS
    bool hold_started;          //  When set, s_flush does not answer PROGRESS [started] either
} fake_t;

static fake_t *fake;

static inline call_t *
s_record (const char *kind, const uint64_t *ids, size_t count)
{
    cr_assert_lt (fake->call_count, 512);
    call_t *call = &fake->calls [fake->call_count++];
    memset (call, 0, sizeof *call);
    snprintf (call->kind, sizeof call->kind, "%s", kind);
    call->at = fake->now;
    call->count = count;
    for (size_t i = 0; i < count && i < 16; i++)
        call->ids [i] = ids [i];
    return call;
}

static inline void s_extend (void *arg, const uint64_t *ids, size_t count) { (void) arg; s_record ("extend", ids, count); }
static inline void s_ack (void *arg, const uint64_t *ids, size_t count) { (void) arg; s_record ("ack", ids, count); }
static inline void
s_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    (void) arg;
    snprintf (s_record ("nack", ids, count)->reason, 64, "%s", reason);
}
static inline void
s_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    (void) arg;
    //  PROGRESS [started] is recorded apart, so counts of finished steps
    //  read as before the restart was announced
    s_record (steps == MMP_STEP_STARTED ? "started" : "progress", ids, count)->steps = steps;
}
static inline int
s_save (void *arg, const wrk_job_t *job)
{
    (void) arg;
    uint64_t id = wrk_job_delivery_id (job);
    call_t *call = s_record ("save", &id, 1);
    call->token = wrk_job_token (job);
    size_t size;
    const char *attributes = wrk_job_attributes (job, &size);
    if (attributes)
        snprintf (call->attributes, sizeof call->attributes, "%.*s", (int) size, attributes);
    return fake->save_result;
}
static inline int
s_restart (void *arg, const wrk_job_t *job)
{
    (void) arg;
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("restart", &id, 1)->token = wrk_job_token (job);
    return fake->restart_result;
}
static inline void
s_kill (void *arg, const wrk_job_t *job)
{
    (void) arg;
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("kill", &id, 1)->token = wrk_job_token (job);
}

static inline int
s_verify (void *arg, const wrk_job_t *job)
{
    (void) arg;
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("verify", &id, 1)->token = wrk_job_token (job);
    return 0;
}
static inline int
s_health (void *arg, const wrk_job_t *job)
{
    (void) arg;
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("health", &id, 1)->token = wrk_job_token (job);
    return 0;
}

static inline double
s_random (void *arg)
{
    (void) arg;
    double value = fake->randoms [fake->random_next % fake->random_count];
    fake->random_next++;
    return value;
}

//  A table with verify and/or health effects (recorded as "verify" and
//  "health"; their outcomes are given with wrk_jobs_verified/_healthy).
static inline wrk_jobs_t *
s_new_with (wrk_config_t *config, bool verify, bool health)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    fake = calloc (1, sizeof *fake);
    fake->randoms [0] = 0.5;
    fake->random_count = 1;
    wrk_effects_t effects = { NULL, s_extend, s_ack, s_nack, s_progress,
                              s_save, s_restart, s_kill, NULL, NULL,
                              verify ? s_verify : NULL, health ? s_health : NULL };
    mdl_random_t random = { s_random, NULL };
    wrk_jobs_t *jobs = wrk_jobs_new (config, &effects, mdl_clock_manual (&fake->now), random);
    cr_assert_not_null (jobs);
    return jobs;
}

static inline wrk_jobs_t *
s_new (wrk_config_t *config)
{
    return s_new_with (config, false, false);
}

static inline void
s_end (wrk_jobs_t **jobs)
{
    wrk_jobs_destroy (jobs);
    wrk_jobs_destroy (jobs);
    cr_assert_null (*jobs);
    free (fake);
    fake = NULL;
}

//  The broker's reply to one recorded call: ids in ok, stale or unknown.
static inline void
s_reply_call (wrk_jobs_t *jobs, call_t *call, const char *verdict)
{
    mmp_command_t command = strcmp (call->kind, "ack") == 0 ? MMP_ACKED
                          : strcmp (call->kind, "nack") == 0 ? MMP_NACKED : MMP_PROGRESSED;
    size_t count = call->count < 16 ? call->count : 16;
    mmp_msg_t reply;
    memset (&reply, 0, sizeof reply);
    reply.command = command;
    reply.deadline_ms = -1;
    if (strcmp (verdict, "ok") == 0) {
        reply.ids = call->ids;
        reply.id_count = count;
    }
    else
    if (strcmp (verdict, "stale") == 0) {
        reply.stale = call->ids;
        reply.stale_count = count;
    }
    else {
        reply.unknown = call->ids;
        reply.unknown_count = count;
    }
    call->replied = true;
    wrk_jobs_reply (jobs, &reply);
}

//  Flush like the loop, and unless the broker is silent answer every new
//  ACK, NACK and PROGRESS with ok, as a broker would.
//  PROGRESS [started] is answered ok even by a silent broker (unless
//  fake->hold_started): a silent broker is about confirmations of finished
//  work. Like the loop, which flushes after the handler of each reply,
//  what the replies caused is flushed (and answered) too.
static inline void
s_flush (wrk_jobs_t *jobs)
{
    for (int round = 0; round < 8; round++) {
        wrk_jobs_flush (jobs);
        int before = fake->call_count;
        bool answered = false;
        for (int i = 0; i < before; i++) {
            call_t *call = &fake->calls [i];
            bool started = strcmp (call->kind, "started") == 0;
            if (call->replied || (started && fake->hold_started)
            ||  (!started && fake->silent_broker))
                continue;
            if (started || strcmp (call->kind, "ack") == 0 || strcmp (call->kind, "nack") == 0
            ||  strcmp (call->kind, "progress") == 0) {
                s_reply_call (jobs, call, "ok");
                answered = true;
            }
        }
        if (!answered)
            break;
    }
}

//  Run the loop's part by hand: advance to `until` waking exactly when the
//  core asks, ticking and flushing like the real loop.
static inline void
s_run_until (wrk_jobs_t *jobs, int64_t until)
{
    while (true) {
        int64_t wake = wrk_jobs_next_wake (jobs);
        if (wake < 0 || wake > until)
            break;
        if (wake > fake->now)
            fake->now = wake;
        wrk_jobs_tick (jobs);
        s_flush (jobs);
    }
    fake->now = until;
}

static char s_ids [64][37];

static inline void
s_deliver (wrk_jobs_t *jobs, uint64_t delivery_id, int index, unsigned steps, int64_t deadline_ms)
{
    snprintf (s_ids [index], 37, "00000000-0000-4000-8000-%012d", index);
    char instance [32], host [64];
    snprintf (instance, sizeof instance, "cattle-%04d", index);
    snprintf (host, sizeof host, "cattle-%04d.example.net", index);
    mmp_delivery_t delivery = {
        .delivery_id = delivery_id, .attempt = 1, .deadline_ms = deadline_ms, .steps = steps,
        .message = { .message_id = s_ids [index], .instance_name = instance, .hostname = host }
    };
    cr_assert_eq (wrk_jobs_deliver (jobs, &delivery), 0);
    s_flush (jobs);
}

static inline int
s_count (const char *kind)
{
    int n = 0;
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0)
            n++;
    return n;
}

static inline call_t *
s_find (const char *kind, int nth)
{
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0 && nth-- == 0)
            return &fake->calls [i];
    return NULL;
}

static inline int
s_index (const char *kind, int nth)
{
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0 && nth-- == 0)
            return i;
    return -1;
}

static inline uint64_t
s_token (const char *kind, int nth)
{
    call_t *call = s_find (kind, nth);
    cr_assert_not_null (call, "no %s call %d", kind, nth);
    return call->token;
}

static inline wrk_config_t
s_config (wrk_restart_mode_t mode)
{
    wrk_config_t config;
    wrk_config_defaults (&config);
    config.restart_mode = mode;
    config.ack_deadline_ms = 10000;
    return config;
}

#endif
