/*  Tests for wrk_job, the worker's state machine, with a manual clock,
    scripted random numbers and recording effects: no sockets, no threads,
    exact times.
*/
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_log.h"
#include "wrk_jobs.h"

//  One recorded effect call.
typedef struct {
    char kind [16];             //  "extend", "ack", "nack", "progress", "save", "restart", "kill"
    int64_t at;                 //  Clock when called
    uint64_t ids [16];          //  First ids of the call
    size_t count;               //  Ids in the call
    unsigned steps;             //  progress steps
    char reason [64];           //  nack reason
    uint64_t token;             //  save/restart/kill: job token
    bool replied;               //  ack/nack/progress: the broker's reply was given
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
    bool silent_broker;         //  When set, s_flush does not answer ACK/NACK/PROGRESS
} fake_t;

static fake_t *fake;

static call_t *
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

static void s_extend (void *arg, const uint64_t *ids, size_t count) { s_record ("extend", ids, count); }
static void s_ack (void *arg, const uint64_t *ids, size_t count) { s_record ("ack", ids, count); }
static void
s_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    snprintf (s_record ("nack", ids, count)->reason, 64, "%s", reason);
}
static void
s_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    s_record ("progress", ids, count)->steps = steps;
}
static int
s_save (void *arg, const wrk_job_t *job)
{
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("save", &id, 1)->token = wrk_job_token (job);
    return fake->save_result;
}
static int
s_restart (void *arg, const wrk_job_t *job)
{
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("restart", &id, 1)->token = wrk_job_token (job);
    return fake->restart_result;
}
static void
s_kill (void *arg, const wrk_job_t *job)
{
    uint64_t id = wrk_job_delivery_id (job);
    s_record ("kill", &id, 1)->token = wrk_job_token (job);
}

static double
s_random (void *arg)
{
    double value = fake->randoms [fake->random_next % fake->random_count];
    fake->random_next++;
    return value;
}

static wrk_jobs_t *
s_new (wrk_config_t *config)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    fake = calloc (1, sizeof *fake);
    fake->randoms [0] = 0.5;
    fake->random_count = 1;
    wrk_effects_t effects = { NULL, s_extend, s_ack, s_nack, s_progress,
                              s_save, s_restart, s_kill, NULL };
    mdl_random_t random = { s_random, NULL };
    wrk_jobs_t *jobs = wrk_jobs_new (config, &effects, mdl_clock_manual (&fake->now), random);
    cr_assert_not_null (jobs);
    return jobs;
}

static void
s_end (wrk_jobs_t **jobs)
{
    wrk_jobs_destroy (jobs);
    wrk_jobs_destroy (jobs);
    cr_assert_null (*jobs);
    free (fake);
    fake = NULL;
}

//  The broker's reply to one recorded call: ids in ok, stale or unknown.
static void
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
static void
s_flush (wrk_jobs_t *jobs)
{
    wrk_jobs_flush (jobs);
    if (fake->silent_broker)
        return;
    for (int i = 0; i < fake->call_count; i++) {
        call_t *call = &fake->calls [i];
        if (!call->replied && (strcmp (call->kind, "ack") == 0 || strcmp (call->kind, "nack") == 0
                               || strcmp (call->kind, "progress") == 0))
            s_reply_call (jobs, call, "ok");
    }
}

//  Run the loop's part by hand: advance to `until` waking exactly when the
//  core asks, ticking and flushing like the real loop.
static void
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

static void
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

static int
s_count (const char *kind)
{
    int n = 0;
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0)
            n++;
    return n;
}

static call_t *
s_find (const char *kind, int nth)
{
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0 && nth-- == 0)
            return &fake->calls [i];
    return NULL;
}

static int
s_index (const char *kind, int nth)
{
    for (int i = 0; i < fake->call_count; i++)
        if (strcmp (fake->calls [i].kind, kind) == 0 && nth-- == 0)
            return i;
    return -1;
}

static uint64_t
s_token (const char *kind, int nth)
{
    call_t *call = s_find (kind, nth);
    cr_assert_not_null (call, "no %s call %d", kind, nth);
    return call->token;
}

static wrk_config_t
s_config (wrk_restart_mode_t mode)
{
    wrk_config_t config;
    wrk_config_defaults (&config);
    config.restart_mode = mode;
    config.ack_deadline_ms = 10000;
    return config;
}

