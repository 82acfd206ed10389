/*  brk_policy: see brk_policy.h. The ZPL file is read in brk_policy_file.c,
    windows are computed in brk_policy_window.c, the durable state is
    written and read in brk_policy_state.c; the structs they share are in
    brk_policy_internal.h.

    Each group keeps its open leases, its ramp, the times of its latest
    max_errors failures (a ring: the error stop trips when the ring is full
    and its oldest entry is still inside the window, O(1)), its pause state
    and a cached window answer. Each target seen keeps its group and the
    wall time of its last lease.
*/
#include "brk_policy.h"
#include "brk_policy_internal.h"
#include "mdl_array.h"

#include <assert.h>
#include <ctype.h>
#include <fnmatch.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_map.h"

void
brk_policy_err (char *err, size_t size, const char *format, ...)
{
    if (!err || !size)
        return;
    va_list args;
    va_start (args, format);
    vsnprintf (err, size, format, args);
    va_end (args);
}

int
brk_group_config_defaults (brk_group_config_t *config, const char *name, const char *glob)
{
    memset (config, 0, sizeof *config);
    config->error_window_ms = 600000;
    config->restart_timeout_ms = BRK_POLICY_RESTART_TIMEOUT_DEFAULT;
    int name_length = snprintf (config->name, sizeof config->name, "%s", name ? name : "");
    int glob_length = snprintf (config->glob, sizeof config->glob, "%s", glob ? glob : "*");
    return name_length < (int) sizeof config->name && glob_length < (int) sizeof config->glob ? 0 : -1;
}

static int
s_group_init (brk_policy_group_t *group, const brk_group_config_t *config, char *err, size_t err_size)
{
    int64_t cap = config->max;
    if (cap < 0) {
        if (config->size <= 0) {
            brk_policy_err (err, err_size, "group %s: a percentage cap needs the group's size",
                   config->name);
            return -1;
        }
        if (-cap > 100) {
            brk_policy_err (err, err_size, "group %s: percentage above 100", config->name);
            return -1;
        }
        cap = (-cap * config->size) / 100;
        if (cap < 1)
            cap = 1;
    }
    if (config->max_errors < 0 || config->error_window_ms < 0 || config->min_interval_ms < 0
    ||  config->max_age_ms < 0 || config->restart_timeout_ms < 0) {
        brk_policy_err (err, err_size, "group %s: negative setting", config->name);
        return -1;
    }
    if (!brk_window_zone_valid (config->zone)) {
        brk_policy_err (err, err_size, "group %s: unknown time zone '%s'", config->name, config->zone);
        return -1;
    }
    int64_t *ring = NULL;
    if (config->max_errors > 0) {
        ring = calloc ((size_t) config->max_errors, sizeof (int64_t));
        if (!ring) {
            brk_policy_err (err, err_size, "out of memory");
            return -1;
        }
    }
    free (group->failures);
    memset (group, 0, sizeof *group);
    group->config = *config;
    group->cap = cap;
    group->ramp_limit = 1;
    group->failures = ring;
    return 0;
}

brk_policy_t *
brk_policy_new (mdl_clock_t mono, mdl_clock_t wall)
{
    brk_policy_t *self = calloc (1, sizeof (brk_policy_t));
    if (!self)
        return NULL;
    self->mono = mono;
    self->wall = wall;
    self->coalesce = true;
    self->targets = mdl_strmap_new ();
    self->groups = calloc (1, sizeof (brk_policy_group_t));
    brk_group_config_t config;
    int rc = brk_group_config_defaults (&config, "default", "*");
    assert (rc == 0);           //  Constants that fit
    (void) rc;
    if (!self->targets || !self->groups || s_group_init (&self->groups [0], &config, NULL, 0)) {
        brk_policy_destroy (&self);
        return NULL;
    }
    self->group_count = 1;
    return self;
}

static void
s_forget_targets (brk_policy_t *self)
{
    size_t cursor = 0;
    brk_policy_target_t *target;
    while ((target = mdl_strmap_next (self->targets, &cursor)))
        target->group = -1;         //  Look up again: the groups changed
}

void
brk_policy_destroy (brk_policy_t **self_p)
{
    assert (self_p);
    brk_policy_t *self = *self_p;
    if (!self)
        return;
    if (self->targets) {
        size_t cursor = 0;
        brk_policy_target_t *target;
        while ((target = mdl_strmap_next (self->targets, &cursor)))
            free (target);
        mdl_strmap_destroy (&self->targets);
    }
    for (size_t i = 0; i < self->group_count; i++)
        free (self->groups [i].failures);
    free (self->groups);
    free (self);
    *self_p = NULL;
}

