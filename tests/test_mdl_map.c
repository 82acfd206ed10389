/*  Tests for mdl_map: both maps against a plain array as the reference,
    through inserts, duplicates, deletes (which shift probe runs back) and
    growth, and iteration over what is left.
*/
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_map.h"

static uint64_t
s_next (uint64_t *state)
{
    *state = *state * 6364136223846793005ULL + 1442695040888963407ULL;
    return *state >> 11;
}

Test (mdl_map, insert_lookup_delete, .timeout = 10)
{
    mdl_map_t *map = mdl_map_new ();
    cr_assert_not_null (map);
    int a = 1, b = 2;
    cr_assert_null (mdl_map_lookup (map, 7));
    cr_assert_eq (mdl_map_insert (map, 7, &a), 0);
    cr_assert_eq (mdl_map_insert (map, 7, &b), 1, "a duplicate key is refused");
    cr_assert_eq (mdl_map_lookup (map, 7), &a, "and changes nothing");
    cr_assert_eq (mdl_map_insert (map, 0, &b), 0, "0 is a key like any other");
    cr_assert_eq (mdl_map_lookup (map, 0), &b);
    cr_assert_eq (mdl_map_size (map), 2);
    cr_assert_eq (mdl_map_delete (map, 7), &a);
    cr_assert_null (mdl_map_delete (map, 7));
    cr_assert_null (mdl_map_lookup (map, 7));
    cr_assert_eq (mdl_map_size (map), 1);
    mdl_map_destroy (&map);
    mdl_map_destroy (&map);
    cr_assert_null (map);
}

//  Random keys from a small range, so inserts collide with live keys,
//  deletes hit and miss, and probe runs wrap around the table's end.
Test (mdl_map, matches_a_reference_under_churn, .timeout = 30)
{
    enum { RANGE = 5000, OPS = 400000 };
    mdl_map_t *map = mdl_map_new ();
    char *present = calloc (RANGE, 1);
    char *values = calloc (RANGE, 1);      //  Addresses used as values
    size_t size = 0;
    uint64_t state = 1;
    for (int op = 0; op < OPS; op++) {
        //  Keys spread over the u64 range but drawn from RANGE values
        uint64_t slot = s_next (&state) % RANGE;
        uint64_t key = slot * 0x9e3779b97f4a7c15ULL;
        int what = (int) (s_next (&state) % 3);
        if (what == 0) {
            int rc = mdl_map_insert (map, key, &values [slot]);
            cr_assert_eq (rc, present [slot] ? 1 : 0, "insert at op %d", op);
            if (!present [slot]) {
                present [slot] = 1;
                size++;
            }
        }
        else
        if (what == 1) {
            void *value = mdl_map_delete (map, key);
            cr_assert_eq (value, present [slot] ? &values [slot] : NULL, "delete at op %d", op);
            if (present [slot]) {
                present [slot] = 0;
                size--;
            }
        }
        else
            cr_assert_eq (mdl_map_lookup (map, key), present [slot] ? &values [slot] : NULL,
                          "lookup at op %d", op);
        cr_assert_eq (mdl_map_size (map), size);
    }
    //  Every live key is found and iteration visits each exactly once
    size_t seen = 0, cursor = 0;
    char *value;
    while ((value = mdl_map_next (map, &cursor))) {
        size_t slot = (size_t) (value - values);
        cr_assert (slot < RANGE && present [slot]);
        present [slot] = 2;
        seen++;
    }
    cr_assert_eq (seen, size);
    for (size_t slot = 0; slot < RANGE; slot++)
        cr_assert_neq (present [slot], 1, "key of slot %zu not iterated", slot);
    free (present);
    free (values);
    mdl_map_destroy (&map);
}

//  Sequential keys as delivery ids are: grow through many doublings,
//  then delete in order, as acks do.
Test (mdl_map, sequential_ids_grow_and_drain, .timeout = 30)
{
    enum { N = 200000 };
    uint64_t base = UINT64_C (3) << 32;
    mdl_map_t *map = mdl_map_new ();
    static int marker;
    for (uint64_t i = 1; i <= N; i++)
        cr_assert_eq (mdl_map_insert (map, base | i, &marker), 0);
    cr_assert_eq (mdl_map_size (map), N);
    for (uint64_t i = 1; i <= N; i++) {
        cr_assert_eq (mdl_map_delete (map, base | i), &marker, "id %" PRIu64, i);
        if (i + 1 <= N)
            cr_assert_eq (mdl_map_lookup (map, base | (i + 1)), &marker);
    }
    cr_assert_eq (mdl_map_size (map), 0);
    size_t cursor = 0;
    cr_assert_null (mdl_map_next (map, &cursor));
    mdl_map_destroy (&map);
}

