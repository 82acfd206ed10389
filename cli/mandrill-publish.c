/*  mandrill-publish: publishes restart requests to a mandrill-broker.

    Sources: one request (--instance, pub_request), a file of JSON
    requests, one per line (--file PATH or - for stdin, pub_file), or a
    mock stream of cattle-xxxx requests (--mock, pub_mock) paced like the
    tutorial's publisher (U[0,1) s between messages) or at a fixed --rate,
    forever or for --count messages. Every request is built and checked
    before the first socket exists.

    Concurrency: --publishers K threads (pub_window), each with its own
    DEALER, its own share of the requests and its own send window; the
    delivery contract is in pub_window.h. This file reads the options,
    splits the work, watches signals (signalfd) and prints progress.
*/
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_opt.h"
#include "mmp.h"
#include "pub_file.h"
#include "pub_request.h"
#include "pub_window.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#define S_STRINGIFY_(x)     #x
#define S_STRINGIFY(x)      S_STRINGIFY_(x)
#define PROGRESS_MIN        1000    //  Show progress from this many requests (or --rate >= 100)

static pub_totals_t s_totals;           //  Shared with the publisher threads

static int64_t
s_now (void)
{
    return zclock_mono ();
}

//  --------------------------------------------------------------- main

static const mdl_opt_spec_t s_options [] = {
    { NULL, 0, NULL, "Sources (exactly one)", NULL },
    { "instance", 0, "NAME", "publish one request for this instance", NULL },
    { "hostname", 0, "H", "with --instance: its hostname (default\nNAME.example.net, set by the broker)", NULL },
    { "message-id", 0, "UUID", "with --instance: its message id (default: a new\n"
      "uuid4); publishing the same id again is reported\nas a duplicate, never queued twice", NULL },
    { "file", 0, "PATH|-", "one JSON request per line: {\"instance_name\":\n"
      "..., \"hostname\"?, \"message_id\"?, \"attributes\"?};\n"
      "blank and '#' lines skipped. Every line is\nchecked before anything is sent, by the same\n"
      "protocol decoder the broker uses: an invalid\nline is reported with its number and error\n"
      "code, and nothing is published", NULL },
    { "keep-going", 0, NULL, "with --file: instead skip invalid lines\n(reported), publish the rest, exit 3", NULL },
    { "mock", 0, NULL, "publish cattle-xxxx requests forever, U[0,1) s\napart", NULL },
    { "rate", 0, "R", "with --mock: instead R msgs/s in total (open\nloop)", NULL },
    { "count", 0, "N", "with --mock: stop after N requests", NULL },
    { NULL, 0, NULL, "Sending", NULL },
    { "broker", 0, "EP", "broker frontend (default tcp://localhost:5555)", NULL },
    { "publishers", 0, "K", "K concurrent publishers, each its own\nconnection (default 1)", NULL },
    { "batch", 0, "B", "requests per PUBLISH, at most (1.." S_STRINGIFY (MMP_MAX_MESSAGES) ",\n"
      "default 100; fewer when the body would pass\nthe broker's 1 MiB limit)", NULL },
    { "timeout", 0, "DUR", "wait for PUBACK before sending a batch again\n(default 5s)", NULL },
    { "retries", 0, "N", "resends before giving up on a batch (default 10)", NULL },
    { "curve-cert", 0, "FILE", "own secret certificate (mandrill-ctl keygen):\n"
      "CURVE to the broker; needs --broker-cert\n(docs/SECURITY.md)", NULL },
    { "broker-cert", 0, "FILE", "the broker's public certificate", NULL },
    { NULL, 0, NULL, "Output", NULL },
    { "progress", 0, NULL, "progress every second (automatic from 1000\nrequests or 100 msgs/s)", NULL },
    { "verbose", 'v', NULL, "debug log", NULL },
    { "quiet", 'q', NULL, "warnings and errors only", NULL },
    { NULL, 0, NULL, NULL, NULL }
};

static const char *s_usage =
    "Usage: mandrill-publish [OPTIONS] (--instance NAME | --file PATH|- | --mock)\n"
    "\n"
    "Publishes restart requests to a mandrill-broker and waits for each PUBACK.\n";

