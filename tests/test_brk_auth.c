/*  Tests for brk_auth: the role table, and the ZAP handler over real CURVE
    sockets on 127.0.0.1 (a ROUTER per ZAP domain, DEALER clients). */
#include <criterion/criterion.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "brk_auth.h"
#include "mdl_curve.h"

static char s_dir [64];
static char s_roles [BRK_ROLE_COUNT][128];

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_auth_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    for (int role = BRK_ROLE_PUBLISHER; role < BRK_ROLE_COUNT; role++) {
        snprintf (s_roles [role], sizeof s_roles [role], "%s/%ss", s_dir, brk_role_name (role));
        cr_assert_eq (mkdir (s_roles [role], 0700), 0);
    }
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "broker", NULL, error, sizeof error), 0, "%s", error);
}

static void
s_teardown (void)
{
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    cr_expect_eq (system (command), 0);
}

TestSuite (brk_auth, .init = s_setup, .fini = s_teardown);

//  Make a key pair NAME in the test dir and copy its public file into the
//  role's directory as file (NULL: NAME.key).
static void
s_key (const char *name, brk_role_t role, const char *file)
{
    char error [256] = "";
    char path [256];
    snprintf (path, sizeof path, "%s/%s.key", s_dir, name);
    if (access (path, F_OK) != 0)
        cr_assert_eq (mdl_curve_keygen (s_dir, name, NULL, error, sizeof error), 0, "%s", error);
    char command [512];
    snprintf (command, sizeof command, "cp '%s' '%s/%s'", path, s_roles [role],
              file ? file : strrchr (path, '/') + 1);
    cr_assert_eq (system (command), 0);
}

static brk_auth_t *
s_auth_new (void)
{
    brk_auth_config_t config;
    memset (&config, 0, sizeof config);
    for (int role = BRK_ROLE_PUBLISHER; role < BRK_ROLE_COUNT; role++)
        config.dirs [role] = s_roles [role];
    brk_auth_t *auth = brk_auth_new (&config);
    cr_assert_not_null (auth);
    return auth;
}

static zsock_t *
s_server (const char *domain, int *port)
{
    char path [256];
    snprintf (path, sizeof path, "%s/broker.key_secret", s_dir);
    mdl_curve_cert_t own;
    cr_assert_eq (mdl_curve_load (path, true, &own, NULL, 0), 0);
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    cr_assert_eq (mdl_curve_server (router, &own, domain), 0);
    zsock_set_linger (router, 0);
    *port = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (*port, 0);
    return router;
}

static zsock_t *
s_client (const char *name, int port)
{
    char own [256], server [256];
    snprintf (own, sizeof own, "%s/%s.key_secret", s_dir, name);
    snprintf (server, sizeof server, "%s/broker.key", s_dir);
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (dealer);
    zsock_set_linger (dealer, 0);
    char error [256] = "";
    cr_assert_eq (mdl_curve_client_files (dealer, own, server, error, sizeof error), 0, "%s", error);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    return dealer;
}

//  Send text from client; the router's next message (within its timeout)
//  must be it, and its User-Id is copied into user_id (and the key into
//  key). Returns false if nothing came.
#define S_OK_WAIT   10000       //  For what must come: a handshake under valgrind is slow
#define S_NO_WAIT   700         //  For what must not come

static bool
s_roundtrip (zsock_t *client, zsock_t *router, const char *text, char *user_id, char *key, int wait)
{
    zsock_set_rcvtimeo (router, wait);
    zstr_send (client, text);
    zframe_t *id = zframe_recv (router);
    if (!id)
        return false;
    zframe_t *body = zframe_recv (router);
    cr_assert_not_null (body);
    cr_expect (zframe_streq (body, text));
    const char *meta = zframe_meta (body, "User-Id");
    snprintf (user_id, 128, "%s", meta ? meta : "");
    if (key) {
        meta = zframe_meta (body, "Curve-Key");
        snprintf (key, 41, "%s", meta ? meta : "");
    }
    zframe_destroy (&id);
    zframe_destroy (&body);
    return true;
}

