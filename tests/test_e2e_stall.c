/*  End-to-end test of a broker that was stopped: the built mandrill-broker
    leases one request to a test worker (a DEALER speaking MMP/1), is
    stopped with SIGSTOP for longer than three heartbeats while the worker
    goes on sending heartbeats, and is continued. The broker must notice it
    did not run (a warn line), keep the worker (no "lost: no heartbeat")
    and its lease (no expiry, STATS expired 0), and take the worker's ACK.
    Before the broker gave a stall back, every worker was lost at the
    resume and every running restart delivered a second time.
    Processes are killed by PID in the teardown.
*/
#include <criterion/criterion.h>
#include <signal.h>
#include <stdio.h>
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

    //  HELLO, WELCOME (retried until the broker listens)
    mmp_msg_t msg;
    mmp_error_t err;
    mmp_msg_init (&msg);
    const char *hello = "{\"credit\":1,\"name\":\"w\"}";
    cr_assert_eq (mmp_send (worker, NULL, MMP_HELLO, hello, strlen (hello)), 0);
    cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no WELCOME");
    cr_assert_eq (msg.command, MMP_WELCOME);
    mmp_msg_reset (&msg);

    const char *publish = "{\"messages\":[{\"message_id\":\"0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f\","
                          "\"instance_name\":\"cattle-ab12\",\"hostname\":\"cattle-ab12.example.net\"}]}";
    mmp_msg_t reply;
    cr_assert_eq (e2e_request (client, MMP_PUBLISH, publish, &reply), 0);
    cr_assert_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);

    //  The DELIVER (heartbeats may come first)
    uint64_t delivery_id = 0;
    while (!delivery_id) {
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no DELIVER");
        if (msg.command == MMP_DELIVER) {
            cr_assert_eq (msg.delivery_count, 1);
            delivery_id = msg.deliveries [0].delivery_id;
        }
        mmp_msg_reset (&msg);
    }

    //  Stopped for 4 s (over 3 heartbeats), the worker talking all along
    cr_assert_eq (kill (s_broker, SIGSTOP), 0);
    s_heartbeat_for (worker, 4000);
    cr_assert_eq (kill (s_broker, SIGCONT), 0);
    s_heartbeat_for (worker, 1500);

    char ack [64];
    int len = snprintf (ack, sizeof ack, "{\"delivery_ids\":[%llu]}", (unsigned long long) delivery_id);
    cr_assert_eq (mmp_send (worker, NULL, MMP_ACK, ack, (size_t) len), 0);
    bool acked = false;
    while (!acked) {
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0, "no ACKED");
        if (msg.command == MMP_ACKED) {
            cr_assert_eq (msg.id_count, 1, "the lease did not outlive the stall");
            cr_assert_eq (msg.ids [0], delivery_id);
            acked = true;
        }
        mmp_msg_reset (&msg);
    }
    cr_assert_eq (s_stat (client, "expired"), 0);
    cr_assert_eq (s_stat (client, "workers_lost"), 0, "the worker was lost for the broker's own stop");
    cr_assert_eq (s_stat (client, "acked"), 1);
    cr_assert (e2e_log_has (s_dir, "broker.log", "did not run for"), "the stall went unnoticed");
    cr_assert_not (e2e_log_has (s_dir, "broker.log", "lost: no heartbeat"),
                   "the worker was lost for the broker's own stop");
    zsock_destroy (&client);
    zsock_destroy (&worker);
}
