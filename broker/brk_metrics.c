/*  brk_metrics: the broker's series and collector; see brk_metrics.h. */
#include "brk_metrics.h"

#include <stdlib.h>

#include <czmq.h>

#include "brk_policy.h"
#include "mdl_log.h"
#include "mdl_metrics_process.h"

static const double s_fsync_buckets [] = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01,
    0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5
};

//  The message states of mandrill_broker_messages{state}.
enum { S_HELD, S_READY, S_DELAYED, S_IN_FLIGHT, S_DEAD, S_STATES };
static const char *s_state_names [S_STATES] = { "held", "ready", "delayed", "in_flight", "dead" };

//  One restart group's series (restart safety, docs/POLICY.md).
typedef struct {
    mdl_gauge_t *in_progress;           //  Open leases of the group
    mdl_gauge_t *limit;                 //  Cap now (ramp included), -1 for none
    mdl_gauge_t *paused;                //  0/1
    mdl_gauge_t *failures;              //  Failures within the error window
    mdl_gauge_t *waiting;               //  Requests waiting in the group
    mdl_gauge_t *in_doubt;              //  Pending requests of the group in doubt
    mdl_gauge_t *window_open;           //  0/1 (1 for a group without windows)
    mdl_gauge_t *next_open;             //  Unix s of the next opening; 0 open, -1 none
} s_group_series_t;

struct _brk_metrics_t {
    mdl_metrics_t *registry;            //  Borrowed
    brk_queue_t *queue;                 //  Collected from, once attached
    brk_store_t *store;                 //  Collected from, once attached
    const uint64_t *server_duplicates;  //  Duplicates the server refused itself, or NULL
    brk_journal_io_t io;                //  The wrapping seam handed to the journal
    brk_journal_io_t inner;             //  What it forwards to
    mdl_counter_t *published;           //  brk_queue_stats_t totals, mirrored
    mdl_counter_t *duplicates;          //  Publishes refused as duplicates
    mdl_counter_t *delivered;           //  Leases made
    mdl_counter_t *redelivered;         //  Leases with attempt > 1
    mdl_counter_t *acked;               //  Acked messages
    mdl_counter_t *nacked;              //  Nacked leases
    mdl_counter_t *expired;             //  Leases that ran out
    mdl_counter_t *dead_lettered;       //  Messages dead-lettered
    mdl_counter_t *replayed;            //  Dead letters replayed
    mdl_counter_t *workers_lost;        //  departures{reason="lost"}
    mdl_counter_t *workers_left;        //  departures{reason="left"}
    mdl_gauge_t *messages [S_STATES];   //  messages{state}
    mdl_gauge_t *oldest_unacked;        //  Age of the oldest pending message, s
    mdl_gauge_t *in_doubt;              //  Pending requests whose restart is in doubt
    mdl_gauge_t *workers;               //  Registered workers
    mdl_gauge_t *disk_bytes;            //  brk_store_stats_t, mirrored
    mdl_gauge_t *live_messages;         //  Messages the store would recover
    mdl_gauge_t *files;                 //  Files on disk
    mdl_gauge_t *pending_records;       //  Appended, not yet durable
    mdl_counter_t *fsyncs;              //  fsync calls
    mdl_counter_t *compactions;         //  Compactions completed
    mdl_counter_t *refused;             //  Appends refused
    mdl_gauge_t *healthy;               //  1 while the store reports no error
    mdl_histogram_t *fsync_seconds;     //  Timed in the io seam
    s_group_series_t *groups;           //  Per restart group, made at the first collect
    size_t group_count;                 //  Entries in groups (the policy's count is fixed)
    bool groups_failed;                 //  Registering them failed: logged once, not retried
};

void
brk_metrics_destroy (brk_metrics_t **self_p)
{
    if (!self_p || !*self_p)
        return;
    free ((*self_p)->groups);
    free (*self_p);
    *self_p = NULL;
}

#define COUNTER(field, name, help, ...) \
    if (!(self->field = mdl_metrics_counter (r, name, help, __VA_ARGS__))) goto failed
#define GAUGE(field, name, help, ...) \
    if (!(self->field = mdl_metrics_gauge (r, name, help, __VA_ARGS__))) goto failed

