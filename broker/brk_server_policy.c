/*  brk_server_policy: the broker actor's restart policy; see
    brk_server_internal.h and docs/POLICY.md.

    The actor owns the brk_policy_t (built here from the config before
    the store opens) and puts its queue under it. Its durable state (pause
    state and reasons, the kill switch, failure times, per-target last
    restart) goes to the store as one blob (brk_store_save_state): at once
    after an operator's pause, resume or kill and after an error stop, and
    at most every 100 ms after lease events, so a burst of leases costs at
    most ten saves a second. A lost save costs little: the last-restart
    stamps only lengthen least intervals, and the urgent changes are saved
    before their reply is sent. Lease events' saves are posted: the
    journal store writes them on a thread (brk_state_saver), so only the
    urgent ones stop the loop for their fsyncs.

    Failure: a policy that does not build fails the start (logged); a
    state blob that cannot be read or restored is logged and the policy
    starts clean; a save that fails is logged (once per run of failures)
    and retried at the next change. Cost: serialising is O(groups +
    targets leased within the longest least interval); an urgent save
    blocks the loop for the journal store's two fsyncs of a small file, a
    posted one costs a copy of the blob. Every 10 s the policy forgets
    the targets whose stamp no longer matters (brk_policy_forget_stale,
    O(targets known)), so neither memory nor the blob grows with every
    hostname ever named; the blob holds only the stamps that can still
    change a verdict: none without a least interval, with one of an hour
    about 50 bytes per host restarted in the last hour. A store that keeps
    no state (memory) costs nothing: the policy is not even serialised.
*/
#include "brk_server_internal.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "mdl_log.h"

#define S_SAVE_INTERVAL_MS  100
#define S_SWEEP_INTERVAL_MS 10000

static int64_t
s_wall_now (void *arg)
{
    (void) arg;
    return mdl_clock_wall ();
}

int
brk_server_policy_open (s_server_t *self)
{
    const brk_server_config_t *config = &self->config;
    if (!config->policy_file && config->group_spec_count == 0)
        return 0;
    mdl_clock_t wall = config->wall_clock;
    if (!wall.now)
        wall.now = s_wall_now;
    self->policy = brk_policy_new (self->clock, wall);
    if (config->policy_file)
        self->policy_file = strdup (config->policy_file);
    if (!self->policy || (config->policy_file && !self->policy_file)) {
        mdl_error ("policy: out of memory");
        return -1;
    }
    self->config.policy_file = self->policy_file;
    const char *const *specs = config->group_specs;
    size_t spec_count = config->group_spec_count;
    self->config.group_specs = NULL;        //  Borrowed, read only here
    self->config.group_spec_count = 0;
    char err [512];
    for (size_t i = 0; i < spec_count; i++)
        if (brk_policy_add_spec (self->policy, specs [i], err, sizeof err) != 0) {
            mdl_error ("policy: %s", err);
            return -1;
        }
    if (self->policy_file && brk_policy_load (self->policy, self->policy_file, err, sizeof err) != 0) {
        mdl_error ("policy: %s", err);
        return -1;
    }
    if (brk_queue_set_policy (self->queue, self->policy) != 0) {
        mdl_error ("policy: out of memory");
        return -1;
    }
    size_t groups = brk_policy_group_count (self->policy);
    mdl_info ("policy: %zu group%s from %s", groups, groups == 1 ? "" : "s",
              self->policy_file ? self->policy_file : "--group");
    for (size_t i = 0; i < groups; i++) {
        const brk_group_config_t *group = brk_policy_group_config (self->policy, i);
        brk_group_stats_t stats;
        brk_policy_group_stats (self->policy, i, &stats);
        char cap [32] = "none";
        if (stats.max >= 0)
            snprintf (cap, sizeof cap, "%" PRId64, stats.max);
        mdl_info ("policy: group %s matches '%s', cap %s", group->name, group->glob, cap);
    }
    return 0;
}

