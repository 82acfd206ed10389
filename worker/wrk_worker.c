/*  wrk_worker: see wrk_worker.h. */
#include "wrk_worker.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "mdl_curve.h"
#include "mdl_http.h"
#include "mdl_log.h"
#include "mdl_metrics.h"
#include "mmp.h"
#include "wrk_db.h"
#include "wrk_exec.h"
#include "wrk_link.h"
#include "wrk_metrics.h"

#define HOUSEKEEPING_MS     100         //  Heartbeat, liveness and grace checks
#define SLOW_HANDLER_US     100000      //  --debug threshold

//  Children of one job share its token; the kind rides in the top bits,
//  so that a verify's or a health try's exit is routed to its step.
#define TOKEN_KIND_SHIFT    62
#define TOKEN_RESTART       (UINT64_C (0) << TOKEN_KIND_SHIFT)
#define TOKEN_VERIFY        (UINT64_C (1) << TOKEN_KIND_SHIFT)
#define TOKEN_HEALTH        (UINT64_C (2) << TOKEN_KIND_SHIFT)
#define TOKEN_MASK          ((UINT64_C (1) << TOKEN_KIND_SHIFT) - 1)

typedef struct {
    wrk_options_t options;      //  Copied flags
    zloop_t *loop;              //  The one loop
    wrk_link_t *link;           //  To the broker
    int sigfd;                  //  signalfd of the handled signals
    wrk_db_t *db;               //  The store (wrk_db.h)
    wrk_db_watch_t db_watch;    //  What the loop polls for it now
    wrk_exec_t *exec;           //  Restart children (and their table), exec mode only
    wrk_exec_t *verify;         //  --verify-cmd template, or NULL
    wrk_exec_t *health;         //  --health-cmd template, or NULL
    wrk_jobs_t *jobs;           //  In-flight table
    uint64_t random_state;      //  For mdl_random_system
    int job_timer;              //  zloop timer id for the job table, or -1
    int64_t job_timer_at;       //  When it fires
    bool draining;              //  Shutdown started
    int64_t drain_deadline;     //  End of the grace period
    mdl_metrics_t *registry;    //  Every series of the process
    wrk_metrics_t *metrics;     //  The worker's series in it
    mdl_http_t *http;           //  Serves registry with --metrics, or NULL
} worker_t;

static int64_t
s_now (void)
{
    return zclock_mono ();
}

//  --------------------------------------------------------------------------
//  Sending

//  The job table's effects: commands go to the link, saves to the store,
//  restarts to the children.

static void
s_effect_extend (void *arg, const uint64_t *ids, size_t count)
{
    worker_t *self = arg;
    wrk_link_extend (self->link, ids, count);
}

static void
s_effect_ack (void *arg, const uint64_t *ids, size_t count)
{
    worker_t *self = arg;
    wrk_link_ack (self->link, ids, count);
}

static void
s_effect_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    worker_t *self = arg;
    //  Shutting down, the work was not done: give it back without using
    //  up an attempt (a rolling restart of workers dead-letters nothing)
    if (reason && streq (reason, wrk_nack_name (WRK_NACK_SHUTDOWN)))
        wrk_link_nack_requeue (self->link, ids, count, reason);
    else
        wrk_link_nack (self->link, ids, count, reason);
}

static void
s_effect_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    worker_t *self = arg;
    wrk_link_progress (self->link, ids, count, steps);
}

static int
s_effect_save (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    wrk_db_row_t row = {
        .message_id = wrk_job_message_id (job),
        .token = wrk_job_token (job),
        .instance_name = wrk_job_instance_name (job),
        .hostname = wrk_job_hostname (job),
        .attempt = wrk_job_attempt (job),
        .received_wall_ms = wrk_job_received_wall (job),
        .publisher = wrk_job_publisher (job)
    };
    row.attributes = wrk_job_attributes (job, &row.attributes_size);
    return wrk_db_save (self->db, &row);
}

static int
s_effect_restart (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    return wrk_exec_start (self->exec, wrk_job_token (job), wrk_job_hostname (job),
                           wrk_job_instance_name (job), wrk_job_message_id (job));
}

static int
s_effect_verify (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    return wrk_exec_start_as (self->exec, self->verify, wrk_job_token (job) | TOKEN_VERIFY,
                              wrk_job_hostname (job), wrk_job_instance_name (job),
                              wrk_job_message_id (job));
}

