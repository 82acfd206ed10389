/*  mandrill-worker: parses the command line and runs wrk_worker.
    Exit codes: 0 clean shutdown, 1 could not start (database, sockets),
    2 bad command line.
*/
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_util.h"
#include "wrk_db.h"
#include "wrk_exec.h"
#include "wrk_worker.h"

#define EXIT_USAGE 2

static void
s_usage (FILE *out)
{
    fprintf (out,
"Usage: mandrill-worker [OPTIONS]\n"
"\n"
"Leases restart requests from a Mandrill broker. For each one it saves the\n"
"request to a database and restarts the host at the same time, extends the\n"
"lease while either runs, and acks when both are done.\n"
"\n"
"Options (durations take a unit: 250ms, 2s, 1.5m, 1h):\n"
"  --broker URL           broker backend endpoint (default tcp://localhost:5556)\n"
"  --credit N             most messages in flight, 1..1000000 (default 100)\n"
"  --name NAME            worker name in the broker, the database and the log\n"
"                         (default HOSTNAME-PID)\n"
"  --extend-every DUR     extend leases this often while work runs (default 2s;\n"
"                         at least twice per lease if the lease is shorter)\n"
"  --extension DUR        lease length each extend asks for (default: the\n"
"                         broker's ack deadline from WELCOME)\n"
"  --db sqlite:PATH       where saves go (default sqlite:./mandrill.db)\n"
"  --restart MODE         simulate (default) or exec\n"
"  --restart-latency DUR  simulate: latency is U[0,1) times this (default 1s)\n"
"  --fail-rate F          simulate: probability a restart fails, 0..1 (default 0)\n"
"  --restart-cmd 'ARGV'   exec: command template run without a shell; words split\n"
"                         on blanks, quotes group; {hostname}, {instance_name} and\n"
"                         {message_id} are replaced. Exit 0 means success\n"
"  --restart-timeout DUR  exec: kill the command's process group after this\n"
"                         (default 60s)\n"
"  --save-attempts N      tries of a failing save per delivery before it is\n"
"                         nacked, 1..100 (default 5; retries back off from 200ms)\n"
"  --max-job-time DUR     hard ceiling per delivery: whatever still runs is\n"
"                         killed and the delivery nacked (default 5m)\n"
"  --grace DUR            on SIGTERM/SIGINT/SIGHUP/SIGQUIT, time to finish held\n"
"                         messages and have their acks confirmed by the broker\n"
"                         before nacking the rest (default 30s)\n"
"  --heartbeat DUR        heartbeat interval (default: the broker's)\n"
"  --curve-cert FILE      own secret certificate (mandrill-ctl keygen): CURVE to\n"
"                         the broker; needs --broker-cert (docs/SECURITY.md)\n"
"  --broker-cert FILE     the broker's public certificate\n"
"  --allow-hosts GLOB     restart only hostnames matching a glob (repeatable; case\n"
"                         ignored); any other request is never run but NACKed\n"
"                         host_not_allowed, and ends as a dead letter saying so\n"
"  --log-level LEVEL      error, warn, info (default), debug, trace\n"
"  --debug                log loop handlers that take longer than 100 ms\n"
"  --help                 this text\n"
"  --version              print the version\n"
"\n"
"Signals: SIGTERM, SIGINT, SIGHUP, SIGQUIT shut down gracefully (a second one\n"
"ends the grace period at once); SIGUSR1 logs the in-flight table.\n"
"\n"
"Acks, nacks and progress reports count only once the broker answers them;\n"
"unanswered ones are sent again after a heartbeat interval and after every\n"
"reconnect, until the lease has certainly ended.\n"
"\n"
"Logging: one INFO line per event up to 200 per second, then one summary\n"
"line per second.\n"
"\n"
"Exit codes: 0 clean shutdown, 1 could not start (database, sockets),\n"
"2 bad command line.\n");
}

static int
s_bad (const char *flag, const char *value, const char *expected)
{
    fprintf (stderr, "mandrill-worker: bad value '%s' for %s: expected %s\n"
             "Try 'mandrill-worker --help'.\n", value ? value : "", flag, expected);
    return EXIT_USAGE;
}

