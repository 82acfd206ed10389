/*  wrk_worker: see wrk_worker.h. */
#include "wrk_worker.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "mdl_curve.h"
#include "mdl_log.h"
#include "mmp.h"
#include "wrk_db.h"
#include "wrk_exec.h"

#define HOUSEKEEPING_MS     100         //  Heartbeat, liveness and grace checks
#define DEFAULT_HEARTBEAT   1000        //  Until WELCOME says otherwise
#define RECONNECT_MIN_MS    500         //  First reconnect backoff
#define RECONNECT_MAX_MS    10000       //  Backoff cap
#define SLOW_HANDLER_US     100000      //  --debug threshold
#define MAX_READ_BURST      256         //  Messages per reader call, keeps timers fair

typedef struct {
    wrk_options_t options;      //  Copied flags
    zloop_t *loop;              //  The one loop
    zsock_t *dealer;            //  To the broker, or NULL between reconnects
    int sigfd;                  //  signalfd of the handled signals
    wrk_db_t *db;               //  Database thread
    wrk_exec_t *exec;           //  Restart children, exec mode only
    wrk_jobs_t *jobs;           //  In-flight table
    uint64_t random_state;      //  For mdl_random_system
    mmp_buf_t buf;              //  Reused to build bodies
    int job_timer;              //  zloop timer id for the job table, or -1
    int64_t job_timer_at;       //  When it fires
    int64_t heartbeat_ms;       //  Effective heartbeat interval
    int64_t last_heard;         //  Monotonic ms of the broker's last message
    int64_t last_sent;          //  Monotonic ms of our last heartbeat
    int64_t last_hello;         //  Monotonic ms of our last HELLO
    int64_t reconnect_at;       //  Do not reconnect before this
    int reconnects;             //  Attempts since the last WELCOME
    bool welcomed;              //  WELCOME received on this connection
    bool draining;              //  Shutdown started
    int64_t drain_deadline;     //  End of the grace period
} worker_t;

static int64_t
s_now (void)
{
    return zclock_mono ();
}

//  --------------------------------------------------------------------------
//  Sending

static void
s_send (worker_t *self, mmp_command_t command)
{
    if (!self->dealer)
        return;
    if (self->buf.failed) {
        mdl_error ("out of memory building %s", mmp_command_name (command));
        return;
    }
    if (mmp_send (self->dealer, NULL, command, self->buf.data, self->buf.size) != 0)
        mdl_debug ("could not send %s (broker unreachable)", mmp_command_name (command));
}

static void
s_ids_body (worker_t *self, const uint64_t *ids, size_t count)
{
    mmp_buf_clear (&self->buf);
    mmp_buf_puts (&self->buf, "{\"delivery_ids\":");
    mmp_buf_id_array (&self->buf, ids, count);
}

static void
s_hello (worker_t *self)
{
    mmp_buf_clear (&self->buf);
    mmp_buf_printf (&self->buf, "{\"credit\":%" PRId64 ",\"name\":",
                    self->draining ? 0 : self->options.credit);
    mmp_buf_json_string (&self->buf, self->options.name);
    mmp_buf_puts (&self->buf, "}");
    s_send (self, MMP_HELLO);
    self->last_hello = s_now ();
}

static void
s_effect_extend (void *arg, const uint64_t *ids, size_t count)
{
    worker_t *self = arg;
    s_ids_body (self, ids, count);
    if (self->options.jobs.extension_ms > 0)
        mmp_buf_printf (&self->buf, ",\"extension_ms\":%" PRId64, self->options.jobs.extension_ms);
    mmp_buf_puts (&self->buf, "}");
    s_send (self, MMP_EXTEND);
    if (count > 1)
        mdl_debug ("EXTEND sent for %zu leases", count);
}

static void
s_effect_ack (void *arg, const uint64_t *ids, size_t count)
{
    worker_t *self = arg;
    s_ids_body (self, ids, count);
    mmp_buf_puts (&self->buf, "}");
    s_send (self, MMP_ACK);
}

static void
s_effect_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    worker_t *self = arg;
    s_ids_body (self, ids, count);
    mmp_buf_puts (&self->buf, ",\"reason\":");
    mmp_buf_json_string (&self->buf, reason);
    mmp_buf_puts (&self->buf, "}");
    s_send (self, MMP_NACK);
}

static void
s_effect_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    worker_t *self = arg;
    s_ids_body (self, ids, count);
    mmp_buf_puts (&self->buf, ",\"steps\":[");
    bool comma = false;
    if (steps & MMP_STEP_SAVE) {
        mmp_buf_puts (&self->buf, "\"save\"");
        comma = true;
    }
    if (steps & MMP_STEP_RESTART)
        mmp_buf_puts (&self->buf, comma ? ",\"restart\"" : "\"restart\"");
    mmp_buf_puts (&self->buf, "]}");
    s_send (self, MMP_PROGRESS);
}

static int
s_effect_save (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    return wrk_db_save (self->db, wrk_job_message_id (job), wrk_job_token (job),
                        wrk_job_instance_name (job), wrk_job_hostname (job),
                        wrk_job_attempt (job), wrk_job_received_wall (job));
}