Test (mdl_strmap, insert_lookup_delete, .timeout = 10)
{
    mdl_strmap_t *map = mdl_strmap_new ();
    cr_assert_not_null (map);
    int a = 1, b = 2;
    cr_assert_eq (mdl_strmap_insert (map, "b7f1e7a0-8c2c-4d8e-9d3a-2f1c6e0b9a11", &a), 0);
    cr_assert_eq (mdl_strmap_insert (map, "", &b), 0, "the empty string is a key");
    //  Another buffer with the same text finds it: keys compare by content
    char copy [] = "b7f1e7a0-8c2c-4d8e-9d3a-2f1c6e0b9a11";
    cr_assert_eq (mdl_strmap_lookup (map, copy), &a);
    cr_assert_eq (mdl_strmap_insert (map, copy, &b), 1);
    cr_assert_null (mdl_strmap_lookup (map, "b7f1e7a0-8c2c-4d8e-9d3a-2f1c6e0b9a1"));
    cr_assert_null (mdl_strmap_lookup (map, "b7f1e7a0-8c2c-4d8e-9d3a-2f1c6e0b9a111"));
    cr_assert_eq (mdl_strmap_lookup (map, ""), &b);
    cr_assert_eq (mdl_strmap_size (map), 2);
    cr_assert_eq (mdl_strmap_delete (map, copy), &a);
    cr_assert_null (mdl_strmap_lookup (map, copy));
    cr_assert_null (mdl_strmap_delete (map, copy));
    cr_assert_eq (mdl_strmap_size (map), 1);
    mdl_strmap_destroy (&map);
    mdl_strmap_destroy (&map);
    cr_assert_null (map);
}

Test (mdl_strmap, matches_a_reference_under_churn, .timeout = 30)
{
    enum { RANGE = 3000, OPS = 300000 };
    //  Keys of every length 0..40 (tails of the word loop), stored in the
    //  "values", as the broker stores a message id inside its message
    char (*keys) [48] = calloc (RANGE, sizeof *keys);
    char *present = calloc (RANGE, 1);
    for (size_t i = 0; i < RANGE; i++) {
        char text [48];
        snprintf (text, sizeof text, "%zu-%040zu", i, i * 7919);
        size_t len = (i % 41);
        if (len < strlen (text) && i >= 1000)
            text [len] = 0;     //  Short keys: only a few are distinct, hence i < 1000 kept whole
        memcpy (keys [i], text, sizeof text);
    }
    //  Short cut keys may coincide; the reference treats equal text as one key
    size_t *canonical = calloc (RANGE, sizeof (size_t));
    for (size_t i = 0; i < RANGE; i++) {
        canonical [i] = i;
        for (size_t j = 0; j < i; j++)
            if (strcmp (keys [i], keys [j]) == 0) {
                canonical [i] = canonical [j];
                break;
            }
    }
    mdl_strmap_t *map = mdl_strmap_new ();
    size_t size = 0;
    uint64_t state = 7;
    for (int op = 0; op < OPS; op++) {
        size_t slot = canonical [s_next (&state) % RANGE];
        int what = (int) (s_next (&state) % 3);
        if (what == 0) {
            cr_assert_eq (mdl_strmap_insert (map, keys [slot], keys [slot]), present [slot] ? 1 : 0,
                          "insert at op %d", op);
            if (!present [slot]) {
                present [slot] = 1;
                size++;
            }
        }
        else
        if (what == 1) {
            char probe [48];
            memcpy (probe, keys [slot], sizeof probe);
            cr_assert_eq (mdl_strmap_delete (map, probe), present [slot] ? keys [slot] : NULL,
                          "delete at op %d", op);
            if (present [slot]) {
                present [slot] = 0;
                size--;
            }
        }
        else
            cr_assert_eq (mdl_strmap_lookup (map, keys [slot]), present [slot] ? keys [slot] : NULL,
                          "lookup at op %d", op);
        cr_assert_eq (mdl_strmap_size (map), size);
    }
    size_t seen = 0, cursor = 0;
    char *value;
    while ((value = mdl_strmap_next (map, &cursor))) {
        size_t slot = (size_t) ((char (*) [48]) value - keys);
        cr_assert (slot < RANGE && present [slot] == 1);
        present [slot] = 2;
        seen++;
    }
    cr_assert_eq (seen, size);
    mdl_strmap_destroy (&map);
    free (keys);
    free (present);
    free (canonical);
}
