/*  Tests for the restart policy in the broker actor: a real broker on
    127.0.0.1 with --group specs, on a manual clock (nothing expires
    unless a test moves it), driven by test DEALERs as publisher, worker
    and operator, and a SUB on the events socket. Waits are receive
    timeouts; TICK makes the broker send what is due before it answers.
*/
#include <criterion/criterion.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

static zactor_t *s_broker;
static char s_frontend [64];
static char s_backend [64];
static char s_events [64];
static atomic_llong s_now;
static char s_dir [64];             //  Data dir of the durable test, or ""

static int64_t
s_manual_now (void *arg)
{
    (void) arg;
    return (int64_t) atomic_load (&s_now);
}

static const char *s_policy_file;   //  For the next s_start, or NULL

static void
s_start (const char *const *specs, size_t count, const char *data_dir)
{
    zsys_handler_set (NULL);
    mdl_log_set_level (MDL_LOG_ERROR);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.queue.ack_deadline_ms = 60000;
    config.queue.heartbeat_ms = 1000;
    config.queue.epoch = 3;
    config.clock = (mdl_clock_t) { s_manual_now, NULL };
    config.group_specs = specs;
    config.group_spec_count = count;
    config.data_dir = data_dir;
    config.policy_file = s_policy_file;
    atomic_store (&s_now, 1000000);
    s_broker = zactor_new (brk_server, &config);
    cr_assert_not_null (s_broker);
    zstr_send (s_broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &status), 0);
    cr_assert_eq (status, BRK_SERVER_OK);
    const char *names [3] = { "frontend", "backend", "events" };
    char *endpoints [3] = { s_frontend, s_backend, s_events };
    for (int i = 0; i < 3; i++) {
        zstr_sendx (s_broker, "BIND", names [i], "tcp://127.0.0.1:*", NULL);
        int port = -1;
        cr_assert_eq (zsock_recv (s_broker, "i", &port), 0);
        cr_assert_gt (port, 0);
        snprintf (endpoints [i], 64, "tcp://127.0.0.1:%d", port);
    }
}

static void
s_stop (void)
{
    zactor_destroy (&s_broker);
}

static void
s_teardown (void)
{
    s_stop ();
    if (s_dir [0]) {
        char command [128];
        snprintf (command, sizeof command, "rm -rf '%s'", s_dir);
        cr_expect_eq (system (command), 0);
        s_dir [0] = 0;
    }
}

static void
s_settle (void)
{
    zstr_send (s_broker, "TICK");
    int rc = -1;
    cr_assert_eq (zsock_recv (s_broker, "i", &rc), 0);
}

static zsock_t *
s_dealer (const char *endpoint)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_rcvtimeo (sock, 3000);
    zsock_set_linger (sock, 0);
    cr_assert_eq (zsock_connect (sock, "%s", endpoint), 0);
    return sock;
}

static void
s_send (zsock_t *sock, mmp_command_t command, const char *json)
{
    cr_assert_eq (mmp_send (sock, NULL, command, json, strlen (json)), 0);
}

//  The next message that is not a HEARTBEAT, of this command.
static void
s_expect (zsock_t *sock, mmp_command_t command, mmp_msg_t *msg)
{
    while (true) {
        mmp_msg_init (msg);
        mmp_error_t err;
        int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, msg, &err);
        cr_assert_eq (rc, 0, "expected %s, got rc %d (%s)", mmp_command_name (command), rc,
                      rc == -2 ? err.reason : "timeout");
        if (msg->command == MMP_HEARTBEAT && command != MMP_HEARTBEAT) {
            mmp_msg_reset (msg);
            continue;
        }
        cr_assert_eq (msg->command, command, "expected %s, got %s (%s)", mmp_command_name (command),
                      mmp_command_name (msg->command), msg->reason ? msg->reason : "");
        return;
    }
}

//  Ask and get the reply of the same name (or ERROR when expected).
static void
s_ask (zsock_t *sock, mmp_command_t command, const char *json, mmp_command_t reply,
       mmp_msg_t *msg)
{
    s_send (sock, command, json);
    s_expect (sock, reply, msg);
}

