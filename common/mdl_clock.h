/*  mdl_clock: an injectable monotonic clock in milliseconds.

    Everything that keeps time (leases, deadlines, backoff, heartbeats)
    reads it through an mdl_clock_t, so tests can drive time by hand.
    The default clock is zclock_mono ().
*/
#ifndef MDL_CLOCK_H_INCLUDED
#define MDL_CLOCK_H_INCLUDED

#include <stdint.h>

typedef int64_t (mdl_clock_fn) (void *arg);

typedef struct {
    mdl_clock_fn *now;          //  Returns monotonic milliseconds
    void *arg;                  //  Passed to now ()
} mdl_clock_t;

//  The real monotonic clock.
mdl_clock_t mdl_clock_system (void);

//  A manual clock for tests: reads *ms.
mdl_clock_t mdl_clock_manual (int64_t *ms);

static inline int64_t
mdl_clock_now (const mdl_clock_t *clock)
{
    return clock->now (clock->arg);
}

//  Wall-clock milliseconds since the epoch, for timestamps in messages.
int64_t mdl_clock_wall (void);

//  An injectable random source: returns a double in [0, 1).
typedef double (mdl_random_fn) (void *arg);
typedef struct {
    mdl_random_fn *next;        //  Returns U[0,1)
    void *arg;                  //  Passed to next ()
} mdl_random_t;

//  A xorshift generator seeded from the clock and pid; *state is owned by caller.
mdl_random_t mdl_random_system (uint64_t *state);

static inline double
mdl_random_next (const mdl_random_t *random)
{
    return random->next (random->arg);
}

#endif
