/*  Tests for mdl_curve: key files, loading, and CURVE over real sockets. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdl_curve.h"

static char s_dir [64];

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    snprintf (s_dir, sizeof s_dir, "/tmp/mdl_curve_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
    cr_expect_eq (system (command), 0);
}

static void
s_write (const char *name, const char *text)
{
    char path [256];
    snprintf (path, sizeof path, "%s/%s", s_dir, name);
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fputs (text, file);
    fclose (file);
}

static void
s_path (char *path, size_t size, const char *name)
{
    snprintf (path, size, "%s/%s", s_dir, name);
}

TestSuite (mdl_curve, .init = s_setup, .fini = s_teardown);

Test (mdl_curve, keygen_writes_a_pair_with_private_secret, .timeout = 10)
{
    char public_txt [MDL_CURVE_KEY_TXT];
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "alice", public_txt, error, sizeof error), 0, "%s", error);
    char path [256];
    struct stat info;
    s_path (path, sizeof path, "alice.key_secret");
    cr_assert_eq (stat (path, &info), 0);
    cr_expect_eq (info.st_mode & 0777, 0600);
    mdl_curve_cert_t cert;
    cr_assert_eq (mdl_curve_load (path, true, &cert, error, sizeof error), 0, "%s", error);
    cr_expect (cert.has_secret);
    cr_expect_str_eq (cert.public_txt, public_txt);
    cr_expect_str_eq (cert.name, "alice");
    s_path (path, sizeof path, "alice.key");
    cr_assert_eq (stat (path, &info), 0);
    cr_expect_eq (info.st_mode & 0777, 0644);
    cr_assert_eq (mdl_curve_load (path, false, &cert, error, sizeof error), 0, "%s", error);
    cr_expect_not (cert.has_secret);
    cr_expect_str_eq (cert.secret_txt, "");
    cr_expect_str_eq (cert.public_txt, public_txt);
    //  A public file is not a program's own certificate
    cr_expect_eq (mdl_curve_load (path, true, &cert, error, sizeof error), -1);
    cr_expect (strstr (error, "secret-key") != NULL, "%s", error);
}

Test (mdl_curve, keygen_never_overwrites, .timeout = 10)
{
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "bob", NULL, error, sizeof error), 0, "%s", error);
    char path [256];
    s_path (path, sizeof path, "bob.key_secret");
    mdl_curve_cert_t before, after;
    cr_assert_eq (mdl_curve_load (path, true, &before, NULL, 0), 0);
    cr_expect_eq (mdl_curve_keygen (s_dir, "bob", NULL, error, sizeof error), -1);
    cr_expect (strstr (error, "overwrite") != NULL, "%s", error);
    cr_assert_eq (mdl_curve_load (path, true, &after, NULL, 0), 0);
    cr_expect_str_eq (before.secret_txt, after.secret_txt);
    //  Only the public file there: still refused, and no secret left behind
    s_write ("carol.key", "curve\n    public-key = \"x\"\n");
    cr_expect_eq (mdl_curve_keygen (s_dir, "carol", NULL, error, sizeof error), -1);
    s_path (path, sizeof path, "carol.key_secret");
    cr_expect_neq (access (path, F_OK), 0);
    //  Names that could escape the directory or hide are refused
    cr_expect_eq (mdl_curve_keygen (s_dir, "../evil", NULL, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_keygen (s_dir, ".hidden", NULL, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_keygen (s_dir, "", NULL, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_keygen ("/nonexistent-dir", "x", NULL, error, sizeof error), -1);
}

Test (mdl_curve, bad_files_are_refused_with_a_reason, .timeout = 10)
{
    char path [256];
    char error [256];
    mdl_curve_cert_t cert;
    s_path (path, sizeof path, "missing.key");
    cr_expect_eq (mdl_curve_load (path, false, &cert, error, sizeof error), -1);
    s_write ("garbage.key", "\x01\x02 not { zpl ]]\n\n    = = =\n");
    s_path (path, sizeof path, "garbage.key");
    cr_expect_eq (mdl_curve_load (path, false, &cert, error, sizeof error), -1);
    s_write ("short.key", "curve\n    public-key = \"abc\"\n");
    s_path (path, sizeof path, "short.key");
    cr_expect_eq (mdl_curve_load (path, false, &cert, error, sizeof error), -1);
    cr_expect (strstr (error, "Z85") != NULL, "%s", error);
    //  40 characters, but '~' is not Z85
    s_write ("badz85.key", "curve\n    public-key = \"~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~~\"\n");
    s_path (path, sizeof path, "badz85.key");
    cr_expect_eq (mdl_curve_load (path, false, &cert, error, sizeof error), -1);
    s_write ("nokey.key", "metadata\n    name = \"x\"\n");
    s_path (path, sizeof path, "nokey.key");
    cr_expect_eq (mdl_curve_load (path, false, &cert, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_load (s_dir, false, &cert, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_load (NULL, false, &cert, NULL, 0), -1);
}

Test (mdl_curve, odd_names_in_metadata_are_cleaned, .timeout = 10)
{
    char pub [41], sec [41];
    cr_assert_eq (zmq_curve_keypair (pub, sec), 0);
    char text [256];
    snprintf (text, sizeof text, "metadata\n    name = \"ev:il name\"\ncurve\n    public-key = \"%s\"\n", pub);
    s_write ("odd.key", text);
    char path [256];
    s_path (path, sizeof path, "odd.key");
    mdl_curve_cert_t cert;
    cr_assert_eq (mdl_curve_load (path, false, &cert, NULL, 0), 0);
    cr_expect_str_eq (cert.name, "ev_il_name");
}

//  A program's own name as the broker records it: the metadata name, else
//  the file's name without ".key_secret" or ".key".
Test (mdl_curve, identity_is_the_metadata_name_else_the_file_name, .timeout = 10)
{
    char error [256] = "", name [64], path [256];
    cr_assert_eq (mdl_curve_keygen (s_dir, "wrk-1", NULL, error, sizeof error), 0, "%s", error);
    s_path (path, sizeof path, "wrk-1.key_secret");
    cr_assert_eq (mdl_curve_identity (path, name, sizeof name, error, sizeof error), 0, "%s", error);
    cr_expect_str_eq (name, "wrk-1");

    char pub [41], sec [41];
    cr_assert_eq (zmq_curve_keypair (pub, sec), 0);
    char text [256];
    snprintf (text, sizeof text, "curve\n    public-key = \"%s\"\n    secret-key = \"%s\"\n", pub, sec);
    s_write ("no:name.key_secret", text);
    s_path (path, sizeof path, "no:name.key_secret");
    cr_assert_eq (mdl_curve_identity (path, name, sizeof name, NULL, 0), 0);
    cr_expect_str_eq (name, "no_name");
    char small [4];
    cr_assert_eq (mdl_curve_identity (path, small, sizeof small, NULL, 0), 0);
    cr_expect_str_eq (small, "no_");

    s_path (path, sizeof path, "missing.key_secret");
    cr_expect_eq (mdl_curve_identity (path, name, sizeof name, error, sizeof error), -1);
    cr_expect_str_eq (name, "");
    cr_expect (strstr (error, "missing"), "%s", error);
}

//  A ZAP handler that lets every CURVE client in, so a test can check the
//  options alone. REP on the ZAP endpoint; answers 200 until $TERM.
static void
s_accept_all (zsock_t *pipe, void *args)
{
    (void) args;
    zsock_t *handler = zsock_new (ZMQ_REP);
    cr_assert_not_null (handler);
    zsock_set_linger (handler, 0);
    cr_assert_eq (zsock_bind (handler, "inproc://zeromq.zap.01"), 0);
    zsock_signal (pipe, 0);
    zpoller_t *poller = zpoller_new (pipe, handler, NULL);
    while (zpoller_wait (poller, -1) == handler) {
        zmsg_t *request = zmsg_recv (handler);
        char *version = zmsg_popstr (request);
        zframe_t *request_id = zmsg_pop (request);
        zmsg_t *reply = zmsg_new ();
        zmsg_addstr (reply, version);
        zmsg_append (reply, &request_id);
        zmsg_addstr (reply, "200");
        zmsg_addstr (reply, "OK");
        zmsg_addstr (reply, "test:any");
        zmsg_addmem (reply, NULL, 0);
        zmsg_send (&reply, handler);
        zstr_free (&version);
        zmsg_destroy (&request);
    }
    zpoller_destroy (&poller);
    zsock_unbind (handler, "inproc://zeromq.zap.01");
    zsock_destroy (&handler);
}

//  Key pairs "server" and "client" in the test dir, and a CURVE ROUTER
//  with the server's key (not bound yet).
static zsock_t *
s_curve_router (void)
{
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "server", NULL, error, sizeof error), 0, "%s", error);
    cr_assert_eq (mdl_curve_keygen (s_dir, "client", NULL, error, sizeof error), 0, "%s", error);
    char server_secret [256];
    s_path (server_secret, sizeof server_secret, "server.key_secret");
    mdl_curve_cert_t own;
    cr_assert_eq (mdl_curve_load (server_secret, true, &own, NULL, 0), 0);
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    cr_assert_eq (mdl_curve_server (router, &own, "test"), 0);
    return router;
}

//  A DEALER with the client's key pair that takes the server's public key
//  from the file named server_public, connected to port.
static zsock_t *
s_curve_dealer (const char *server_public, int port)
{
    char own [256], server [256], error [256] = "";
    s_path (own, sizeof own, "client.key_secret");
    s_path (server, sizeof server, server_public);
    zsock_t *dealer = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (dealer);
    zsock_set_linger (dealer, 0);
    cr_assert_eq (mdl_curve_client_files (dealer, own, server, error, sizeof error), 0, "%s", error);
    cr_assert_eq (zsock_connect (dealer, "tcp://127.0.0.1:%d", port), 0);
    return dealer;
}

//  Without a ZAP handler in the process the server fails closed (where
//  libzmq can enforce it): even a client with the right keys gets nothing.
Test (mdl_curve, server_without_a_zap_handler_refuses_everyone, .timeout = 20)
{
    zsock_t *router = s_curve_router ();
    if (!mdl_curve_zap_enforced (router)) {
        zsock_destroy (&router);
        cr_skip_test ("this libzmq cannot enforce ZAP domains");
    }
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (port, 0);
    zsock_t *good = s_curve_dealer ("server.key", port);
    zstr_send (good, "good");
    zsock_set_rcvtimeo (router, 1500);
    zmsg_t *msg = zmsg_recv (router);
    cr_expect_null (msg, "a client got in with no ZAP handler to ask");
    zmsg_destroy (&msg);
    zsock_destroy (&good);
    zsock_destroy (&router);
}

//  With a handler that lets everyone in, this checks the options alone:
//  the right server key talks, a wrong one never does.
Test (mdl_curve, client_and_server_options_talk, .timeout = 20)
{
    zactor_t *zap = zactor_new (s_accept_all, NULL);
    cr_assert_not_null (zap);
    zsock_t *router = s_curve_router ();
    char error [256] = "";
    cr_assert_eq (mdl_curve_keygen (s_dir, "other", NULL, error, sizeof error), 0, "%s", error);
    //  Long enough for a handshake under valgrind; the wait for what must
    //  not come is shortened below
    zsock_set_rcvtimeo (router, 10000);
    int port = zsock_bind (router, "tcp://127.0.0.1:*");
    cr_assert_gt (port, 0);
    zsock_t *good = s_curve_dealer ("server.key", port);
    zsock_t *bad = s_curve_dealer ("other.key", port);
    zstr_send (bad, "bad");
    zstr_send (good, "good");
    zmsg_t *msg = zmsg_recv (router);
    cr_assert_not_null (msg);
    zframe_t *id = zmsg_pop (msg);
    char *text = zmsg_popstr (msg);
    cr_expect_str_eq (text, "good");
    zstr_free (&text);
    zframe_destroy (&id);
    zmsg_destroy (&msg);
    zsock_set_rcvtimeo (router, 700);
    msg = zmsg_recv (router);
    cr_expect_null (msg, "a client with the wrong server key got through");
    zmsg_destroy (&msg);

    char client_secret [256];
    s_path (client_secret, sizeof client_secret, "client.key_secret");
    //  Half a configuration is an error, none is plain TCP
    cr_expect_eq (mdl_curve_client_files (bad, client_secret, NULL, error, sizeof error), -1);
    cr_expect_eq (mdl_curve_client_files (bad, NULL, NULL, error, sizeof error), 0);
    zsock_destroy (&good);
    zsock_destroy (&bad);
    zsock_destroy (&router);
    zactor_destroy (&zap);
}
