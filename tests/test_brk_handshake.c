/*  Handshake fuzz: garbage before and during CURVE against the broker's
    CURVE sockets, over raw TCP on 127.0.0.1, with a seeded random source
    so a failure replays. Kinds of input, each on a fresh connection:
      - random bytes from the first byte (no ZMTP greeting at all);
      - a valid ZMTP 3 greeting for CURVE, then random bytes;
      - the greeting, then a CURVE HELLO command frame with the right
        name and size but random contents (the box does not open);
      - the greeting, then HELLO frames with random sizes and flags;
      - a greeting that asks for NULL or PLAIN against the CURVE server;
      - any of these cut off at a random byte, the socket closed mid-way.
    After every batch a real CURVE client with an allowed key must still be
    served, and at the end the broker must answer STATUS on its pipe.
    Waits are receive timeouts; garbage sockets are non-blocking writes.
*/
#include <criterion/criterion.h>
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "brk_server.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mmp.h"

#define S_ROUNDS    20          //  Batches, each followed by a real client's check
#define S_PER_ROUND 25          //  Garbage connections per batch

static char s_dir [64];
static zactor_t *s_broker;
static int s_port [2];          //  Frontend, backend
static uint64_t s_seed = 0x9E3779B97F4A7C15ULL;

static uint32_t
s_rand (void)
{
    //  xorshift64*: small, seeded, the same sequence on every run
    s_seed ^= s_seed >> 12;
    s_seed ^= s_seed << 25;
    s_seed ^= s_seed >> 27;
    return (uint32_t) ((s_seed * 2685821657736338717ULL) >> 32);
}

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_handshake_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    char error [256] = "", roles [128], command [512];
    cr_assert_eq (mdl_curve_keygen (s_dir, "broker", NULL, error, sizeof error), 0, "%s", error);
    cr_assert_eq (mdl_curve_keygen (s_dir, "client", NULL, error, sizeof error), 0, "%s", error);
    snprintf (roles, sizeof roles, "%s/operators", s_dir);
    cr_assert_eq (mkdir (roles, 0700), 0);
    snprintf (command, sizeof command, "cp '%s/client.key' '%s/'", s_dir, roles);
    cr_assert_eq (system (command), 0);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    char cert [128];
    snprintf (cert, sizeof cert, "%s/broker.key_secret", s_dir);
    config.curve_cert = cert;
    config.role_dirs [BRK_ROLE_OPERATOR] = roles;
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    const char *names [2] = { "frontend", "backend" };
    for (int i = 0; i < 2; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        cr_assert_eq (zsock_recv (s_broker, "i", &s_port [i]), 0);
        cr_assert_gt (s_port [i], 0);
    }
}

static void
s_teardown (void)
{
    zactor_destroy (&s_broker);
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    cr_expect_eq (system (command), 0);
}

//  The 64-byte ZMTP 3.0 greeting of a client asking for mechanism.
static size_t
s_greeting (unsigned char *out, const char *mechanism)
{
    memset (out, 0, 64);
    out [0] = 0xFF;
    out [9] = 0x7F;
    out [10] = 3;
    out [11] = 0;
    memcpy (out + 12, mechanism, strlen (mechanism));
    return 64;
}

//  One garbage connection: build the bytes, write them (cut at a random
//  point half the time), read whatever comes back, close.
static void
s_garbage (int port)
{
    unsigned char data [1024];
    size_t size = 0;
    int kind = (int) (s_rand () % 6);
    if (kind == 0) {
        size = 1 + s_rand () % sizeof data;
        for (size_t i = 0; i < size; i++)
            data [i] = (unsigned char) s_rand ();
    }
    else {
        size = s_greeting (data, kind == 4 ? "NULL" : kind == 5 ? "PLAIN" : "CURVE");
        if (kind == 1 || kind >= 4) {
            size_t extra = s_rand () % 512;
            for (size_t i = 0; i < extra; i++)
                data [size++] = (unsigned char) s_rand ();
        }
        else {
            //  A command frame: flags, size, then "\x05HELLO" and the body
            size_t body = kind == 2 ? 200 - 6 : s_rand () % 400;
            data [size++] = kind == 2 ? 0x04 : (unsigned char) (s_rand () & 0x07);
            data [size++] = (unsigned char) (kind == 2 ? 200 : s_rand ());
            memcpy (data + size, "\x05HELLO", 6);
            size += 6;
            for (size_t i = 0; i < body && size < sizeof data; i++)
                data [size++] = (unsigned char) s_rand ();
        }
    }
    if (s_rand () % 2)
        size = 1 + s_rand () % size;
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct sockaddr_in addr;
    memset (&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons ((uint16_t) port);
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    struct timeval timeout = { 0, 100 * 1000 };
    setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
    setsockopt (fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
    cr_assert_eq (connect (fd, (struct sockaddr *) &addr, sizeof addr), 0, "%s", strerror (errno));
    //  The peer may close on us mid-write: that is the point, not a failure
    ssize_t wrote = send (fd, data, size, MSG_NOSIGNAL);
    (void) wrote;
    unsigned char reply [256];
    ssize_t got = recv (fd, reply, sizeof reply, 0);
    (void) got;
    close (fd);
}

//  A real operator asks STATS on the frontend and must be answered.
static void
s_still_serves (int round)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_linger (sock, 0);
    zsock_set_rcvtimeo (sock, 5000);
    char own [128], server [128], error [256] = "";
    snprintf (own, sizeof own, "%s/client.key_secret", s_dir);
    snprintf (server, sizeof server, "%s/broker.key", s_dir);
    cr_assert_eq (mdl_curve_client_files (sock, own, server, error, sizeof error), 0, "%s", error);
    cr_assert_eq (zsock_connect (sock, "tcp://127.0.0.1:%d", s_port [0]), 0);
    cr_assert_eq (mmp_send (sock, NULL, MMP_STATS, "{}", 2), 0);
    mmp_msg_t reply;
    mmp_msg_init (&reply);
    cr_assert_eq (mmp_recv (sock, true, NULL, MMP_FROM_BROKER, &reply, NULL), 0,
                  "no STATS after garbage round %d", round);
    cr_expect_eq (reply.command, MMP_STATS);
    mmp_msg_reset (&reply);
    zsock_destroy (&sock);
}

TestSuite (brk_handshake, .init = s_setup, .fini = s_teardown);

Test (brk_handshake, garbage_before_and_during_curve_is_survived, .timeout = 120)
{
    for (int round = 0; round < S_ROUNDS; round++) {
        for (int i = 0; i < S_PER_ROUND; i++)
            s_garbage (s_port [s_rand () % 2]);
        s_still_serves (round);
    }
    zstr_send (s_broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &status), 0);
    cr_expect_eq (status, BRK_SERVER_OK);
}