int
main (int argc, char *argv [])
{
    enum {
        OPT_BROKER = 256, OPT_CREDIT, OPT_NAME, OPT_EXTEND_EVERY, OPT_EXTENSION, OPT_DB,
        OPT_RESTART, OPT_LATENCY, OPT_FAIL_RATE, OPT_CMD, OPT_TIMEOUT, OPT_SAVE_ATTEMPTS,
        OPT_MAX_JOB, OPT_GRACE, OPT_HEARTBEAT, OPT_LOG_LEVEL, OPT_DEBUG, OPT_HELP, OPT_VERSION,
        OPT_CURVE_CERT, OPT_BROKER_CERT, OPT_ALLOW_HOSTS
    };
    static const struct option longopts [] = {
        { "broker", required_argument, NULL, OPT_BROKER },
        { "credit", required_argument, NULL, OPT_CREDIT },
        { "name", required_argument, NULL, OPT_NAME },
        { "extend-every", required_argument, NULL, OPT_EXTEND_EVERY },
        { "extension", required_argument, NULL, OPT_EXTENSION },
        { "db", required_argument, NULL, OPT_DB },
        { "restart", required_argument, NULL, OPT_RESTART },
        { "restart-latency", required_argument, NULL, OPT_LATENCY },
        { "fail-rate", required_argument, NULL, OPT_FAIL_RATE },
        { "restart-cmd", required_argument, NULL, OPT_CMD },
        { "restart-timeout", required_argument, NULL, OPT_TIMEOUT },
        { "save-attempts", required_argument, NULL, OPT_SAVE_ATTEMPTS },
        { "max-job-time", required_argument, NULL, OPT_MAX_JOB },
        { "grace", required_argument, NULL, OPT_GRACE },
        { "heartbeat", required_argument, NULL, OPT_HEARTBEAT },
        { "log-level", required_argument, NULL, OPT_LOG_LEVEL },
        { "debug", no_argument, NULL, OPT_DEBUG },
        { "help", no_argument, NULL, OPT_HELP },
        { "version", no_argument, NULL, OPT_VERSION },
        { "curve-cert", required_argument, NULL, OPT_CURVE_CERT },
        { "broker-cert", required_argument, NULL, OPT_BROKER_CERT },
        { "allow-hosts", required_argument, NULL, OPT_ALLOW_HOSTS },
        { NULL, 0, NULL, 0 }
    };
    wrk_options_t options;
    memset (&options, 0, sizeof options);
    options.broker = "tcp://localhost:5556";
    options.credit = 100;
    options.grace_ms = 30000;
    options.heartbeat_ms = -1;
    wrk_config_defaults (&options.jobs);
    const char *db_url = "sqlite:./mandrill.db";
    const char *mode = "simulate";
    const char *restart_cmd = NULL;
    bool latency_set = false, fail_set = false, timeout_set = false;
    //  At most one glob per argument, so argc slots always suffice
    static const char *allow_hosts [4096];
    if (argc > 4096) {
        fprintf (stderr, "mandrill-worker: too many arguments\n");
        return EXIT_USAGE;
    }
    options.jobs.allow_hosts = allow_hosts;

    int opt;
    opterr = 0;
    while ((opt = getopt_long (argc, argv, "", longopts, NULL)) != -1) {
        int64_t value;
        switch (opt) {
            case OPT_BROKER: options.broker = optarg; break;
            case OPT_CREDIT:
                if (mdl_parse_int (optarg, 1, MMP_MAX_CREDIT, &options.credit) != 0)
                    return s_bad ("--credit", optarg, "a whole number 1..1000000");
                break;
            case OPT_NAME:
                if (!*optarg || strlen (optarg) > MMP_MAX_TEXT)
                    return s_bad ("--name", optarg, "1..256 characters");
                options.name = optarg;
                break;
            case OPT_EXTEND_EVERY:
                if (mdl_parse_duration_ms (optarg, &value) != 0 || value < 1)
                    return s_bad ("--extend-every", optarg, "a duration above 0, e.g. 2s");
                options.jobs.extend_every_ms = value;
                break;
            case OPT_EXTENSION:
                if (mdl_parse_duration_ms (optarg, &value) != 0 || value < 1
                ||  value > MMP_MAX_EXTENSION_MS)
                    return s_bad ("--extension", optarg, "a duration from 1ms to 1h");
                options.jobs.extension_ms = value;
                break;
            case OPT_DB: db_url = optarg; break;
            case OPT_RESTART:
                if (strcmp (optarg, "simulate") != 0 && strcmp (optarg, "exec") != 0)
                    return s_bad ("--restart", optarg, "simulate or exec");
                mode = optarg;
                break;
            case OPT_LATENCY:
                if (mdl_parse_duration_ms (optarg, &value) != 0)
                    return s_bad ("--restart-latency", optarg, "a duration, e.g. 1s");
                options.jobs.restart_latency_ms = value;
                latency_set = true;
                break;
            case OPT_FAIL_RATE:
                if (mdl_parse_double (optarg, 0, 1, &options.jobs.fail_rate) != 0)
                    return s_bad ("--fail-rate", optarg, "a number from 0 to 1");
                fail_set = true;
                break;
            case OPT_CMD: restart_cmd = optarg; break;
            case OPT_TIMEOUT:
                if (mdl_parse_duration_ms (optarg, &value) != 0 || value < 1)
                    return s_bad ("--restart-timeout", optarg, "a duration above 0, e.g. 60s");
                options.jobs.restart_timeout_ms = value;
                timeout_set = true;
                break;
            case OPT_SAVE_ATTEMPTS:
                if (mdl_parse_int (optarg, 1, 100, &value) != 0)
                    return s_bad ("--save-attempts", optarg, "a whole number 1..100");
                options.jobs.save_attempts = (int) value;
                break;
            case OPT_MAX_JOB:
                if (mdl_parse_duration_ms (optarg, &value) != 0 || value < 1)
                    return s_bad ("--max-job-time", optarg, "a duration above 0, e.g. 5m");
                options.jobs.max_job_ms = value;
                break;
            case OPT_GRACE:
                if (mdl_parse_duration_ms (optarg, &value) != 0)
                    return s_bad ("--grace", optarg, "a duration, e.g. 30s");
                options.grace_ms = value;
                break;
            case OPT_HEARTBEAT:
                if (mdl_parse_duration_ms (optarg, &value) != 0 || value < 10)
                    return s_bad ("--heartbeat", optarg, "a duration of at least 10ms");
                options.heartbeat_ms = value;
                break;
            case OPT_LOG_LEVEL: {
                mdl_log_level_t level;
                if (mdl_log_parse_level (optarg, &level) != 0)
                    return s_bad ("--log-level", optarg, "error, warn, info, debug or trace");
                mdl_log_set_level (level);
                break;
            }
            case OPT_DEBUG: options.debug = true; break;
            case OPT_CURVE_CERT: options.curve_cert = optarg; break;
            case OPT_BROKER_CERT: options.broker_cert = optarg; break;
            case OPT_ALLOW_HOSTS:
                if (!*optarg)
                    return s_bad ("--allow-hosts", optarg, "a glob on the hostname, e.g. '*.prod.example.net'");
                allow_hosts [options.jobs.allow_host_count++] = optarg;
                break;
            case OPT_HELP: s_usage (stdout); return 0;
            case OPT_VERSION: printf ("mandrill-worker %s\n", MANDRILL_VERSION); return 0;
            default:
                fprintf (stderr, "mandrill-worker: unknown option or missing value: %s\n"
                         "Try 'mandrill-worker --help'.\n", argv [optind - 1]);
                return EXIT_USAGE;
        }
    }
    if (optind < argc) {
        fprintf (stderr, "mandrill-worker: unexpected argument '%s'\n"
                 "Try 'mandrill-worker --help'.\n", argv [optind]);
        return EXIT_USAGE;
    }
    bool exec = strcmp (mode, "exec") == 0;
    if (exec && !restart_cmd) {
        fprintf (stderr, "mandrill-worker: --restart exec needs --restart-cmd\n");
        return EXIT_USAGE;
    }
    if (!exec && (restart_cmd || timeout_set)) {
        fprintf (stderr, "mandrill-worker: --restart-cmd and --restart-timeout need --restart exec\n");
        return EXIT_USAGE;
    }
    if (exec && (latency_set || fail_set)) {
        fprintf (stderr, "mandrill-worker: --restart-latency and --fail-rate apply to "
                 "--restart simulate only\n");
        return EXIT_USAGE;
    }
    int64_t longest = exec ? options.jobs.restart_timeout_ms : options.jobs.restart_latency_ms;
    if (options.jobs.max_job_ms <= longest) {
        fprintf (stderr, "mandrill-worker: --max-job-time must be longer than the restart "
                 "can take (%" PRId64 " ms)\n", longest);
        return EXIT_USAGE;
    }
    char error [300];
    if (options.curve_cert || options.broker_cert) {
        zsys_handler_set (NULL);        //  Before the first socket: signals stay ours
        zsock_t *probe = zsock_new (ZMQ_DEALER);
        int curve = mdl_curve_client_files (probe, options.curve_cert, options.broker_cert,
                                            error, sizeof error);
        zsock_destroy (&probe);
        if (curve != 0) {
            fprintf (stderr, "mandrill-worker: %s\n", error);
            return EXIT_USAGE;
        }
    }
    char db_path [4096];
    if (wrk_db_parse_url (db_url, db_path, sizeof db_path, error, sizeof error) != 0) {
        fprintf (stderr, "mandrill-worker: --db: %s\n", error);
        return EXIT_USAGE;
    }
    options.db_path = db_path;
    if (exec) {
        wrk_exec_t *check = wrk_exec_new (restart_cmd, error, sizeof error);
        if (!check) {
            fprintf (stderr, "mandrill-worker: --restart-cmd: %s\n", error);
            return EXIT_USAGE;
        }
        wrk_exec_destroy (&check);
        options.restart_cmd = restart_cmd;
    }
    char name [300];
    if (!options.name) {
        char host [256] = "worker";
        gethostname (host, sizeof host - 1);
        host [sizeof host - 1] = 0;
        snprintf (name, sizeof name, "%.200s-%d", host, (int) getpid ());
        options.name = name;
    }
    mdl_log_set_name (options.name);
    return wrk_worker_run (&options);
}
