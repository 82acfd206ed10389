/*  Tests for mdl_parse. */
#include <criterion/criterion.h>

#include "mdl_parse.h"

Test (mdl_parse, durations, .timeout = 10)
{
    int64_t ms = -1;
    cr_assert_eq (mdl_parse_duration_ms ("10s", &ms), 0); cr_assert_eq (ms, 10000);
    cr_assert_eq (mdl_parse_duration_ms ("250ms", &ms), 0); cr_assert_eq (ms, 250);
    cr_assert_eq (mdl_parse_duration_ms ("1.5s", &ms), 0); cr_assert_eq (ms, 1500);
    cr_assert_eq (mdl_parse_duration_ms ("2m", &ms), 0); cr_assert_eq (ms, 120000);
    cr_assert_eq (mdl_parse_duration_ms ("1h", &ms), 0); cr_assert_eq (ms, 3600000);
    cr_assert_eq (mdl_parse_duration_ms ("0", &ms), 0); cr_assert_eq (ms, 0);
    const char *bad [] = { "", "10", "-1s", "s", "10 s", "1e400s", "abc", "10sec", "1e16h", NULL };
    for (int i = 0; bad [i]; i++) {
        ms = 77;
        cr_assert_eq (mdl_parse_duration_ms (bad [i], &ms), -1, "accepted '%s'", bad [i]);
        cr_assert_eq (ms, 77, "'%s' changed the value", bad [i]);
    }
    cr_assert_eq (mdl_parse_duration_ms (NULL, &ms), -1);
}

Test (mdl_parse, integers, .timeout = 10)
{
    int64_t value = 0;
    cr_assert_eq (mdl_parse_int ("42", 1, 100, &value), 0); cr_assert_eq (value, 42);
    cr_assert_eq (mdl_parse_int ("-5", -10, 10, &value), 0); cr_assert_eq (value, -5);
    cr_assert_eq (mdl_parse_int ("0", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("101", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("4x", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("", 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int (NULL, 1, 100, &value), -1);
    cr_assert_eq (mdl_parse_int ("99999999999999999999", 0, INT64_MAX, &value), -1);
    cr_assert_eq (value, -5);
}

Test (mdl_parse, fractions, .timeout = 10)
{
    double fraction = -1;
    cr_assert_eq (mdl_parse_double ("0.25", 0, 1, &fraction), 0);
    cr_assert_float_eq (fraction, 0.25, 1e-12);
    cr_assert_eq (mdl_parse_double ("1.5", 0, 1, &fraction), -1);
    cr_assert_eq (mdl_parse_double ("nan", 0, 1, &fraction), -1);
    cr_assert_eq (mdl_parse_double ("inf", 0, 1e300, &fraction), -1);
    cr_assert_eq (mdl_parse_double ("0.5x", 0, 1, &fraction), -1);
    cr_assert_float_eq (fraction, 0.25, 1e-12);
}

Test (mdl_parse, booleans, .timeout = 10)
{
    bool value = false;
    const char *yes [] = { "true", "YES", "on", "1", NULL };
    const char *no [] = { "false", "No", "off", "0", NULL };
    for (int i = 0; yes [i]; i++) {
        value = false;
        cr_assert_eq (mdl_parse_bool (yes [i], &value), 0, "%s", yes [i]);
        cr_assert (value, "%s", yes [i]);
    }
    for (int i = 0; no [i]; i++) {
        value = true;
        cr_assert_eq (mdl_parse_bool (no [i], &value), 0, "%s", no [i]);
        cr_assert_not (value, "%s", no [i]);
    }
    cr_assert_eq (mdl_parse_bool ("maybe", &value), -1);
    cr_assert_eq (mdl_parse_bool ("", &value), -1);
    cr_assert_eq (mdl_parse_bool (NULL, &value), -1);
}
