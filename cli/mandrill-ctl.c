/*  mandrill-ctl: the operator's tool for a running mandrill-broker.

    Commands talk to the frontend (STATS, DEADLETTERS, REPLAY, and the
    restart policy's PAUSE, RESUME, GROUPS, INFLIGHT, WORKERS, RELOAD,
    whose tables ctl_policy prints) with one
    DEALER and wait at most --timeout for each answer; `tail` subscribes
    to the events socket and prints each event's JSON on its own line.
    Human output by default, the broker's JSON with --json.

    `keygen` makes a CURVE certificate pair offline (ctl_keygen); with
    --curve-cert and --broker-cert every other command talks CURVE to the
    broker (docs/SECURITY.md).
*/
#include "cli_reply.h"
#include "ctl_keygen.h"
#include "ctl_policy.h"
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_opt.h"
#include "mdl_parse.h"
#include "mdl_uuid.h"
#include "mmp.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <time.h>
#include <unistd.h>

//  Exit codes (also in --help); the first three are every program's.
#define EXIT_OK         MDL_EXIT_OK         //  Done
#define EXIT_NO_ANSWER  MDL_EXIT_FAILURE    //  No (valid) answer within --timeout
#define EXIT_USAGE      MDL_EXIT_USAGE      //  Bad command line, environment or configuration file
#define EXIT_FAILED     4   //  The broker answered ERROR, or some ids were unknown to REPLAY

#define REPLAY_CHUNK    MMP_MAX_IDS

typedef struct {
    const char *broker;         //  Frontend endpoint
    const char *events;         //  Events endpoint
    int64_t timeout_ms;         //  Wait per request
    bool json;                  //  Machine output
    int64_t limit;              //  deadletters --limit (-1 = broker default: all)
    int64_t count;              //  tail --count (-1 = forever)
    bool all;                   //  replay --all
    const char *curve_cert;     //  Own secret certificate (CURVE), or NULL
    const char *broker_cert;    //  The broker's public certificate, or NULL
    const char *dir;            //  keygen --dir, or NULL (the current directory)
    const char *group;          //  pause/resume GROUP, or NULL with --all
    const char *reason;         //  pause --reason, or NULL
} opts_t;

#define S_POLICY_COMMANDS "pause resume groups inflight workers reload"

static const mdl_opt_spec_t s_options [] = {
    { NULL, 0, NULL, "Options", NULL },
    { "broker", 0, "EP", "frontend (default tcp://localhost:5555)", NULL },
    { "events", 0, "EP", "events socket for tail\n(default tcp://localhost:5557)", NULL },
    { "timeout", 0, "DUR", "wait for an answer (default 3s)", NULL },
    { "json", 0, NULL, "print the broker's JSON reply as is (one line)", NULL },
    { "limit", 0, "N", "deadletters, inflight: show at most N", "deadletters inflight" },
    { "all", 0, NULL, "replay: every dead letter; pause, resume: every\ngroup (the kill switch)",
      "replay pause resume" },
    { "reason", 0, "TEXT", "pause: why (shown in groups, STATS and events)", "pause" },
    { "count", 0, "N", "tail: stop after N events", "tail" },
    { "curve-cert", 0, "FILE", "own secret certificate: CURVE to the broker\n"
      "(with --broker-cert)", "stats deadletters replay tail " S_POLICY_COMMANDS },
    { "broker-cert", 0, "FILE", "the broker's public certificate\n(docs/SECURITY.md)",
      "stats deadletters replay tail " S_POLICY_COMMANDS },
    { "dir", 0, "DIR", "keygen: where the files go (default .)", "keygen" },
    { NULL, 0, NULL, NULL, NULL }
};

