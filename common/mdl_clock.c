/*  mdl_clock: see mdl_clock.h. */
#include "mdl_clock.h"

#include <czmq.h>
#include <unistd.h>

static int64_t
s_system_now (void *arg)
{
    (void) arg;
    return zclock_mono ();
}

static int64_t
s_manual_now (void *arg)
{
    return *(int64_t *) arg;
}

mdl_clock_t
mdl_clock_system (void)
{
    return (mdl_clock_t) { s_system_now, NULL };
}

mdl_clock_t
mdl_clock_manual (int64_t *ms)
{
    return (mdl_clock_t) { s_manual_now, ms };
}

int64_t
mdl_clock_wall (void)
{
    return zclock_time ();
}

static double
s_xorshift_next (void *arg)
{
    uint64_t *state = (uint64_t *) arg;
    uint64_t x = *state;
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    *state = x;
    return (double) (x >> 11) / 9007199254740992.0;     //  2^53
}

mdl_random_t
mdl_random_system (uint64_t *state)
{
    *state = (uint64_t) zclock_usecs () * 6364136223846793005ULL
           ^ ((uint64_t) getpid () << 32) ^ 0x9E3779B97F4A7C15ULL;
    if (*state == 0)
        *state = 1;
    return (mdl_random_t) { s_xorshift_next, state };
}
