/*  mmp_encode: every MMP/1 body Mandrill sends, built in one place. See
    mmp.h ("Encoders") for the API and PROTOCOL.md for the bodies.

    Each encoder appends one complete JSON object to a caller's mmp_buf_t
    (cleared first unless it says otherwise) and returns 0, or -1 when an
    allocation failed (the buffer then holds incomplete text and must not
    be sent). Strings that came from outside are escaped, cut to the
    limit the peer's decoder enforces, and never carry invalid UTF-8.
*/
#include "mmp.h"

#include <assert.h>
#include <string.h>

int
mmp_encode_error (mmp_buf_t *buf, const char *code, const char *reason, const char *req)
{
    assert (buf && code);
    //  Truncated so our own ERROR always passes the peer's too_long check
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"code\":");
    mmp_buf_json_string_max (buf, code, MMP_MAX_TEXT);
    mmp_buf_puts (buf, ",\"reason\":");
    mmp_buf_json_string_max (buf, reason? reason: "", MMP_MAX_TEXT);
    if (req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string_max (buf, req, MMP_MAX_TEXT);
    }
    mmp_buf_puts (buf, "}");
    return mmp_buf_failed (buf)? -1: 0;
}
