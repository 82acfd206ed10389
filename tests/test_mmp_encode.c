/*  test_mmp_encode: the encoders of proto/mmp_encode.c. Every body they
    build decodes with the codec's own strict decoder to what was put in;
    DELIVER keeps to its byte budget (issue: 300 requests with 4 KB
    attributes at credit 1000 must all arrive, each frame at most
    MMP_MAX_BODY bytes). Event bodies are checked byte for byte.
*/
#include "mmp.h"

#include <cjson/cJSON.h>
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U1 "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
#define U2 "a0b1c2d3-e4f5-4a6b-8c7d-8e9fa0b1c2d3"

//  Decode buf as command in direction into *msg (must be reset by the caller).
static void
s_decode (const mmp_buf_t *buf, const char *command, mmp_direction_t direction, mmp_msg_t *msg)
{
    mmp_error_t err;
    mmp_msg_init (msg);
    int rc = mmp_decode ("MMP1", 4, command, strlen (command), mmp_buf_data (buf), mmp_buf_size (buf),
                         direction, msg, &err);
    cr_assert_eq (rc, 0, "%s %s: %s %s", command, mmp_buf_data (buf), rc ? err.code : "",
                  rc ? err.reason : "");
}

Test (mmp_encode, deliver_byte_budget, .timeout = 30)
{
    //  300 requests, each with attributes of 4 KB, at credit 1000: the old
    //  count-only cap put them all in one frame of about 1.3 MB
    char attributes [MMP_MAX_ATTRIBUTES + 1];
    memset (attributes, 'x', sizeof attributes);
    memcpy (attributes, "{\"pad\":\"", 8);
    memcpy (attributes + MMP_MAX_ATTRIBUTES - 2, "\"}", 2);
    attributes [MMP_MAX_ATTRIBUTES] = 0;
    mmp_buf_t request, frame;
    mmp_buf_init (&request);
    mmp_buf_init (&frame);
    cr_assert_eq (mmp_encode_request (&request, U1, "cattle-ab12", "cattle-ab12.example.net", attributes,
                                      MMP_MAX_ATTRIBUTES), 0);
    size_t frames = 0, arrived = 0, count = 0;
    uint64_t next_id = 1, expect_id = 1;
    for (int i = 0; i < 300; i++) {
        int rc = mmp_encode_deliver_add (&frame, count, next_id, 1, 10000, MMP_STEP_SAVE, false, NULL,
                                         mmp_buf_data (&request), mmp_buf_size (&request));
        if (rc == 1) {
            //  Full: close, "send" (decode as the worker would), start again
            cr_assert_eq (mmp_encode_deliver_end (&frame), 0);
            cr_assert_leq (mmp_buf_size (&frame), (size_t) MMP_MAX_BODY);
            mmp_msg_t msg;
            s_decode (&frame, "DELIVER", MMP_FROM_BROKER, &msg);
            cr_assert_eq (msg.delivery_count, count);
            for (size_t d = 0; d < msg.delivery_count; d++) {
                cr_assert_eq (msg.deliveries [d].delivery_id, expect_id++);
                cr_assert_eq (msg.deliveries [d].message.attributes_size, (size_t) MMP_MAX_ATTRIBUTES);
                cr_assert_eq (msg.deliveries [d].steps, MMP_STEP_SAVE);
            }
            arrived += msg.delivery_count;
            mmp_msg_reset (&msg);
            frames++;
            count = 0;
            rc = mmp_encode_deliver_add (&frame, 0, next_id, 1, 10000, MMP_STEP_SAVE, false, NULL,
                                         mmp_buf_data (&request), mmp_buf_size (&request));
        }
        cr_assert_eq (rc, 0);
        count++;
        next_id++;
    }
    cr_assert_eq (mmp_encode_deliver_end (&frame), 0);
    cr_assert_leq (mmp_buf_size (&frame), (size_t) MMP_MAX_BODY);
    mmp_msg_t msg;
    s_decode (&frame, "DELIVER", MMP_FROM_BROKER, &msg);
    arrived += msg.delivery_count;
    cr_assert_eq (msg.deliveries [msg.delivery_count - 1].delivery_id, 300);
    mmp_msg_reset (&msg);
    frames++;
    cr_assert_eq (arrived, 300);
    cr_assert_geq (frames, 2, "300 x 4 KB cannot fit one frame");
    mmp_buf_free (&request);
    mmp_buf_free (&frame);
}

