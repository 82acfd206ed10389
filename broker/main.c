/*  mandrill-broker: reads its options (mdl_opt: flags, environment,
    configuration file), starts the broker actor, waits for a signal,
    stops the actor. Everything else lives in brk_server.

    Exit codes: 0 clean stop, 1 cannot bind or start, 2 bad usage
    (command line, environment, configuration file), 3 journal corrupt
    (see --salvage), 4 data directory in use.
*/
#include <czmq.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "brk_server.h"
#include "mdl_http.h"
#include "mdl_log.h"
#include "mdl_metrics.h"
#include "mdl_opt.h"

#define EXIT_LOCKED 4

static const mdl_opt_spec_t s_options [] = {
    { NULL, 0, NULL, "Sockets", NULL },
    { "frontend", 0, "ENDPOINT", "publishers and control clients\n(default tcp://*:5555, tcp://127.0.0.1:5555\n"
      "without --curve-cert or --insecure)", NULL },
    { "backend", 0, "ENDPOINT", "workers (default tcp://*:5556, the same rule)", NULL },
    { "events", 0, "ENDPOINT", "lifecycle events, PUB (default tcp://*:5557,\nthe same rule)", NULL },
    { NULL, 0, NULL, "Leases and retries (durations take a unit: 250ms, 10s, 2m)", NULL },
    { "ack-deadline", 0, "DUR", "lease length of a delivery (default 10s)", NULL },
    { "max-attempts", 0, "N", "deliveries before a message is dead-lettered\n(default 5)", NULL },
    { "backoff-base", 0, "DUR", "redelivery delay after a first failure\n(default 500ms)", NULL },
    { "backoff-max", 0, "DUR", "cap of the exponential backoff (default 30s)", NULL },
    { "heartbeat", 0, "DUR", "heartbeat interval; a worker silent for 3 is\nlost (default 1s)", NULL },
    { "restart-timeout", 0, "DUR", "a started restart's own time limit without a\npolicy: a request whose worker died mid-restart\n(in doubt) is not delivered again before it\npassed (default 5m; see docs/POLICY.md)", NULL },
    { "dedup-window", 0, "N", "acked ids remembered to refuse re-publishes\n(default 100000)", NULL },
    { NULL, 0, NULL, "Limits (PUBLISH beyond them: ERROR unavailable)", NULL },
    { "max-pending", 0, "N", "requests held, ready, delayed or leased\n(default 1000000; 0: no limit)", NULL },
    { "max-memory", 0, "BYTES", "bytes of requests held, dead letters included;\n"
      "K, M, G suffixes (default 1G; 0: no limit)", NULL },
    { NULL, 0, NULL, "Durability", NULL },
    { "data-dir", 0, "DIR", "journal directory (default ./mandrill-data)", NULL },
    { "durability", 0, "MODE", "when a PUBACK is sent (default batch):\n"
      "  batch   after the fsync that covers it (group\n"
      "          commit: each fsync starts as soon as the\n"
      "          last one ended, with all committed since)\n"
      "  sync    the same promise; the journal writer is\n"
      "          woken at every commit, not once a batch\n"
      "  none    at once; journaled but never fsynced\n"
      "  memory  at once; no journal, a restart loses\n"
      "          everything", NULL },
    { "fsync-interval", 0, "DUR", "longest a journaled change waits for an fsync\n"
      "when nothing commits it; not a rate limit\n(none: the write period; default 10ms)", NULL },
    { "salvage", 0, NULL, "start even if the journal is corrupt before its\n"
      "end, keeping what can be read (what is skipped\nis logged)", NULL },
    { NULL, 0, NULL, "Restart policy (docs/POLICY.md)", NULL },
    { "group", 0, "NAME:GLOB:MAX", "a group of hosts (glob on the hostname) with its\n"
      "most concurrent restarts (MAX, or N%:SIZE);\nrepeatable, first match wins (in the environment\n"
      "or the file: specs separated by spaces)", NULL },
    { "policy", 0, "FILE", "the full policy file (groups, ramps, error stops,\n"
      "windows, intervals); SIGHUP or mandrill-ctl\nreload reads it again; not with --group", NULL },
    { NULL, 0, NULL, "Security (docs/SECURITY.md)", NULL },
    { "curve-cert", 0, "FILE", "the broker's secret certificate (mandrill-ctl\n"
      "keygen): CURVE on all three sockets, only known\nkeys served", NULL },
    { "publishers", 0, "DIR", "public certificates that may PUBLISH", NULL },
    { "workers", 0, "DIR", "public certificates that may work (the backend)", NULL },
    { "operators", 0, "DIR", "public certificates that may use every frontend\ncommand and the event feed", NULL },
    { "observers", 0, "DIR", "public certificates that may ask STATS and read\nevents", NULL },
    { "insecure", 0, NULL, "without --curve-cert, bind non-loopback endpoints\n"
      "anyway; without either, the broker binds only\n127.0.0.1", NULL },
    { NULL, 0, NULL, "Other", NULL },
    { "metrics", 0, "HOST:PORT", "serve Prometheus metrics at\nhttp://HOST:PORT/metrics (default: off; HOST is\nan IPv4 address, localhost, * or [IPv6]; port 0\npicks a free one, which the log names)", NULL },
    { "verbose", 'v', NULL, "log every command at debug level", NULL },
    { "log-level", 0, "LEVEL", "error, warn, info (default), debug, trace", NULL },
    { NULL, 0, NULL, NULL, NULL }
};

