/*  brk_policy_file: the --policy FILE reader (ZPL, through CZMQ's zconfig).

    The format is in docs/POLICY.md. The file is checked whole into a fresh
    policy first and only then copied into the live one, so a bad file
    changes nothing. Errors name the key path (groups/zone-a/max) or, for
    indentation mistakes zconfig would only log, the line. Cost: O(size of
    the file); read once at start (and on reload).
*/
#include "brk_policy.h"

#include <czmq.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int
s_fail (char *err, size_t size, const char *format, ...)
{
    if (err && size) {
        va_list args;
        va_start (args, format);
        vsnprintf (err, size, format, args);
        va_end (args);
    }
    return -1;
}

//  "250ms", "30s", "10m", "2h", "1d" or a bare number of seconds -> ms.
static int
s_duration (const char *text, int64_t *ms)
{
    char *end;
    if (!text || !*text)
        return -1;
    long long value = strtoll (text, &end, 10);
    if (end == text || value < 0 || value > 100LL * 365 * 86400)
        return -1;
    int64_t unit = 1000;
    if (strcmp (end, "ms") == 0)
        unit = 1;
    else if (strcmp (end, "s") == 0 || *end == 0)
        unit = 1000;
    else if (strcmp (end, "m") == 0)
        unit = 60000;
    else if (strcmp (end, "h") == 0)
        unit = 3600000;
    else if (strcmp (end, "d") == 0)
        unit = 86400000;
    else
        return -1;
    *ms = (int64_t) value * unit;
    return 0;
}

static int
s_number (const char *text, int64_t *value)
{
    char *end;
    if (!text || !*text)
        return -1;
    long long v = strtoll (text, &end, 10);
    if (*end || v < 0 || v > INT32_MAX)
        return -1;
    *value = v;
    return 0;
}

static int
s_bool (const char *text, bool *value)
{
    if (text && (strcmp (text, "1") == 0 || strcmp (text, "true") == 0 || strcmp (text, "yes") == 0))
        *value = true;
    else if (text && (strcmp (text, "0") == 0 || strcmp (text, "false") == 0 || strcmp (text, "no") == 0))
        *value = false;
    else
        return -1;
    return 0;
}

//  zconfig logs indentation errors but reports only NULL: find them first.
static int
s_check_lines (const char *text, char *err, size_t size)
{
    int line = 0;
    int depth = 0;
    const char *p = text;
    while (*p) {
        line++;
        const char *end = strchr (p, '\n');
        size_t len = end ? (size_t) (end - p) : strlen (p);
        size_t spaces = 0;
        while (spaces < len && p [spaces] == ' ')
            spaces++;
        bool blank = spaces == len || p [spaces] == '#' || p [spaces] == '\r';
        if (!blank) {
            if (memchr (p, '\t', len))
                return s_fail (err, size, "line %d: tab in indentation (use 4 spaces)", line);
            if (spaces % 4)
                return s_fail (err, size, "line %d: indentation is not a multiple of 4", line);
            int level = (int) (spaces / 4);
            if (level > depth + 1)
                return s_fail (err, size, "line %d: indented more than one level", line);
            depth = level;
        }
        p = end ? end + 1 : p + len;
    }
    return 0;
}

static int
s_group (brk_policy_t *policy, zconfig_t *node, char *err, size_t size)
{
    const char *name = zconfig_name (node);
    brk_group_config_t config;
    if (brk_group_config_defaults (&config, name, "*") != 0)
        return s_fail (err, size, "groups/%s: name too long (at most %d characters)", name,
                       BRK_POLICY_NAME_MAX - 1);
    bool matched = strcmp (name, "default") == 0;
    for (zconfig_t *key = zconfig_child (node); key; key = zconfig_next (key)) {
        const char *k = zconfig_name (key);
        const char *v = zconfig_value (key);
        int rc = 0;
        if (strcmp (k, "match") == 0) {
            if (!v || !*v || strlen (v) >= sizeof config.glob)
                rc = -1;
            else
                snprintf (config.glob, sizeof config.glob, "%s", v);
            matched = true;
        }
        else if (strcmp (k, "max") == 0) {
            size_t len = v ? strlen (v) : 0;
            int64_t value = 0;
            if (len > 1 && v [len - 1] == '%') {
                char buf [16];
                snprintf (buf, sizeof buf, "%.*s", (int) (len - 1), v);
                rc = s_number (buf, &value) || value < 1 || value > 100 ? -1 : 0;
                config.max = -value;
            }
            else {
                rc = s_number (v, &value) || value < 1 ? -1 : 0;
                config.max = value;
            }
        }
        else if (strcmp (k, "size") == 0)
            rc = s_number (v, &config.size) || config.size < 1 ? -1 : 0;
        else if (strcmp (k, "ramp") == 0)
            rc = s_bool (v, &config.ramp);
        else if (strcmp (k, "max_errors") == 0)
            rc = s_number (v, &config.max_errors);
        else if (strcmp (k, "error_window") == 0)
            rc = s_duration (v, &config.error_window_ms);
        else if (strcmp (k, "min_interval") == 0)
            rc = s_duration (v, &config.min_interval_ms);
        else if (strcmp (k, "max_age") == 0)
            rc = s_duration (v, &config.max_age_ms);
        else if (strcmp (k, "restart_timeout") == 0)
            rc = s_duration (v, &config.restart_timeout_ms);
        else if (strcmp (k, "in_doubt") == 0) {
            if (v && strcmp (v, "restart") == 0)
                config.in_doubt = BRK_IN_DOUBT_RESTART;
            else if (v && strcmp (v, "dead_letter") == 0)
                config.in_doubt = BRK_IN_DOUBT_DEAD_LETTER;
            else
                rc = -1;
        }
        else if (strcmp (k, "zone") == 0) {
            if (!v || strlen (v) >= sizeof config.zone || !brk_window_zone_valid (v))
                return s_fail (err, size, "groups/%s/zone: unknown time zone '%s'",
                               name, v ? v : "");
            snprintf (config.zone, sizeof config.zone, "%s", v);
        }
        else if (strcmp (k, "window") == 0) {
            char days [64], hours [32];
            brk_window_t *w = &config.windows [config.window_count];
            if (config.window_count == BRK_POLICY_MAX_WINDOWS)
                return s_fail (err, size, "groups/%s/window: more than %d windows",
                               name, BRK_POLICY_MAX_WINDOWS);
            if (!v || sscanf (v, "%63s %31s", days, hours) != 2
            ||  brk_window_parse_days (days, &w->days) != 0
            ||  brk_window_parse_hours (hours, &w->start_min, &w->end_min) != 0)
                return s_fail (err, size, "groups/%s/window: '%s' is not 'DAYS HH:MM-HH:MM'"
                               " (e.g. 'mon-fri 09:00-17:00')", name, v ? v : "");
            config.window_count++;
        }
        else
            return s_fail (err, size, "groups/%s/%s: unknown key", name, k);
        if (rc != 0)
            return s_fail (err, size, "groups/%s/%s: bad value '%s'", name, k, v ? v : "");
    }
    if (!matched)
        return s_fail (err, size, "groups/%s: no 'match' glob", name);
    char inner [200];
    if (brk_policy_add_group (policy, &config, inner, sizeof inner) != 0)
        return s_fail (err, size, "groups/%s: %s", name, inner);
    return 0;
}

