/*  fuzz_handshake: libFuzzer target for the broker's CURVE handshake path.

    LLVMFuzzerInitialize makes two key pairs in a scratch directory (a
    server and a publisher, mdl_curve_keygen), starts the broker's ZAP
    handler (brk_auth) with the publisher's public file as the only
    allowed key, and binds a CURVE server ROUTER (mdl_curve_server, ZAP
    domain "frontend", with its frame limit) on tcp://127.0.0.1:*, as the
    broker's frontend is set up. Each input is written as it is on a fresh
    raw TCP connection: garbage before the greeting, a greeting with a
    wrong signature, version or mechanism, a truncated or corrupted CURVE
    HELLO, INITIATE or what follows. The connection is then half-closed
    and read until the server drops it or 50 ms pass, so libzmq has parsed
    what it was sent before the next input comes.

    Every 200 inputs, and once more at exit, a proper CURVE client (a
    DEALER with the publisher's key) must still be served: its message
    reaches the ROUTER and the reply comes back, each within 5 s; a
    client with an unknown key must get nothing. After every input the
    ROUTER must hold no message but a check client's (User-Id
    "publisher:pub", which no raw input can earn). Otherwise the target
    aborts, which libFuzzer reports as a crash with the last input. A
    crash or sanitizer report in our code (brk_auth, mdl_curve) shows as
    usual.

    What it can and cannot find: the bytes are parsed by libzmq, which is
    not built with coverage, so libFuzzer mutates the seed corpus
    (fuzz/corpus/handshake, a captured client greeting and CURVE HELLO and
    variants, see fuzz/make_handshake_corpus.sh) largely blind; garbage
    never gets past CURVE's cryptography to the ZAP handler. It finds a
    handshake input that crashes or wedges the server, or stops it from
    serving real clients; that is the property the broker needs.

    Seeds: with FUZZ_HANDSHAKE_SEEDS=DIR set, the initializer also
    captures a real client's greeting and CURVE HELLO (a DEALER connected
    to a raw listener that answers with a CURVE server's greeting) and
    writes them and their variants into DIR.
*/
#include "brk_auth.h"
#include "mdl_curve.h"
#include "mdl_log.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define S_CHECK_EVERY   200     //  Inputs between two service checks
#define S_READ_MS       50      //  How long an input's connection is read after writing
#define S_SERVE_MS      5000    //  A proper client's round trip, at most
#define S_GREETING      64      //  ZMTP 3 greeting bytes
#define S_HELLO         202     //  CURVE HELLO command frame: flags, size, 200 bytes

//  How the server answered an input, as extra coverage: libFuzzer counts
//  these like its own edge counters (it clears them before each input),
//  so an input that makes the server answer differently (its greeting,
//  a WELCOME, an ERROR, a drop at another point) is kept in the corpus
//  although libzmq itself carries no coverage.
__attribute__ ((used, section ("__libfuzzer_extra_counters")))
static uint8_t s_outcomes [64];

static char s_dir [64];                 //  Scratch directory with the keys
static mdl_curve_cert_t s_server;       //  The server's key pair
static brk_auth_t *s_auth;              //  ZAP handler
static zsock_t *s_router;               //  The CURVE server
static int s_port;                      //  Its port on 127.0.0.1
static unsigned long s_inputs;          //  Inputs run so far

static void
s_path (char *path, size_t size, const char *name)
{
    snprintf (path, size, "%s/%s", s_dir, name);
}

static void
s_die (const char *what)
{
    fprintf (stderr, "fuzz_handshake: %s\n", what);
    abort ();
}

//  A DEALER with the key pair named key (its _secret file in the scratch
//  directory), connected to the server.
static zsock_t *
s_client (const char *key)
{
    char own [128], server [128], error [256];
    snprintf (own, sizeof own, "%s/keys/%s.key_secret", s_dir, key);
    s_path (server, sizeof server, "keys/server.key");
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    if (!dealer || mdl_curve_client_files (dealer, own, server, error, sizeof error) != 0)
        s_die (error);
    zsock_set_linger (dealer, 0);
    zsock_set_rcvtimeo (dealer, S_SERVE_MS);
    zsock_set_sndtimeo (dealer, S_SERVE_MS);
    if (zsock_connect (dealer, "tcp://127.0.0.1:%d", s_port) != 0)
        s_die ("cannot connect the check client");
    return dealer;
}