static void
s_public_txt (const char *name, char *out)
{
    char path [256];
    snprintf (path, sizeof path, "%s/%s.key", s_dir, name);
    mdl_curve_cert_t cert;
    cr_assert_eq (mdl_curve_load (path, false, &cert, NULL, 0), 0);
    memcpy (out, cert.public_txt, 41);
}

Test (brk_auth, each_role_has_exactly_its_commands, .timeout = 10)
{
    for (int command = 0; command < MMP_COMMAND_COUNT; command++) {
        bool worker = command == MMP_HELLO || command == MMP_CREDIT || command == MMP_EXTEND
                   || command == MMP_ACK || command == MMP_NACK || command == MMP_PROGRESS
                   || command == MMP_HEARTBEAT || command == MMP_BYE;
        const char *name = mmp_command_name ((mmp_command_t) command);
        cr_expect_eq (brk_auth_allows (BRK_ROLE_PUBLISHER, command), command == MMP_PUBLISH, "%s", name);
        cr_expect_eq (brk_auth_allows (BRK_ROLE_WORKER, command), worker, "%s", name);
        cr_expect_eq (brk_auth_allows (BRK_ROLE_OPERATOR, command), !worker, "%s", name);
        bool observer = command == MMP_STATS || command == MMP_GROUPS || command == MMP_INFLIGHT
                     || command == MMP_WORKERS;
        cr_expect_eq (brk_auth_allows (BRK_ROLE_OBSERVER, command), observer, "%s", name);
        cr_expect_not (brk_auth_allows (BRK_ROLE_NONE, command), "%s", name);
    }
    cr_expect_not (brk_auth_allows (BRK_ROLE_OPERATOR, MMP_COMMAND_COUNT));
}

Test (brk_auth, user_ids_are_parsed_strictly, .timeout = 10)
{
    const char *name = NULL;
    cr_expect_eq (brk_auth_role ("publisher:alice", &name), BRK_ROLE_PUBLISHER);
    cr_expect_str_eq (name, "alice");
    cr_expect_eq (brk_auth_role ("observer:a:b", &name), BRK_ROLE_OBSERVER);
    cr_expect_str_eq (name, "a:b");
    cr_expect_eq (brk_auth_role ("operators:x", &name), BRK_ROLE_NONE);
    cr_expect_str_eq (name, "");
    cr_expect_eq (brk_auth_role ("none:x", NULL), BRK_ROLE_NONE);
    cr_expect_eq (brk_auth_role ("operator", NULL), BRK_ROLE_NONE);
    cr_expect_eq (brk_auth_role ("", NULL), BRK_ROLE_NONE);
    cr_expect_eq (brk_auth_role (NULL, NULL), BRK_ROLE_NONE);
}