int
brk_policy_add_group (brk_policy_t *self, const brk_group_config_t *config,
                      char *err, size_t err_size)
{
    if (!config->name [0]) {
        brk_policy_err (err, err_size, "group without a name");
        return -1;
    }
    int found = brk_policy_group_find (self, config->name);
    if (found >= 0 && strcmp (config->name, "default") != 0) {
        brk_policy_err (err, err_size, "group %s: declared twice", config->name);
        return -1;
    }
    if (found >= 0) {
        //  Settings of the catch-all, whose glob stays "*"
        brk_group_config_t copy = *config;
        snprintf (copy.glob, sizeof copy.glob, "*");
        brk_policy_group_t fresh = { 0 };
        if (s_group_init (&fresh, &copy, err, err_size) != 0)
            return -1;
        brk_policy_group_t *old = &self->groups [found];
        fresh.in_flight = old->in_flight;
        free (old->failures);
        *old = fresh;
        return 0;
    }
    brk_policy_group_t *groups = realloc (self->groups, (self->group_count + 1) * sizeof (brk_policy_group_t));
    if (!groups) {
        brk_policy_err (err, err_size, "out of memory");
        return -1;
    }
    self->groups = groups;
    brk_policy_group_t fresh = { 0 };
    if (s_group_init (&fresh, config, err, err_size) != 0)
        return -1;
    //  Before "default", which stays last
    size_t at = self->group_count - 1;
    self->groups [self->group_count] = self->groups [at];
    self->groups [at] = fresh;
    self->group_count++;
    s_forget_targets (self);
    return 0;
}

static bool
s_parse_int (const char *text, int64_t *value)
{
    if (!text || !*text)
        return false;
    char *end;
    long long v = strtoll (text, &end, 10);
    if (*end || v < 0 || v > INT32_MAX)
        return false;
    *value = v;
    return true;
}

int
brk_policy_add_spec (brk_policy_t *self, const char *spec, char *err, size_t err_size)
{
    char buf [512];
    if (!spec || strlen (spec) >= sizeof buf) {
        brk_policy_err (err, err_size, "--group: empty or too long");
        return -1;
    }
    snprintf (buf, sizeof buf, "%s", spec);
    char *fields [4] = { 0 };
    size_t count = 0;
    char *p = buf;
    while (count < 4) {
        fields [count++] = p;
        char *colon = strchr (p, ':');
        if (!colon)
            break;
        *colon = 0;
        p = colon + 1;
    }
    if (count < 3 || strchr (p, ':')) {
        brk_policy_err (err, err_size, "--group '%s': expected NAME:GLOB:MAX or NAME:GLOB:N%%:SIZE", spec);
        return -1;
    }
    brk_group_config_t config;
    if (brk_group_config_defaults (&config, fields [0], fields [1]) != 0) {
        brk_policy_err (err, err_size, "--group: NAME may have at most %d characters,"
                        " GLOB at most %zu: '%s'", BRK_POLICY_NAME_MAX - 1, sizeof config.glob - 1, spec);
        return -1;
    }
    if (!fields [0][0] || !fields [1][0]) {
        brk_policy_err (err, err_size, "--group '%s': NAME and GLOB must not be empty", spec);
        return -1;
    }
    char *max = fields [2];
    size_t len = strlen (max);
    int64_t value;
    if (len && max [len - 1] == '%') {
        max [len - 1] = 0;
        if (!s_parse_int (max, &value) || value < 1 || value > 100) {
            brk_policy_err (err, err_size, "--group '%s': MAX percentage must be 1..100", spec);
            return -1;
        }
        if (count != 4 || !s_parse_int (fields [3], &config.size) || config.size < 1) {
            brk_policy_err (err, err_size, "--group '%s': a percentage needs SIZE (NAME:GLOB:N%%:SIZE)",
                   spec);
            return -1;
        }
        config.max = -value;
    }
    else {
        if (count != 3 || !s_parse_int (max, &value) || value < 1) {
            brk_policy_err (err, err_size, "--group '%s': MAX must be a number >= 1", spec);
            return -1;
        }
        config.max = value;
    }
    return brk_policy_add_group (self, &config, err, err_size);
}

