/*  Tests for mdl_heap, mdl_util and mdl_clock. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_clock.h"
#include "mdl_heap.h"
#include "mdl_util.h"

Test (mdl_heap, orders_by_key_then_insertion, .timeout = 10)
{
    mdl_heap_t *heap = mdl_heap_new ();
    mdl_heap_node_t nodes [6];
    memset (nodes, 0, sizeof nodes);
    int64_t keys [6] = { 50, 10, 30, 10, 70, 30 };
    for (int i = 0; i < 6; i++)
        cr_assert_eq (mdl_heap_insert (heap, &nodes [i], keys [i]), 0);
    int expect [6] = { 1, 3, 2, 5, 0, 4 };
    for (int i = 0; i < 6; i++) {
        mdl_heap_node_t *top = mdl_heap_pop (heap);
        cr_assert_eq (top, &nodes [expect [i]], "pop %d", i);
        cr_assert_not (mdl_heap_contains (top));
    }
    cr_assert_null (mdl_heap_pop (heap));
    mdl_heap_destroy (&heap);
    mdl_heap_destroy (&heap);
    cr_assert_null (heap);
}

Test (mdl_heap, remove_and_update_keep_order, .timeout = 10)
{
    mdl_heap_t *heap = mdl_heap_new ();
    enum { N = 1000 };
    mdl_heap_node_t *nodes = calloc (N, sizeof *nodes);
    uint64_t state = 42;
    mdl_random_t random = { NULL, NULL };
    (void) random;
    for (int i = 0; i < N; i++) {
        state = state * 6364136223846793005ULL + 1442695040888963407ULL;
        mdl_heap_insert (heap, &nodes [i], (int64_t) (state >> 40));
    }
    for (int i = 0; i < N; i += 3)
        mdl_heap_remove (heap, &nodes [i]);
    for (int i = 1; i < N; i += 3)
        mdl_heap_update (heap, &nodes [i], (int64_t) i);
    size_t expected = N - (N + 2) / 3;
    cr_assert_eq (mdl_heap_size (heap), expected);
    int64_t last = INT64_MIN;
    size_t popped = 0;
    mdl_heap_node_t *node;
    while ((node = mdl_heap_pop (heap))) {
        cr_assert_geq (node->key, last);
        last = node->key;
        popped++;
    }
    cr_assert_eq (popped, expected);
    mdl_heap_destroy (&heap);
    free (nodes);
}

Test (mdl_util, durations, .timeout = 10)
{
    int64_t ms = -1;
    cr_assert_eq (mdl_parse_duration_ms ("10s", &ms), 0); cr_assert_eq (ms, 10000);
    cr_assert_eq (mdl_parse_duration_ms ("250ms", &ms), 0); cr_assert_eq (ms, 250);
    cr_assert_eq (mdl_parse_duration_ms ("1.5s", &ms), 0); cr_assert_eq (ms, 1500);
    cr_assert_eq (mdl_parse_duration_ms ("2m", &ms), 0); cr_assert_eq (ms, 120000);
    cr_assert_eq (mdl_parse_duration_ms ("0", &ms), 0); cr_assert_eq (ms, 0);
    const char *bad [] = { "", "10", "-1s", "s", "10 s", "1e400s", "abc", "10sec", NULL };
    for (int i = 0; bad [i]; i++)
        cr_assert_eq (mdl_parse_duration_ms (bad [i], &ms), -1, "accepted '%s'", bad [i]);
    cr_assert_eq (mdl_parse_duration_ms (NULL, &ms), -1);
}

Test (mdl_util, integers, .timeout = 10)
{
    int64_t value;
    cr_assert_eq (mdl_parse_int ("42", 1, 100, &value), 0); cr_assert_eq (value, 42);
    cr_assert_eq (mdl_parse_int ("0", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("101", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("4x", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("", 1, 100, &value), -1);
    double fraction;
    cr_assert_eq (mdl_parse_double ("0.25", 0, 1, &fraction), 0);
    cr_assert_float_eq (fraction, 0.25, 1e-12);
    cr_assert_eq (mdl_parse_double ("1.5", 0, 1, &fraction), -1);
    cr_assert_eq (mdl_parse_double ("nan", 0, 1, &fraction), -1);
}

Test (mdl_util, uuid4_is_canonical_and_unique, .timeout = 10)
{
    char a [37], b [37];
    mdl_uuid4 (a);
    mdl_uuid4 (b);
    cr_assert_eq (strlen (a), 36);
    cr_assert (mdl_uuid_valid (a, 36));
    cr_assert_eq (a [14], '4');
    cr_assert (strchr ("89ab", a [19]) != NULL);
    cr_assert_str_neq (a, b);
    cr_assert_not (mdl_uuid_valid ("not-a-uuid", 10));
    cr_assert_not (mdl_uuid_valid ("123e4567-e89b-12d3-a456-42661417400g", 36));
    cr_assert (mdl_uuid_valid ("123E4567-E89B-12D3-A456-426614174000", 36));
}

Test (mdl_clock, manual_clock_reads_the_variable, .timeout = 10)
{
    int64_t now = 1234;
    mdl_clock_t clock = mdl_clock_manual (&now);
    cr_assert_eq (mdl_clock_now (&clock), 1234);
    now += 10;
    cr_assert_eq (mdl_clock_now (&clock), 1244);
    uint64_t state;
    mdl_random_t random = mdl_random_system (&state);
    for (int i = 0; i < 1000; i++) {
        double r = mdl_random_next (&random);
        cr_assert (r >= 0 && r < 1);
    }
}