static zsock_t *
s_worker (int64_t credit, const char *name)
{
    zsock_t *worker = s_dealer (s_backend);
    char json [128];
    snprintf (json, sizeof json, "{\"credit\":%" PRId64 ",\"name\":\"%s\"}", credit, name);
    s_send (worker, MMP_HELLO, json);
    mmp_msg_t msg;
    s_expect (worker, MMP_WELCOME, &msg);
    mmp_msg_reset (&msg);
    return worker;
}

//  Publish one request for instance name; returns nothing, checks PUBACK.
//  coalesced_with (if given, 37 bytes) gets the id it joined or "".
static void
s_publish (zsock_t *publisher, const char *id, const char *instance, char *coalesced_with)
{
    char json [256];
    snprintf (json, sizeof json, "{\"messages\":[{\"message_id\":\"%s\",\"instance_name\":\"%s\"}]}",
              id, instance);
    mmp_msg_t msg;
    s_ask (publisher, MMP_PUBLISH, json, MMP_PUBACK, &msg);
    cr_assert_eq (msg.message_id_count, 1);
    const cJSON *with = cJSON_GetObjectItemCaseSensitive (msg.body, "coalesced_with");
    if (coalesced_with) {
        const cJSON *leader = cJSON_GetObjectItemCaseSensitive (with, id);
        snprintf (coalesced_with, 37, "%s", cJSON_IsString (leader) ? leader->valuestring : "");
    }
    mmp_msg_reset (&msg);
}

static void
s_id (int n, char out [37])
{
    snprintf (out, 37, "00000000-0000-4000-8000-%012d", n);
}

//  The DELIVERs that arrive: their delivery ids into ids (up to max),
//  target hosts into hosts. Waits up to 3 s for expect leases (a busy
//  machine or valgrind may be slow), then 100 ms more for any extra one
//  (200 ms in all when expect is 0). Returns how many leases came.
static size_t
s_collect (zsock_t *worker, size_t expect, uint64_t *ids, char (*hosts) [64], size_t max)
{
    s_settle ();
    size_t count = 0;
    int64_t until = zclock_mono () + (expect ? 3000 : 200);
    bool extended = false;
    while (zclock_mono () < until) {
        zsock_set_rcvtimeo (worker, (int) (until - zclock_mono ()) + 1);
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        if (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, NULL) == 0
        &&  msg.command == MMP_DELIVER)
            for (size_t i = 0; i < msg.delivery_count; i++) {
                if (count < max) {
                    ids [count] = msg.deliveries [i].delivery_id;
                    if (hosts)
                        snprintf (hosts [count], 64, "%s", msg.deliveries [i].message.hostname);
                }
                count++;
            }
        mmp_msg_reset (&msg);
        if (expect && count >= expect && !extended) {
            until = zclock_mono () + 100;
            extended = true;
        }
    }
    zsock_set_rcvtimeo (worker, 3000);
    return count;
}

static void
s_ack (zsock_t *worker, uint64_t id)
{
    char json [64];
    snprintf (json, sizeof json, "{\"delivery_ids\":[%" PRIu64 "]}", id);
    mmp_msg_t msg;
    s_ask (worker, MMP_ACK, json, MMP_ACKED, &msg);
    cr_assert_eq (msg.id_count, 1);
    mmp_msg_reset (&msg);
}

//  The STATS group object named.
static cJSON *
s_stats_group (zsock_t *client, const char *name, mmp_msg_t *msg)
{
    s_ask (client, MMP_STATS, "{}", MMP_STATS, msg);
    cJSON *group;
    cJSON_ArrayForEach (group, cJSON_GetObjectItemCaseSensitive (msg->body, "groups")) {
        const cJSON *item = cJSON_GetObjectItemCaseSensitive (group, "name");
        if (cJSON_IsString (item) && strcmp (item->valuestring, name) == 0)
            return group;
    }
    cr_assert_fail ("no group %s in STATS", name);
    return NULL;
}

static double
s_num (const cJSON *object, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive (object, name);
    cr_assert (cJSON_IsNumber (item), "no number %s", name);
    return item->valuedouble;
}

static const char *s_web [] = { "web:web-*:2" };

