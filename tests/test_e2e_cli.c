/*  test_e2e_cli: mandrill-publish and mandrill-ctl against a real broker.

    Each test starts mandrill-broker (MANDRILL_BROKER) on free 127.0.0.1
    ports, runs the tools (MANDRILL_PUBLISH, MANDRILL_CTL) as child
    processes with a hard deadline, and checks the result both through the
    tools' exit codes and output and directly over the codec (STATS).
    Every process is stopped by its PID; temp files are removed.
*/
#include "e2e_support.h"
#include "mdl_uuid.h"
#include "mmp.h"

#include <criterion/criterion.h>
#include <czmq.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

typedef struct {
    int frontend;               //  Port numbers on 127.0.0.1
    int backend;
    int events;
    pid_t pid;                  //  Broker process, 0 when not running
    char endpoint [64];         //  tcp://127.0.0.1:<frontend>
    char events_endpoint [64];  //  tcp://127.0.0.1:<events>
    char data_dir [64];         //  Its journal directory, removed at teardown
    char max_attempts [16];     //  --max-attempts
} broker_t;

static broker_t s_broker;

//  Ask the broker for STATS over the codec. Returns the parsed reply body
//  (caller deletes) or NULL when it does not answer within timeout_ms.
static cJSON *
s_stats (int timeout_ms)
{
    zsock_t *sock = e2e_dealer (s_broker.endpoint, timeout_ms, -1);
    cJSON *result = NULL;
    mmp_msg_t msg;
    if (e2e_request (sock, MMP_STATS, "{}", &msg) == 0) {
        if (msg.command == MMP_STATS)
            result = cJSON_Duplicate (msg.body, true);
        mmp_msg_reset (&msg);
    }
    zsock_destroy (&sock);
    return result;
}

static double
s_counter (const char *name)
{
    cJSON *stats = s_stats (2000);
    cr_assert_not_null (stats, "broker did not answer STATS");
    cJSON *item = cJSON_GetObjectItemCaseSensitive (stats, name);
    cr_assert (cJSON_IsNumber (item), "STATS has no counter %s", name);
    double value = item->valuedouble;
    cJSON_Delete (stats);
    return value;
}

static void
s_broker_start (void)
{
    const char *path = e2e_program ("MANDRILL_BROKER");
    char frontend [64], backend [64], events [64];
    snprintf (frontend, sizeof frontend, "tcp://127.0.0.1:%d", s_broker.frontend);
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", s_broker.backend);
    snprintf (events, sizeof events, "tcp://127.0.0.1:%d", s_broker.events);
    pid_t pid = fork ();
    cr_assert (pid >= 0);
    if (pid == 0) {
        int null = open ("/dev/null", O_WRONLY);
        dup2 (null, 1);
        dup2 (null, 2);
        execl (path, path, "--frontend", frontend, "--backend", backend, "--events", events,
               "--data-dir", s_broker.data_dir, "--max-attempts", s_broker.max_attempts,
               "--backoff-base", "10ms", (char *) NULL);
        _exit (127);
    }
    s_broker.pid = pid;
    //  Ready when it answers STATS.
    for (int i = 0; i < 50; i++) {
        cJSON *stats = s_stats (100);
        if (stats) {
            cJSON_Delete (stats);
            return;
        }
    }
    cr_assert_fail ("broker did not start");
}

static void
s_broker_stop (void)
{
    if (s_broker.pid <= 0)
        return;
    kill (s_broker.pid, SIGTERM);
    if (e2e_wait_exit (s_broker.pid, 5000) == -1)
        e2e_kill (s_broker.pid);
    s_broker.pid = 0;
}

static void
s_setup (void)
{
    zsys_handler_set (NULL);
    memset (&s_broker, 0, sizeof s_broker);
    e2e_program ("MANDRILL_BROKER");    //  Fail before making anything to clean up
    s_broker.frontend = e2e_free_port ();
    s_broker.backend = e2e_free_port ();
    s_broker.events = e2e_free_port ();
    snprintf (s_broker.endpoint, sizeof s_broker.endpoint, "tcp://127.0.0.1:%d", s_broker.frontend);
    snprintf (s_broker.events_endpoint, sizeof s_broker.events_endpoint, "tcp://127.0.0.1:%d",
              s_broker.events);
    e2e_dir_new (s_broker.data_dir, sizeof s_broker.data_dir, "mandrill-e2e-cli-");
    snprintf (s_broker.max_attempts, sizeof s_broker.max_attempts, "5");
}

static void
s_setup_one_attempt (void)
{
    s_setup ();
    snprintf (s_broker.max_attempts, sizeof s_broker.max_attempts, "1");
    s_broker_start ();
}

static void
s_setup_running (void)
{
    s_setup ();
    s_broker_start ();
}

static void
s_teardown (void)
{
    s_broker_stop ();
    e2e_dir_remove (s_broker.data_dir);
}

//  Output of a child: stdout and stderr, each up to 64 KiB.
typedef struct {
    int code;                   //  Exit code, or -1 if it had to be killed
    char out [65536];           //  Its stdout
    char err [65536];           //  Its stderr
} run_t;

