/*  test_e2e_shutdown: the broker's last replies at a clean stop. A
    publisher sends a burst of PUBLISHes to a mandrill-broker process in
    batch mode, the broker gets SIGTERM right away, and every request the
    broker journaled must have been PUBACKed to the publisher: the stop
    syncs the journal and sends the replies that waited for it, and they
    must leave before the sockets close. Which requests were journaled is
    asked of a second broker on the same data directory: it calls them
    duplicates.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/wait.h>

#include "e2e_support.h"

#define BATCHES     200         //  PUBLISH frames in the burst
#define PER_BATCH   1000        //  Requests in each (MMP_MAX_MESSAGES)
#define TOTAL       (BATCHES * PER_BATCH)

static char s_dir [256];
static char s_data [300];
static char s_frontend [64];
static char s_backend [64];
static char s_events [64];
static pid_t s_broker;
static bool s_acked [TOTAL];     //  PUBACKed in the first run
static bool s_kept [TOTAL];      //  A duplicate in the second run
static char s_json [PER_BATCH * 100 + 64];  //  One PUBLISH body

static void
s_setup (void)
{
    e2e_dir_new (s_dir, sizeof s_dir, "mandrill_shutdown_");
    snprintf (s_data, sizeof s_data, "%s/data", s_dir);
    memset (s_acked, 0, sizeof s_acked);
    memset (s_kept, 0, sizeof s_kept);
}

static void
s_teardown (void)
{
    if (s_broker > 0)
        e2e_kill (s_broker);
    s_broker = 0;
    e2e_dir_remove (s_dir);
}

TestSuite (e2e_shutdown, .init = s_setup, .fini = s_teardown, .timeout = 120);

static void
s_broker_start (void)
{
    snprintf (s_frontend, sizeof s_frontend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_events, sizeof s_events, "tcp://127.0.0.1:%d", e2e_free_port ());
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"),
        "--frontend", s_frontend, "--backend", s_backend, "--events", s_events,
        "--data-dir", s_data, "--durability", "batch", NULL
    };
    s_broker = e2e_spawn (s_dir, "broker.log", argv);
    //  Up once it answers STATS (the DEALER queues the request meanwhile)
    zsock_t *control = e2e_dealer (s_frontend, 10000, 2000);
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (control, MMP_STATS, "{}", &reply), 0,
                  "the broker did not start (see %s/broker.log)", s_dir);
    mmp_msg_reset (&reply);
    zsock_destroy (&control);
}

static int
s_index (const char *id)
{
    int n = -1;
    if (sscanf (id, "00000000-0000-4000-8000-%12d", &n) != 1 || n < 0 || n >= TOTAL)
        return -1;
    return n;
}

//  PUBLISH batch b (requests b * PER_BATCH ...) on sock.
static void
s_publish_batch (zsock_t *sock, int b)
{
    char *json = s_json;
    size_t len = (size_t) snprintf (json, sizeof s_json, "{\"messages\":[");
    for (int i = 0; i < PER_BATCH; i++) {
        int n = b * PER_BATCH + i;
        len += (size_t) snprintf (json + len, sizeof s_json - len,
                                  "%s{\"message_id\":\"00000000-0000-4000-8000-%012d\","
                                  "\"instance_name\":\"cattle-%d\"}", i ? "," : "", n, n);
    }
    len += (size_t) snprintf (json + len, sizeof s_json - len, "]}");
    cr_assert_lt (len, sizeof s_json);
    cr_assert_eq (mmp_send (sock, NULL, MMP_PUBLISH, json, len), 0);
}

//  Mark the ids of a PUBACK (all of them, or only the duplicates).
static void
s_mark (const mmp_msg_t *msg, bool *marks, bool duplicates_only)
{
    size_t n = duplicates_only ? msg->other_id_count : msg->message_id_count;
    const char **ids = duplicates_only ? msg->other_ids : msg->message_ids;
    for (size_t i = 0; i < n; i++) {
        int index = s_index (ids [i]);
        if (index >= 0)
            marks [index] = true;
    }
}

//  Read PUBACKs until none came for quiet_ms and mark their ids in marks.
//  Frames are only taken off the socket while reading (decoding 200 of
//  them can be slow under a sanitizer), then decoded. Returns the PUBACKs.
static int
s_read_pubacks (zsock_t *sock, bool *marks, bool duplicates_only, int quiet_ms)
{
    zmsg_t *frames [BATCHES + 16];
    size_t taken = 0;
    while (taken < sizeof frames / sizeof frames [0]) {
        zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, quiet_ms) <= 0)
            break;
        zmsg_t *m = zmsg_recv (sock);
        if (m)
            frames [taken++] = m;
    }
    int count = 0;
    for (size_t i = 0; i < taken; i++) {
        zframe_t *f [3] = { zmsg_first (frames [i]), zmsg_next (frames [i]), zmsg_next (frames [i]) };
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        if (zmsg_size (frames [i]) == 3
        &&  mmp_decode (zframe_data (f [0]), zframe_size (f [0]), zframe_data (f [1]),
                        zframe_size (f [1]), zframe_data (f [2]), zframe_size (f [2]),
                        MMP_FROM_BROKER, &msg, &err) == 0
        &&  msg.command == MMP_PUBACK) {
            count++;
            s_mark (&msg, marks, duplicates_only);
        }
        mmp_msg_reset (&msg);
        zmsg_destroy (&frames [i]);
    }
    return count;
}

Test (e2e_shutdown, every_journaled_request_is_pubacked_at_sigterm)
{
    s_broker_start ();
    //  A publisher that reads late, with a small kernel buffer and queue:
    //  the PUBACKs (8 MB, more than the kernel's buffers hold) are still
    //  partly in the broker's own queue when it closes
    zsock_t *publisher = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (publisher);
    zsock_set_linger (publisher, 0);
    zsock_set_sndtimeo (publisher, 2000);
    zsock_set_rcvbuf (publisher, 65536);
    zsock_set_rcvhwm (publisher, 4);
    cr_assert_eq (zsock_connect (publisher, "%s", s_frontend), 0);
    //  Connected once a first request is answered
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (publisher, MMP_STATS, "{}", &reply), 0);
    mmp_msg_reset (&reply);
    for (int b = 0; b < BATCHES; b++)
        s_publish_batch (publisher, b);
    //  Stop it while it works through the burst: at its first PUBACK
    zmq_pollitem_t item = { zsock_resolve (publisher), 0, ZMQ_POLLIN, 0 };
    cr_assert_eq (zmq_poll (&item, 1, 10000), 1, "no PUBACK came");
    cr_assert_eq (kill (s_broker, SIGTERM), 0);
    //  Read only once the broker has synced and closed: the PUBACKs it
    //  still holds must wait for the reader (within its linger)
    zclock_sleep (200);
    s_read_pubacks (publisher, s_acked, false, 2000);
    int status = e2e_wait_exit (s_broker, 10000);
    cr_assert (status != -1 && WIFEXITED (status) && WEXITSTATUS (status) == 0,
               "the broker did not stop cleanly (see %s/broker.log)", s_dir);
    s_broker = 0;
    zsock_destroy (&publisher);

    //  What did it keep? Ask a second broker on the same data directory
    s_broker_start ();
    publisher = e2e_dealer (s_frontend, -1, 2000);
    for (int b = 0; b < BATCHES; b++)
        s_publish_batch (publisher, b);
    cr_assert_eq (s_read_pubacks (publisher, s_kept, true, 5000), BATCHES,
                  "the second broker answered every PUBLISH");
    zsock_destroy (&publisher);

    int kept = 0, acked = 0, lost_replies = 0, first_lost = -1;
    for (int i = 0; i < TOTAL; i++) {
        kept += s_kept [i];
        acked += s_acked [i];
        if (s_kept [i] && !s_acked [i]) {
            lost_replies++;
            if (first_lost < 0)
                first_lost = i;
        }
        cr_assert (!s_acked [i] || s_kept [i], "request %d was PUBACKed but not kept", i);
    }
    fprintf (stderr, "journaled %d of %d requests, PUBACKed %d\n", kept, TOTAL, acked);
    cr_assert_gt (kept, 0, "the broker journaled nothing before the stop");
    cr_assert_eq (lost_replies, 0, "%d journaled requests got no PUBACK (first: %d; journaled %d,"
                  " PUBACKed %d)", lost_replies, first_lost, kept, acked);
}