//  Receive on the ROUTER (the test's thread owns it) until the probe
//  "ping-N" arrives, and answer it. Returns true when it came in time.
static bool
s_serve (const char *probe)
{
    int64_t until = zclock_mono () + S_SERVE_MS;
    zpoller_t *poller = zpoller_new (s_router, NULL);
    bool served = false;
    while (!served && zclock_mono () < until) {
        if (!zpoller_wait (poller, 100))
            continue;
        zmsg_t *msg = zmsg_recv (s_router);
        if (!msg)
            continue;
        zframe_t *routing_id = zmsg_pop (msg);
        char *body = zmsg_popstr (msg);
        if (routing_id && body && streq (body, probe)) {
            zmsg_t *reply = zmsg_new ();
            zmsg_append (reply, &routing_id);
            zmsg_addstr (reply, probe);
            if (zmsg_send (&reply, s_router) != 0)
                zmsg_destroy (&reply);
            served = true;
        }
        zframe_destroy (&routing_id);
        zstr_free (&body);
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    return served;
}

//  The server must serve the publisher's key and nobody else.
static void
s_check_service (void)
{
    static unsigned long checks;
    char probe [32];
    snprintf (probe, sizeof probe, "ping-%lu", ++checks);
    zsock_t *client = s_client ("pub");
    if (zstr_send (client, probe) != 0)
        s_die ("the check client could not send");
    if (!s_serve (probe))
        s_die ("the CURVE server no longer serves a proper client");
    char *answer = zstr_recv (client);
    bool ok = answer && streq (answer, probe);
    zstr_free (&answer);
    zsock_destroy (&client);
    if (!ok)
        s_die ("the CURVE server's reply did not come back");

    //  An unknown key: refused at the handshake, so nothing arrives
    snprintf (probe, sizeof probe, "stranger-%lu", checks);
    zsock_t *stranger = s_client ("stranger");
    zsock_set_sndtimeo (stranger, 0);
    zstr_send (stranger, probe);
    zsock_t *proper = s_client ("pub");
    char after [32];
    snprintf (after, sizeof after, "after-%lu", checks);
    zstr_send (proper, after);
    //  The proper client's message proves the server turned; the
    //  stranger's must not have been delivered before or with it
    int64_t until = zclock_mono () + S_SERVE_MS;
    bool seen_after = false;
    zpoller_t *poller = zpoller_new (s_router, NULL);
    while (!seen_after && zclock_mono () < until) {
        if (!zpoller_wait (poller, 100))
            continue;
        zmsg_t *msg = zmsg_recv (s_router);
        zframe_t *routing_id = msg ? zmsg_pop (msg) : NULL;
        char *body = msg ? zmsg_popstr (msg) : NULL;
        if (body && streq (body, probe))
            s_die ("a key outside the allowed directory was served");
        seen_after = body && streq (body, after);
        zframe_destroy (&routing_id);
        zstr_free (&body);
        zmsg_destroy (&msg);
    }
    zpoller_destroy (&poller);
    zsock_destroy (&stranger);
    zsock_destroy (&proper);
    if (!seen_after)
        s_die ("the CURVE server no longer serves a proper client (second probe)");
}

//  --------------------------------------------------------------------------
//  Seeds: a real client's greeting and HELLO, captured

static void
s_seed (const char *dir, const char *name, const void *data, size_t size)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", dir, name);
    FILE *file = fopen (path, "wb");
    if (!file || fwrite (data, 1, size, file) != size)
        s_die ("cannot write a seed");
    fclose (file);
}

