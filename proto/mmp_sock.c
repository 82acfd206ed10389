/*  mmp_sock: MMP/1 messages on ZeroMQ sockets. See mmp.h for the API.

    mmp_recv always consumes one whole multipart message, whatever its
    shape, so a malformed one never desynchronises the socket; it keeps at
    most four parts and counts the rest. mmp_send copies (zmq_send) or
    references static text (zmq_send_const): after a failure nothing of
    the caller's is held by libzmq, so nothing leaks.
*/
#include "mmp.h"
#include "mmp_decode.h"

#include <assert.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

int
mmp_recv (zsock_t *sock, bool wait, zframe_t **routing_id,
          mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err)
{
    return mmp_recv_meta (sock, wait, routing_id, direction, msg, err, NULL);
}

//  Copy the message property name (metadata libzmq attached to the
//  connection) into out; "" when there is none.
static void
s_property (zmq_msg_t *part, const char *name, char *out, size_t size)
{
    const char *value = zmq_msg_gets (part, name);
    snprintf (out, size, "%s", value ? value : "");
}

int
mmp_recv_meta (zsock_t *sock, bool wait, zframe_t **routing_id,
               mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err, mmp_meta_t *meta)
{
    assert (sock);
    assert (msg);
    if (meta)
        meta->user_id [0] = meta->key [0] = 0;
    mmp_error_t spare;
    if (!err)
        err = &spare;
    //  Frame errors are found before the body is read: no req to echo
    err->code = NULL;
    err->reason [0] = 0;
    err->req [0] = 0;
    if (routing_id)
        *routing_id = NULL;
    void *handle = zsock_resolve (sock);
    assert (handle);

    //  Keep the first parts; count and drop the rest, so the whole
    //  multipart message is always consumed whatever its shape.
    enum { KEEP = 4 };
    zmq_msg_t parts [KEEP];
    size_t kept = 0;
    size_t total = 0;
    int rc = -1;
    int more = 1;
    while (more) {
        zmq_msg_t *part = kept < KEEP? &parts [kept]: NULL;
        zmq_msg_t spill;
        if (!part)
            part = &spill;
        zmq_msg_init (part);
        //  Only the first part can be absent: a multipart message arrives whole.
        int flags = (total == 0 && !wait)? ZMQ_DONTWAIT: 0;
        if (zmq_msg_recv (part, handle, flags) == -1) {
            zmq_msg_close (part);
            if (total == 0)
                goto done;      //  Nothing queued, timed out or interrupted
            //  Interrupted mid-message (only at context end): treat as bad
            total = 0;
            break;
        }
        more = zmq_msg_more (part);
        total++;
        if (part == &spill)
            zmq_msg_close (part);
        else
            kept++;
    }
    if (total == 0) {
        rc = mmp_fail (err, MMP_ERR_BAD_FRAMES, "message cut short");
        goto done;
    }
    //  A ROUTER's routing id part is made locally and carries no metadata:
    //  ask a part that came off the wire
    if (meta && kept > 0) {
        s_property (&parts [kept - 1], "User-Id", meta->user_id, sizeof meta->user_id);
        s_property (&parts [kept - 1], "Curve-Key", meta->key, sizeof meta->key);
    }
    size_t first = 0;
    if (routing_id) {
        *routing_id = zframe_new (zmq_msg_data (&parts [0]), zmq_msg_size (&parts [0]));
        first = 1;
    }
    if (total - first != 3) {
        rc = mmp_fail (err, MMP_ERR_BAD_FRAMES, "%zu frames, an MMP message has 3", total - first);
        goto done;
    }
    rc = mmp_decode (zmq_msg_data (&parts [first]), zmq_msg_size (&parts [first]),
                     zmq_msg_data (&parts [first + 1]), zmq_msg_size (&parts [first + 1]),
                     zmq_msg_data (&parts [first + 2]), zmq_msg_size (&parts [first + 2]),
                     direction, msg, err);
done:
    for (size_t i = 0; i < kept; i++)
        zmq_msg_close (&parts [i]);
    return rc;
}

int
mmp_send (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
          const char *json, size_t json_size)
{
    assert (sock);
    const char *name = mmp_command_name (command);
    assert (name);
    if (!json) {
        json = "{}";
        json_size = 2;
    }
    void *handle = zsock_resolve (sock);
    assert (handle);
    //  zmq_send copies and zmq_send_const references: nothing of ours is
    //  held by libzmq after a failure, so nothing can leak. Only the first
    //  part can fail on a full or unroutable peer; libzmq takes the rest
    //  of a multipart message whole once it took the first part.
    if (routing_id
    &&  zmq_send (handle, zframe_data (routing_id), zframe_size (routing_id), ZMQ_SNDMORE) == -1)
        return -1;
    if (zmq_send_const (handle, MMP_SIGNATURE, 4, ZMQ_SNDMORE) == -1
    ||  zmq_send_const (handle, name, strlen (name), ZMQ_SNDMORE) == -1
    ||  zmq_send (handle, json, json_size, 0) == -1)
        return -1;
    return 0;
}

int
mmp_send_json (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
               const cJSON *body)
{
    assert (body);
    char *text = cJSON_PrintUnformatted (body);
    if (!text)
        return -1;
    int rc = mmp_send (sock, routing_id, command, text, strlen (text));
    cJSON_free (text);
    return rc;
}

int
mmp_send_error (zsock_t *sock, zframe_t *routing_id, const char *code,
                const char *reason, const char *req)
{
    assert (code);
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    int rc = mmp_encode_error (&buf, code, reason, req);
    if (rc == 0)
        rc = mmp_send (sock, routing_id, MMP_ERROR, mmp_buf_data (&buf), mmp_buf_size (&buf));
    mmp_buf_free (&buf);
    return rc;
}