Test (mmp_encode, deliver_count_cap, .timeout = 10)
{
    mmp_buf_t frame;
    mmp_buf_init (&frame);
    const char *request = "{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}";
    size_t count = 0;
    while (mmp_encode_deliver_add (&frame, count, count + 1, 1, 0, 0, false, NULL, request, strlen (request)) == 0)
        count++;
    cr_assert_eq (count, MMP_MAX_DELIVERIES);
    cr_assert_eq (mmp_encode_deliver_end (&frame), 0);
    mmp_msg_t msg;
    s_decode (&frame, "DELIVER", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.delivery_count, MMP_MAX_DELIVERIES);
    mmp_msg_reset (&msg);
    //  A single lease that cannot fit any frame is refused, not sent
    char *huge = malloc (MMP_MAX_BODY);
    cr_assert_not_null (huge);
    memset (huge, ' ', MMP_MAX_BODY);
    cr_assert_eq (mmp_encode_deliver_add (&frame, 0, 1, 1, 0, 0, false, NULL, huge, MMP_MAX_BODY), -1);
    free (huge);
    mmp_buf_free (&frame);
}

Test (mmp_encode, bodies_round_trip, .timeout = 10)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_msg_t msg;
    uint64_t ids [] = { 1, 22, 9007199254740991ULL };

    cr_assert_eq (mmp_encode_hello (&buf, 100, "w\"1", "restarts", 0), 0);
    s_decode (&buf, "HELLO", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.credit, 100);
    cr_assert_str_eq (msg.name, "w\"1");
    cr_assert_str_eq (msg.subscription, "restarts");
    cr_assert_eq (msg.features, 0);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_hello (&buf, 5, NULL, NULL,
                                    MMP_FEATURE_IN_DOUBT | MMP_FEATURE_VERIFY), 0);
    cr_assert (strstr (mmp_buf_data (&buf), "\"features\":[\"in_doubt\",\"verify\"]"));
    s_decode (&buf, "HELLO", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.features, MMP_FEATURE_IN_DOUBT | MMP_FEATURE_VERIFY);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_hello (&buf, 5, NULL, NULL, MMP_FEATURE_IN_DOUBT), 0);
    s_decode (&buf, "HELLO", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.features, MMP_FEATURE_IN_DOUBT);
    mmp_msg_reset (&msg);

    //  DELIVER: in_doubt only when asked; "started" never leaves the broker
    const char *request = "{\"message_id\":\"0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f\","
                          "\"instance_name\":\"a\",\"hostname\":\"a\"}";
    cr_assert_eq (mmp_encode_deliver_add (&buf, 0, 7, 2, 1000,
                                          MMP_STEP_SAVE | MMP_STEP_STARTED, true, NULL,
                                          request, strlen (request)), 0);
    cr_assert_eq (mmp_encode_deliver_add (&buf, 1, 8, 1, 1000, MMP_STEP_STARTED, false, NULL,
                                          request, strlen (request)), 0);
    cr_assert_eq (mmp_encode_deliver_end (&buf), 0);
    cr_assert_null (strstr (mmp_buf_data (&buf), "started"));
    s_decode (&buf, "DELIVER", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.delivery_count, 2);
    cr_assert (msg.deliveries [0].in_doubt);
    cr_assert_eq (msg.deliveries [0].steps, MMP_STEP_SAVE);
    cr_assert_not (msg.deliveries [1].in_doubt);
    cr_assert_eq (msg.deliveries [1].steps, 0);
    mmp_msg_reset (&msg);

    uint64_t one = 9;
    cr_assert_eq (mmp_encode_progress (&buf, &one, 1, MMP_STEP_STARTED), 0);
    cr_assert (strstr (mmp_buf_data (&buf), "\"steps\":[\"started\"]"));
    s_decode (&buf, "PROGRESS", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.steps, MMP_STEP_STARTED);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_progress (&buf, &one, 1, MMP_STEP_SAVE | MMP_STEP_RESTART | MMP_STEP_STARTED), 0);
    s_decode (&buf, "PROGRESS", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.steps, MMP_STEP_SAVE | MMP_STEP_RESTART | MMP_STEP_STARTED);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_welcome (&buf, 10000, 1000, 3), 0);
    s_decode (&buf, "WELCOME", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.epoch, 3);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_credit (&buf, 0), 0);
    s_decode (&buf, "CREDIT", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.credit, 0);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_empty (&buf), 0);
    s_decode (&buf, "HEARTBEAT", MMP_TO_BROKER, &msg);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_ack (&buf, ids, 3), 0);
    s_decode (&buf, "ACK", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.id_count, 3);
    cr_assert_eq (msg.ids [2], 9007199254740991ULL);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_extend (&buf, ids, 1, 5000), 0);
    s_decode (&buf, "EXTEND", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.extension_ms, 5000);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_nack (&buf, ids, 2, 0, "db\nfailed"), 0);
    s_decode (&buf, "NACK", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.delay_ms, 0);
    cr_assert_str_eq (msg.reason, "db\nfailed");
    cr_assert_not (msg.requeue);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_nack_requeue (&buf, ids, 2, "shutdown"), 0);
    s_decode (&buf, "NACK", MMP_TO_BROKER, &msg);
    cr_assert (msg.requeue);
    cr_assert_eq (msg.delay_ms, -1);
    cr_assert_str_eq (msg.reason, "shutdown");
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_progress (&buf, ids, 1, MMP_STEP_SAVE | MMP_STEP_RESTART), 0);
    s_decode (&buf, "PROGRESS", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.steps, MMP_STEP_SAVE | MMP_STEP_RESTART);
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_id_reply (&buf, ids, 1, ids + 1, 1, ids + 2, 1, 7000), 0);
    s_decode (&buf, "EXTENDED", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.deadline_ms, 7000);
    cr_assert_eq (msg.stale [0], 22);
    mmp_msg_reset (&msg);

    char block [2][37] = { U1, U2 };
    bool duplicates [2] = { false, true };
    cr_assert_eq (mmp_encode_puback (&buf, block [0], sizeof block [0], duplicates, 2, "sync", "b1"), 0);
    s_decode (&buf, "PUBACK", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.message_id_count, 2);
    cr_assert_eq (msg.other_id_count, 1);
    cr_assert_str_eq (msg.other_ids [0], U2);
    cr_assert_str_eq (msg.req, "b1");
    mmp_msg_reset (&msg);

    const char *list [] = { U1, U2 };
    cr_assert_eq (mmp_encode_replay (&buf, list, 2, "r"), 0);
    s_decode (&buf, "REPLAY", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.message_id_count, 2);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_replayed (&buf, list, 1, list + 1, 1, NULL), 0);
    s_decode (&buf, "REPLAYED", MMP_FROM_BROKER, &msg);
    cr_assert_str_eq (msg.other_ids [0], U2);
    mmp_msg_reset (&msg);

    const char *requests [] = {
        "{\"message_id\":\"" U1 "\",\"instance_name\":\"a\"}", "{\"instance_name\":\"b\"}"
    };
    cr_assert_eq (mmp_encode_publish (&buf, "p-1", requests, NULL, 2), 0);
    s_decode (&buf, "PUBLISH", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.message_count, 2);
    cr_assert_str_eq (msg.req, "p-1");
    mmp_msg_reset (&msg);

    cr_assert_eq (mmp_encode_request_only (&buf, "s", 0), 0);
    s_decode (&buf, "STATS", MMP_TO_BROKER, &msg);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_request_only (&buf, NULL, 5), 0);
    s_decode (&buf, "DEADLETTERS", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.limit, 5);
    mmp_msg_reset (&msg);

    //  Open-ended objects: commas placed by the writer
    mmp_encode_open (&buf);
    mmp_encode_member_array (&buf, "dead_letters");
    mmp_encode_item_object (&buf);
    mmp_encode_member_raw (&buf, "message", requests [0], strlen (requests [0]));
    mmp_encode_member_raw (&buf, "history", "", 0);
    mmp_buf_append (&buf, "[", 1);
    mmp_encode_history_entry (&buf, 1, 5, "w1", NULL, "expired", "", 10);
    mmp_encode_history_entry (&buf, 2, 6, "w2", NULL, "nacked", "exit 3", 20);
    mmp_encode_close_array (&buf);
    mmp_encode_close_object (&buf);
    mmp_encode_item_object (&buf);
    mmp_encode_close_object (&buf);
    mmp_encode_close_array (&buf);
    mmp_encode_member_int (&buf, "total", 2);
    cr_assert_eq (mmp_encode_close (&buf, "d1"), 0);
    s_decode (&buf, "DEADLETTERS", MMP_FROM_BROKER, &msg);
    cr_assert_str_eq (msg.req, "d1");
    cJSON *letters = cJSON_GetObjectItemCaseSensitive (msg.body, "dead_letters");
    cr_assert_eq (cJSON_GetArraySize (letters), 2);
    cJSON *history = cJSON_GetObjectItemCaseSensitive (cJSON_GetArrayItem (letters, 0), "history");
    cr_assert_eq (cJSON_GetArraySize (history), 2);
    mmp_msg_reset (&msg);
    mmp_buf_free (&buf);
}