brk_metrics_t *
brk_metrics_new (mdl_metrics_t *registry)
{
    brk_metrics_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->registry = registry;
    mdl_metrics_t *r = registry;
    mdl_gauge_t *info = mdl_metrics_gauge (r, "mandrill_build_info",
                                           "Always 1; the program and its version in labels.",
                                           "program", "broker", "version", MANDRILL_VERSION, NULL);
    if (!info)
        goto failed;
    mdl_gauge_set (info, 1);
    COUNTER (published, "mandrill_broker_published_total",
             "Restart requests accepted (duplicates not counted).", NULL);
    COUNTER (duplicates, "mandrill_broker_duplicates_total",
             "Publishes refused as duplicates of a known message_id.", NULL);
    COUNTER (delivered, "mandrill_broker_delivered_total", "Leases made (deliveries).", NULL);
    COUNTER (redelivered, "mandrill_broker_redelivered_total",
             "Deliveries after the first of a message.", NULL);
    COUNTER (acked, "mandrill_broker_acked_total", "Messages acknowledged by a worker.", NULL);
    COUNTER (nacked, "mandrill_broker_nacked_total", "Leases given back by a worker (NACK).", NULL);
    COUNTER (expired, "mandrill_broker_expired_total", "Leases that ran out.", NULL);
    COUNTER (dead_lettered, "mandrill_broker_dead_lettered_total",
             "Messages moved to the dead letters.", NULL);
    COUNTER (replayed, "mandrill_broker_replayed_total", "Dead letters replayed.", NULL);
    const char *departures = "Workers gone: lost (silent or unreachable) or left (BYE).";
    COUNTER (workers_lost, "mandrill_broker_worker_departures_total", departures,
             "reason", "lost", NULL);
    COUNTER (workers_left, "mandrill_broker_worker_departures_total", departures,
             "reason", "left", NULL);
    for (int i = 0; i < S_STATES; i++)
        GAUGE (messages [i], "mandrill_broker_messages",
               "Messages now, by state (held: waiting for the journal).",
               "state", s_state_names [i], NULL);
    GAUGE (oldest_unacked, "mandrill_broker_oldest_unacked_age_seconds",
           "Age of the oldest message not yet acked or dead, 0 if none.", NULL);
    GAUGE (in_doubt, "mandrill_broker_requests_in_doubt",
           "Pending requests whose restart is in doubt: a started restart's lease ended "
           "unfinished, and no restart was reported done since.", NULL);
    GAUGE (workers, "mandrill_broker_workers", "Workers registered now.", NULL);
    GAUGE (disk_bytes, "mandrill_broker_journal_disk_bytes", "Bytes of journal on disk.", NULL);
    GAUGE (live_messages, "mandrill_broker_journal_live_messages",
           "Messages the journal would recover now.", NULL);
    GAUGE (files, "mandrill_broker_journal_files", "Journal files on disk.", NULL);
    GAUGE (pending_records, "mandrill_broker_journal_pending_records",
           "Records appended and not yet durable.", NULL);
    COUNTER (fsyncs, "mandrill_broker_journal_fsyncs_total", "fsync calls of the journal.", NULL);
    COUNTER (compactions, "mandrill_broker_journal_compactions_total",
             "Journal compactions completed.", NULL);
    COUNTER (refused, "mandrill_broker_journal_refused_total",
             "Appends the journal refused (buffer full while failing).", NULL);
    GAUGE (healthy, "mandrill_broker_journal_healthy",
           "1 while the store reports no error, else 0.", NULL);
    self->fsync_seconds = mdl_metrics_histogram (
        r, "mandrill_broker_journal_fsync_duration_seconds", "Time of one journal fsync.",
        s_fsync_buckets, sizeof s_fsync_buckets / sizeof s_fsync_buckets [0], NULL);
    if (!self->fsync_seconds || mdl_metrics_add_process (r) != 0)
        goto failed;
    return self;
failed:
    brk_metrics_destroy (&self);
    return NULL;
}

//  --------------------------------------------------------------------------
//  The io seam: forward everything, time fsync

