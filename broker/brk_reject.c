/*  brk_reject: answering and logging peers' mistakes; see
    brk_server_internal.h. Every bad input gets an ERROR back; the log
    line about it is rate-limited (20 a second, the rest counted) so that
    a flood of garbage cannot turn into a flood of log. Cost: O(1) per
    call, plus the hex of the routing id when a line is logged.
*/
#include "brk_server_internal.h"

#include "mdl_log.h"

void
brk_server_hex (const zframe_t *frame, char *out, size_t size)
{
    static const char digits [] = "0123456789abcdef";
    const byte *data = zframe_data ((zframe_t *) frame);
    size_t len = zframe_size ((zframe_t *) frame);
    size_t used = 0;
    for (size_t i = 0; i < len && used + 2 < size; i++) {
        out [used++] = digits [data [i] >> 4];
        out [used++] = digits [data [i] & 15];
    }
    out [used] = 0;
}

bool
brk_server_warn_allowed (s_server_t *self)
{
    mdl_rate_window_t window;
    bool allowed = mdl_rate_allow (self->warn_rate, &window);
    if (window.closed && window.dropped)
        mdl_warn ("%" PRId64 " more bad-input warnings suppressed in the last second",
                  window.dropped);
    return allowed;
}

void
s_reject (s_server_t *self, zsock_t *sock, const char *side, zframe_t *routing_id,
          const char *code, const char *reason, const char *req)
{
    if (brk_server_warn_allowed (self)) {
        char peer [64];
        brk_server_hex (routing_id, peer, sizeof peer);
        mdl_warn ("%s peer %s: %s: %s", side, peer, code, reason);
    }
    mmp_send_error (sock, routing_id, code, reason, req);
}
