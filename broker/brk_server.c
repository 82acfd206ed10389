/*  brk_server: the broker actor; see brk_server.h.

    This file is the actor only: its pipe, the start and the stop, and one
    zmq_poll loop over the pipe, three sockets and the store's descriptor.
    Every wake-up drains each ready socket (up to a batch, so one busy
    peer cannot starve the others), then fires what is due in the queue,
    deals ready messages to workers with credit, commits what was stored,
    and sends heartbeats. What each socket speaks lives beside it
    (brk_frontend, brk_backend, brk_events, brk_dispatch, brk_durable: see
    brk_server_internal.h); the loop does not know which store it has.

    Time comes from config.clock (the system's monotonic clock unless a
    test injects one), so leases and heartbeats can be driven exactly;
    after moving an injected clock, send TICK: what is due fires before
    the answer.
*/
#include "brk_server_internal.h"

#include <errno.h>
#include <string.h>

#include "mdl_curve.h"
#include "mdl_log.h"

void
brk_server_config_defaults (brk_server_config_t *config)
{
    memset (config, 0, sizeof *config);
    brk_queue_config_defaults (&config->queue);
    brk_journal_config_defaults (&config->journal);
    config->data_dir = NULL;
    config->max_pending = BRK_MAX_PENDING_DEFAULT;
    config->max_memory = BRK_MAX_MEMORY_DEFAULT;
}

//  --------------------------------------------------------------------------
//  Pipe and loop

static zsock_t **
s_socket_named (s_server_t *self, const char *name, int *index)
{
    if (name && streq (name, "frontend")) {
        *index = 0;
        return &self->frontend;
    }
    if (name && streq (name, "backend")) {
        *index = 1;
        return &self->backend;
    }
    if (name && streq (name, "events")) {
        *index = 2;
        return &self->events;
    }
    return NULL;
}

//  A poll that returned far later than it was asked to means the process
//  did not run (SIGSTOP, a paused VM, a starved machine): heartbeats and
//  extensions sent meanwhile wait unread in the sockets, so the queue gives
//  everyone that time back before it judges silence (brk_queue_stalled).
//  A turn of the loop that itself took that long (a blocking write of the
//  policy state on a slow disk) read nothing meanwhile either: the same.
#define BRK_STALL_SLACK_MS 1000

static void
s_check_stall (s_server_t *self, int64_t before, long timeout)
{
    int64_t gap = mdl_clock_now (&self->clock) - before - timeout;
    if (gap <= BRK_STALL_SLACK_MS)
        return;
    mdl_warn ("broker did not run for %" PRId64 " ms (stopped?): workers and leases get that time "
              "back before their silence counts", gap);
    brk_queue_stalled (self->queue, gap);
}

//  Measures from *since and moves it to now, so a turn checked twice
//  gives back each part once.
static void
s_check_busy (s_server_t *self, int64_t *since)
{
    int64_t now = mdl_clock_now (&self->clock);
    int64_t took = now - *since;
    *since = now;
    if (took <= BRK_STALL_SLACK_MS)
        return;
    mdl_warn ("one turn of the broker's loop took %" PRId64 " ms (a slow disk?): workers and "
              "leases get that time back before their silence counts", took);
    brk_queue_stalled (self->queue, took);
}