static char *
s_slurp (FILE *file, char *buf, size_t size)
{
    rewind (file);
    size_t got = fread (buf, 1, size - 1, file);
    buf [got] = 0;
    fclose (file);
    return buf;
}

//  Run argv (NULL-terminated) with input on stdin (or /dev/null), within
//  timeout_ms. The child is killed by its PID past the deadline.
static void
s_run (run_t *run, const char *input, int timeout_ms, char *const argv [])
{
    FILE *out = tmpfile (), *err = tmpfile (), *in = tmpfile ();
    cr_assert (out && err && in);
    if (input)
        fputs (input, in);
    fflush (in);
    rewind (in);
    pid_t pid = fork ();
    cr_assert (pid >= 0);
    if (pid == 0) {
        dup2 (fileno (in), 0);
        dup2 (fileno (out), 1);
        dup2 (fileno (err), 2);
        execv (argv [0], argv);
        _exit (127);
    }
    int status = e2e_wait_exit (pid, timeout_ms);
    run->code = -1;
    if (status == -1)
        e2e_kill (pid);
    else
    if (WIFEXITED (status))
        run->code = WEXITSTATUS (status);
    fclose (in);
    s_slurp (out, run->out, sizeof run->out);
    s_slurp (err, run->err, sizeof run->err);
}

#define PUBLISH(run, input, ...) do { \
    char *const argv_ [] = { (char *) e2e_program ("MANDRILL_PUBLISH"), \
                             "--broker", s_broker.endpoint, __VA_ARGS__, NULL }; \
    s_run ((run), (input), 20000, argv_); \
} while (0)

#define PUBLISH_WITHIN(run, input, timeout_ms, ...) do { \
    char *const argv_ [] = { (char *) e2e_program ("MANDRILL_PUBLISH"), \
                             "--broker", s_broker.endpoint, __VA_ARGS__, NULL }; \
    s_run ((run), (input), (timeout_ms), argv_); \
} while (0)

#define CTL_WITHIN(run, timeout_ms, ...) do { \
    char *const argv_ [] = { (char *) e2e_program ("MANDRILL_CTL"), \
                             "--broker", s_broker.endpoint, __VA_ARGS__, NULL }; \
    s_run ((run), NULL, (timeout_ms), argv_); \
} while (0)

#define CTL(run, ...) do { \
    char *const argv_ [] = { (char *) e2e_program ("MANDRILL_CTL"), \
                             "--broker", s_broker.endpoint, __VA_ARGS__, NULL }; \
    s_run ((run), NULL, 20000, argv_); \
} while (0)

static run_t s_result;          //  Big: kept out of the stack

TestSuite (e2e_cli, .init = s_setup_running, .fini = s_teardown, .timeout = 60);

Test (e2e_cli, publish_one_instance)
{
    PUBLISH (&s_result, NULL, "--instance", "cattle-ab12", "--hostname", "ab12.example.org");
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (mdl_uuid_valid (s_result.out, 36), "stdout is the message id: %s", s_result.out);
    cr_assert (strstr (s_result.err, "Published message cattle-ab12"));
    cr_assert_eq (s_counter ("published"), 1);
    cr_assert_eq (s_counter ("ready"), 1);
}

Test (e2e_cli, same_message_id_is_a_duplicate_not_queued_twice)
{
    const char *id = "6F9619FF-8B86-4011-B42D-00C04FC964FF";
    PUBLISH (&s_result, NULL, "--instance", "cattle-ab12", "--message-id", (char *) id);
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert (strstr (s_result.out, "6f9619ff-8b86-4011-b42d-00c04fc964ff"), "ids are lower-cased");
    PUBLISH (&s_result, NULL, "--instance", "cattle-ab12", "--message-id", (char *) id);
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert (strstr (s_result.err, "duplicate"), "second publish reported as duplicate: %s", s_result.err);
    cr_assert_eq (s_counter ("published"), 1);
    cr_assert_eq (s_counter ("ready"), 1);
}

Test (e2e_cli, publish_file)
{
    const char *input =
        "# restart requests\n"
        "{\"instance_name\": \"cattle-0001\"}\n"
        "\n"
        "{\"instance_name\": \"cattle-0002\", \"hostname\": \"h2.example.net\", \"attributes\": {\"why\": \"test\"}}\n"
        "{\"instance_name\": \"cattle-0003\", \"message_id\": \"1b4e28ba-2fa1-41d2-883f-0016d3cca427\"}\n";
    PUBLISH (&s_result, input, "--file", "-");
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert_eq (s_counter ("published"), 3);
}

Test (e2e_cli, invalid_line_stops_before_sending_anything)
{
    const char *input =
        "{\"instance_name\": \"cattle-0001\"}\n"
        "{\"instance_name\": \"Not_A_Label\"}\n"
        "{\"instance_name\": \"cattle-0003\"}\n";
    PUBLISH (&s_result, input, "--file", "-");
    cr_assert_eq (s_result.code, 3, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "stdin:2:"), "error names line 2: %s", s_result.err);
    cr_assert_eq (s_counter ("published"), 0);
}

