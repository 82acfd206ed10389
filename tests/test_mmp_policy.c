/*  test_mmp_policy: the restart-policy parts of the MMP/1 codec
    (PROTOCOL.md section 4.1 "Restart policy" and section 10): the
    PAUSE, RESUME, GROUPS, INFLIGHT, WORKERS and RELOAD requests decode
    strictly, their open-ended replies decode with a tree, PUBACK's
    optional coalesced_with is written only when given and read back, and
    group events are written byte for byte.
*/
#include "mmp.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <string.h>

#define U1 "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
#define U2 "a0b1c2d3-e4f5-4a6b-8c7d-8e9fa0b1c2d3"

//  Decode text as command; returns the decoder's rc, *code the error code.
static int
s_try (const char *command, const char *text, mmp_direction_t direction, mmp_msg_t *msg,
       const char **code)
{
    mmp_error_t err;
    mmp_msg_init (msg);
    int rc = mmp_decode ("MMP1", 4, command, strlen (command), text, strlen (text), direction, msg, &err);
    *code = rc ? err.code : NULL;
    return rc;
}

static void
s_refused (const char *command, const char *text, const char *code)
{
    mmp_msg_t msg;
    const char *got;
    cr_expect_eq (s_try (command, text, MMP_TO_BROKER, &msg, &got), -2, "%s %s accepted", command, text);
    if (got)
        cr_expect_str_eq (got, code, "%s %s", command, text);
    mmp_msg_reset (&msg);
}

Test (mmp_policy, pause_and_resume_requests, .timeout = 10)
{
    mmp_msg_t msg;
    const char *code;
    cr_assert_eq (s_try ("PAUSE", "{\"group\":\"zone-a\",\"reason\":\"freeze\",\"req\":\"r1\"}",
                         MMP_TO_BROKER, &msg, &code), 0);
    cr_expect_eq (msg.command, MMP_PAUSE);
    cr_expect_str_eq (msg.group, "zone-a");
    cr_expect_str_eq (msg.reason, "freeze");
    cr_expect_str_eq (msg.req, "r1");
    cr_expect_not (msg.all);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_try ("RESUME", "{\"all\":true}", MMP_TO_BROKER, &msg, &code), 0);
    cr_expect (msg.all);
    cr_expect_null (msg.group);
    mmp_msg_reset (&msg);

    s_refused ("PAUSE", "{}", MMP_ERR_MISSING_FIELD);
    s_refused ("PAUSE", "{\"reason\":\"x\"}", MMP_ERR_MISSING_FIELD);
    s_refused ("PAUSE", "{\"all\":false}", MMP_ERR_BAD_VALUE);
    s_refused ("PAUSE", "{\"all\":1}", MMP_ERR_BAD_TYPE);
    s_refused ("PAUSE", "{\"all\":true,\"group\":\"a\"}", MMP_ERR_BAD_VALUE);
    s_refused ("PAUSE", "{\"group\":\"\"}", MMP_ERR_BAD_VALUE);
    s_refused ("PAUSE", "{\"group\":7}", MMP_ERR_BAD_TYPE);
    s_refused ("PAUSE", "{\"group\":\"a\",\"extra\":1}", MMP_ERR_UNKNOWN_FIELD);
    s_refused ("RESUME", "{\"group\":\"a\",\"reason\":\"x\"}", MMP_ERR_UNKNOWN_FIELD);
    char long_group [400];
    memset (long_group, 'g', sizeof long_group);
    snprintf (long_group, sizeof long_group, "{\"group\":\"%0300d\"}", 0);
    s_refused ("PAUSE", long_group, MMP_ERR_TOO_LONG);
}

Test (mmp_policy, listing_requests, .timeout = 10)
{
    mmp_msg_t msg;
    const char *code;
    cr_assert_eq (s_try ("INFLIGHT", "{\"limit\":50}", MMP_TO_BROKER, &msg, &code), 0);
    cr_expect_eq (msg.limit, 50);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_try ("INFLIGHT", "{}", MMP_TO_BROKER, &msg, &code), 0);
    cr_expect_eq (msg.limit, -1);
    mmp_msg_reset (&msg);
    s_refused ("INFLIGHT", "{\"limit\":0}", MMP_ERR_BAD_VALUE);
    s_refused ("INFLIGHT", "{\"limit\":100001}", MMP_ERR_BAD_VALUE);
    const char *plain [] = { "GROUPS", "WORKERS", "RELOAD" };
    for (int i = 0; i < 3; i++) {
        cr_expect_eq (s_try (plain [i], "{\"req\":\"x\"}", MMP_TO_BROKER, &msg, &code), 0, "%s", plain [i]);
        mmp_msg_reset (&msg);
        s_refused (plain [i], "{\"limit\":5}", MMP_ERR_UNKNOWN_FIELD);
    }
}