static void
s_handle_pipe (s_server_t *self)
{
    zmsg_t *request = zmsg_recv (self->pipe);
    if (!request) {
        self->terminated = true;
        return;
    }
    char *command = zmsg_popstr (request);
    if (command && streq (command, "$TERM"))
        self->terminated = true;
    else
    if (command && streq (command, "TICK")) {
        //  Fire what is due at the clock's time now, before answering: a
        //  test that moved an injected clock then knows every DELIVER due
        //  by then is on its way
        brk_queue_tick (self->queue, brk_backend_worker_lost, self);
        brk_dispatch (self);
        zsock_send (self->pipe, "i", 0);
    }
    else
    if (command && streq (command, "STATUS"))
        zsock_send (self->pipe, "i", BRK_SERVER_OK);
    else
    if (command && streq (command, "RELOAD")) {
        //  SIGHUP in mandrill-broker
        char err [512];
        if (brk_server_policy_reload (self, err, sizeof err) == 0) {
            char text [600];
            snprintf (text, sizeof text, "reloaded %s", self->policy_file);
            zsock_send (self->pipe, "is", 0, text);
        }
        else
            zsock_send (self->pipe, "is", -1, err);
    }
    else
    if (command && streq (command, "BIND")) {
        char *name = zmsg_popstr (request);
        char *endpoint = zmsg_popstr (request);
        int index;
        zsock_t **sock = s_socket_named (self, name, &index);
        int port = -1;
        if (sock && *sock && endpoint && !self->auth && !brk_auth_local (endpoint)
        &&  !self->config.insecure)
            mdl_error ("refusing to bind %s to %s without CURVE: give --curve-cert (see "
                       "docs/SECURITY.md), or --insecure to accept anyone who can reach it",
                       name, endpoint);
        else
        if (sock && *sock && endpoint) {
            if (!self->auth && !brk_auth_local (endpoint))
                mdl_warn ("INSECURE: %s bound to %s without CURVE: anyone who can reach it can %s",
                          name, endpoint, streq (name, "backend")
                          ? "pose as a worker, take restart requests and ack them unrun"
                          : streq (name, "events") ? "read every event"
                          : "make Mandrill restart hosts and replay dead letters");
            port = zsock_bind (*sock, "%s", endpoint);
            if (port == -1)
                mdl_error ("cannot bind %s to %s: %s", name, endpoint, zmq_strerror (zmq_errno ()));
            else {
                //  zsock_bind returns 0 for endpoints without a port (ipc, inproc)
                self->ports [index] = port;
                mdl_info ("%s bound to %s", name, endpoint);
            }
        }
        zsock_send (self->pipe, "i", port);
        zstr_free (&name);
        zstr_free (&endpoint);
    }
    else
    if (command && streq (command, "PORT")) {
        char *name = zmsg_popstr (request);
        int index;
        zsock_t **sock = s_socket_named (self, name, &index);
        zsock_send (self->pipe, "i", sock ? self->ports [index] : -1);
        zstr_free (&name);
    }
    else
        mdl_error ("broker actor: unknown pipe command '%s'", command ? command : "(none)");
    zstr_free (&command);
    zmsg_destroy (&request);
}

static void
s_server_destroy (s_server_t **self_p)
{
    s_server_t *self = *self_p;
    if (!self)
        return;
    brk_durable_drop_replies (self);
    brk_store_destroy (&self->store);
    brk_metrics_destroy (&self->metrics);       //  After the journal: its io seam
    free (self->data_dir);
    zhashx_destroy (&self->peers);
    brk_queue_destroy (&self->queue);
    brk_policy_destroy (&self->policy);         //  After the queue, which uses it
    free (self->policy_file);
    zsock_destroy (&self->frontend);
    zsock_destroy (&self->backend);
    zsock_destroy (&self->events);
    brk_auth_destroy (&self->auth);
    mdl_rate_destroy (&self->warn_rate);
    free (self->flush);
    mmp_buf_free (&self->reply);
    mmp_buf_free (&self->event);
    free (self);
    *self_p = NULL;
}

//  CURVE on all three sockets, each with its side as ZAP domain, and the
//  ZAP handler that maps keys to roles. Returns 0 or -1 (logged).
static int
s_curve_setup (s_server_t *self, const brk_server_config_t *config)
{
    mdl_curve_cert_t cert;
    char error [300];
    if (mdl_curve_load (config->curve_cert, true, &cert, error, sizeof error) != 0) {
        mdl_error ("broker certificate: %s", error);
        return -1;
    }
    brk_auth_config_t auth_config;
    memset (&auth_config, 0, sizeof auth_config);
    for (int role = 0; role < BRK_ROLE_COUNT; role++)
        auth_config.dirs [role] = config->role_dirs [role];
    self->auth = brk_auth_new (&auth_config);
    if (!self->auth
    ||  mdl_curve_server (self->frontend, &cert, "frontend") != 0
    ||  mdl_curve_server (self->backend, &cert, "backend") != 0
    ||  mdl_curve_server (self->events, &cert, "events") != 0) {
        mdl_error ("cannot set up CURVE: %s", self->auth ? zmq_strerror (zmq_errno ()) : "no ZAP handler");
        return -1;
    }
    mdl_info ("CURVE on every socket; broker public key %s", cert.public_txt);
    memset (&cert, 0, sizeof cert);     //  libzmq keeps its own copy of the secret
    return 0;
}