static const char *s_usage =
    "Usage: mandrill-ctl [OPTIONS] COMMAND [ARGS]\n"
    "\n"
    "Commands:\n"
    "  stats                  the broker's counters\n"
    "  deadletters [--limit N]\n"
    "                         dead-lettered requests, with reason and history\n"
    "  replay ID... | --all   put dead letters back in the queue\n"
    "  tail [EVENT...] [--count N]\n"
    "                         print events as JSON lines (all, or the names given:\n"
    "                         published delivered extended acked nacked expired\n"
    "                         dead_lettered replayed progress worker_joined\n"
    "                         worker_lost waiting coalesced in_doubt group_paused\n"
    "                         group_resumed); says on stderr what it subscribed to\n"
    "Restart policy (docs/POLICY.md; a table, or the reply with --json):\n"
    "  pause GROUP|--all [--reason TEXT]\n"
    "                         no new leases in GROUP (--all: the kill switch); open\n"
    "                         ones finish; survives a broker restart (operators)\n"
    "  resume GROUP|--all     let GROUP go on (also after an error stop); --all\n"
    "                         lifts the kill switch and resumes every group\n"
    "  groups                 each group: match, in flight, cap, waiting, failures,\n"
    "                         window, paused and why\n"
    "  inflight [--limit N]   every open lease: message, target, group, worker,\n"
    "                         age, time left, attempt, steps\n"
    "  workers                each worker: credit, leases held, last seen, peer\n"
    "  reload                 read the broker's --policy file again (operators; a\n"
    "                         bad file is refused with the reason, nothing changes)\n"
    "  keygen NAME [--dir DIR]\n"
    "                         write DIR/NAME.key (public) and DIR/NAME.key_secret\n"
    "                         (mode 0600) in zcert format; never overwrites; works\n"
    "                         offline\n";

static const char *s_epilogue =
    "Options that go with some commands only (--limit, --all, --reason, --count, --dir,\n"
    "--curve-cert, --broker-cert) are refused with another on the command line, and\n"
    "ignored for another when they come from the environment or the file.\n"
    "Exit codes: 0 ok; 1 no answer from the broker within --timeout; 2 bad usage\n"
    "(command line, environment or configuration file; also an unknown event name\n"
    "for tail; a bad keygen NAME); 4 the broker answered ERROR, or replay found\n"
    "unknown ids. keygen: 0 written; 1 not written (a file exists, I/O, no CURVE\n"
    "in libzmq); 2 bad usage.\n";

//  CURVE options from --curve-cert and --broker-cert (none: plain TCP).
//  Returns 0, or -1 after saying why on stderr.
static int
s_curve (zsock_t *sock, const opts_t *opts)
{
    char error [300];
    if (mdl_curve_client_files (sock, opts->curve_cert, opts->broker_cert, error, sizeof error) == 0)
        return 0;
    fprintf (stderr, "mandrill-ctl: %s\n", error);
    return -1;
}

