/*  Tests for brk_queue: the lease table and its rules, on a manual clock. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "brk_queue.h"

static int64_t s_now;
static brk_queue_t *s_queue;

typedef struct {
    brk_worker_t *worker;
    uint64_t delivery_id;
    char message_id [37];
    int64_t attempt;
    unsigned steps;
} s_delivery_t;

static s_delivery_t s_deliveries [1000];
static size_t s_delivered;
static int s_events [BRK_EVENT_COUNT];

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id,
           const brk_msg_t *msg, int64_t attempt)
{
    (void) arg;
    cr_assert_lt (s_delivered, 1000);
    s_delivery_t *delivery = &s_deliveries [s_delivered++];
    delivery->worker = worker;
    delivery->delivery_id = delivery_id;
    snprintf (delivery->message_id, sizeof delivery->message_id, "%s", brk_msg_id (msg));
    delivery->attempt = attempt;
    delivery->steps = brk_msg_steps (msg);
}

static void
s_event (void *arg, const brk_event_info_t *info)
{
    (void) arg;
    s_events [info->event]++;
}

static void
s_setup_with (int64_t max_attempts)
{
    s_now = 1000000;
    s_delivered = 0;
    memset (s_events, 0, sizeof s_events);
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    config.ack_deadline_ms = 10000;
    config.max_attempts = max_attempts;
    config.backoff_base_ms = 100;
    config.backoff_max_ms = 1000;
    config.heartbeat_ms = 1000;
    config.dedup_window = 4;
    config.epoch = 7;
    s_queue = brk_queue_new (&config, mdl_clock_manual (&s_now));
    cr_assert_not_null (s_queue);
    brk_queue_set_event_handler (s_queue, s_event, NULL);
    brk_queue_set_events_enabled (s_queue, true);
}

static void
s_setup (void)
{
    s_setup_with (3);
}

static void
s_teardown (void)
{
    brk_queue_destroy (&s_queue);
    cr_assert_null (s_queue);
}

static const char *
s_id (int n)
{
    static char ids [16][37];
    char *id = ids [n % 16];
    snprintf (id, 37, "00000000-0000-4000-8000-%012d", n);
    return id;
}

static void
s_publish (int n)
{
    char json [128];
    int len = snprintf (json, sizeof json, "{\"message_id\":\"%s\"}", s_id (n));
    cr_assert_eq (brk_queue_publish (s_queue, s_id (n), json, (size_t) len, 0), 0);
}

static void
s_tick (void)
{
    brk_queue_tick (s_queue, NULL, NULL);
}

TestSuite (brk_queue, .init = s_setup, .fini = s_teardown, .timeout = 10);

Test (brk_queue, fifo_within_credit)
{
    for (int i = 0; i < 5; i++)
        s_publish (i);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 3, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 3);
    cr_assert_eq (brk_worker_in_flight (worker), 3);
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq (s_deliveries [i].message_id, s_id (i));
        cr_assert_eq (s_deliveries [i].attempt, 1);
        cr_assert_eq (s_deliveries [i].delivery_id >> 32, 7, "epoch in the id");
    }
    //  Credit is a ceiling: nothing more until an ack
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_str_eq (s_deliveries [3].message_id, s_id (3));
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.in_flight, 3);
    cr_assert_eq (stats.ready, 1);
    cr_assert_eq (stats.acked, 1);
    cr_assert_eq (s_events [BRK_EVENT_PUBLISHED], 5);
    cr_assert_eq (s_events [BRK_EVENT_DELIVERED], 4);
    cr_assert_eq (s_events [BRK_EVENT_ACKED], 1);
}

Test (brk_queue, duplicates_are_refused_also_after_ack)
{
    s_publish (1);
    char json [] = "{}";
    cr_assert_eq (brk_queue_publish (s_queue, s_id (1), json, 2, 0), 1);
    brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    cr_assert_eq (brk_queue_publish (s_queue, s_id (1), json, 2, 0), 1, "acked id still known");
    //  Beyond the dedup window the oldest done id is forgotten
    for (int i = 2; i <= 6; i++)
        s_publish (i);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    for (size_t i = 1; i < s_delivered; i++)
        cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [i].delivery_id), BRK_OK);
    cr_assert_not (brk_queue_known (s_queue, s_id (1)));
    cr_assert (brk_queue_known (s_queue, s_id (6)));
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.duplicates, 2);
}

Test (brk_queue, expiry_redelivers_with_next_attempt_after_backoff)
{
    s_publish (1);
    brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    uint64_t first = s_deliveries [0].delivery_id;
    //  Keep the worker alive while time passes
    brk_worker_t *worker = s_deliveries [0].worker;
    s_now += 9999;
    brk_queue_worker_seen (s_queue, worker);
    int64_t next = brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (next, s_now + 1, "the lease deadline is next");
    s_now += 1;
    s_tick ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 1);
    cr_assert_eq (stats.delayed, 1, "waits out the backoff");
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    s_now += brk_queue_backoff (s_queue, 1) - 1;
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    s_now += 1;
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [1].attempt, 2);
    cr_assert_neq (s_deliveries [1].delivery_id, first, "never reused");
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_STALE);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [1].delivery_id), BRK_OK);
}

Test (brk_queue, extend_moves_the_deadline)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    uint64_t id = s_deliveries [0].delivery_id;
    for (int i = 0; i < 5; i++) {
        s_now += 8000;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
        cr_assert_eq (brk_queue_extend (s_queue, id, -1), BRK_OK);
    }
    s_now += 9999;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 0);
    cr_assert_eq (stats.in_flight, 1);
    //  An explicit extension
    cr_assert_eq (brk_queue_extend (s_queue, id, 500), BRK_OK);
    s_now += 500;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 1);
    cr_assert_eq (brk_queue_extend (s_queue, id, -1), BRK_STALE);
}

Test (brk_queue, backoff_doubles_up_to_the_cap)
{
    cr_assert_eq (brk_queue_backoff (s_queue, 1), 100);
    cr_assert_eq (brk_queue_backoff (s_queue, 2), 200);
    cr_assert_eq (brk_queue_backoff (s_queue, 3), 400);
    cr_assert_eq (brk_queue_backoff (s_queue, 4), 800);
    cr_assert_eq (brk_queue_backoff (s_queue, 5), 1000);
    cr_assert_eq (brk_queue_backoff (s_queue, 60), 1000);
}

Test (brk_queue, nack_with_delay_and_with_backoff)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 2500, "busy"), BRK_OK);
    cr_assert_eq (brk_worker_in_flight (worker), 0);
    s_now += 2499;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    s_now += 1;
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [1].attempt, 2);
    //  Without a delay: the backoff for attempt 2 (200 ms)
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [1].delivery_id, -1, NULL), BRK_OK);
    s_now += 199;
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    s_now += 1;
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    //  Delay 0: at once
    cr_assert_eq (s_deliveries [2].attempt, 3);
    //  The third failure of three allowed: dead-lettered, not delayed
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [2].delivery_id, 0, NULL), BRK_OK);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 1);
    cr_assert_eq (s_events [BRK_EVENT_NACKED], 3);
}

static size_t s_collected;
static char s_dead_reason [256];
static size_t s_history_size;

static void
s_collect (void *arg, const brk_msg_t *msg)
{
    (void) arg;
    s_collected++;
    snprintf (s_dead_reason, sizeof s_dead_reason, "%s", brk_msg_dead_reason (msg));
    const brk_attempt_t *history;
    s_history_size = brk_msg_history (msg, &history);
    for (size_t i = 0; i < s_history_size; i++) {
        cr_assert_eq (history [i].attempt, (int64_t) i + 1);
        cr_assert_str_eq (history [i].outcome, "nacked");
        cr_assert_str_eq (history [i].reason, "boom");
        cr_assert_str_eq (history [i].worker, "w1");
    }
}

Test (brk_queue, dead_letter_after_max_attempts_then_replay)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    for (int attempt = 1; attempt <= 3; attempt++) {
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1, "attempt %d", attempt);
        cr_assert_eq (s_deliveries [s_delivered - 1].attempt, attempt);
        cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [s_delivered - 1].delivery_id, 0, "boom"), BRK_OK);
        brk_queue_worker_seen (s_queue, worker);
    }
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 1);
    cr_assert_eq (stats.dead_lettered, 1);
    cr_assert_eq (stats.ready + stats.delayed + stats.in_flight, 0);
    cr_assert_eq (stats.oldest_unacked_ms, 0);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);

    cr_assert_eq (brk_queue_dead_letters (s_queue, 10, s_collect, NULL), 1);
    //  Replay gives a fresh budget
    cr_assert_eq (brk_queue_replay (s_queue, s_id (2)), -1, "not a dead letter");
    cr_assert_eq (brk_queue_replay (s_queue, s_id (1)), 0);
    cr_assert_eq (brk_queue_replay (s_queue, s_id (1)), -1, "no longer dead");
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [s_delivered - 1].attempt, 1);
    cr_assert_eq (s_events [BRK_EVENT_REPLAYED], 1);
}

Test (brk_queue, dead_letter_keeps_reason_and_history)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    for (int attempt = 1; attempt <= 3; attempt++) {
        brk_queue_dispatch (s_queue, s_deliver, NULL);
        brk_queue_nack (s_queue, s_deliveries [s_delivered - 1].delivery_id, 0, "boom");
        brk_queue_worker_seen (s_queue, worker);
    }
    s_collected = 0;
    cr_assert_eq (brk_queue_dead_letters (s_queue, 10, s_collect, NULL), 1);
    cr_assert_eq (s_collected, 1);
    cr_assert_eq (s_history_size, 3);
    cr_assert (strstr (s_dead_reason, "after 3 attempts") != NULL, "%s", s_dead_reason);
    cr_assert (strstr (s_dead_reason, "boom") != NULL, "%s", s_dead_reason);
}

Test (brk_queue, expiry_counts_toward_max_attempts)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    for (int attempt = 1; attempt <= 3; attempt++) {
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
        s_now += 10000;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
        s_now += 1000;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
    }
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 3);
    cr_assert_eq (stats.dead, 1);
}

Test (brk_queue, stale_and_unknown_ids)
{
    s_publish (1);
    brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    uint64_t id = s_deliveries [0].delivery_id;
    cr_assert_eq (brk_queue_ack (s_queue, id + 1), BRK_UNKNOWN, "not issued yet");
    cr_assert_eq (brk_queue_ack (s_queue, 0), BRK_UNKNOWN);
    cr_assert_eq (brk_queue_ack (s_queue, (UINT64_C (8) << 32) | 1), BRK_UNKNOWN, "future epoch");
    cr_assert_eq (brk_queue_ack (s_queue, (UINT64_C (6) << 32) | 99), BRK_STALE, "earlier epoch");
    cr_assert_eq (brk_queue_ack (s_queue, id), BRK_OK);
    cr_assert_eq (brk_queue_ack (s_queue, id), BRK_STALE);
    cr_assert_eq (brk_queue_nack (s_queue, id, 0, NULL), BRK_STALE);
    cr_assert_eq (brk_queue_extend (s_queue, id, -1), BRK_STALE);
    cr_assert_eq (brk_queue_progress (s_queue, id, 2), BRK_STALE);
}

static void *s_lost_handles [8];
static size_t s_lost_count;

static void
s_lost (void *arg, void *handle)
{
    (void) arg;
    s_lost_handles [s_lost_count++] = handle;
}

Test (brk_queue, silent_worker_loses_leases_before_deadline)
{
    for (int i = 0; i < 4; i++)
        s_publish (i);
    int a = 1, b = 2;
    brk_worker_t *wa = brk_queue_worker_add (s_queue, "a", 2, &a);
    brk_worker_t *wb = brk_queue_worker_add (s_queue, "b", 2, &b);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 4);
    cr_assert_eq (brk_worker_in_flight (wa), 2);
    cr_assert_eq (brk_worker_in_flight (wb), 2);
    s_lost_count = 0;
    //  b keeps talking, a goes silent for 3 heartbeats (well before 10 s)
    for (int i = 0; i < 6; i++) {
        s_now += 500;
        brk_queue_worker_seen (s_queue, wb);
        brk_queue_tick (s_queue, s_lost, NULL);
    }
    cr_assert_eq (s_lost_count, 1);
    cr_assert_eq (s_lost_handles [0], &a);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.workers, 1);
    cr_assert_eq (stats.ready, 2, "a's leases are back at once");
    cr_assert_eq (stats.workers_lost, 1);
    //  b acks one, gets one of a's with attempt 2
    cr_assert_eq (s_deliveries [2].worker, wb);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [2].delivery_id), BRK_OK);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [4].worker, wb);
    cr_assert_eq (s_deliveries [4].attempt, 2);
    //  a's old id of the request b now holds is stale; a's id of the one
    //  still waiting is its last lease, so a late ACK of it still counts
    size_t redone = 4, waiting = 4;
    for (size_t i = 0; i < 4; i++)
        if (s_deliveries [i].worker != wb) {
            if (strcmp (s_deliveries [i].message_id, s_deliveries [4].message_id) == 0)
                redone = i;
            else
                waiting = i;
        }
    cr_assert (redone < 4 && waiting < 4);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [redone].delivery_id), BRK_STALE);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [waiting].delivery_id), BRK_OK);
}

//  A broker that was stopped for 5 s hears nobody meanwhile: with the stall
//  given back, its worker is not lost and its lease runs its full length
//  after the stall; without it, both are gone at the first tick.
Test (brk_queue, a_stall_is_not_held_against_workers_or_leases)
{
    s_publish (1);
    int a = 1;
    brk_worker_t *wa = brk_queue_worker_add (s_queue, "a", 1, &a);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    int64_t leased = s_now;
    s_lost_count = 0;
    s_now += 5000;
    brk_queue_stalled (s_queue, 5000);
    brk_queue_tick (s_queue, s_lost, NULL);
    cr_assert_eq (s_lost_count, 0, "the worker was lost for the broker's own stall");
    cr_assert_eq (brk_worker_in_flight (wa), 1);
    //  The lease (10 s) ends 10 s of running time after it opened
    s_now = leased + 5000 + 9999;
    brk_queue_worker_seen (s_queue, wa);
    brk_queue_tick (s_queue, s_lost, NULL);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 0);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);

    //  The same stall without brk_queue_stalled: lost at once
    s_publish (2);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    s_now += 5000;
    brk_queue_tick (s_queue, s_lost, NULL);
    cr_assert_eq (s_lost_count, 1);
}

Test (brk_queue, redelivery_prefers_another_worker)
{
    s_publish (1);
    brk_worker_t *wa = brk_queue_worker_add (s_queue, "a", 5, NULL);
    brk_worker_t *wb = brk_queue_worker_add (s_queue, "b", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    brk_worker_t *first = s_deliveries [0].worker;
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 0, NULL), BRK_OK);
    //  Attempts 2 and 3 (of max 3) each go to the other worker
    for (int i = 0; i < 2; i++) {
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
        brk_worker_t *again = s_deliveries [s_delivered - 1].worker;
        cr_assert_neq (again, first, "round %d went back to the same worker", i);
        if (i < 1)
            brk_queue_nack (s_queue, s_deliveries [s_delivered - 1].delivery_id, 0, NULL);
        first = again;
    }
    (void) wa; (void) wb;
}

Test (brk_queue, redelivery_goes_to_the_same_worker_when_alone)
{
    s_publish (1);
    brk_worker_t *wa = brk_queue_worker_add (s_queue, "a", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 0, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [1].worker, wa);
}

Test (brk_queue, bye_returns_leases_and_spreads_load)
{
    for (int i = 0; i < 10; i++)
        s_publish (i);
    brk_worker_t *wa = brk_queue_worker_add (s_queue, "a", 100, NULL);
    brk_worker_t *wb = brk_queue_worker_add (s_queue, "b", 100, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 10);
    cr_assert_gt (brk_worker_in_flight (wa), 0);
    cr_assert_gt (brk_worker_in_flight (wb), 0);
    int64_t held = brk_worker_in_flight (wa);
    brk_queue_worker_remove (s_queue, &wa, "bye");
    cr_assert_null (wa);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), (size_t) held);
    cr_assert_eq (brk_worker_in_flight (wb), 10);
}

Test (brk_queue, progress_is_remembered_across_deliveries)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "a", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    cr_assert_eq (brk_queue_progress (s_queue, s_deliveries [0].delivery_id, 2), BRK_OK);
    brk_queue_worker_remove (s_queue, &worker, "gone");
    brk_queue_worker_add (s_queue, "b", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    cr_assert_eq (s_delivered, 2);
    cr_assert_eq (s_deliveries [0].steps, 0);
    cr_assert_eq (s_deliveries [1].steps, 2, "restart done by attempt 1");
    cr_assert_eq (s_deliveries [1].attempt, 2);
}

Test (brk_queue, oldest_unacked_age)
{
    s_publish (1);
    s_now += 300;
    s_publish (2);
    s_now += 200;
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.oldest_unacked_ms, 500);
    brk_queue_worker_add (s_queue, "a", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    brk_queue_ack (s_queue, s_deliveries [0].delivery_id);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.oldest_unacked_ms, 200);
}

Test (brk_queue, events_disabled_cost_nothing)
{
    brk_queue_set_events_enabled (s_queue, false);
    s_publish (1);
    cr_assert_eq (s_events [BRK_EVENT_PUBLISHED], 0);
}

Test (brk_queue, held_until_the_journal_says_durable)
{
    char json [] = "{}";
    cr_assert_eq (brk_queue_publish (s_queue, s_id (1), json, 2, 10), 0);
    cr_assert_eq (brk_queue_publish (s_queue, s_id (2), json, 2, 11), 0);
    cr_assert (brk_msg_held (brk_queue_lookup (s_queue, s_id (1))));
    cr_assert_eq (brk_msg_seq (brk_queue_lookup (s_queue, s_id (2))), 11);
    brk_queue_worker_add (s_queue, "a", 5, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0, "not durable yet");
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.held, 2);
    brk_queue_release (s_queue, 10);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_str_eq (s_deliveries [0].message_id, s_id (1));
    brk_queue_release (s_queue, 20);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_not (brk_msg_held (brk_queue_lookup (s_queue, s_id (2))));
}

static int s_stored [BRK_EVENT_COUNT];

static void
s_store (void *arg, const brk_event_info_t *info)
{
    (void) arg;
    s_stored [info->event]++;
}

Test (brk_queue, store_handler_sees_changes_even_without_events)
{
    memset (s_stored, 0, sizeof s_stored);
    brk_queue_set_events_enabled (s_queue, false);
    brk_queue_set_store_handler (s_queue, s_store, NULL);
    s_publish (1);
    s_publish (2);
    brk_queue_worker_add (s_queue, "a", 5, NULL);
    brk_queue_dispatch (s_queue, s_deliver, NULL);
    brk_queue_progress (s_queue, s_deliveries [0].delivery_id, 2);
    brk_queue_ack (s_queue, s_deliveries [0].delivery_id);
    cr_assert_eq (s_stored [BRK_EVENT_DELIVERED], 2);
    cr_assert_eq (s_stored [BRK_EVENT_PROGRESS], 1);
    cr_assert_eq (s_stored [BRK_EVENT_ACKED], 1);
    cr_assert_eq (s_stored [BRK_EVENT_PUBLISHED], 0, "the owner journals publishes itself");
    cr_assert_eq (s_events [BRK_EVENT_DELIVERED], 0);
}

Test (brk_queue, restored_lease_accepts_its_old_ack_then_expires_after_one_deadline)
{
    brk_restore_t restore = {
        .message_id = s_id (1), .json = "{}", .json_len = 2, .published_ms = 0,
        .attempts = 2, .delivery_id = (UINT64_C (5) << 32) | 42, .steps = 2
    };
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    restore.message_id = s_id (2);
    restore.delivery_id = (UINT64_C (5) << 32) | 43;
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    restore.message_id = s_id (3);
    restore.dead = true;
    restore.dead_reason = "expired after 5 attempts";
    restore.dead_history = "[]";
    restore.dead_ms = 123;
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 1, "known already");
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.in_flight, 2);
    cr_assert_eq (stats.dead, 1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "a", 5, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0, "still leased to the old worker");
    //  The old worker finishes message 1 and acks it by its old id
    cr_assert_eq (brk_queue_ack (s_queue, (UINT64_C (5) << 32) | 42), BRK_OK);
    //  Message 2 is redelivered only after one ack deadline, with attempt 3
    s_now += 9999;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    s_now += 1;
    s_tick ();
    s_now += brk_queue_backoff (s_queue, 2);
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_str_eq (s_deliveries [0].message_id, s_id (2));
    cr_assert_eq (s_deliveries [0].attempt, 3);
    cr_assert_eq (s_deliveries [0].steps, 2, "progress survives");
    cr_assert_str_eq (brk_msg_history_json (brk_queue_lookup (s_queue, s_id (3))), "[]");
}

//  --------------------------------------------------------------------------
//  In doubt: the start is stored with the steps, and a restored request
//  whose restart started and did not finish waits restart_timeout from
//  the recovery before it is delivered again, marked.

static unsigned s_stored_steps;

static void
s_store_steps (void *arg, const brk_event_info_t *info)
{
    (void) arg;
    s_stored [info->event]++;
    if (info->event == BRK_EVENT_PROGRESS)
        s_stored_steps = brk_msg_steps (info->msg);
}

//  The queue again, with this restart timeout (no policy).
static void
s_requeue (int64_t restart_timeout_ms)
{
    brk_queue_destroy (&s_queue);
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    cr_assert_eq (config.restart_timeout_ms, 300000);
    config.ack_deadline_ms = 10000;
    config.backoff_base_ms = 100;
    config.backoff_max_ms = 1000;
    config.epoch = 7;
    config.restart_timeout_ms = restart_timeout_ms;
    s_queue = brk_queue_new (&config, mdl_clock_manual (&s_now));
    cr_assert_not_null (s_queue);
    s_delivered = 0;
}

Test (brk_queue, started_is_stored_in_the_steps)
{
    memset (s_stored, 0, sizeof s_stored);
    brk_queue_set_store_handler (s_queue, s_store_steps, NULL);
    s_publish (1);
    brk_queue_worker_add (s_queue, "a", 5, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    cr_assert_eq (s_stored [BRK_EVENT_PROGRESS], 1, "the start is not stored");
    cr_assert_eq (s_stored_steps, BRK_STEP_STARTED);
    cr_assert_eq (brk_queue_progress (s_queue, s_deliveries [0].delivery_id, BRK_STEP_RESTART), BRK_OK);
    cr_assert_eq (s_stored_steps, BRK_STEP_STARTED | BRK_STEP_RESTART);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    //  Stale and unknown ids are answered as such, nothing stored
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [0].delivery_id), BRK_STALE);
    cr_assert_eq (brk_queue_started (s_queue, (UINT64_C (7) << 32) | 999), BRK_UNKNOWN);
    cr_assert_eq (s_stored [BRK_EVENT_PROGRESS], 2);
}

Test (brk_queue, restored_started_restart_is_held_in_doubt)
{
    s_requeue (30000);
    int64_t recovered = s_now;
    //  1: started, lease reopened; 2: started and finished; 3: started, no
    //  lease to reopen (its ATTEMPT record was lost)
    brk_restore_t restore = {
        .message_id = s_id (1), .json = "{}", .json_len = 2,
        .attempts = 1, .delivery_id = (UINT64_C (5) << 32) | 42, .steps = BRK_STEP_STARTED
    };
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    restore.message_id = s_id (2);
    restore.delivery_id = (UINT64_C (5) << 32) | 43;
    restore.steps = BRK_STEP_STARTED | BRK_STEP_RESTART;
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    restore.message_id = s_id (3);
    restore.delivery_id = 0;
    restore.attempts = 0;
    restore.steps = BRK_STEP_STARTED;
    cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    cr_assert_not (brk_queue_msg_in_doubt (brk_queue_lookup (s_queue, s_id (2))));
    cr_assert (brk_queue_msg_in_doubt (brk_queue_lookup (s_queue, s_id (3))));
    //  Counted: 3 only (1's reopened lease has not ended yet)
    brk_queue_stats_t counted;
    brk_queue_stats (s_queue, &counted);
    cr_assert_eq (counted.in_doubt, 1);

    brk_worker_t *worker = brk_queue_worker_add (s_queue, "b", 5, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0, "in doubt delivered at once");
    //  The reopened leases run out after one ack deadline: 2 comes back
    //  (its restart is done), 1 stays held
    s_now = recovered + 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    s_now += 1000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_str_eq (s_deliveries [0].message_id, s_id (2));
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    cr_assert (brk_queue_msg_in_doubt (brk_queue_lookup (s_queue, s_id (1))));
    brk_queue_stats (s_queue, &counted);
    cr_assert_eq (counted.in_doubt, 2, "1's lease ended unfinished: 1 and 3");
    //  Until restart_timeout from the recovery, nothing else
    while (s_now < recovered + 29999) {
        s_now += 1000;
        if (s_now > recovered + 29999)
            s_now = recovered + 29999;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0, "at %" PRId64,
                      s_now - recovered);
    }
    s_now = recovered + 30000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 2);
    for (size_t i = 1; i < 3; i++)
        cr_assert (strcmp (s_deliveries [i].message_id, s_id (1)) == 0
                || strcmp (s_deliveries [i].message_id, s_id (3)) == 0);
    cr_assert_eq (s_deliveries [1].steps & BRK_STEP_RESTART, 0);
    //  Redelivered, still in doubt until a restart is reported or acked
    brk_queue_stats (s_queue, &counted);
    cr_assert_eq (counted.in_doubt, 2);
    cr_assert_eq (brk_queue_progress (s_queue, s_deliveries [1].delivery_id, BRK_STEP_RESTART),
                  BRK_OK);
    brk_queue_stats (s_queue, &counted);
    cr_assert_eq (counted.in_doubt, 1, "a reported restart ends the doubt");
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [2].delivery_id), BRK_OK);
    brk_queue_stats (s_queue, &counted);
    cr_assert_eq (counted.in_doubt, 0, "an acked request is not in doubt");
}

//  Item: a worker that finishes just after its deadline is heard.
Test (brk_queue, late_ack_of_the_last_lease_completes_the_request)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    uint64_t first = s_deliveries [0].delivery_id;
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.expired, 1);
    cr_assert_eq (stats.delayed, 1, "waits out its backoff");
    //  The restart finished just after the deadline: its ACK still counts
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_OK, "late ACK of the last lease");
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.acked, 1);
    cr_assert_eq (stats.delayed, 0);
    cr_assert_eq (stats.pending, 0);
    cr_assert_eq (stats.late, 1);
    cr_assert_eq (s_events [BRK_EVENT_ACKED], 1);
    //  Nothing is delivered again, and a second ACK is stale
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_STALE);
    cr_assert (brk_queue_known (s_queue, s_id (1)), "still a duplicate if re-published");
}

Test (brk_queue, late_ack_after_worker_loss_while_ready)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    uint64_t first = s_deliveries [0].delivery_id;
    brk_queue_worker_remove (s_queue, &worker, "gone");
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.ready, 1, "ready again at once");
    //  The worker comes back on a new connection and acks by its old id
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_OK);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.ready, 0);
    cr_assert_eq (stats.acked, 1);
    brk_queue_worker_add (s_queue, "w2", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 0);
}

Test (brk_queue, late_progress_is_kept_for_the_next_delivery)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    uint64_t first = s_deliveries [0].delivery_id;
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    //  The restart finished after the deadline: the next delivery skips it
    cr_assert_eq (brk_queue_progress (s_queue, first, BRK_STEP_RESTART), BRK_OK);
    cr_assert_eq (s_events [BRK_EVENT_PROGRESS], 1);
    s_now += brk_queue_backoff (s_queue, 1);
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (s_deliveries [1].attempt, 2);
    cr_assert_eq (s_deliveries [1].steps, BRK_STEP_RESTART, "restart reported late, kept");
}

Test (brk_queue, once_leased_again_the_old_id_is_stale)
{
    s_publish (1);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    uint64_t first = s_deliveries [0].delivery_id;
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    s_now += brk_queue_backoff (s_queue, 1);
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    uint64_t second = s_deliveries [1].delivery_id;
    //  A newer lease exists: the old id names nothing any more
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_STALE);
    cr_assert_eq (brk_queue_progress (s_queue, first, BRK_STEP_RESTART), BRK_STALE);
    cr_assert_eq (brk_queue_nack (s_queue, first, 0, NULL), BRK_STALE);
    //  ...and after the newer one expires too, only the newest is taken
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_ack (s_queue, first), BRK_STALE);
    cr_assert_eq (brk_queue_ack (s_queue, second), BRK_OK);
}

Test (brk_queue, nacked_or_dead_lease_takes_no_late_ack)
{
    s_publish (1);
    s_publish (2);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w1", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 2);
    //  A NACK is the worker's own word that it did not finish
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 5000, NULL), BRK_OK);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_STALE);
    //  A dead letter stays dead
    for (int attempt = 1; attempt < 3; attempt++) {
        s_now += 10000;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
        s_now += 1000;
        brk_queue_worker_seen (s_queue, worker);
        s_tick ();
        brk_queue_dispatch (s_queue, s_deliver, NULL);
    }
    uint64_t last = s_deliveries [s_delivered - 1].delivery_id;
    s_now += 10000;
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_geq (stats.dead, 1);
    cr_assert_eq (brk_queue_ack (s_queue, last), BRK_STALE);
    //  ...also once it is replayed and waits again
    cr_assert_eq (brk_queue_replay (s_queue, s_deliveries [s_delivered - 1].message_id), 0);
    cr_assert_eq (brk_queue_ack (s_queue, last), BRK_STALE);
}

//  Item: shutdown NACKs use up no attempts.
Test (brk_queue, requeue_uses_no_attempt_across_rolling_restarts)
{
    s_publish (1);
    for (int restart = 0; restart < 5; restart++) {
        brk_worker_t *worker = brk_queue_worker_add (s_queue, "w", 10, NULL);
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1, "restart %d", restart);
        cr_assert_eq (s_deliveries [s_delivered - 1].attempt, 1, "never counted");
        cr_assert_eq (brk_queue_requeue (s_queue, s_deliveries [s_delivered - 1].delivery_id,
                                         "shutdown"), BRK_OK);
        brk_queue_worker_leave (s_queue, &worker);
    }
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 0, "max_attempts 3, 5 restarts: not dead-lettered");
    cr_assert_eq (stats.requeued, 5);
    cr_assert_eq (stats.ready, 1, "ready at once, no backoff");
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [s_delivered - 1].delivery_id), BRK_OK);
    //  A plain NACK still counts
    s_publish (2);
    for (int i = 0; i < 3; i++) {
        cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 1);
        cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [s_delivered - 1].delivery_id, 0,
                                      "boom"), BRK_OK);
    }
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 1);
}

Test (brk_queue, pending_and_memory_gauges)
{
    s_publish (1);
    s_publish (2);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    size_t body = strlen ("{\"message_id\":\"00000000-0000-4000-8000-000000000001\"}");
    cr_assert_eq (stats.pending, 2);
    cr_assert_eq (stats.memory_bytes, 2 * body);
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 2);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.pending, 2, "leased is pending");
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.pending, 1);
    cr_assert_eq (stats.memory_bytes, body);
}

Test (brk_queue, bye_gives_back_unread_leases_without_an_attempt)
{
    s_publish (1);
    s_publish (2);
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "a", 10, NULL);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 2);
    //  Message 2's restart was reported started: that lease ends as a failure
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    brk_queue_worker_leave (s_queue, &worker);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.requeued, 1, "the unread one");
    cr_assert_eq (stats.workers_left, 1);
    worker = brk_queue_worker_add (s_queue, "b", 10, NULL);
    s_now += 60 * 60 * 1000;        //  Past any in-doubt hold
    brk_queue_worker_seen (s_queue, worker);
    s_tick ();
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver, NULL), 2);
    for (size_t i = 2; i < 4; i++) {
        if (strcmp (s_deliveries [i].message_id, s_id (1)) == 0)
            cr_assert_eq (s_deliveries [i].attempt, 1, "given back unused");
        else
            cr_assert_eq (s_deliveries [i].attempt, 2, "its restart had started");
    }
    //  A lost worker's leases still count
    brk_queue_worker_remove (s_queue, &worker, "silent");
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.requeued, 1);
}