int
brk_policy_reload (brk_policy_t *self, const char *path, const char *text,
                   char *err, size_t err_size)
{
    brk_policy_t *trial = brk_policy_new (self->mono, self->wall);
    if (!trial) {
        brk_policy_err (err, err_size, "out of memory");
        return -1;
    }
    int rc = path ? brk_policy_load (trial, path, err, err_size)
                  : brk_policy_load_text (trial, text, err, err_size);
    if (rc == 0 && trial->group_count != self->group_count) {
        brk_policy_err (err, err_size, "reload: groups added or removed (that needs a restart)");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < self->group_count; i++) {
        const brk_group_config_t *old = &self->groups [i].config;
        const brk_group_config_t *new = &trial->groups [i].config;
        if (strcmp (old->name, new->name) != 0 || strcmp (old->glob, new->glob) != 0) {
            brk_policy_err (err, err_size, "reload: group %s changed its name, match or place "
                   "(that needs a restart)", new->name);
            rc = -1;
        }
    }
    //  Failure rings of the new size, made before anything changes
    int64_t **rings = rc == 0 ? calloc (self->group_count, sizeof (int64_t *)) : NULL;
    if (rc == 0 && !rings) {
        brk_policy_err (err, err_size, "out of memory");
        rc = -1;
    }
    for (size_t i = 0; rc == 0 && i < self->group_count; i++) {
        brk_policy_group_t *old = &self->groups [i];
        brk_policy_group_t *new = &trial->groups [i];
        size_t size = new->config.max_errors > 0 ? (size_t) new->config.max_errors : 0;
        if (!size)
            continue;
        rings [i] = calloc (size, sizeof (int64_t));
        if (!rings [i]) {
            brk_policy_err (err, err_size, "out of memory");
            rc = -1;
            break;
        }
        //  The latest failures, oldest first, as many as fit
        size_t old_size = old->config.max_errors > 0 ? (size_t) old->config.max_errors : 1;
        size_t keep = old->failure_count < size ? old->failure_count : size;
        for (size_t k = 0; k < keep; k++) {
            size_t slot = (old->failure_head + old_size - keep + k) % old_size;
            rings [i][k] = old->failures [slot];
        }
        new->failure_count = keep;
        new->failure_head = keep % size;
    }
    if (rc == 0) {
        for (size_t i = 0; i < self->group_count; i++) {
            brk_policy_group_t *old = &self->groups [i];
            brk_policy_group_t *new = &trial->groups [i];
            free (old->failures);
            old->config = new->config;
            old->cap = new->cap;
            old->failures = rings [i];
            old->failure_count = new->failure_count;
            old->failure_head = new->failure_head;
            old->window_until = 0;
        }
        self->coalesce = trial->coalesce;
    }
    else
    if (rings)
        for (size_t i = 0; i < self->group_count; i++)
            free (rings [i]);
    free (rings);
    brk_policy_destroy (&trial);
    return rc;
}

bool
brk_policy_coalesce (const brk_policy_t *self)
{
    return self->coalesce;
}

void
brk_policy_set_coalesce (brk_policy_t *self, bool coalesce)
{
    self->coalesce = coalesce;
}

size_t
brk_policy_group_count (const brk_policy_t *self)
{
    return self->group_count;
}

int
brk_policy_group_find (const brk_policy_t *self, const char *name)
{
    for (size_t i = 0; i < self->group_count; i++)
        if (strcmp (self->groups [i].config.name, name) == 0)
            return (int) i;
    return -1;
}

const brk_group_config_t *
brk_policy_group_config (const brk_policy_t *self, size_t group)
{
    return group < self->group_count ? &self->groups [group].config : NULL;
}

char *
brk_policy_fold (const char *hostname, char *out, size_t out_size)
{
    size_t i = 0;
    for (; hostname [i] && i + 1 < out_size; i++)
        out [i] = (char) tolower ((unsigned char) hostname [i]);
    out [i] = 0;
    return out;
}

brk_policy_target_t *
brk_policy_target (brk_policy_t *self, const char *name)
{
    brk_policy_target_t *target = mdl_strmap_lookup (self->targets, name);
    if (target)
        return target;
    size_t len = strlen (name);
    target = calloc (1, sizeof (brk_policy_target_t) + len + 1);
    if (!target)
        return NULL;
    memcpy (target->name, name, len + 1);
    target->group = -1;
    if (mdl_strmap_insert (self->targets, target->name, target) != 0) {
        free (target);
        return NULL;
    }
    return target;
}