//  Event bodies, byte for byte as brk_events has always sent them, with
//  each optional member left out in turn; each one parses as JSON.
static void
s_check_event (const char *expected, int members, const char *event, int64_t at_ms,
               const char *message_id, int64_t attempt, uint64_t delivery_id,
               const char *worker, const char *reason)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_event (&buf, event, at_ms, message_id, attempt, delivery_id,
                                    worker, NULL, reason), 0);
    cr_assert_eq (mmp_buf_size (&buf), strlen (expected), "%s", mmp_buf_data (&buf));
    cr_assert_str_eq (mmp_buf_data (&buf), expected);
    cJSON *json = cJSON_ParseWithLength (mmp_buf_data (&buf), mmp_buf_size (&buf));
    cr_assert_not_null (json, "not JSON: %s", mmp_buf_data (&buf));
    cr_assert (cJSON_IsObject (json));
    cr_assert_eq (cJSON_GetArraySize (json), members, "%s", mmp_buf_data (&buf));
    cJSON_Delete (json);
    mmp_buf_free (&buf);
}

Test (mmp_encode, event_bodies, .timeout = 10)
{
    s_check_event ("{\"event\":\"acked\",\"at_ms\":1700000000123,\"message_id\":\"" U1 "\","
                   "\"attempt\":2,\"delivery_id\":18446744073709551615,"
                   "\"worker\":\"w-1\",\"reason\":\"timeout\"}", 7,
                   "acked", 1700000000123, U1, 2, UINT64_MAX, "w-1", "timeout");
    //  No message: no attempt either, even when one is given
    s_check_event ("{\"event\":\"worker_lost\",\"at_ms\":5,\"delivery_id\":7,"
                   "\"worker\":\"w-1\",\"reason\":\"heartbeat\"}", 5,
                   "worker_lost", 5, NULL, 3, 7, "w-1", "heartbeat");
    s_check_event ("{\"event\":\"published\",\"at_ms\":5,\"message_id\":\"" U1 "\","
                   "\"delivery_id\":7,\"worker\":\"w-1\",\"reason\":\"r\"}", 6,
                   "published", 5, U1, 0, 7, "w-1", "r");
    s_check_event ("{\"event\":\"expired\",\"at_ms\":5,\"message_id\":\"" U1 "\","
                   "\"attempt\":1,\"worker\":\"w-1\",\"reason\":\"r\"}", 6,
                   "expired", 5, U1, 1, 0, "w-1", "r");
    s_check_event ("{\"event\":\"nacked\",\"at_ms\":5,\"message_id\":\"" U1 "\","
                   "\"attempt\":1,\"delivery_id\":7,\"reason\":\"r\"}", 6,
                   "nacked", 5, U1, 1, 7, NULL, "r");
    s_check_event ("{\"event\":\"delivered\",\"at_ms\":5,\"message_id\":\"" U1 "\","
                   "\"attempt\":1,\"delivery_id\":7,\"worker\":\"w-1\"}", 6,
                   "delivered", 5, U1, 1, 7, "w-1", NULL);
    s_check_event ("{\"event\":\"worker_joined\",\"at_ms\":0}", 2,
                   "worker_joined", 0, NULL, 0, 0, NULL, NULL);
    //  Outside text is escaped, so the body stays JSON
    s_check_event ("{\"event\":\"dead_lettered\",\"at_ms\":-1,\"worker\":\"a\\\"b\","
                   "\"reason\":\"line\\nnext\"}", 4,
                   "dead_lettered", -1, NULL, 0, 0, "a\"b", "line\nnext");
}