Test (brk_server_policy, cap_is_never_exceeded, .fini = s_teardown, .timeout = 60)
{
    s_start (s_web, 1, NULL);
    zsock_t *publisher = s_dealer (s_frontend);
    zsock_t *worker = s_worker (100, "w1");
    char id [37];
    for (int i = 0; i < 8; i++) {
        char instance [32];
        snprintf (instance, sizeof instance, "web-%d", i);
        s_id (i + 1, id);
        s_publish (publisher, id, instance, NULL);
    }
    s_id (100, id);
    s_publish (publisher, id, "db-1", NULL);        //  Default group: no cap
    uint64_t ids [16];
    char hosts [16][64];
    size_t got = s_collect (worker, 3, ids, hosts, 16);
    cr_assert_eq (got, 3, "2 of group web and the db host, got %zu", got);
    mmp_msg_t msg;
    cJSON *web = s_stats_group (publisher, "web", &msg);
    cr_expect_eq (s_num (web, "in_flight"), 2);
    cr_expect_eq (s_num (web, "cap"), 2);
    cr_expect_eq (s_num (web, "waiting"), 6);
    mmp_msg_reset (&msg);
    //  Each ack lets exactly one more start
    size_t total_web = 0;
    for (size_t i = 0; i < got; i++)
        total_web += strncmp (hosts [i], "web-", 4) == 0;
    cr_assert_eq (total_web, 2);
    for (int round = 0; round < 6; round++) {
        size_t index = 0;
        while (strncmp (hosts [index], "web-", 4) != 0)
            index++;
        s_ack (worker, ids [index]);
        ids [index] = ids [got - 1];
        memcpy (hosts [index], hosts [got - 1], sizeof hosts [index]);
        got--;
        size_t more = s_collect (worker, 1, ids + got, hosts + got, 16 - got);
        cr_assert_eq (more, 1, "round %d: %zu new leases", round, more);
        got += more;
        size_t open = 0;
        for (size_t i = 0; i < got; i++)
            open += strncmp (hosts [i], "web-", 4) == 0;
        cr_assert_leq (open, 2, "round %d: %zu open leases in group web", round, open);
    }
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

Test (brk_server_policy, one_lease_per_host_and_coalescing, .fini = s_teardown, .timeout = 60)
{
    s_start (s_web, 1, NULL);
    zsock_t *publisher = s_dealer (s_frontend);
    zsock_t *worker = s_worker (100, "w1");
    char a [37], b [37], c [37], with [37];
    s_id (1, a);
    s_id (2, b);
    s_id (3, c);
    s_publish (publisher, a, "db-7", with);
    cr_expect_str_eq (with, "");
    uint64_t ids [4];
    cr_assert_eq (s_collect (worker, 1, ids, NULL, 4), 1);
    //  b waits for the leased host; c joins b (both complete together)
    s_publish (publisher, b, "db-7", with);
    cr_expect_str_eq (with, "");
    s_publish (publisher, c, "DB-7", with);     //  Targets are case-folded
    cr_expect_str_eq (with, b);
    uint64_t more [4];
    cr_assert_eq (s_collect (worker, 0, more, NULL, 4), 0, "a second lease of one host");
    mmp_msg_t msg;
    s_ask (publisher, MMP_STATS, "{}", MMP_STATS, &msg);
    cr_expect_eq (s_num (msg.body, "coalesced"), 1);
    mmp_msg_reset (&msg);
    s_ack (worker, ids [0]);
    cr_assert_eq (s_collect (worker, 1, more, NULL, 4), 1, "b after a");
    s_ack (worker, more [0]);
    s_ask (publisher, MMP_STATS, "{}", MMP_STATS, &msg);
    cr_expect_eq (s_num (msg.body, "in_flight"), 0);
    cr_expect_eq (s_num (msg.body, "ready"), 0);
    mmp_msg_reset (&msg);
    zsock_destroy (&worker);
    zsock_destroy (&publisher);
}

//  The next event on sub named name (others skipped); its body parsed.
static cJSON *
s_event (zsock_t *sub, const char *name, int timeout_ms)
{
    zsock_set_rcvtimeo (sub, timeout_ms);
    while (true) {
        zmsg_t *event = zmsg_recv (sub);
        if (!event)
            return NULL;
        char *topic = zmsg_popstr (event);
        char *body = zmsg_popstr (event);
        bool match = topic && strcmp (topic, name) == 0;
        cJSON *json = match && body ? cJSON_Parse (body) : NULL;
        zstr_free (&topic);
        zstr_free (&body);
        zmsg_destroy (&event);
        if (match)
            return json;
    }
}

Test (brk_server_policy, pause_and_resume_over_the_socket, .fini = s_teardown, .timeout = 60)
{
    s_start (s_web, 1, NULL);
    zsock_t *operator = s_dealer (s_frontend);
    zsock_t *sub = zsock_new_sub (s_events, "");
    cr_assert_not_null (sub);
    //  Until the broker has seen the subscription, pauses make no event
    cJSON *event = NULL;
    mmp_msg_t msg;
    for (int i = 0; i < 50 && !event; i++) {
        s_ask (operator, MMP_RESUME, "{\"group\":\"web\"}", MMP_RESUME, &msg);
        mmp_msg_reset (&msg);
        event = s_event (sub, "group_resumed", 100);
    }
    cr_assert_not_null (event, "no group_resumed event");
    cJSON_Delete (event);

    s_ask (operator, MMP_PAUSE, "{\"group\":\"web\",\"reason\":\"freeze\",\"req\":\"p1\"}", MMP_PAUSE, &msg);
    cr_expect_str_eq (msg.req, "p1");
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (msg.body, "paused")));
    mmp_msg_reset (&msg);
    event = s_event (sub, "group_paused", 3000);
    cr_assert_not_null (event);
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (event, "group")->valuestring, "web");
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (event, "reason")->valuestring, "freeze");
    cJSON_Delete (event);

    zsock_t *worker = s_worker (10, "w1");
    char id [37];
    s_id (1, id);
    s_publish (operator, id, "web-1", NULL);
    uint64_t ids [4];
    cr_assert_eq (s_collect (worker, 0, ids, NULL, 4), 0, "a paused group leased");
    event = s_event (sub, "waiting", 3000);
    cr_assert_not_null (event);
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (event, "reason")->valuestring, "paused");
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (event, "message_id")->valuestring, id);
    cJSON_Delete (event);

    s_ask (operator, MMP_GROUPS, "{}", MMP_GROUPS, &msg);
    const cJSON *web = cJSON_GetArrayItem (cJSON_GetObjectItemCaseSensitive (msg.body, "groups"), 0);
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (web, "name")->valuestring, "web");
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (web, "match")->valuestring, "web-*");
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (web, "paused")));
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (web, "paused_reason")->valuestring, "freeze");
    cr_expect_eq (s_num (web, "waiting"), 1);
    mmp_msg_reset (&msg);

    s_ask (operator, MMP_RESUME, "{\"group\":\"web\"}", MMP_RESUME, &msg);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_collect (worker, 1, ids, NULL, 4), 1, "resume lets it go on");

    //  The kill switch holds every group; resume --all lifts it
    s_ask (operator, MMP_PAUSE, "{\"all\":true}", MMP_PAUSE, &msg);
    mmp_msg_reset (&msg);
    s_id (2, id);
    s_publish (operator, id, "db-1", NULL);
    cr_assert_eq (s_collect (worker, 0, ids + 1, NULL, 3), 0, "the kill switch leased");
    s_ask (operator, MMP_RESUME, "{\"all\":true}", MMP_RESUME, &msg);
    mmp_msg_reset (&msg);
    cr_assert_eq (s_collect (worker, 1, ids + 1, NULL, 3), 1);

    //  INFLIGHT lists both leases with target, group and worker
    s_ask (operator, MMP_INFLIGHT, "{}", MMP_INFLIGHT, &msg);
    cr_expect_eq (s_num (msg.body, "total"), 2);
    const cJSON *lease;
    int seen = 0;
    cJSON_ArrayForEach (lease, cJSON_GetObjectItemCaseSensitive (msg.body, "leases")) {
        const char *target = cJSON_GetObjectItemCaseSensitive (lease, "target")->valuestring;
        const char *group = cJSON_GetObjectItemCaseSensitive (lease, "group")->valuestring;
        cr_expect (strcmp (target, "web-1.example.net") == 0 ? strcmp (group, "web") == 0
                                                             : strcmp (group, "default") == 0);
        cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (lease, "worker")->valuestring, "w1");
        cr_expect_eq (s_num (lease, "attempt"), 1);
        seen++;
    }
    cr_expect_eq (seen, 2);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_WORKERS, "{}", MMP_WORKERS, &msg);
    const cJSON *row = cJSON_GetArrayItem (cJSON_GetObjectItemCaseSensitive (msg.body, "workers"), 0);
    cr_assert_not_null (row);
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (row, "name")->valuestring, "w1");
    cr_expect_eq (s_num (row, "credit"), 10);
    cr_expect_eq (s_num (row, "leases"), 2);
    mmp_msg_reset (&msg);
    zsock_destroy (&worker);
    zsock_destroy (&sub);
    zsock_destroy (&operator);
}