static s_server_t *
s_server_new (zsock_t *pipe, const brk_server_config_t *config, int *status)
{
    *status = BRK_SERVER_FAILED;
    s_server_t *self = calloc (1, sizeof (s_server_t));
    if (!self)
        return NULL;
    self->pipe = pipe;
    self->config = *config;
    self->clock = config->clock.now ? config->clock : mdl_clock_system ();
    //  With an injected clock a test moves time itself: a jump is no stall
    self->watch_stalls = !config->clock.now;
    self->started = mdl_clock_now (&self->clock);
    self->ports [0] = self->ports [1] = self->ports [2] = -1;
    mmp_buf_init (&self->reply);
    mmp_buf_init (&self->event);
    self->frontend = zsock_new (ZMQ_ROUTER);
    self->backend = zsock_new (ZMQ_ROUTER);
    self->events = zsock_new (ZMQ_XPUB);
    self->peers = zhashx_new ();
    self->queue = brk_queue_new (&config->queue, self->clock);
    self->warn_rate = mdl_rate_new (self->clock, 20, 1000);
    self->data_dir = config->data_dir ? strdup (config->data_dir) : NULL;
    self->config.data_dir = self->data_dir;
    if (!self->frontend || !self->backend || !self->events || !self->peers || !self->queue
    ||  !self->warn_rate
    ||  (config->data_dir && !self->data_dir)) {
        s_server_destroy (&self);
        return NULL;
    }
    zhashx_set_destructor (self->peers, brk_backend_peer_destructor);
    //  No silent drops, no unbounded queues: a bounded queue per peer each
    //  way, and a send to a dead or full peer fails at once (sndtimeo 0)
    zsock_set_router_mandatory (self->frontend, 1);
    zsock_set_router_mandatory (self->backend, 1);
    zsock_set_sndhwm (self->frontend, BRK_PEER_SNDHWM);
    zsock_set_sndhwm (self->backend, BRK_PEER_SNDHWM);
    zsock_set_rcvhwm (self->frontend, BRK_PEER_RCVHWM);
    zsock_set_rcvhwm (self->backend, BRK_PEER_RCVHWM);
    zsock_set_sndtimeo (self->frontend, 0);
    zsock_set_sndtimeo (self->backend, 0);
    //  A slow subscriber loses events (XPUB drops at its mark)
    zsock_set_sndhwm (self->events, BRK_EVENTS_HWM);
    zsock_set_linger (self->frontend, 0);
    zsock_set_linger (self->backend, 0);
    zsock_set_linger (self->events, 0);
    if (config->curve_cert && s_curve_setup (self, config) != 0) {
        s_server_destroy (&self);
        return NULL;
    }
    brk_queue_set_event_handler (self->queue, brk_events_publish, self);
    if (config->metrics) {
        self->metrics = brk_metrics_new (config->metrics);
        if (!self->metrics) {
            s_server_destroy (&self);
            return NULL;
        }
        //  Time the journal's fsyncs (a test's own store is left alone)
        if (!config->store_open && self->data_dir)
            self->config.journal.io = brk_metrics_journal_io (self->metrics, config->journal.io);
    }
    //  The policy before the store: recovered messages go into its groups
    if (brk_server_policy_open (self) != 0) {
        s_server_destroy (&self);
        return NULL;
    }
    *status = brk_durable_open (self);
    if (*status != BRK_SERVER_OK) {
        s_server_destroy (&self);
        return NULL;
    }
    brk_server_policy_restore (self);
    if (self->metrics
    &&  brk_metrics_attach (self->metrics, self->queue, self->store, &self->duplicates,
                            mdl_clock_now (&self->clock)) != 0) {
        *status = BRK_SERVER_FAILED;
        s_server_destroy (&self);
        return NULL;
    }
    self->next_heartbeat = self->started + config->queue.heartbeat_ms;
    *status = BRK_SERVER_OK;
    return self;
}