void
brk_server_policy_restore (s_server_t *self)
{
    if (!self->policy)
        return;
    errno = 0;
    char *blob = brk_store_load_state (self->store);
    if (!blob) {
        if (errno)
            mdl_error ("policy: cannot read the saved state: %s; starting clean", strerror (errno));
        self->policy_saved = brk_policy_changes (self->policy, &self->policy_saved_urgent);
        return;
    }
    char err [256];
    if (brk_policy_restore (self->policy, blob, err, sizeof err) != 0)
        mdl_error ("policy: saved state refused: %s; starting clean", err);
    else {
        size_t groups = brk_policy_group_count (self->policy), paused = 0;
        for (size_t i = 0; i < groups; i++)
            if (brk_policy_paused_reason (self->policy, i)) {
                mdl_warn ("policy: group %s is paused (%s)", brk_policy_group_config (self->policy, i)->name,
                          brk_policy_paused_reason (self->policy, i));
                paused++;
            }
        mdl_info ("policy: state restored (%zu paused group%s%s)", paused, paused == 1 ? "" : "s",
                  brk_policy_killed (self->policy) ? ", every group paused (kill switch)" : "");
    }
    free (blob);
    self->policy_saved = brk_policy_changes (self->policy, &self->policy_saved_urgent);
}

void
brk_server_policy_save (s_server_t *self, bool force)
{
    if (!self->policy)
        return;
    int64_t now = mdl_clock_now (&self->clock);
    if (now - self->policy_swept_at >= S_SWEEP_INTERVAL_MS) {
        size_t forgotten = brk_policy_forget_stale (self->policy);
        if (forgotten)
            mdl_debug ("policy: forgot %zu targets whose last restart no longer matters",
                       forgotten);
        self->policy_swept_at = now;
    }
    uint64_t urgent;
    uint64_t changes = brk_policy_changes (self->policy, &urgent);
    if (changes == self->policy_saved && urgent == self->policy_saved_urgent && !force)
        return;
    if (!force && urgent == self->policy_saved_urgent
    &&  now - self->policy_saved_at < S_SAVE_INTERVAL_MS)
        return;
    if (!brk_store_keeps_state (self->store)) {
        //  Memory: nothing to write, so nothing to serialise
        self->policy_saved = changes;
        self->policy_saved_urgent = urgent;
        self->policy_saved_at = now;
        return;
    }
    //  Forced (an operator's action, the stop) or urgent (an error stop):
    //  on disk before anything else, the reply included. Lease events:
    //  handed to the store's writer, so the loop does not wait for a
    //  slow disk.
    bool wait = force || urgent != self->policy_saved_urgent;
    char *blob = brk_policy_serialise (self->policy);
    int rc = !blob ? -1
           : wait ? brk_store_save_state (self->store, blob, strlen (blob))
                  : brk_store_post_state (self->store, blob, strlen (blob));
    if (!blob)
        errno = ENOMEM;
    free (blob);
    self->policy_saved_at = now;
    if (rc == 0) {
        if (self->policy_save_failed)
            mdl_info ("policy: state saved again");
        self->policy_save_failed = false;
        self->policy_saved = changes;
        self->policy_saved_urgent = urgent;
    }
    else
    if (!self->policy_save_failed) {
        mdl_error ("policy: cannot save the state: %s (retried at the next change)", strerror (errno));
        self->policy_save_failed = true;
    }
}

int
brk_server_policy_reload (s_server_t *self, char *err, size_t err_size)
{
    if (!self->policy_file) {
        snprintf (err, err_size, "no policy file to reload (the broker runs %s)",
                  self->policy ? "with --group specs" : "without a policy");
        mdl_warn ("policy: reload refused: %s", err);
        return -1;
    }
    if (brk_policy_reload (self->policy, self->policy_file, NULL, err, err_size) != 0) {
        mdl_error ("policy: reload of %s refused, the old policy stays: %s", self->policy_file, err);
        return -1;
    }
    mdl_info ("policy: reloaded %s", self->policy_file);
    return 0;
}

void
brk_server_group_event (s_server_t *self, const char *event, const char *group, const char *reason)
{
    if (self->subscriptions <= 0)
        return;
    mmp_buf_t *buf = &self->event;
    if (mmp_encode_group_event (buf, event, mdl_clock_wall (), group, reason) != 0)
        return;
    void *handle = zsock_resolve (self->events);
    if (zmq_send (handle, event, strlen (event), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send (handle, mmp_buf_data (buf), mmp_buf_size (buf), ZMQ_DONTWAIT);
}