Test (e2e_cli, keep_going_skips_invalid_lines)
{
    const char *input =
        "{\"instance_name\": \"cattle-0001\"}\n"
        "not json\n"
        "{\"instance_name\": \"cattle-0003\", \"colour\": \"red\"}\n"
        "{\"instance_name\": \"cattle-0004\"}\n";
    PUBLISH (&s_result, input, "--file", "-", "--keep-going");
    cr_assert_eq (s_result.code, 3, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "stdin:2:"));
    cr_assert (strstr (s_result.err, "stdin:3:") && strstr (s_result.err, "unknown_field"), "%s", s_result.err);
    cr_assert_eq (s_counter ("published"), 2);
}

Test (e2e_cli, mock_count)
{
    //  Below 100 msgs/s every message gets its own log line.
    PUBLISH (&s_result, NULL, "--mock", "--count", "20", "--rate", "50");
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "Published message cattle-"));
    cr_assert_eq (s_counter ("published"), 20);
}

Test (e2e_cli, mock_many_publishers)
{
    PUBLISH (&s_result, NULL, "--mock", "--count", "20000", "--rate", "1000000",
             "--publishers", "3", "--batch", "500");
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "20000 confirmed"), "%s", s_result.err);
    cr_assert_eq (s_counter ("published"), 20000);
}

Test (e2e_cli, usage_errors)
{
    PUBLISH (&s_result, NULL, "--batch", "0", "--mock");
    cr_assert_eq (s_result.code, 2);
    PUBLISH (&s_result, NULL, "--mock", "--instance", "x");
    cr_assert_eq (s_result.code, 2);
    PUBLISH (&s_result, NULL, "--instance", "cattle-1", "--message-id", "not-a-uuid");
    cr_assert_eq (s_result.code, 3);
    CTL (&s_result, "frobnicate");
    cr_assert_eq (s_result.code, 2);
    cr_assert_eq (s_counter ("published"), 0);
}

Test (e2e_cli, ctl_stats_deadletters_replay)
{
    PUBLISH (&s_result, NULL, "--instance", "cattle-ab12");
    cr_assert_eq (s_result.code, 0);
    CTL (&s_result, "stats");
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert (strstr (s_result.out, "published") && strstr (s_result.out, "ready"));
    CTL (&s_result, "stats", "--json");
    cr_assert_eq (s_result.code, 0);
    cJSON *stats = cJSON_Parse (s_result.out);
    cr_assert_not_null (stats, "--json prints JSON: %s", s_result.out);
    cr_assert_eq (cJSON_GetObjectItemCaseSensitive (stats, "published")->valuedouble, 1);
    cJSON_Delete (stats);
    CTL (&s_result, "deadletters", "--limit", "10");
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert (strstr (s_result.out, "0 dead letters"));
    CTL (&s_result, "replay", "1b4e28ba-2fa1-41d2-883f-0016d3cca427");
    cr_assert_eq (s_result.code, 4, "an unknown id is reported: %s", s_result.out);
    cr_assert (strstr (s_result.out, "unknown"));
}

Test (e2e_cli, ctl_tail_prints_events)
{
    //  tail in the background, then publish until it has seen one event
    //  (a SUB joins asynchronously, so the first publishes may be missed).
    FILE *out = tmpfile ();
    cr_assert_not_null (out);
    pid_t pid = fork ();
    if (pid == 0) {
        dup2 (fileno (out), 1);
        execl (e2e_program ("MANDRILL_CTL"), "mandrill-ctl", "--events", s_broker.events_endpoint,
               "--json", "tail", "published", "--count", "1", (char *) NULL);
        _exit (127);
    }
    int status = -1;
    bool done = false;
    for (int i = 0; i < 50 && !done; i++) {
        PUBLISH (&s_result, NULL, "--instance", "cattle-feed");
        done = e2e_reaped (pid, &status);
        if (!done)
            usleep (100000);
    }
    if (!done)
        e2e_kill (pid);
    cr_assert (done, "tail saw no event");
    cr_assert (WIFEXITED (status) && WEXITSTATUS (status) == 0);
    char line [4096];
    s_slurp (out, line, sizeof line);
    cJSON *event = cJSON_Parse (line);
    cr_assert_not_null (event, "event line is JSON: %s", line);
    cJSON *name = cJSON_GetObjectItemCaseSensitive (event, "event");
    cr_assert (cJSON_IsString (name) && streq (name->valuestring, "published"));
    cJSON_Delete (event);
}

