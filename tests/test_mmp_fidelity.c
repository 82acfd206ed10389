/*  test_mmp_fidelity: the codec against the letter of proto/PROTOCOL.md,
    where an independent client found it lenient or silent: RFC 8259
    numbers, UTF-8, req in ERROR, attributes carried byte for byte, and
    only attributes a DELIVER can carry accepted.
    No sockets: every case goes through mmp_decode or an encoder.
*/
#include "mmp.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U1 "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"

//  Decode body (size bytes) as command to the broker; returns the code or "ok".
static const char *
s_code (const char *command, const char *body, size_t size, mmp_error_t *err)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    int rc = mmp_decode ("MMP1", 4, command, strlen (command), body, size,
                         MMP_TO_BROKER, &msg, err);
    mmp_msg_reset (&msg);
    return rc == 0 ? "ok" : err->code;
}

static void
s_expect (const char *command, const char *body, const char *code)
{
    mmp_error_t err;
    const char *got = s_code (command, body, strlen (body), &err);
    cr_assert_str_eq (got, code, "%s %s: got %s (%s)", command, body, got,
                      strcmp (got, "ok") ? err.reason : "");
}

//  True when text is valid UTF-8 (RFC 3629).
static bool
s_utf8_ok (const char *text, size_t size)
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

//  Item 1: RFC 8259 numbers.
Test (mmp_fidelity, numbers_follow_rfc_8259, .timeout = 10)
{
    const char *bad [] = { "01", "1.", "-", ".5", "1e", "1e+", "+1", "-01", "0x10", "1.e3",
                           "Infinity", "NaN", "--1", "1ee3", "00" };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body [96];
        snprintf (body, sizeof body, "{\"limit\":%s}", bad [i]);
        s_expect ("DEADLETTERS", body, MMP_ERR_BAD_JSON);
        //  Also where numbers are free-form: inside attributes
        snprintf (body, sizeof body,
                  "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"n\":%s}}]}", bad [i]);
        s_expect ("PUBLISH", body, MMP_ERR_BAD_JSON);
    }
    const char *good [] = { "1", "10", "1.0", "1e0", "1E+0", "10e-1", "100000e-5" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        char body [64];
        snprintf (body, sizeof body, "{\"limit\":%s}", good [i]);
        s_expect ("DEADLETTERS", body, "ok");
    }
    //  Valid numbers that are not whole or are out of range stay bad_value
    s_expect ("DEADLETTERS", "{\"limit\":1.5}", MMP_ERR_BAD_VALUE);
    s_expect ("DEADLETTERS", "{\"limit\":-0.0}", MMP_ERR_BAD_VALUE);
    s_expect ("DEADLETTERS", "{\"limit\":1e400}", MMP_ERR_BAD_VALUE);
}

//  Item 2: invalid UTF-8 is bad_json, and never echoed.
Test (mmp_fidelity, invalid_utf8_is_bad_json, .timeout = 10)
{
    const char *bad [] = {
        "\xff", "\xc0\xaf", "\xed\xa0\x80", "\xe2\x82", "\xf0\x9f\x98", "\xc2",
        "\xf4\x90\x80\x80", "\xe0\x80\xaf", "\x80", "a\xfe" "b"
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        char body [96];
        snprintf (body, sizeof body, "{\"req\":\"%s\"}", bad [i]);
        mmp_error_t err;
        cr_assert_str_eq (s_code ("STATS", body, strlen (body), &err), MMP_ERR_BAD_JSON,
                          "case %zu", i);
        cr_assert_eq (err.req [0], 0, "an invalid req must not be kept for the ERROR");
        cr_assert (s_utf8_ok (err.reason, strlen (err.reason)), "reason echoes bad bytes");
        //  In a member name and inside attributes too
        snprintf (body, sizeof body, "{\"%s\":1}", bad [i]);
        s_expect ("STATS", body, MMP_ERR_BAD_JSON);
        snprintf (body, sizeof body,
                  "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"k\":\"%s\"}}]}", bad [i]);
        s_expect ("PUBLISH", body, MMP_ERR_BAD_JSON);
    }
    //  Escapes that would decode to invalid UTF-8: lone surrogates
    s_expect ("STATS", "{\"req\":\"\\ud800\"}", MMP_ERR_BAD_JSON);
    s_expect ("STATS", "{\"req\":\"\\udc00\"}", MMP_ERR_BAD_JSON);
    s_expect ("STATS", "{\"req\":\"\\ud800\\u0041\"}", MMP_ERR_BAD_JSON);
    //  Valid: a pair, and raw multi-byte characters
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    const char *body = "{\"req\":\"\\ud83d\\ude00 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80\"}";
    cr_assert_eq (mmp_decode ("MMP1", 4, "STATS", 5, body, strlen (body), MMP_TO_BROKER, &msg, NULL), 0);
    cr_assert_str_eq (msg.req, "\xf0\x9f\x98\x80 caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80");
    mmp_msg_reset (&msg);
}