static int
s_effect_restart (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    return wrk_exec_start (self->exec, wrk_job_token (job), wrk_job_hostname (job),
                           wrk_job_instance_name (job), wrk_job_message_id (job));
}

static void
s_effect_kill (void *arg, const wrk_job_t *job)
{
    worker_t *self = arg;
    if (self->exec)
        wrk_exec_kill (self->exec, wrk_job_token (job));
}

static void
s_effect_outcome (void *arg, const wrk_job_t *job, const char *outcome)
{
    worker_t *self = arg;
    wrk_db_outcome (self->db, wrk_job_message_id (job), outcome);
}

//  --------------------------------------------------------------------------
//  Connection

static int
s_connect (worker_t *self)
{
    zsock_destroy (&self->dealer);
    self->dealer = zsock_new (ZMQ_DEALER);
    if (!self->dealer)
        return -1;
    //  Never block the loop on a send: a full queue drops the message and
    //  the lease logic (extend again, expiry, redelivery) recovers
    zsock_set_sndtimeo (self->dealer, 0);
    zsock_set_sndhwm (self->dealer, 100000);
    zsock_set_rcvhwm (self->dealer, 100000);
    zsock_set_linger (self->dealer, 0);
    char error [300];
    if (mdl_curve_client_files (self->dealer, self->options.curve_cert, self->options.broker_cert,
                                error, sizeof error) != 0) {
        mdl_error ("CURVE: %s", error);
        zsock_destroy (&self->dealer);
        return -1;
    }
    if (zsock_connect (self->dealer, "%s", self->options.broker) != 0) {
        mdl_error ("cannot connect to %s", self->options.broker);
        zsock_destroy (&self->dealer);
        return -1;
    }
    self->welcomed = false;
    s_hello (self);
    return 0;
}

static void s_rearm (worker_t *self);
static int s_on_job_timer (zloop_t *loop, int timer_id, void *arg);
static int s_on_broker (zloop_t *loop, zsock_t *reader, void *arg);

static void
s_reconnect (worker_t *self)
{
    int64_t now = s_now ();
    int64_t backoff = RECONNECT_MIN_MS;
    for (int i = 0; i < self->reconnects && backoff < RECONNECT_MAX_MS; i++)
        backoff *= 2;
    if (backoff > RECONNECT_MAX_MS)
        backoff = RECONNECT_MAX_MS;
    self->reconnects++;
    mdl_warn ("Broker %s silent for %" PRId64 " ms; reconnecting (attempt %d, next in %" PRId64 " ms)",
              self->options.broker, now - self->last_heard, self->reconnects, backoff);
    if (self->dealer)
        zloop_reader_end (self->loop, self->dealer);
    if (s_connect (self) == 0)
        zloop_reader (self->loop, self->dealer, s_on_broker, self);
    self->reconnect_at = now + backoff;
}

static void
s_on_message (worker_t *self, mmp_msg_t *msg)
{
    switch (msg->command) {
        case MMP_WELCOME:
            self->welcomed = true;
            self->reconnects = 0;
            if (self->options.heartbeat_ms <= 0 && msg->heartbeat_ms > 0)
                self->heartbeat_ms = msg->heartbeat_ms;
            wrk_jobs_set_ack_deadline (self->jobs, msg->ack_deadline_ms);
            wrk_jobs_set_confirm_timeout (self->jobs, self->heartbeat_ms);
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
                    s_effect_nack (self, &msg->deliveries [i].delivery_id, 1, "shutdown");
                    continue;
                }
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
            if (msg->code && streq (msg->code, MMP_ERR_UNEXPECTED)) {
                //  The broker does not know us (it restarted): register again
                if (s_now () - self->last_hello >= 500) {
                    mdl_warn ("Broker does not know this worker (%s); sending HELLO again",
                              msg->reason ? msg->reason : "");
                    s_hello (self);
                }
            }
            else
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
}

//  Finish shutdown when the grace is over or nothing is left. Returns -1
//  to end the loop.
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
        mmp_buf_clear (&self->buf);
        mmp_buf_puts (&self->buf, "{}");
        s_send (self, MMP_BYE);
        wrk_db_flush (self->db);
        mdl_log_flush ();
        return -1;
    }
    if (wrk_db_flush (self->db) != 0)
        mdl_warn ("could not hand saves to the database thread; retrying");
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
s_on_broker (zloop_t *loop, zsock_t *reader, void *arg)
{
    worker_t *self = arg;
    HANDLER_BEGIN;
    for (int i = 0; i < MAX_READ_BURST && reader == self->dealer; i++) {
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        int rc = mmp_recv (self->dealer, false, NULL, MMP_FROM_BROKER, &msg, &err);
        if (rc == -1)
            break;
        self->last_heard = s_now ();
        if (rc == -2)
            mdl_warn ("malformed message from the broker: %s (%s)", err.code, err.reason);
        else
            s_on_message (self, &msg);
        mmp_msg_reset (&msg);
    }
    HANDLER_END ("broker");
}