//  Send one request (STATS, DEADLETTERS with limit > 0, or REPLAY of
//  ids) and wait for its reply (matched by req). Returns 0 and fills
//  *reply, EXIT_FAILED for an ERROR reply (printed), EXIT_NO_ANSWER.
static int
s_request (zsock_t *sock, const opts_t *opts, mmp_command_t command, int64_t limit,
           const char *const *ids, size_t id_count, mmp_msg_t *reply)
{
    static uint64_t sequence;
    char prefix [24], req [48];
    snprintf (prefix, sizeof prefix, "ctl-%d", (int) getpid ());
    cli_req_make (req, sizeof req, prefix, ++sequence);
    mmp_buf_t body;
    mmp_buf_init (&body);
    int rc = command == MMP_REPLAY ? mmp_encode_replay (&body, ids, id_count, req)
           : command == MMP_PAUSE || command == MMP_RESUME
           ? mmp_encode_group_command (&body, command, opts->group, opts->reason, req)
           : mmp_encode_request_only (&body, req, limit);
    if (rc == 0)
        rc = mmp_send (sock, NULL, command, mmp_buf_data (&body), mmp_buf_size (&body));
    mmp_buf_free (&body);
    if (rc != 0) {
        fprintf (stderr, "mandrill-ctl: cannot send to %s\n", opts->broker);
        return EXIT_NO_ANSWER;
    }
    int64_t deadline = zclock_mono () + opts->timeout_ms;
    while (true) {
        int64_t left = deadline - zclock_mono ();
        if (left <= 0)
            break;
        zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
        if (zmq_poll (&item, 1, (long) left) <= 0)
            continue;
        mmp_error_t err;
        mmp_msg_init (reply);
        int rc = mmp_recv (sock, false, NULL, MMP_FROM_BROKER, reply, &err);
        if (rc == -2) {
            fprintf (stderr, "mandrill-ctl: malformed reply: %s: %s\n", err.code, err.reason);
            continue;
        }
        if (rc != 0)
            continue;
        //  An ERROR without req is the broker refusing a body it could not
        //  read; this tool has one request outstanding, so it is this one.
        const char *reqs [1] = { req };
        if (cli_reply_match (reply, reqs, 1) == CLI_REPLY_STALE) {
            mmp_msg_reset (reply);      //  A stale answer to an earlier request
            continue;
        }
        if (reply->command == MMP_ERROR) {
            fprintf (stderr, "mandrill-ctl: broker error %s: %s\n",
                     reply->code ? reply->code : "?", reply->reason ? reply->reason : "");
            mmp_msg_reset (reply);
            return EXIT_FAILED;
        }
        return EXIT_OK;
    }
    fprintf (stderr, "mandrill-ctl: no answer from the broker at %s within %" PRId64 " ms "
             "(is it running?)\n", opts->broker, opts->timeout_ms);
    return EXIT_NO_ANSWER;
}

static void
s_print_json (const cJSON *body)
{
    char *text = cJSON_PrintUnformatted (body);
    if (text)
        printf ("%s\n", text);
    free (text);
}

static void
s_format_ms (int64_t ms, char *out, size_t size)
{
    time_t seconds = (time_t) (ms / 1000);
    struct tm tm;
    gmtime_r (&seconds, &tm);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf (out, size, "%s.%03dZ", stamp, (int) (ms % 1000));
}

static int
s_stats (zsock_t *sock, const opts_t *opts)
{
    mmp_msg_t reply;
    int rc = s_request (sock, opts, MMP_STATS, 0, NULL, 0, &reply);
    if (rc != EXIT_OK)
        return rc;
    if (opts->json) {
        cJSON_DeleteItemFromObjectCaseSensitive (reply.body, "req");
        s_print_json (reply.body);
    }
    else {
        //  Known counters first, in a sensible order, then whatever else.
        static const char *order [] = {
            "published", "delivered", "acked", "nacked", "expired", "redelivered",
            "dead_lettered", "in_flight", "ready", "delayed", "workers",
            "oldest_unacked_ms", "uptime_ms", "epoch", "durability", NULL
        };
        for (int i = 0; order [i]; i++) {
            cJSON *item = cJSON_GetObjectItemCaseSensitive (reply.body, order [i]);
            if (cJSON_IsNumber (item))
                printf ("%-20s %.0f\n", order [i], item->valuedouble);
            else
            if (cJSON_IsString (item))
                printf ("%-20s %s\n", order [i], item->valuestring);
        }
        for (cJSON *item = reply.body->child; item; item = item->next) {
            bool known = streq (item->string, "req");
            for (int i = 0; order [i] && !known; i++)
                known = streq (item->string, order [i]);
            if (known)
                continue;
            char *text = cJSON_PrintUnformatted (item);
            printf ("%-20s %s\n", item->string, text ? text : "?");
            free (text);
        }
    }
    mmp_msg_reset (&reply);
    return EXIT_OK;
}

