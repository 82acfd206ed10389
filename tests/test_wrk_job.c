/*  Tests for wrk_job, one message's state machine (its two steps, their
    timers, retries, ceilings and the ACK/NACK it ends with), driven through
    its table with a manual clock, scripted random numbers and recording
    effects: no sockets, no threads, exact times.
*/
#include "support/wrk_jobs_fake.h"

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

//  The attributes of a request go to the save as the publisher's bytes,
//  unchanged (spacing and number spelling included).
Test (wrk_job, attributes_reach_the_save_as_json_text, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_SIMULATE);
    wrk_jobs_t *jobs = s_new (&config);
    //  A span that is not null-terminated, as the decoder hands it out
    char *attributes = strdup ("{\"zone\":\"eu-1\", \"n\":0.30000000000000004}XYZ");
    cr_assert_not_null (attributes);
    mmp_delivery_t delivery = {
        .delivery_id = 5, .attempt = 2, .deadline_ms = 10000,
        .message = { .message_id = "00000000-0000-4000-8000-000000000005",
                     .instance_name = "cattle-5", .hostname = "cattle-5.example.net",
                     .attributes = attributes, .attributes_size = strlen (attributes) - 3 }
    };
    cr_assert_eq (wrk_jobs_deliver (jobs, &delivery), 0);
    memset (attributes, 'x', strlen (attributes));   //  The job keeps its own copy
    free (attributes);
    s_deliver (jobs, 6, 6, 0, 10000);   //  One without attributes
    cr_assert_eq (s_count ("save"), 2);
    cr_assert_str_eq (s_find ("save", 0)->attributes, "{\"zone\":\"eu-1\", \"n\":0.30000000000000004}");
    cr_assert_str_eq (s_find ("save", 1)->attributes, "");
    s_end (&jobs);
}

//  --------------------------------------------------------------------------
//  Restart safety: the start is recorded before the command runs, an
//  in-doubt delivery is verified first, a restart is followed by health.

//  Deliver message index as delivery_id, marked in doubt or not.
static void
s_deliver_doubt (wrk_jobs_t *jobs, uint64_t delivery_id, int index, bool in_doubt)
{
    snprintf (s_ids [index], 37, "00000000-0000-4000-8000-%012d", index);
    mmp_delivery_t delivery = {
        .delivery_id = delivery_id, .attempt = 2, .deadline_ms = 10000, .in_doubt = in_doubt,
        .message = { .message_id = s_ids [index], .instance_name = "cattle-0001",
                     .hostname = "cattle-0001.example.net" }
    };
    cr_assert_eq (wrk_jobs_deliver (jobs, &delivery), 0);
    s_flush (jobs);
}

Test (wrk_job, restart_runs_only_after_the_start_is_recorded, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new (&config);
    fake->hold_started = true;
    s_deliver (jobs, 7, 1, 0, 10000);
    //  PROGRESS [started] is out, the save runs, the command does not yet
    cr_assert_eq (s_count ("started"), 1);
    cr_assert_eq (s_find ("started", 0)->steps, MMP_STEP_STARTED);
    cr_assert_eq (s_find ("started", 0)->ids [0], 7);
    cr_assert_eq (s_count ("save"), 1);
    cr_assert_eq (s_count ("restart"), 0, "restart ran before the broker recorded its start");
    //  Waiting, the lease is extended and the start resent until answered
    s_run_until (jobs, 2500);
    cr_assert_eq (s_count ("restart"), 0);
    cr_assert_geq (s_count ("extend"), 1);
    cr_assert_geq (s_count ("started"), 2, "unanswered start not resent");
    //  The broker's ok: the command runs now
    fake->now = 2600;
    s_reply_call (jobs, s_find ("started", 0), "ok");
    s_flush (jobs);
    cr_assert_eq (s_count ("restart"), 1);
    cr_assert_eq (s_find ("restart", 0)->at, 2600);
    fake->hold_started = false;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_count ("restart"), 1);
    s_end (&jobs);
}

Test (wrk_job, stale_start_answer_runs_no_restart, .timeout = 10)
{
    const char *verdicts [] = { "stale", "unknown" };
    for (int v = 0; v < 2; v++) {
        wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
        wrk_jobs_t *jobs = s_new (&config);
        fake->hold_started = true;
        s_deliver (jobs, 9, 1, 0, 10000);
        cr_assert_eq (s_count ("started"), 1);
        //  The broker lost the lease (e.g. restarted before its ATTEMPT
        //  was durable): the restart must not run under no lease
        s_reply_call (jobs, s_find ("started", 0), verdicts [v]);
        s_flush (jobs);
        cr_assert_eq (s_count ("restart"), 0, "%s: restart ran", verdicts [v]);
        cr_assert_eq (s_count ("ack") + s_count ("nack"), 0, "%s: lease answered", verdicts [v]);
        cr_assert_eq (wrk_jobs_size (jobs), 0, "%s: job kept", verdicts [v]);
        wrk_stats_t stats;
        wrk_jobs_stats (jobs, &stats);
        cr_assert_eq (stats.starts_refused, 1);
        //  The save's late outcome is ignored
        wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
        s_run_until (jobs, 30000);
        cr_assert_eq (s_count ("restart") + s_count ("ack") + s_count ("extend"), 0);
        cr_assert_eq (wrk_jobs_next_wake (jobs), -1);
        s_end (&jobs);
    }
}