//  No broker: the tools give up with their documented codes.
Test (e2e_cli_down, no_broker_exit_codes, .init = s_setup, .fini = s_teardown, .timeout = 30)
{
    PUBLISH (&s_result, NULL, "--instance", "cattle-ab12", "--timeout", "200ms", "--retries", "1");
    cr_assert_eq (s_result.code, 1, "unconfirmed: exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "unconfirmed"));
    CTL (&s_result, "stats", "--timeout", "300ms");
    cr_assert_eq (s_result.code, 1, "no answer: exit %d", s_result.code);
}

//  The broker starts late: the publisher has resent the batch several
//  times (same ids), the broker sees every copy and queues it once.
Test (e2e_cli_down, late_broker_retry_is_not_queued_twice, .init = s_setup, .fini = s_teardown,
      .timeout = 30)
{
    FILE *err = tmpfile ();
    cr_assert_not_null (err);
    pid_t pid = fork ();
    if (pid == 0) {
        dup2 (fileno (err), 2);
        execl (e2e_program ("MANDRILL_PUBLISH"), "mandrill-publish", "--broker", s_broker.endpoint,
               "--instance", "cattle-late", "--timeout", "200ms", "--retries", "50", (char *) NULL);
        _exit (127);
    }
    usleep (1000000);           //  Several resend intervals pass with no broker
    s_broker_start ();
    int status = e2e_wait_exit (pid, 10000);
    if (!WIFEXITED (status)) {
        e2e_kill (pid);
        cr_assert_fail ("publisher did not finish");
    }
    char text [65536];
    s_slurp (err, text, sizeof text);
    cr_assert_eq (WEXITSTATUS (status), 0, "%s", text);
    cr_assert (strstr (text, "sending it again"), "the batch was resent: %s", text);
    cr_assert_eq (s_counter ("published"), 1);
    cr_assert_eq (s_counter ("ready"), 1);
}

//  A worker that NACKs its one delivery, with --max-attempts 1, makes a
//  dead letter; ctl lists it and replays it back into the queue.
Test (e2e_cli_dead, deadletters_and_replay_all, .init = s_setup_one_attempt, .fini = s_teardown,
      .timeout = 30)
{
    PUBLISH (&s_result, NULL, "--instance", "cattle-dead", "--message-id",
             "1b4e28ba-2fa1-41d2-883f-0016d3cca427");
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);

    char backend [64];
    snprintf (backend, sizeof backend, "tcp://127.0.0.1:%d", s_broker.backend);
    zsock_t *worker = e2e_dealer (backend, 5000, -1);
    const char *hello = "{\"credit\":1,\"name\":\"nacker\"}";
    cr_assert (mmp_send (worker, NULL, MMP_HELLO, hello, strlen (hello)) == 0);
    uint64_t delivery_id = 0;
    for (int i = 0; i < 5 && !delivery_id; i++) {
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0);
        if (msg.command == MMP_DELIVER)
            delivery_id = msg.deliveries [0].delivery_id;
        mmp_msg_reset (&msg);
    }
    cr_assert (delivery_id, "no DELIVER");
    char nack [128];
    snprintf (nack, sizeof nack, "{\"delivery_ids\":[%llu],\"reason\":\"restart failed\"}",
              (unsigned long long) delivery_id);
    cr_assert (mmp_send (worker, NULL, MMP_NACK, nack, strlen (nack)) == 0);
    //  Wait for NACKED, then BYE so the replayed message is not leased again.
    bool nacked = false;
    for (int i = 0; i < 5 && !nacked; i++) {
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        cr_assert_eq (mmp_recv (worker, true, NULL, MMP_FROM_BROKER, &msg, &err), 0);
        nacked = msg.command == MMP_NACKED;
        mmp_msg_reset (&msg);
    }
    cr_assert (nacked);
    mmp_send (worker, NULL, MMP_BYE, "{}", 2);
    zsock_destroy (&worker);

    CTL (&s_result, "deadletters");
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert (strstr (s_result.out, "1b4e28ba-2fa1-41d2-883f-0016d3cca427"), "%s", s_result.out);
    cr_assert (strstr (s_result.out, "cattle-dead"));
    cr_assert (strstr (s_result.out, "1 dead letters in total"), "%s", s_result.out);
    CTL (&s_result, "deadletters", "--json");
    cr_assert_eq (s_result.code, 0);
    cJSON *reply = cJSON_Parse (s_result.out);
    cr_assert_not_null (reply, "%s", s_result.out);
    cr_assert_eq (cJSON_GetArraySize (cJSON_GetObjectItemCaseSensitive (reply, "dead_letters")), 1);
    cJSON_Delete (reply);

    CTL (&s_result, "replay", "--all");
    cr_assert_eq (s_result.code, 0, "exit %d: %s %s", s_result.code, s_result.out, s_result.err);
    cr_assert (strstr (s_result.out, "1 replayed, 0 unknown"), "%s", s_result.out);
    cr_assert_eq (s_counter ("ready"), 1);
    CTL (&s_result, "deadletters");
    cr_assert (strstr (s_result.out, "0 dead letters in total"), "%s", s_result.out);
}

//  Each line is checked by the protocol's decoder, so what the broker
//  would refuse as bad_json is refused before anything is sent, with the
//  line number and the code.
Test (e2e_cli, file_lines_checked_like_the_broker)
{
    static const char *bad [] = {
        "{\"instance_name\":\"dup\",\"instance_name\":\"dup2\"}\n",     //  Repeated member
        "{\"instance_name\":\"web-5\"} trailing\n",                    //  Text after the value
        "{\"instance_name\":\"nul\\u0000x\"}\n",                        //  Would be cut to "nul"
        "{\"instance_name\":\"a-1\"},{\"instance_name\":\"a-2\"}\n",   //  Two values on a line
        NULL
    };
    for (int i = 0; bad [i]; i++) {
        char input [256];
        snprintf (input, sizeof input, "{\"instance_name\":\"cattle-0001\"}\n%s", bad [i]);
        PUBLISH (&s_result, input, "--file", "-");
        cr_assert_eq (s_result.code, 3, "line %s: exit %d: %s", bad [i], s_result.code, s_result.err);
        cr_assert (strstr (s_result.err, "stdin:2:") && strstr (s_result.err, "bad_json"),
                   "line %s: %s", bad [i], s_result.err);
    }
    cr_assert_eq (s_counter ("published"), 0, "nothing is sent when a line is invalid");
    //  --keep-going publishes only the valid line.
    char input [512] = "{\"instance_name\":\"cattle-0001\"}\n";
    for (int i = 0; bad [i]; i++)
        strcat (input, bad [i]);
    PUBLISH (&s_result, input, "--file", "-", "--keep-going");
    cr_assert_eq (s_result.code, 3, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "stdin:5:"), "%s", s_result.err);
    cr_assert_eq (s_counter ("published"), 1);
}