Test (brk_server_policy, bad_requests_are_answered, .fini = s_teardown, .timeout = 60)
{
    s_start (s_web, 1, NULL);
    zsock_t *operator = s_dealer (s_frontend);
    mmp_msg_t msg;
    s_ask (operator, MMP_PAUSE, "{\"group\":\"nosuch\"}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_BAD_VALUE);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_PAUSE, "{}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_MISSING_FIELD);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_PAUSE, "{\"group\":\"web\",\"all\":true}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_BAD_VALUE);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_RESUME, "{\"group\":\"web\",\"reason\":\"x\"}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_UNKNOWN_FIELD);
    mmp_msg_reset (&msg);
    //  No policy file: RELOAD says so, the policy stays
    s_ask (operator, MMP_RELOAD, "{}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_BAD_VALUE);
    cr_expect (strstr (msg.reason, "no policy file"));
    mmp_msg_reset (&msg);
    zsock_destroy (&operator);
}

Test (brk_server_policy, without_a_policy_commands_say_so, .fini = s_teardown, .timeout = 60)
{
    s_start (NULL, 0, NULL);
    zsock_t *operator = s_dealer (s_frontend);
    mmp_msg_t msg;
    s_ask (operator, MMP_PAUSE, "{\"all\":true}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_UNEXPECTED);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_GROUPS, "{}", MMP_GROUPS, &msg);
    cr_expect (cJSON_IsFalse (cJSON_GetObjectItemCaseSensitive (msg.body, "policy")));
    cr_expect_eq (cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (msg.body, "groups")), 0);
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_STATS, "{}", MMP_STATS, &msg);
    cr_expect_null (cJSON_GetObjectItemCaseSensitive (msg.body, "groups"));
    cr_expect_eq (s_num (msg.body, "coalesced"), 0);
    mmp_msg_reset (&msg);
    zsock_destroy (&operator);
}

Test (brk_server_policy, pause_survives_a_restart, .fini = s_teardown, .timeout = 60)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_policy_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    s_start (s_web, 1, s_dir);
    zsock_t *operator = s_dealer (s_frontend);
    mmp_msg_t msg;
    s_ask (operator, MMP_PAUSE, "{\"group\":\"web\",\"reason\":\"change 42\"}", MMP_PAUSE, &msg);
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (msg.body, "durable")));
    mmp_msg_reset (&msg);
    zsock_destroy (&operator);
    s_stop ();

    s_start (s_web, 1, s_dir);
    operator = s_dealer (s_frontend);
    cJSON *web = s_stats_group (operator, "web", &msg);
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (web, "paused")));
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (web, "paused_reason")->valuestring, "change 42");
    mmp_msg_reset (&msg);
    s_ask (operator, MMP_RESUME, "{\"group\":\"web\"}", MMP_RESUME, &msg);
    mmp_msg_reset (&msg);
    zsock_destroy (&operator);
    s_stop ();

    s_start (s_web, 1, s_dir);
    operator = s_dealer (s_frontend);
    web = s_stats_group (operator, "web", &msg);
    cr_expect (cJSON_IsFalse (cJSON_GetObjectItemCaseSensitive (web, "paused")));
    mmp_msg_reset (&msg);
    zsock_destroy (&operator);
}

