/*  mdl_rate: a fixed-window rate limiter for log lines and other things
    that a flood of input must not turn into a flood of output.

    At most `burst` units pass per window of `window_ms` milliseconds read
    from an injected mdl_clock_t; the rest are counted as dropped. A window
    starts at the first request after the previous one ended (timers are
    rescheduled from now, so a quiet period never banks a burst). When a
    request closes a window, the caller is told what that window dropped
    and how long it lasted, so it can print one summary line.

    Used by the broker (warnings about peers' bad input, 20 a second; CURVE
    refusals and forbidden commands, 10 a second) and the worker
    (per-message INFO lines, --log-burst a second).

    Cost: O(1), one clock read per request; no allocation after new.
    Not thread-safe: one limiter per thread (or per loop).
*/
#ifndef MDL_RATE_H_INCLUDED
#define MDL_RATE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "mdl_clock.h"

typedef struct _mdl_rate_t mdl_rate_t;

//  What the window that a request closed had seen.
typedef struct {
    bool closed;                //  This request started a new window
    int64_t passed;             //  Units the closed window let through
    int64_t dropped;            //  Units the closed window refused
    int64_t elapsed_ms;         //  How long the closed window lasted
} mdl_rate_window_t;

//  Create a limiter of burst units (>= 0) per window_ms (> 0). The clock
//  is copied. Returns NULL when out of memory.
mdl_rate_t *mdl_rate_new (mdl_clock_t clock, int64_t burst, int64_t window_ms);
void mdl_rate_destroy (mdl_rate_t **self_p);

//  Ask for one unit: true when it fits the current window. If window is
//  not NULL it is filled in; window->closed says whether this request
//  ended the previous window (whose figures the other fields then hold).
bool mdl_rate_allow (mdl_rate_t *self, mdl_rate_window_t *window);

//  Units refused so far in the current window.
int64_t mdl_rate_dropped (const mdl_rate_t *self);

#endif