static const char *s_epilogue =
    "Retries resend the same message ids, so the broker reports them as duplicates.\n"
    "SIGINT/SIGTERM: stop taking new requests, wait up to --timeout for the batches in\n"
    "flight, report what was confirmed; a second signal stops at once.\n"
    "\n"
    "Exit codes: 0 every request confirmed; 1 some requests not confirmed (no PUBACK\n"
    "after the retries, broker unreachable, or stopped by a signal first); 2 bad\n"
    "usage (command line, environment or configuration file); 3 invalid input\n"
    "(nothing sent, or lines skipped with --keep-going); 4 the broker refused a\n"
    "batch (ERROR other than unavailable). An ERROR without req (the broker could\n"
    "not read the body) is that of the one batch in flight, or, with several in\n"
    "flight, stops the run at once; either way exit 4 without resending.\n";

static void
s_progress (int64_t t0, int64_t *last_confirmed, int64_t *last_at)
{
    int64_t now = s_now ();
    int64_t confirmed = atomic_load (&s_totals.confirmed);
    double rate = now > *last_at ? (double) (confirmed - *last_confirmed) * 1000.0 / (double) (now - *last_at) : 0;
    mdl_info ("progress: sent %" PRId64 ", acked %" PRId64 ", duplicates %" PRId64 ", resent batches %"
              PRId64 ", failed %" PRId64 ", %.0f msgs/s, %.1f s",
              atomic_load (&s_totals.sent), confirmed, atomic_load (&s_totals.duplicates),
              atomic_load (&s_totals.resends), atomic_load (&s_totals.failed), rate,
              (double) (now - t0) / 1000.0);
    *last_confirmed = confirmed;
    *last_at = now;
}