//  The encoders never emit invalid UTF-8, whatever they are given.
Test (mmp_fidelity, encoders_emit_valid_utf8, .timeout = 10)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_error (&buf, MMP_ERR_BAD_JSON, "bad \xff\xc0\xaf here", "q\xed\xa0\x80"), 0);
    cr_assert (s_utf8_ok (mmp_buf_data (&buf), mmp_buf_size (&buf)));
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    cr_assert_eq (mmp_decode ("MMP1", 4, "ERROR", 5, mmp_buf_data (&buf), mmp_buf_size (&buf),
                              MMP_FROM_BROKER, &msg, NULL), 0);
    mmp_msg_reset (&msg);
    mmp_buf_free (&buf);
}

//  Item 3: the decoder keeps a readable req for the ERROR it causes.
Test (mmp_fidelity, error_keeps_req, .timeout = 10)
{
    struct { const char *command, *body, *code, *req; } cases [] = {
        { "PUBLISH", "{\"req\":\"b1\",\"messages\":[{\"instance_name\":\"bad_name\"}]}",
          MMP_ERR_BAD_INSTANCE_NAME, "b1" },
        //  req after the fault, and a fault before req is read
        { "PUBLISH", "{\"messages\":[],\"req\":\"b2\"}", MMP_ERR_BAD_VALUE, "b2" },
        { "PUBLISH", "{\"bogus\":1,\"req\":\"b3\"}", MMP_ERR_UNKNOWN_FIELD, "b3" },
        { "DEADLETTERS", "{\"limit\":0,\"req\":\"d\\u0041\"}", MMP_ERR_BAD_VALUE, "dA" },
        { "REPLAY", "{\"req\":\"r\",\"message_ids\":[\"nope\"]}", MMP_ERR_BAD_MESSAGE_ID, "r" },
        //  Not readable: bad JSON, req not a string, req too long
        { "STATS", "{\"req\":\"x\",}", MMP_ERR_BAD_JSON, "" },
        { "PUBLISH", "{\"req\":5,\"messages\":[]}", MMP_ERR_BAD_TYPE, "" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        mmp_error_t err;
        cr_assert_str_eq (s_code (cases [i].command, cases [i].body, strlen (cases [i].body), &err),
                          cases [i].code, "case %zu", i);
        cr_assert_str_eq (err.req, cases [i].req, "case %zu", i);
    }
    char body [400];
    char req [300];
    memset (req, 'r', 257);
    req [257] = 0;
    snprintf (body, sizeof body, "{\"req\":\"%s\",\"messages\":[]}", req);
    mmp_error_t err;
    cr_assert_str_eq (s_code ("PUBLISH", body, strlen (body), &err), MMP_ERR_TOO_LONG);
    cr_assert_str_eq (err.req, "");
    //  And the ERROR body carries it
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_error (&buf, MMP_ERR_BAD_VALUE, "x", "b2"), 0);
    cr_assert_str_eq (mmp_buf_data (&buf), "{\"code\":\"bad_value\",\"reason\":\"x\",\"req\":\"b2\"}");
    mmp_buf_free (&buf);
}

