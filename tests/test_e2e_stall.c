/*  End-to-end test of a broker that was stopped: the built mandrill-broker
    leases one request to a test worker (a DEALER speaking MMP/1), is
    stopped with SIGSTOP for longer than three heartbeats while the worker
    goes on sending heartbeats, and is continued. The broker must notice it
    did not run (a warn line), keep the worker (no "lost: no heartbeat")
    and its lease (no expiry, STATS expired 0), and take the worker's ACK.
    Before the broker gave a stall back, every worker was lost at the
    resume and every running restart delivered a second time.
    The second test slows the disk instead (mandrill-chaos's preload
    library: every fsync of the broker 2.5 s late), under a restart
    policy. A lease event's save of the policy state must not stop the
    loop (it is written on a thread of its own: no slow turn is logged);
    an operator's PAUSE, whose reply promises the state is on disk, does
    stop it for two fsyncs, and the broker must give that time back as it
    does a stop, before the same turn judges silence: when the PAUSE's
    turn had no heartbeat to read, the worker was lost there. Before
    either, the worker was lost at the first lease.
    Processes are killed by PID in the teardown.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "e2e_support.h"
#include "mmp.h"

static char s_dir [64];
static pid_t s_broker;
static char s_frontend [64], s_backend [64], s_events [64];

static void
s_setup (void)
{
    s_broker = 0;
    e2e_dir_new (s_dir, sizeof s_dir, "mandrill_e2e_stall_");
    snprintf (s_frontend, sizeof s_frontend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_backend, sizeof s_backend, "tcp://127.0.0.1:%d", e2e_free_port ());
    snprintf (s_events, sizeof s_events, "tcp://127.0.0.1:%d", e2e_free_port ());
}

static void
s_teardown (void)
{
    if (s_broker > 0) {
        kill (s_broker, SIGCONT);
        e2e_kill (s_broker);
    }
    e2e_dir_remove (s_dir);
}

//  Send a HEARTBEAT every 300 ms for ms milliseconds, reading and dropping
//  what the broker sends meanwhile.
static void
s_heartbeat_for (zsock_t *worker, int64_t ms)
{
    int64_t end = zclock_mono () + ms;
    while (zclock_mono () < end) {
        cr_assert_eq (mmp_send (worker, NULL, MMP_HEARTBEAT, "{}", 2), 0);
        zclock_sleep (300);
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        while (mmp_recv (worker, false, NULL, MMP_FROM_BROKER, &msg, &err) == 0)
            mmp_msg_reset (&msg);
    }
}

static int64_t
s_stat (zsock_t *ctl, const char *name)
{
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (ctl, MMP_STATS, "{}", &reply), 0);
    cr_assert_not_null (reply.body);
    cJSON *item = cJSON_GetObjectItemCaseSensitive (reply.body, name);
    cr_assert (cJSON_IsNumber (item), "STATS has no %s", name);
    int64_t value = (int64_t) item->valuedouble;
    mmp_msg_reset (&reply);
    return value;
}

TestSuite (e2e_stall, .init = s_setup, .fini = s_teardown, .timeout = 60);

//  HELLO with this credit, WELCOME (retried until the broker listens)
static void
s_hello (zsock_t *worker, int credit)
{
    mmp_msg_t msg;
    mmp_error_t err;
    mmp_msg_init (&msg);
    char hello [64];
    int len = snprintf (hello, sizeof hello, "{\"credit\":%d,\"name\":\"w\"}", credit);
    cr_assert_eq (mmp_send (worker, NULL, MMP_HELLO, hello, (size_t) len), 0);
    cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no WELCOME");
    cr_assert_eq (msg.command, MMP_WELCOME);
    mmp_msg_reset (&msg);
}

//  PUBLISH one request for host N; its PUBACK
static void
s_publish (zsock_t *client, int n)
{
    char publish [256];
    int len = snprintf (publish, sizeof publish,
                        "{\"messages\":[{\"message_id\":\"0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e%02d\","
                        "\"instance_name\":\"cattle-%02d\",\"hostname\":\"cattle-%02d.example.net\"}]}",
                        n, n, n);
    cr_assert_lt (len, (int) sizeof publish);
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (client, MMP_PUBLISH, publish, &reply), 0);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);
}

//  The next DELIVER's delivery id (heartbeats may come first)
static uint64_t
s_delivered (zsock_t *worker)
{
    mmp_msg_t msg;
    mmp_error_t err;
    mmp_msg_init (&msg);
    uint64_t delivery_id = 0;
    while (!delivery_id) {
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no DELIVER");
        if (msg.command == MMP_DELIVER) {
            cr_assert_eq (msg.delivery_count, 1);
            delivery_id = msg.deliveries [0].delivery_id;
        }
        mmp_msg_reset (&msg);
    }
    return delivery_id;
}

//  ACK the delivery ids; true when one ACKED names them all
static bool
s_ack (zsock_t *worker, const uint64_t *ids, size_t count)
{
    char ack [128];
    int len = snprintf (ack, sizeof ack, "{\"delivery_ids\":[");
    for (size_t i = 0; i < count; i++)
        len += snprintf (ack + len, sizeof ack - (size_t) len, "%s%llu", i ? "," : "",
                         (unsigned long long) ids [i]);
    len += snprintf (ack + len, sizeof ack - (size_t) len, "]}");
    cr_assert_lt (len, (int) sizeof ack);
    cr_assert_eq (mmp_send (worker, NULL, MMP_ACK, ack, (size_t) len), 0);
    mmp_msg_t msg;
    mmp_error_t err;
    mmp_msg_init (&msg);
    while (true) {
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no ACKED");
        if (msg.command == MMP_ACKED) {
            bool all = msg.id_count == count;
            mmp_msg_reset (&msg);
            return all;
        }
        mmp_msg_reset (&msg);
    }
}

Test (e2e_stall, a_stopped_broker_keeps_its_workers_and_leases)
{
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", s_frontend, "--backend", s_backend,
        "--events", s_events, "--durability", "memory", "--heartbeat", "1s", "--ack-deadline", "10s",
        NULL
    };
    s_broker = e2e_spawn (s_dir, "broker.log", argv);
    zsock_t *worker = e2e_dealer (s_backend, 5000, 1000);
    zsock_t *client = e2e_dealer (s_frontend, 5000, 1000);
    s_hello (worker, 1);
    s_publish (client, 1);
    uint64_t delivery_id = s_delivered (worker);

    //  Stopped for 4 s (over 3 heartbeats), the worker talking all along
    cr_assert_eq (kill (s_broker, SIGSTOP), 0);
    s_heartbeat_for (worker, 4000);
    cr_assert_eq (kill (s_broker, SIGCONT), 0);
    s_heartbeat_for (worker, 1500);

    cr_assert (s_ack (worker, &delivery_id, 1), "the lease did not outlive the stall");
    cr_assert_eq (s_stat (client, "expired"), 0);
    cr_assert_eq (s_stat (client, "workers_lost"), 0, "the worker was lost for the broker's own stop");
    cr_assert_eq (s_stat (client, "acked"), 1);
    cr_assert (e2e_log_has (s_dir, "broker.log", "did not run for"), "the stall went unnoticed");
    cr_assert_not (e2e_log_has (s_dir, "broker.log", "lost: no heartbeat"),
                   "the worker was lost for the broker's own stop");
    zsock_destroy (&client);
    zsock_destroy (&worker);
}

Test (e2e_stall, a_slow_disk_keeps_its_workers_and_leases)
{
    char ctl [128], data [128];
    snprintf (ctl, sizeof ctl, "%s/slowdisk.ms", s_dir);
    snprintf (data, sizeof data, "%s/data", s_dir);
    FILE *file = fopen (ctl, "w");
    cr_assert_not_null (file);
    fputs ("0\n", file);
    fclose (file);
    //  Only the broker gets the library (a sanitizer build must let it
    //  come before its runtime)
    cr_assert_eq (setenv ("LD_PRELOAD", e2e_program ("MANDRILL_CHAOS_SLOWDISK"), 1), 0);
    cr_assert_eq (setenv ("MANDRILL_CHAOS_SLOWDISK_CTL", ctl, 1), 0);
    const char *asan = getenv ("ASAN_OPTIONS");
    char asan_options [512];
    snprintf (asan_options, sizeof asan_options, "%s%sverify_asan_link_order=0",
              asan ? asan : "", asan && *asan ? ":" : "");
    cr_assert_eq (setenv ("ASAN_OPTIONS", asan_options, 1), 0);
    char *argv [] = {
        (char *) e2e_program ("MANDRILL_BROKER"), "--frontend", s_frontend, "--backend", s_backend,
        "--events", s_events, "--durability", "batch", "--data-dir", data,
        "--heartbeat", "1s", "--ack-deadline", "20s", "--group", "all:*:5", NULL
    };
    s_broker = e2e_spawn (s_dir, "broker.log", argv);
    unsetenv ("LD_PRELOAD");
    unsetenv ("MANDRILL_CHAOS_SLOWDISK_CTL");
    zsock_t *worker = e2e_dealer (s_backend, 5000, 1000);
    zsock_t *client = e2e_dealer (s_frontend, 5000, 1000);
    s_hello (worker, 2);
    s_publish (client, 1);
    uint64_t ids [2];
    ids [0] = s_delivered (worker);
    s_heartbeat_for (worker, 600);

    //  Every fsync 2.5 s late: the second request's lease saves the
    //  policy state on the loop (file and directory fsync: 5 s)
    file = fopen (ctl, "w");
    cr_assert_not_null (file);
    fputs ("2500\n", file);
    fclose (file);
    s_publish (client, 2);
    ids [1] = s_delivered (worker);
    s_heartbeat_for (worker, 6000);
    cr_assert (e2e_log_has (s_dir, "broker.log", "journal: an fsync took"),
               "no slow fsync: the test slowed nothing");
    cr_expect_not (e2e_log_has (s_dir, "broker.log", "one turn of the broker's loop took"),
                   "a lease event's state save stopped the loop");

    //  PAUSE: saved before its reply, on the loop (two 2.5 s fsyncs)
    const char *pause = "{\"group\":\"all\",\"reason\":\"test\"}";
    cr_assert_eq (mmp_send (client, NULL, MMP_PAUSE, pause, strlen (pause)), 0);
    //  The PAUSE's turn starts with no heartbeat to read, as on a busy
    //  machine: the broker must give the time back before it judges
    //  silence in that same turn
    zclock_sleep (300);
    s_heartbeat_for (worker, 7000);
    mmp_msg_t reply;
    mmp_error_t err;
    mmp_msg_init (&reply);
    cr_assert_eq (mmp_recv (client, true, NULL, MMP_FROM_BROKER, &reply, &err), 0, "no PAUSE reply");
    cr_assert_eq (reply.command, MMP_PAUSE);
    mmp_msg_reset (&reply);
    file = fopen (ctl, "w");
    cr_assert_not_null (file);
    fputs ("0\n", file);
    fclose (file);
    s_heartbeat_for (worker, 1500);
    cr_expect_not (e2e_log_has (s_dir, "broker.log", "lost: no heartbeat"),
                   "the worker was lost for the broker's own wait on the disk");
    cr_assert (s_ack (worker, ids, 2), "a lease did not outlive the slow disk");
    cr_assert_eq (s_stat (client, "expired"), 0);
    cr_assert_eq (s_stat (client, "workers_lost"), 0);
    cr_assert_eq (s_stat (client, "acked"), 2);
    cr_expect (e2e_log_has (s_dir, "broker.log", "one turn of the broker's loop took"),
               "the broker did not say why it gave the time back");
    zsock_destroy (&client);
    zsock_destroy (&worker);
}
