/*  test_mmp_codec: the MMP/1 codec (proto/mmp_*.c).

    Round trips of every command in both directions over a real DEALER /
    ROUTER pair on 127.0.0.1, a corpus of malformed bodies each checked for
    its exact error code, frame-level errors through mmp_recv, the limits at
    and just over their bounds, the validators, and mmp_buf's JSON escaping.
*/
#include "mmp.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define U1 "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f"
#define U2 "A0B1C2D3-E4F5-4A6B-8C7D-8E9FA0B1C2D3"
#define U3 "11111111-2222-4333-8444-555555555555"

//  Pair of sockets: the test plays broker (router) and peer (dealer).
static zsock_t *s_router;
static zsock_t *s_dealer;
static zframe_t *s_peer;        //  The dealer's routing id as the router sees it

static void
s_sockets_up (void)
{
    zsys_handler_set (NULL);
    s_router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (s_router);
    int port = zsock_bind (s_router, "tcp://127.0.0.1:*");
    cr_assert_gt (port, 0);
    s_dealer = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (s_dealer);
    cr_assert_eq (zsock_connect (s_dealer, "tcp://127.0.0.1:%d", port), 0);
    zsock_set_rcvtimeo (s_router, 5000);
    zsock_set_rcvtimeo (s_dealer, 5000);
    zsock_set_sndtimeo (s_router, 5000);
    zsock_set_sndtimeo (s_dealer, 5000);
    zsock_set_linger (s_router, 0);
    zsock_set_linger (s_dealer, 0);

    //  Learn the dealer's routing id so the router can answer it
    cr_assert_eq (mmp_send (s_dealer, NULL, MMP_HEARTBEAT, "{}", 2), 0);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    cr_assert_eq (mmp_recv (s_router, true, &s_peer, MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.command, MMP_HEARTBEAT);
    cr_assert_not_null (s_peer);
    mmp_msg_reset (&msg);
}

static void
s_sockets_down (void)
{
    zframe_destroy (&s_peer);
    zsock_destroy (&s_dealer);
    zsock_destroy (&s_router);
}

//  Peer -> broker: send body as command, receive and decode at the router.
static void
s_to_broker (mmp_command_t command, const char *body, mmp_msg_t *msg)
{
    cr_assert_eq (mmp_send (s_dealer, NULL, command, body, strlen (body)), 0);
    mmp_error_t err = { NULL, "", "" };
    zframe_t *peer = NULL;
    mmp_msg_init (msg);
    int rc = mmp_recv (s_router, true, &peer, MMP_TO_BROKER, msg, &err);
    cr_assert_eq (rc, 0, "%s %s: %s %s", mmp_command_name (command), body,
                  err.code ? err.code : "", err.reason);
    cr_assert_not_null (peer);
    cr_assert (zframe_eq (peer, s_peer));
    zframe_destroy (&peer);
    cr_assert_eq (msg->command, command);
    cr_assert_eq (msg->direction, MMP_TO_BROKER);
    cr_assert_not_null (msg->raw);
}

//  Broker -> peer: the router sends, the dealer receives and decodes.
static void
s_from_broker (mmp_command_t command, const char *body, mmp_msg_t *msg)
{
    cr_assert_eq (mmp_send (s_router, s_peer, command, body, strlen (body)), 0);
    mmp_error_t err = { NULL, "", "" };
    mmp_msg_init (msg);
    int rc = mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, msg, &err);
    cr_assert_eq (rc, 0, "%s %s: %s %s", mmp_command_name (command), body,
                  err.code ? err.code : "", err.reason);
    cr_assert_eq (msg->command, command);
    cr_assert_eq (msg->direction, MMP_FROM_BROKER);
}

//  Decode a body directly; returns the code or "ok".
static const char *
s_decode_code (mmp_direction_t direction, const char *command, const char *body,
               size_t body_size, mmp_error_t *err)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    int rc = mmp_decode ("MMP1", 4, command, strlen (command), body, body_size,
                         direction, &msg, err);
    if (rc == 0) {
        cr_assert_not_null (msg.raw);
        mmp_msg_reset (&msg);
        return "ok";
    }
    cr_assert_eq (rc, -2);
    cr_assert_not_null (err->code);
    cr_assert_gt (strlen (err->reason), 0);
    //  A failed decode leaves the message empty
    cr_assert_null (msg.raw);
    cr_assert_null (msg.body);
    cr_assert_null (msg.messages);
    cr_assert_null (msg.deliveries);
    cr_assert_null (msg.ids);
    cr_assert_null (msg.message_ids);
    cr_assert_null (msg.other_ids);
    return err->code;
}

static void
s_expect (mmp_direction_t direction, const char *command, const char *body, const char *code)
{
    mmp_error_t err = { NULL, "", "" };
    const char *got = s_decode_code (direction, command, body, strlen (body), &err);
    cr_expect_str_eq (got, code, "%s %s %s: got %s (%s), want %s",
                      direction == MMP_TO_BROKER ? "to" : "from", command, body,
                      got, err.reason, code);
}

#define TO(cmd, body, code)   s_expect (MMP_TO_BROKER, cmd, body, code)
#define FROM(cmd, body, code) s_expect (MMP_FROM_BROKER, cmd, body, code)


//  --------------------------------------------------------------------------
//  Round trips, peer -> broker

TestSuite (mmp_to_broker, .init = s_sockets_up, .fini = s_sockets_down, .timeout = 20);

Test (mmp_to_broker, publish)
{
    mmp_msg_t msg;
    s_to_broker (MMP_PUBLISH,
        "{\"req\":\"r-1\",\"messages\":["
        "{\"message_id\":\"" U1 "\",\"instance_name\":\"cattle-ab12\","
        "\"hostname\":\"cattle-ab12.example.net\",\"attributes\":{\"zone\":\"eu\",\"n\":[1,2]}},"
        "{\"instance_name\":\"Cattle-0\"}]}", &msg);
    cr_assert_str_eq (msg.req, "r-1");
    cr_assert_eq (msg.message_count, 2);
    cr_assert_str_eq (msg.messages [0].message_id, U1);
    cr_assert_str_eq (msg.messages [0].instance_name, "cattle-ab12");
    cr_assert_str_eq (msg.messages [0].hostname, "cattle-ab12.example.net");
    cr_assert_not_null (msg.messages [0].attributes);
    //  Attributes are a span of the bytes as sent
    cr_assert_eq (msg.messages [0].attributes_size, strlen ("{\"zone\":\"eu\",\"n\":[1,2]}"));
    cr_assert_eq (memcmp (msg.messages [0].attributes, "{\"zone\":\"eu\",\"n\":[1,2]}",
                          msg.messages [0].attributes_size), 0);
    cr_assert_null (msg.messages [1].message_id);
    cr_assert_str_eq (msg.messages [1].instance_name, "Cattle-0");
    cr_assert_null (msg.messages [1].hostname);
    cr_assert_null (msg.messages [1].attributes);
    mmp_msg_reset (&msg);
    mmp_msg_reset (&msg);       //  Safe twice
    cr_assert_null (msg.raw);
    cr_assert_null (msg.body);
}

Test (mmp_to_broker, stats_and_deadletters)
{
    mmp_msg_t msg;
    s_to_broker (MMP_STATS, "{}", &msg);
    cr_assert_null (msg.req);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_STATS, "{\"req\":\"s\"}", &msg);
    cr_assert_str_eq (msg.req, "s");
    mmp_msg_reset (&msg);
    s_to_broker (MMP_DEADLETTERS, "{}", &msg);
    cr_assert_eq (msg.limit, -1);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_DEADLETTERS, "{\"limit\":100000,\"req\":\"d\"}", &msg);
    cr_assert_eq (msg.limit, 100000);
    cr_assert_str_eq (msg.req, "d");
    mmp_msg_reset (&msg);
}

Test (mmp_to_broker, replay)
{
    mmp_msg_t msg;
    s_to_broker (MMP_REPLAY, "{\"message_ids\":[\"" U1 "\",\"" U2 "\"],\"req\":\"x\"}", &msg);
    cr_assert_eq (msg.message_id_count, 2);
    cr_assert_str_eq (msg.message_ids [0], U1);
    cr_assert_str_eq (msg.message_ids [1], U2);
    cr_assert_str_eq (msg.req, "x");
    mmp_msg_reset (&msg);
}

Test (mmp_to_broker, hello_and_credit)
{
    mmp_msg_t msg;
    s_to_broker (MMP_HELLO, "{\"credit\":0}", &msg);
    cr_assert_eq (msg.credit, 0);
    cr_assert_null (msg.name);
    cr_assert_null (msg.subscription);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_HELLO, "{\"credit\":1000000,\"name\":\"worker-7\",\"subscription\":\"restart\"}", &msg);
    cr_assert_eq (msg.credit, 1000000);
    cr_assert_str_eq (msg.name, "worker-7");
    cr_assert_str_eq (msg.subscription, "restart");
    mmp_msg_reset (&msg);
    s_to_broker (MMP_CREDIT, "{\"credit\":42}", &msg);
    cr_assert_eq (msg.credit, 42);
    mmp_msg_reset (&msg);
}

