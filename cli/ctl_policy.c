/*  ctl_policy: see ctl_policy.h. */
#include "ctl_policy.h"

#include <inttypes.h>
#include <stdbool.h>
#include <string.h>
#include <time.h>

static const char *
s_str (const cJSON *object, const char *name)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive (object, name);
    return cJSON_IsString (item) ? item->valuestring : "-";
}

static double
s_num (const cJSON *object, const char *name, double missing)
{
    const cJSON *item = cJSON_GetObjectItemCaseSensitive (object, name);
    return cJSON_IsNumber (item) ? item->valuedouble : missing;
}

static bool
s_true (const cJSON *object, const char *name)
{
    return cJSON_IsTrue (cJSON_GetObjectItemCaseSensitive (object, name));
}

const char *
ctl_policy_duration (double ms, char *buf, size_t size)
{
    if (ms < 0)
        snprintf (buf, size, "-");
    else
    if (ms < 1000)
        snprintf (buf, size, "%.0fms", ms);
    else
    if (ms < 60000)
        snprintf (buf, size, "%.1fs", ms / 1000);
    else
    if (ms < 3600000)
        snprintf (buf, size, "%dm%02ds", (int) (ms / 60000), (int) (ms / 1000) % 60);
    else
        snprintf (buf, size, "%dh%02dm", (int) (ms / 3600000), (int) (ms / 60000) % 60);
    return buf;
}

//  A cap: -1 is none.
static const char *
s_cap (double value, char *buf, size_t size)
{
    if (value < 0)
        snprintf (buf, size, "none");
    else
        snprintf (buf, size, "%.0f", value);
    return buf;
}

static void
s_groups (FILE *out, const cJSON *body)
{
    if (!s_true (body, "policy")) {
        fprintf (out, "no restart policy (start the broker with --group or --policy)\n");
        return;
    }
    if (s_true (body, "killed"))
        fprintf (out, "KILL SWITCH ON: no group starts a lease (mandrill-ctl resume --all)\n");
    fprintf (out, "%-20s %-28s %8s %6s %6s %8s %8s %8s  %-6s %s\n", "GROUP", "MATCH", "IN_FLIGHT",
             "CAP", "MAX", "WAITING", "IN_DOUBT", "FAILURES", "WINDOW", "STATE");
    const cJSON *group;
    cJSON_ArrayForEach (group, cJSON_GetObjectItemCaseSensitive (body, "groups")) {
        char cap [24], max [24];
        bool paused = s_true (group, "paused");
        char state [200];
        snprintf (state, sizeof state, "%s%s", paused ? "paused: " : "running",
                  paused ? s_str (group, "paused_reason") : "");
        char window [40];
        if (s_true (group, "window_open"))
            snprintf (window, sizeof window, "open");
        else {
            double next = s_num (group, "next_open", -1);
            if (next > 0) {
                time_t seconds = (time_t) (next / 1000);
                struct tm tm;
                gmtime_r (&seconds, &tm);
                strftime (window, sizeof window, "opens %Y-%m-%dT%H:%MZ", &tm);
            }
            else
                snprintf (window, sizeof window, "closed");
        }
        //  A broker older than the in-doubt count sends none: shown as -
        char doubt [24];
        double in_doubt = s_num (group, "in_doubt", -1);
        if (in_doubt < 0)
            snprintf (doubt, sizeof doubt, "-");
        else
            snprintf (doubt, sizeof doubt, "%.0f", in_doubt);
        fprintf (out, "%-20s %-28s %8.0f %6s %6s %8.0f %8s %8.0f  %-6s %s\n", s_str (group, "name"),
                 s_str (group, "match"), s_num (group, "in_flight", -1),
                 s_cap (s_num (group, "cap", -1), cap, sizeof cap),
                 s_cap (s_num (group, "max", -1), max, sizeof max),
                 s_num (group, "waiting", -1), doubt, s_num (group, "failures", -1), window, state);
    }
}

static void
s_inflight (FILE *out, const cJSON *body)
{
    fprintf (out, "%-36s %-30s %-14s %-20s %8s %8s %7s %s\n", "MESSAGE", "TARGET", "GROUP", "WORKER",
             "AGE", "LEFT", "ATTEMPT", "STEPS");
    const cJSON *lease;
    int shown = 0;
    cJSON_ArrayForEach (lease, cJSON_GetObjectItemCaseSensitive (body, "leases")) {
        char age [24], left [24];
        unsigned steps = (unsigned) s_num (lease, "steps", 0);
        char step_text [40];
        snprintf (step_text, sizeof step_text, "%s%s%s%s",
                  steps & 1 ? "save " : "", steps & 2 ? "restart " : "",
                  s_true (lease, "started") && !(steps & 2) ? "(restart started)" : "",
                  steps == 0 && !s_true (lease, "started") ? "-" : "");
        const char *worker = s_str (lease, "worker");
        fprintf (out, "%-36s %-30s %-14s %-20s %8s %8s %7.0f %s\n", s_str (lease, "message_id"),
                 s_str (lease, "target"), s_str (lease, "group"), *worker ? worker : "(recovered)",
                 ctl_policy_duration (s_num (lease, "age_ms", -1), age, sizeof age),
                 ctl_policy_duration (s_num (lease, "deadline_ms", -1), left, sizeof left),
                 s_num (lease, "attempt", -1), step_text);
        shown++;
    }
    fprintf (out, "%d shown, %.0f open leases\n", shown, s_num (body, "total", -1));
}

static void
s_workers (FILE *out, const cJSON *body)
{
    fprintf (out, "%-24s %7s %7s %10s  %s\n", "WORKER", "CREDIT", "LEASES", "SEEN", "PEER");
    const cJSON *worker;
    int shown = 0;
    cJSON_ArrayForEach (worker, cJSON_GetObjectItemCaseSensitive (body, "workers")) {
        char seen [24];
        ctl_policy_duration (s_num (worker, "seen_ms_ago", -1), seen, sizeof seen);
        char ago [40];
        snprintf (ago, sizeof ago, "%s ago", seen);
        fprintf (out, "%-24s %7.0f %7.0f %10s  %s\n", s_str (worker, "name"),
                 s_num (worker, "credit", -1), s_num (worker, "leases", -1), ago,
                 s_str (worker, "peer"));
        shown++;
    }
    fprintf (out, "%d worker%s\n", shown, shown == 1 ? "" : "s");
}

void
ctl_policy_print (FILE *out, const char *command, const cJSON *body)
{
    if (strcmp (command, "GROUPS") == 0)
        s_groups (out, body);
    else
    if (strcmp (command, "INFLIGHT") == 0)
        s_inflight (out, body);
    else
    if (strcmp (command, "WORKERS") == 0)
        s_workers (out, body);
    else
    if (strcmp (command, "RELOAD") == 0)
        fprintf (out, "reloaded %s\n", s_str (body, "file"));
    else {
        bool pause = strcmp (command, "PAUSE") == 0;
        const char *what = s_true (body, "all") ? "every group" : s_str (body, "group");
        if (pause)
            fprintf (out, "paused %s: %s%s\n", what, s_str (body, "reason"),
                     s_true (body, "all") ? " (kill switch: no new leases anywhere)" : "");
        else
            fprintf (out, "resumed %s\n", what);
        if (!s_true (body, "durable"))
            fprintf (out, "WARNING: the broker could not save this; a broker restart forgets it\n");
        else
            fprintf (out, "open leases finish; the state survives a broker restart\n");
    }
}