static int
s_effect_health (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    return wrk_exec_start_as (self->exec, self->health, wrk_job_token (job) | TOKEN_HEALTH,
                              wrk_job_hostname (job), wrk_job_instance_name (job),
                              wrk_job_message_id (job));
}

//  Every child of the job: at most one of them runs at a time.
static void
s_effect_kill (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    if (self->exec) {
        wrk_exec_kill (self->exec, wrk_job_token (job) | TOKEN_RESTART);
        wrk_exec_kill (self->exec, wrk_job_token (job) | TOKEN_VERIFY);
        wrk_exec_kill (self->exec, wrk_job_token (job) | TOKEN_HEALTH);
    }
}

static void
s_effect_outcome (void *arg, const wrk_job_t *job, const char *outcome)
{
    worker_t *self = arg;
    if (wrk_db_outcome (self->db, wrk_job_message_id (job), outcome, mdl_clock_wall ()) != 0)
        mdl_warn ("out of memory recording the outcome of %s", wrk_job_message_id (job));
}

static void
s_effect_timed (void *arg, wrk_timed_t step, bool ok, int64_t ms)
{
    worker_t *self = arg;
    wrk_metrics_timed (self->metrics, step, ok, ms);
}

static void s_rearm (worker_t *self);
static int s_on_job_timer (zloop_t *loop, int timer_id, void *arg);

//  A message from the broker, after the link took what it needs.
static void
s_on_message (void *arg, mmp_msg_t *msg)
{
    worker_t *self = arg;
    switch (msg->command) {
        case MMP_WELCOME:
            wrk_jobs_set_ack_deadline (self->jobs, msg->ack_deadline_ms);
            wrk_jobs_set_confirm_timeout (self->jobs, wrk_link_heartbeat_ms (self->link));
            mdl_info ("Connected to broker %s (ack deadline %" PRId64 " ms, heartbeat %"
                      PRId64 " ms, epoch %" PRId64 "), credit %" PRId64 ", %zu in flight",
                      self->options.broker, msg->ack_deadline_ms, msg->heartbeat_ms,
                      msg->epoch, self->draining ? 0 : self->options.credit,
                      wrk_jobs_size (self->jobs));
            {
                //  What we sent before the broker knew us may have been
                //  answered with ERROR: send it again now that it does
                size_t resent = wrk_jobs_resend (self->jobs);
                if (resent)
                    mdl_info ("Resending unconfirmed acks, nacks and progress of %zu messages",
                              resent);
            }
            break;
        case MMP_DELIVER:
            for (size_t i = 0; i < msg->delivery_count; i++) {
                if (self->draining) {
                    //  Sent before our CREDIT 0 arrived: give it straight back
                    wrk_link_nack_requeue (self->link, &msg->deliveries [i].delivery_id, 1,
                                           wrk_nack_name (WRK_NACK_SHUTDOWN));
                    continue;
                }
                //  -1: refused, and already NACKed by the table
                wrk_jobs_deliver (self->jobs, &msg->deliveries [i]);
            }
            break;
        case MMP_EXTENDED:
            wrk_jobs_reply (self->jobs, msg);
            break;
        case MMP_ACKED:
        case MMP_NACKED:
        case MMP_PROGRESSED:
            if (msg->stale_count || msg->unknown_count)
                mdl_info ("Broker answered %s: %zu stale, %zu unknown (leases it no longer holds)",
                          mmp_command_name (msg->command), msg->stale_count, msg->unknown_count);
            wrk_jobs_reply (self->jobs, msg);
            break;
        case MMP_ERROR:
            if (!msg->code || !streq (msg->code, MMP_ERR_UNEXPECTED))
                mdl_warn ("Broker error %s: %s", msg->code ? msg->code : "?",
                          msg->reason ? msg->reason : "");
            break;
        case MMP_HEARTBEAT:
            break;
        default:
            mdl_warn ("unexpected %s from the broker; ignored", mmp_command_name (msg->command));
            break;
    }
}

//  --------------------------------------------------------------------------
//  After every handler

static void
s_rearm (worker_t *self)
{
    int64_t wake = wrk_jobs_next_wake (self->jobs);
    if (wake < 0)
        return;
    if (self->job_timer != -1 && self->job_timer_at <= wake)
        return;
    if (self->job_timer != -1)
        zloop_timer_end (self->loop, self->job_timer);
    int64_t delay = wake - s_now ();
    if (delay < 1)
        delay = 1;
    self->job_timer_at = s_now () + delay;
    self->job_timer = zloop_timer (self->loop, (size_t) delay, 1, s_on_job_timer, self);
    if (self->job_timer == -1)
        //  Tried again after the next handler (housekeeping: 100 ms)
        mdl_error ("cannot arm the job timer; retrying");
}