Test (mmp_to_broker, extend_ack_nack_progress)
{
    mmp_msg_t msg;
    s_to_broker (MMP_EXTEND, "{\"delivery_ids\":[1,9007199254740991]}", &msg);
    cr_assert_eq (msg.id_count, 2);
    cr_assert_eq (msg.ids [0], 1);
    cr_assert_eq (msg.ids [1], 9007199254740991ULL);
    cr_assert_eq (msg.extension_ms, -1);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_EXTEND, "{\"delivery_ids\":[4294967297],\"extension_ms\":3600000}", &msg);
    cr_assert_eq (msg.ids [0], 4294967297ULL);
    cr_assert_eq (msg.extension_ms, 3600000);
    mmp_msg_reset (&msg);

    s_to_broker (MMP_ACK, "{\"delivery_ids\":[3,2,1]}", &msg);
    cr_assert_eq (msg.id_count, 3);
    cr_assert_eq (msg.ids [0], 3);
    cr_assert_eq (msg.ids [2], 1);
    mmp_msg_reset (&msg);

    s_to_broker (MMP_NACK, "{\"delivery_ids\":[5]}", &msg);
    cr_assert_eq (msg.delay_ms, -1);
    cr_assert_null (msg.reason);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_NACK, "{\"delivery_ids\":[5],\"delay_ms\":0,\"reason\":\"db down\"}", &msg);
    cr_assert_eq (msg.delay_ms, 0);
    cr_assert_str_eq (msg.reason, "db down");
    cr_assert_not (msg.requeue, "left out: false");
    mmp_msg_reset (&msg);
    s_to_broker (MMP_NACK, "{\"delivery_ids\":[5],\"reason\":\"shutdown\",\"requeue\":true}", &msg);
    cr_assert (msg.requeue);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_NACK, "{\"delivery_ids\":[5],\"requeue\" : false}", &msg);
    cr_assert_not (msg.requeue);
    mmp_msg_reset (&msg);

    s_to_broker (MMP_PROGRESS, "{\"delivery_ids\":[7],\"steps\":[\"restart\"]}", &msg);
    cr_assert_eq (msg.steps, MMP_STEP_RESTART);
    cr_assert_eq (msg.ids [0], 7);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_PROGRESS, "{\"delivery_ids\":[7],\"steps\":[\"restart\",\"save\"]}", &msg);
    cr_assert_eq (msg.steps, MMP_STEP_RESTART | MMP_STEP_SAVE);
    mmp_msg_reset (&msg);
}

Test (mmp_to_broker, heartbeat_and_bye)
{
    mmp_msg_t msg;
    s_to_broker (MMP_HEARTBEAT, "{}", &msg);
    mmp_msg_reset (&msg);
    s_to_broker (MMP_BYE, " { } \n", &msg);
    mmp_msg_reset (&msg);
}

Test (mmp_to_broker, send_json)
{
    cJSON *body = cJSON_CreateObject ();
    cJSON *ids = cJSON_AddArrayToObject (body, "delivery_ids");
    cJSON_AddItemToArray (ids, cJSON_CreateNumber (12));
    cr_assert_eq (mmp_send_json (s_dealer, NULL, MMP_ACK, body), 0);
    cJSON_Delete (body);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    zframe_t *peer = NULL;
    cr_assert_eq (mmp_recv (s_router, true, &peer, MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.command, MMP_ACK);
    cr_assert_eq (msg.id_count, 1);
    cr_assert_eq (msg.ids [0], 12);
    zframe_destroy (&peer);
    mmp_msg_reset (&msg);
}


//  --------------------------------------------------------------------------
//  Round trips, broker -> peer

TestSuite (mmp_from_broker, .init = s_sockets_up, .fini = s_sockets_down, .timeout = 20);

Test (mmp_from_broker, puback)
{
    mmp_msg_t msg;
    s_from_broker (MMP_PUBACK, "{\"message_ids\":[\"" U1 "\",\"" U2 "\"],\"duplicates\":[\"" U2 "\"],"
                   "\"durability\":\"sync\",\"req\":\"r\"}", &msg);
    cr_assert_eq (msg.message_id_count, 2);
    cr_assert_str_eq (msg.message_ids [1], U2);
    cr_assert_eq (msg.other_id_count, 1);
    cr_assert_str_eq (msg.other_ids [0], U2);
    cr_assert_str_eq (msg.durability, "sync");
    cr_assert_str_eq (msg.req, "r");
    mmp_msg_reset (&msg);
    s_from_broker (MMP_PUBACK, "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[],\"durability\":\"memory\"}", &msg);
    cr_assert_eq (msg.other_id_count, 0);
    cr_assert_null (msg.other_ids);
    cr_assert_null (msg.req);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, error)
{
    cr_assert_eq (mmp_send_error (s_router, s_peer, MMP_ERR_BAD_JSON, "body \"is\"\nbad", "q-9"), 0);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.command, MMP_ERROR);
    cr_assert_str_eq (msg.code, "bad_json");
    cr_assert_str_eq (msg.reason, "body \"is\"\nbad");
    cr_assert_str_eq (msg.req, "q-9");
    mmp_msg_reset (&msg);

    //  Over-long reason and req are cut so the peer's decoder accepts them
    char long_text [1000];
    memset (long_text, 'x', sizeof long_text - 1);
    long_text [sizeof long_text - 1] = 0;
    cr_assert_eq (mmp_send_error (s_router, s_peer, MMP_ERR_INTERNAL, long_text, long_text), 0);
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "%s", err.reason);
    cr_assert_eq (strlen (msg.reason), MMP_MAX_TEXT);
    cr_assert_eq (strlen (msg.req), MMP_MAX_TEXT);
    mmp_msg_reset (&msg);

    //  Invalid UTF-8 grows when replaced; multi-byte characters are never split
    char bad_text [600];
    memset (bad_text, 0xff, 599);
    bad_text [599] = 0;
    char euro_text [600] = "x";
    for (int i = 0; i < 199; i++)
        strcat (euro_text, "\xe2\x82\xac");
    cr_assert_eq (mmp_send_error (s_router, s_peer, MMP_ERR_INTERNAL, bad_text, euro_text), 0);
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "%s", err.reason);
    cr_assert_leq (strlen (msg.reason), MMP_MAX_TEXT);
    cr_assert_eq (strlen (msg.reason) % 3, 0);
    cr_assert_eq (strlen (msg.req), 1 + 3 * 85);
    mmp_msg_reset (&msg);

    //  Without req and reason
    cr_assert_eq (mmp_send_error (s_router, s_peer, MMP_ERR_UNAVAILABLE, NULL, NULL), 0);
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), 0);
    cr_assert_str_eq (msg.code, "unavailable");
    cr_assert_str_eq (msg.reason, "");
    cr_assert_null (msg.req);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, stats_and_deadletters)
{
    mmp_msg_t msg;
    s_from_broker (MMP_STATS, "{\"published\":10,\"in_flight\":2,\"durability\":\"batch\",\"future\":{\"x\":1},\"req\":\"z\"}", &msg);
    cr_assert_str_eq (msg.req, "z");
    cr_assert_eq (cJSON_GetObjectItemCaseSensitive (msg.body, "published")->valueint, 10);
    mmp_msg_reset (&msg);
    s_from_broker (MMP_DEADLETTERS,
        "{\"total\":1,\"dead_letters\":[{\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\","
        "\"hostname\":\"a.example.net\"},\"reason\":\"expired\",\"attempts\":5,\"dead_at_ms\":1700000000000,"
        "\"history\":[{\"attempt\":1,\"delivery_id\":4294967297,\"worker\":\"w\",\"outcome\":\"expired\",\"at_ms\":1}]}]}",
        &msg);
    cr_assert_eq (cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (msg.body, "dead_letters")), 1);
    cr_assert_null (msg.req);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, replayed)
{
    mmp_msg_t msg;
    s_from_broker (MMP_REPLAYED, "{\"replayed\":[\"" U1 "\"],\"unknown\":[\"" U2 "\",\"" U3 "\"],\"req\":\"p\"}", &msg);
    cr_assert_eq (msg.message_id_count, 1);
    cr_assert_str_eq (msg.message_ids [0], U1);
    cr_assert_eq (msg.other_id_count, 2);
    cr_assert_str_eq (msg.other_ids [1], U3);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, welcome)
{
    mmp_msg_t msg;
    s_from_broker (MMP_WELCOME, "{\"ack_deadline_ms\":10000,\"heartbeat_ms\":1000,\"epoch\":3}", &msg);
    cr_assert_eq (msg.ack_deadline_ms, 10000);
    cr_assert_eq (msg.heartbeat_ms, 1000);
    cr_assert_eq (msg.epoch, 3);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, deliver)
{
    mmp_msg_t msg;
    s_from_broker (MMP_DELIVER,
        "{\"deliveries\":["
        "{\"delivery_id\":12884901889,\"attempt\":1,\"deadline_ms\":10000,\"steps\":[],"
        "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"cattle-1\",\"hostname\":\"cattle-1.example.net\"}},"
        "{\"delivery_id\":12884901890,\"attempt\":3,\"deadline_ms\":0,\"steps\":[\"save\"],"
        "\"message\":{\"message_id\":\"" U2 "\",\"instance_name\":\"cattle-2\",\"hostname\":\"h\","
        "\"attributes\":{\"k\":\"v\"}}}]}", &msg);
    cr_assert_eq (msg.delivery_count, 2);
    cr_assert_eq (msg.deliveries [0].delivery_id, 12884901889ULL);
    cr_assert_eq (msg.deliveries [0].attempt, 1);
    cr_assert_eq (msg.deliveries [0].deadline_ms, 10000);
    cr_assert_eq (msg.deliveries [0].steps, 0);
    cr_assert_str_eq (msg.deliveries [0].message.message_id, U1);
    cr_assert_str_eq (msg.deliveries [0].message.hostname, "cattle-1.example.net");
    cr_assert_null (msg.deliveries [0].message.attributes);
    cr_assert_eq (msg.deliveries [1].attempt, 3);
    cr_assert_eq (msg.deliveries [1].deadline_ms, 0);
    cr_assert_eq (msg.deliveries [1].steps, MMP_STEP_SAVE);
    cr_assert_str_eq (msg.deliveries [1].message.instance_name, "cattle-2");
    cr_assert_not_null (msg.deliveries [1].message.attributes);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, id_replies)
{
    mmp_msg_t msg;
    s_from_broker (MMP_EXTENDED, "{\"ok\":[1,2],\"stale\":[3],\"unknown\":[],\"deadline_ms\":10000}", &msg);
    cr_assert_eq (msg.id_count, 2);
    cr_assert_eq (msg.ids [1], 2);
    cr_assert_eq (msg.stale_count, 1);
    cr_assert_eq (msg.stale [0], 3);
    cr_assert_eq (msg.unknown_count, 0);
    cr_assert_null (msg.unknown);
    cr_assert_eq (msg.deadline_ms, 10000);
    mmp_msg_reset (&msg);

    const mmp_command_t replies [] = { MMP_ACKED, MMP_NACKED, MMP_PROGRESSED };
    for (size_t i = 0; i < 3; i++) {
        s_from_broker (replies [i], "{\"ok\":[],\"stale\":[],\"unknown\":[99,100]}", &msg);
        cr_assert_eq (msg.id_count, 0);
        cr_assert_eq (msg.stale_count, 0);
        cr_assert_eq (msg.unknown_count, 2);
        cr_assert_eq (msg.unknown [1], 100);
        cr_assert_eq (msg.deadline_ms, -1);
        mmp_msg_reset (&msg);
    }
}