Test (mmp_policy, replies_are_open_ended, .timeout = 10)
{
    const char *names [] = { "PAUSE", "RESUME", "GROUPS", "INFLIGHT", "WORKERS", "RELOAD" };
    for (int i = 0; i < 6; i++) {
        mmp_msg_t msg;
        const char *code;
        cr_assert_eq (s_try (names [i], "{\"anything\":[1,2],\"req\":\"q\"}", MMP_FROM_BROKER, &msg,
                             &code), 0, "%s", names [i]);
        cr_expect_str_eq (msg.req, "q");
        cr_assert_not_null (msg.body);
        cr_expect (cJSON_IsArray (cJSON_GetObjectItemCaseSensitive (msg.body, "anything")));
        mmp_msg_reset (&msg);
        cr_expect_eq (s_try (names [i], "{\"req\":5}", MMP_FROM_BROKER, &msg, &code), -2);
        mmp_msg_reset (&msg);
    }
}

Test (mmp_policy, group_command_encoder, .timeout = 10)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_group_command (&buf, MMP_PAUSE, "zone-a", "deploy \"7\"", "r"), 0);
    cr_expect_str_eq (mmp_buf_data (&buf), "{\"group\":\"zone-a\",\"reason\":\"deploy \\\"7\\\"\",\"req\":\"r\"}");
    cr_assert_eq (mmp_encode_group_command (&buf, MMP_RESUME, NULL, "ignored", NULL), 0);
    cr_expect_str_eq (mmp_buf_data (&buf), "{\"all\":true}");
    mmp_msg_t msg;
    const char *code;
    cr_assert_eq (s_try ("RESUME", mmp_buf_data (&buf), MMP_TO_BROKER, &msg, &code), 0);
    cr_expect (msg.all);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_group_event (&buf, "group_paused", 1000, "zone-a", "error stop"), 0);
    cr_expect_str_eq (mmp_buf_data (&buf),
                      "{\"event\":\"group_paused\",\"at_ms\":1000,\"group\":\"zone-a\",\"reason\":\"error stop\"}");
    cr_assert_eq (mmp_encode_group_event (&buf, "group_resumed", 5, "*", NULL), 0);
    cr_expect_str_eq (mmp_buf_data (&buf), "{\"event\":\"group_resumed\",\"at_ms\":5,\"group\":\"*\"}");
    mmp_buf_free (&buf);
}

Test (mmp_policy, puback_coalesced_with, .timeout = 10)
{
    char ids [2][37] = { U1, U2 };
    const char *coalesced [2] = { NULL, U1 };
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_puback_coalesced (&buf, ids [0], sizeof ids [0], NULL, coalesced, 2,
                                               "batch", "r"), 0);
    cr_expect (strstr (mmp_buf_data (&buf), "\"coalesced_with\":{\"" U2 "\":\"" U1 "\"}"));
    mmp_msg_t msg;
    const char *code;
    cr_assert_eq (s_try ("PUBACK", mmp_buf_data (&buf), MMP_FROM_BROKER, &msg, &code), 0);
    const cJSON *with = cJSON_GetObjectItemCaseSensitive (msg.body, "coalesced_with");
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (with, U2)->valuestring, U1);
    mmp_msg_reset (&msg);
    //  Nothing coalesced: the PUBACK is what it always was
    const char *none [2] = { NULL, NULL };
    cr_assert_eq (mmp_encode_puback_coalesced (&buf, ids [0], sizeof ids [0], NULL, none, 2, "batch", NULL), 0);
    cr_expect_null (strstr (mmp_buf_data (&buf), "coalesced_with"));
    mmp_buf_t old;
    mmp_buf_init (&old);
    cr_assert_eq (mmp_encode_puback (&old, ids [0], sizeof ids [0], NULL, 2, "batch", NULL), 0);
    cr_expect_str_eq (mmp_buf_data (&buf), mmp_buf_data (&old));
    mmp_buf_free (&old);
    mmp_buf_free (&buf);
    cr_expect_eq (s_try ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[],\"durability\":"
                         "\"batch\",\"coalesced_with\":[]}", MMP_FROM_BROKER, &msg, &code), -2);
    cr_expect_str_eq (code, MMP_ERR_BAD_TYPE);
    mmp_msg_reset (&msg);
}