static void
s_make_seeds (const char *dir)
{
    //  A raw listener that plays a CURVE server's greeting
    int listener = socket (AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = 0 };
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t length = sizeof address;
    if (listener < 0 || bind (listener, (struct sockaddr *) &address, sizeof address) != 0
    ||  listen (listener, 1) != 0
    ||  getsockname (listener, (struct sockaddr *) &address, &length) != 0)
        s_die ("cannot listen for the capture");
    int saved_port = s_port;
    s_port = ntohs (address.sin_port);
    zsock_t *client = s_client ("pub");
    s_port = saved_port;
    int peer = accept (listener, NULL, NULL);
    if (peer < 0)
        s_die ("the capture client did not connect");
    unsigned char greeting [S_GREETING] = { 0xFF, 0, 0, 0, 0, 0, 0, 0, 0, 0x7F, 3, 0, 'C', 'U', 'R', 'V', 'E' };
    greeting [32] = 1;          //  as-server
    if (send (peer, greeting, sizeof greeting, MSG_NOSIGNAL) != (ssize_t) sizeof greeting)
        s_die ("cannot send the server greeting");
    unsigned char captured [S_GREETING + S_HELLO];
    size_t have = 0;
    int64_t until = zclock_mono () + S_SERVE_MS;
    while (have < sizeof captured && zclock_mono () < until) {
        struct pollfd item = { peer, POLLIN, 0 };
        if (poll (&item, 1, 100) <= 0)
            continue;
        ssize_t got = recv (peer, captured + have, sizeof captured - have, 0);
        if (got <= 0)
            break;
        have += (size_t) got;
    }
    close (peer);
    close (listener);
    zsock_destroy (&client);
    if (have != sizeof captured || captured [S_GREETING] != 0x04 || captured [S_GREETING + 1] != 200)
        s_die ("the captured handshake is not a greeting and a CURVE HELLO");

    s_seed (dir, "seed-01-greeting", captured, S_GREETING);
    s_seed (dir, "seed-02-greeting-hello", captured, sizeof captured);
    s_seed (dir, "seed-03-signature-only", captured, 10);
    s_seed (dir, "seed-04-greeting-half-hello", captured, S_GREETING + S_HELLO / 2);
    unsigned char copy [64 + S_GREETING + S_HELLO];
    memcpy (copy, captured, sizeof captured);
    memcpy (copy + 12, "NULL\0", 5);                    //  Another mechanism
    s_seed (dir, "seed-05-null-mechanism", copy, sizeof captured);
    memcpy (copy, captured, sizeof captured);
    copy [10] = 2;                                      //  ZMTP 2
    s_seed (dir, "seed-06-old-version", copy, sizeof captured);
    memcpy (copy, captured, sizeof captured);
    copy [S_GREETING + 1] = 255;                        //  HELLO claims more than it has
    s_seed (dir, "seed-07-hello-long-size", copy, sizeof captured);
    memcpy (copy, captured, sizeof captured);
    copy [S_GREETING] = 0x06;                           //  Long command: 8 size bytes follow
    memset (copy + S_GREETING + 1, 0xFF, 8);
    s_seed (dir, "seed-08-hello-huge-size", copy, sizeof captured);
    memcpy (copy, captured, sizeof captured);
    for (size_t i = S_GREETING + 2 + 120; i < sizeof captured; i++)
        copy [i] ^= 0x5A;                               //  Box that does not open
    s_seed (dir, "seed-09-hello-bad-box", copy, sizeof captured);
    memset (copy, 'G', 64);                             //  Garbage before a good greeting
    memcpy (copy + 64, captured, sizeof captured);
    s_seed (dir, "seed-10-garbage-first", copy, sizeof copy);
    memcpy (copy, "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 27);
    s_seed (dir, "seed-11-http", copy, 27);
    memcpy (copy, captured, sizeof captured);
    memcpy (copy + S_GREETING + 2, "\x08INITIATE", 9);  //  A command out of order
    s_seed (dir, "seed-12-initiate-first", copy, sizeof captured);
    fprintf (stderr, "fuzz_handshake: wrote 12 seeds to %s\n", dir);
}

//  --------------------------------------------------------------------------

static void
s_stop (void)
{
    //  A last check, then everything down before CZMQ's own exit handler
    if (s_router)
        s_check_service ();
    zsock_destroy (&s_router);
    brk_auth_destroy (&s_auth);
    char command [160];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    if (s_dir [0] && system (command) != 0)
        fprintf (stderr, "fuzz_handshake: could not remove %s\n", s_dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    zsys_init ();
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    if (!zsys_has_curve ())
        s_die ("libzmq has no CURVE");
    snprintf (s_dir, sizeof s_dir, "/tmp/fuzz_handshake_XXXXXX");
    if (!mkdtemp (s_dir))
        s_die ("cannot make a scratch directory");
    char keys [128], publishers [128], command [512], error [256];
    s_path (keys, sizeof keys, "keys");
    s_path (publishers, sizeof publishers, "publishers");
    if (mkdir (keys, 0700) != 0 || mkdir (publishers, 0700) != 0
    ||  mdl_curve_keygen (keys, "server", NULL, error, sizeof error) != 0
    ||  mdl_curve_keygen (keys, "pub", NULL, error, sizeof error) != 0
    ||  mdl_curve_keygen (keys, "stranger", NULL, error, sizeof error) != 0)
        s_die ("cannot make the keys");
    snprintf (command, sizeof command, "cp '%s/pub.key' '%s/'", keys, publishers);
    if (system (command) != 0)
        s_die ("cannot copy the publisher's key");
    char server [160];
    snprintf (server, sizeof server, "%s/server.key_secret", keys);
    if (mdl_curve_load (server, true, &s_server, error, sizeof error) != 0)
        s_die (error);

    brk_auth_config_t config = { .dirs = { [BRK_ROLE_PUBLISHER] = publishers } };
    s_auth = brk_auth_new (&config);
    s_router = zsock_new (ZMQ_ROUTER);
    if (!s_auth || !s_router || mdl_curve_server (s_router, &s_server, "frontend") != 0)
        s_die ("cannot start the CURVE server");
    zsock_set_linger (s_router, 0);
    s_port = zsock_bind (s_router, "tcp://127.0.0.1:*");
    if (s_port <= 0)
        s_die ("cannot bind the CURVE server");
    atexit (s_stop);
    s_check_service ();

    const char *seeds = getenv ("FUZZ_HANDSHAKE_SEEDS");
    if (seeds)
        s_make_seeds (seeds);
    return 0;
}

//  Count the server's answer to one input into s_outcomes.
static void
s_note (const unsigned char *reply, size_t got, bool dropped, bool all_sent)
{
    size_t bucket = got == 0 ? 0 : got < 10 ? 1 : got < S_GREETING ? 2 : got == S_GREETING ? 3
                  : got < S_GREETING + 100 ? 4 : got < S_GREETING + 200 ? 5 : 6;
    s_outcomes [bucket * 4 + (dropped ? 2 : 0) + (all_sent ? 1 : 0)]++;
    if (got >= 11)
        s_outcomes [32 + (reply [10] & 7)]++;           //  The version it answered with
    if (memmem (reply, got, "WELCOME", 7))
        s_outcomes [40 + (dropped ? 1 : 0)]++;
    if (memmem (reply, got, "ERROR", 5))
        s_outcomes [42 + (dropped ? 1 : 0)]++;
    if (memmem (reply, got, "READY", 5))
        s_outcomes [44]++;
}

//  Nothing from a raw connection may reach the application. A message
//  that does arrive is judged by who sent it: only a connection that
//  passed CURVE and the ZAP handler has a User-Id, and "publisher:pub"
//  is the check clients' key, which no raw input holds. Such a message is
//  a check client's that came late (it is printed and dropped); anything
//  else aborts, with what arrived and from whom.
static void
s_check_nothing_arrived (void)
{
    while (zsock_events (s_router) & ZMQ_POLLIN) {
        zmsg_t *msg = zmsg_recv (s_router);
        zframe_t *routing_id = msg ? zmsg_pop (msg) : NULL;
        zframe_t *body = msg ? zmsg_first (msg) : NULL;
        const char *user = body ? zframe_meta (body, "User-Id") : NULL;
        const char *peer = body ? zframe_meta (body, "Peer-Address") : NULL;
        char *text = body ? zframe_strdup (body) : NULL;
        bool checker = user && streq (user, "publisher:pub");
        fprintf (stderr, "fuzz_handshake: after input %lu a message arrived: user %s, peer %s, "
                 "%zu frames, body \"%.40s\"%s\n", s_inputs, user ? user : "(none)",
                 peer ? peer : "(none)", msg ? zmsg_size (msg) + 1 : 0, text ? text : "",
                 checker ? ": a check client's, late; dropped" : "");
        zstr_free (&text);
        zframe_destroy (&routing_id);
        zmsg_destroy (&msg);
        if (!checker)
            s_die ("a raw connection's bytes reached the application");
    }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        s_die ("out of sockets");
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_port = htons ((uint16_t) s_port) };
    address.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    if (connect (fd, (struct sockaddr *) &address, sizeof address) == 0) {
        //  A refused or reset connection is an answer too: nothing to check
        size_t sent = 0;
        while (sent < size) {
            ssize_t rc = send (fd, data + sent, size - sent, MSG_NOSIGNAL | MSG_DONTWAIT);
            if (rc <= 0)
                break;
            sent += (size_t) rc;
        }
        shutdown (fd, SHUT_WR);
        int64_t until = zclock_mono () + S_READ_MS;
        unsigned char reply [1024];
        size_t got = 0;
        bool dropped = false;
        while (zclock_mono () < until) {
            struct pollfd item = { fd, POLLIN, 0 };
            if (poll (&item, 1, S_READ_MS) <= 0)
                break;
            unsigned char spill [512];
            size_t room = sizeof reply - got;
            ssize_t rc = room ? recv (fd, reply + got, room, 0) : recv (fd, spill, sizeof spill, 0);
            if (rc <= 0) {
                dropped = true; //  The server closed (or reset) it
                break;
            }
            if (room)
                got += (size_t) rc;
        }
        s_note (reply, got, dropped, sent == size);
    }
    close (fd);
    s_check_nothing_arrived ();
    if (++s_inputs % S_CHECK_EVERY == 0)
        s_check_service ();
    return 0;
}