Test (mmp_from_broker, heartbeat)
{
    mmp_msg_t msg;
    s_from_broker (MMP_HEARTBEAT, "{}", &msg);
    mmp_msg_reset (&msg);
}

Test (mmp_from_broker, buf_built_deliver)
{
    //  The hot-path way of building a body: mmp_buf, then mmp_send
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_puts (&buf, "{\"ok\":");
    uint64_t ok [3] = { 1, 4294967296ULL, MMP_MAX_DELIVERY_ID };
    mmp_buf_id_array (&buf, ok, 3);
    mmp_buf_puts (&buf, ",\"stale\":");
    mmp_buf_id_array (&buf, NULL, 0);
    mmp_buf_printf (&buf, ",\"unknown\":[%d]}", 77);
    cr_assert_not (mmp_buf_failed (&buf));
    cr_assert_eq (mmp_send (s_router, s_peer, MMP_ACKED, mmp_buf_data (&buf), mmp_buf_size (&buf)), 0);
    mmp_buf_free (&buf);
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "%s", err.reason);
    cr_assert_eq (msg.id_count, 3);
    cr_assert_eq (msg.ids [2], MMP_MAX_DELIVERY_ID);
    cr_assert_eq (msg.unknown [0], 77);
    mmp_msg_reset (&msg);
}


//  --------------------------------------------------------------------------
//  Frames, through mmp_recv

TestSuite (mmp_frames, .init = s_sockets_up, .fini = s_sockets_down, .timeout = 20);

static void
s_recv_bad (zsock_t *sock, bool router, const char *code)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err = { NULL, "", "" };
    zframe_t *peer = NULL;
    int rc = mmp_recv (sock, true, router ? &peer : NULL,
                       router ? MMP_TO_BROKER : MMP_FROM_BROKER, &msg, &err);
    cr_assert_eq (rc, -2, "rc %d", rc);
    cr_assert_str_eq (err.code, code, "%s: %s", err.code, err.reason);
    cr_assert_null (msg.body);
    if (router) {
        //  The routing id comes back even for garbage, so ERROR can be sent
        cr_assert_not_null (peer);
        cr_assert (zframe_eq (peer, s_peer));
        zframe_destroy (&peer);
    }
}

static void
s_recv_ok (zsock_t *sock, bool router, mmp_command_t command)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err = { NULL, "", "" };
    zframe_t *peer = NULL;
    int rc = mmp_recv (sock, true, router ? &peer : NULL,
                       router ? MMP_TO_BROKER : MMP_FROM_BROKER, &msg, &err);
    cr_assert_eq (rc, 0, "%s", err.reason);
    cr_assert_eq (msg.command, command);
    zframe_destroy (&peer);
    mmp_msg_reset (&msg);
}

Test (mmp_frames, wrong_frame_counts)
{
    //  Each bad message is consumed whole: the good one after it decodes
    zstr_send (s_dealer, "MMP1");
    s_recv_bad (s_router, true, MMP_ERR_BAD_FRAMES);
    zstr_sendx (s_dealer, "MMP1", "HEARTBEAT", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_FRAMES);
    zstr_sendx (s_dealer, "MMP1", "HEARTBEAT", "{}", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_FRAMES);
    zstr_sendx (s_dealer, "a", "b", "c", "d", "e", "f", "g", "h", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_FRAMES);
    zstr_sendx (s_dealer, "MMP1", "HEARTBEAT", "{}", NULL);
    s_recv_ok (s_router, true, MMP_HEARTBEAT);

    //  And the other way, on a DEALER
    zframe_t *peer = zframe_dup (s_peer);
    zmsg_t *zmsg = zmsg_new ();
    zmsg_append (zmsg, &peer);
    zmsg_addstr (zmsg, "MMP1");
    zmsg_addstr (zmsg, "WELCOME");
    cr_assert_eq (zmsg_send (&zmsg, s_router), 0);
    s_recv_bad (s_dealer, false, MMP_ERR_BAD_FRAMES);
    cr_assert_eq (mmp_send (s_router, s_peer, MMP_HEARTBEAT, "{}", 2), 0);
    s_recv_ok (s_dealer, false, MMP_HEARTBEAT);
}

Test (mmp_frames, signature_and_command)
{
    zstr_sendx (s_dealer, "MMP2", "HEARTBEAT", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_VERSION);
    zstr_sendx (s_dealer, "MMP", "HEARTBEAT", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_VERSION);
    zstr_sendx (s_dealer, "MMP10", "HEARTBEAT", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_VERSION);
    zstr_sendx (s_dealer, "mmp1", "HEARTBEAT", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_SIGNATURE);
    zstr_sendx (s_dealer, "", "HEARTBEAT", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_SIGNATURE);
    zstr_sendx (s_dealer, "MMP1", "FROB", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_UNKNOWN_COMMAND);
    zstr_sendx (s_dealer, "MMP1", "ack", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_UNKNOWN_COMMAND);
    zstr_sendx (s_dealer, "MMP1", "WELCOME", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_UNKNOWN_COMMAND);
    zstr_sendx (s_dealer, "MMP1", "ACK", "[", NULL);
    s_recv_bad (s_router, true, MMP_ERR_BAD_JSON);
    zstr_sendx (s_dealer, "MMP1", "ACK", "{}", NULL);
    s_recv_bad (s_router, true, MMP_ERR_MISSING_FIELD);
}

Test (mmp_frames, no_wait_and_timeout)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    zframe_t *peer = (zframe_t *) 1;       //  Must be cleared, not freed
    cr_assert_eq (mmp_recv (s_router, false, &peer, MMP_TO_BROKER, &msg, &err), -1);
    cr_assert_null (peer);
    cr_assert_eq (mmp_recv (s_dealer, false, NULL, MMP_FROM_BROKER, &msg, &err), -1);
    zsock_set_rcvtimeo (s_dealer, 50);
    int64_t start = zclock_mono ();
    cr_assert_eq (mmp_recv (s_dealer, true, NULL, MMP_FROM_BROKER, &msg, &err), -1);
    cr_assert_geq (zclock_mono () - start, 40);
    cr_assert_null (msg.body);

    //  A queued message is taken without waiting
    cr_assert_eq (mmp_send (s_dealer, NULL, MMP_BYE, "{}", 2), 0);
    zpoller_t *poller = zpoller_new (s_router, NULL);
    cr_assert_eq (zpoller_wait (poller, 5000), s_router);
    zpoller_destroy (&poller);
    cr_assert_eq (mmp_recv (s_router, false, &peer, MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.command, MMP_BYE);
    zframe_destroy (&peer);
    mmp_msg_reset (&msg);
}

Test (mmp_frames, send_to_unknown_peer_fails)
{
    zsock_set_router_mandatory (s_router, 1);
    zframe_t *nobody = zframe_new ("nobody", 6);
    cr_assert_eq (mmp_send (s_router, nobody, MMP_HEARTBEAT, "{}", 2), -1);
    cr_assert_eq (mmp_send_error (s_router, nobody, MMP_ERR_INTERNAL, "x", NULL), -1);
    zframe_destroy (&nobody);
    //  The socket is still usable after the failed sends
    cr_assert_eq (mmp_send (s_router, s_peer, MMP_HEARTBEAT, NULL, 0), 0);
    s_recv_ok (s_dealer, false, MMP_HEARTBEAT);
}

Test (mmp_frames, binary_garbage)
{
    const unsigned char junk [] = { 0xff, 0x00, 0x7b, 0x22, 0x00, 0x80 };
    zmsg_t *zmsg = zmsg_new ();
    zmsg_addstr (zmsg, "MMP1");
    zmsg_addstr (zmsg, "ACK");
    zmsg_addmem (zmsg, junk, sizeof junk);
    cr_assert_eq (zmsg_send (&zmsg, s_dealer), 0);
    s_recv_bad (s_router, true, MMP_ERR_BAD_JSON);
    zmsg = zmsg_new ();
    zmsg_addmem (zmsg, junk, sizeof junk);
    zmsg_addmem (zmsg, junk, sizeof junk);
    zmsg_addmem (zmsg, junk, sizeof junk);
    cr_assert_eq (zmsg_send (&zmsg, s_dealer), 0);
    s_recv_bad (s_router, true, MMP_ERR_BAD_SIGNATURE);
    zmsg = zmsg_new ();
    zmsg_addstr (zmsg, "MMP1");
    zmsg_addmem (zmsg, junk, sizeof junk);
    zmsg_addstr (zmsg, "{}");
    cr_assert_eq (zmsg_send (&zmsg, s_dealer), 0);
    s_recv_bad (s_router, true, MMP_ERR_UNKNOWN_COMMAND);
}


//  --------------------------------------------------------------------------
//  Malformed bodies, decoded directly

