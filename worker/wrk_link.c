/*  wrk_link: see wrk_link.h. Every command body is built by proto/'s
    encoders (mmp_encode_*); this file only sends them.
*/
#include "wrk_link.h"

#include <assert.h>
#include <stdlib.h>

#include "mdl_curve.h"
#include "mdl_log.h"

#define DEFAULT_HEARTBEAT   1000        //  Until WELCOME says otherwise
#define RECONNECT_MIN_MS    500         //  First reconnect backoff
#define RECONNECT_MAX_MS    10000       //  Backoff cap
#define REHELLO_MIN_MS      500         //  Least time between two HELLOs on ERROR
#define MAX_READ_BURST      256         //  Messages per reader call, keeps timers fair

struct _wrk_link_t {
    wrk_options_t options;      //  Copied flags (broker, credit, name, extension)
    zloop_t *loop;              //  The owner's loop
    zsock_t *dealer;            //  To the broker, or NULL between reconnects
    wrk_link_message_fn *on_message;    //  Owner's handler for each message
    wrk_link_after_fn *after;   //  Owner's handler after each burst
    void *arg;                  //  For both
    mmp_buf_t buf;              //  Reused to build bodies
    int64_t heartbeat_ms;       //  Effective heartbeat interval
    int64_t last_heard;         //  Monotonic ms of the broker's last message
    int64_t last_sent;          //  Monotonic ms of our last heartbeat
    int64_t last_hello;         //  Monotonic ms of our last HELLO
    int64_t reconnect_at;       //  Do not reconnect before this
    int reconnects;             //  Attempts since the last WELCOME
    bool welcomed;              //  WELCOME received on this connection
    bool draining;              //  No more work: credit 0
};

static int64_t
s_now (void)
{
    return zclock_mono ();
}

//  --------------------------------------------------------------------------
//  Sending

static void
s_send (wrk_link_t *self, mmp_command_t command)
{
    if (!self->dealer)
        return;
    if (mmp_buf_failed (&self->buf)) {
        mdl_error ("out of memory building %s", mmp_command_name (command));
        return;
    }
    if (mmp_send (self->dealer, NULL, command, mmp_buf_data (&self->buf), mmp_buf_size (&self->buf)) != 0)
        mdl_debug ("could not send %s (broker unreachable)", mmp_command_name (command));
}

static void
s_hello (wrk_link_t *self)
{
    //  Every worker reads the in-doubt mark and keeps each message's
    //  publisher in its saved row; one with a verify command says so, so a
    //  policy with in_doubt = dead_letter may lease to it
    unsigned features = MMP_FEATURE_IN_DOUBT | MMP_FEATURE_PUBLISHER
                      | (self->options.verify_cmd ? MMP_FEATURE_VERIFY : 0);
    mmp_encode_hello (&self->buf, self->draining ? 0 : self->options.credit,
                      self->options.name, NULL, features);
    s_send (self, MMP_HELLO);
    self->last_hello = s_now ();
}

static void
s_effect_extend (void *arg, const uint64_t *ids, size_t count)
{
    wrk_link_t *self = arg;
    mmp_encode_extend (&self->buf, ids, count,
                       self->options.jobs.extension_ms > 0 ? self->options.jobs.extension_ms : -1);
    s_send (self, MMP_EXTEND);
    if (count > 1)
        mdl_debug ("EXTEND sent for %zu leases", count);
}

static void
s_effect_ack (void *arg, const uint64_t *ids, size_t count)
{
    wrk_link_t *self = arg;
    mmp_encode_ack (&self->buf, ids, count);
    s_send (self, MMP_ACK);
}

static void
s_effect_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    wrk_link_t *self = arg;
    mmp_encode_nack (&self->buf, ids, count, -1, reason);
    s_send (self, MMP_NACK);
}

static void
s_effect_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    wrk_link_t *self = arg;
    mmp_encode_progress (&self->buf, ids, count, steps);
    s_send (self, MMP_PROGRESS);
}


//  --------------------------------------------------------------------------
//  Connection

static int s_on_broker (zloop_t *loop, zsock_t *reader, void *arg);

static int
s_connect (wrk_link_t *self)
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
    if (zloop_reader (self->loop, self->dealer, s_on_broker, self) != 0) {
        mdl_error ("cannot watch the connection to %s", self->options.broker);
        zsock_destroy (&self->dealer);
        return -1;
    }
    self->welcomed = false;
    s_hello (self);
    return 0;
}