//  Everything main does with opt, which main owns, so that one place
//  frees it on every way out.
static int
s_main (mdl_opt_t *opt, int argc, char *argv [])
{
    pub_options_t opts = {
        .broker = "tcp://localhost:5555", .batch = 100, .timeout_ms = 5000,
        .retries = 10, .count = -1, .publishers = 1
    };
    const char *instance = NULL, *hostname = NULL, *message_id = NULL, *file = NULL;
    bool keep_going = false, progress = false;
    mdl_log_set_name ("publish");
    int parsed = mdl_opt_parse (opt, argc, argv);
    if (parsed != 0)
        return parsed > 0 ? PUB_OK : PUB_USAGE;
    if (mdl_opt_argc (opt) > 0) {
        mdl_opt_fail (opt, "unexpected argument '%s'", mdl_opt_arg (opt, 0));
        return PUB_USAGE;
    }
    if (mdl_opt_string (opt, "broker", &opts.broker)
    ||  mdl_opt_string (opt, "instance", &instance)
    ||  mdl_opt_string (opt, "hostname", &hostname)
    ||  mdl_opt_string (opt, "message-id", &message_id)
    ||  mdl_opt_string (opt, "file", &file)
    ||  mdl_opt_double (opt, "rate", 0.001, 1e7, &opts.rate,
                        "messages per second, a number from 0.001 to 10000000")
    ||  mdl_opt_int (opt, "count", 1, INT64_C (1) << 50, &opts.count, "a whole number from 1 to 2^50")
    ||  mdl_opt_int (opt, "publishers", 1, 64, &opts.publishers, "a whole number from 1 to 64")
    ||  mdl_opt_int (opt, "batch", 1, MMP_MAX_MESSAGES, &opts.batch,
                     "a whole number from 1 to " S_STRINGIFY (MMP_MAX_MESSAGES))
    ||  mdl_opt_int (opt, "retries", 0, 1000000, &opts.retries, "a whole number from 0 to 1000000")
    ||  mdl_opt_duration (opt, "timeout", 1, INT64_MAX, &opts.timeout_ms, "a duration such as 5s"))
        return PUB_USAGE;
    opts.mock = mdl_opt_flag (opt, "mock");
    keep_going = mdl_opt_flag (opt, "keep-going");
    progress = mdl_opt_flag (opt, "progress");
    if (mdl_opt_flag (opt, "verbose"))
        mdl_log_set_level (MDL_LOG_DEBUG);
    if (mdl_opt_flag (opt, "quiet"))
        mdl_log_set_level (MDL_LOG_WARN);
    int sources = (instance != NULL) + (file != NULL) + opts.mock;
    if (sources != 1) {
        mdl_opt_fail (opt, "give exactly one of --instance, --file, --mock");
        return PUB_USAGE;
    }
    if (!instance && (hostname || message_id)) {
        mdl_opt_fail (opt, "--hostname and --message-id go with --instance");
        return PUB_USAGE;
    }
    if (!opts.mock && (opts.rate > 0 || opts.count > 0)) {
        mdl_opt_fail (opt, "--rate and --count go with --mock");
        return PUB_USAGE;
    }
    opts.curve_cert = mdl_opt_value (opt, "curve-cert");
    opts.broker_cert = mdl_opt_value (opt, "broker-cert");
    if (opts.curve_cert || opts.broker_cert) {
        char error [300] = "";
        zsys_handler_set (NULL);        //  Before the first socket: signals stay ours
        zsock_t *probe = zsock_new (ZMQ_DEALER);
        if (!probe) {
            fprintf (stderr, "mandrill-publish: cannot make a socket (out of memory or files)\n");
            return PUB_UNCONFIRMED;
        }
        int curve = mdl_curve_client_files (probe, opts.curve_cert, opts.broker_cert, error, sizeof error);
        zsock_destroy (&probe);
        if (curve != 0) {
            mdl_opt_fail (opt, "%s", error);
            return PUB_USAGE;
        }
    }

    //  Every request is built and checked before the first socket exists.
    pub_request_t *list = NULL;
    size_t list_count = 0;
    int input_result = PUB_OK;
    if (instance) {
        list = calloc (1, sizeof *list);
        char error [320] = "out of memory";
        int rc = list ? pub_request_instance (instance, hostname, message_id, list, error,
                                              sizeof error) : -1;
        if (rc != 0) {
            fprintf (stderr, "mandrill-publish: invalid request: %s\n", error);
            free (list);
            return PUB_BAD_INPUT;
        }
        list_count = 1;
    }
    else
    if (file) {
        int rc = pub_file_read (file, keep_going, &list, &list_count);
        if (rc < 0)
            return PUB_BAD_INPUT;
        if (rc > 0)
            input_result = PUB_BAD_INPUT;
    }
    if (!opts.mock && list_count < (size_t) opts.publishers)
        opts.publishers = list_count ? (int64_t) list_count : 1;

    //  Signals arrive on a signalfd read by this thread only; the
    //  publisher threads inherit the blocked mask.
    zsys_handler_set (NULL);
    //  CZMQ's global state is made on the first socket; the publisher
    //  threads would race to make it (zsys_init is not thread-safe)
    zsys_init ();
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGHUP);
    sigaddset (&signals, SIGQUIT);
    pthread_sigmask (SIG_BLOCK, &signals, NULL);
    int signal_fd = signalfd (-1, &signals, SFD_CLOEXEC);
    if (signal_fd < 0) {
        mdl_error ("signalfd: %s", strerror (errno));
        return PUB_UNCONFIRMED;
    }

    int64_t planned = opts.mock ? opts.count : (int64_t) list_count;
    if (planned >= PROGRESS_MIN || opts.rate >= 100)
        progress = true;
    s_totals.summarise = progress;
    pub_window_t **publishers = calloc ((size_t) opts.publishers, sizeof *publishers);
    pthread_t *threads = calloc ((size_t) opts.publishers, sizeof *threads);
    if (!publishers || !threads) {
        fprintf (stderr, "mandrill-publish: out of memory starting %" PRId64 " publishers\n",
                 opts.publishers);
        free (publishers);
        free (threads);
        for (size_t i = 0; i < list_count; i++)
            pub_request_free (&list [i]);
        free (list);
        return PUB_UNCONFIRMED;
    }
    //  List mode: contiguous shares, so each publisher keeps the file's order.
    size_t share_start = 0;
    for (int i = 0; i < opts.publishers; i++) {
        size_t share = 0;
        int64_t mock_count = 0;
        if (!opts.mock) {
            share = list_count / (size_t) opts.publishers
                  + ((size_t) i < list_count % (size_t) opts.publishers);
        }
        else
            mock_count = opts.count < 0 ? -1
                       : opts.count / opts.publishers + (i < opts.count % opts.publishers);
        publishers [i] = pub_window_new (i, &opts, &s_totals, list ? list + share_start : NULL,
                                         share, mock_count, opts.rate / (double) opts.publishers);
        if (!publishers [i]) {
            fprintf (stderr, "mandrill-publish: out of memory starting publisher %d\n", i);
            for (int j = 0; j < i; j++)
                pub_window_destroy (&publishers [j]);
            free (publishers);
            free (threads);
            for (size_t j = 0; j < list_count; j++)
                pub_request_free (&list [j]);
            free (list);
            return PUB_UNCONFIRMED;
        }
        share_start += share;
    }
    mdl_info ("publishing to %s with %" PRId64 " publisher%s, batches of up to %" PRId64,
              opts.broker, opts.publishers, opts.publishers > 1 ? "s" : "", opts.batch);
    int64_t t0 = s_now ();
    for (int i = 0; i < opts.publishers; i++)
        if (pthread_create (&threads [i], NULL, pub_window_run, publishers [i]) != 0) {
            mdl_error ("cannot start publisher %d", i);
            return PUB_UNCONFIRMED;
        }

    //  Wait for the threads: poll the signalfd with a one-second tick for
    //  progress; a thread's end is seen by counting finished ones.
    int64_t last_confirmed = 0, last_at = t0;
    int joined = 0;
    while (joined < opts.publishers) {
        struct pollfd item = { signal_fd, POLLIN, 0 };
        int rc = poll (&item, 1, 100);
        if (rc > 0 && (item.revents & POLLIN)) {
            struct signalfd_siginfo info;
            if (read (signal_fd, &info, sizeof info) == (ssize_t) sizeof info) {
                int stop = atomic_fetch_add (&s_totals.stop, 1);
                mdl_info ("Received exit signal %s, %s", strsignal ((int) info.ssi_signo),
                          stop == 0 ? "waiting for the batches in flight (again to stop now)"
                                    : "stopping now");
            }
        }
        while (joined < opts.publishers && pthread_tryjoin_np (threads [joined], NULL) == 0)
            joined++;
        if (progress && s_now () - last_at >= 1000)
            s_progress (t0, &last_confirmed, &last_at);
    }
    close (signal_fd);

    int result = input_result;
    for (int i = 0; i < opts.publishers; i++)
        if (pub_window_result (publishers [i]) > result)
            result = pub_window_result (publishers [i]);
    int64_t elapsed = s_now () - t0;
    int64_t confirmed = atomic_load (&s_totals.confirmed);
    mdl_info ("done: %" PRId64 " sent, %" PRId64 " confirmed (%" PRId64 " of them duplicates), %"
              PRId64 " not confirmed, %" PRId64 " batches resent, %.1f s, %.0f msgs/s",
              atomic_load (&s_totals.sent), confirmed, atomic_load (&s_totals.duplicates),
              atomic_load (&s_totals.failed), atomic_load (&s_totals.resends), elapsed / 1000.0,
              elapsed > 0 ? confirmed * 1000.0 / elapsed : 0.0);
    if (instance && result == PUB_OK)
        printf ("%s\n", list [0].id);
    for (size_t i = 0; i < list_count; i++)
        pub_request_free (&list [i]);
    free (list);
    for (int i = 0; i < opts.publishers; i++)
        pub_window_destroy (&publishers [i]);
    free (publishers);
    free (threads);
    return result;
}

int
main (int argc, char *argv [])
{
    //  Kept until exit: the configuration points into its values
    mdl_opt_t *opt = mdl_opt_new ("mandrill-publish", s_options, s_usage, s_epilogue);
    if (!opt)
        return PUB_UNCONFIRMED;
    int rc = s_main (opt, argc, argv);
    mdl_opt_destroy (&opt);
    return rc;
}