//  Item 5: attributes are the publisher's bytes, numbers as written.
//  The request as the broker stores it (json) and a DELIVER of it
//  (deliver), both initialised here; the caller frees them.
static void
s_deliver_request (const mmp_request_t *request, mmp_buf_t *json, mmp_buf_t *deliver)
{
    mmp_buf_init (json);
    mmp_buf_init (deliver);
    cr_assert_eq (mmp_encode_request (json, U1, request->instance_name, "a.example.net",
                                      request->attributes, request->attributes_size), 0);
    cr_assert_eq (mmp_encode_deliver_add (deliver, 0, 7, 1, 10000, 0, false, NULL, mmp_buf_data (json),
                                          mmp_buf_size (json)), 0);
    cr_assert_eq (mmp_encode_deliver_end (deliver), 0);
}

Test (mmp_fidelity, attributes_byte_for_byte, .timeout = 10)
{
    const char *attributes =
        "{\"a\":0.30000000000000004,\"b\":123456789012345678,\"c\":1e400,"
        " \"d\" : [ -0 , 1E+2 ], \"e\":\"\\u00e9\\n\"}";
    char body [512];
    snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":%s}]}",
              attributes);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    cr_assert_eq (mmp_decode ("MMP1", 4, "PUBLISH", 7, body, strlen (body), MMP_TO_BROKER, &msg, NULL), 0);
    const mmp_request_t *request = &msg.messages [0];
    cr_assert_eq (request->attributes_size, strlen (attributes));
    cr_assert_eq (memcmp (request->attributes, attributes, strlen (attributes)), 0);
    //  Stored as the broker stores it, and delivered: still the same bytes
    mmp_buf_t json, deliver;
    s_deliver_request (request, &json, &deliver);
    mmp_msg_reset (&msg);
    cr_assert (strstr (mmp_buf_data (&json), attributes));
    cr_assert (strstr (mmp_buf_data (&json), "\"hostname\":\"a.example.net\""));
    cr_assert_eq (mmp_decode ("MMP1", 4, "DELIVER", 7, mmp_buf_data (&deliver), mmp_buf_size (&deliver),
                              MMP_FROM_BROKER, &msg, NULL), 0);
    cr_assert_eq (msg.deliveries [0].message.attributes_size, strlen (attributes));
    cr_assert_eq (memcmp (msg.deliveries [0].message.attributes, attributes, strlen (attributes)), 0);
    mmp_msg_reset (&msg);
    mmp_buf_free (&json);
    mmp_buf_free (&deliver);
}

//  Attributes the broker accepts must fit the DELIVER that carries them
//  one level deeper: up to MMP_MAX_ATTRIBUTES_DEPTH (12) they decode in a
//  PUBLISH and again in its DELIVER; at 13 the PUBLISH is refused
//  too_deep (before, it was accepted and every worker refused its
//  DELIVER, so the request was dead-lettered without ever running).
Test (mmp_fidelity, accepted_attributes_fit_a_deliver, .timeout = 10)
{
    for (int levels = 1; levels <= MMP_MAX_DEPTH - 3; levels++) {
        char attributes [256] = "";
        for (int i = 1; i < levels; i++)
            strcat (attributes, "{\"a\":");
        strcat (attributes, "{}");
        for (int i = 1; i < levels; i++)
            strcat (attributes, "}");
        char body [512];
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":%s}]}",
                  attributes);
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        int rc = mmp_decode ("MMP1", 4, "PUBLISH", 7, body, strlen (body), MMP_TO_BROKER, &msg, &err);
        if (levels > MMP_MAX_ATTRIBUTES_DEPTH) {
            cr_expect_neq (rc, 0, "attributes %d deep were accepted", levels);
            if (rc != 0)
                cr_expect_str_eq (err.code, MMP_ERR_TOO_DEEP);
            mmp_msg_reset (&msg);
            continue;
        }
        cr_assert_eq (rc, 0, "attributes %d deep: %s", levels, err.reason);
        const mmp_request_t *request = &msg.messages [0];
        mmp_buf_t json, deliver;
        s_deliver_request (request, &json, &deliver);
        mmp_msg_reset (&msg);
        rc = mmp_decode ("MMP1", 4, "DELIVER", 7, mmp_buf_data (&deliver), mmp_buf_size (&deliver),
                         MMP_FROM_BROKER, &msg, &err);
        cr_expect_eq (rc, 0, "a DELIVER of attributes %d deep: %s", levels, rc ? err.reason : "");
        mmp_msg_reset (&msg);
        mmp_buf_free (&json);
        mmp_buf_free (&deliver);
    }
}