Test (mmp_decode, signature_version_command, .timeout = 10)
{
    mmp_msg_t msg;
    mmp_msg_init (&msg);
    mmp_error_t err;
    cr_assert_eq (mmp_decode ("MMP2", 4, "ACK", 3, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_BAD_VERSION);
    cr_assert_eq (mmp_decode ("XMP1", 4, "ACK", 3, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_BAD_SIGNATURE);
    cr_assert_eq (mmp_decode ("MMP1\0", 5, "ACK", 3, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_BAD_VERSION);
    cr_assert_eq (mmp_decode (NULL, 0, "ACK", 3, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_BAD_SIGNATURE);
    cr_assert_eq (mmp_decode ("MMP1", 4, "ACK\0", 4, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_UNKNOWN_COMMAND);
    cr_assert_eq (mmp_decode ("MMP1", 4, "", 0, "{}", 2, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_UNKNOWN_COMMAND);
    cr_assert_eq (mmp_decode ("MMP1", 4, "ACK", 3, "", 0, MMP_TO_BROKER, &msg, &err), -2);
    cr_assert_str_eq (err.code, MMP_ERR_BAD_JSON);
    //  err may be NULL
    cr_assert_eq (mmp_decode ("MMP1", 4, "ACK", 3, "", 0, MMP_TO_BROKER, &msg, NULL), -2);
    cr_assert_null (msg.body);
}

Test (mmp_decode, wrong_direction, .timeout = 10)
{
    const char *to_only [] = { "PUBLISH", "REPLAY", "HELLO", "CREDIT", "EXTEND", "ACK",
                               "NACK", "PROGRESS", "BYE" };
    for (size_t i = 0; i < sizeof to_only / sizeof *to_only; i++)
        FROM (to_only [i], "{}", MMP_ERR_UNKNOWN_COMMAND);
    const char *from_only [] = { "PUBACK", "ERROR", "REPLAYED", "WELCOME", "DELIVER",
                                 "EXTENDED", "ACKED", "NACKED", "PROGRESSED" };
    for (size_t i = 0; i < sizeof from_only / sizeof *from_only; i++)
        TO (from_only [i], "{}", MMP_ERR_UNKNOWN_COMMAND);
}

Test (mmp_decode, command_names, .timeout = 10)
{
    for (int i = 0; i < MMP_COMMAND_COUNT; i++)
        cr_assert_not_null (mmp_command_name ((mmp_command_t) i));
    cr_assert_str_eq (mmp_command_name (MMP_PUBLISH), "PUBLISH");
    cr_assert_str_eq (mmp_command_name (MMP_PROGRESSED), "PROGRESSED");
    cr_assert_null (mmp_command_name (MMP_COMMAND_COUNT));
    cr_assert_null (mmp_command_name ((mmp_command_t) -1));
}

Test (mmp_decode, json_and_object, .timeout = 10)
{
    TO ("ACK", "{", MMP_ERR_BAD_JSON);
    TO ("ACK", "{\"delivery_ids\":[1]", MMP_ERR_BAD_JSON);
    TO ("ACK", "{'delivery_ids':[1]}", MMP_ERR_BAD_JSON);
    TO ("ACK", "{\"delivery_ids\":[1],}", MMP_ERR_BAD_JSON);
    TO ("ACK", "{\"delivery_ids\":[1]} {}", MMP_ERR_BAD_JSON);
    TO ("ACK", "{\"delivery_ids\":[1]}x", MMP_ERR_BAD_JSON);
    TO ("ACK", "nul", MMP_ERR_BAD_JSON);
    TO ("ACK", "   ", MMP_ERR_BAD_JSON);
    TO ("HELLO", "{\"credit\":1,\"name\":\"a\nb\"}", MMP_ERR_BAD_JSON);         //  Raw control character
    TO ("HELLO", "{\"credit\":1,\"name\":\"a\\u0000b\"}", MMP_ERR_BAD_JSON);    //  Would cut the C string
    TO ("HELLO", "{\"credit\":1,\"name\":\"a\\\\u0000b\"}", "ok");              //  An escaped backslash, then text
    TO ("HELLO", "{\"credit\":1,\"credit\":2}", MMP_ERR_BAD_JSON);              //  Given twice
    TO ("ACK", "[]", MMP_ERR_NOT_OBJECT);
    TO ("ACK", "[1,2]", MMP_ERR_NOT_OBJECT);
    TO ("ACK", "\"text\"", MMP_ERR_NOT_OBJECT);
    TO ("ACK", "42", MMP_ERR_NOT_OBJECT);
    TO ("ACK", "null", MMP_ERR_NOT_OBJECT);
    TO ("ACK", "true", MMP_ERR_NOT_OBJECT);
    FROM ("STATS", "[]", MMP_ERR_NOT_OBJECT);
    TO ("PUBLISH", "{\"messages\":[1]}", MMP_ERR_NOT_OBJECT);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\"},[]]}", MMP_ERR_NOT_OBJECT);
    FROM ("DELIVER", "{\"deliveries\":[\"x\"]}", MMP_ERR_NOT_OBJECT);
    FROM ("DELIVER", "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":[],\"message\":[]}]}",
          MMP_ERR_NOT_OBJECT);
    FROM ("DEADLETTERS", "{\"dead_letters\":[1],\"total\":1}", MMP_ERR_NOT_OBJECT);
}

Test (mmp_decode, missing_fields, .timeout = 10)
{
    TO ("PUBLISH", "{}", MMP_ERR_MISSING_FIELD);
    TO ("PUBLISH", "{\"messages\":[{\"hostname\":\"a.b\"}]}", MMP_ERR_MISSING_FIELD);
    TO ("REPLAY", "{}", MMP_ERR_MISSING_FIELD);
    TO ("HELLO", "{}", MMP_ERR_MISSING_FIELD);
    TO ("HELLO", "{\"name\":\"w\"}", MMP_ERR_MISSING_FIELD);
    TO ("CREDIT", "{}", MMP_ERR_MISSING_FIELD);
    TO ("EXTEND", "{\"extension_ms\":5}", MMP_ERR_MISSING_FIELD);
    TO ("ACK", "{}", MMP_ERR_MISSING_FIELD);
    TO ("NACK", "{}", MMP_ERR_MISSING_FIELD);
    TO ("PROGRESS", "{\"delivery_ids\":[1]}", MMP_ERR_MISSING_FIELD);
    TO ("PROGRESS", "{\"steps\":[\"save\"]}", MMP_ERR_MISSING_FIELD);
    FROM ("PUBACK", "{\"duplicates\":[],\"durability\":\"none\"}", MMP_ERR_MISSING_FIELD);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"durability\":\"none\"}", MMP_ERR_MISSING_FIELD);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("ERROR", "{\"reason\":\"x\"}", MMP_ERR_MISSING_FIELD);
    FROM ("ERROR", "{\"code\":\"x\"}", MMP_ERR_MISSING_FIELD);
    FROM ("DEADLETTERS", "{\"total\":0}", MMP_ERR_MISSING_FIELD);
    FROM ("DEADLETTERS", "{\"dead_letters\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("REPLAYED", "{\"replayed\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("REPLAYED", "{\"unknown\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("WELCOME", "{\"ack_deadline_ms\":1,\"heartbeat_ms\":1}", MMP_ERR_MISSING_FIELD);
    FROM ("WELCOME", "{\"epoch\":1,\"heartbeat_ms\":1}", MMP_ERR_MISSING_FIELD);
    FROM ("DELIVER", "{}", MMP_ERR_MISSING_FIELD);
    FROM ("EXTENDED", "{\"ok\":[],\"stale\":[],\"unknown\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("ACKED", "{\"ok\":[],\"stale\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("NACKED", "{\"ok\":[],\"unknown\":[]}", MMP_ERR_MISSING_FIELD);
    FROM ("PROGRESSED", "{\"stale\":[],\"unknown\":[]}", MMP_ERR_MISSING_FIELD);

    //  Each field of a delivery, and message_id / hostname of its request
    const char *fields [] = { "\"delivery_id\":1", "\"attempt\":1", "\"deadline_ms\":1", "\"steps\":[]",
        "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}" };
    for (int leave_out = 0; leave_out < 5; leave_out++) {
        char body [512] = "{\"deliveries\":[{";
        bool first = true;
        for (int i = 0; i < 5; i++) {
            if (i == leave_out)
                continue;
            if (!first)
                strcat (body, ",");
            strcat (body, fields [i]);
            first = false;
        }
        strcat (body, "}]}");
        FROM ("DELIVER", body, MMP_ERR_MISSING_FIELD);
    }
#undef DELIVER_FMT
#define DELIVER_FMT "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":[],\"message\":%s}]}"
    char body [512];
    snprintf (body, sizeof body, DELIVER_FMT, "{\"instance_name\":\"a\",\"hostname\":\"a\"}");
    FROM ("DELIVER", body, MMP_ERR_MISSING_FIELD);
    snprintf (body, sizeof body, DELIVER_FMT, "{\"message_id\":\"" U1 "\",\"instance_name\":\"a\"}");
    FROM ("DELIVER", body, MMP_ERR_MISSING_FIELD);
    snprintf (body, sizeof body, DELIVER_FMT, "{\"message_id\":\"" U1 "\",\"hostname\":\"a\"}");
    FROM ("DELIVER", body, MMP_ERR_MISSING_FIELD);
    snprintf (body, sizeof body, DELIVER_FMT, "{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}");
    FROM ("DELIVER", body, "ok");
}

Test (mmp_decode, wrong_types, .timeout = 10)
{
    TO ("PUBLISH", "{\"messages\":{}}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":1}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"message_id\":7}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"hostname\":[]}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":[]}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":\"x\"}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":null}]}", MMP_ERR_BAD_TYPE);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\"}],\"req\":5}", MMP_ERR_BAD_TYPE);
    TO ("STATS", "{\"req\":null}", MMP_ERR_BAD_TYPE);
    FROM ("STATS", "{\"req\":[]}", MMP_ERR_BAD_TYPE);
    TO ("DEADLETTERS", "{\"limit\":\"5\"}", MMP_ERR_BAD_TYPE);
    TO ("REPLAY", "{\"message_ids\":\"" U1 "\"}", MMP_ERR_BAD_TYPE);
    TO ("REPLAY", "{\"message_ids\":[1]}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":\"5\"}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":true}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":null}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":1,\"name\":5}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":1,\"subscription\":{}}", MMP_ERR_BAD_TYPE);
    TO ("CREDIT", "{\"credit\":[1]}", MMP_ERR_BAD_TYPE);
    TO ("ACK", "{\"delivery_ids\":1}", MMP_ERR_BAD_TYPE);
    TO ("ACK", "{\"delivery_ids\":[\"1\"]}", MMP_ERR_BAD_TYPE);
    TO ("ACK", "{\"delivery_ids\":[1,null]}", MMP_ERR_BAD_TYPE);
    TO ("EXTEND", "{\"delivery_ids\":[1],\"extension_ms\":\"1s\"}", MMP_ERR_BAD_TYPE);
    TO ("NACK", "{\"delivery_ids\":[1],\"delay_ms\":false}", MMP_ERR_BAD_TYPE);
    TO ("NACK", "{\"delivery_ids\":[1],\"reason\":1}", MMP_ERR_BAD_TYPE);
    TO ("NACK", "{\"delivery_ids\":[1],\"requeue\":1}", MMP_ERR_BAD_TYPE);
    TO ("NACK", "{\"delivery_ids\":[1],\"requeue\":null}", MMP_ERR_BAD_TYPE);
    TO ("NACK", "{\"delivery_ids\":[1],\"requeue\":\"true\"}", MMP_ERR_BAD_TYPE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":\"save\"}", MMP_ERR_BAD_TYPE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[1]}", MMP_ERR_BAD_TYPE);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[],\"durability\":1}", MMP_ERR_BAD_TYPE);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":{},\"durability\":\"none\"}", MMP_ERR_BAD_TYPE);
    FROM ("ERROR", "{\"code\":1,\"reason\":\"x\"}", MMP_ERR_BAD_TYPE);
    FROM ("ERROR", "{\"code\":\"x\",\"reason\":null}", MMP_ERR_BAD_TYPE);
    FROM ("DEADLETTERS", "{\"dead_letters\":{},\"total\":0}", MMP_ERR_BAD_TYPE);
    FROM ("DEADLETTERS", "{\"dead_letters\":[],\"total\":\"0\"}", MMP_ERR_BAD_TYPE);
    FROM ("REPLAYED", "{\"replayed\":[],\"unknown\":[null]}", MMP_ERR_BAD_TYPE);
    FROM ("WELCOME", "{\"ack_deadline_ms\":\"10\",\"heartbeat_ms\":1,\"epoch\":1}", MMP_ERR_BAD_TYPE);
    FROM ("DELIVER", "{\"deliveries\":{}}", MMP_ERR_BAD_TYPE);
    FROM ("DELIVER", "{\"deliveries\":[{\"delivery_id\":\"1\",\"attempt\":1,\"deadline_ms\":1,\"steps\":[],"
          "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}", MMP_ERR_BAD_TYPE);
    FROM ("DELIVER", "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":{},"
          "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}", MMP_ERR_BAD_TYPE);
    FROM ("EXTENDED", "{\"ok\":[],\"stale\":[],\"unknown\":[],\"deadline_ms\":null}", MMP_ERR_BAD_TYPE);
    FROM ("ACKED", "{\"ok\":[],\"stale\":[true],\"unknown\":[]}", MMP_ERR_BAD_TYPE);
}

Test (mmp_decode, unknown_fields, .timeout = 10)
{
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\"}],\"x\":1}", MMP_ERR_UNKNOWN_FIELD);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"priority\":1}]}", MMP_ERR_UNKNOWN_FIELD);
    TO ("PUBLISH", "{\"Messages\":[{\"instance_name\":\"a\"}]}", MMP_ERR_UNKNOWN_FIELD);    //  Names are case-sensitive
    TO ("STATS", "{\"verbose\":true}", MMP_ERR_UNKNOWN_FIELD);
    TO ("DEADLETTERS", "{\"offset\":1}", MMP_ERR_UNKNOWN_FIELD);
    TO ("HELLO", "{\"credit\":1,\"req\":\"x\"}", MMP_ERR_UNKNOWN_FIELD);    //  Backend commands take no req
    TO ("ACK", "{\"delivery_ids\":[1],\"req\":\"x\"}", MMP_ERR_UNKNOWN_FIELD);
    TO ("ACK", "{\"delivery_ids\":[1],\"extension_ms\":5}", MMP_ERR_UNKNOWN_FIELD);
    TO ("EXTEND", "{\"delivery_ids\":[1],\"delay_ms\":5}", MMP_ERR_UNKNOWN_FIELD);
    TO ("HEARTBEAT", "{\"x\":1}", MMP_ERR_UNKNOWN_FIELD);
    TO ("BYE", "{\"reason\":\"x\"}", MMP_ERR_UNKNOWN_FIELD);
    TO ("CREDIT", "{\"credit\":1,\"\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("HEARTBEAT", "{\"x\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("WELCOME", "{\"ack_deadline_ms\":1,\"heartbeat_ms\":1,\"epoch\":1,\"x\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("ACKED", "{\"ok\":[],\"stale\":[],\"unknown\":[],\"deadline_ms\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("ERROR", "{\"code\":\"x\",\"reason\":\"y\",\"detail\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("DEADLETTERS", "{\"dead_letters\":[],\"total\":0,\"limit\":1}", MMP_ERR_UNKNOWN_FIELD);
    FROM ("DELIVER", "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":[],\"lease\":1,"
          "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}", MMP_ERR_UNKNOWN_FIELD);
    //  The stats reply is open: the broker may add counters
    FROM ("STATS", "{\"anything\":[1,{\"x\":null}]}", "ok");
}

Test (mmp_decode, numbers, .timeout = 10)
{
    TO ("HELLO", "{\"credit\":1000000}", "ok");
    TO ("HELLO", "{\"credit\":1000001}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":-1}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":1.5}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":1e300}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":-1e300}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":1e999}", MMP_ERR_BAD_VALUE);
    TO ("HELLO", "{\"credit\":2.0}", "ok");              //  Integral value, any spelling
    TO ("HELLO", "{\"credit\":1e2}", "ok");
    TO ("HELLO", "{\"credit\":-0}", "ok");
    TO ("CREDIT", "{\"credit\":0.0001}", MMP_ERR_BAD_VALUE);
    TO ("CREDIT", "{\"credit\":1000001}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[0]}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[-5]}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[9007199254740991]}", "ok");
    TO ("ACK", "{\"delivery_ids\":[9007199254740992]}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[18446744073709551615]}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[1.25]}", MMP_ERR_BAD_VALUE);
    TO ("ACK", "{\"delivery_ids\":[]}", MMP_ERR_BAD_VALUE);
    TO ("EXTEND", "{\"delivery_ids\":[1],\"extension_ms\":0}", MMP_ERR_BAD_VALUE);
    TO ("EXTEND", "{\"delivery_ids\":[1],\"extension_ms\":3600001}", MMP_ERR_BAD_VALUE);
    TO ("EXTEND", "{\"delivery_ids\":[1],\"extension_ms\":1}", "ok");
    TO ("NACK", "{\"delivery_ids\":[1],\"delay_ms\":86400000}", "ok");
    TO ("NACK", "{\"delivery_ids\":[1],\"delay_ms\":86400001}", MMP_ERR_BAD_VALUE);
    TO ("NACK", "{\"delivery_ids\":[1],\"delay_ms\":-1}", MMP_ERR_BAD_VALUE);
    TO ("DEADLETTERS", "{\"limit\":0}", MMP_ERR_BAD_VALUE);
    TO ("DEADLETTERS", "{\"limit\":100001}", MMP_ERR_BAD_VALUE);
    TO ("DEADLETTERS", "{\"limit\":1}", "ok");
    TO ("PUBLISH", "{\"messages\":[]}", MMP_ERR_BAD_VALUE);
    TO ("REPLAY", "{\"message_ids\":[]}", MMP_ERR_BAD_VALUE);
    FROM ("WELCOME", "{\"ack_deadline_ms\":0,\"heartbeat_ms\":1,\"epoch\":1}", MMP_ERR_BAD_VALUE);
    FROM ("WELCOME", "{\"ack_deadline_ms\":1,\"heartbeat_ms\":0,\"epoch\":1}", MMP_ERR_BAD_VALUE);
    FROM ("WELCOME", "{\"ack_deadline_ms\":1,\"heartbeat_ms\":1,\"epoch\":-1}", MMP_ERR_BAD_VALUE);
    FROM ("WELCOME", "{\"ack_deadline_ms\":1,\"heartbeat_ms\":1,\"epoch\":0}", "ok");
    FROM ("EXTENDED", "{\"ok\":[],\"stale\":[],\"unknown\":[],\"deadline_ms\":-1}", MMP_ERR_BAD_VALUE);
    FROM ("EXTENDED", "{\"ok\":[0],\"stale\":[],\"unknown\":[],\"deadline_ms\":1}", MMP_ERR_BAD_VALUE);
    FROM ("DEADLETTERS", "{\"dead_letters\":[],\"total\":-1}", MMP_ERR_BAD_VALUE);
    FROM ("DEADLETTERS", "{\"dead_letters\":[],\"total\":0.5}", MMP_ERR_BAD_VALUE);
    FROM ("PUBACK", "{\"message_ids\":[],\"duplicates\":[],\"durability\":\"none\"}", MMP_ERR_BAD_VALUE);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[],\"durability\":\"disk\"}", MMP_ERR_BAD_VALUE);
    FROM ("PUBACK", "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[],\"durability\":\"SYNC\"}", MMP_ERR_BAD_VALUE);
    FROM ("ERROR", "{\"code\":\"\",\"reason\":\"y\"}", MMP_ERR_BAD_VALUE);

#undef DELIVER_FMT
#define DELIVER_FMT "{\"deliveries\":[{\"delivery_id\":%s,\"attempt\":%s,\"deadline_ms\":%s,\"steps\":[]," "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}"
    char body [512];
    snprintf (body, sizeof body, DELIVER_FMT, "0", "1", "1");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "1", "0", "1");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "1", "1", "-1");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "1", "1.5", "1");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "9007199254740991", "1", "0");
    FROM ("DELIVER", body, "ok");
    FROM ("DELIVER", "{\"deliveries\":[]}", MMP_ERR_BAD_VALUE);
}