static void
s_write (const char *path, const char *text)
{
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fputs (text, file);
    fclose (file);
}

static double
s_group_cap (zsock_t *client, const char *name)
{
    mmp_msg_t msg;
    cJSON *group = s_stats_group (client, name, &msg);
    double cap = s_num (group, "max");
    mmp_msg_reset (&msg);
    return cap;
}

Test (brk_server_policy, reload_applies_a_good_file_and_refuses_a_bad_one, .fini = s_teardown,
      .timeout = 60)
{
    snprintf (s_dir, sizeof s_dir, "/tmp/brk_policy_XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
    char path [128];
    snprintf (path, sizeof path, "%s/policy.cfg", s_dir);
    s_write (path, "groups\n    web\n        match = \"web-*\"\n        max = 2\n");
    s_policy_file = path;
    s_start (NULL, 0, NULL);
    s_policy_file = NULL;
    zsock_t *operator = s_dealer (s_frontend);
    cr_assert_eq (s_group_cap (operator, "web"), 2);

    s_write (path, "groups\n    web\n        match = \"web-*\"\n        max = 5\n");
    mmp_msg_t msg;
    s_ask (operator, MMP_RELOAD, "{}", MMP_RELOAD, &msg);
    cr_expect (cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (msg.body, "ok")));
    mmp_msg_reset (&msg);
    cr_expect_eq (s_group_cap (operator, "web"), 5);

    //  A bad value, then a changed glob: refused, the old policy stays
    s_write (path, "groups\n    web\n        match = \"web-*\"\n        max = two\n");
    s_ask (operator, MMP_RELOAD, "{}", MMP_ERROR, &msg);
    cr_expect_str_eq (msg.code, MMP_ERR_BAD_VALUE);
    cr_expect (strstr (msg.reason, "max"), "%s", msg.reason);
    mmp_msg_reset (&msg);
    s_write (path, "groups\n    web\n        match = \"www-*\"\n        max = 1\n");
    s_ask (operator, MMP_RELOAD, "{}", MMP_ERROR, &msg);
    cr_expect (strstr (msg.reason, "restart"), "%s", msg.reason);
    mmp_msg_reset (&msg);
    cr_expect_eq (s_group_cap (operator, "web"), 5);

    //  The pipe's RELOAD (mandrill-broker's SIGHUP)
    s_write (path, "groups\n    web\n        match = \"web-*\"\n        max = 3\n");
    zstr_send (s_broker, "RELOAD");
    int rc = -1;
    char *text = NULL;
    cr_assert_eq (zsock_recv (s_broker, "is", &rc, &text), 0);
    cr_expect_eq (rc, 0);
    cr_expect (text && strstr (text, "reloaded"));
    zstr_free (&text);
    cr_expect_eq (s_group_cap (operator, "web"), 3);
    zsock_destroy (&operator);
}