//  Finish shutdown when the grace is over or nothing is left. Returns -1
//  to end the loop.
static int s_db_rewatch (worker_t *self);

static int
s_after (worker_t *self)
{
    wrk_jobs_flush (self->jobs);
    //  Done when nothing works and every ACK/NACK is confirmed, or when the
    //  grace is over
    if (self->draining
    &&  ((wrk_jobs_size (self->jobs) == 0 && wrk_jobs_unconfirmed (self->jobs, NULL, NULL) == 0)
         || s_now () >= self->drain_deadline)) {
        size_t acks, nacks;
        wrk_jobs_unconfirmed (self->jobs, &acks, &nacks);
        if (acks || nacks)
            mdl_warn ("Shutdown: %zu acks and %zu nacks left unconfirmed by the broker "
                      "(those messages will be delivered again)", acks, nacks);
        else
            mdl_info ("Shutdown: every ack and nack confirmed by the broker");
        mdl_info ("Nacking %zu outstanding messages", wrk_jobs_size (self->jobs));
        wrk_jobs_nack_all (self->jobs);
        wrk_jobs_flush (self->jobs);
        wrk_link_bye (self->link);
        wrk_db_flush (self->db);
        mdl_log_flush ();
        return -1;
    }
    if (wrk_db_flush (self->db) != 0)
        mdl_warn ("could not hand saves to the database; retrying");
    s_db_rewatch (self);
    s_rearm (self);
    mdl_log_flush ();
    return 0;
}

#define HANDLER_BEGIN int64_t started_us = self->options.debug ? zclock_usecs () : 0
#define HANDLER_END(name) \
    if (self->options.debug && zclock_usecs () - started_us > SLOW_HANDLER_US) \
        mdl_warn ("slow handler %s: %" PRId64 " ms", name, (zclock_usecs () - started_us) / 1000); \
    return s_after (self)

static int
s_on_link_after (void *arg)
{
    worker_t *self = arg;
    return s_after (self);
}

static void
s_on_saved (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    worker_t *self = arg;
    if (!ok)
        wrk_metrics_db_error (self->metrics);
    wrk_jobs_saved (self->jobs, message_id, token, ok, error);
}

static int
s_on_db (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    (void) reader;
    worker_t *self = arg;
    HANDLER_BEGIN;
    wrk_db_service (self->db, s_on_saved, self);
    HANDLER_END ("database");
}

static int
s_on_db_fd (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) item;
    (void) loop;
    worker_t *self = arg;
    HANDLER_BEGIN;
    wrk_db_service (self->db, s_on_saved, self);
    HANDLER_END ("database");
}

//  The store says what to poll; it may change after any call into it
//  (a new connection, a pipeline with bytes to send). Re-registered here,
//  after every handler, only when it differs.
static int
s_db_rewatch (worker_t *self)
{
    wrk_db_watch_t watch;
    wrk_db_watch (self->db, &watch);
    if (watch.sock == self->db_watch.sock && watch.fd == self->db_watch.fd
    &&  watch.events == self->db_watch.events)
        return 0;
    if (self->db_watch.sock)
        zloop_reader_end (self->loop, self->db_watch.sock);
    if (self->db_watch.fd >= 0) {
        zmq_pollitem_t item = { NULL, self->db_watch.fd, 0, 0 };
        zloop_poller_end (self->loop, &item);
    }
    self->db_watch.sock = NULL;
    self->db_watch.fd = -1;
    self->db_watch.events = 0;
    int rc = 0;
    if (watch.sock)
        rc = zloop_reader (self->loop, watch.sock, s_on_db, self);
    else
    if (watch.fd >= 0) {
        zmq_pollitem_t item = { NULL, watch.fd, watch.events ? watch.events : ZMQ_POLLIN, 0 };
        rc = zloop_poller (self->loop, &item, s_on_db_fd, self);
    }
    if (rc != 0) {
        mdl_error ("cannot watch the database; retrying");
        return -1;
    }
    self->db_watch = watch;
    return 0;
}

static void
s_on_restarted (void *arg, const char *message_id, uint64_t token, bool ok, const char *reason)
{
    worker_t *self = arg;
    uint64_t kind = token & ~TOKEN_MASK;
    token &= TOKEN_MASK;
    if (kind == TOKEN_VERIFY)
        wrk_jobs_verified (self->jobs, message_id, token, ok, reason);
    else
    if (kind == TOKEN_HEALTH)
        wrk_jobs_healthy (self->jobs, message_id, token, ok, reason);
    else
        wrk_jobs_restarted (self->jobs, message_id, token, ok, reason);
}