static void
s_print_dead_letter (const cJSON *letter)
{
    const cJSON *message = cJSON_GetObjectItemCaseSensitive (letter, "message");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive (message, "message_id");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive (message, "instance_name");
    const cJSON *reason = cJSON_GetObjectItemCaseSensitive (letter, "reason");
    const cJSON *attempts = cJSON_GetObjectItemCaseSensitive (letter, "attempts");
    const cJSON *dead_at = cJSON_GetObjectItemCaseSensitive (letter, "dead_at_ms");
    char when [48] = "?";
    if (cJSON_IsNumber (dead_at))
        s_format_ms ((int64_t) dead_at->valuedouble, when, sizeof when);
    printf ("%s  %s  attempts %d  dead at %s  reason: %s\n",
            cJSON_IsString (id) ? id->valuestring : "?",
            cJSON_IsString (name) ? name->valuestring : "?",
            cJSON_IsNumber (attempts) ? attempts->valueint : -1, when,
            cJSON_IsString (reason) ? reason->valuestring : "?");
    const cJSON *history = cJSON_GetObjectItemCaseSensitive (letter, "history");
    const cJSON *step;
    cJSON_ArrayForEach (step, history) {
        const cJSON *attempt = cJSON_GetObjectItemCaseSensitive (step, "attempt");
        const cJSON *outcome = cJSON_GetObjectItemCaseSensitive (step, "outcome");
        const cJSON *worker = cJSON_GetObjectItemCaseSensitive (step, "worker");
        const cJSON *why = cJSON_GetObjectItemCaseSensitive (step, "reason");
        const cJSON *at = cJSON_GetObjectItemCaseSensitive (step, "at_ms");
        char stamp [48] = "?";
        if (cJSON_IsNumber (at))
            s_format_ms ((int64_t) at->valuedouble, stamp, sizeof stamp);
        printf ("    attempt %d  %-11s %s  worker %s%s%s\n",
                cJSON_IsNumber (attempt) ? attempt->valueint : -1,
                cJSON_IsString (outcome) ? outcome->valuestring : "?", stamp,
                cJSON_IsString (worker) ? worker->valuestring : "?",
                cJSON_IsString (why) ? "  " : "", cJSON_IsString (why) ? why->valuestring : "");
    }
}

//  Fetch dead letters; on success *reply holds them.
static int
s_fetch_dead_letters (zsock_t *sock, const opts_t *opts, int64_t limit, mmp_msg_t *reply)
{
    return s_request (sock, opts, MMP_DEADLETTERS, limit, NULL, 0, reply);
}

static int
s_deadletters (zsock_t *sock, const opts_t *opts)
{
    mmp_msg_t reply;
    int rc = s_fetch_dead_letters (sock, opts, opts->limit, &reply);
    if (rc != EXIT_OK)
        return rc;
    cJSON *letters = cJSON_GetObjectItemCaseSensitive (reply.body, "dead_letters");
    cJSON *total = cJSON_GetObjectItemCaseSensitive (reply.body, "total");
    if (opts->json) {
        cJSON_DeleteItemFromObjectCaseSensitive (reply.body, "req");
        s_print_json (reply.body);
    }
    else {
        const cJSON *letter;
        cJSON_ArrayForEach (letter, letters)
            s_print_dead_letter (letter);
        printf ("%d shown, %.0f dead letters in total\n", cJSON_GetArraySize (letters),
                cJSON_IsNumber (total) ? total->valuedouble : -1.0);
    }
    mmp_msg_reset (&reply);
    return EXIT_OK;
}