static int
s_apply (brk_policy_t *policy, zconfig_t *root, char *err, size_t size)
{
    for (zconfig_t *section = zconfig_child (root); section; section = zconfig_next (section)) {
        const char *name = zconfig_name (section);
        if (strcmp (name, "policy") == 0) {
            for (zconfig_t *key = zconfig_child (section); key; key = zconfig_next (key)) {
                bool value;
                if (strcmp (zconfig_name (key), "coalesce") != 0)
                    return s_fail (err, size, "policy/%s: unknown key", zconfig_name (key));
                if (s_bool (zconfig_value (key), &value) != 0)
                    return s_fail (err, size, "policy/coalesce: bad value '%s'",
                                   zconfig_value (key) ? zconfig_value (key) : "");
                brk_policy_set_coalesce (policy, value);
            }
        }
        else if (strcmp (name, "groups") == 0) {
            for (zconfig_t *group = zconfig_child (section); group; group = zconfig_next (group))
                if (s_group (policy, group, err, size) != 0)
                    return -1;
        }
        else
            return s_fail (err, size, "%s: unknown section (expected policy or groups)", name);
    }
    return 0;
}

int
brk_policy_load_text (brk_policy_t *self, const char *text, char *err, size_t err_size)
{
    if (s_check_lines (text, err, err_size) != 0)
        return -1;
    char *copy = strdup (text);
    if (!copy)
        return s_fail (err, err_size, "out of memory");
    zconfig_t *root = zconfig_str_load (copy);
    free (copy);
    if (!root)
        return s_fail (err, err_size, "not valid ZPL (see the log for the line)");
    //  A trial run on a scratch policy first: a bad file changes nothing
    mdl_clock_t clock = mdl_clock_system ();
    brk_policy_t *trial = brk_policy_new (clock, clock);
    int rc = trial ? s_apply (trial, root, err, err_size) : s_fail (err, err_size, "out of memory");
    brk_policy_destroy (&trial);
    //  Groups already declared (by --group) must not be declared again
    zconfig_t *groups = zconfig_locate (root, "groups");
    for (zconfig_t *group = groups ? zconfig_child (groups) : NULL; group && rc == 0;
         group = zconfig_next (group))
        if (strcmp (zconfig_name (group), "default") != 0
        &&  brk_policy_group_find (self, zconfig_name (group)) >= 0)
            rc = s_fail (err, err_size, "groups/%s: declared twice", zconfig_name (group));
    if (rc == 0)
        rc = s_apply (self, root, err, err_size);
    zconfig_destroy (&root);
    return rc;
}

int
brk_policy_load (brk_policy_t *self, const char *path, char *err, size_t err_size)
{
    FILE *file = fopen (path, "r");
    if (!file)
        return s_fail (err, err_size, "%s: cannot open", path);
    char *text = NULL;
    size_t used = 0, size = 0;
    for (;;) {
        if (used + 4096 + 1 > size) {
            if (size > 4 * 1024 * 1024) {
                fclose (file);
                free (text);
                return s_fail (err, err_size, "%s: larger than 4 MB", path);
            }
            size = size * 2 + 4096 + 1;
            char *grown = realloc (text, size);
            if (!grown) {
                fclose (file);
                free (text);
                return s_fail (err, err_size, "out of memory");
            }
            text = grown;
        }
        size_t n = fread (text + used, 1, 4096, file);
        used += n;
        if (n < 4096)
            break;
    }
    fclose (file);
    text [used] = 0;
    char inner [256];
    int rc = brk_policy_load_text (self, text, inner, sizeof inner);
    free (text);
    if (rc != 0)
        return s_fail (err, err_size, "%s: %s", path, inner);
    return 0;
}