int
brk_policy_group_of (brk_policy_t *self, const char *name)
{
    brk_policy_target_t *target = brk_policy_target (self, name);
    if (!target)
        return -1;
    if (target->group < 0) {
        target->group = (int) self->group_count - 1;
        for (size_t i = 0; i + 1 < self->group_count; i++)
            if (fnmatch (self->groups [i].config.glob, name, 0) == 0) {
                target->group = (int) i;
                break;
            }
    }
    return target->group;
}

static const char *s_verdicts [] = {
    "ok", "killed", "paused", "full", "window", "interval", "max_age"
};

const char *
brk_policy_verdict_name (brk_policy_verdict_t verdict)
{
    return verdict <= BRK_POLICY_TOO_OLD ? s_verdicts [verdict] : "?";
}

static int64_t
s_cap_now (const brk_policy_group_t *group)
{
    if (group->config.ramp) {
        int64_t cap = group->cap ? group->cap : INT64_MAX;
        return group->ramp_limit < cap ? group->ramp_limit : cap;
    }
    return group->cap;
}

static void
s_window (brk_policy_t *self, brk_policy_group_t *group)
{
    int64_t wall = mdl_clock_now (&self->wall);
    if (group->window_until && wall < group->window_until)
        return;
    bool open;
    int64_t until;
    if (brk_window_state (group->config.zone, group->config.windows,
                          group->config.window_count, wall, &open, &until) != 0) {
        //  Checked when the group was made; closed is the safe answer
        open = false;
        until = wall + 60000;
    }
    group->window_open = open;
    group->window_until = until;
}

brk_policy_verdict_t
brk_policy_group_check (brk_policy_t *self, size_t group_index)
{
    assert (group_index < self->group_count);
    brk_policy_group_t *group = &self->groups [group_index];
    if (self->killed)
        return BRK_POLICY_KILLED;
    if (group->paused)
        return BRK_POLICY_PAUSED;
    int64_t cap = s_cap_now (group);
    if (cap && group->in_flight >= cap)
        return BRK_POLICY_FULL;
    s_window (self, group);
    if (!group->window_open)
        return BRK_POLICY_WINDOW;
    return BRK_POLICY_OK;
}

brk_policy_verdict_t
brk_policy_target_check (brk_policy_t *self, const char *name, size_t group_index,
                         int64_t age_ms, int64_t *until_mono)
{
    brk_policy_verdict_t verdict = brk_policy_group_check (self, group_index);
    if (verdict != BRK_POLICY_OK)
        return verdict;
    const brk_group_config_t *config = &self->groups [group_index].config;
    if (config->max_age_ms && age_ms > config->max_age_ms)
        return BRK_POLICY_TOO_OLD;
    if (config->min_interval_ms) {
        brk_policy_target_t *target = mdl_strmap_lookup (self->targets, name);
        if (target && target->last_wall) {
            int64_t wall = mdl_clock_now (&self->wall);
            int64_t left = target->last_wall + config->min_interval_ms - wall;
            if (left > 0) {
                if (until_mono)
                    *until_mono = mdl_clock_now (&self->mono) + left;
                return BRK_POLICY_INTERVAL;
            }
        }
    }
    return BRK_POLICY_OK;
}

int64_t
brk_policy_longest_interval (const brk_policy_t *self)
{
    int64_t longest = 0;
    for (size_t i = 0; i < self->group_count; i++)
        if (self->groups [i].config.min_interval_ms > longest)
            longest = self->groups [i].config.min_interval_ms;
    return longest;
}

size_t
brk_policy_forget_stale (brk_policy_t *self)
{
    assert (self);
    int64_t longest = brk_policy_longest_interval (self);
    int64_t wall = mdl_clock_now (&self->wall);
    //  Collected first: deleting from the map moves later slots back,
    //  which a cursor walking it would skip
    brk_policy_target_t **stale = NULL;
    size_t count = 0, capacity = 0, cursor = 0;
    brk_policy_target_t *target;
    while ((target = mdl_strmap_next (self->targets, &cursor))) {
        if (brk_policy_stamp_matters (target, longest, wall))
            continue;           //  Its least interval still runs
        if (mdl_array_reserve (&stale, &capacity, count + 1, sizeof *stale) != 0)
            break;              //  Out of memory: forget fewer this time
        stale [count++] = target;
    }
    for (size_t i = 0; i < count; i++) {
        mdl_strmap_delete (self->targets, stale [i]->name);
        free (stale [i]);
    }
    free (stale);
    return count;
}

size_t
brk_policy_target_count (const brk_policy_t *self)
{
    assert (self);
    return mdl_strmap_size (self->targets);
}