//  Instance names are RFC 1123 labels, case-insensitive: upper case is
//  published, and the error for a bad name says so.
Test (e2e_cli, instance_name_case_and_message)
{
    PUBLISH (&s_result, NULL, "--instance", "CATTLE-AB12");
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    PUBLISH (&s_result, NULL, "--instance", "Bad_Name");
    cr_assert_eq (s_result.code, 3, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "bad_instance_name") && strstr (s_result.err, "A-Z"),
               "the message says upper case is accepted: %s", s_result.err);
    cr_assert_null (strstr (s_result.err, "[a-z0-9-]"), "%s", s_result.err);
    cr_assert_eq (s_counter ("published"), 1);
}

//  Requests of a few KiB each: a full --batch would pass the broker's 1 MiB
//  body limit (refused before it can read req), so batches are cut by size.
Test (e2e_cli, big_requests_are_batched_under_the_body_limit)
{
    size_t lines = 300;
    char pad [3901];
    memset (pad, 'x', sizeof pad - 1);
    pad [sizeof pad - 1] = 0;
    size_t size = lines * (sizeof pad + 80) + 1;
    char *input = malloc (size);
    cr_assert_not_null (input);
    size_t used = 0;
    for (size_t i = 0; i < lines; i++)
        used += (size_t) snprintf (input + used, size - used,
                                   "{\"instance_name\":\"cattle-%04zu\",\"attributes\":{\"pad\":\"%s\"}}\n",
                                   i, pad);
    PUBLISH (&s_result, input, "--file", "-", "--batch", "1000", "--timeout", "2s", "--retries", "1");
    free (input);
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert_eq (s_counter ("published"), (double) lines);
}

Test (e2e_cli, ctl_tail_rejects_unknown_events)
{
    CTL_WITHIN (&s_result, 5000, "--events", s_broker.events_endpoint, "tail", "bogus_event");
    cr_assert_eq (s_result.code, 2, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "unknown event 'bogus_event'"), "%s", s_result.err);
    cr_assert (strstr (s_result.err, "progress"), "the list names every event: %s", s_result.err);
    //  A valid tail says once what it subscribed to and where (it is
    //  killed at the deadline: nothing happens on this broker).
    CTL_WITHIN (&s_result, 500, "--events", s_broker.events_endpoint, "tail", "published", "progress");
    cr_assert_eq (s_result.code, -1, "tail waits for events: exit %d: %s", s_result.code, s_result.err);
    char expected [160];
    snprintf (expected, sizeof expected, "tailing published, progress from %s", s_broker.events_endpoint);
    cr_assert (strstr (s_result.err, expected), "%s", s_result.err);
}

//  Usage errors say what was wrong; --version prints the version.
Test (e2e_cli_down, usage_messages_and_version, .init = s_setup, .fini = s_teardown, .timeout = 30)
{
    PUBLISH (&s_result, NULL, "--bogus");
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "unknown option '--bogus'"), "%s", s_result.err);
    PUBLISH (&s_result, NULL, "--instance", "cattle-1", "--timeout", "x");
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "invalid value 'x' for --timeout: expected a duration such as 5s"),
               "%s", s_result.err);
    PUBLISH (&s_result, NULL, "--mock", "--batch", "5000");
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "invalid value '5000' for --batch"), "%s", s_result.err);
    PUBLISH (&s_result, NULL, "--version");
    cr_assert_eq (s_result.code, 0);
    cr_assert_str_eq (s_result.out, "mandrill-publish " MANDRILL_VERSION "\n");
    CTL (&s_result, "--bogus", "stats");
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "unknown option '--bogus'"), "%s", s_result.err);
    CTL (&s_result, "--timeout", "x", "stats");
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "invalid value 'x' for --timeout: expected a duration such as 5s"),
               "%s", s_result.err);
    CTL (&s_result, "--version");
    cr_assert_eq (s_result.code, 0, "%s", s_result.err);
    cr_assert_str_eq (s_result.out, "mandrill-ctl " MANDRILL_VERSION "\n");
}

//  A request that was never sent is not confirmed either.
Test (e2e_cli_down, bad_endpoint_counts_unsent_as_not_confirmed, .init = s_setup, .fini = s_teardown,
      .timeout = 30)
{
    char *const argv [] = { (char *) e2e_program ("MANDRILL_PUBLISH"), "--broker", "bogus",
                            "--instance", "cattle-ab12", NULL };
    s_run (&s_result, NULL, 10000, argv);
    cr_assert_eq (s_result.code, 1, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "1 not confirmed"), "%s", s_result.err);
}