static const char *s_usage =
    "Usage: mandrill-broker [OPTIONS]\n"
    "\n"
    "Holds restart requests and leases them to workers (see proto/PROTOCOL.md).\n";

static const char *s_epilogue =
    "SIGTERM, SIGINT or SIGQUIT stop the broker cleanly (exit 0): the journal is\n"
    "flushed and fsynced first. SIGHUP reloads the --policy file (a bad file is\n"
    "refused and logged; the old policy stays).\n"
    "Exit codes: 0 clean stop; 1 cannot bind or start; 2 bad usage (command line,\n"
    "environment or configuration file); 3 journal corrupt (see --salvage); 4 data\n"
    "directory used by another broker.\n";

//  --max-memory: a byte count with an optional K, M or G (powers of 1024).
//  Returns 0, or -1 (printed) for anything else.
static int
s_opt_bytes (mdl_opt_t *opt, const char *name, int64_t *value)
{
    const char *text = mdl_opt_value (opt, name);
    if (!text)
        return 0;
    const char *expected = "a byte count, e.g. 512M or 2G (K, M, G: powers of 1024)";
    char *end;
    errno = 0;
    unsigned long long number = strtoull (text, &end, 10);
    if (end == text || errno || *text == '-' || *text == '+')
        return mdl_opt_bad (opt, name, expected);
    int shift = 0;
    if (*end == 'K' || *end == 'k')
        shift = 10;
    else
    if (*end == 'M' || *end == 'm')
        shift = 20;
    else
    if (*end == 'G' || *end == 'g')
        shift = 30;
    if (shift)
        end++;
    if (*end || number > ((unsigned long long) INT64_MAX >> shift))
        return mdl_opt_bad (opt, name, expected);
    *value = (int64_t) (number << shift);
    return 0;
}