Test (wrk_job, save_and_restart_overlap_then_ack, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    config.restart_latency_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->randoms [0] = 0.5;        //  latency 500 ms, and 0.5 >= fail rate 0: success

    s_deliver (jobs, 7, 1, 0, 10000);
    //  The save started at t=0 while the restart is running (due at 500)
    cr_assert_eq (s_count ("save"), 1);
    cr_assert_eq (s_find ("save", 0)->at, 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), 500);

    fake->now = 300;
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 0, "acked before the restart finished");

    s_run_until (jobs, 600);
    cr_assert_eq (s_count ("ack"), 1);
    call_t *ack = s_find ("ack", 0);
    cr_assert_eq (ack->at, 500);
    cr_assert_eq (ack->ids [0], 7);
    //  PROGRESS [restart] went out, before the ACK
    cr_assert_eq (s_find ("progress", 0)->steps, MMP_STEP_RESTART);
    cr_assert_lt (s_index ("progress", 0), s_index ("ack", 0));
    cr_assert_eq (s_count ("extend"), 0);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
    s_end (&jobs);
}

Test (wrk_job, extends_every_period_in_one_batch, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.extend_every_ms = 2000;
    wrk_jobs_t *jobs = s_new (&config);

    //  Three messages delivered together, restarts taking 7 s
    for (int i = 0; i < 3; i++)
        s_deliver (jobs, 100 + (uint64_t) i, i, 0, 10000);
    cr_assert_eq (s_count ("restart"), 3);
    cr_assert_eq (s_count ("save"), 3);
    fake->now = 100;
    for (int i = 0; i < 3; i++)
        wrk_jobs_saved (jobs, s_ids [i], s_token ("save", i), true, NULL);
    s_flush (jobs);

    s_run_until (jobs, 7000);
    for (int i = 0; i < 3; i++)
        wrk_jobs_restarted (jobs, s_ids [i], s_token ("restart", i), true, NULL);
    s_flush (jobs);

    //  Extends at 2, 4 and 6 s: three EXTEND commands, each with all three ids
    cr_assert_eq (s_count ("extend"), 3);
    for (int i = 0; i < 3; i++) {
        call_t *extend = s_find ("extend", i);
        cr_assert_eq (extend->at, 2000 * (i + 1));
        cr_assert_eq (extend->count, 3);
    }
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_find ("ack", 0)->count, 3, "acks are batched");
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.extends, 9);
    cr_assert_eq (stats.acked, 3);
    s_end (&jobs);
}

Test (wrk_job, short_lease_extends_at_half_lease, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.extend_every_ms = 2000;
    config.extension_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 1, 1, 0, 1000);
    s_run_until (jobs, 2100);
    //  Every 500 ms: 500, 1000, 1500, 2000
    cr_assert_eq (s_count ("extend"), 4);
    s_end (&jobs);
}

Test (wrk_job, ack_only_after_both_save_last, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 9, 1, 0, 10000);
    fake->now = 100;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 0);
    cr_assert_eq (s_count ("progress"), 1, "restart progress is reported at once");
    cr_assert_eq (s_find ("progress", 0)->at, 100);
    s_run_until (jobs, 2500);
    cr_assert_eq (s_count ("extend"), 1, "still extending while the save runs");
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_find ("ack", 0)->at, 2500);
    cr_assert_eq (s_count ("nack"), 0);
    s_end (&jobs);
}

Test (wrk_job, restart_failure_nacks_after_save_progress, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    config.fail_rate = 0.25;
    wrk_jobs_t *jobs = s_new (&config);
    fake->randoms [0] = 0.4;        //  latency 400 ms
    fake->randoms [1] = 0.1;        //  < 0.25: fails
    fake->random_count = 2;
    s_deliver (jobs, 5, 1, 0, 10000);
    fake->now = 50;
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_run_until (jobs, 1000);
    cr_assert_eq (s_count ("ack"), 0);
    cr_assert_eq (s_count ("nack"), 1);
    call_t *nack = s_find ("nack", 0);
    cr_assert_str_eq (nack->reason, "restart_failed");
    cr_assert_eq (nack->at, 400);
    //  The save was done: PROGRESS [save] precedes the NACK, no restart progress
    cr_assert_eq (s_count ("progress"), 1);
    cr_assert_eq (s_find ("progress", 0)->steps, MMP_STEP_SAVE);
    cr_assert_lt (s_index ("progress", 0), s_index ("nack", 0));
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_end (&jobs);
}