Test (mmp_decode, text_limits, .timeout = 10)
{
    char text [MMP_MAX_TEXT + 2];
    memset (text, 'r', sizeof text);
    text [MMP_MAX_TEXT] = 0;
    char body [1024];
    snprintf (body, sizeof body, "{\"req\":\"%s\"}", text);
    TO ("STATS", body, "ok");
    snprintf (body, sizeof body, "{\"credit\":1,\"name\":\"%s\",\"subscription\":\"%s\"}", text, text);
    TO ("HELLO", body, "ok");
    text [MMP_MAX_TEXT] = 'r';
    text [MMP_MAX_TEXT + 1] = 0;
    snprintf (body, sizeof body, "{\"req\":\"%s\"}", text);
    TO ("STATS", body, MMP_ERR_TOO_LONG);
    TO ("DEADLETTERS", body, MMP_ERR_TOO_LONG);
    FROM ("STATS", body, MMP_ERR_TOO_LONG);
    snprintf (body, sizeof body, "{\"credit\":1,\"name\":\"%s\"}", text);
    TO ("HELLO", body, MMP_ERR_TOO_LONG);
    snprintf (body, sizeof body, "{\"credit\":1,\"subscription\":\"%s\"}", text);
    TO ("HELLO", body, MMP_ERR_TOO_LONG);
    snprintf (body, sizeof body, "{\"delivery_ids\":[1],\"reason\":\"%s\"}", text);
    TO ("NACK", body, MMP_ERR_TOO_LONG);
    snprintf (body, sizeof body, "{\"code\":\"x\",\"reason\":\"%s\"}", text);
    FROM ("ERROR", body, MMP_ERR_TOO_LONG);
    snprintf (body, sizeof body, "{\"code\":\"%s\",\"reason\":\"x\"}", text);
    FROM ("ERROR", body, MMP_ERR_TOO_LONG);
}

