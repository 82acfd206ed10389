/*  Tests for brk_names (the interned publisher names) and for how the
    queue gives each message its publisher: at publish, at restore, and
    through replay; on a manual clock, without sockets. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <string.h>

#include "brk_names.h"
#include "brk_queue.h"

#define ID1 "00000000-0000-4000-8000-000000000001"
#define ID2 "00000000-0000-4000-8000-000000000002"
#define ID3 "00000000-0000-4000-8000-000000000003"
#define REQUEST "{\"message_id\":\"x\",\"instance_name\":\"cattle-1\",\"hostname\":\"h\"}"

Test (brk_names, the_same_text_is_the_same_pointer, .timeout = 10)
{
    brk_names_t *names = brk_names_new ();
    cr_assert_not_null (names);
    char alice [] = "alice";
    const char *first = brk_names_intern (names, alice);
    cr_assert_not_null (first);
    cr_assert_neq ((void *) first, (void *) alice, "the table keeps its own copy");
    alice [0] = 'A';            //  The caller's buffer may change afterwards
    cr_assert_str_eq (first, "alice");
    cr_assert_eq (brk_names_intern (names, "alice"), first);
    const char *bob = brk_names_intern (names, "bob");
    cr_assert_str_eq (bob, "bob");
    cr_assert_neq (bob, first);
    cr_assert_eq (brk_names_size (names), 2);
    cr_assert_null (brk_names_intern (names, NULL));
    cr_assert_null (brk_names_intern (names, ""));
    cr_assert_eq (brk_names_size (names), 2);
    brk_names_destroy (&names);
    cr_assert_null (names);
    brk_names_destroy (&names);
}

Test (brk_names, long_names_are_cut_and_the_table_is_bounded, .timeout = 30)
{
    brk_names_t *names = brk_names_new ();
    cr_assert_not_null (names);
    char longer [BRK_NAMES_MAX_LEN + 50];
    memset (longer, 'k', sizeof longer - 1);
    longer [sizeof longer - 1] = 0;
    const char *cut = brk_names_intern (names, longer);
    cr_assert_not_null (cut);
    cr_assert_eq (strlen (cut), (size_t) BRK_NAMES_MAX_LEN);
    cr_assert_eq (brk_names_intern (names, longer), cut);
    char name [32];
    for (int i = 1; i < BRK_NAMES_MAX; i++) {
        snprintf (name, sizeof name, "key-%d", i);
        cr_assert_not_null (brk_names_intern (names, name));
    }
    cr_assert_eq (brk_names_size (names), (size_t) BRK_NAMES_MAX);
    cr_assert_null (brk_names_intern (names, "one-too-many"), "past the bound: unnamed");
    cr_assert_not_null (brk_names_intern (names, "key-7"), "known names still resolve");
    brk_names_destroy (&names);
}

static brk_queue_t *
s_queue_new (int64_t *now)
{
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    config.max_attempts = 1;
    *now = 1000000;
    brk_queue_t *queue = brk_queue_new (&config, mdl_clock_manual (now));
    cr_assert_not_null (queue);
    return queue;
}

typedef struct {
    int published;              //  published events that named "alice"
    int dead;                   //  dead_lettered events that named "alice"
} s_seen_t;

static void
s_event (void *arg, const brk_event_info_t *info)
{
    s_seen_t *seen = arg;
    const char *publisher = info->msg ? brk_msg_publisher (info->msg) : NULL;
    if (info->event == BRK_EVENT_PUBLISHED && publisher && strcmp (publisher, "alice") == 0)
        seen->published++;
    if (info->event == BRK_EVENT_DEAD_LETTERED && publisher && strcmp (publisher, "alice") == 0)
        seen->dead++;
}

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id, const brk_msg_t *msg,
           int64_t attempt)
{
    (void) worker;
    (void) msg;
    (void) attempt;
    *(uint64_t *) arg = delivery_id;
}

Test (brk_names, a_message_keeps_its_publisher_through_dead_letter_and_replay, .timeout = 10)
{
    int64_t now;
    brk_queue_t *queue = s_queue_new (&now);
    s_seen_t seen = { 0, 0 };
    brk_queue_set_event_handler (queue, s_event, &seen);
    brk_queue_set_events_enabled (queue, true);

    char name [] = "alice";
    brk_queue_set_publisher (queue, name);
    name [0] = 'X';             //  The queue interned its own copy
    cr_assert_eq (brk_queue_publish (queue, ID1, REQUEST, strlen (REQUEST), 0), 0);
    brk_queue_set_publisher (queue, NULL);
    cr_assert_eq (brk_queue_publish (queue, ID2, REQUEST, strlen (REQUEST), 0), 0);
    cr_assert_eq (seen.published, 1);
    cr_assert_str_eq (brk_msg_publisher (brk_queue_lookup (queue, ID1)), "alice");
    cr_assert_null (brk_msg_publisher (brk_queue_lookup (queue, ID2)));

    //  One attempt allowed: a NACK dead-letters it, still named
    brk_worker_t *worker = brk_queue_worker_add (queue, "w", 1, NULL);
    cr_assert_not_null (worker);
    uint64_t delivery_id = 0;
    cr_assert_eq (brk_queue_dispatch (queue, s_deliver, &delivery_id), 1);
    cr_assert_eq (brk_queue_nack (queue, delivery_id, 0, "no"), BRK_OK);
    cr_assert_eq (seen.dead, 1);
    cr_assert_eq (brk_queue_replay (queue, ID1), 0);
    cr_assert_str_eq (brk_msg_publisher (brk_queue_lookup (queue, ID1)), "alice");
    brk_queue_destroy (&queue);
}

Test (brk_names, restore_interns_the_journal_s_publisher, .timeout = 10)
{
    int64_t now;
    brk_queue_t *queue = s_queue_new (&now);
    char name [] = "bob";
    brk_restore_t restore = {
        .message_id = ID3, .json = REQUEST, .json_len = strlen (REQUEST),
        .published_ms = 1, .publisher = name
    };
    cr_assert_eq (brk_queue_restore (queue, &restore), 0);
    name [0] = 'X';             //  The record's text goes away after recovery
    const char *publisher = brk_msg_publisher (brk_queue_lookup (queue, ID3));
    cr_assert_str_eq (publisher, "bob");
    restore.message_id = ID1;
    restore.publisher = NULL;
    cr_assert_eq (brk_queue_restore (queue, &restore), 0);
    cr_assert_null (brk_msg_publisher (brk_queue_lookup (queue, ID1)));
    //  The same name from a publish is the same pointer
    brk_queue_set_publisher (queue, "bob");
    cr_assert_eq (brk_queue_publish (queue, ID2, REQUEST, strlen (REQUEST), 0), 0);
    cr_assert_eq (brk_msg_publisher (brk_queue_lookup (queue, ID2)), publisher);
    brk_queue_destroy (&queue);
}
