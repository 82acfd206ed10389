/*  mandrill-broker: parses flags, starts the broker actor, waits for a
    signal, stops the actor. Everything else lives in brk_server.

    Exit codes: 0 clean stop, 1 bad usage, 2 cannot bind or start,
    3 journal corrupt (see --salvage), 4 data directory in use.
*/
#include <czmq.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "brk_server.h"
#include "mdl_log.h"
#include "mdl_util.h"

#define EXIT_USAGE 1
#define EXIT_START 2
#define EXIT_CORRUPT 3
#define EXIT_LOCKED 4

static void
s_usage (FILE *out)
{
    fprintf (out,
        "Usage: mandrill-broker [OPTIONS]\n"
        "\n"
        "Holds restart requests and leases them to workers (see proto/PROTOCOL.md).\n"
        "\n"
        "Sockets:\n"
        "  --frontend ENDPOINT    publishers and control clients (default tcp://*:5555,\n"
        "                         tcp://127.0.0.1:5555 without --curve-cert or --insecure)\n"
        "  --backend ENDPOINT     workers (default tcp://*:5556, the same rule)\n"
        "  --events ENDPOINT      lifecycle events, PUB (default tcp://*:5557, the same rule)\n"
        "\n"
        "Leases and retries (durations take a unit: 250ms, 10s, 2m):\n"
        "  --ack-deadline DUR     lease length of a delivery (default 10s)\n"
        "  --max-attempts N       deliveries before a message is dead-lettered (default 5)\n"
        "  --backoff-base DUR     redelivery delay after a first failure (default 500ms)\n"
        "  --backoff-max DUR      cap of the exponential backoff (default 30s)\n"
        "  --heartbeat DUR        heartbeat interval; a worker silent for 3 is lost (default 1s)\n"
        "  --dedup-window N       acked ids remembered to refuse re-publishes (default 100000)\n"
        "\n"
        "Durability:\n"
        "  --data-dir DIR         journal directory (default ./mandrill-data)\n"
        "  --durability MODE      when a PUBACK is sent (default batch):\n"
        "                           batch   after a group fsync, at most every --fsync-interval\n"
        "                           sync    after an fsync of each PUBLISH batch\n"
        "                           none    at once; journaled but never fsynced\n"
        "                           memory  at once; no journal, a restart loses everything\n"
        "  --fsync-interval DUR   batch mode: least time between fsyncs (default 10ms)\n"
        "  --salvage              start even if the journal is corrupt before its end,\n"
        "                         keeping what can be read (what is skipped is logged)\n"
        "\n"
        "Security (docs/SECURITY.md):\n"
        "  --curve-cert FILE      the broker's secret certificate (mandrill-ctl keygen):\n"
        "                         CURVE on all three sockets, only known keys served\n"
        "  --publishers DIR       public certificates that may PUBLISH\n"
        "  --workers DIR          public certificates that may work (the backend)\n"
        "  --operators DIR        public certificates that may use every frontend command\n"
        "                         and the event feed\n"
        "  --observers DIR        public certificates that may ask STATS and read events\n"
        "  --insecure             without --curve-cert, bind non-loopback endpoints anyway;\n"
        "                         without either, the broker binds only 127.0.0.1\n"
        "\n"
        "Other:\n"
        "  -v, --verbose          log every command at debug level\n"
        "  --log-level LEVEL      error, warn, info (default), debug, trace\n"
        "  -h, --help             this text\n"
        "  --version              print the version\n"
        "\n"
        "SIGTERM, SIGINT, SIGHUP or SIGQUIT stop the broker cleanly (exit 0): the\n"
        "journal is flushed and fsynced first.\n"
        "Exit codes: 0 clean stop, 1 bad usage, 2 cannot bind or start, 3 journal\n"
        "corrupt (see --salvage), 4 data directory used by another broker.\n");
}

static int
s_bad (const char *flag, const char *value, const char *expected)
{
    fprintf (stderr, "mandrill-broker: invalid value '%s' for %s: expected %s\n",
             value ? value : "(missing)", flag, expected);
    fprintf (stderr, "Try 'mandrill-broker --help'.\n");
    return EXIT_USAGE;
}