static void
s_begin_shutdown (worker_t *self, const char *name)
{
    if (self->draining) {
        mdl_info ("Received exit signal %s again; ending the grace period now", name);
        self->drain_deadline = s_now ();
        return;
    }
    mdl_info ("Received exit signal %s", name);
    self->draining = true;
    self->drain_deadline = s_now () + self->options.grace_ms;
    wrk_link_stop_taking_work (self->link);
    mdl_info ("Stopped taking work; %zu messages in flight, grace period %.1fs",
              wrk_jobs_size (self->jobs), (double) self->options.grace_ms / 1000.0);
}

static int
s_on_signal (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
    (void) item;
    (void) loop;
    worker_t *self = arg;
    HANDLER_BEGIN;
    struct signalfd_siginfo info;
    while (read (self->sigfd, &info, sizeof info) == (ssize_t) sizeof info) {
        switch (info.ssi_signo) {
            case SIGTERM: s_begin_shutdown (self, "SIGTERM"); break;
            case SIGINT:  s_begin_shutdown (self, "SIGINT"); break;
            case SIGHUP:  s_begin_shutdown (self, "SIGHUP"); break;
            case SIGQUIT: s_begin_shutdown (self, "SIGQUIT"); break;
            case SIGUSR1: wrk_jobs_dump (self->jobs); break;
            case SIGCHLD:
                if (self->exec)
                    wrk_exec_reap (self->exec, s_on_restarted, self);
                break;
            default: break;
        }
    }
    HANDLER_END ("signal");
}

static int
s_on_job_timer (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    worker_t *self = arg;
    HANDLER_BEGIN;
    if (timer_id == self->job_timer)
        self->job_timer = -1;
    wrk_jobs_tick (self->jobs);
    HANDLER_END ("timer");
}

static int
s_on_housekeeping (zloop_t *loop, int timer_id, void *arg)
{
    (void) loop;
    (void) timer_id;
    worker_t *self = arg;
    HANDLER_BEGIN;
    int64_t now = s_now ();
    wrk_link_tick (self->link);
    //  The store's own timers (reconnect backoff), at housekeeping pace
    int64_t db_wake = wrk_db_next_wake (self->db);
    if (db_wake >= 0 && now >= db_wake)
        wrk_db_service (self->db, s_on_saved, self);
    //  The job timer may have been lost to a failed zloop_timer
    if (self->job_timer != -1 && now > self->job_timer_at + 1000)
        self->job_timer = -1;
    mdl_metrics_collect (self->registry, now);
    HANDLER_END ("housekeeping");
}

//  --------------------------------------------------------------------------