Test (wrk_job, save_failure_retried_with_backoff_never_restarts_twice, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.save_retry_base_ms = 200;
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 3, 1, 0, 10000);
    fake->now = 10;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), false, "disk I/O error");
    s_flush (jobs);
    cr_assert_eq (wrk_jobs_next_wake (jobs), 210);
    s_run_until (jobs, 300);
    cr_assert_eq (s_count ("save"), 2);
    cr_assert_eq (s_find ("save", 1)->at, 210);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 1), false, "disk I/O error");
    s_run_until (jobs, 1000);
    cr_assert_eq (s_count ("save"), 3);
    cr_assert_eq (s_find ("save", 2)->at, 700, "second retry after 400 ms");
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 2), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_count ("restart"), 1, "a save failure never restarts again");
    cr_assert_eq (s_count ("nack"), 0);
    s_end (&jobs);
}

Test (wrk_job, save_failing_forever_is_bounded, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.save_attempts = 3;
    wrk_jobs_t *jobs = s_new (&config);
    fake->save_result = -1;         //  The save cannot even be queued
    s_deliver (jobs, 4, 1, 0, 10000);
    fake->now = 10;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    s_run_until (jobs, 60000);
    cr_assert_eq (s_count ("save"), 3);
    cr_assert_eq (s_count ("nack"), 1);
    cr_assert_str_eq (s_find ("nack", 0)->reason, "save_failed");
    cr_assert_eq (s_find ("nack", 0)->at, 200 + 400);
    cr_assert_eq (s_find ("progress", 0)->steps, MMP_STEP_RESTART);
    cr_assert_lt (s_index ("progress", 0), s_index ("nack", 0));
    cr_assert_eq (s_count ("restart"), 1);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1, "nothing left extending");
    s_end (&jobs);
}

Test (wrk_job, redelivery_skips_finished_steps, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 11, 1, MMP_STEP_RESTART, 10000);
    cr_assert_eq (s_count ("restart"), 0);
    cr_assert_eq (s_count ("save"), 1);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);

    s_deliver (jobs, 12, 2, MMP_STEP_SAVE, 10000);
    cr_assert_eq (s_count ("save"), 1);
    cr_assert_eq (s_count ("restart"), 1);
    wrk_jobs_restarted (jobs, s_ids [2], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 2);

    s_deliver (jobs, 13, 3, MMP_STEP_SAVE | MMP_STEP_RESTART, 10000);
    cr_assert_eq (s_count ("ack"), 3, "nothing left to do: acked at once");
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.restarts_skipped, 2);
    s_end (&jobs);
}

Test (wrk_job, hanging_restart_killed_at_timeout, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.restart_timeout_ms = 5000;
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 21, 1, 0, 10000);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_run_until (jobs, 20000);
    cr_assert_eq (s_count ("kill"), 1);
    cr_assert_eq (s_find ("kill", 0)->at, 5000);
    cr_assert_eq (s_count ("nack"), 1);
    cr_assert_str_eq (s_find ("nack", 0)->reason, "restart_timeout");
    cr_assert_eq (s_count ("extend"), 2, "extends stopped at the timeout");
    //  The killed child's exit arrives late: ignored
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), false, "killed");
    s_flush (jobs);
    cr_assert_eq (s_count ("nack"), 1);
    s_end (&jobs);
}

Test (wrk_job, no_job_extends_forever, .timeout = 10)
{
    //  The tutorial's deadlock: a step that never completes. Here the save
    //  is accepted and never answered; the restart succeeded.
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.max_job_ms = 60000;
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 31, 1, 0, 10000);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_run_until (jobs, 3600000);
    cr_assert_eq (s_count ("nack"), 1);
    call_t *nack = s_find ("nack", 0);
    cr_assert_str_eq (nack->reason, "job_timeout");
    cr_assert_eq (nack->at, 60000);
    cr_assert_eq (s_count ("extend"), 29, "extends at 2..58 s, then none");
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
    //  A late save answer changes nothing
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 0);
    s_end (&jobs);
}

Test (wrk_job, restart_that_cannot_start_is_nacked, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    fake->restart_result = -1;
    s_deliver (jobs, 41, 1, 0, 10000);
    cr_assert_eq (s_count ("nack"), 1);
    cr_assert_str_eq (s_find ("nack", 0)->reason, "restart_failed");
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_end (&jobs);
}

