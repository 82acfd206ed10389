/*  Tests for mdl_clock. */
#include <criterion/criterion.h>

#include "mdl_clock.h"

Test (mdl_clock, manual_clock_reads_the_variable, .timeout = 10)
{
    int64_t now = 1234;
    mdl_clock_t clock = mdl_clock_manual (&now);
    cr_assert_eq (mdl_clock_now (&clock), 1234);
    now += 10;
    cr_assert_eq (mdl_clock_now (&clock), 1244);
}

Test (mdl_clock, system_clock_is_monotonic, .timeout = 10)
{
    mdl_clock_t clock = mdl_clock_system ();
    int64_t last = mdl_clock_now (&clock);
    for (int i = 0; i < 1000; i++) {
        int64_t now = mdl_clock_now (&clock);
        cr_assert_geq (now, last);
        last = now;
    }
    cr_assert_gt (mdl_clock_wall (), INT64_C (1700000000000));
}

Test (mdl_clock, random_is_in_unit_interval, .timeout = 10)
{
    uint64_t state;
    mdl_random_t random = mdl_random_system (&state);
    double sum = 0;
    for (int i = 0; i < 1000; i++) {
        double r = mdl_random_next (&random);
        cr_assert (r >= 0 && r < 1);
        sum += r;
    }
    //  The mean of 1000 U[0,1) draws is 0.5 +- 0.009 (sd): 0.4..0.6 is 11 sd
    cr_assert (sum > 400 && sum < 600, "mean %f", sum / 1000);
}