int
wrk_worker_run (const wrk_options_t *options)
{
    worker_t self_, *self = &self_;
    memset (self, 0, sizeof *self);
    self->options = *options;
    self->db = options->db;         //  Ours from here on, also on failure
    self->db_watch.fd = -1;
    self->sigfd = -1;
    self->job_timer = -1;
    int rc = 1;

    //  Before any thread exists, so that no thread takes these signals
    zsys_handler_set (NULL);
    sigset_t signals;
    sigemptyset (&signals);
    sigaddset (&signals, SIGTERM);
    sigaddset (&signals, SIGINT);
    sigaddset (&signals, SIGHUP);
    sigaddset (&signals, SIGQUIT);
    sigaddset (&signals, SIGUSR1);
    sigaddset (&signals, SIGCHLD);
    if (pthread_sigmask (SIG_BLOCK, &signals, NULL) != 0
    ||  (self->sigfd = signalfd (-1, &signals, SFD_NONBLOCK | SFD_CLOEXEC)) < 0) {
        mdl_error ("cannot set up signal handling: %s", strerror (errno));
        goto done;
    }
    mdl_log_set_buffered (true);

    char error [256];
    if (options->restart_cmd) {
        self->exec = wrk_exec_new (options->restart_cmd, error, sizeof error);
        if (!self->exec) {
            mdl_error ("%s", error);
            goto done;
        }
    }
    if (options->verify_cmd && !(self->verify = wrk_exec_new (options->verify_cmd, error, sizeof error))) {
        mdl_error ("--verify-cmd: %s", error);
        goto done;
    }
    if (options->health_cmd && !(self->health = wrk_exec_new (options->health_cmd, error, sizeof error))) {
        mdl_error ("--health-cmd: %s", error);
        goto done;
    }
    if ((self->verify || self->health) && !self->exec) {
        mdl_error ("--verify-cmd and --health-cmd need --restart exec");
        goto done;
    }
    //  Rows name the worker as the broker names it (brk_backend.c HELLO):
    //  under CURVE by its key, "KEY/NAME" when --name differs, so workers
    //  that share a key stay apart; without CURVE by --name
    char identity [MDL_CURVE_NAME_MAX], row_name [MDL_CURVE_NAME_MAX + 64];
    const char *row_worker = options->name;
    if (options->curve_cert
    &&  mdl_curve_identity (options->curve_cert, identity, sizeof identity, NULL, 0) == 0
    &&  identity [0]) {
        if (options->name && strcmp (options->name, identity) != 0)
            snprintf (row_name, sizeof row_name, "%.31s/%.31s", identity, options->name);
        else
            snprintf (row_name, sizeof row_name, "%.63s", identity);
        row_worker = row_name;
    }
    if (!self->db)
        self->db = wrk_db_new (options->db_url, row_worker, error, sizeof error);
    if (!self->db) {
        mdl_error ("database: %s", error);
        goto done;
    }
    wrk_effects_t effects = {
        self, s_effect_extend, s_effect_ack, s_effect_nack, s_effect_progress,
        s_effect_save, s_effect_restart, s_effect_kill, s_effect_outcome, s_effect_timed,
        self->verify ? s_effect_verify : NULL, self->health ? s_effect_health : NULL
    };
    wrk_config_t config = options->jobs;
    config.restart_mode = self->exec ? WRK_RESTART_EXTERNAL : WRK_RESTART_SIMULATE;
    config.confirm_timeout_ms = options->heartbeat_ms > 0 ? options->heartbeat_ms : 1000;
    self->jobs = wrk_jobs_new (&config, &effects, mdl_clock_system (),
                               mdl_random_system (&self->random_state));
    self->loop = zloop_new ();
    self->registry = mdl_metrics_new ();
    self->metrics = self->registry ? wrk_metrics_new (self->registry) : NULL;
    if (!self->jobs || !self->loop || !self->metrics
    ||  wrk_metrics_attach (self->metrics, self->jobs, s_now ()) != 0) {
        mdl_error ("out of memory");
        goto done;
    }
    self->link = wrk_link_new (options, self->loop, s_on_message, s_on_link_after, self);
    if (!self->link)
        goto done;
    zmq_pollitem_t signal_item = { NULL, self->sigfd, ZMQ_POLLIN, 0 };
    if (s_db_rewatch (self) != 0
    ||  zloop_poller (self->loop, &signal_item, s_on_signal, self) != 0
    ||  zloop_timer (self->loop, HOUSEKEEPING_MS, 0, s_on_housekeeping, self) == -1) {
        mdl_error ("cannot set up the loop");
        goto done;
    }
    //  After the signal mask: the server's thread blocks every signal
    if (options->metrics && !(self->http = mdl_http_new (options->metrics, self->registry))) {
        mdl_error ("cannot serve metrics on %s: %s", options->metrics, strerror (errno));
        goto done;
    }
    char db_safe [512];
    wrk_db_url_redact (options->db_url ? options->db_url : wrk_db_name (self->db),
                       db_safe, sizeof db_safe);
    mdl_info ("Worker %s started: broker %s, credit %" PRId64 ", restart %s%s%s, database %s",
              options->name, options->broker, options->credit,
              self->exec ? "exec" : "simulate", self->verify ? ", verify" : "",
              self->health ? ", health check" : "", db_safe);
    mdl_log_flush ();
    zloop_start (self->loop);
    rc = 0;

done:
    mdl_http_destroy (&self->http);     //  No scrape from here on
    wrk_link_destroy (&self->link);     //  Before the loop it is registered with
    zloop_destroy (&self->loop);
    if (self->db) {
        mdl_info ("Closing database connections");
        mdl_log_flush ();
    }
    wrk_db_destroy (&self->db);
    wrk_jobs_destroy (&self->jobs);
    wrk_metrics_destroy (&self->metrics);
    mdl_metrics_destroy (&self->registry);
    wrk_exec_destroy (&self->exec);
    wrk_exec_destroy (&self->verify);
    wrk_exec_destroy (&self->health);
    if (self->sigfd >= 0)
        close (self->sigfd);
    if (rc == 0)
        mdl_info ("Shutdown complete");
    mdl_log_flush ();
    return rc;
}