Test (wrk_job, stale_completion_ignored_and_inflight_redelivery_continues, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 51, 1, 0, 10000);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0) + 1000, true, NULL);
    s_flush (jobs);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 0, "a completion with a wrong token counted");

    //  The same message under a new lease while still held: no new steps
    s_deliver (jobs, 52, 1, 0, 10000);
    cr_assert_eq (s_count ("restart"), 1);
    cr_assert_eq (s_count ("save"), 1);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_find ("ack", 0)->ids [0], 52, "acked under the new lease");
    s_end (&jobs);
}

Test (wrk_job, lease_lost_stops_extending, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 61, 1, 0, 10000);
    s_run_until (jobs, 2500);
    cr_assert_eq (s_count ("extend"), 1);
    uint64_t id = 61;
    wrk_jobs_lease_lost (jobs, &id, 1);
    s_run_until (jobs, 9000);
    cr_assert_eq (s_count ("extend"), 1);
    s_end (&jobs);
}

Test (wrk_job, shutdown_nacks_all_after_progress, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 71, 1, 0, 10000);
    s_deliver (jobs, 72, 2, 0, 10000);
    s_deliver (jobs, 73, 3, 0, 10000);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [2], s_token ("save", 1), true, NULL);
    cr_assert_eq (wrk_jobs_nack_all (jobs), 3);
    s_flush (jobs);
    cr_assert_eq (s_count ("kill"), 2, "running restarts are killed");
    cr_assert_eq (s_count ("nack"), 1);
    call_t *nack = s_find ("nack", 0);
    cr_assert_eq (nack->count, 3);
    cr_assert_str_eq (nack->reason, "shutdown");
    cr_assert_eq (s_count ("progress"), 2);
    cr_assert_lt (s_index ("progress", 1), s_index ("nack", 0));
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_end (&jobs);
}

Test (wrk_job, reissued_delivery_id_drops_the_old_lease, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    s_deliver (jobs, 81, 1, 0, 10000);
    s_deliver (jobs, 81, 2, 0, 10000);     //  Same id, another message
    cr_assert_eq (wrk_jobs_size (jobs), 2);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 0, "the old job must not ack the new lease");
    cr_assert_eq (s_count ("progress"), 0);
    wrk_jobs_restarted (jobs, s_ids [2], s_token ("restart", 1), true, NULL);
    wrk_jobs_saved (jobs, s_ids [2], s_token ("save", 1), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_find ("ack", 0)->ids [0], 81);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_end (&jobs);
}

//  --------------------------------------------------------------------------
//  Confirmation: nothing is done until the broker's reply says so

//  Deliver and finish one message at t=0 in simulate mode (restart 0 ms).
static void
s_done_at_zero (wrk_jobs_t *jobs, uint64_t delivery_id, int index)
{
    fake->randoms [0] = 0;          //  latency 0, and 0 >= fail rate 0: success
    s_deliver (jobs, delivery_id, index, 0, 10000);
    int nth = s_count ("save") - 1;
    wrk_jobs_saved (jobs, s_ids [index], s_token ("save", nth), true, NULL);
    s_run_until (jobs, 0);
}

Test (wrk_job, ack_resent_until_acked, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    config.confirm_timeout_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_done_at_zero (jobs, 7, 1);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (wrk_jobs_size (jobs), 0, "a job waiting for ACKED is not working");
    size_t acks = 0, nacks = 0;
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, &acks, &nacks), 1);
    cr_assert_eq (acks, 1);
    cr_assert_eq (nacks, 0);

    //  No reply: the ACK (and the PROGRESS before it) go again every second
    s_run_until (jobs, 999);
    cr_assert_eq (s_count ("ack"), 1);
    s_run_until (jobs, 2500);
    cr_assert_eq (s_count ("ack"), 3);
    cr_assert_eq (s_find ("ack", 1)->at, 1000);
    cr_assert_eq (s_find ("ack", 2)->at, 2000);
    cr_assert_eq (s_find ("ack", 2)->ids [0], 7);
    cr_assert_eq (s_count ("progress"), 3, "unconfirmed PROGRESS [restart] resent too");
    cr_assert_lt (s_index ("progress", 2), s_index ("ack", 2), "progress before the ack");
    cr_assert_eq (s_count ("extend"), 0, "a finished job is never extended");

    //  ACKED ok ends it: no more resends, nothing left
    s_reply_call (jobs, s_find ("ack", 2), "ok");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
    s_run_until (jobs, 60000);
    cr_assert_eq (s_count ("ack"), 3);
    //  A late reply to an earlier copy changes nothing
    s_reply_call (jobs, s_find ("ack", 0), "stale");
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.acked, 1);
    cr_assert_eq (stats.acks_confirmed, 1);
    cr_assert_eq (stats.acks_refused, 0);
    cr_assert_eq (stats.resent, 2);
    s_end (&jobs);
}

