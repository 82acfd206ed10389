/*  Tests for mdl_fmt and mdl_array. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_array.h"
#include "mdl_fmt.h"

Test (mdl_fmt, u64_matches_printf, .timeout = 10)
{
    uint64_t values [] = { 0, 1, 9, 10, 99, 100, 12345678901234567890ULL, UINT64_MAX };
    for (size_t i = 0; i < sizeof values / sizeof values [0]; i++) {
        char ours [MDL_FMT_U64_SIZE], theirs [32];
        size_t len = mdl_fmt_u64 (ours, values [i]);
        snprintf (theirs, sizeof theirs, "%" PRIu64, values [i]);
        cr_assert_str_eq (ours, theirs);
        cr_assert_eq (len, strlen (theirs));
    }
}

Test (mdl_fmt, i64_matches_printf, .timeout = 10)
{
    int64_t values [] = { 0, -1, 7, -10, INT64_MAX, INT64_MIN, INT64_MIN + 1 };
    for (size_t i = 0; i < sizeof values / sizeof values [0]; i++) {
        char ours [MDL_FMT_I64_SIZE], theirs [32];
        size_t len = mdl_fmt_i64 (ours, values [i]);
        snprintf (theirs, sizeof theirs, "%" PRId64, values [i]);
        cr_assert_str_eq (ours, theirs);
        cr_assert_eq (len, strlen (theirs));
    }
}

Test (mdl_fmt, writes_in_place, .timeout = 10)
{
    char text [64];
    char *cursor = text;
    cursor += mdl_fmt_u64 (cursor, 42);
    *cursor++ = ',';
    cursor += mdl_fmt_i64 (cursor, -7);
    cr_assert_str_eq (text, "42,-7");
}

Test (mdl_array, grows_and_keeps_items, .timeout = 10)
{
    int *items = NULL;
    size_t capacity = 0;
    for (int i = 0; i < 1000; i++) {
        cr_assert_eq (mdl_array_reserve (&items, &capacity, (size_t) i + 1, sizeof *items), 0);
        cr_assert_geq (capacity, (size_t) i + 1);
        items [i] = i * 3;
    }
    cr_assert_eq (capacity, 1024, "doubles from 16");
    for (int i = 0; i < 1000; i++)
        cr_assert_eq (items [i], i * 3);
    size_t before = capacity;
    cr_assert_eq (mdl_array_reserve (&items, &capacity, 10, sizeof *items), 0);
    cr_assert_eq (capacity, before, "never shrinks");
    free (items);
}

Test (mdl_array, overflow_changes_nothing, .timeout = 10)
{
    int *items = NULL;
    size_t capacity = 0;
    cr_assert_eq (mdl_array_reserve (&items, &capacity, 4, sizeof *items), 0);
    int *kept = items;
    size_t kept_capacity = capacity;
    cr_assert_eq (mdl_array_reserve (&items, &capacity, SIZE_MAX / 2 + 2, sizeof *items), -1);
    cr_assert_eq (mdl_array_reserve (&items, &capacity, SIZE_MAX / 4, 64), -1);
    cr_assert_eq (items, kept);
    cr_assert_eq (capacity, kept_capacity);
    free (items);
}
