/*  pub_mock: the --mock source of mandrill-publish: cattle-xxxx requests
    with uuid4 ids, paced like the tutorial's publisher (U[0,1) s between
    requests) or at a fixed rate, forever or up to a count.

    Pacing: at a fixed rate the due times follow the start (open loop: a
    stall is caught up, as a load generator must); otherwise each gap is
    drawn from the injected random source after the previous request.
    Time comes from the caller (now), so tests can pace it by hand.
    Cost: O(1) per request, one small allocation (its JSON text).
*/
#ifndef PUB_MOCK_H_INCLUDED
#define PUB_MOCK_H_INCLUDED

#include <stdint.h>

#include "mdl_clock.h"
#include "pub_request.h"

typedef struct _pub_mock_t pub_mock_t;

//  count: requests to make (-1 = forever); rate: requests per second (0 =
//  U[0,1) s gaps); start: monotonic ms of the first due time. The random
//  source is copied. Returns NULL when out of memory.
pub_mock_t *pub_mock_new (int64_t count, double rate, mdl_random_t random, int64_t start);
void pub_mock_destroy (pub_mock_t **self_p);

//  Make the next request if it is due at now. Returns 1 (request filled,
//  owned by the caller), 0 (none due yet: pub_mock_due says when) or -1
//  (all made).
int pub_mock_next (pub_mock_t *self, int64_t now, pub_request_t *request);

//  When the next request is due (monotonic ms).
int64_t pub_mock_due (const pub_mock_t *self);

//  The requests still to make (-1 = forever).
int64_t pub_mock_left (const pub_mock_t *self);

#endif