int
brk_policy_leased (brk_policy_t *self, const char *name, size_t group)
{
    assert (group < self->group_count);
    self->groups [group].in_flight++;
    brk_policy_target_t *target = brk_policy_target (self, name);
    if (!target)
        return -1;
    target->last_wall = mdl_clock_now (&self->wall);
    self->changes++;
    return 0;
}

void
brk_policy_hold (brk_policy_t *self, size_t group)
{
    assert (group < self->group_count);
    self->groups [group].in_flight++;
}

void
brk_policy_released (brk_policy_t *self, size_t group_index, brk_policy_outcome_t outcome)
{
    assert (group_index < self->group_count);
    brk_policy_group_t *group = &self->groups [group_index];
    if (group->in_flight > 0)
        group->in_flight--;
    if (outcome == BRK_POLICY_SUCCESS) {
        if (group->config.ramp && group->ramp_limit < INT64_MAX / 2)
            group->ramp_limit *= 2;
        return;
    }
    if (outcome != BRK_POLICY_FAILURE || group->config.max_errors <= 0)
        return;
    int64_t now = mdl_clock_now (&self->mono);
    size_t size = (size_t) group->config.max_errors;
    self->changes++;
    group->failures [group->failure_head] = now;
    group->failure_head = (group->failure_head + 1) % size;
    if (group->failure_count < size)
        group->failure_count++;
    //  Full ring: its oldest entry is the one about to be overwritten
    int64_t oldest = group->failures [group->failure_head % size];
    if (group->failure_count == size && !group->paused
    &&  now - oldest < group->config.error_window_ms) {
        group->paused = true;
        self->urgent++;
        snprintf (group->reason, sizeof group->reason,
                  "error stop: %" PRId64 " failures within %" PRId64 " s",
                  group->config.max_errors, group->config.error_window_ms / 1000);
    }
}

int
brk_policy_pause (brk_policy_t *self, const char *name, const char *reason)
{
    int index = brk_policy_group_find (self, name);
    if (index < 0)
        return -1;
    brk_policy_group_t *group = &self->groups [index];
    group->paused = true;
    snprintf (group->reason, sizeof group->reason, "%s", reason && *reason ? reason : "operator");
    self->changes++;
    self->urgent++;
    return 0;
}

int
brk_policy_resume (brk_policy_t *self, const char *name)
{
    int index = brk_policy_group_find (self, name);
    if (index < 0)
        return -1;
    brk_policy_group_t *group = &self->groups [index];
    group->paused = false;
    group->reason [0] = 0;
    group->failure_count = 0;
    group->failure_head = 0;
    self->changes++;
    self->urgent++;
    return 0;
}

const char *
brk_policy_paused_reason (const brk_policy_t *self, size_t group)
{
    assert (group < self->group_count);
    return self->groups [group].paused ? self->groups [group].reason : NULL;
}

void
brk_policy_kill (brk_policy_t *self, bool killed)
{
    self->killed = killed;
    self->changes++;
    self->urgent++;
}

uint64_t
brk_policy_changes (const brk_policy_t *self, uint64_t *urgent)
{
    if (urgent)
        *urgent = self->urgent;
    return self->changes;
}

bool
brk_policy_killed (const brk_policy_t *self)
{
    return self->killed;
}

static int64_t
s_failures_in_window (brk_policy_t *self, const brk_policy_group_t *group)
{
    int64_t now = mdl_clock_now (&self->mono);
    int64_t count = 0;
    for (size_t i = 0; i < group->failure_count; i++)
        if (now - group->failures [i] < group->config.error_window_ms)
            count++;
    return count;
}

void
brk_policy_group_stats (brk_policy_t *self, size_t group_index, brk_group_stats_t *stats)
{
    assert (group_index < self->group_count);
    brk_policy_group_t *group = &self->groups [group_index];
    memset (stats, 0, sizeof *stats);
    stats->name = group->config.name;
    stats->in_flight = group->in_flight;
    int64_t cap = s_cap_now (group);
    stats->cap = cap ? cap : -1;
    stats->max = group->cap ? group->cap : -1;
    stats->failures = s_failures_in_window (self, group);
    stats->paused = group->paused;
    stats->paused_reason = group->paused ? group->reason : NULL;
    s_window (self, group);
    stats->window_open = group->window_open;
    if (!group->window_open)
        stats->next_open_wall = group->window_until == INT64_MAX ? -1 : group->window_until;
}