static int
s_open (void *arg, const char *path, int flags, mode_t mode)
{
    brk_metrics_t *self = arg;
    return self->inner.open (self->inner.arg, path, flags, mode);
}

static ssize_t
s_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    brk_metrics_t *self = arg;
    return self->inner.pwrite (self->inner.arg, fd, data, size, offset);
}

static int
s_fsync (void *arg, int fd)
{
    brk_metrics_t *self = arg;
    int64_t before = zclock_usecs ();
    int rc = self->inner.fsync (self->inner.arg, fd);
    mdl_histogram_observe (self->fsync_seconds, (double) (zclock_usecs () - before) / 1e6);
    return rc;
}

static int
s_ftruncate (void *arg, int fd, off_t size)
{
    brk_metrics_t *self = arg;
    return self->inner.ftruncate (self->inner.arg, fd, size);
}

static int
s_rename (void *arg, const char *from, const char *to)
{
    brk_metrics_t *self = arg;
    return self->inner.rename (self->inner.arg, from, to);
}

static int
s_unlink (void *arg, const char *path)
{
    brk_metrics_t *self = arg;
    return self->inner.unlink (self->inner.arg, path);
}

static void *
s_alloc (void *arg, size_t size)
{
    brk_metrics_t *self = arg;
    return self->inner.alloc (self->inner.arg, size);
}

const brk_journal_io_t *
brk_metrics_journal_io (brk_metrics_t *self, const brk_journal_io_t *inner)
{
    self->inner = *(inner ? inner : brk_journal_io_system ());
    self->io = (brk_journal_io_t) {
        s_open, s_pwrite, s_fsync, s_ftruncate, s_rename, s_unlink, self,
        self->inner.alloc ? s_alloc : NULL
    };
    return &self->io;
}

//  --------------------------------------------------------------------------
//  The collector, on the actor's thread

//  Register the groups' series (get-or-create, so a second broker on the
//  same registry shares them). 0 or -1.
static int
s_groups_register (brk_metrics_t *self, brk_policy_t *policy)
{
    size_t count = brk_policy_group_count (policy);
    self->groups = calloc (count ? count : 1, sizeof *self->groups);
    if (!self->groups)
        return -1;
    mdl_metrics_t *r = self->registry;
    for (size_t i = 0; i < count; i++) {
        const char *name = brk_policy_group_config (policy, i)->name;
        s_group_series_t *g = &self->groups [i];
        g->in_progress = mdl_metrics_gauge (r, "mandrill_broker_group_restarts_in_progress",
                                            "Open leases (restarts running) per restart group.",
                                            "group", name, NULL);
        g->limit = mdl_metrics_gauge (r, "mandrill_broker_group_limit",
                                      "Concurrent restarts allowed now (ramp included), "
                                      "-1 for no cap.", "group", name, NULL);
        g->paused = mdl_metrics_gauge (r, "mandrill_broker_group_paused",
                                       "1 while the group is paused (operator or error stop).",
                                       "group", name, NULL);
        g->failures = mdl_metrics_gauge (r, "mandrill_broker_group_failures",
                                         "Restart failures within the group's error window.",
                                         "group", name, NULL);
        g->waiting = mdl_metrics_gauge (r, "mandrill_broker_group_waiting",
                                        "Requests waiting in the group.", "group", name, NULL);
        g->in_doubt = mdl_metrics_gauge (r, "mandrill_broker_group_requests_in_doubt",
                                         "Pending requests of the group whose restart is in "
                                         "doubt.", "group", name, NULL);
        g->window_open = mdl_metrics_gauge (r, "mandrill_broker_group_window_open",
                                            "1 while the group is inside one of its restart "
                                            "windows (always, without windows).",
                                            "group", name, NULL);
        g->next_open = mdl_metrics_gauge (r, "mandrill_broker_group_next_open_timestamp_seconds",
                                          "Unix time the group's next window opens; 0 while "
                                          "open, -1 when none opens within 8 days.",
                                          "group", name, NULL);
        if (!g->in_progress || !g->limit || !g->paused || !g->failures || !g->waiting
        ||  !g->in_doubt || !g->window_open || !g->next_open) {
            free (self->groups);
            self->groups = NULL;
            return -1;
        }
    }
    self->group_count = count;
    return 0;
}

