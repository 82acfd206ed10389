/*  Tests for mdl_rate, on a manual clock. */
#include <criterion/criterion.h>

#include "mdl_rate.h"

Test (mdl_rate, burst_per_window, .timeout = 10)
{
    int64_t now = 5000;
    mdl_rate_t *rate = mdl_rate_new (mdl_clock_manual (&now), 3, 1000);
    cr_assert_not_null (rate);
    mdl_rate_window_t window;
    for (int i = 0; i < 3; i++) {
        cr_assert (mdl_rate_allow (rate, &window), "unit %d", i);
        cr_assert_not (window.closed);
    }
    now += 999;
    cr_assert_not (mdl_rate_allow (rate, &window));
    cr_assert_not (mdl_rate_allow (rate, NULL));
    cr_assert_eq (mdl_rate_dropped (rate), 2);
    now += 1;
    cr_assert (mdl_rate_allow (rate, &window));
    cr_assert (window.closed);
    cr_assert_eq (window.passed, 3);
    cr_assert_eq (window.dropped, 2);
    cr_assert_eq (window.elapsed_ms, 1000);
    cr_assert_eq (mdl_rate_dropped (rate), 0);
    mdl_rate_destroy (&rate);
    mdl_rate_destroy (&rate);
    cr_assert_null (rate);
}

Test (mdl_rate, quiet_time_banks_no_burst, .timeout = 10)
{
    int64_t now = 0;
    mdl_rate_t *rate = mdl_rate_new (mdl_clock_manual (&now), 2, 1000);
    cr_assert (mdl_rate_allow (rate, NULL));
    now = 60000;                //  A minute of silence
    mdl_rate_window_t window;
    cr_assert (mdl_rate_allow (rate, &window));
    cr_assert (window.closed);
    cr_assert_eq (window.passed, 1);
    cr_assert_eq (window.dropped, 0);
    cr_assert_eq (window.elapsed_ms, 60000);
    //  The new window started at 60000, not at 1000: still two units only
    cr_assert (mdl_rate_allow (rate, NULL));
    cr_assert_not (mdl_rate_allow (rate, NULL));
    mdl_rate_destroy (&rate);
}

Test (mdl_rate, zero_burst_and_clock_step_back, .timeout = 10)
{
    int64_t now = 1000;
    mdl_rate_t *rate = mdl_rate_new (mdl_clock_manual (&now), 0, 100);
    cr_assert_not (mdl_rate_allow (rate, NULL));
    cr_assert_eq (mdl_rate_dropped (rate), 1);
    now = 500;                  //  Back in time: closes the window, not a freeze
    mdl_rate_window_t window;
    cr_assert_not (mdl_rate_allow (rate, &window));
    cr_assert (window.closed);
    cr_assert_eq (window.dropped, 1);
    mdl_rate_destroy (&rate);
}