//  A stand-in broker that answers everything with ERROR bad_json and no
//  req, as the real one does for a body it cannot read.
typedef struct {
    int port;                   //  Frontend port on 127.0.0.1
    bool stop;                  //  Set by the test to end the thread (atomic access)
    int received;               //  Messages answered
    bool ready;                 //  Bound
} fake_broker_t;

static void *
s_fake_broker (void *arg)
{
    fake_broker_t *self = (fake_broker_t *) arg;
    zsock_t *router = zsock_new (ZMQ_ROUTER);
    if (!router)
        return NULL;
    zsock_set_linger (router, 0);
    zsock_set_rcvtimeo (router, 50);
    if (zsock_bind (router, "tcp://127.0.0.1:%d", self->port) < 0) {
        zsock_destroy (&router);
        return NULL;
    }
    __atomic_store_n (&self->ready, true, __ATOMIC_RELEASE);
    while (!__atomic_load_n (&self->stop, __ATOMIC_ACQUIRE)) {
        zmsg_t *msg = zmsg_recv (router);
        if (!msg)
            continue;
        zframe_t *routing_id = zmsg_first (msg);
        mmp_send_error (router, routing_id, MMP_ERR_BAD_JSON, "body is not valid JSON", NULL);
        self->received++;
        zmsg_destroy (&msg);
    }
    zsock_destroy (&router);
    return NULL;
}

static fake_broker_t s_fake;     //  The stand-in, stopped at teardown even when a test fails
static pthread_t s_fake_thread;
static bool s_fake_running;

static void
s_fake_stop (void)
{
    if (s_fake_running) {
        __atomic_store_n (&s_fake.stop, true, __ATOMIC_RELEASE);
        pthread_join (s_fake_thread, NULL);
        s_fake_running = false;
    }
}

static void
s_teardown_fake (void)
{
    s_fake_stop ();
    s_teardown ();
}

