/*  mdl_rate: see mdl_rate.h. */
#include "mdl_rate.h"

#include <assert.h>
#include <stdlib.h>

struct _mdl_rate_t {
    mdl_clock_t clock;          //  Where time comes from
    int64_t burst;              //  Units per window
    int64_t window_ms;          //  Window length
    int64_t started;            //  Start of the current window
    int64_t passed;             //  Units let through in it
    int64_t dropped;            //  Units refused in it
};

mdl_rate_t *
mdl_rate_new (mdl_clock_t clock, int64_t burst, int64_t window_ms)
{
    assert (clock.now);
    assert (burst >= 0 && window_ms > 0);
    mdl_rate_t *self = calloc (1, sizeof (mdl_rate_t));
    if (!self)
        return NULL;
    self->clock = clock;
    self->burst = burst;
    self->window_ms = window_ms;
    self->started = mdl_clock_now (&clock);
    return self;
}

void
mdl_rate_destroy (mdl_rate_t **self_p)
{
    assert (self_p);
    free (*self_p);
    *self_p = NULL;
}

bool
mdl_rate_allow (mdl_rate_t *self, mdl_rate_window_t *window)
{
    assert (self);
    int64_t now = mdl_clock_now (&self->clock);
    if (window)
        *window = (mdl_rate_window_t) { false, 0, 0, 0 };
    //  A clock that steps back (it should not) also closes the window,
    //  rather than freezing the limiter until it catches up
    if (now - self->started >= self->window_ms || now < self->started) {
        if (window)
            *window = (mdl_rate_window_t) { true, self->passed, self->dropped,
                                            now - self->started };
        self->started = now;
        self->passed = 0;
        self->dropped = 0;
    }
    if (self->passed < self->burst) {
        self->passed++;
        return true;
    }
    self->dropped++;
    return false;
}

int64_t
mdl_rate_dropped (const mdl_rate_t *self)
{
    assert (self);
    return self->dropped;
}
