/*  brk_policy_state: the policy's durable state (see brk_policy.h and
    docs/POLICY.md). Version 1, one record a line, fields separated by one space:
      mandrill-policy 1
      kill 0|1
      group NAME PAUSED(0|1) NFAIL AGE_MS... [REASON to the end of the line]
      target NAME LAST_WALL_MS
    Failure times are written as ages (ms before the wall time of writing),
    since monotonic time does not survive a restart.
    Only targets whose stamp can still change a verdict are written (leased
    within the longest least interval). Cost: O(groups * max_errors +
    targets) either way.
*/
#include "brk_policy.h"
#include "brk_policy_internal.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    char *data;
    size_t size, used;
    bool failed;
} s_buf_t;

static void
s_put (s_buf_t *buf, const char *format, ...)
{
    if (buf->failed)
        return;
    for (;;) {
        va_list args;
        va_start (args, format);
        int n = vsnprintf (buf->data + buf->used, buf->size - buf->used, format, args);
        va_end (args);
        if (n < 0) {
            buf->failed = true;
            return;
        }
        if ((size_t) n < buf->size - buf->used) {
            buf->used += (size_t) n;
            return;
        }
        size_t size = buf->size * 2 + (size_t) n;
        char *data = realloc (buf->data, size);
        if (!data) {
            buf->failed = true;
            return;
        }
        buf->data = data;
        buf->size = size;
    }
}

char *
brk_policy_serialise (brk_policy_t *self)
{
    s_buf_t buf = { malloc (256), 256, 0, false };
    if (!buf.data)
        return NULL;
    buf.data [0] = 0;
    int64_t now = mdl_clock_now (&self->mono);
    s_put (&buf, "mandrill-policy 1\nkill %d\n", self->killed ? 1 : 0);
    for (size_t i = 0; i < self->group_count; i++) {
        brk_policy_group_t *group = &self->groups [i];
        s_put (&buf, "group %s %d %zu", group->config.name, group->paused ? 1 : 0,
               group->failure_count);
        //  Oldest first, so that restore rebuilds the ring in order
        size_t size = group->config.max_errors > 0 ? (size_t) group->config.max_errors : 1;
        for (size_t k = 0; k < group->failure_count; k++) {
            size_t slot = (group->failure_head + size - group->failure_count + k) % size;
            s_put (&buf, " %" PRId64, now - group->failures [slot]);
        }
        s_put (&buf, "%s%s\n", group->paused ? " " : "", group->paused ? group->reason : "");
    }
    //  Only the stamps that can still change a verdict (the rest wait for
    //  brk_policy_forget_stale)
    int64_t longest = brk_policy_longest_interval (self);
    int64_t wall = mdl_clock_now (&self->wall);
    size_t cursor = 0;
    brk_policy_target_t *target;
    while ((target = mdl_strmap_next (self->targets, &cursor)))
        if (brk_policy_stamp_matters (target, longest, wall))
            s_put (&buf, "target %s %" PRId64 "\n", target->name, target->last_wall);
    if (buf.failed) {
        free (buf.data);
        return NULL;
    }
    return buf.data;
}

int
brk_policy_restore (brk_policy_t *self, const char *blob, char *err, size_t err_size)
{
    //  Two passes: check everything, then apply, so that a bad blob changes nothing
    for (int apply = 0; apply < 2; apply++) {
        const char *line = blob;
        int number = 0;
        int64_t now = mdl_clock_now (&self->mono);
        while (line && *line) {
            number++;
            const char *end = strchr (line, '\n');
            size_t len = end ? (size_t) (end - line) : strlen (line);
            char text [4096];
            if (len >= sizeof text) {
                brk_policy_err (err, err_size, "policy state line %d: too long", number);
                return -1;
            }
            memcpy (text, line, len);
            text [len] = 0;
            line = end ? end + 1 : NULL;
            int offset = 0;
            int value;
            char name [256];
            if (number == 1) {
                if (sscanf (text, "mandrill-policy %d%n", &value, &offset) != 1
                ||  text [offset] || value != 1) {
                    brk_policy_err (err, err_size, "policy state line 1: not a version 1 blob");
                    return -1;
                }
            }
            else if (strncmp (text, "kill ", 5) == 0) {
                if (sscanf (text, "kill %d%n", &value, &offset) != 1 || text [offset]
                ||  (value != 0 && value != 1)) {
                    brk_policy_err (err, err_size, "policy state line %d: bad kill", number);
                    return -1;
                }
                if (apply)
                    self->killed = value == 1;
            }
            else if (strncmp (text, "group ", 6) == 0) {
                int paused;
                unsigned count;
                if (sscanf (text, "group %255s %d %u%n", name, &paused, &count, &offset) != 3
                ||  (paused != 0 && paused != 1) || count > 100000) {
                    brk_policy_err (err, err_size, "policy state line %d: bad group", number);
                    return -1;
                }
                int index = brk_policy_group_find (self, name);
                brk_policy_group_t *group = index >= 0 ? &self->groups [index] : NULL;
                if (apply && group) {
                    group->failure_count = 0;
                    group->failure_head = 0;
                }
                for (unsigned k = 0; k < count; k++) {
                    long long age;
                    int used;
                    if (sscanf (text + offset, " %lld%n", &age, &used) != 1) {
                        brk_policy_err (err, err_size, "policy state line %d: bad failure time", number);
                        return -1;
                    }
                    offset += used;
                    if (apply && group && group->config.max_errors > 0) {
                        size_t size = (size_t) group->config.max_errors;
                        group->failures [group->failure_head] = now - age;
                        group->failure_head = (group->failure_head + 1) % size;
                        if (group->failure_count < size)
                            group->failure_count++;
                    }
                }
                if (apply && group) {
                    group->paused = paused == 1;
                    const char *reason = text + offset;
                    while (*reason == ' ')
                        reason++;
                    snprintf (group->reason, sizeof group->reason, "%s",
                              *reason ? reason : "restored");
                    if (!group->paused)
                        group->reason [0] = 0;
                }
            }
            else if (strncmp (text, "target ", 7) == 0) {
                long long last;
                if (sscanf (text, "target %255s %lld%n", name, &last, &offset) != 2
                ||  text [offset] || last < 0) {
                    brk_policy_err (err, err_size, "policy state line %d: bad target", number);
                    return -1;
                }
                if (apply) {
                    brk_policy_target_t *target = brk_policy_target (self, name);
                    if (!target) {
                        brk_policy_err (err, err_size, "out of memory");
                        return -1;
                    }
                    target->last_wall = last;
                }
            }
            else if (text [0]) {
                brk_policy_err (err, err_size, "policy state line %d: unknown record", number);
                return -1;
            }
        }
        if (number == 0) {
            brk_policy_err (err, err_size, "policy state: empty");
            return -1;
        }
    }
    return 0;
}