Test (brk_server_policy, waiting_says_full, .fini = s_teardown, .timeout = 60)
{
    static const char *one [] = { "web:web-*:1" };
    s_start (one, 1, NULL);
    zsock_t *publisher = s_dealer (s_frontend);
    zsock_t *sub = zsock_new_sub (s_events, "waiting");
    cr_assert_not_null (sub);
    zsock_t *worker = s_worker (10, "w1");
    char id [37];
    s_id (1, id);
    s_publish (publisher, id, "web-1", NULL);
    uint64_t ids [4];
    cr_assert_eq (s_collect (worker, 1, ids, NULL, 4), 1);
    //  The subscription takes effect some time after connect: publish
    //  until a waiting event arrives, each for another host of the full group
    cJSON *event = NULL;
    for (int i = 2; i < 40 && !event; i++) {
        s_id (i, id);
        char instance [32];
        snprintf (instance, sizeof instance, "web-%d", i);
        s_publish (publisher, id, instance, NULL);
        s_settle ();
        event = s_event (sub, "waiting", 100);
    }
    cr_assert_not_null (event, "no waiting event");
    cr_expect_str_eq (cJSON_GetObjectItemCaseSensitive (event, "reason")->valuestring, "full");
    cJSON_Delete (event);
    //  Once per request and reason: nothing more without a change
    s_settle ();
    s_settle ();
    event = s_event (sub, "waiting", 200);
    cr_expect_null (event, "a second waiting event for the same reason");
    cJSON_Delete (event);
    zsock_destroy (&worker);
    zsock_destroy (&sub);
    zsock_destroy (&publisher);
}
