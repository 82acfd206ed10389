/*  fuzz_mmp: libFuzzer target for the MMP/1 decoder, its encoders and the
    JSON string escaper.

    The input is split into the three MMP frames at its first two newline
    bytes: "MMP1\nACK\n{...}" is [MMP1][ACK][{...}], so the seed corpus is
    readable text. Missing frames are empty. Each input is decoded in both
    directions; a decoded message has every string and array it reports
    read in full, so a wrong count or a dangling pointer shows up under
    AddressSanitizer. What the decoder accepts, cJSON (a lenient parser)
    must accept too; every string it hands out, and the req kept for an
    ERROR, must be valid UTF-8; a request's attributes span must parse as
    an object of at most MMP_MAX_ATTRIBUTES bytes, and survive a trip
    through mmp_encode_request and a DELIVER unchanged. The body is also
    run through mmp_buf_json_string, whose output must always parse back,
    and must equal the input when the input is plain ASCII.
*/
#include "mmp.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

//  Results are added here so the reads cannot be optimised away.
volatile size_t fuzz_mmp_sink;

static bool
s_utf8 (const char *text, size_t size)
{
    const unsigned char *cursor = (const unsigned char *) text;
    const unsigned char *end = cursor + size;
    while (cursor < end) {
        size_t len = mmp_utf8_length (cursor, end);
        if (len == 0)
            return false;
        cursor += len;
    }
    return true;
}

//  A request's attributes: a JSON object as sent, carried unchanged
//  through the broker's encoder and a DELIVER.
static void
s_attributes (const mmp_request_t *request)
{
    if (!request->attributes)
        return;
    assert (request->attributes_size >= 2 && request->attributes_size <= MMP_MAX_ATTRIBUTES);
    assert (s_utf8 (request->attributes, request->attributes_size));
    cJSON *parsed = cJSON_ParseWithLength (request->attributes, request->attributes_size);
    assert (parsed && cJSON_IsObject (parsed));
    cJSON_Delete (parsed);
    mmp_buf_t json, deliver;
    mmp_buf_init (&json);
    mmp_buf_init (&deliver);
    int rc = mmp_encode_request (&json, "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f",
                                 request->instance_name, "fuzz.example.net",
                                 request->attributes, request->attributes_size);
    assert (rc == 0);
    rc = mmp_encode_deliver_add (&deliver, 0, 1, 1, 0, 0, false, NULL, mmp_buf_data (&json), mmp_buf_size (&json));
    assert (rc == 0 && mmp_encode_deliver_end (&deliver) == 0);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    rc = mmp_decode ("MMP1", 4, "DELIVER", 7, mmp_buf_data (&deliver), mmp_buf_size (&deliver),
                     MMP_FROM_BROKER, &msg, &err);
    assert (rc == 0);
    assert (msg.deliveries [0].message.attributes_size == request->attributes_size);
    assert (memcmp (msg.deliveries [0].message.attributes, request->attributes,
                    request->attributes_size) == 0);
    mmp_msg_reset (&msg);
    mmp_buf_free (&json);
    mmp_buf_free (&deliver);
}

//  Read everything a decoded message points to.
static size_t
s_touch (const mmp_msg_t *msg)
{
    size_t sum = 0;
    const char *texts [] = { msg->req, msg->name, msg->subscription, msg->reason,
                             msg->code, msg->durability };
    for (size_t i = 0; i < sizeof texts / sizeof *texts; i++)
        if (texts [i]) {
            sum += strlen (texts [i]);
            assert (s_utf8 (texts [i], strlen (texts [i])));
        }
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        assert (request->instance_name);
        sum += strlen (request->instance_name);
        if (request->message_id)
            assert (strlen (request->message_id) == 36);
        if (request->hostname)
            assert (mmp_valid_hostname (request->hostname, strlen (request->hostname)));
        s_attributes (request);
    }
    for (size_t i = 0; i < msg->delivery_count; i++) {
        const mmp_delivery_t *delivery = &msg->deliveries [i];
        assert (delivery->delivery_id >= 1 && delivery->delivery_id <= MMP_MAX_DELIVERY_ID);
        assert (delivery->attempt >= 1);
        assert (delivery->message.message_id && delivery->message.hostname);
        sum += strlen (delivery->message.instance_name) + delivery->steps;
        s_attributes (&delivery->message);
    }
    for (size_t i = 0; i < msg->id_count; i++)
        sum += (size_t) msg->ids [i];
    for (size_t i = 0; i < msg->stale_count; i++)
        sum += (size_t) msg->stale [i];
    for (size_t i = 0; i < msg->unknown_count; i++)
        sum += (size_t) msg->unknown [i];
    for (size_t i = 0; i < msg->message_id_count; i++)
        assert (strlen (msg->message_ids [i]) == 36);
    for (size_t i = 0; i < msg->other_id_count; i++)
        assert (strlen (msg->other_ids [i]) == 36);
    return sum;
}

static void
s_escape (const uint8_t *data, size_t size)
{
    char *text = malloc (size + 1);
    if (!text)
        return;
    memcpy (text, data, size);
    text [size] = 0;
    bool ascii = true;
    for (size_t i = 0; i < size && text [i]; i++)
        if ((unsigned char) text [i] >= 0x80)
            ascii = false;
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_json_string (&buf, text);
    assert (!mmp_buf_failed (&buf));
    assert (s_utf8 (mmp_buf_data (&buf), mmp_buf_size (&buf)));
    cJSON *parsed = cJSON_ParseWithLength (mmp_buf_data (&buf), mmp_buf_size (&buf));
    assert (parsed && cJSON_IsString (parsed));
    if (ascii)
        assert (strcmp (parsed->valuestring, text) == 0);
    cJSON_Delete (parsed);
    mmp_buf_free (&buf);
    free (text);
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    const uint8_t *frame [3] = { data, data + size, data + size };
    size_t frame_size [3] = { size, 0, 0 };
    const uint8_t *first = memchr (data, '\n', size);
    if (first) {
        frame_size [0] = (size_t) (first - data);
        frame [1] = first + 1;
        frame_size [1] = size - frame_size [0] - 1;
        const uint8_t *second = memchr (frame [1], '\n', frame_size [1]);
        if (second) {
            frame_size [1] = (size_t) (second - frame [1]);
            frame [2] = second + 1;
            frame_size [2] = size - (size_t) (frame [2] - data);
        }
    }
    for (int way = 0; way < 2; way++) {
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        int rc = mmp_decode (frame [0], frame_size [0], frame [1], frame_size [1],
                             frame [2], frame_size [2],
                             way? MMP_FROM_BROKER: MMP_TO_BROKER, &msg, &err);
        if (rc == 0) {
            fuzz_mmp_sink += s_touch (&msg);
            //  Strict accepts only what the lenient parser accepts too
            cJSON *parsed = cJSON_ParseWithLength ((const char *) frame [2], frame_size [2]);
            assert (parsed && cJSON_IsObject (parsed));
            cJSON_Delete (parsed);
        }
        else {
            assert (rc == -2 && err.code && err.reason [0]);
            assert (msg.body == NULL && msg.raw == NULL);
            assert (s_utf8 (err.reason, strlen (err.reason)));
            assert (strlen (err.req) <= MMP_MAX_TEXT && s_utf8 (err.req, strlen (err.req)));
        }
        mmp_msg_reset (&msg);
    }
    s_escape (frame [2], frame_size [2]);
    fuzz_mmp_sink += mmp_valid_instance_name ((const char *) data, size);
    fuzz_mmp_sink += mmp_valid_hostname ((const char *) data, size);
    return 0;
}