Test (brk_auth, known_keys_get_their_role_unknown_get_nothing, .timeout = 30)
{
    s_key ("alice", BRK_ROLE_PUBLISHER, NULL);
    s_key ("olga", BRK_ROLE_OPERATOR, NULL);
    s_key ("olga", BRK_ROLE_PUBLISHER, NULL);       //  In two: operators are asked first
    s_key ("wanda", BRK_ROLE_WORKER, NULL);
    char error [256];
    cr_assert_eq (mdl_curve_keygen (s_dir, "mallory", NULL, error, sizeof error), 0);
    brk_auth_t *auth = s_auth_new ();
    int port;
    zsock_t *router = s_server ("frontend", &port);
    char user_id [128], key [41], expected [41];

    zsock_t *alice = s_client ("alice", port);
    cr_assert (s_roundtrip (alice, router, "hi", user_id, key, S_OK_WAIT));
    cr_expect_str_eq (user_id, "publisher:alice");
    s_public_txt ("alice", expected);
    cr_expect_str_eq (key, expected);

    zsock_t *olga = s_client ("olga", port);
    cr_assert (s_roundtrip (olga, router, "hi", user_id, NULL, S_OK_WAIT));
    cr_expect_str_eq (user_id, "operator:olga");

    //  A worker key is not a frontend key; an unknown key is nobody
    zsock_t *wanda = s_client ("wanda", port);
    cr_expect_not (s_roundtrip (wanda, router, "hi", user_id, NULL, S_NO_WAIT), "worker got in as %s", user_id);
    zsock_t *mallory = s_client ("mallory", port);
    cr_expect_not (s_roundtrip (mallory, router, "hi", user_id, NULL, S_NO_WAIT), "unknown key got in as %s", user_id);

    //  Plain TCP, no CURVE at all
    zsock_t *plain = zsock_new (ZMQ_DEALER);
    zsock_set_linger (plain, 0);
    cr_assert_eq (zsock_connect (plain, "tcp://127.0.0.1:%d", port), 0);
    cr_expect_not (s_roundtrip (plain, router, "hi", user_id, NULL, S_NO_WAIT), "plain client got in");

    //  The worker key works on the backend
    int backend_port;
    zsock_t *backend = s_server ("backend", &backend_port);
    zsock_t *wanda2 = s_client ("wanda", backend_port);
    cr_assert (s_roundtrip (wanda2, backend, "hi", user_id, NULL, S_OK_WAIT));
    cr_expect_str_eq (user_id, "worker:wanda");
    zsock_t *alice2 = s_client ("alice", backend_port);
    cr_expect_not (s_roundtrip (alice2, backend, "hi", user_id, NULL, S_NO_WAIT), "publisher on backend");

    zsock_t *sockets [] = { alice, olga, wanda, mallory, plain, wanda2, alice2, router, backend };
    for (size_t i = 0; i < sizeof sockets / sizeof sockets [0]; i++)
        zsock_destroy (&sockets [i]);
    brk_auth_destroy (&auth);
    brk_auth_destroy (&auth);
    cr_expect_null (auth);
}