Test (wrk_job, resend_after_rehello_sends_progress_then_acks, .timeout = 10)
{
    //  The broker restarted: our PROGRESS and ACK got ERROR (no reply of
    //  their kind). After the new WELCOME the loop calls wrk_jobs_resend.
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    config.confirm_timeout_ms = 5000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_done_at_zero (jobs, 7, 1);
    s_done_at_zero (jobs, 8, 2);
    cr_assert_eq (s_count ("ack"), 2);
    fake->now = 300;
    cr_assert_eq (wrk_jobs_resend (jobs), 2);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 3);
    call_t *ack = s_find ("ack", 2);
    cr_assert_eq (ack->count, 2, "resent acks are batched");
    cr_assert_eq (ack->at, 300);
    cr_assert_eq (s_count ("progress"), 3);
    cr_assert_eq (s_find ("progress", 2)->count, 2);
    cr_assert_lt (s_index ("progress", 2), s_index ("ack", 2));
    //  The timeout counts from the resend
    s_run_until (jobs, 5299);
    cr_assert_eq (s_count ("ack"), 3);
    fake->silent_broker = false;
    s_flush (jobs);             //  The broker answers everything ok
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
    cr_assert_eq (wrk_jobs_resend (jobs), 0, "nothing left to resend");
    s_end (&jobs);
}

Test (wrk_job, stale_or_unknown_ack_is_final, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_done_at_zero (jobs, 7, 1);
    s_done_at_zero (jobs, 8, 2);
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 2);
    s_reply_call (jobs, s_find ("ack", 0), "stale");
    s_reply_call (jobs, s_find ("ack", 1), "unknown");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.acks_refused, 2);
    cr_assert_eq (stats.acks_confirmed, 0);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    //  The broker delivers message 1 again: acked at once, no step again
    fake->now = 3000;
    s_deliver (jobs, 9, 1, 0, 10000);
    cr_assert_eq (s_count ("ack"), 3);
    cr_assert_eq (s_find ("ack", 2)->ids [0], 9);
    cr_assert_eq (s_count ("save"), 2, "a done message was saved again");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 1);
    s_reply_call (jobs, s_find ("ack", 2), "ok");
    //  Message 2 is forgotten at its give-up time (lease 10 s + 10 s)
    s_run_until (jobs, 60000);
    cr_assert_eq (s_count ("ack"), 3, "a stale verdict is an answer: no resend");
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1, "a refused ack is remembered forever");
    s_deliver (jobs, 10, 2, 0, 10000);
    cr_assert_eq (s_count ("save"), 3, "after the give-up time it is new work");
    s_end (&jobs);
}

Test (wrk_job, unanswered_ack_is_dropped_after_the_lease_certainly_ended, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.extend_every_ms = 2000;
    config.confirm_timeout_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 7, 1, 0, 10000);
    s_run_until (jobs, 3000);               //  extended at 2000: lease to 12000
    cr_assert_eq (s_count ("extend"), 1);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    //  Kept until the lease end (12000) plus one ack deadline (10000)
    s_run_until (jobs, 21999);
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 1);
    s_run_until (jobs, 22000);
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0, "kept forever");
    cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
    cr_assert_eq (s_count ("ack"), 19, "sent at 3000, resent at 4000..21000");
    cr_assert_eq (s_count ("extend"), 1, "a job waiting for ACKED was extended");
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.acks_abandoned, 1);
    //  The broker's late answer finds nothing
    s_reply_call (jobs, s_find ("ack", 0), "ok");
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.acks_confirmed, 0);
    s_end (&jobs);
}

Test (wrk_job, progress_resent_until_every_copy_is_answered, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.extend_every_ms = 100000;        //  No extends in the way
    config.confirm_timeout_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 9, 1, 0, 10000);
    fake->now = 100;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("progress"), 1);
    s_run_until (jobs, 1100);
    cr_assert_eq (s_count ("progress"), 2);
    cr_assert_eq (s_find ("progress", 1)->steps, MMP_STEP_RESTART);
    s_run_until (jobs, 2100);
    cr_assert_eq (s_count ("progress"), 3, "resent while unanswered");
    s_reply_call (jobs, s_find ("progress", 2), "ok");
    s_run_until (jobs, 9000);
    cr_assert_eq (s_count ("progress"), 3, "resent after it was confirmed");
    //  Late answers to the earlier copies change nothing
    s_reply_call (jobs, s_find ("progress", 0), "ok");
    s_reply_call (jobs, s_find ("progress", 1), "ok");
    s_run_until (jobs, 9500);
    cr_assert_eq (s_count ("progress"), 3);
    cr_assert_eq (s_count ("ack"), 0, "still saving");
    //  A stale PROGRESSED also ends the resends (the lease is gone)
    s_deliver (jobs, 10, 2, 0, 10000);
    wrk_jobs_restarted (jobs, s_ids [2], s_token ("restart", 1), true, NULL);
    s_flush (jobs);
    s_reply_call (jobs, s_find ("progress", 3), "stale");
    s_run_until (jobs, 20000);
    cr_assert_eq (s_count ("progress"), 4);
    s_end (&jobs);
}