//  Turn the options into the server's configuration. Returns 0 or -1 (the
//  error is printed).
static int
s_configure (mdl_opt_t *opt, brk_server_config_t *config, const char *endpoints [3],
             const char **data_dir, bool *memory, mdl_log_level_t *level)
{
    static const char *sockets [3] = { "frontend", "backend", "events" };
    for (int i = 0; i < 3; i++)
        if (mdl_opt_string (opt, sockets [i], &endpoints [i]))
            return -1;
    const char *day = "a duration with a unit, e.g. 500ms or 10s (at most 24h)";
    if (mdl_opt_duration (opt, "ack-deadline", 1, 86400000, &config->queue.ack_deadline_ms,
                          "a duration from 1ms to 24h, e.g. 10s")
    ||  mdl_opt_duration (opt, "restart-timeout", 1, 86400000, &config->queue.restart_timeout_ms, day)
    ||  mdl_opt_duration (opt, "backoff-base", 0, 86400000, &config->queue.backoff_base_ms, day)
    ||  mdl_opt_duration (opt, "backoff-max", 0, 86400000, &config->queue.backoff_max_ms, day)
    ||  mdl_opt_duration (opt, "heartbeat", 10, 86400000, &config->queue.heartbeat_ms,
                          "a duration from 10ms to 24h")
    ||  mdl_opt_int (opt, "max-attempts", 1, 1000, &config->queue.max_attempts,
                     "a whole number from 1 to 1000")
    ||  mdl_opt_int (opt, "dedup-window", 0, 100000000, &config->queue.dedup_window,
                     "a whole number from 0 to 100000000")
    ||  mdl_opt_int (opt, "max-pending", 0, INT64_C (1000000000000), &config->max_pending,
                     "a whole number, 0 for no limit")
    ||  s_opt_bytes (opt, "max-memory", &config->max_memory)
    ||  mdl_opt_string (opt, "data-dir", data_dir))
        return -1;
    static const struct { const char *name; brk_role_t role; } roles [] = {
        { "publishers", BRK_ROLE_PUBLISHER }, { "workers", BRK_ROLE_WORKER },
        { "operators", BRK_ROLE_OPERATOR }, { "observers", BRK_ROLE_OBSERVER }
    };
    for (size_t i = 0; i < sizeof roles / sizeof roles [0]; i++) {
        const char *dir = mdl_opt_value (opt, roles [i].name);
        if (dir && !*dir)
            return mdl_opt_bad (opt, roles [i].name, "a directory of public certificates");
        config->role_dirs [roles [i].role] = dir;
    }
    config->curve_cert = mdl_opt_value (opt, "curve-cert");
    if (config->curve_cert && !*config->curve_cert)
        return mdl_opt_bad (opt, "curve-cert", "a secret certificate file (mandrill-ctl keygen)");
    config->insecure = mdl_opt_flag (opt, "insecure");
    //  Secure by default: without CURVE, the default endpoints are loopback.
    //  An endpoint the operator named is kept, and BIND refuses it unless it
    //  is local or --insecure is given (brk_server).
    static const char *loopback [3] = { "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556",
                                        "tcp://127.0.0.1:5557" };
    for (int i = 0; i < 3 && !config->curve_cert && !config->insecure; i++)
        if (mdl_opt_source (opt, sockets [i]) == MDL_OPT_UNSET)
            endpoints [i] = loopback [i];
    int64_t interval = config->journal.fsync_interval_ms;
    if (mdl_opt_duration (opt, "fsync-interval", 1, 10000, &interval, "a duration from 1ms to 10s"))
        return -1;
    config->journal.fsync_interval_ms = (int) interval;
    const char *durability = mdl_opt_value (opt, "durability");
    if (durability) {
        *memory = streq (durability, "memory");
        if (!*memory && brk_journal_parse_mode (durability, &config->journal.mode) != 0)
            return mdl_opt_bad (opt, "durability", "batch, sync, none or memory");
    }
    config->journal.salvage = mdl_opt_flag (opt, "salvage");
    if (mdl_opt_flag (opt, "verbose")) {
        config->verbose = true;
        *level = MDL_LOG_DEBUG;
    }
    const char *text = mdl_opt_value (opt, "log-level");
    if (text && mdl_log_parse_level (text, level) != 0)
        return mdl_opt_bad (opt, "log-level", "error, warn, info, debug or trace");
    if (config->queue.backoff_max_ms < config->queue.backoff_base_ms)
        return mdl_opt_bad (opt, "backoff-max", "a cap at least as large as --backoff-base");
    return 0;
}

//  --metrics must parse before anything starts: a usage error, not a
//  start-up failure. Returns 0 or -1 (printed).
static int
s_check_metrics (mdl_opt_t *opt, const char **metrics)
{
    *metrics = mdl_opt_value (opt, "metrics");
    if (!*metrics)
        return 0;
    mdl_http_address_t address;
    char error [300];
    if (mdl_http_parse_address (*metrics, &address, error, sizeof error) == 0)
        return 0;
    mdl_opt_source_t source = mdl_opt_source (opt, "metrics");
    return mdl_opt_fail (opt, "invalid %s: %s", source == MDL_OPT_ENV ? "MANDRILL_BROKER_METRICS"
                         : source == MDL_OPT_FILE ? "metrics (configuration file)" : "--metrics",
                         error);
}