Test (brk_auth, name_falls_back_to_the_file_name, .timeout = 20)
{
    //  A public file without metadata, as other tools may write it
    char pub [41], sec [41];
    cr_assert_eq (zmq_curve_keypair (pub, sec), 0);
    char path [256];
    snprintf (path, sizeof path, "%s/plain.key_secret", s_dir);
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fprintf (file, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n", pub, sec);
    fclose (file);
    snprintf (path, sizeof path, "%s/host-7.key", s_roles [BRK_ROLE_OBSERVER]);
    file = fopen (path, "w");
    cr_assert_not_null (file);
    fprintf (file, "curve\n    public-key = \"%s\"\n", pub);
    fclose (file);
    //  Garbage next to it is skipped, not fatal
    snprintf (path, sizeof path, "%s/junk.key", s_roles [BRK_ROLE_OBSERVER]);
    file = fopen (path, "w");
    cr_assert_not_null (file);
    fprintf (file, "\x01\x02\x03 {{{\n");
    fclose (file);
    brk_auth_t *auth = s_auth_new ();
    int port;
    zsock_t *router = s_server ("events", &port);
    zsock_t *client = s_client ("plain", port);
    char user_id [128];
    cr_assert (s_roundtrip (client, router, "hi", user_id, NULL, S_OK_WAIT));
    cr_expect_str_eq (user_id, "observer:host-7");
    zsock_destroy (&client);
    zsock_destroy (&router);
    brk_auth_destroy (&auth);
}

Test (brk_auth, directory_changes_apply_to_new_connections, .timeout = 30)
{
    s_key ("alice", BRK_ROLE_PUBLISHER, NULL);
    char error [256];
    cr_assert_eq (mdl_curve_keygen (s_dir, "bob", NULL, error, sizeof error), 0);
    brk_auth_t *auth = s_auth_new ();
    int port;
    zsock_t *router = s_server ("frontend", &port);
    char user_id [128];
    zsock_t *alice = s_client ("alice", port);
    cr_assert (s_roundtrip (alice, router, "one", user_id, NULL, S_OK_WAIT));

    //  bob added without a restart: his first connection is let in
    zsock_t *bob = s_client ("bob", port);
    cr_expect_not (s_roundtrip (bob, router, "early", user_id, NULL, S_NO_WAIT));
    zsock_destroy (&bob);
    s_key ("bob", BRK_ROLE_PUBLISHER, NULL);
    bob = s_client ("bob", port);
    cr_assert (s_roundtrip (bob, router, "late", user_id, NULL, S_OK_WAIT));
    cr_expect_str_eq (user_id, "publisher:bob");

    //  alice removed: her open connection keeps its role, the next is refused
    char path [256];
    snprintf (path, sizeof path, "%s/alice.key", s_roles [BRK_ROLE_PUBLISHER]);
    cr_assert_eq (unlink (path), 0);
    cr_expect (s_roundtrip (alice, router, "still", user_id, NULL, S_OK_WAIT));
    zsock_destroy (&alice);
    alice = s_client ("alice", port);
    cr_expect_not (s_roundtrip (alice, router, "again", user_id, NULL, S_NO_WAIT), "removed key got in");

    zsock_destroy (&alice);
    zsock_destroy (&bob);
    zsock_destroy (&router);
    brk_auth_destroy (&auth);
}

Test (brk_auth, one_handler_per_process_and_forbidden_checks, .timeout = 10)
{
    brk_auth_t *auth = s_auth_new ();
    brk_auth_config_t config;
    memset (&config, 0, sizeof config);
    cr_expect_null (brk_auth_new (&config));
    cr_expect_eq (brk_auth_check (auth, "publisher:alice", "k", MMP_PUBLISH), 0);
    cr_expect_eq (brk_auth_check (auth, "publisher:alice", "k", MMP_REPLAY), -1);
    cr_expect_eq (brk_auth_check (auth, "observer:o", NULL, MMP_STATS), 0);
    cr_expect_eq (brk_auth_check (auth, "observer:o", NULL, MMP_DEADLETTERS), -1);
    cr_expect_eq (brk_auth_check (auth, "", NULL, MMP_STATS), -1);
    cr_expect_eq (brk_auth_check (auth, NULL, NULL, MMP_STATS), -1);
    //  A flood of forbidden commands is answered every time (the log is what is limited)
    for (int i = 0; i < 1000; i++)
        cr_assert_eq (brk_auth_check (auth, "worker:w", "k", MMP_PUBLISH), -1);
    brk_auth_destroy (&auth);
    //  Once it is gone, a new one can bind
    auth = s_auth_new ();
    brk_auth_destroy (&auth);
}

//  Ask the handler directly, as libzmq does, and return the status code
//  (user_id gets the User-Id frame). frames are the request after the
//  version and request id.
static char *
s_zap (zsock_t *req, const char *version, int count, const void *frames [], const size_t sizes [],
       char *user_id)
{
    zmsg_t *request = zmsg_new ();
    zmsg_addstr (request, version);
    zmsg_addstr (request, "42");
    for (int i = 0; i < count; i++)
        zmsg_addmem (request, frames [i], sizes [i]);
    cr_assert_eq (zmsg_send (&request, req), 0);
    zmsg_t *reply = zmsg_recv (req);
    cr_assert_not_null (reply, "the ZAP handler did not answer");
    cr_expect_eq (zmsg_size (reply), 6);
    char *reply_version = zmsg_popstr (reply);
    char *id = zmsg_popstr (reply);
    char *status = zmsg_popstr (reply);
    char *text = zmsg_popstr (reply);
    char *user = zmsg_popstr (reply);
    cr_expect_str_eq (reply_version, "1.0");
    cr_expect_str_eq (id, "42");
    snprintf (user_id, 128, "%s", user ? user : "");
    zstr_free (&reply_version);
    zstr_free (&id);
    zstr_free (&text);
    zstr_free (&user);
    zmsg_destroy (&reply);
    return status;
}

Test (brk_auth, every_zap_request_is_answered, .timeout = 20)
{
    s_key ("alice", BRK_ROLE_PUBLISHER, NULL);
    brk_auth_t *auth = s_auth_new ();
    zsock_t *req = zsock_new (ZMQ_REQ);
    cr_assert_not_null (req);
    zsock_set_rcvtimeo (req, 5000);
    zsock_set_linger (req, 0);
    cr_assert_eq (zsock_connect (req, "inproc://zeromq.zap.01"), 0);
    char alice [41];
    s_public_txt ("alice", alice);
    uint8_t key [32];
    cr_assert_not_null (zmq_z85_decode (key, alice));
    char user_id [128];

    const void *good [] = { "frontend", "127.0.0.1", "", "CURVE", key };
    const size_t good_sizes [] = { 8, 9, 0, 5, 32 };
    char *status = s_zap (req, "1.0", 5, good, good_sizes, user_id);
    cr_expect_str_eq (status, "200");
    cr_expect_str_eq (user_id, "publisher:alice");
    zstr_free (&status);

    const void *domain [] = { "nowhere", "127.0.0.1", "", "CURVE", key };
    const size_t domain_sizes [] = { 7, 9, 0, 5, 32 };
    status = s_zap (req, "1.0", 5, domain, domain_sizes, user_id);
    cr_expect_str_eq (status, "400");
    cr_expect_str_eq (user_id, "");
    zstr_free (&status);

    const void *null [] = { "frontend", "127.0.0.1", "", "NULL" };
    const size_t null_sizes [] = { 8, 9, 0, 4 };
    status = s_zap (req, "1.0", 4, null, null_sizes, user_id);
    cr_expect_str_eq (status, "400");
    zstr_free (&status);

    const void *short_key [] = { "frontend", "127.0.0.1", "", "CURVE", key };
    const size_t short_sizes [] = { 8, 9, 0, 5, 31 };
    status = s_zap (req, "1.0", 5, short_key, short_sizes, user_id);
    cr_expect_str_eq (status, "400");
    zstr_free (&status);

    status = s_zap (req, "9.9", 5, good, good_sizes, user_id);
    cr_expect_str_eq (status, "500");
    zstr_free (&status);
    status = s_zap (req, "1.0", 0, NULL, NULL, user_id);
    cr_expect_str_eq (status, "500");
    zstr_free (&status);

    zsock_destroy (&req);
    brk_auth_destroy (&auth);
}

//  A signal that lands on the handler's thread must not end it: without a
//  handler libzmq would let every key in (or, enforcing, nobody). Every
//  thread of the process gets SIGUSR1 (a handler without SA_RESTART, so a
//  thread that takes it sees EINTR) many times over; then the allowed key
//  must still be served and an unknown one refused.
static void
s_ignore (int signal_number)
{
    (void) signal_number;
}

static void
s_signal_every_thread (int signal_number)
{
    DIR *tasks = opendir ("/proc/self/task");
    cr_assert_not_null (tasks);
    struct dirent *entry;
    while ((entry = readdir (tasks)))
        if (entry->d_name [0] != '.')
            syscall (SYS_tgkill, getpid (), atoi (entry->d_name), signal_number);
    closedir (tasks);
}

Test (brk_auth, a_signal_does_not_stop_the_handler, .timeout = 30)
{
    s_key ("alice", BRK_ROLE_PUBLISHER, NULL);
    char error [256];
    cr_assert_eq (mdl_curve_keygen (s_dir, "mallory", NULL, error, sizeof error), 0);
    struct sigaction action = { .sa_handler = s_ignore };
    sigemptyset (&action.sa_mask);
    struct sigaction previous;
    cr_assert_eq (sigaction (SIGUSR1, &action, &previous), 0);
    brk_auth_t *auth = s_auth_new ();
    int port;
    zsock_t *router = s_server ("frontend", &port);
    for (int round = 0; round < 50; round++) {
        s_signal_every_thread (SIGUSR1);
        zclock_sleep (2);
    }
    char user_id [128];
    zsock_t *mallory = s_client ("mallory", port);
    cr_expect_not (s_roundtrip (mallory, router, "hi", user_id, NULL, S_NO_WAIT),
                   "unknown key got in as %s after signals", user_id);
    zsock_t *alice = s_client ("alice", port);
    cr_expect (s_roundtrip (alice, router, "hi", user_id, NULL, S_OK_WAIT),
               "the allowed key is no longer served after signals");
    zsock_destroy (&alice);
    zsock_destroy (&mallory);
    zsock_destroy (&router);
    brk_auth_destroy (&auth);
    sigaction (SIGUSR1, &previous, NULL);
}