static int
s_replay (zsock_t *sock, const opts_t *opts, int argc, char **argv)
{
    zlist_t *ids = zlist_new ();
    zlist_autofree (ids);
    int rc = EXIT_OK;
    if (opts->all) {
        mmp_msg_t reply;
        rc = s_fetch_dead_letters (sock, opts, 100000, &reply);
        if (rc != EXIT_OK) {
            zlist_destroy (&ids);
            return rc;
        }
        const cJSON *letter;
        cJSON_ArrayForEach (letter, cJSON_GetObjectItemCaseSensitive (reply.body, "dead_letters")) {
            const cJSON *id = cJSON_GetObjectItemCaseSensitive (
                cJSON_GetObjectItemCaseSensitive (letter, "message"), "message_id");
            if (cJSON_IsString (id))
                zlist_append (ids, id->valuestring);
        }
        mmp_msg_reset (&reply);
    }
    else
        for (int i = 0; i < argc; i++) {
            if (!mdl_uuid_valid (argv [i], strlen (argv [i]))) {
                fprintf (stderr, "mandrill-ctl: not a message id: %s\n", argv [i]);
                zlist_destroy (&ids);
                return EXIT_USAGE;
            }
            zlist_append (ids, argv [i]);
        }
    size_t replayed = 0, unknown = 0;
    while (zlist_size (ids) > 0 && rc == EXIT_OK) {
        static char *chunk [REPLAY_CHUNK];
        size_t count = 0;
        while (count < REPLAY_CHUNK && zlist_size (ids) > 0)
            chunk [count++] = (char *) zlist_pop (ids);
        mmp_msg_t reply;
        rc = s_request (sock, opts, MMP_REPLAY, 0, (const char *const *) chunk, count, &reply);
        for (size_t i = 0; i < count; i++)
            free (chunk [i]);
        if (rc != EXIT_OK)
            break;
        if (opts->json) {
            cJSON_DeleteItemFromObjectCaseSensitive (reply.body, "req");
            s_print_json (reply.body);
        }
        else {
            for (size_t i = 0; i < reply.message_id_count; i++)
                printf ("replayed %s\n", reply.message_ids [i]);
            for (size_t i = 0; i < reply.other_id_count; i++)
                printf ("unknown  %s (not a dead letter)\n", reply.other_ids [i]);
        }
        replayed += reply.message_id_count;
        unknown += reply.other_id_count;
        mmp_msg_reset (&reply);
    }
    zlist_destroy (&ids);
    if (rc == EXIT_OK && !opts->json)
        printf ("%zu replayed, %zu unknown\n", replayed, unknown);
    return rc == EXIT_OK && unknown ? EXIT_FAILED : rc;
}

//  pause, resume, groups, inflight, workers, reload: one request, a
//  table (ctl_policy) or the JSON.
static int
s_policy (zsock_t *sock, const opts_t *opts, mmp_command_t command)
{
    mmp_msg_t reply;
    int rc = s_request (sock, opts, command, command == MMP_INFLIGHT ? opts->limit : 0,
                        NULL, 0, &reply);
    if (rc != EXIT_OK)
        return rc;
    cJSON_DeleteItemFromObjectCaseSensitive (reply.body, "req");
    if (opts->json)
        s_print_json (reply.body);
    else
        ctl_policy_print (stdout, mmp_command_name (command), reply.body);
    mmp_msg_reset (&reply);
    return EXIT_OK;
}

//  The names the broker publishes events under (PROTOCOL.md section 5).
static const char *s_events [] = {
    "published", "delivered", "extended", "acked", "nacked", "expired",
    "dead_lettered", "replayed", "progress", "worker_joined", "worker_lost",
    "waiting", "coalesced", "in_doubt", "group_paused", "group_resumed", NULL
};

static bool
s_is_event (const char *name)
{
    for (int i = 0; s_events [i]; i++)
        if (streq (name, s_events [i]))
            return true;
    return false;
}