Test (wrk_job, in_doubt_verified_is_not_restarted, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    wrk_jobs_t *jobs = s_new_with (&config, true, false);
    s_deliver_doubt (jobs, 11, 1, true);
    //  Verify first; no start announced, no restart
    cr_assert_eq (s_count ("verify"), 1);
    cr_assert_eq (s_count ("started") + s_count ("restart"), 0);
    fake->now = 300;
    wrk_jobs_verified (jobs, s_ids [1], s_token ("verify", 0), true, NULL);
    s_flush (jobs);
    //  The restart counts as done: PROGRESS [restart], then ACK once saved
    cr_assert_eq (s_count ("progress"), 1);
    cr_assert_eq (s_find ("progress", 0)->steps, MMP_STEP_RESTART);
    cr_assert_eq (s_count ("ack"), 0);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_count ("restart") + s_count ("started"), 0, "restarted although verified");
    wrk_stats_t stats;
    wrk_jobs_stats (jobs, &stats);
    cr_assert_eq (stats.verified, 1);
    cr_assert_eq (stats.restarted, 0);
    s_end (&jobs);
}

Test (wrk_job, in_doubt_verify_failure_restarts, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.restart_timeout_ms = 5000;
    wrk_jobs_t *jobs = s_new_with (&config, true, false);
    s_deliver_doubt (jobs, 12, 1, true);
    wrk_jobs_verified (jobs, s_ids [1], s_token ("verify", 0), false, "exit 1");
    s_flush (jobs);
    cr_assert_eq (s_count ("started"), 1, "no start announced after a failed verify");
    cr_assert_eq (s_count ("restart"), 1);
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    s_end (&jobs);

    //  A verify that hangs is killed at the restart timeout and counts as "not restarted"
    jobs = s_new_with (&config, true, false);
    s_deliver_doubt (jobs, 13, 2, true);
    s_run_until (jobs, 5000);
    cr_assert_eq (s_count ("kill"), 1);
    cr_assert_eq (s_count ("restart"), 1);
    cr_assert_eq (s_find ("restart", 0)->at, 5000);
    s_end (&jobs);

    //  Not marked in doubt: no verify even with the effect
    jobs = s_new_with (&config, true, false);
    s_deliver_doubt (jobs, 14, 3, false);
    cr_assert_eq (s_count ("verify"), 0);
    cr_assert_eq (s_count ("restart"), 1);
    s_end (&jobs);
}

Test (wrk_job, health_keeps_the_lease_until_healthy_or_timeout, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.health_interval_ms = 1000;
    config.health_timeout_ms = 4500;
    wrk_jobs_t *jobs = s_new_with (&config, false, true);
    s_deliver (jobs, 21, 1, 0, 10000);
    wrk_jobs_saved (jobs, s_ids [1], s_token ("save", 0), true, NULL);
    fake->now = 100;
    wrk_jobs_restarted (jobs, s_ids [1], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    //  Restart reported, health asked, not acked
    cr_assert_eq (s_find ("progress", 0)->steps, MMP_STEP_RESTART);
    cr_assert_eq (s_count ("health"), 1);
    cr_assert_eq (s_count ("ack"), 0);
    //  Two failed tries, one second apart, then healthy
    wrk_jobs_healthy (jobs, s_ids [1], s_token ("health", 0), false, "exit 1");
    s_run_until (jobs, 1100);
    cr_assert_eq (s_count ("health"), 2);
    cr_assert_eq (s_find ("health", 1)->at, 1100);
    wrk_jobs_healthy (jobs, s_ids [1], s_token ("health", 1), false, "exit 1");
    s_run_until (jobs, 2100);
    cr_assert_eq (s_count ("health"), 3);
    cr_assert_eq (s_count ("ack"), 0);
    cr_assert_geq (s_count ("extend"), 1, "lease not kept during the health wait");
    fake->now = 2200;
    wrk_jobs_healthy (jobs, s_ids [1], s_token ("health", 2), true, NULL);
    s_flush (jobs);
    cr_assert_eq (s_count ("ack"), 1);
    cr_assert_eq (s_find ("ack", 0)->at, 2200);
    s_end (&jobs);

    //  Never healthy: the try running at the timeout is killed, NACK health_timeout
    jobs = s_new_with (&config, false, true);
    s_deliver (jobs, 22, 2, 0, 10000);
    wrk_jobs_saved (jobs, s_ids [2], s_token ("save", 0), true, NULL);
    wrk_jobs_restarted (jobs, s_ids [2], s_token ("restart", 0), true, NULL);
    s_flush (jobs);
    for (int i = 0; i < 4; i++) {
        wrk_jobs_healthy (jobs, s_ids [2], s_token ("health", i), false, "exit 1");
        s_run_until (jobs, 1000 * (i + 1));
    }
    cr_assert_eq (s_count ("health"), 5);
    s_run_until (jobs, 5000);
    cr_assert_eq (s_count ("nack"), 1);
    cr_assert_str_eq (s_find ("nack", 0)->reason, "health_timeout");
    cr_assert_eq (s_find ("nack", 0)->at, 4500);
    cr_assert_eq (s_count ("kill"), 1);
    s_end (&jobs);
}
