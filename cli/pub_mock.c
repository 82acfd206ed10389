/*  pub_mock: see pub_mock.h. */
#include "pub_mock.h"
#include "mdl_uuid.h"
#include "mmp.h"

#include <assert.h>
#include <czmq.h>
#include <stdlib.h>
#include <string.h>

struct _pub_mock_t {
    int64_t count;              //  Requests to make (-1 = forever)
    int64_t made;               //  Made so far
    double rate;                //  Requests per second (0 = U[0,1) pacing)
    int64_t start;              //  Monotonic ms of the first due time
    int64_t next_due;           //  When the next request is due
    mdl_random_t random;        //  U[0,1) source
};

pub_mock_t *
pub_mock_new (int64_t count, double rate, mdl_random_t random, int64_t start)
{
    assert (random.next);
    pub_mock_t *self = calloc (1, sizeof (pub_mock_t));
    if (!self)
        return NULL;
    self->count = count;
    self->rate = rate;
    self->random = random;
    self->start = self->next_due = start;
    return self;
}

void
pub_mock_destroy (pub_mock_t **self_p)
{
    assert (self_p);
    free (*self_p);
    *self_p = NULL;
}

//  Make the next mock request: cattle-xxxx, uuid4, default hostname.
static void
s_mock_request (pub_mock_t *self, pub_request_t *request)
{
    static const char alphabet [] = "abcdefghijklmnopqrstuvwxyz0123456789";
    memset (request, 0, sizeof *request);
    char suffix [5];
    for (int i = 0; i < 4; i++)
        suffix [i] = alphabet [(int) (mdl_random_next (&self->random) * 36)];
    suffix [4] = 0;
    snprintf (request->name, sizeof request->name, "cattle-%s", suffix);
    mdl_uuid4 (request->id);
    mmp_buf_t json;
    mmp_buf_init (&json);
    if (mmp_encode_request (&json, request->id, request->name, NULL, NULL, 0) == 0)
        request->json = mmp_buf_detach (&json, NULL);
    mmp_buf_free (&json);
}

int
pub_mock_next (pub_mock_t *self, int64_t now, pub_request_t *request)
{
    assert (self);
    if (self->count >= 0 && self->made >= self->count)
        return -1;
    if (now < self->next_due)
        return 0;
    s_mock_request (self, request);
    self->made++;
    if (self->rate > 0)
        //  Open loop: due times follow the start, so a stall is caught up.
        self->next_due = self->start + (int64_t) ((double) self->made * 1000.0 / self->rate);
    else
        self->next_due = now + (int64_t) (mdl_random_next (&self->random) * 1000.0);
    return 1;
}

int64_t
pub_mock_due (const pub_mock_t *self)
{
    assert (self);
    return self->next_due;
}

int64_t
pub_mock_left (const pub_mock_t *self)
{
    assert (self);
    return self->count < 0 ? -1 : self->count - self->made;
}