static int
s_tail (const opts_t *opts, int argc, char **argv)
{
    //  A SUB subscription is a prefix and never fails, so a typo would
    //  wait forever in silence: only exact event names are accepted.
    for (int i = 0; i < argc; i++)
        if (!s_is_event (argv [i])) {
            fprintf (stderr, "mandrill-ctl: tail: unknown event '%s' (events:", argv [i]);
            for (int e = 0; s_events [e]; e++)
                fprintf (stderr, " %s", s_events [e]);
            fprintf (stderr, ")\n");
            return EXIT_USAGE;
        }
    zsock_t *sub = zsock_new (ZMQ_SUB);
    if (!sub || s_curve (sub, opts) != 0 || zsock_connect (sub, "%s", opts->events) != 0) {
        fprintf (stderr, "mandrill-ctl: cannot connect to %s\n", opts->events);
        zsock_destroy (&sub);
        return EXIT_NO_ANSWER;
    }
    if (argc == 0)
        zsock_set_subscribe (sub, "");
    for (int i = 0; i < argc; i++)
        zsock_set_subscribe (sub, argv [i]);
    //  Said once, so a tail that prints nothing is not a mystery: the
    //  events may simply not be happening, or the endpoint may be wrong
    //  (a SUB connects silently even when nothing listens).
    fprintf (stderr, "mandrill-ctl: tailing ");
    if (argc == 0)
        fprintf (stderr, "all events");
    for (int i = 0; i < argc; i++)
        fprintf (stderr, "%s%s", i ? ", " : "", argv [i]);
    fprintf (stderr, " from %s", opts->events);
    if (opts->count > 0)
        fprintf (stderr, " (until %" PRId64 " seen)", opts->count);
    fprintf (stderr, "\n");
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGHUP);
    sigprocmask (SIG_BLOCK, &signals, NULL);
    int signal_fd = signalfd (-1, &signals, SFD_CLOEXEC);
    int64_t seen = 0;
    while (opts->count < 0 || seen < opts->count) {
        zmq_pollitem_t items [2] = {
            { zsock_resolve (sub), 0, ZMQ_POLLIN, 0 },
            { NULL, signal_fd, ZMQ_POLLIN, 0 }
        };
        if (zmq_poll (items, signal_fd >= 0 ? 2 : 1, -1) < 0 && errno != EINTR)
            break;
        if (items [1].revents & ZMQ_POLLIN)
            break;
        if (!(items [0].revents & ZMQ_POLLIN))
            continue;
        zmsg_t *msg = zmsg_recv (sub);
        if (!msg)
            break;
        zframe_t *name = zmsg_first (msg);
        zframe_t *body = zmsg_next (msg);
        if (zmsg_size (msg) == 2 && body) {
            //  %.*s: the frame is not null-terminated.
            if (opts->json)
                printf ("%.*s\n", (int) zframe_size (body), (char *) zframe_data (body));
            else
                printf ("%-14.*s %.*s\n", (int) zframe_size (name), (char *) zframe_data (name),
                        (int) zframe_size (body), (char *) zframe_data (body));
            fflush (stdout);
            seen++;
        }
        else
            fprintf (stderr, "mandrill-ctl: ignored an event with %zu frames\n", zmsg_size (msg));
        zmsg_destroy (&msg);
    }
    if (signal_fd >= 0)
        close (signal_fd);
    zsock_destroy (&sub);
    return EXIT_OK;
}

//  The request of a restart-policy command, or MMP_COMMAND_COUNT.
static mmp_command_t
s_policy_command (const char *command)
{
    static const struct { const char *name; mmp_command_t command; } table [] = {
        { "pause", MMP_PAUSE }, { "resume", MMP_RESUME }, { "groups", MMP_GROUPS },
        { "inflight", MMP_INFLIGHT }, { "workers", MMP_WORKERS }, { "reload", MMP_RELOAD }
    };
    for (size_t i = 0; i < sizeof table / sizeof table [0]; i++)
        if (streq (command, table [i].name))
            return table [i].command;
    return MMP_COMMAND_COUNT;
}