static void
s_reconnect (wrk_link_t *self)
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
    //  A failed attempt (logged) leaves no socket; the next tick tries again
    s_connect (self);
    self->reconnect_at = now + backoff;
}

//  What the link itself takes from a message before the owner sees it.
static void
s_on_message (wrk_link_t *self, mmp_msg_t *msg)
{
    if (msg->command == MMP_WELCOME) {
        self->welcomed = true;
        self->reconnects = 0;
        if (self->options.heartbeat_ms <= 0 && msg->heartbeat_ms > 0)
            self->heartbeat_ms = msg->heartbeat_ms;
    }
    else
    if (msg->command == MMP_ERROR && msg->code && streq (msg->code, MMP_ERR_UNEXPECTED)) {
        //  The broker does not know us (it restarted): register again
        if (s_now () - self->last_hello >= REHELLO_MIN_MS) {
            mdl_warn ("Broker does not know this worker (%s); sending HELLO again",
                      msg->reason ? msg->reason : "");
            s_hello (self);
        }
    }
    self->on_message (self->arg, msg);
}

static int
s_on_broker (zloop_t *loop, zsock_t *reader, void *arg)
{
    (void) loop;
    wrk_link_t *self = arg;
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
    return self->after (self->arg);
}

//  --------------------------------------------------------------------------

wrk_link_t *
wrk_link_new (const wrk_options_t *options, zloop_t *loop,
              wrk_link_message_fn *on_message, wrk_link_after_fn *after, void *arg)
{
    assert (options && loop && on_message && after);
    wrk_link_t *self = calloc (1, sizeof *self);
    if (!self) {
        mdl_error ("out of memory");
        return NULL;
    }
    self->options = *options;
    self->loop = loop;
    self->on_message = on_message;
    self->after = after;
    self->arg = arg;
    mmp_buf_init (&self->buf);
    self->heartbeat_ms = options->heartbeat_ms > 0 ? options->heartbeat_ms : DEFAULT_HEARTBEAT;
    self->last_heard = s_now ();
    self->reconnect_at = s_now ();
    if (s_connect (self) != 0) {
        wrk_link_destroy (&self);
        return NULL;
    }
    return self;
}

void
wrk_link_destroy (wrk_link_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        wrk_link_t *self = *self_p;
        if (self->dealer) {
            zloop_reader_end (self->loop, self->dealer);
            //  Let the NACKs and BYE reach the broker
            zsock_set_linger (self->dealer, 2000);
            zsock_destroy (&self->dealer);
        }
        mmp_buf_free (&self->buf);
        free (self);
        *self_p = NULL;
    }
}

void
wrk_link_extend (wrk_link_t *self, const uint64_t *ids, size_t count)
{
    s_effect_extend (self, ids, count);
}

void
wrk_link_ack (wrk_link_t *self, const uint64_t *ids, size_t count)
{
    s_effect_ack (self, ids, count);
}

void
wrk_link_nack (wrk_link_t *self, const uint64_t *ids, size_t count, const char *reason)
{
    s_effect_nack (self, ids, count, reason);
}

void
wrk_link_nack_requeue (wrk_link_t *self, const uint64_t *ids, size_t count, const char *reason)
{
    mmp_encode_nack_requeue (&self->buf, ids, count, reason);
    s_send (self, MMP_NACK);
}

void
wrk_link_progress (wrk_link_t *self, const uint64_t *ids, size_t count, unsigned steps)
{
    s_effect_progress (self, ids, count, steps);
}

void
wrk_link_stop_taking_work (wrk_link_t *self)
{
    self->draining = true;
    mmp_encode_credit (&self->buf, 0);
    s_send (self, MMP_CREDIT);
}

void
wrk_link_bye (wrk_link_t *self)
{
    mmp_encode_empty (&self->buf);
    s_send (self, MMP_BYE);
}

void
wrk_link_tick (wrk_link_t *self)
{
    int64_t now = s_now ();
    if (now - self->last_sent >= self->heartbeat_ms) {
        mmp_encode_empty (&self->buf);
        s_send (self, MMP_HEARTBEAT);
        self->last_sent = now;
    }
    if (now - self->last_heard > 3 * self->heartbeat_ms && now >= self->reconnect_at)
        s_reconnect (self);
}

int64_t
wrk_link_heartbeat_ms (wrk_link_t *self)
{
    return self->heartbeat_ms;
}