void
brk_server (zsock_t *pipe, void *args)
{
    brk_server_config_t config;
    if (args)
        config = *(brk_server_config_t *) args;
    else
        brk_server_config_defaults (&config);
    int status;
    s_server_t *self = s_server_new (pipe, &config, &status);
    zsock_signal (pipe, 0);
    if (!self) {
        if (status == BRK_SERVER_FAILED)
            mdl_error ("broker: cannot start (see above)");
        //  Answer the pipe until told to stop, so the owner can tell
        while (true) {
            zmsg_t *request = zmsg_recv (pipe);
            if (!request)
                return;
            char *command = zmsg_popstr (request);
            bool term = command && streq (command, "$TERM");
            if (!term)
                zsock_send (pipe, "i", command && streq (command, "STATUS") ? status : -1);
            zstr_free (&command);
            zmsg_destroy (&request);
            if (term)
                return;
        }
    }
    //  A store without a descriptor gives -1, which poll ignores
    zmq_pollitem_t items [5] = {
        { zsock_resolve (self->pipe), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->frontend), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->backend), 0, ZMQ_POLLIN, 0 },
        { zsock_resolve (self->events), 0, ZMQ_POLLIN, 0 },
        { NULL, brk_store_fd (self->store), ZMQ_POLLIN, 0 }
    };
    while (!self->terminated) {
        int64_t now = mdl_clock_now (&self->clock);
        int64_t next = brk_queue_tick (self->queue, brk_backend_worker_lost, self);
        if (self->next_heartbeat < next)
            next = self->next_heartbeat;
        long timeout = next <= now ? 0 : next - now > 1000 ? 1000 : (long) (next - now);
        if (zmq_poll (items, 5, timeout) == -1 && zmq_errno () == ETERM)
            break;
        int64_t turn_started = mdl_clock_now (&self->clock);
        if (self->watch_stalls)
            s_check_stall (self, now, timeout);
        //  Only what is ready: at a few thousand wake-ups a second, asking
        //  idle sockets costs more than the work. A socket left with input
        //  after its drain batch is reported ready again.
        if (items [0].revents & ZMQ_POLLIN)
            s_handle_pipe (self);
        if (items [1].revents & ZMQ_POLLIN)
            brk_frontend_handle (self);
        if (items [2].revents & ZMQ_POLLIN)
            brk_backend_handle (self);
        if (items [3].revents & ZMQ_POLLIN)
            brk_events_handle_subscriptions (self);
        if (items [4].revents & ZMQ_POLLIN)
            brk_durable_progress (self);
        //  A handler that waited for the disk (PAUSE saves the policy
        //  state before its reply) read no heartbeat meanwhile: that time
        //  is given back before this tick judges silence and deadlines
        if (self->watch_stalls)
            s_check_busy (self, &turn_started);
        brk_queue_tick (self->queue, brk_backend_worker_lost, self);
        brk_dispatch (self);
        if (self->store_dirty) {
            brk_store_commit (self->store);
            self->store_dirty = false;
        }
        if (self->policy)
            brk_server_policy_save (self, false);
        now = mdl_clock_now (&self->clock);
        if (now >= self->next_heartbeat) {
            brk_backend_send_heartbeats (self);
            self->next_heartbeat = now + self->config.queue.heartbeat_ms;
        }
        //  Due at most once a second (the registry keeps the time), and
        //  the poll wakes at least that often, whatever the heartbeat
        if (self->config.metrics)
            mdl_metrics_collect (self->config.metrics, now);
        if (self->watch_stalls)
            s_check_busy (self, &turn_started);
    }
    //  Make everything durable, then answer the peers still waiting
    if (self->policy)
        brk_server_policy_save (self, true);
    if (brk_store_sync (self->store) == 0)
        brk_durable_progress (self);
    else
        mdl_error ("store %s: final flush failed: %s; %zu replies not sent",
                   self->durability, strerror (errno), self->reply_count);
    //  Those last PUBACKs and ACKEDs are only queued yet: with linger 0 the
    //  close drops them, and a publisher retries a request that was kept.
    //  Give them a short, bounded time to leave (at most this long per
    //  socket, only while a peer does not take them).
#define BRK_SHUTDOWN_LINGER_MS 500
    zsock_set_linger (self->frontend, BRK_SHUTDOWN_LINGER_MS);
    zsock_set_linger (self->backend, BRK_SHUTDOWN_LINGER_MS);
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    brk_store_stats_t store;
    brk_store_stats (self->store, &store);
    mdl_info ("broker stopping: %" PRIu64 " pending and %" PRIu64 " dead letters %s%s",
              stats.held + stats.ready + stats.in_flight + stats.delayed, stats.dead,
              store.persistent ? "kept in " : "dropped (held in memory only)",
              store.persistent && store.dir ? store.dir : "");
    s_server_destroy (&self);
}