//  --group is repeatable; mdl_opt keeps one value per option, so the
//  command line's occurrences are collected here (--group SPEC and
//  --group=SPEC, up to "--"); from the environment or the file, one value
//  of specs separated by white space. *specs points into argv or into
//  *text (both live until exit).
#define S_MAX_GROUP_SPECS 4096
static int
s_group_specs (mdl_opt_t *opt, int argc, char *argv [], const char **specs, size_t *count,
               char **text)
{
    *count = 0;
    for (int i = 1; i < argc && strcmp (argv [i], "--") != 0; i++) {
        const char *spec = NULL;
        if (strcmp (argv [i], "--group") == 0 && i + 1 < argc)
            spec = argv [++i];
        else
        if (strncmp (argv [i], "--group=", 8) == 0)
            spec = argv [i] + 8;
        if (spec && *count == S_MAX_GROUP_SPECS)
            return mdl_opt_fail (opt, "more than %d --group specs: use --policy FILE", S_MAX_GROUP_SPECS);
        if (spec)
            specs [(*count)++] = spec;
    }
    const char *value = mdl_opt_value (opt, "group");
    if (*count || !value)
        return 0;
    //  The environment, the file, or an abbreviated --gr: split on spaces
    *text = strdup (value);
    if (!*text)
        return mdl_opt_fail (opt, "out of memory");
    char *save = NULL;
    for (char *word = strtok_r (*text, " \t\n", &save); word; word = strtok_r (NULL, " \t\n", &save)) {
        if (*count == S_MAX_GROUP_SPECS)
            return mdl_opt_fail (opt, "more than %d group specs: use --policy FILE", S_MAX_GROUP_SPECS);
        specs [(*count)++] = word;
    }
    return 0;
}

//  Check the policy flags by building a scratch policy (the actor builds
//  its own from the same specs): a bad spec or file is a usage error,
//  exit 2, naming it. Returns 0 or -1 (printed).
static int
s_check_policy (mdl_opt_t *opt, brk_server_config_t *config)
{
    if (config->policy_file && config->group_spec_count)
        return mdl_opt_fail (opt, "give --group or --policy, not both (put the groups in the file)");
    if (!config->policy_file && !config->group_spec_count)
        return 0;
    brk_policy_t *policy = brk_policy_new (mdl_clock_system (), mdl_clock_system ());
    if (!policy)
        return mdl_opt_fail (opt, "out of memory");
    char err [512];
    int rc = 0;
    for (size_t i = 0; rc == 0 && i < config->group_spec_count; i++)
        if (brk_policy_add_spec (policy, config->group_specs [i], err, sizeof err) != 0)
            rc = mdl_opt_fail (opt, "%s", err);
    if (rc == 0 && config->policy_file
    &&  brk_policy_load (policy, config->policy_file, err, sizeof err) != 0)
        rc = mdl_opt_fail (opt, "--policy: %s", err);
    brk_policy_destroy (&policy);
    return rc;
}