static void
s_on_saved (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    worker_t *self = arg;
    wrk_jobs_saved (self->jobs, message_id, token, ok, error);
}

static int
s_on_db (zloop_t *loop, zsock_t *reader, void *arg)
{
    worker_t *self = arg;
    HANDLER_BEGIN;
    for (int i = 0; i < MAX_READ_BURST; i++) {
        if (wrk_db_recv (self->db, s_on_saved, self) < 0)
            break;
        if (!(zsock_events (reader) & ZMQ_POLLIN))
            break;
    }
    HANDLER_END ("database");
}

static void
s_on_restarted (void *arg, const char *message_id, uint64_t token, bool ok, const char *reason)
{
    worker_t *self = arg;
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
    mmp_buf_clear (&self->buf);
    mmp_buf_puts (&self->buf, "{\"credit\":0}");
    s_send (self, MMP_CREDIT);
    mdl_info ("Stopped taking work; %zu messages in flight, grace period %.1fs",
              wrk_jobs_size (self->jobs), (double) self->options.grace_ms / 1000.0);
}

static int
s_on_signal (zloop_t *loop, zmq_pollitem_t *item, void *arg)
{
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
    worker_t *self = arg;
    HANDLER_BEGIN;
    int64_t now = s_now ();
    if (now - self->last_sent >= self->heartbeat_ms) {
        mmp_buf_clear (&self->buf);
        mmp_buf_puts (&self->buf, "{}");
        s_send (self, MMP_HEARTBEAT);
        self->last_sent = now;
    }
    if (now - self->last_heard > 3 * self->heartbeat_ms && now >= self->reconnect_at)
        s_reconnect (self);
    //  The job timer may have been lost to a failed zloop_timer
    if (self->job_timer != -1 && now > self->job_timer_at + 1000)
        self->job_timer = -1;
    HANDLER_END ("housekeeping");
}

//  --------------------------------------------------------------------------

int
wrk_worker_run (const wrk_options_t *options)
{
    worker_t self_, *self = &self_;
    memset (self, 0, sizeof *self);
    self->options = *options;
    self->sigfd = -1;
    self->job_timer = -1;
    self->heartbeat_ms = options->heartbeat_ms > 0 ? options->heartbeat_ms : DEFAULT_HEARTBEAT;
    mmp_buf_init (&self->buf);
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
        return 1;
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
    self->db = wrk_db_new (options->db_path, options->name, error, sizeof error);
    if (!self->db) {
        mdl_error ("database: %s", error);
        goto done;
    }
    wrk_effects_t effects = {
        self, s_effect_extend, s_effect_ack, s_effect_nack, s_effect_progress,
        s_effect_save, s_effect_restart, s_effect_kill, s_effect_outcome
    };
    wrk_config_t config = options->jobs;
    config.restart_mode = self->exec ? WRK_RESTART_EXTERNAL : WRK_RESTART_SIMULATE;
    config.confirm_timeout_ms = self->heartbeat_ms;
    self->jobs = wrk_jobs_new (&config, &effects, mdl_clock_system (),
                               mdl_random_system (&self->random_state));
    self->loop = zloop_new ();
    if (!self->jobs || !self->loop) {
        mdl_error ("out of memory");
        goto done;
    }
    self->last_heard = s_now ();
    self->reconnect_at = s_now ();
    if (s_connect (self) != 0)
        goto done;
    zmq_pollitem_t signal_item = { NULL, self->sigfd, ZMQ_POLLIN, 0 };
    if (zloop_reader (self->loop, self->dealer, s_on_broker, self) != 0
    ||  zloop_reader (self->loop, zactor_sock (wrk_db_actor (self->db)), s_on_db, self) != 0
    ||  zloop_poller (self->loop, &signal_item, s_on_signal, self) != 0
    ||  zloop_timer (self->loop, HOUSEKEEPING_MS, 0, s_on_housekeeping, self) == -1) {
        mdl_error ("cannot set up the loop");
        goto done;
    }
    mdl_info ("Worker %s started: broker %s, credit %" PRId64 ", restart %s, database %s",
              options->name, options->broker, options->credit,
              self->exec ? "exec" : "simulate", options->db_path);
    mdl_log_flush ();
    zloop_start (self->loop);
    rc = 0;

done:
    zloop_destroy (&self->loop);
    if (self->db) {
        mdl_info ("Closing database connections");
        mdl_log_flush ();
    }
    wrk_db_destroy (&self->db);
    if (self->dealer) {
        //  Let the NACKs and BYE reach the broker
        zsock_set_linger (self->dealer, 2000);
        zsock_destroy (&self->dealer);
    }
    wrk_jobs_destroy (&self->jobs);
    wrk_exec_destroy (&self->exec);
    mmp_buf_free (&self->buf);
    if (self->sigfd >= 0)
        close (self->sigfd);
    if (rc == 0)
        mdl_info ("Shutdown complete");
    mdl_log_flush ();
    return rc;
}
