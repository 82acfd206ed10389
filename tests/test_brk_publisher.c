/*  Tests for the publisher's name on DELIVER: a real broker actor on
    127.0.0.1 with CURVE, a publisher key, and two workers, one whose
    HELLO declares the "publisher" feature and one that does not. Only the
    first gets the field (PROTOCOL.md, Versioning). Without CURVE nobody
    is named. Waits are receive timeouts, never sleeps.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "brk_auth.h"
#include "brk_server.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static char s_dir [64];
static int s_ports [3];

//  Start a broker; with_curve: a certificate, a publisher and a worker
//  directory (keys "alice" and "wrk").
static void
s_start (bool with_curve)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_publisher_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    char cert [128], publishers [128], workers [128];
    if (with_curve) {
        char error [256] = "", command [512];
        cr_assert_eq (mdl_curve_keygen (s_dir, "broker", NULL, error, sizeof error), 0, "%s", error);
        cr_assert_eq (mdl_curve_keygen (s_dir, "alice", NULL, error, sizeof error), 0, "%s", error);
        cr_assert_eq (mdl_curve_keygen (s_dir, "wrk", NULL, error, sizeof error), 0, "%s", error);
        snprintf (publishers, sizeof publishers, "%s/publishers", s_dir);
        snprintf (workers, sizeof workers, "%s/workers", s_dir);
        cr_assert_eq (mkdir (publishers, 0700), 0);
        cr_assert_eq (mkdir (workers, 0700), 0);
        snprintf (command, sizeof command, "cp '%s/alice.key' '%s/' && cp '%s/wrk.key' '%s/'",
                  s_dir, publishers, s_dir, workers);
        cr_assert_eq (system (command), 0);
        snprintf (cert, sizeof cert, "%s/broker.key_secret", s_dir);
        config.curve_cert = cert;
        config.role_dirs [BRK_ROLE_PUBLISHER] = publishers;
        config.role_dirs [BRK_ROLE_WORKER] = workers;
    }
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

//  A DEALER on socket index (0 frontend, 1 backend) as key (NULL: no CURVE).
static zsock_t *
s_client (const char *key, int index)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 10000);   //  A handshake under valgrind is slow
    zsock_set_linger (sock, 0);
    if (key) {
        char own [256], server [256], error [256] = "";
        snprintf (own, sizeof own, "%s/%s.key_secret", s_dir, key);
        snprintf (server, sizeof server, "%s/broker.key", s_dir);
        cr_assert_eq (mdl_curve_client_files (sock, own, server, error, sizeof error), 0, "%s", error);
    }
    cr_assert_eq (zsock_connect (sock, "tcp://127.0.0.1:%d", s_ports [index]), 0);
    return sock;
}

//  Receive until a message of command comes (heartbeats are skipped);
//  fills msg (the caller resets it).
static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    for (int i = 0; i < 50; i++) {
        mmp_msg_init (msg);
        cr_assert_eq (mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, NULL), 0,
                      "no %s came", mmp_command_name (command));
        if (msg->command == command)
            return;
        cr_assert (msg->command == MMP_HEARTBEAT, "%s while waiting for %s",
                   mmp_command_name (msg->command), mmp_command_name (command));
        mmp_msg_reset (msg);
    }
    cr_assert_fail ("no %s came", mmp_command_name (command));
}

//  A worker says HELLO with credit 1 and the features given.
static zsock_t *
s_worker (const char *key, const char *name, unsigned features)
{
    zsock_t *worker = s_client (key, 1);
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    cr_assert_eq (mmp_encode_hello (&buf, 1, name, NULL, features), 0);
    cr_assert_eq (mmp_send (worker, NULL, MMP_HELLO, mmp_buf_data (&buf), mmp_buf_size (&buf)), 0);
    mmp_buf_free (&buf);
    mmp_msg_t welcome;
    s_expect (worker, MMP_WELCOME, &welcome);
    mmp_msg_reset (&welcome);
    return worker;
}

static void
s_publish_two (const char *key)
{
    zsock_t *publisher = s_client (key, 0);
    const char *body = "{\"messages\":[{\"instance_name\":\"cattle-1\"},{\"instance_name\":\"cattle-2\"}]}";
    cr_assert_eq (mmp_send (publisher, NULL, MMP_PUBLISH, body, strlen (body)), 0);
    mmp_msg_t puback;
    s_expect (publisher, MMP_PUBACK, &puback);
    mmp_msg_reset (&puback);
    zsock_destroy (&publisher);
}

TestSuite (brk_publisher, .fini = s_teardown);

Test (brk_publisher, deliver_names_the_publisher_only_to_workers_that_declared_it, .timeout = 60)
{
    s_start (true);
    zsock_t *knows = s_worker ("wrk", "new", MMP_FEATURE_PUBLISHER | MMP_FEATURE_IN_DOUBT);
    zsock_t *older = s_worker ("wrk", "old", 0);
    s_publish_two ("alice");
    mmp_msg_t deliver;
    s_expect (knows, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1);
    cr_assert_not_null (deliver.deliveries [0].publisher);
    cr_expect_str_eq (deliver.deliveries [0].publisher, "alice");
    mmp_msg_reset (&deliver);
    s_expect (older, MMP_DELIVER, &deliver);
    cr_assert_eq (deliver.delivery_count, 1);
    cr_expect_null (deliver.deliveries [0].publisher, "a worker that did not declare it got it");
    cr_expect_null (strstr (deliver.raw, "publisher"));
    mmp_msg_reset (&deliver);
    zsock_destroy (&knows);
    zsock_destroy (&older);
}

Test (brk_publisher, without_curve_nobody_is_named, .timeout = 60)
{
    s_start (false);
    zsock_t *knows = s_worker (NULL, "new", MMP_FEATURE_PUBLISHER);
    s_publish_two (NULL);
    mmp_msg_t deliver;
    s_expect (knows, MMP_DELIVER, &deliver);
    cr_assert_geq (deliver.delivery_count, 1);
    cr_expect_null (deliver.deliveries [0].publisher);
    mmp_msg_reset (&deliver);
    zsock_destroy (&knows);
}