Test (e2e_cli_down, error_without_req_is_refused_at_once, .init = s_setup, .fini = s_teardown_fake,
      .timeout = 60)
{
    memset (&s_fake, 0, sizeof s_fake);
    s_fake.port = s_broker.frontend;
    fake_broker_t *fake = &s_fake;
    cr_assert_eq (pthread_create (&s_fake_thread, NULL, s_fake_broker, fake), 0);
    s_fake_running = true;
    for (int i = 0; i < 200 && !__atomic_load_n (&fake->ready, __ATOMIC_ACQUIRE); i++)
        usleep (10000);
    cr_assert (__atomic_load_n (&fake->ready, __ATOMIC_ACQUIRE), "fake broker did not bind");

    //  One batch in flight: that batch was refused; exit 4 at once, not
    //  after the default 10 resends of 5 s.
    int64_t started = zclock_mono ();
    PUBLISH_WITHIN (&s_result, NULL, 10000, "--instance", "cattle-ab12");
    int64_t took = zclock_mono () - started;
    cr_assert_eq (s_result.code, 4, "exit %d after %lld ms: %s", s_result.code, (long long) took,
                  s_result.err);
    cr_assert (took < 4000, "refused at once, not after retries: %lld ms", (long long) took);
    cr_assert (strstr (s_result.err, "bad_json") && strstr (s_result.err, "body is not valid JSON"),
               "%s", s_result.err);

    //  Several in flight: which one is unknown, so the run stops at once;
    //  the refused and the never-sent requests are all not confirmed.
    const char *input =
        "{\"instance_name\":\"cattle-0001\"}\n{\"instance_name\":\"cattle-0002\"}\n"
        "{\"instance_name\":\"cattle-0003\"}\n{\"instance_name\":\"cattle-0004\"}\n"
        "{\"instance_name\":\"cattle-0005\"}\n{\"instance_name\":\"cattle-0006\"}\n"
        "{\"instance_name\":\"cattle-0007\"}\n{\"instance_name\":\"cattle-0008\"}\n";
    started = zclock_mono ();
    PUBLISH_WITHIN (&s_result, input, 10000, "--file", "-", "--batch", "1");
    took = zclock_mono () - started;
    cr_assert_eq (s_result.code, 4, "exit %d after %lld ms: %s", s_result.code, (long long) took,
                  s_result.err);
    cr_assert (took < 4000, "stopped at once: %lld ms", (long long) took);
    cr_assert (strstr (s_result.err, "bad_json"), "%s", s_result.err);
    cr_assert (strstr (s_result.err, "8 not confirmed"), "%s", s_result.err);

    //  mandrill-ctl has one request outstanding: the ERROR is its answer.
    started = zclock_mono ();
    CTL_WITHIN (&s_result, 10000, "stats", "--timeout", "5s");
    took = zclock_mono () - started;
    cr_assert_eq (s_result.code, 4, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (took < 4000, "answered at once: %lld ms", (long long) took);
    cr_assert (strstr (s_result.err, "bad_json"), "%s", s_result.err);

    s_fake_stop ();
    cr_assert (fake->received >= 3, "the stand-in answered %d messages", fake->received);
}

//  --------------------------------------------------------------------------
//  Configuration: flags, environment and a --config file, in the real
//  programs (mdl_opt's own tests cover the rules one by one).

//  Run argv like s_run, with env ("NAME=value" strings, NULL-terminated)
//  added to the child's environment.
static void
s_run_env (run_t *run, char *const env [], int timeout_ms, char *const argv [])
{
    FILE *out = tmpfile (), *err = tmpfile ();
    cr_assert (out && err);
    pid_t pid = fork ();
    cr_assert (pid >= 0);
    if (pid == 0) {
        int null = open ("/dev/null", O_RDONLY);
        dup2 (null, 0);
        dup2 (fileno (out), 1);
        dup2 (fileno (err), 2);
        for (int i = 0; env && env [i]; i++)
            putenv (env [i]);
        execv (argv [0], argv);
        _exit (127);
    }
    int status = e2e_wait_exit (pid, timeout_ms);
    run->code = -1;
    if (status == -1)
        e2e_kill (pid);
    else
    if (WIFEXITED (status))
        run->code = WEXITSTATUS (status);
    s_slurp (out, run->out, sizeof run->out);
    s_slurp (err, run->err, sizeof run->err);
}

//  Write text to a new file in the broker's data directory's parent.
static void
s_write_config (char *path, size_t size, const char *text)
{
    snprintf (path, size, "%s.cfg", s_broker.data_dir);
    FILE *file = fopen (path, "w");
    cr_assert_not_null (file);
    fputs (text, file);
    fclose (file);
}

Test (e2e_cli_down, config_file_environment_and_flags, .init = s_setup, .fini = s_teardown,
      .timeout = 60)
{
    //  One file for both programs: the broker's frontend in the file is
    //  wrong and the flag wins; its events endpoint comes from the
    //  environment; mandrill-ctl finds the broker through its own section.
    char config [8192], path [128];
    snprintf (config, sizeof config,
              "#   Mandrill test configuration\n"
              "broker\n"
              "    frontend = \"tcp://127.0.0.1:1\"\n"
              "    backend = \"tcp://127.0.0.1:%d\"\n"
              "    data-dir = \"%s\"\n"
              "    max_attempts = 2\n"
              "ctl\n"
              "    broker = \"%s\"\n"
              "    timeout = 2s\n"
              "worker\n"
              "    credit = 7\n",
              s_broker.backend, s_broker.data_dir, s_broker.endpoint);
    s_write_config (path, sizeof path, config);
    static char config_env [160], events_env [96];
    snprintf (config_env, sizeof config_env, "MANDRILL_BROKER_CONFIG=%s", path);
    snprintf (events_env, sizeof events_env, "MANDRILL_BROKER_EVENTS=tcp://127.0.0.1:%d",
              s_broker.events);
    const char *broker = e2e_program ("MANDRILL_BROKER");
    pid_t pid = fork ();
    cr_assert (pid >= 0);
    if (pid == 0) {
        int null = open ("/dev/null", O_WRONLY);
        dup2 (null, 1);
        dup2 (null, 2);
        putenv (config_env);
        putenv (events_env);
        execl (broker, broker, "--frontend", s_broker.endpoint, (char *) NULL);
        _exit (127);
    }
    s_broker.pid = pid;
    cJSON *stats = NULL;
    for (int i = 0; i < 50 && !stats; i++)
        stats = s_stats (100);
    cr_assert_not_null (stats, "the broker answers on the flag's frontend, not the file's");
    cJSON_Delete (stats);
    //  The events socket came from the environment: a SUB there sees a publish
    zsock_t *sub = zsock_new_sub (s_broker.events_endpoint, "published");
    cr_assert_not_null (sub);
    zsock_set_rcvtimeo (sub, 200);
    bool seen = false;
    for (int i = 0; i < 30 && !seen; i++) {
        PUBLISH (&s_result, NULL, "--instance", "cattle-conf");
        cr_assert_eq (s_result.code, 0, "%s", s_result.err);
        zmsg_t *event = zmsg_recv (sub);
        seen = event != NULL;
        zmsg_destroy (&event);
    }
    zsock_destroy (&sub);
    cr_assert (seen, "no event on the endpoint from MANDRILL_BROKER_EVENTS");

    //  ctl: the file's section alone finds the broker
    static char ctl_config [160];
    snprintf (ctl_config, sizeof ctl_config, "MANDRILL_CTL_CONFIG=%s", path);
    char *const ctl_env [] = { ctl_config, NULL };
    char *const stats_argv [] = { (char *) e2e_program ("MANDRILL_CTL"), "stats", "--json", NULL };
    s_run_env (&s_result, ctl_env, 20000, stats_argv);
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.out, "\"published\""), "%s", s_result.out);

    //  The environment beats the file: a wrong endpoint there is used
    char *const wrong_env [] = { ctl_config, "MANDRILL_CTL_BROKER=tcp://127.0.0.1:1",
                                 "MANDRILL_CTL_TIMEOUT=300ms", NULL };
    s_run_env (&s_result, wrong_env, 20000, stats_argv);
    cr_assert_eq (s_result.code, 1, "no answer: exit %d: %s", s_result.code, s_result.err);
    cr_assert (strstr (s_result.err, "within 300 ms"), "%s", s_result.err);

    //  ... and the flag beats the environment
    char *const flag_argv [] = { (char *) e2e_program ("MANDRILL_CTL"), "--broker", s_broker.endpoint,
                                 "stats", NULL };
    s_run_env (&s_result, wrong_env, 20000, flag_argv);
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    unlink (path);
}