//  A PUBLISH of count minimal requests.
static char *
s_publish_body (size_t count, const char *extra)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_puts (&buf, "{\"messages\":[");
    for (size_t i = 0; i < count; i++)
        mmp_buf_printf (&buf, "%s{\"instance_name\":\"cattle-%zu\"%s}", i ? "," : "", i, extra);
    mmp_buf_puts (&buf, "]}");
    cr_assert_not (mmp_buf_failed (&buf));
    return mmp_buf_detach (&buf, NULL);
}

//  An id list of count ids: {"<field>":[1,2,...]}
static char *
s_ids_body (const char *field, size_t count, const char *extra)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_printf (&buf, "{\"%s\":[", field);
    for (size_t i = 0; i < count; i++)
        mmp_buf_printf (&buf, "%s%zu", i ? "," : "", i + 1);
    mmp_buf_printf (&buf, "]%s}", extra);
    cr_assert_not (mmp_buf_failed (&buf));
    return mmp_buf_detach (&buf, NULL);
}

static char *
s_uuids_body (const char *field, size_t count, const char *extra)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_printf (&buf, "{\"%s\":[", field);
    for (size_t i = 0; i < count; i++)
        mmp_buf_printf (&buf, "%s\"%08zx-1f2a-4c3d-9e8f-0a1b2c3d4e5f\"", i ? "," : "", i);
    mmp_buf_printf (&buf, "]%s}", extra);
    cr_assert_not (mmp_buf_failed (&buf));
    return mmp_buf_detach (&buf, NULL);
}

Test (mmp_decode, array_limits, .timeout = 30)
{
    char *body = s_publish_body (MMP_MAX_MESSAGES, "");
    TO ("PUBLISH", body, "ok");
    free (body);
    body = s_publish_body (MMP_MAX_MESSAGES + 1, "");
    TO ("PUBLISH", body, MMP_ERR_TOO_MANY);
    free (body);

    const char *commands [] = { "ACK", "NACK", "EXTEND" };
    for (int i = 0; i < 3; i++) {
        body = s_ids_body ("delivery_ids", MMP_MAX_IDS, "");
        TO (commands [i], body, "ok");
        free (body);
        body = s_ids_body ("delivery_ids", MMP_MAX_IDS + 1, "");
        TO (commands [i], body, MMP_ERR_TOO_MANY);
        free (body);
    }
    body = s_ids_body ("delivery_ids", MMP_MAX_IDS + 1, ",\"steps\":[\"save\"]");
    TO ("PROGRESS", body, MMP_ERR_TOO_MANY);
    free (body);
    body = s_ids_body ("ok", MMP_MAX_IDS, ",\"stale\":[],\"unknown\":[]");
    FROM ("ACKED", body, "ok");
    free (body);
    body = s_ids_body ("ok", MMP_MAX_IDS + 1, ",\"stale\":[],\"unknown\":[]");
    FROM ("ACKED", body, MMP_ERR_TOO_MANY);
    free (body);
    body = s_ids_body ("unknown", MMP_MAX_IDS + 1, ",\"stale\":[],\"ok\":[],\"deadline_ms\":1");
    FROM ("EXTENDED", body, MMP_ERR_TOO_MANY);
    free (body);

    body = s_uuids_body ("message_ids", MMP_MAX_IDS, "");
    TO ("REPLAY", body, "ok");
    free (body);
    body = s_uuids_body ("message_ids", MMP_MAX_IDS + 1, "");
    TO ("REPLAY", body, MMP_ERR_TOO_MANY);
    free (body);
    body = s_uuids_body ("message_ids", MMP_MAX_MESSAGES + 1, ",\"duplicates\":[],\"durability\":\"none\"");
    FROM ("PUBACK", body, MMP_ERR_TOO_MANY);
    free (body);
    body = s_uuids_body ("replayed", MMP_MAX_IDS + 1, ",\"unknown\":[]");
    FROM ("REPLAYED", body, MMP_ERR_TOO_MANY);
    free (body);

    //  DELIVER: 1000 leases ok, 1001 too many
    mmp_buf_t buf;
    for (size_t count = MMP_MAX_DELIVERIES; count <= MMP_MAX_DELIVERIES + 1; count++) {
        mmp_buf_init (&buf);
        mmp_buf_puts (&buf, "{\"deliveries\":[");
        for (size_t i = 0; i < count; i++)
            mmp_buf_printf (&buf, "%s{\"delivery_id\":%zu,\"attempt\":1,\"deadline_ms\":10000,\"steps\":[],"
                            "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"c-%zu\",\"hostname\":\"c.example.net\"}}",
                            i ? "," : "", i + 1, i);
        mmp_buf_puts (&buf, "]}");
        FROM ("DELIVER", mmp_buf_data (&buf), count == MMP_MAX_DELIVERIES ? "ok" : MMP_ERR_TOO_MANY);
        mmp_buf_free (&buf);
    }
}

Test (mmp_decode, body_size, .timeout = 30)
{
    //  Exactly the limit is fine (a PUBLISH padded with white space)
    size_t size = MMP_MAX_BODY;
    char *body = malloc (size + 1);
    cr_assert_not_null (body);
    memset (body, ' ', size + 1);
    const char *text = "{\"messages\":[{\"instance_name\":\"a\"}]}";
    memcpy (body, text, strlen (text));
    mmp_error_t err;
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "PUBLISH", body, size, &err), "ok", "%s", err.reason);
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "PUBLISH", body, size + 1, &err), MMP_ERR_TOO_LARGE);
    //  The size check comes before parsing: garbage over the limit is too_large
    memset (body, '[', size + 1);
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "PUBLISH", body, size + 1, &err), MMP_ERR_TOO_LARGE);
    free (body);
}

Test (mmp_decode, depth, .timeout = 10)
{
    //  The body is level 1; 16 levels pass the scanner, 17 do not. A
    //  PUBLISH's attributes may nest only 12 deep (a DELIVER carries them
    //  one level deeper: its body then reaches 16, test_mmp_fidelity), so
    //  here 15 pass and 16 are refused too_deep by the attributes rule
    char body [256];
    for (int levels = 15; levels <= 17; levels++) {
        //  {"messages":[{"instance_name":"a","attributes":{"a":{"a":...{}}}}]}: 4 levels + nested
        strcpy (body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":");
        int nested = levels - 3;
        for (int i = 0; i < nested - 1; i++)
            strcat (body, "{\"a\":");
        strcat (body, "{}");
        for (int i = 0; i < nested - 1; i++)
            strcat (body, "}");
        strcat (body, "}]}");
        TO ("PUBLISH", body, levels <= MMP_MAX_DEPTH - 1 ? "ok" : MMP_ERR_TOO_DEEP);
    }
    //  Brackets inside strings do not count
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"x\":\"[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{\\\"[[[[\"}}]}", "ok");
    TO ("STATS", "[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]", MMP_ERR_TOO_DEEP);
}

Test (mmp_decode, deep_garbage, .timeout = 10)
{
    //  100000 '[' never reach the parser's recursion
    size_t size = 100000;
    char *body = malloc (size);
    cr_assert_not_null (body);
    memset (body, '[', size);
    mmp_error_t err;
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "ACK", body, size, &err), MMP_ERR_TOO_DEEP);
    //  The first problem in the text is reported: "{{" is a syntax error
    //  at byte 1, before any depth is reached
    memset (body, '{', size);
    cr_assert_str_eq (s_decode_code (MMP_FROM_BROKER, "STATS", body, size, &err), MMP_ERR_BAD_JSON);
    //  {"a":{"a":{... 20000 levels deep
    size_t used = 0;
    while (used + 5 <= size) {
        memcpy (body + used, "{\"a\":", 5);
        used += 5;
    }
    cr_assert_str_eq (s_decode_code (MMP_FROM_BROKER, "STATS", body, used, &err), MMP_ERR_TOO_DEEP);
    //  Deep inside a valid start: {"messages":[[[[...
    memset (body, '[', 1000);
    memcpy (body, "{\"messages\":", 12);
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "PUBLISH", body, 1000, &err), MMP_ERR_TOO_DEEP);
    free (body);
}