//  Everything main does with opt, which main owns, so that one place
//  frees it on every way out.
static int
s_main (mdl_opt_t *opt, int argc, char *argv [])
{
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    const char *endpoints [3] = { "tcp://*:5555", "tcp://*:5556", "tcp://*:5557" };
    static const char *names [3] = { "frontend", "backend", "events" };
    mdl_log_level_t level = MDL_LOG_INFO;
    const char *data_dir = "./mandrill-data";
    bool memory = false;

    int rc = mdl_opt_parse (opt, argc, argv);
    if (rc == 0 && mdl_opt_argc (opt) > 0)
        rc = mdl_opt_fail (opt, "unexpected argument '%s'", mdl_opt_arg (opt, 0));
    if (rc == 0)
        rc = s_configure (opt, &config, endpoints, &data_dir, &memory, &level);
    const char *metrics_address = NULL;
    if (rc == 0)
        rc = s_check_metrics (opt, &metrics_address);
    static const char *specs [S_MAX_GROUP_SPECS];
    static char *spec_text = NULL;      //  Kept until exit: specs point into it
    size_t spec_count = 0;
    if (rc == 0)
        rc = s_group_specs (opt, argc, argv, specs, &spec_count, &spec_text);
    if (rc == 0) {
        config.policy_file = mdl_opt_value (opt, "policy");
        if (config.policy_file && !*config.policy_file)
            rc = mdl_opt_bad (opt, "policy", "a policy file (docs/POLICY.md)");
        config.group_specs = specs;
        config.group_spec_count = spec_count;
    }
    if (rc == 0)
        rc = s_check_policy (opt, &config);
    if (rc != 0) {
        free (spec_text);
        return rc > 0 ? MDL_EXIT_OK : MDL_EXIT_USAGE;
    }

    mdl_log_set_level (level);
    mdl_log_set_name ("broker");

    //  Signals are ours: CZMQ's handler would make loops quit mid-flight.
    //  Block them in every thread; this one waits for them.
    zsys_handler_set (NULL);
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGHUP);
    sigaddset (&signals, SIGQUIT);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);

    config.data_dir = memory ? NULL : data_dir;
    //  The journal numbers runs; without one, the epoch of delivery ids is
    //  the time in seconds since 2026, so a broker restarted later never
    //  hands out an id it used before.
    config.queue.epoch = (zclock_time () / 1000 - 1767225600) & 0x1FFFFF;
    if (config.queue.epoch < 1)
        config.queue.epoch = 1;

    //  The registry always exists (counting is nearly free); only
    //  --metrics serves it. It outlives the actor, which registers into it.
    mdl_metrics_t *metrics = mdl_metrics_new ();
    if (!metrics) {
        mdl_error ("cannot start the broker: out of memory");
        return MDL_EXIT_FAILURE;
    }
    config.metrics = metrics;
    zactor_t *broker = zactor_new (brk_server, &config);
    if (!broker) {
        mdl_error ("cannot start the broker");
        mdl_metrics_destroy (&metrics);
        return MDL_EXIT_FAILURE;
    }
    mdl_http_t *http = NULL;
    zstr_send (broker, "STATUS");
    int status = BRK_SERVER_FAILED;
    if (zsock_recv (broker, "i", &status) != 0 || status != BRK_SERVER_OK) {
        rc = status == BRK_SERVER_CORRUPT ? MDL_EXIT_DATA
           : status == BRK_SERVER_LOCKED ? EXIT_LOCKED : MDL_EXIT_FAILURE;
        goto stop;
    }
    rc = MDL_EXIT_FAILURE;
    for (int i = 0; i < 3; i++) {
        zstr_sendx (broker, "BIND", names [i], endpoints [i], NULL);
        int port = -1;
        if (zsock_recv (broker, "i", &port) != 0 || port == -1) {
            mdl_error ("cannot bind the %s socket to %s", names [i], endpoints [i]);
            goto stop;
        }
    }
    //  After the sockets, as a bind failure; its thread blocks every signal
    if (metrics_address && !(http = mdl_http_new (metrics_address, metrics))) {
        mdl_error ("cannot serve metrics on %s: %s", metrics_address, strerror (errno));
        goto stop;
    }
    mdl_info ("mandrill-broker %s ready: ack deadline %" PRId64 " ms, max attempts %" PRId64
              ", heartbeat %" PRId64 " ms, durability %s%s%s",
              MANDRILL_VERSION, config.queue.ack_deadline_ms, config.queue.max_attempts,
              config.queue.heartbeat_ms, memory ? "memory" : brk_journal_mode_name (config.journal.mode),
              memory ? "" : " in ", memory ? "" : data_dir);

    int signal_number = 0;
    while (true) {
        if (sigwait (&signals, &signal_number) != 0)
            continue;
        if (signal_number != SIGHUP)
            break;
        //  The actor logs the outcome and why
        zstr_send (broker, "RELOAD");
        int reloaded = -1;
        char *text = NULL;
        if (zsock_recv (broker, "is", &reloaded, &text) == 0)
            mdl_info ("SIGHUP: %s", text ? text : "");
        zstr_free (&text);
    }
    mdl_info ("received %s, stopping", strsignal (signal_number));
    rc = MDL_EXIT_OK;
stop:
    mdl_http_destroy (&http);
    zactor_destroy (&broker);
    mdl_metrics_destroy (&metrics);
    free (spec_text);
    if (rc == MDL_EXIT_OK)
        mdl_info ("stopped");
    return rc;
}

int
main (int argc, char *argv [])
{
    //  Kept until exit: the configuration points into its values
    mdl_opt_t *opt = mdl_opt_new ("mandrill-broker", s_options, s_usage, s_epilogue);
    if (!opt)
        return MDL_EXIT_FAILURE;
    int rc = s_main (opt, argc, argv);
    mdl_opt_destroy (&opt);
    return rc;
}
