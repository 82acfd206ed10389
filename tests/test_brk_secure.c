/*  Tests for the broker with CURVE and roles: a real broker actor on
    127.0.0.1 with a certificate and four role directories, driven by CURVE
    DEALERs and SUBs; and the loopback-only rule without a certificate.
    Waits are receive timeouts, never sleeps.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brk_server.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static char s_dir [64];
static char s_roles [BRK_ROLE_COUNT][128];
static int s_ports [3];

static void
s_keys (void)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_secure_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "broker", NULL, error, sizeof error), 0, "%s", error);
    cr_assert_eq (mdl_curve_keygen (s_dir, "stranger", NULL, error, sizeof error), 0, "%s", error);
    for (int role = BRK_ROLE_PUBLISHER; role < BRK_ROLE_COUNT; role++) {
        snprintf (s_roles [role], sizeof s_roles [role], "%s/%ss", s_dir, brk_role_name (role));
        cr_assert_eq (mkdir (s_roles [role], 0700), 0);
        const char *name = brk_role_name (role);
        cr_assert_eq (mdl_curve_keygen (s_dir, name, NULL, error, sizeof error), 0, "%s", error);
        char command [512];
        snprintf (command, sizeof command, "cp '%s/%s.key' '%s/'", s_dir, name, s_roles [role]);
        cr_assert_eq (system (command), 0);
    }
}

static void
s_setup (void)
{
    s_keys ();
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.epoch = 3;
    char cert [128];
    snprintf (cert, sizeof cert, "%s/broker.key_secret", s_dir);
    config.curve_cert = cert;
    for (int role = BRK_ROLE_PUBLISHER; role < BRK_ROLE_COUNT; role++)
        config.role_dirs [role] = s_roles [role];
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    zstr_send (s_broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &status), 0);
    cr_assert_eq (status, BRK_SERVER_OK);
    const char *names [3] = { "frontend", "backend", "events" };
    for (int i = 0; i < 3; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        cr_assert_eq (zsock_recv (s_broker, "i", &s_ports [i]), 0);
        cr_assert_gt (s_ports [i], 0);
    }
}

static void
s_teardown (void)
{
    zactor_destroy (&s_broker);
    if (*s_dir) {
        char command [128];
        snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
        cr_expect_eq (system (command), 0);
    }
}

//  A socket of type on the broker's socket index (0 frontend, 1 backend,
//  2 events), as key name (NULL: plain TCP, no CURVE).
static zsock_t *
s_client (int type, const char *name, int index)
{
    zsock_t *sock = zsock_new (type);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 10000);   //  A handshake under valgrind is slow
    zsock_set_linger (sock, 0);
    if (name) {
        char own [256], server [256], error [256] = "";
        snprintf (own, sizeof own, "%s/%s.key_secret", s_dir, name);
        snprintf (server, sizeof server, "%s/broker.key", s_dir);
        cr_assert_eq (mdl_curve_client_files (sock, own, server, error, sizeof error), 0, "%s", error);
    }
    if (type == ZMQ_SUB)
        zsock_set_subscribe (sock, "");
    cr_assert_eq (zsock_connect (sock, "tcp://127.0.0.1:%d", s_ports [index]), 0);
    return sock;
}

//  Send a request and return the command of the reply (or -1: no reply);
//  an ERROR's code is copied into code.
static int
s_ask (zsock_t *sock, mmp_command_t command, const char *json, char *code)
{
    if (code)
        *code = 0;
    cr_assert_eq (mmp_send (sock, NULL, command, json, strlen (json)), 0);
    mmp_msg_t reply;
    mmp_msg_init (&reply);
    if (mmp_recv (sock, true, NULL, MMP_FROM_BROKER, &reply, NULL) != 0)
        return -1;
    int answer = (int) reply.command;
    if (code && reply.command == MMP_ERROR && reply.code)
        snprintf (code, 64, "%s", reply.code);
    mmp_msg_reset (&reply);
    return answer;
}

//  s_ask for an answer that must not come: a short wait.
static int
s_ask_nothing (zsock_t *sock, mmp_command_t command, const char *json)
{
    zsock_set_rcvtimeo (sock, 700);
    return s_ask (sock, command, json, NULL);
}

static const char *s_publish = "{\"messages\":[{\"instance_name\":\"cattle-ab12\"}],\"req\":\"p\"}";
static const char *s_replay = "{\"message_ids\":[\"00000000-0000-4000-8000-000000000007\"],\"req\":\"r\"}";

TestSuite (brk_secure, .init = s_setup, .fini = s_teardown);

Test (brk_secure, each_role_can_do_exactly_its_commands, .timeout = 60)
{
    char code [64];
    zsock_t *publisher = s_client (ZMQ_DEALER, "publisher", 0);
    cr_expect_eq (s_ask (publisher, MMP_PUBLISH, s_publish, code), MMP_PUBACK, "%s", code);
    cr_expect_eq (s_ask (publisher, MMP_STATS, "{\"req\":\"s\"}", code), MMP_ERROR);
    cr_expect_str_eq (code, MMP_ERR_FORBIDDEN);
    cr_expect_eq (s_ask (publisher, MMP_DEADLETTERS, "{}", code), MMP_ERROR);
    cr_expect_str_eq (code, MMP_ERR_FORBIDDEN);
    cr_expect_eq (s_ask (publisher, MMP_REPLAY, s_replay, code), MMP_ERROR);
    cr_expect_str_eq (code, MMP_ERR_FORBIDDEN);

    zsock_t *observer = s_client (ZMQ_DEALER, "observer", 0);
    cr_expect_eq (s_ask (observer, MMP_STATS, "{}", code), MMP_STATS);
    cr_expect_eq (s_ask (observer, MMP_PUBLISH, s_publish, code), MMP_ERROR);
    cr_expect_str_eq (code, MMP_ERR_FORBIDDEN);
    cr_expect_eq (s_ask (observer, MMP_DEADLETTERS, "{}", code), MMP_ERROR);
    cr_expect_eq (s_ask (observer, MMP_REPLAY, s_replay, code), MMP_ERROR);
    cr_expect_str_eq (code, MMP_ERR_FORBIDDEN);

    zsock_t *operator = s_client (ZMQ_DEALER, "operator", 0);
    cr_expect_eq (s_ask (operator, MMP_STATS, "{}", code), MMP_STATS);
    cr_expect_eq (s_ask (operator, MMP_DEADLETTERS, "{}", code), MMP_DEADLETTERS);
    cr_expect_eq (s_ask (operator, MMP_REPLAY, s_replay, code), MMP_REPLAYED, "%s", code);
    cr_expect_eq (s_ask (operator, MMP_PUBLISH, s_publish, code), MMP_PUBACK, "%s", code);
    //  Worker commands on the frontend stay refused as before
    cr_expect_eq (s_ask (operator, MMP_HELLO, "{\"credit\":1}", code), MMP_ERROR);

    //  The worker key works on the backend only
    zsock_t *worker = s_client (ZMQ_DEALER, "worker", 1);
    cr_expect_eq (s_ask (worker, MMP_HELLO, "{\"credit\":10,\"name\":\"w\"}", code), MMP_WELCOME);
    zsock_t *worker_front = s_client (ZMQ_DEALER, "worker", 0);
    cr_expect_eq (s_ask_nothing (worker_front, MMP_STATS, "{}"), -1, "a worker key got frontend service");
    zsock_t *publisher_back = s_client (ZMQ_DEALER, "publisher", 1);
    cr_expect_eq (s_ask_nothing (publisher_back, MMP_HELLO, "{\"credit\":1}"), -1, "a publisher key got work");

    zsock_t *sockets [] = { publisher, observer, operator, worker, worker_front, publisher_back };
    for (size_t i = 0; i < sizeof sockets / sizeof sockets [0]; i++)
        zsock_destroy (&sockets [i]);
}

Test (brk_secure, unauthenticated_and_unknown_get_no_service, .timeout = 60)
{
    zsock_t *plain = s_client (ZMQ_DEALER, NULL, 0);
    cr_expect_eq (s_ask_nothing (plain, MMP_STATS, "{}"), -1, "plain TCP got an answer");
    zsock_t *stranger = s_client (ZMQ_DEALER, "stranger", 0);
    cr_expect_eq (s_ask_nothing (stranger, MMP_PUBLISH, s_publish), -1, "an unknown key got an answer");
    zsock_t *plain_worker = s_client (ZMQ_DEALER, NULL, 1);
    cr_expect_eq (s_ask_nothing (plain_worker, MMP_HELLO, "{\"credit\":1}"), -1, "plain worker welcomed");
    //  Nothing reached the queue: an operator sees no publish
    zsock_t *operator = s_client (ZMQ_DEALER, "operator", 0);
    cr_assert_eq (mmp_send (operator, NULL, MMP_STATS, "{}", 2), 0);
    mmp_msg_t reply;
    mmp_msg_init (&reply);
    cr_assert_eq (mmp_recv (operator, true, NULL, MMP_FROM_BROKER, &reply, NULL), 0);
    cr_assert_eq (reply.command, MMP_STATS);
    cJSON *published = cJSON_GetObjectItem (reply.body, "published");
    if (published)
        cr_expect_eq (published->valuedouble, 0);
    mmp_msg_reset (&reply);
    zsock_destroy (&plain);
    zsock_destroy (&stranger);
    zsock_destroy (&plain_worker);
    zsock_destroy (&operator);
}

Test (brk_secure, events_reach_operators_and_observers_only, .timeout = 60)
{
    zsock_t *observer = s_client (ZMQ_SUB, "observer", 2);
    zsock_t *publisher_sub = s_client (ZMQ_SUB, "publisher", 2);
    zsock_t *plain_sub = s_client (ZMQ_SUB, NULL, 2);
    zsock_t *publisher = s_client (ZMQ_DEALER, "publisher", 0);
    //  A subscription takes a moment to reach the broker: publish until
    //  the observer hears something (bounded)
    zmsg_t *event = NULL;
    for (int i = 0; i < 40 && !event; i++) {
        cr_assert_eq (s_ask (publisher, MMP_PUBLISH, s_publish, NULL), MMP_PUBACK);
        zsock_set_rcvtimeo (observer, 250);
        event = zmsg_recv (observer);
    }
    cr_expect_not_null (event, "the observer heard no event");
    zmsg_destroy (&event);
    zsock_set_rcvtimeo (publisher_sub, 300);
    zsock_set_rcvtimeo (plain_sub, 300);
    event = zmsg_recv (publisher_sub);
    cr_expect_null (event, "a publisher key read events");
    zmsg_destroy (&event);
    event = zmsg_recv (plain_sub);
    cr_expect_null (event, "plain TCP read events");
    zmsg_destroy (&event);
    zsock_destroy (&observer);
    zsock_destroy (&publisher_sub);
    zsock_destroy (&plain_sub);
    zsock_destroy (&publisher);
}

Test (brk_secure, a_removed_key_is_refused_on_its_next_connection, .timeout = 60)
{
    zsock_t *observer = s_client (ZMQ_DEALER, "observer", 0);
    cr_assert_eq (s_ask (observer, MMP_STATS, "{}", NULL), MMP_STATS);
    char path [256];
    snprintf (path, sizeof path, "%s/observer.key", s_roles [BRK_ROLE_OBSERVER]);
    cr_assert_eq (unlink (path), 0);
    //  The open connection keeps its role (documented)
    cr_expect_eq (s_ask (observer, MMP_STATS, "{}", NULL), MMP_STATS);
    zsock_destroy (&observer);
    observer = s_client (ZMQ_DEALER, "observer", 0);
    cr_expect_eq (s_ask_nothing (observer, MMP_STATS, "{}"), -1, "a removed key was served");
    zsock_destroy (&observer);
}

Test (brk_secure, a_bad_certificate_fails_the_start, .timeout = 30)
{
    zactor_destroy (&s_broker);     //  One ZAP handler per process
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    char cert [128];
    snprintf (cert, sizeof cert, "%s/broker.key", s_dir);  //  Public only
    config.curve_cert = cert;
    zactor_t *broker = zactor_new (brk_server, &config);
    cr_assert_not_null (broker);
    zstr_send (broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (broker, "i", &status), 0);
    cr_expect_eq (status, BRK_SERVER_FAILED);
    zactor_destroy (&broker);
}

//  Without a certificate: loopback only, unless insecure.
static int
s_bind (zactor_t *broker, const char *endpoint)
{
    zstr_sendx (broker, "BIND", "frontend", endpoint, NULL);
    int port = -1;
    cr_assert_eq (zsock_recv (broker, "i", &port), 0);
    return port;
}

Test (brk_plain, loopback_only_unless_insecure, .timeout = 30)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    zactor_t *broker = zactor_new (brk_server, &config);
    cr_assert_not_null (broker);
    cr_expect_eq (s_bind (broker, "tcp://*:0"), -1);
    cr_expect_eq (s_bind (broker, "tcp://0.0.0.0:*"), -1);
    cr_expect_gt (s_bind (broker, "tcp://127.0.0.1:*"), 0);
    cr_expect_gt (s_bind (broker, "tcp://127.0.0.2:*"), 0);
    zactor_destroy (&broker);

    config.insecure = true;
    broker = zactor_new (brk_server, &config);
    cr_assert_not_null (broker);
    cr_expect_gt (s_bind (broker, "tcp://*:*"), 0);
    zactor_destroy (&broker);
}

Test (brk_plain, local_endpoints, .timeout = 10)
{
    cr_expect (brk_auth_local ("tcp://127.0.0.1:5555"));
    cr_expect (brk_auth_local ("tcp://127.1.2.3:*"));
    cr_expect (brk_auth_local ("tcp://localhost:5555"));
    cr_expect (brk_auth_local ("tcp://[::1]:5555"));
    cr_expect (brk_auth_local ("ipc:///tmp/x"));
    cr_expect (brk_auth_local ("inproc://x"));
    cr_expect_not (brk_auth_local ("tcp://*:5555"));
    cr_expect_not (brk_auth_local ("tcp://0.0.0.0:5555"));
    cr_expect_not (brk_auth_local ("tcp://10.0.0.1:5555"));
    cr_expect_not (brk_auth_local ("tcp://eth0:5555"));
    cr_expect_not (brk_auth_local ("tcp://127.0.0.1.evil:5555"));
    cr_expect_not (brk_auth_local ("tcp://localhost.evil.com:5555"));
    cr_expect_not (brk_auth_local ("tcp://127.0.0.1;10.0.0.1:5555"));
    cr_expect_not (brk_auth_local ("tcp://1270.0.0.1:5555"));
    cr_expect_not (brk_auth_local ("pgm://127.0.0.1;239.0.0.1:5555"));
    cr_expect_not (brk_auth_local (NULL));
}

Test (brk_secure, a_worker_is_named_by_its_key, .timeout = 60)
{
    zsock_t *feed = s_client (ZMQ_SUB, "operator", 2);
    zsock_set_rcvtimeo (feed, 250);
    char *event = NULL;
    zsock_t *workers [20] = { NULL };
    //  The subscription takes a moment to reach the broker: a new worker
    //  joins until the feed shows one (bounded)
    for (int i = 0; i < 20 && !event; i++) {
        workers [i] = s_client (ZMQ_DEALER, "worker", 1);
        cr_assert_eq (s_ask (workers [i], MMP_HELLO, "{\"credit\":1,\"name\":\"claimed\"}", NULL), MMP_WELCOME);
        zmsg_t *msg = zmsg_recv (feed);
        while (msg && !event) {
            char *topic = zmsg_popstr (msg);
            char *body = zmsg_popstr (msg);
            if (topic && body && streq (topic, "worker_joined"))
                event = strdup (body);
            zstr_free (&topic);
            zstr_free (&body);
            zmsg_destroy (&msg);
            if (!event)
                msg = zmsg_recv (feed);
        }
        zmsg_destroy (&msg);
    }
    cr_assert_not_null (event, "no worker_joined event");
    cr_expect (strstr (event, "\"worker\":\"worker/claimed\"") != NULL, "%s", event);
    free (event);
    for (int i = 0; i < 20; i++)
        zsock_destroy (&workers [i]);
    zsock_destroy (&feed);
}
