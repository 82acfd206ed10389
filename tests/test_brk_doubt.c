/*  Tests for the in-doubt rule under a restart policy (brk_queue with
    brk_policy): the policy key in_doubt = restart | dead_letter, and what
    a request in doubt does on its way to a worker with or without the
    verify feature. Manual clocks, no sockets.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "brk_policy.h"
#include "brk_queue.h"

static int64_t s_now, s_wall;
static brk_policy_t *s_policy;
static brk_queue_t *s_queue;

typedef struct {
    brk_worker_t *worker;
    uint64_t delivery_id;
    bool in_doubt;
} s_delivery_t;

static s_delivery_t s_deliveries [16];
static size_t s_delivered;

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id,
           const brk_msg_t *msg, int64_t attempt)
{
    (void) arg; (void) attempt;
    cr_assert_lt (s_delivered, 16);
    s_deliveries [s_delivered].worker = worker;
    s_deliveries [s_delivered].delivery_id = delivery_id;
    s_deliveries [s_delivered].in_doubt = brk_queue_msg_in_doubt (msg);
    s_delivered++;
}

static void
s_setup (const char *policy_text)
{
    s_now = 1000000;
    s_wall = INT64_C (1796040000000);
    s_delivered = 0;
    s_policy = brk_policy_new (mdl_clock_manual (&s_now), mdl_clock_manual (&s_wall));
    cr_assert_not_null (s_policy);
    char err [256];
    cr_assert_eq (brk_policy_load_text (s_policy, policy_text, err, sizeof err), 0, "%s", err);
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    config.backoff_base_ms = 0;
    config.backoff_max_ms = 0;
    config.heartbeat_ms = 1000000000;
    s_queue = brk_queue_new (&config, mdl_clock_manual (&s_now));
    cr_assert_not_null (s_queue);
    cr_assert_eq (brk_queue_set_policy (s_queue, s_policy), 0);
}

static void
s_teardown (void)
{
    brk_queue_destroy (&s_queue);
    brk_policy_destroy (&s_policy);
}

static void
s_publish (int n, const char *host)
{
    char id [37], json [256];
    snprintf (id, sizeof id, "00000000-0000-4000-8000-%012d", n);
    snprintf (json, sizeof json,
              "{\"message_id\":\"%s\",\"instance_name\":\"x\",\"hostname\":\"%s\"}", id, host);
    cr_assert_eq (brk_queue_publish (s_queue, id, json, strlen (json), 0), 0);
}

//  Lease message 1 to worker, report its start, lose the worker: in doubt.
static void
s_orphan (void)
{
    brk_worker_t *first = brk_queue_worker_add (s_queue, "first", 1, NULL);
    s_publish (1, "db-1.example.net");
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    brk_queue_worker_remove (s_queue, &first, "killed mid-restart");
    s_now += 10000;     //  The group's restart_timeout
    brk_queue_tick (s_queue, NULL, NULL);
}

Test (brk_doubt, policy_key_parses_and_rejects, .timeout = 10)
{
    s_setup ("groups\n    db\n        match = db-*\n        in_doubt = dead_letter\n"
             "    web\n        match = web-*\n        in_doubt = restart\n");
    cr_assert_eq (brk_policy_group_config (s_policy, 0)->in_doubt, BRK_IN_DOUBT_DEAD_LETTER);
    cr_assert_eq (brk_policy_group_config (s_policy, 1)->in_doubt, BRK_IN_DOUBT_RESTART);
    cr_assert_eq (brk_policy_group_config (s_policy, 2)->in_doubt, BRK_IN_DOUBT_RESTART,
                  "the default is restart");
    char err [256];
    brk_policy_t *bad = brk_policy_new (mdl_clock_manual (&s_now), mdl_clock_manual (&s_wall));
    cr_assert_eq (brk_policy_load_text (bad, "groups\n    db\n        in_doubt = maybe\n",
                                        err, sizeof err), -1);
    cr_assert (strstr (err, "in_doubt"), "%s", err);
    brk_policy_destroy (&bad);
    s_teardown ();
}

//  Under in_doubt = dead_letter: message 1 in doubt, then dead-lettered
//  "in_doubt" by a dispatch to a worker without verify.
static void
s_dead_letter_in_doubt (void)
{
    s_setup ("groups\n    db\n        match = db-*\n        restart_timeout = 10s\n"
             "        in_doubt = dead_letter\n");
    s_orphan ();
    brk_worker_t *plain = brk_queue_worker_add (s_queue, "plain", 5, NULL);
    brk_queue_worker_set_features (s_queue, plain, BRK_FEATURE_IN_DOUBT);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.in_doubt, 1);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
}

Test (brk_doubt, dead_letter_without_verify, .timeout = 10)
{
    //  A worker without verify may not decide: dead-lettered "in_doubt"
    s_dead_letter_in_doubt ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 1);
    cr_assert_eq (stats.in_doubt, 0, "a dead letter is not pending, so not counted");
    brk_msg_t *msg = brk_queue_lookup (s_queue, "00000000-0000-4000-8000-000000000001");
    cr_assert_str_eq (brk_msg_dead_reason (msg), "in_doubt");
    //  The host is free again for a new request
    s_publish (2, "db-1.example.net");
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_not (s_deliveries [1].in_doubt);
    s_teardown ();
}

Test (brk_doubt, verify_worker_gets_it_marked, .timeout = 10)
{
    s_setup ("groups\n    db\n        match = db-*\n        restart_timeout = 10s\n"
             "        in_doubt = dead_letter\n");
    s_orphan ();
    brk_worker_t *verifier = brk_queue_worker_add (s_queue, "verifier", 5, NULL);
    brk_queue_worker_set_features (s_queue, verifier, BRK_FEATURE_IN_DOUBT | BRK_FEATURE_VERIFY);
    cr_assert_eq (brk_worker_features (verifier), BRK_FEATURE_IN_DOUBT | BRK_FEATURE_VERIFY);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert (s_deliveries [1].in_doubt);
    cr_assert_eq (s_deliveries [1].worker, verifier);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 0);
    s_teardown ();
}

//  How many requests are in doubt, in all and per group (STATS, /metrics):
//  counted from the lease's end until a restart is reported or the request
//  leaves (acked, dead-lettered).
static int64_t
s_group_doubt (size_t group)
{
    brk_group_stats_t stats;
    cr_assert_eq (brk_queue_group_stats (s_queue, group, &stats), 0);
    return stats.in_doubt;
}

static uint64_t
s_doubt (void)
{
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    return stats.in_doubt;
}

Test (brk_doubt, counted_per_group_until_a_restart_is_reported, .timeout = 10)
{
    s_setup ("groups\n    db\n        match = db-*\n        restart_timeout = 10s\n"
             "    web\n        match = web-*\n");
    cr_assert_eq (s_doubt (), 0);
    s_orphan ();
    cr_assert_eq (s_doubt (), 1);
    cr_assert_eq (s_group_doubt (0), 1);
    cr_assert_eq (s_group_doubt (1), 0);
    cr_assert_eq (s_group_doubt (2), 0, "the default group");
    //  A late report from the lost worker: its restart did finish
    cr_assert_eq (brk_queue_progress (s_queue, s_deliveries [0].delivery_id, BRK_STEP_RESTART),
                  BRK_OK);
    cr_assert_eq (s_doubt (), 0);
    cr_assert_eq (s_group_doubt (0), 0);
    s_teardown ();
}

//  The default in_doubt = restart: delivered to any worker, marked, and
//  counted while leased again, until acked.
Test (brk_doubt, restart_policy_delivers_to_anyone, .timeout = 10)
{
    s_setup ("groups\n    db\n        match = db-*\n        restart_timeout = 10s\n");
    s_orphan ();
    brk_queue_worker_add (s_queue, "plain", 5, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert (s_deliveries [1].in_doubt);
    cr_assert_eq (s_group_doubt (0), 1, "leased again, and still in doubt");
    //  STARTED alone does not end it
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    cr_assert_eq (s_group_doubt (0), 1);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    cr_assert_eq (s_doubt (), 0);
    cr_assert_eq (s_group_doubt (0), 0);
    s_teardown ();
}

//  Dead-lettered in_doubt "for an operator to check and replay": the
//  replay is the operator's word, so it runs as a plain delivery, also on
//  a worker without verify (it is not dead-lettered in_doubt again).
Test (brk_doubt, an_operator_replay_ends_the_doubt, .timeout = 10)
{
    s_dead_letter_in_doubt ();
    cr_assert_eq (s_doubt (), 0);
    cr_assert_eq (brk_queue_replay (s_queue, "00000000-0000-4000-8000-000000000001"), 0);
    cr_assert_eq (s_doubt (), 0, "the operator checked the host");
    cr_assert_eq (s_group_doubt (0), 0);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1, "dead-lettered in_doubt again");
    cr_assert_not (s_deliveries [1].in_doubt);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 0);
    s_teardown ();
}
