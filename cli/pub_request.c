/*  pub_request: see pub_request.h. */
#include "pub_request.h"
#include "mdl_uuid.h"
#include "mmp.h"

#include <czmq.h>
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

void
pub_request_free (pub_request_t *request)
{
    free (request->json);
    request->json = NULL;
}

//  A line is checked by the protocol's own decoder, as the body of a
//  one-request PUBLISH, so the publisher and the broker cannot disagree on
//  what is valid. The wrapper (mmp_encode_publish_begin)
//  comes before the line's bytes, which offsets account for.

//  Decode body as a PUBLISH the broker would receive. Returns the decoded
//  request (owned by *msg) or NULL with err filled.
static const mmp_request_t *
s_decode_one (const char *body, size_t size, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_msg_init (msg);
    if (mmp_decode (MMP_SIGNATURE, strlen (MMP_SIGNATURE), "PUBLISH", 7, body, size,
                    MMP_TO_BROKER, msg, err) != 0)
        return NULL;
    //  A line such as {...},{...} decodes as two requests: it is not one
    //  JSON value. (Closing the array early leaves "]}" as text after the
    //  body, which the decoder already refuses.)
    if (msg->message_count != 1 || msg->req) {
        mmp_msg_reset (msg);
        err->code = MMP_ERR_BAD_JSON;
        snprintf (err->reason, sizeof err->reason, "body is not one JSON object");
        return NULL;
    }
    return &msg->messages [0];
}

//  Turn the decoder's error on a wrapped line into text about the line:
//  field paths lose their "messages[0]." and byte offsets become columns.
//  column_base is the line's column of the request's first byte, minus 1;
//  wrapper is the size of the PUBLISH text before it.
static void
s_explain (const mmp_error_t *err, size_t wrapper, size_t column_base, char *error, size_t error_size)
{
    const char *reason = err->reason;
    const char *prefix = "messages[0]";
    if (strncmp (reason, prefix, strlen (prefix)) == 0) {
        reason += strlen (prefix);
        if (*reason == '.')
            reason++;
        else
        if (*reason == ':')
            reason = reason + strspn (reason, ": ");
    }
    else
    if (strncmp (reason, "req", 3) == 0 || strncmp (reason, "messages", 8) == 0) {
        //  The line closed the wrapper's array and went on outside it.
        snprintf (error, error_size, "%s: line is not one JSON object", MMP_ERR_BAD_JSON);
        return;
    }
    char text [sizeof err->reason + 64];
    snprintf (text, sizeof text, "%s", reason);
    if (strncmp (text, "body ", 5) == 0)
        memcpy (text, "line ", 5);
    //  "... at byte N" counts bytes of the wrapped body.
    char *at = strstr (text, " at byte ");
    size_t offset;
    char rest;
    if (at && sscanf (at + 9, "%zu%c", &offset, &rest) == 1 && offset >= wrapper)
        snprintf (at, sizeof text - (size_t) (at - text), " at column %zu",
                  offset - wrapper + column_base + 1);
    if (streq (err->code, MMP_ERR_BAD_INSTANCE_NAME))
        //  The codec's reason text names lower case only; upper case is
        //  valid too (RFC 1123 names are case-insensitive).
        snprintf (text, sizeof text, "instance_name: not an RFC 1123 label: 1 to %d letters "
                  "(A-Z or a-z, case-insensitive), digits and '-', not starting or ending with '-'",
                  MMP_MAX_INSTANCE);
    else
    if (streq (err->code, MMP_ERR_UNKNOWN_FIELD))
        strncat (text, " (a request has only message_id, instance_name, hostname, attributes)",
                 sizeof text - strlen (text) - 1);
    else
    if (streq (err->code, MMP_ERR_TOO_DEEP))
        strncat (text, " (the PUBLISH body and its messages array count as 2 levels)",
                 sizeof text - strlen (text) - 1);
    snprintf (error, error_size, "%s: %s", err->code, text);
}

//  Check one input request (size bytes of JSON text) exactly as the broker
//  would, and fill *request with its printed form (a message_id added when
//  absent, lower-cased when present). Returns 0, or -1 with the decoder's
//  code and reason in error.
int
pub_request_from_json (const char *text, size_t size, size_t column_base,
                     pub_request_t *request, char *error, size_t error_size)
{
    memset (request, 0, sizeof *request);
    mmp_buf_t body;
    mmp_buf_init (&body);
    mmp_encode_publish_begin (&body);
    size_t prefix = mmp_buf_size (&body);
    mmp_encode_publish_add (&body, text, size);
    mmp_encode_publish_end (&body, NULL);
    if (mmp_buf_failed (&body)) {
        mmp_buf_free (&body);
        snprintf (error, error_size, "out of memory");
        return -1;
    }
    mmp_msg_t msg;
    mmp_error_t err;
    const mmp_request_t *decoded = s_decode_one (mmp_buf_data (&body), mmp_buf_size (&body), &msg, &err);
    mmp_buf_free (&body);
    if (!decoded) {
        s_explain (&err, prefix, column_base, error, error_size);
        return -1;
    }
    //  The decoder checked every field; decoded is one valid request.
    int rc = -1;
    if (decoded->message_id) {
        //  The broker lower-cases ids; so do we, to match its replies.
        for (int i = 0; i < 36; i++)
            request->id [i] = (char) tolower ((unsigned char) decoded->message_id [i]);
    }
    else
        mdl_uuid4 (request->id);
    snprintf (request->name, sizeof request->name, "%s", decoded->instance_name);
    //  Attributes go out as the bytes read, never re-printed
    mmp_buf_init (&body);
    if (mmp_encode_request (&body, request->id, decoded->instance_name, decoded->hostname,
                            decoded->attributes, decoded->attributes_size) == 0)
        request->json = mmp_buf_detach (&body, NULL);
    mmp_buf_free (&body);
    mmp_msg_reset (&msg);
    if (!request->json) {
        snprintf (error, error_size, "out of memory");
        goto done;
    }
    //  What goes on the wire is the reprinted object: check that too, so a
    //  difference between the input and its reprint can never reach the
    //  broker unchecked.
    mmp_buf_init (&body);
    mmp_encode_publish_begin (&body);
    mmp_encode_publish_add (&body, request->json, strlen (request->json));
    mmp_encode_publish_end (&body, NULL);
    bool failed = mmp_buf_failed (&body);
    decoded = failed ? NULL : s_decode_one (mmp_buf_data (&body), mmp_buf_size (&body), &msg, &err);
    mmp_buf_free (&body);
    if (!decoded) {
        if (failed)
            snprintf (error, error_size, "out of memory");
        else {
            char reason [240];
            s_explain (&err, prefix, 0, reason, sizeof reason);
            snprintf (error, error_size, "as reprinted for sending: %s", reason);
        }
        goto done;
    }
    mmp_msg_reset (&msg);
    rc = 0;
done:
    if (rc != 0) {
        free (request->json);
        request->json = NULL;
    }
    return rc;
}

int
pub_request_instance (const char *instance, const char *hostname, const char *message_id,
                      pub_request_t *request, char *error, size_t error_size)
{
    mmp_buf_t json;
    mmp_buf_init (&json);
    char *text = mmp_encode_request (&json, message_id, instance, hostname, NULL, 0) == 0
               ? mmp_buf_detach (&json, NULL) : NULL;
    mmp_buf_free (&json);
    snprintf (error, error_size, "out of memory");
    int rc = text ? pub_request_from_json (text, strlen (text), 0, request, error, error_size) : -1;
    free (text);
    return rc;
}
