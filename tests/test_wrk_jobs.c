/*  Tests for wrk_jobs, the in-flight table: indexes (a reissued delivery
    id), redelivery of a message we hold, confirmation of ACK, NACK and
    PROGRESS by the broker's replies, resending and giving up. Same harness
    as test_wrk_job.c.
*/
#include "support/wrk_jobs_fake.h"

Test (wrk_jobs, reissued_delivery_id_drops_the_old_lease, .timeout = 10)
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

Test (wrk_jobs, ack_resent_until_acked, .timeout = 10)
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

Test (wrk_jobs, resend_after_rehello_sends_progress_then_acks, .timeout = 10)
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

Test (wrk_jobs, stale_or_unknown_ack_is_final, .timeout = 10)
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

Test (wrk_jobs, unanswered_ack_is_dropped_after_the_lease_certainly_ended, .timeout = 10)
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

Test (wrk_jobs, progress_resent_until_every_copy_is_answered, .timeout = 10)
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

Test (wrk_jobs, nack_resent_until_nacked, .timeout = 10)
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

Test (wrk_jobs, redelivery_while_ack_unconfirmed_acks_the_new_lease, .timeout = 10)
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

Test (wrk_jobs, redelivery_while_nack_unconfirmed_starts_over, .timeout = 10)
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

Test (wrk_jobs, reissued_id_never_resends_the_old_ack, .timeout = 10)
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

Test (wrk_jobs, shutdown_keeps_unconfirmed_acks_and_nacks_only_working_jobs, .timeout = 10)
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

//  --------------------------------------------------------------------------
//  Per-message log lines: log_burst a second on the injected clock; a new
//  window starts from the first line after the last one ended

Test (wrk_jobs, log_budget_is_log_burst_a_second, .timeout = 10)
{
    wrk_config_t config = s_config (WRK_RESTART_EXTERNAL);
    config.log_burst = 3;
    wrk_jobs_t *jobs = s_new (&config);
    mdl_log_level_t level = mdl_log_level ();
    mdl_log_set_level (MDL_LOG_INFO);
    int shown = 0;
    for (int i = 0; i < 10; i++)
        shown += wrk_jobs_log_budget (jobs);
    cr_assert_eq (shown, 3);
    fake->now = 999;
    cr_assert_not (wrk_jobs_log_budget (jobs), "still the first window");
    fake->now = 1000;
    shown = 0;
    for (int i = 0; i < 10; i++)
        shown += wrk_jobs_log_budget (jobs);
    cr_assert_eq (shown, 3, "a new window, with the summary of the old one");
    fake->now = 5000;
    cr_assert (wrk_jobs_log_budget (jobs), "a quiet period banks nothing but opens a window");
    mdl_log_set_level (MDL_LOG_WARN);
    cr_assert_not (wrk_jobs_log_budget (jobs), "no budget when INFO is off");
    mdl_log_set_level (level);
    s_end (&jobs);
}