//  HELLO features: known names become bits, unknown ones are ignored, at
//  most MMP_MAX_FEATURES entries; DELIVER's optional publisher round-trips.
Test (mmp_encode, hello_features_and_deliver_publisher, .timeout = 10)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_msg_t msg;
    cr_assert_eq (mmp_encode_hello (&buf, 5, "w", NULL, MMP_FEATURE_PUBLISHER | MMP_FEATURE_IN_DOUBT), 0);
    cr_assert (strstr (mmp_buf_data (&buf), "\"features\":[\"in_doubt\",\"publisher\"]"), "%s",
               mmp_buf_data (&buf));
    s_decode (&buf, "HELLO", MMP_TO_BROKER, &msg);
    cr_assert_eq (msg.features, MMP_FEATURE_PUBLISHER | MMP_FEATURE_IN_DOUBT);
    mmp_msg_reset (&msg);
    cr_assert_eq (mmp_encode_hello (&buf, 5, "w", NULL, 0), 0);
    cr_assert_null (strstr (mmp_buf_data (&buf), "features"));

    const char *newer = "{\"credit\":1,\"features\":[\"teleport\",\"verify\"]}";
    mmp_error_t err;
    mmp_msg_init (&msg);
    cr_assert_eq (mmp_decode ("MMP1", 4, "HELLO", 5, newer, strlen (newer), MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.features, MMP_FEATURE_VERIFY);
    mmp_msg_reset (&msg);
    //  One feature over MMP_MAX_FEATURES
    char too_many [64 + 4 * (MMP_MAX_FEATURES + 1)];
    size_t at = (size_t) snprintf (too_many, sizeof too_many, "{\"credit\":1,\"features\":[");
    for (int i = 0; i <= MMP_MAX_FEATURES; i++)
        at += (size_t) snprintf (too_many + at, sizeof too_many - at, i ? ",\"a\"" : "\"a\"");
    snprintf (too_many + at, sizeof too_many - at, "]}");
    const char *bad [] = {
        "{\"credit\":1,\"features\":\"publisher\"}",
        "{\"credit\":1,\"features\":[1]}",
        too_many
    };
    const char *codes [] = { MMP_ERR_BAD_TYPE, MMP_ERR_BAD_TYPE, MMP_ERR_TOO_MANY };
    for (size_t i = 0; i < 3; i++) {
        mmp_msg_init (&msg);
        cr_assert_eq (mmp_decode ("MMP1", 4, "HELLO", 5, bad [i], strlen (bad [i]), MMP_TO_BROKER,
                                  &msg, &err), -2, "%s", bad [i]);
        cr_assert_str_eq (err.code, codes [i], "%s: %s", bad [i], err.reason);
        mmp_msg_reset (&msg);
    }

    mmp_buf_t request, frame;
    mmp_buf_init (&request);
    mmp_buf_init (&frame);
    cr_assert_eq (mmp_encode_request (&request, U1, "cattle-1", "cattle-1.example.net", NULL, 0), 0);
    cr_assert_eq (mmp_encode_deliver_add (&frame, 0, 1, 1, 1000, 0, false, "ali\"ce",
                                          mmp_buf_data (&request), mmp_buf_size (&request)), 0);
    cr_assert_eq (mmp_encode_deliver_add (&frame, 1, 2, 1, 1000, 0, false, NULL,
                                          mmp_buf_data (&request), mmp_buf_size (&request)), 0);
    cr_assert_eq (mmp_encode_deliver_end (&frame), 0);
    s_decode (&frame, "DELIVER", MMP_FROM_BROKER, &msg);
    cr_assert_eq (msg.delivery_count, 2);
    cr_assert_str_eq (msg.deliveries [0].publisher, "ali\"ce");
    cr_assert_null (msg.deliveries [1].publisher);
    mmp_msg_reset (&msg);
    mmp_buf_free (&request);
    mmp_buf_free (&frame);
    mmp_buf_free (&buf);
}