//  O(groups) per collect.
static void
s_collect_groups (brk_metrics_t *self)
{
    brk_policy_t *policy = brk_queue_policy (self->queue);
    if (!policy || self->groups_failed)
        return;
    if (!self->groups && s_groups_register (self, policy) != 0) {
        self->groups_failed = true;
        mdl_error ("metrics: cannot register the restart groups' series; left out");
        return;
    }
    for (size_t i = 0; i < self->group_count; i++) {
        brk_group_stats_t g;
        if (brk_queue_group_stats (self->queue, i, &g) != 0)
            continue;
        mdl_gauge_set (self->groups [i].in_progress, (double) g.in_flight);
        mdl_gauge_set (self->groups [i].limit, (double) g.cap);
        mdl_gauge_set (self->groups [i].paused, g.paused ? 1.0 : 0.0);
        mdl_gauge_set (self->groups [i].failures, (double) g.failures);
        mdl_gauge_set (self->groups [i].waiting, (double) g.waiting);
        mdl_gauge_set (self->groups [i].in_doubt, (double) g.in_doubt);
        mdl_gauge_set (self->groups [i].window_open, g.window_open ? 1.0 : 0.0);
        mdl_gauge_set (self->groups [i].next_open, g.window_open ? 0.0
                       : g.next_open_wall < 0 ? -1.0 : (double) (g.next_open_wall / 1000));
    }
}

static void
s_collect (mdl_metrics_t *metrics, void *arg)
{
    (void) metrics;
    brk_metrics_t *self = arg;
    brk_queue_stats_t q;
    brk_queue_stats (self->queue, &q);
    mdl_counter_set (self->published, q.published);
    mdl_counter_set (self->duplicates, q.duplicates
                     + (self->server_duplicates ? *self->server_duplicates : 0));
    mdl_counter_set (self->delivered, q.delivered);
    mdl_counter_set (self->redelivered, q.redelivered);
    mdl_counter_set (self->acked, q.acked);
    mdl_counter_set (self->nacked, q.nacked);
    mdl_counter_set (self->expired, q.expired);
    mdl_counter_set (self->dead_lettered, q.dead_lettered);
    mdl_counter_set (self->replayed, q.replayed);
    mdl_counter_set (self->workers_lost, q.workers_lost);
    mdl_counter_set (self->workers_left, q.workers_left);
    mdl_gauge_set (self->messages [S_HELD], (double) q.held);
    mdl_gauge_set (self->messages [S_READY], (double) q.ready);
    mdl_gauge_set (self->messages [S_DELAYED], (double) q.delayed);
    mdl_gauge_set (self->messages [S_IN_FLIGHT], (double) q.in_flight);
    mdl_gauge_set (self->messages [S_DEAD], (double) q.dead);
    mdl_gauge_set (self->oldest_unacked, (double) q.oldest_unacked_ms / 1000.0);
    mdl_gauge_set (self->in_doubt, (double) q.in_doubt);
    mdl_gauge_set (self->workers, (double) q.workers);

    brk_store_stats_t j;
    brk_store_stats (self->store, &j);
    mdl_gauge_set (self->disk_bytes, (double) j.disk_bytes);
    mdl_gauge_set (self->live_messages, (double) j.live_messages);
    mdl_gauge_set (self->files, (double) j.files);
    mdl_gauge_set (self->pending_records,
                   j.appended > j.durable ? (double) (j.appended - j.durable) : 0.0);
    mdl_counter_set (self->fsyncs, j.fsyncs);
    mdl_counter_set (self->compactions, j.compactions);
    mdl_counter_set (self->refused, j.refused);
    mdl_gauge_set (self->healthy, j.error == 0 ? 1.0 : 0.0);
    s_collect_groups (self);
}

int
brk_metrics_attach (brk_metrics_t *self, brk_queue_t *queue, brk_store_t *store,
                    const uint64_t *duplicates, int64_t now_ms)
{
    self->queue = queue;
    self->store = store;
    self->server_duplicates = duplicates;
    if (mdl_metrics_add_collector (self->registry, s_collect, self) != 0)
        return -1;
    mdl_metrics_collect (self->registry, now_ms);
    return 0;
}
