/*  mandrill-worker: reads its options (mdl_opt: flags, environment,
    configuration file) and runs wrk_worker.
    Exit codes: 0 clean shutdown, 1 could not start (database, sockets),
    2 bad usage (command line, environment, configuration file).
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdl_curve.h"
#include "mdl_http.h"
#include "mdl_log.h"
#include "mdl_opt.h"
#include "wrk_db.h"
#include "wrk_exec.h"
#include "wrk_worker.h"

static const mdl_opt_spec_t s_options [] = {
    { NULL, 0, NULL, "Options (durations take a unit: 250ms, 2s, 1.5m, 1h)", NULL },
    { "broker", 0, "URL", "broker backend endpoint\n(default tcp://localhost:5556)", NULL },
    { "credit", 0, "N", "most messages in flight, 1..1000000 (default 100)", NULL },
    { "name", 0, "NAME", "worker name in the broker, the database and the\nlog (default HOSTNAME-PID-R, R: 8 random hex\ndigits); with --curve-cert the database rows\nname the key instead", NULL },
    { "extend-every", 0, "DUR", "extend leases this often while work runs\n(default 2s; at least twice per lease if the\nlease is shorter)", NULL },
    { "extension", 0, "DUR", "lease length each extend asks for (default: the\nbroker's ack deadline from WELCOME)", NULL },
    { "db", 0, "sqlite:PATH", "where saves go (default sqlite:./mandrill.db)", NULL },
    { "restart", 0, "MODE", "simulate (default) or exec", NULL },
    { "restart-latency", 0, "DUR", "simulate: latency is U[0,1) times this\n(default 1s)", NULL },
    { "fail-rate", 0, "F", "simulate: probability a restart fails, 0..1\n(default 0)", NULL },
    { "restart-cmd", 0, "'ARGV'", "exec: command template run without a shell;\n"
      "words split on blanks, quotes group;\n{hostname}, {instance_name} and {message_id}\n"
      "are replaced. Exit 0 means success", NULL },
    { "restart-timeout", 0, "DUR", "exec: kill the command's process group after\nthis (default 60s)", NULL },
    { "verify-cmd", 0, "'ARGV'", "exec: for a delivery the broker marks in doubt\n"
      "(an earlier attempt's restart may have run), run\nthis first, placeholders as --restart-cmd;\n"
      "exit 0: the host was restarted, the restart\ncounts as done; else (or after\n"
      "--restart-timeout) restart it. Without it an\nin-doubt request is restarted again, or\n"
      "dead-lettered if the broker's policy says\nin_doubt = dead_letter. Before every restart the\n"
      "worker has the broker record it as started and\nruns it only on the broker's ok", NULL },
    { "health-cmd", 0, "'ARGV'", "exec: after a restart (also one done earlier or\n"
      "verified) run this until it exits 0, keeping\nthe lease, then ack; placeholders as\n--restart-cmd", NULL },
    { "health-timeout", 0, "DUR", "exec: give up waiting for health after this and\n"
      "nack health_timeout (default 5m; the next\nattempt checks health again, without restarting)", NULL },
    { "health-interval", 0, "DUR", "exec: between two health tries (default 5s)", NULL },
    { "save-attempts", 0, "N", "tries of a failing save per delivery before it\n"
      "is nacked, 1..100 (default 5; retries back off\nfrom 200ms)", NULL },
    { "max-job-time", 0, "DUR", "hard ceiling per delivery: whatever still runs\n"
      "is killed and the delivery nacked (default 5m)", NULL },
    { "grace", 0, "DUR", "on SIGTERM/SIGINT/SIGHUP/SIGQUIT, time to finish\n"
      "held messages and have their acks confirmed by\nthe broker before nacking the rest (default 30s)", NULL },
    { "heartbeat", 0, "DUR", "heartbeat interval (default: the broker's)", NULL },
    { "metrics", 0, "HOST:PORT", "serve Prometheus metrics at\nhttp://HOST:PORT/metrics (default: off; HOST is\nan IPv4 address, localhost, * or [IPv6]; port 0\npicks a free one, which the log names)", NULL },
    { "log-level", 0, "LEVEL", "error, warn, info (default), debug, trace", NULL },
    { "debug", 0, NULL, "log loop handlers that take longer than 100 ms", NULL },
    { NULL, 0, NULL, "Security (docs/SECURITY.md)", NULL },
    { "curve-cert", 0, "FILE", "own secret certificate (mandrill-ctl keygen):\n"
      "CURVE to the broker; needs --broker-cert", NULL },
    { "broker-cert", 0, "FILE", "the broker's public certificate", NULL },
    { "allow-hosts", 0, "GLOBS", "restart only hostnames matching one of these\n"
      "globs (comma-separated, e.g. '*.prod.example.net,\n"
      "db-?.example.net'; case ignored); any other\n"
      "request is never run but NACKed host_not_allowed\n"
      "and ends as a dead letter saying so", NULL },
    { NULL, 0, NULL, NULL, NULL }
};

static const char *s_usage =
"Usage: mandrill-worker [OPTIONS]\n"
"\n"
"Leases restart requests from a Mandrill broker. For each one it saves the\n"
"request to a database and restarts the host at the same time, extends the\n"
"lease while either runs, and acks when both are done.\n";

static const char *s_epilogue =
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
"Exit codes: 0 clean shutdown; 1 could not start (database, sockets); 2 bad\n"
"usage (command line, environment or configuration file).\n";

//  Split --allow-hosts into globs (commas and blanks separate them) in
//  *copy_p, which the caller frees, and point config at them. Returns 0,
//  or -1 (printed) for a list without any glob or out of memory.
static int
s_allow_hosts (const mdl_opt_t *opt, const char *text, wrk_config_t *config, char **copy_p,
               const char ***globs_p)
{
    size_t most = strlen (text) / 2 + 1;     //  Globs are separated, so at most this many
    char *copy = strdup (text);
    const char **globs = calloc (most, sizeof (char *));
    *copy_p = copy;
    *globs_p = globs;
    if (!copy || !globs)
        return mdl_opt_fail (opt, "out of memory");
    size_t count = 0;
    char *saved = NULL;
    for (char *glob = strtok_r (copy, ", \t", &saved); glob && count < most;
         glob = strtok_r (NULL, ", \t", &saved))
        globs [count++] = glob;
    if (count == 0)
        return mdl_opt_bad (opt, "allow-hosts", "globs on the hostname, e.g. '*.prod.example.net'");
    config->allow_hosts = globs;
    config->allow_host_count = count;
    return 0;
}

//  Everything main does with opt, after parsing: checks every option and
//  runs the worker. What --allow-hosts needs is handed back to s_main.
static int
s_run (mdl_opt_t *opt, int argc, char *argv [], char **allow_copy, const char ***allow_globs)
{
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
    const char *verify_cmd = NULL;
    const char *health_cmd = NULL;

    int rc = mdl_opt_parse (opt, argc, argv);
    if (rc != 0)
        return rc > 0 ? MDL_EXIT_OK : MDL_EXIT_USAGE;
    if (mdl_opt_argc (opt) > 0) {
        mdl_opt_fail (opt, "unexpected argument '%s'", mdl_opt_arg (opt, 0));
        return MDL_EXIT_USAGE;
    }
    int64_t save_attempts = options.jobs.save_attempts;
    if (mdl_opt_string (opt, "broker", &options.broker)
    ||  mdl_opt_int (opt, "credit", 1, MMP_MAX_CREDIT, &options.credit, "a whole number 1..1000000")
    ||  mdl_opt_duration (opt, "extend-every", 1, INT64_MAX, &options.jobs.extend_every_ms,
                          "a duration above 0, e.g. 2s")
    ||  mdl_opt_duration (opt, "extension", 1, MMP_MAX_EXTENSION_MS, &options.jobs.extension_ms,
                          "a duration from 1ms to 1h")
    ||  mdl_opt_string (opt, "db", &db_url)
    ||  mdl_opt_string (opt, "restart", &mode)
    ||  mdl_opt_duration (opt, "restart-latency", 0, INT64_MAX, &options.jobs.restart_latency_ms,
                          "a duration, e.g. 1s")
    ||  mdl_opt_double (opt, "fail-rate", 0, 1, &options.jobs.fail_rate, "a number from 0 to 1")
    ||  mdl_opt_string (opt, "restart-cmd", &restart_cmd)
    ||  mdl_opt_string (opt, "verify-cmd", &verify_cmd)
    ||  mdl_opt_string (opt, "health-cmd", &health_cmd)
    ||  mdl_opt_duration (opt, "health-timeout", 1, INT64_MAX, &options.jobs.health_timeout_ms,
                          "a duration, e.g. 5m")
    ||  mdl_opt_duration (opt, "health-interval", 1, INT64_MAX, &options.jobs.health_interval_ms,
                          "a duration, e.g. 5s")
    ||  mdl_opt_duration (opt, "restart-timeout", 1, INT64_MAX, &options.jobs.restart_timeout_ms,
                          "a duration above 0, e.g. 60s")
    ||  mdl_opt_int (opt, "save-attempts", 1, 100, &save_attempts, "a whole number 1..100")
    ||  mdl_opt_duration (opt, "max-job-time", 1, INT64_MAX, &options.jobs.max_job_ms,
                          "a duration above 0, e.g. 5m")
    ||  mdl_opt_duration (opt, "grace", 0, INT64_MAX, &options.grace_ms, "a duration, e.g. 30s")
    ||  mdl_opt_duration (opt, "heartbeat", 10, INT64_MAX, &options.heartbeat_ms,
                          "a duration of at least 10ms"))
        return MDL_EXIT_USAGE;
    options.jobs.save_attempts = (int) save_attempts;
    const char *given_name = mdl_opt_value (opt, "name");
    if (given_name) {
        if (!*given_name || strlen (given_name) > MMP_MAX_TEXT)
            return mdl_opt_bad (opt, "name", "1..256 characters"), MDL_EXIT_USAGE;
        options.name = given_name;
    }
    if (strcmp (mode, "simulate") != 0 && strcmp (mode, "exec") != 0)
        return mdl_opt_bad (opt, "restart", "simulate or exec"), MDL_EXIT_USAGE;
    const char *level_text = mdl_opt_value (opt, "log-level");
    if (level_text) {
        mdl_log_level_t level;
        if (mdl_log_parse_level (level_text, &level) != 0)
            return mdl_opt_bad (opt, "log-level", "error, warn, info, debug or trace"), MDL_EXIT_USAGE;
        mdl_log_set_level (level);
    }
    options.debug = mdl_opt_flag (opt, "debug");
    const char *allow = mdl_opt_value (opt, "allow-hosts");
    if (allow && s_allow_hosts (opt, allow, &options.jobs, allow_copy, allow_globs) != 0)
        return MDL_EXIT_USAGE;
    options.curve_cert = mdl_opt_value (opt, "curve-cert");
    options.broker_cert = mdl_opt_value (opt, "broker-cert");
    bool latency_set = mdl_opt_value (opt, "restart-latency") != NULL;
    bool fail_set = mdl_opt_value (opt, "fail-rate") != NULL;
    bool timeout_set = mdl_opt_value (opt, "restart-timeout") != NULL;
    bool exec = strcmp (mode, "exec") == 0;
    if (exec && !restart_cmd) {
        mdl_opt_fail (opt, "--restart exec needs --restart-cmd");
        return MDL_EXIT_USAGE;
    }
    if (!exec && (restart_cmd || timeout_set)) {
        mdl_opt_fail (opt, "--restart-cmd and --restart-timeout need --restart exec");
        return MDL_EXIT_USAGE;
    }
    if (!exec && (verify_cmd || health_cmd || mdl_opt_value (opt, "health-timeout")
                  || mdl_opt_value (opt, "health-interval"))) {
        mdl_opt_fail (opt, "--verify-cmd and --health-* need --restart exec");
        return MDL_EXIT_USAGE;
    }
    if (exec && (latency_set || fail_set)) {
        mdl_opt_fail (opt, "--restart-latency and --fail-rate apply to --restart simulate only");
        return MDL_EXIT_USAGE;
    }
    int64_t longest = exec ? options.jobs.restart_timeout_ms : options.jobs.restart_latency_ms;
    if (options.jobs.max_job_ms <= longest) {
        mdl_opt_fail (opt, "--max-job-time must be longer than the restart can take (%" PRId64 " ms)",
                      longest);
        return MDL_EXIT_USAGE;
    }
    char error [300];
    if (options.curve_cert || options.broker_cert) {
        zsys_handler_set (NULL);        //  Before the first socket: signals stay ours
        zsock_t *probe = zsock_new (ZMQ_DEALER);
        int curve = mdl_curve_client_files (probe, options.curve_cert, options.broker_cert,
                                            error, sizeof error);
        zsock_destroy (&probe);
        if (curve != 0) {
            mdl_opt_fail (opt, "%s", error);
            return MDL_EXIT_USAGE;
        }
    }
    options.metrics = mdl_opt_value (opt, "metrics");
    mdl_http_address_t address;
    if (options.metrics
    &&  mdl_http_parse_address (options.metrics, &address, error, sizeof error) != 0) {
        mdl_opt_source_t source = mdl_opt_source (opt, "metrics");
        mdl_opt_fail (opt, "invalid %s: %s", source == MDL_OPT_ENV ? "MANDRILL_WORKER_METRICS"
                      : source == MDL_OPT_FILE ? "metrics (configuration file)" : "--metrics",
                      error);
        return MDL_EXIT_USAGE;
    }
    if (wrk_db_check_url (db_url, error, sizeof error) != 0) {
        mdl_opt_fail (opt, "--db: %s", error);
        return MDL_EXIT_USAGE;
    }
    options.db_url = db_url;
    if (exec) {
        wrk_exec_t *check = wrk_exec_new (restart_cmd, error, sizeof error);
        if (!check) {
            mdl_opt_fail (opt, "--restart-cmd: %s", error);
            return MDL_EXIT_USAGE;
        }
        wrk_exec_destroy (&check);
        options.restart_cmd = restart_cmd;
        const char *names [2] = { "--verify-cmd", "--health-cmd" };
        const char *templates [2] = { verify_cmd, health_cmd };
        for (int i = 0; i < 2; i++) {
            if (!templates [i])
                continue;
            if (!(check = wrk_exec_new (templates [i], error, sizeof error))) {
                mdl_opt_fail (opt, "%s: %s", names [i], error);
                return MDL_EXIT_USAGE;
            }
            wrk_exec_destroy (&check);
        }
        options.verify_cmd = verify_cmd;
        options.health_cmd = health_cmd;
    }
    char name [300];
    if (!options.name) {
        char host [256] = "worker";
        gethostname (host, sizeof host - 1);
        host [sizeof host - 1] = 0;
        //  Containers share a hostname under host networking and all run as
        //  pid 1: a random suffix keeps their names apart.
        zuuid_t *uuid = zuuid_new ();
        snprintf (name, sizeof name, "%.200s-%d-%.8s", host, (int) getpid (),
                  uuid ? zuuid_str_canonical (uuid) : "0");
        zuuid_destroy (&uuid);
        options.name = name;
    }
    mdl_log_set_name (options.name);
    rc = wrk_worker_run (&options);
    return rc;
}

//  Everything main does with opt, which main owns, so that one place
//  frees it (and the --allow-hosts globs) on every way out.
static int
s_main (mdl_opt_t *opt, int argc, char *argv [])
{
    char *allow_copy = NULL;            //  --allow-hosts, split in place
    const char **allow_globs = NULL;    //  Pointers into allow_copy
    int rc = s_run (opt, argc, argv, &allow_copy, &allow_globs);
    free (allow_globs);
    free (allow_copy);
    return rc;
}

int
main (int argc, char *argv [])
{
    //  Kept until exit: the configuration points into its values
    mdl_opt_t *opt = mdl_opt_new ("mandrill-worker", s_options, s_usage, s_epilogue);
    if (!opt)
        return MDL_EXIT_FAILURE;
    int rc = s_main (opt, argc, argv);
    mdl_opt_destroy (&opt);
    return rc;
}