Test (mmp_decode, message_ids, .timeout = 10)
{
    const char *bad [] = {
        "", "x", "0b9c8f8e1f2a4c3d9e8f0a1b2c3d4e5f", "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5",
        "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f0", "0b9c8f8g-1f2a-4c3d-9e8f-0a1b2c3d4e5f",
        "{0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f}", "0b9c8f8e_1f2a-4c3d-9e8f-0a1b2c3d4e5f",
        " 0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5", "0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5\\u00e9"
    };
    char body [256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"message_id\":\"%s\"}]}", bad [i]);
        TO ("PUBLISH", body, MMP_ERR_BAD_MESSAGE_ID);
        snprintf (body, sizeof body, "{\"message_ids\":[\"%s\"]}", bad [i]);
        TO ("REPLAY", body, MMP_ERR_BAD_MESSAGE_ID);
        snprintf (body, sizeof body, "{\"replayed\":[],\"unknown\":[\"%s\"]}", bad [i]);
        FROM ("REPLAYED", body, MMP_ERR_BAD_MESSAGE_ID);
        snprintf (body, sizeof body, "{\"message_ids\":[\"" U1 "\"],\"duplicates\":[\"%s\"],\"durability\":\"none\"}", bad [i]);
        FROM ("PUBACK", body, MMP_ERR_BAD_MESSAGE_ID);
        snprintf (body, sizeof body, "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":[],"
                  "\"message\":{\"message_id\":\"%s\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}", bad [i]);
        FROM ("DELIVER", body, MMP_ERR_BAD_MESSAGE_ID);
    }
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"message_id\":\"" U2 "\"}]}", "ok");
}

Test (mmp_decode, instance_names, .timeout = 10)
{
    char name63 [64], name64 [65];
    memset (name63, 'a', 63);
    name63 [63] = 0;
    memset (name64, 'b', 64);
    name64 [64] = 0;
    const char *bad [] = { "", name64, "-cattle", "cattle-", "-", "cattle_1", "cattle.1",
                           "caf\\u00e9", "caf\xc3\xa9", "cattle 1", "cattle/1", "ca\\ttle" };
    char body [256];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"%s\"}]}", bad [i]);
        TO ("PUBLISH", body, MMP_ERR_BAD_INSTANCE_NAME);
        snprintf (body, sizeof body, "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":1,\"deadline_ms\":1,\"steps\":[],"
                  "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"%s\",\"hostname\":\"a\"}}]}", bad [i]);
        FROM ("DELIVER", body, MMP_ERR_BAD_INSTANCE_NAME);
    }
    const char *good [] = { name63, "a", "0", "cattle-ab12", "CATTLE-AB12", "a--b", "9lives" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"%s\"}]}", good [i]);
        TO ("PUBLISH", body, "ok");
    }
}

Test (mmp_decode, hostnames, .timeout = 10)
{
    //  253 bytes: four 63-byte labels minus one byte, joined by dots
    char host253 [254], host254 [255], label64 [80];
    memset (host253, 'h', sizeof host253);
    host253 [63] = host253 [127] = host253 [191] = '.';
    host253 [253] = 0;
    cr_assert_eq (strlen (host253), 253);
    memcpy (host254, host253, 253);
    host254 [253] = 'h';
    host254 [254] = 0;
    memset (label64, 'l', 64);
    strcpy (label64 + 64, ".example.net");
    const char *bad [] = { "", ".", "a..b", ".a", "a.", "a.example.net.", host254, label64,
                           "-a.example.net", "a-.example.net", "a.-b.net", "a_b.net", "a b.net",
                           "h\xc3\xa9.net" };
    char body [512];
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"hostname\":\"%s\"}]}", bad [i]);
        TO ("PUBLISH", body, MMP_ERR_BAD_HOSTNAME);
        cr_expect_not (mmp_valid_hostname (bad [i], strlen (bad [i])), "%s", bad [i]);
    }
    const char *good [] = { host253, "a", "a.b", "cattle-ab12.example.net", "A.B.C", "1.2.3.4" };
    for (size_t i = 0; i < sizeof good / sizeof *good; i++) {
        snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"hostname\":\"%s\"}]}", good [i]);
        TO ("PUBLISH", body, "ok");
    }
}

Test (mmp_decode, validators, .timeout = 10)
{
    cr_assert (mmp_valid_instance_name ("cattle-ab12", 11));
    cr_assert (mmp_valid_instance_name ("cattle-ab12-", 11));      //  Only len bytes count
    cr_assert_not (mmp_valid_instance_name ("cattle-ab12-", 12));
    cr_assert_not (mmp_valid_instance_name ("ab\0c", 4));
    cr_assert_not (mmp_valid_instance_name (NULL, 0));
    cr_assert_not (mmp_valid_instance_name ("", 0));
    cr_assert (mmp_valid_hostname ("a.b", 3));
    cr_assert_not (mmp_valid_hostname ("a.b", 2));
    cr_assert_not (mmp_valid_hostname ("a\0b", 3));
    cr_assert_not (mmp_valid_hostname (NULL, 0));
}

Test (mmp_decode, attributes, .timeout = 10)
{
    //  Printed size: {"k":"<v>"} is 8 bytes plus the value
    char value [MMP_MAX_ATTRIBUTES + 8];
    char body [MMP_MAX_ATTRIBUTES + 256];
    size_t fits = MMP_MAX_ATTRIBUTES - 8;
    memset (value, 'v', fits);
    value [fits] = 0;
    snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"k\":\"%s\"}}]}", value);
    TO ("PUBLISH", body, "ok");
    value [fits] = 'v';
    value [fits + 1] = 0;
    snprintf (body, sizeof body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"k\":\"%s\"}}]}", value);
    TO ("PUBLISH", body, MMP_ERR_TOO_LARGE);
    //  Many small numbers, well over the limit in total
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_puts (&buf, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{\"n\":[");
    for (int i = 0; i < 2000; i++)
        mmp_buf_printf (&buf, "%s%d", i ? "," : "", i);
    mmp_buf_puts (&buf, "]}}]}");
    TO ("PUBLISH", mmp_buf_data (&buf), MMP_ERR_TOO_LARGE);
    mmp_buf_free (&buf);
    TO ("PUBLISH", "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":{}}]}", "ok");
}

//  The attributes limit is on the bytes as sent, whatever they hold: pad
//  each shape to exactly the limit, then one byte over. White space and
//  escapes count as written; numbers are never re-printed.
Test (mmp_decode, attributes_bytes_as_sent, .timeout = 10)
{
    const char *shapes [] = {
        "1", "-0", "0.1", "1e300", "1e400", "0.30000000000000004", "123456789012345678",
        "2.5e-8", "true", "false", "null", "\"\\n\\t\\\"\\\\\\u0001\\u001f\"", "\"caf\\u00e9 \xe2\x82\xac\"",
        "[]", "{}", "[1,[2,[3,{\"a\":[]}]],\"x\"]", "{ \"k\" : { \"k2\" :\n{\"k3\":null}},\"e\":\"\"}",
        "[0.5,100,1e15,1e16,-1e-300,123.456,9007199254740993]"
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        for (int over = 0; over <= 1; over++) {
            size_t base = strlen ("{\"p\":\"\",\"s\":}") + strlen (shapes [i]);
            size_t pad = MMP_MAX_ATTRIBUTES - base + (size_t) over;
            char *padding = malloc (pad + 1);
            cr_assert_not_null (padding);
            memset (padding, 'p', pad);
            padding [pad] = 0;
            char *attributes = NULL;
            if (asprintf (&attributes, "{\"p\":\"%s\",\"s\":%s}", padding, shapes [i]) < 0)
                cr_assert_fail ("asprintf");
            cr_assert_eq (strlen (attributes), MMP_MAX_ATTRIBUTES + (size_t) over);
            char *body = NULL;
            if (asprintf (&body, "{\"messages\":[{\"instance_name\":\"a\",\"attributes\":%s}]}",
                          attributes) < 0)
                cr_assert_fail ("asprintf");
            TO ("PUBLISH", body, over ? MMP_ERR_TOO_LARGE : "ok");
            if (!over) {
                //  The span is exactly the bytes sent
                mmp_msg_t msg;
                mmp_msg_init (&msg);
                mmp_error_t err;
                cr_assert_eq (mmp_decode ("MMP1", 4, "PUBLISH", 7, body, strlen (body),
                                          MMP_TO_BROKER, &msg, &err), 0);
                cr_assert_eq (msg.messages [0].attributes_size, strlen (attributes));
                cr_assert_eq (memcmp (msg.messages [0].attributes, attributes, strlen (attributes)), 0);
                mmp_msg_reset (&msg);
            }
            free (body);
            free (attributes);
            free (padding);
        }
    }
}

Test (mmp_decode, steps, .timeout = 10)
{
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"reboot\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"Save\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"save\",\"save\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"save\",\"restart\",\"save\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"save\",\"restart\",\"started\",\"save\"]}", MMP_ERR_TOO_MANY);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"started\"]}", "ok");
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"started\",\"started\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"Started\"]}", MMP_ERR_BAD_VALUE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[null]}", MMP_ERR_BAD_TYPE);
    TO ("PROGRESS", "{\"delivery_ids\":[1],\"steps\":[\"save\",\"restart\"]}", "ok");
