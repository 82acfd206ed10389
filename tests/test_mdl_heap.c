/*  Tests for mdl_heap. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_heap.h"

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