//  Every program refuses an unknown key, an unknown variable and an
//  option where a value belongs, with exit 2 and a message naming it.
Test (e2e_cli_down, unknown_names_are_errors_in_every_program, .init = s_setup,
      .fini = s_teardown, .timeout = 60)
{
    static const char *programs [] = { "MANDRILL_BROKER", "MANDRILL_WORKER", "MANDRILL_PUBLISH",
                                       "MANDRILL_CTL" };
    static const char *sections [] = { "broker", "worker", "publish", "ctl" };
    static const char *prefixes [] = { "MANDRILL_BROKER_", "MANDRILL_WORKER_", "MANDRILL_PUBLISH_",
                                       "MANDRILL_CTL_" };
    static const char *valued [] = { "--data-dir", "--db", "--file", "--broker" };
    char path [128];
    for (int p = 0; p < 4; p++) {
        char config [256];
        snprintf (config, sizeof config, "%s\n    bogus-key = 1\n", sections [p]);
        s_write_config (path, sizeof path, config);
        char *const argv [] = { (char *) e2e_program (programs [p]), "--config", path, NULL };
        s_run_env (&s_result, NULL, 10000, argv);
        cr_assert_eq (s_result.code, 2, "%s: exit %d: %s", sections [p], s_result.code, s_result.err);
        char expected [64];
        snprintf (expected, sizeof expected, "unknown key '%s/bogus-key'", sections [p]);
        cr_assert (strstr (s_result.err, expected), "%s: %s", sections [p], s_result.err);

        static char variable [64];
        snprintf (variable, sizeof variable, "%sBOGUS=1", prefixes [p]);
        char *const env [] = { variable, NULL };
        char *const bare [] = { (char *) e2e_program (programs [p]), NULL };
        s_run_env (&s_result, env, 10000, bare);
        cr_assert_eq (s_result.code, 2, "%s: exit %d: %s", sections [p], s_result.code, s_result.err);
        snprintf (expected, sizeof expected, "unknown environment variable %sBOGUS", prefixes [p]);
        cr_assert (strstr (s_result.err, expected), "%s: %s", sections [p], s_result.err);

        char *const swallow [] = { (char *) e2e_program (programs [p]), (char *) valued [p],
                                   "--help", NULL };
        s_run_env (&s_result, NULL, 10000, swallow);
        cr_assert_eq (s_result.code, 2, "%s: exit %d: %s", sections [p], s_result.code, s_result.err);
        snprintf (expected, sizeof expected, "option %s needs a value", valued [p]);
        cr_assert (strstr (s_result.err, expected), "%s: %s", sections [p], s_result.err);

        char *const help [] = { (char *) e2e_program (programs [p]), "--help", NULL };
        s_run_env (&s_result, NULL, 10000, help);
        cr_assert_eq (s_result.code, 0, "%s: exit %d: %s", sections [p], s_result.code, s_result.err);
        cr_assert (strstr (s_result.out, "command line > environment > file > default"),
                   "%s --help states the precedence", sections [p]);
        cr_assert (strstr (s_result.out, prefixes [p]), "%s --help names its variables", sections [p]);
        cr_assert (strstr (s_result.out, "Exit codes: 0 "), "%s --help lists exit codes", sections [p]);
        unlink (path);
    }
}

//  --x=y works like --x y in every program.
Test (e2e_cli, equals_form_everywhere)
{
    char frontend [96];
    snprintf (frontend, sizeof frontend, "--broker=%s", s_broker.endpoint);
    char *const publish [] = { (char *) e2e_program ("MANDRILL_PUBLISH"), frontend,
                               "--instance=cattle-eq", "--timeout=2s", NULL };
    s_run_env (&s_result, NULL, 20000, publish);
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    char *const ctl [] = { (char *) e2e_program ("MANDRILL_CTL"), frontend, "--timeout=2s",
                           "deadletters", "--limit=3", NULL };
    s_run_env (&s_result, NULL, 20000, ctl);
    cr_assert_eq (s_result.code, 0, "exit %d: %s", s_result.code, s_result.err);
    char *const worker [] = { (char *) e2e_program ("MANDRILL_WORKER"), "--credit=0", NULL };
    s_run_env (&s_result, NULL, 10000, worker);
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "invalid value '0' for --credit"), "%s", s_result.err);
    char *const broker [] = { (char *) e2e_program ("MANDRILL_BROKER"), "--max-attempts=0", NULL };
    s_run_env (&s_result, NULL, 10000, broker);
    cr_assert_eq (s_result.code, 2);
    cr_assert (strstr (s_result.err, "invalid value '0' for --max-attempts"), "%s", s_result.err);
    cr_assert_eq (s_counter ("published"), 1);
}