#undef DELIVER_FMT
#define DELIVER_FMT "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":2,\"deadline_ms\":1,\"steps\":%s," "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}"
    char body [512];
    snprintf (body, sizeof body, DELIVER_FMT, "[\"restart\",\"restart\"]");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "[\"x\"]");
    FROM ("DELIVER", body, MMP_ERR_BAD_VALUE);
    snprintf (body, sizeof body, DELIVER_FMT, "[1]");
    FROM ("DELIVER", body, MMP_ERR_BAD_TYPE);
    snprintf (body, sizeof body, DELIVER_FMT, "[\"save\",\"restart\"]");
    FROM ("DELIVER", body, "ok");
}

//  The optional fields of this round: HELLO features, DELIVER in_doubt
Test (mmp_decode, features_and_in_doubt, .timeout = 10)
{
    TO ("HELLO", "{\"credit\":1,\"features\":[]}", "ok");
    TO ("HELLO", "{\"credit\":1,\"features\":[\"in_doubt\",\"verify\",\"teleport\"]}", "ok");
    TO ("HELLO", "{\"credit\":1,\"features\":\"verify\"}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":1,\"features\":[1]}", MMP_ERR_BAD_TYPE);
    TO ("HELLO", "{\"credit\":1,\"feature\":[]}", MMP_ERR_UNKNOWN_FIELD);
    char body [2048];
    size_t at = (size_t) snprintf (body, sizeof body, "{\"credit\":1,\"features\":[");
    for (int i = 0; i < MMP_MAX_FEATURES + 1; i++)
        at += (size_t) snprintf (body + at, sizeof body - at, "%s\"f%d\"", i ? "," : "", i);
    snprintf (body + at, sizeof body - at, "]}");
    TO ("HELLO", body, MMP_ERR_TOO_MANY);

    mmp_msg_t msg;
    mmp_error_t err;
    mmp_msg_init (&msg);
    const char *hello = "{\"credit\":1,\"features\":[\"verify\",\"x\",\"in_doubt\"]}";
    cr_assert_eq (mmp_decode ("MMP1", 4, "HELLO", 5, hello, strlen (hello), MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.features, MMP_FEATURE_IN_DOUBT | MMP_FEATURE_VERIFY);
    mmp_msg_reset (&msg);
    hello = "{\"credit\":1}";
    cr_assert_eq (mmp_decode ("MMP1", 4, "HELLO", 5, hello, strlen (hello), MMP_TO_BROKER, &msg, &err), 0);
    cr_assert_eq (msg.features, 0);
    mmp_msg_reset (&msg);

#define DOUBT_FMT "{\"deliveries\":[{\"delivery_id\":1,\"attempt\":2,\"deadline_ms\":1,\"steps\":[]," "\"in_doubt\":%s,\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}," "{\"delivery_id\":2,\"attempt\":1,\"deadline_ms\":1,\"steps\":[]," "\"message\":{\"message_id\":\"" U1 "\",\"instance_name\":\"a\",\"hostname\":\"a\"}}]}"
    snprintf (body, sizeof body, DOUBT_FMT, "1");
    FROM ("DELIVER", body, MMP_ERR_BAD_TYPE);
    snprintf (body, sizeof body, DOUBT_FMT, "\"yes\"");
    FROM ("DELIVER", body, MMP_ERR_BAD_TYPE);
    snprintf (body, sizeof body, DOUBT_FMT, "true");
    cr_assert_eq (mmp_decode ("MMP1", 4, "DELIVER", 7, body, strlen (body), MMP_FROM_BROKER, &msg, &err), 0,
                  "%s", err.reason);
    cr_assert_eq (msg.delivery_count, 2);
    cr_assert (msg.deliveries [0].in_doubt);
    cr_assert_not (msg.deliveries [1].in_doubt);
    mmp_msg_reset (&msg);
}

Test (mmp_decode, reason_names_the_field, .timeout = 10)
{
    mmp_error_t err;
    const char *body = "{\"messages\":[{\"instance_name\":\"a\"},{\"instance_name\":\"a\",\"hostname\":\"x..y\"}]}";
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "PUBLISH", body, strlen (body), &err), MMP_ERR_BAD_HOSTNAME);
    cr_assert (strstr (err.reason, "messages[1].hostname"), "%s", err.reason);
    body = "{\"delivery_ids\":[1,2,\"3\"]}";
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "ACK", body, strlen (body), &err), MMP_ERR_BAD_TYPE);
    cr_assert (strstr (err.reason, "delivery_ids[2]"), "%s", err.reason);
    body = "{\"credit\":1,\"colour\":\"red\"}";
    cr_assert_str_eq (s_decode_code (MMP_TO_BROKER, "HELLO", body, strlen (body), &err), MMP_ERR_UNKNOWN_FIELD);
    cr_assert (strstr (err.reason, "colour"), "%s", err.reason);
}


//  --------------------------------------------------------------------------
//  mmp_buf

//  Escape text with mmp_buf, parse it back with cJSON, compare.
static void
s_round_trip_string (const char *text)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_json_string (&buf, text);
    cr_assert_not (mmp_buf_failed (&buf));
    cJSON *parsed = cJSON_Parse (mmp_buf_data (&buf));
    cr_assert_not_null (parsed, "not JSON: %s", mmp_buf_data (&buf));
    cr_assert (cJSON_IsString (parsed));
    cr_assert_str_eq (parsed->valuestring, text);
    cJSON_Delete (parsed);
    mmp_buf_free (&buf);
}

static void
s_expect_escaped (const char *text, const char *expected)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_json_string (&buf, text);
    cr_assert_str_eq (mmp_buf_data (&buf), expected);
    cr_assert_eq (mmp_buf_size (&buf), strlen (expected));
    mmp_buf_free (&buf);
}

Test (mmp_buf, escaping, .timeout = 10)
{
    s_expect_escaped ("", "\"\"");
    s_expect_escaped (NULL, "\"\"");
    s_expect_escaped ("plain", "\"plain\"");
    s_expect_escaped ("a\"b", "\"a\\\"b\"");
    s_expect_escaped ("a\\b", "\"a\\\\b\"");
    s_expect_escaped ("\b\f\n\r\t", "\"\\b\\f\\n\\r\\t\"");
    s_expect_escaped ("\x01\x1f", "\"\\u0001\\u001f\"");
    s_expect_escaped ("/\x7f", "\"/\x7f\"");
    s_expect_escaped ("caf\xc3\xa9", "\"caf\xc3\xa9\"");                    //  2 bytes
    s_expect_escaped ("\xe2\x82\xac", "\"\xe2\x82\xac\"");                  //  3 bytes
    s_expect_escaped ("\xf0\x9f\x90\x92", "\"\xf0\x9f\x90\x92\"");          //  4 bytes
    //  Invalid UTF-8 becomes U+FFFD, one per bad byte
    s_expect_escaped ("a\xff" "b", "\"a\\ufffdb\"");
    s_expect_escaped ("\x80", "\"\\ufffd\"");                               //  Lone continuation
    s_expect_escaped ("\xc0\x80", "\"\\ufffd\\ufffd\"");                    //  Overlong
    s_expect_escaped ("\xed\xa0\x80", "\"\\ufffd\\ufffd\\ufffd\"");         //  Surrogate
    s_expect_escaped ("\xf4\x90\x80\x80", "\"\\ufffd\\ufffd\\ufffd\\ufffd\"");  //  Over U+10FFFF
    s_expect_escaped ("\xe2\x82", "\"\\ufffd\\ufffd\"");                    //  Cut short at the end
    s_expect_escaped ("\xc3", "\"\\ufffd\"");
}

Test (mmp_buf, every_byte_round_trips, .timeout = 10)
{
    char text [256];
    for (int c = 1; c < 128; c++) {
        text [0] = 'x';
        text [1] = (char) c;
        text [2] = 'y';
        text [3] = 0;
        s_round_trip_string (text);
    }
    for (int c = 1; c < 128; c++)
        text [c - 1] = (char) c;
    text [127] = 0;
    s_round_trip_string (text);
    s_round_trip_string ("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x92 \"q\" \\ \n");
}

Test (mmp_buf, numbers_arrays_printf, .timeout = 10)
{
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_u64 (&buf, 0);
    mmp_buf_puts (&buf, " ");
    mmp_buf_u64 (&buf, UINT64_MAX);
    cr_assert_str_eq (mmp_buf_data (&buf), "0 18446744073709551615");
    mmp_buf_clear (&buf);
    cr_assert_eq (mmp_buf_size (&buf), 0);
    cr_assert_str_eq (mmp_buf_data (&buf), "");
    mmp_buf_id_array (&buf, NULL, 0);
    uint64_t ids [] = { 1, 22, 333 };
    mmp_buf_id_array (&buf, ids, 3);
    cr_assert_str_eq (mmp_buf_data (&buf), "[][1,22,333]");
    mmp_buf_clear (&buf);

    //  printf growing past the first allocation
    char big [5000];
    memset (big, 'z', sizeof big - 1);
    big [sizeof big - 1] = 0;
    mmp_buf_printf (&buf, "<%s|%d>", big, 42);
    cr_assert_eq (mmp_buf_size (&buf), strlen (big) + 5);
    cr_assert_eq (mmp_buf_data (&buf) [0], '<');
    cr_assert_str_eq (mmp_buf_data (&buf) + mmp_buf_size (&buf) - 4, "|42>");
    cr_assert_not (mmp_buf_failed (&buf));

    //  Many small appends
    mmp_buf_clear (&buf);
    for (int i = 0; i < 100000; i++)
        mmp_buf_append (&buf, "ab", 2);
    cr_assert_eq (mmp_buf_size (&buf), 200000);
    cr_assert_eq (strlen (mmp_buf_data (&buf)), 200000);
    mmp_buf_append (&buf, "", 0);
    cr_assert_eq (mmp_buf_size (&buf), 200000);
    mmp_buf_free (&buf);
    cr_assert_str_eq (mmp_buf_data (&buf), "");
    cr_assert_eq (mmp_buf_size (&buf), 0);
    mmp_buf_free (&buf);        //  Safe twice
}