//  Everything main does with opt, which main owns, so that one place
//  frees it on every way out.
static int
s_main (mdl_opt_t *opt, int argc, char *argv [])
{
    opts_t opts = {
        .broker = "tcp://localhost:5555", .events = "tcp://localhost:5557",
        .timeout_ms = 3000, .limit = -1, .count = -1
    };
    int parsed = mdl_opt_parse (opt, argc, argv);
    if (parsed != 0)
        return parsed > 0 ? EXIT_OK : EXIT_USAGE;
    if (mdl_opt_string (opt, "broker", &opts.broker)
    ||  mdl_opt_string (opt, "events", &opts.events)
    ||  mdl_opt_duration (opt, "timeout", 1, INT64_MAX, &opts.timeout_ms, "a duration such as 5s")
    ||  mdl_opt_int (opt, "limit", 1, 100000, &opts.limit, "a whole number from 1 to 100000")
    ||  mdl_opt_int (opt, "count", 1, INT64_MAX, &opts.count, "a whole number from 1 up")) {
        return EXIT_USAGE;
    }
    opts.json = mdl_opt_flag (opt, "json");
    opts.all = mdl_opt_flag (opt, "all");
    opts.curve_cert = mdl_opt_value (opt, "curve-cert");
    opts.broker_cert = mdl_opt_value (opt, "broker-cert");
    opts.dir = mdl_opt_value (opt, "dir");
    opts.reason = mdl_opt_value (opt, "reason");
    const char *command = mdl_opt_arg (opt, 0);
    int nargs = mdl_opt_argc (opt) > 0 ? (int) mdl_opt_argc (opt) - 1 : 0;
    char **args = calloc ((size_t) nargs + 1, sizeof *args);
    if (!args) {
        fprintf (stderr, "mandrill-ctl: out of memory\n");
        return EXIT_FAILURE;
    }
    for (int i = 0; i < nargs; i++)
        args [i] = (char *) mdl_opt_arg (opt, (size_t) i + 1);
    if (!command) {
        mdl_opt_fail (opt, "no command given (stats, deadletters, replay, tail, pause, resume, "
                      "groups, inflight, workers, reload, keygen)");
        free (args);
        return EXIT_USAGE;
    }
    zsys_handler_set (NULL);
    int rc;
    if (streq (command, "keygen"))
        rc = ctl_keygen (opts.dir, nargs, args);
    else
    if (streq (command, "tail"))
        rc = s_tail (&opts, nargs, args);
    else
    if (streq (command, "stats") || streq (command, "deadletters") || streq (command, "replay")
    ||  s_policy_command (command) != MMP_COMMAND_COUNT) {
        mmp_command_t policy = s_policy_command (command);
        bool by_group = policy == MMP_PAUSE || policy == MMP_RESUME;
        if (by_group && nargs == 1 && !opts.all)
            opts.group = args [0];
        if ((streq (command, "replay") && (nargs == 0) == !opts.all)
        ||  (by_group && (nargs == 0) == !opts.all)
        ||  (by_group && nargs > 1)
        ||  (by_group && nargs == 1 && !*args [0])
        ||  (!streq (command, "replay") && !by_group && nargs > 0)) {
            mdl_opt_fail (opt, "%s: wrong arguments", command);
            free (args);
            return EXIT_USAGE;
        }
        zsock_t *sock = zsock_new (ZMQ_DEALER);
        if (!sock || s_curve (sock, &opts) != 0 || zsock_connect (sock, "%s", opts.broker) != 0) {
            fprintf (stderr, "mandrill-ctl: cannot connect to %s\n", opts.broker);
            zsock_destroy (&sock);
            free (args);
            return EXIT_USAGE;
        }
        zsock_set_linger (sock, 0);
        zsock_set_sndtimeo (sock, (int) opts.timeout_ms);
        if (policy != MMP_COMMAND_COUNT)
            rc = s_policy (sock, &opts, policy);
        else
        if (streq (command, "stats"))
            rc = s_stats (sock, &opts);
        else
        if (streq (command, "deadletters"))
            rc = s_deadletters (sock, &opts);
        else
            rc = s_replay (sock, &opts, nargs, args);
        zsock_destroy (&sock);
    }
    else {
        mdl_opt_fail (opt, "unknown command %s", command);
        rc = EXIT_USAGE;
    }
    free (args);
    return rc;
}

int
main (int argc, char *argv [])
{
    //  Kept until exit: the configuration points into its values
    mdl_opt_t *opt = mdl_opt_new ("mandrill-ctl", s_options, s_usage, s_epilogue);
    if (!opt)
        return EXIT_NO_ANSWER;
    int rc = s_main (opt, argc, argv);
    mdl_opt_destroy (&opt);
    return rc;
}
