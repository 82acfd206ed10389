/*  Tests for mdl_uuid. */
#include <criterion/criterion.h>
#include <string.h>

#include "mdl_uuid.h"

Test (mdl_uuid, uuid4_is_canonical_and_unique, .timeout = 10)
{
    char a [37], b [37];
    mdl_uuid4 (a);
    mdl_uuid4 (b);
    cr_assert_eq (strlen (a), 36);
    cr_assert (mdl_uuid_valid (a, 36));
    cr_assert_eq (a [14], '4');
    cr_assert (strchr ("89ab", a [19]) != NULL);
    cr_assert_str_neq (a, b);
}

Test (mdl_uuid, pool_refills_without_repeats, .timeout = 10)
{
    //  1000 uuids use the 4 KiB pool about four times over
    enum { N = 1000 };
    static char ids [N][37];
    for (int i = 0; i < N; i++) {
        mdl_uuid4 (ids [i]);
        cr_assert (mdl_uuid_valid (ids [i], 36), "%s", ids [i]);
    }
    for (int i = 1; i < N; i++)
        cr_assert_str_neq (ids [i], ids [i - 1]);
}

Test (mdl_uuid, validation, .timeout = 10)
{
    cr_assert_not (mdl_uuid_valid ("not-a-uuid", 10));
    cr_assert_not (mdl_uuid_valid (NULL, 36));
    cr_assert_not (mdl_uuid_valid ("123e4567-e89b-12d3-a456-42661417400g", 36));
    cr_assert_not (mdl_uuid_valid ("123e4567+e89b-12d3-a456-426614174000", 36));
    cr_assert_not (mdl_uuid_valid ("123e4567-e89b-12d3-a456-4266141740000", 37));
    cr_assert (mdl_uuid_valid ("123E4567-E89B-12D3-A456-426614174000", 36));
}