int
main (int argc, char *argv [])
{
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    const char *endpoints [3] = { "tcp://*:5555", "tcp://*:5556", "tcp://*:5557" };
    static const char *names [3] = { "frontend", "backend", "events" };
    mdl_log_level_t level = MDL_LOG_INFO;
    const char *data_dir = "./mandrill-data";
    bool memory = false;

    for (int i = 1; i < argc; i++) {
        const char *flag = argv [i];
        const char *value = i + 1 < argc ? argv [i + 1] : NULL;
        int64_t number;
        if (streq (flag, "-h") || streq (flag, "--help")) {
            s_usage (stdout);
            return 0;
        }
        else
        if (streq (flag, "--version")) {
            printf ("mandrill-broker %s\n", MANDRILL_VERSION);
            return 0;
        }
        else
        if (streq (flag, "-v") || streq (flag, "--verbose")) {
            config.verbose = true;
            level = MDL_LOG_DEBUG;
            continue;
        }
        else
        if (streq (flag, "--frontend") || streq (flag, "--backend") || streq (flag, "--events")) {
            if (!value || !*value)
                return s_bad (flag, value, "an endpoint such as tcp://*:5555");
            endpoints [streq (flag, "--frontend") ? 0 : streq (flag, "--backend") ? 1 : 2] = value;
        }
        else
        if (streq (flag, "--ack-deadline") || streq (flag, "--backoff-base")
        ||  streq (flag, "--backoff-max") || streq (flag, "--heartbeat")) {
            if (mdl_parse_duration_ms (value, &number) != 0 || number > 86400000)
                return s_bad (flag, value, "a duration with a unit, e.g. 500ms or 10s (at most 24h)");
            if (streq (flag, "--ack-deadline")) {
                if (number < 1)
                    return s_bad (flag, value, "a duration of at least 1ms");
                config.queue.ack_deadline_ms = number;
            }
            else
            if (streq (flag, "--backoff-base"))
                config.queue.backoff_base_ms = number;
            else
            if (streq (flag, "--backoff-max"))
                config.queue.backoff_max_ms = number;
            else {
                if (number < 10)
                    return s_bad (flag, value, "a duration of at least 10ms");
                config.queue.heartbeat_ms = number;
            }
        }
        else
        if (streq (flag, "--salvage")) {
            config.journal.salvage = true;
            continue;
        }
        else
        if (streq (flag, "--insecure")) {
            config.insecure = true;
            continue;
        }
        else
        if (streq (flag, "--curve-cert")) {
            if (!value || !*value)
                return s_bad (flag, value, "a secret certificate file (mandrill-ctl keygen)");
            config.curve_cert = value;
        }
        else
        if (streq (flag, "--publishers") || streq (flag, "--workers")
        ||  streq (flag, "--operators") || streq (flag, "--observers")) {
            if (!value || !*value)
                return s_bad (flag, value, "a directory of public certificates");
            brk_role_t role = streq (flag, "--publishers") ? BRK_ROLE_PUBLISHER
                            : streq (flag, "--workers") ? BRK_ROLE_WORKER
                            : streq (flag, "--operators") ? BRK_ROLE_OPERATOR : BRK_ROLE_OBSERVER;
            config.role_dirs [role] = value;
        }
        else
        if (streq (flag, "--data-dir")) {
            if (!value || !*value)
                return s_bad (flag, value, "a directory");
            data_dir = value;
        }
        else
        if (streq (flag, "--durability")) {
            if (value && streq (value, "memory"))
                memory = true;
            else {
                if (brk_journal_parse_mode (value, &config.journal.mode) != 0)
                    return s_bad (flag, value, "batch, sync, none or memory");
                memory = false;
            }
        }
        else
        if (streq (flag, "--fsync-interval")) {
            if (mdl_parse_duration_ms (value, &number) != 0 || number < 1 || number > 10000)
                return s_bad (flag, value, "a duration from 1ms to 10s");
            config.journal.fsync_interval_ms = (int) number;
        }
        else
        if (streq (flag, "--max-attempts")) {
            if (mdl_parse_int (value, 1, 1000, &number) != 0)
                return s_bad (flag, value, "a whole number from 1 to 1000");
            config.queue.max_attempts = number;
        }
        else
        if (streq (flag, "--dedup-window")) {
            if (mdl_parse_int (value, 0, 100000000, &number) != 0)
                return s_bad (flag, value, "a whole number from 0 to 100000000");
            config.queue.dedup_window = number;
        }
        else
        if (streq (flag, "--log-level")) {
            if (mdl_log_parse_level (value, &level) != 0)
                return s_bad (flag, value, "error, warn, info, debug or trace");
        }
        else {
            fprintf (stderr, "mandrill-broker: unknown option '%s'\nTry 'mandrill-broker --help'.\n", flag);
            return EXIT_USAGE;
        }
        i++;                    //  Every option but the flags above takes a value
    }
    //  Secure by default: without CURVE, the default endpoints are loopback
    static const char *wildcard [3] = { "tcp://*:5555", "tcp://*:5556", "tcp://*:5557" };
    static const char *loopback [3] = { "tcp://127.0.0.1:5555", "tcp://127.0.0.1:5556", "tcp://127.0.0.1:5557" };
    for (int i = 0; i < 3 && !config.curve_cert && !config.insecure; i++)
        if (streq (endpoints [i], wildcard [i]))
            endpoints [i] = loopback [i];
    if (config.queue.backoff_max_ms < config.queue.backoff_base_ms)
        return s_bad ("--backoff-max", "(less than --backoff-base)", "a cap at least as large as --backoff-base");

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

    zactor_t *broker = zactor_new (brk_server, &config);
    if (!broker) {
        mdl_error ("cannot start the broker");
        return EXIT_START;
    }
    zstr_send (broker, "STATUS");
    int status = BRK_SERVER_FAILED;
    if (zsock_recv (broker, "i", &status) != 0 || status != BRK_SERVER_OK) {
        zactor_destroy (&broker);
        return status == BRK_SERVER_CORRUPT ? EXIT_CORRUPT
             : status == BRK_SERVER_LOCKED ? EXIT_LOCKED : EXIT_START;
    }
    for (int i = 0; i < 3; i++) {
        zstr_sendx (broker, "BIND", names [i], endpoints [i], NULL);
        int port = -1;
        if (zsock_recv (broker, "i", &port) != 0 || port == -1) {
            mdl_error ("cannot bind the %s socket to %s", names [i], endpoints [i]);
            zactor_destroy (&broker);
            return EXIT_START;
        }
    }
    mdl_info ("mandrill-broker %s ready: ack deadline %" PRId64 " ms, max attempts %" PRId64
              ", heartbeat %" PRId64 " ms, durability %s%s%s",
              MANDRILL_VERSION, config.queue.ack_deadline_ms, config.queue.max_attempts,
              config.queue.heartbeat_ms, memory ? "memory" : brk_journal_mode_name (config.journal.mode),
              memory ? "" : " in ", memory ? "" : data_dir);

    int signal_number = 0;
    while (sigwait (&signals, &signal_number) != 0)
        ;
    mdl_info ("received %s, stopping", strsignal (signal_number));
    zactor_destroy (&broker);
    mdl_info ("stopped");
    return 0;
}
