/*  cli_reply: see cli_reply.h. */
#include "cli_reply.h"
#include "mdl_fmt.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>

int
cli_reply_match (const mmp_msg_t *reply, const char *const reqs [], size_t count)
{
    assert (reply);
    if (!reply->req)
        return reply->command == MMP_ERROR ? CLI_REPLY_ANONYMOUS : CLI_REPLY_STALE;
    for (size_t i = 0; i < count; i++)
        if (reqs [i] && strcmp (reqs [i], reply->req) == 0)
            return (int) i;
    return CLI_REPLY_STALE;
}

void
cli_req_make (char *out, size_t size, const char *prefix, uint64_t seq)
{
    assert (out && size && prefix);
    char digits [MDL_FMT_U64_SIZE];
    mdl_fmt_u64 (digits, seq);
    snprintf (out, size, "%s-%s", prefix, digits);
}