Test (wrk_job, nack_resent_until_nacked, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.confirm_timeout_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 5, 1, 0, 10000);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), false, "exit 3");
    s_flush (jobs);
    cr_assert_eq (s_count ("nack"), 1);
    size_t acks, nacks;
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, &acks, &nacks), 1);
    cr_assert_eq (nacks, 1);
    s_run_until (jobs, 1000);
    cr_assert_eq (s_count ("nack"), 2);
    cr_assert_str_eq (s_find ("nack", 1)->reason, "restart_failed", "reason kept");
    s_reply_call (jobs, s_find ("nack", 1), "ok");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    s_run_until (jobs, 30000);
    cr_assert_eq (s_count ("nack"), 2);
    s_end (&jobs);
}

Test (wrk_job, redelivery_while_ack_unconfirmed_acks_the_new_lease, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_done_at_zero (jobs, 7, 1);
    cr_assert_eq (s_count ("save"), 1);
    //  Our ACK never counted; the lease ran out and the message came back
    fake->now = 500;
    s_deliver (jobs, 8, 1, 0, 10000);
    cr_assert_eq (s_count ("save"), 1, "a done message was saved a second time");
    cr_assert_eq (s_count ("ack"), 2);
    cr_assert_eq (s_find ("ack", 1)->ids [0], 8);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_reply_call (jobs, s_find ("ack", 0), "stale");      //  The old lease
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 1, "the new ack was settled by the old reply");
    s_reply_call (jobs, s_find ("ack", 1), "ok");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    s_end (&jobs);
}

Test (wrk_job, redelivery_while_nack_unconfirmed_starts_over, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 5, 1, 0, 10000);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), false, "exit 3");
    s_flush (jobs);
    cr_assert_eq (s_count ("nack"), 1);
    s_deliver (jobs, 6, 1, 0, 10000);
    cr_assert_eq (s_count ("restart"), 2, "the next attempt restarts again");
    cr_assert_eq (wrk_jobs_size (jobs), 1);
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    s_end (&jobs);
}

Test (wrk_job, reissued_id_never_resends_the_old_ack, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.confirm_timeout_ms = 1000;
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 81, 1, MMP_STEP_RESTART, 10000);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    //  A broker that lost its state issues 81 again for another message
    s_deliver (jobs, 81, 2, 0, 10000);
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, NULL, NULL), 0);
    s_run_until (jobs, 5000);
    cr_assert_eq (s_count ("ack"), 1, "the old ack would hit the new message");
    s_end (&jobs);
}

Test (wrk_job, shutdown_keeps_unconfirmed_acks_and_nacks_only_working_jobs, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    fake->silent_broker = true;
    s_deliver (jobs, 71, 1, MMP_STEP_RESTART, 10000);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_deliver (jobs, 72, 2, 0, 10000);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (wrk_jobs_size (jobs), 1);
    cr_assert_eq (wrk_jobs_nack_all (jobs), 1, "only the working job is nacked");
    s_flush (jobs);
    cr_assert_eq (s_count ("nack"), 1);
    cr_assert_eq (s_find ("nack", 0)->count, 1);
    cr_assert_eq (s_find ("nack", 0)->ids [0], 72);
    size_t acks, nacks;
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, &acks, &nacks), 2);
    cr_assert_eq (acks, 1, "the acked job must not be forgotten at shutdown");
    cr_assert_eq (nacks, 1);
    cr_assert_eq (wrk_jobs_size (jobs), 0);
    s_reply_call (jobs, s_find ("ack", 0), "ok");
    cr_assert_eq (wrk_jobs_unconfirmed (jobs, &acks, &nacks), 1);
    cr_assert_eq (acks, 0);
    s_end (&jobs);
}
