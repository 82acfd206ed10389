/*  cli_reply: the request/reply matching that mandrill-publish and
    mandrill-ctl share. Every request carries a "req" made here; a reply is
    matched to the request in flight with the same req. An ERROR without
    req is the broker refusing a body it could not read (too large, not
    JSON): it names no request, so the caller decides (one request in
    flight: that one). Anything else is a late answer to a request that is
    no longer in flight, and is dropped.
    Cost: O(requests in flight) per reply, no allocation.
*/
#ifndef CLI_REPLY_H_INCLUDED
#define CLI_REPLY_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#include "mmp.h"

#define CLI_REPLY_STALE     -1  //  Answers none of the requests in flight
#define CLI_REPLY_ANONYMOUS -2  //  ERROR without req

//  Which of reqs (count entries; a NULL entry is a free slot) reply
//  answers: its index, CLI_REPLY_ANONYMOUS or CLI_REPLY_STALE.
int cli_reply_match (const mmp_msg_t *reply, const char *const reqs [], size_t count);

//  Write "<prefix>-<seq>" into out (size bytes, truncated to fit).
void cli_req_make (char *out, size_t size, const char *prefix, uint64_t seq);

#endif
