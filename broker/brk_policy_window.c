/*  brk_policy_window: time windows in a named time zone (see brk_policy.h).

    The TZ database is read through localtime_r with TZ set to the zone.
    TZ is process-wide, so this is the one place in the broker that
    touches it: a mutex serialises every change, and the old TZ is put
    back before the mutex is released. Another thread that calls
    localtime () while a window is evaluated could see the group's zone
    for that moment; the broker's threads log with UTC timestamps from
    mdl_clock_wall and never call localtime, so none does. The cost is
    bounded by caching: a group asks again only when the answer it got
    ("open until T" or "closed until T") expires.

    A zone is valid when /usr/share/zoneinfo (or $TZDIR) has a file of that
    name; glibc would silently use UTC for an unknown one, and a window
    meant for Berlin must not open on London's clock.
*/
#include "brk_policy.h"

#include <ctype.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static pthread_mutex_t s_tz_lock = PTHREAD_MUTEX_INITIALIZER;

bool
brk_window_zone_valid (const char *zone)
{
    if (!zone || !*zone || strcmp (zone, "UTC") == 0)
        return true;
    if (zone [0] == '/' || strstr (zone, "..") || strlen (zone) > 60)
        return false;
    for (const char *c = zone; *c; c++)
        if (!isalnum ((unsigned char) *c) && !strchr ("/_-+", *c))
            return false;
    const char *dir = getenv ("TZDIR");
    char path [512];
    snprintf (path, sizeof path, "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", zone);
    return access (path, R_OK) == 0;
}

//  Is local time tm inside one of the windows?
static bool
s_open_at (const struct tm *tm, const brk_window_t *windows, size_t count)
{
    int minute = tm->tm_hour * 60 + tm->tm_min;
    int today = (tm->tm_wday + 6) % 7;          //  Monday = 0
    int yesterday = (today + 6) % 7;
    for (size_t i = 0; i < count; i++) {
        const brk_window_t *w = &windows [i];
        if (w->end_min > w->start_min) {
            if ((w->days & (1u << today)) && minute >= w->start_min && minute < w->end_min)
                return true;
        }
        else {
            //  Crosses midnight: the evening of today, or the morning after a listed day
            if ((w->days & (1u << today)) && minute >= w->start_min)
                return true;
            if ((w->days & (1u << yesterday)) && minute < w->end_min)
                return true;
        }
    }
    return false;
}

int
brk_window_state (const char *zone, const brk_window_t *windows, size_t count,
                  int64_t wall_ms, bool *open, int64_t *until_ms)
{
    if (count == 0) {
        *open = true;
        *until_ms = INT64_MAX;
        return 0;
    }
    if (!brk_window_zone_valid (zone))
        return -1;
    pthread_mutex_lock (&s_tz_lock);
    char *saved = getenv ("TZ");
    saved = saved ? strdup (saved) : NULL;
    setenv ("TZ", zone && *zone ? zone : "UTC", 1);
    tzset ();
    time_t t = (time_t) (wall_ms / 1000);
    struct tm tm;
    localtime_r (&t, &tm);
    bool now_open = s_open_at (&tm, windows, count);
    //  Step minute by minute (zone offsets change on whole minutes) to the
    //  next change, at most 8 days ahead
    time_t step = t - tm.tm_sec + 60;
    int64_t until = INT64_MAX;
    for (int i = 0; i < 8 * 1440; i++, step += 60) {
        localtime_r (&step, &tm);
        if (s_open_at (&tm, windows, count) != now_open) {
            until = (int64_t) step * 1000;
            break;
        }
    }
    if (saved) {
        setenv ("TZ", saved, 1);
        free (saved);
    }
    else
        unsetenv ("TZ");
    tzset ();
    pthread_mutex_unlock (&s_tz_lock);
    *open = now_open;
    *until_ms = until;
    return 0;
}

static int
s_day (const char *text, size_t len)
{
    static const char *names [7] = { "mon", "tue", "wed", "thu", "fri", "sat", "sun" };
    if (len != 3)
        return -1;
    for (int i = 0; i < 7; i++)
        if (strncasecmp (text, names [i], 3) == 0)
            return i;
    return -1;
}

int
brk_window_parse_days (const char *text, unsigned *days)
{
    *days = 0;
    if (!text || !*text)
        return -1;
    if (strcmp (text, "*") == 0) {
        *days = 0x7f;
        return 0;
    }
    const char *p = text;
    while (*p) {
        const char *end = p;
        while (*end && *end != ',')
            end++;
        const char *dash = memchr (p, '-', (size_t) (end - p));
        int from = s_day (p, (size_t) ((dash ? dash : end) - p));
        int to = dash ? s_day (dash + 1, (size_t) (end - dash - 1)) : from;
        if (from < 0 || to < 0)
            return -1;
        for (int d = from;; d = (d + 1) % 7) {
            *days |= 1u << d;
            if (d == to)
                break;
        }
        p = *end ? end + 1 : end;
    }
    return 0;
}

static int
s_clock (const char *text, size_t len, int *minutes)
{
    int h, m;
    char tail;
    char buf [8];
    if (len == 0 || len >= sizeof buf)
        return -1;
    memcpy (buf, text, len);
    buf [len] = 0;
    if (sscanf (buf, "%d:%d%c", &h, &m, &tail) != 2 || m < 0 || m > 59 || h < 0
    ||  h > 24 || (h == 24 && m != 0))
        return -1;
    *minutes = h * 60 + m;
    return 0;
}

int
brk_window_parse_hours (const char *text, int *start_min, int *end_min)
{
    if (!text)
        return -1;
    const char *dash = strchr (text, '-');
    if (!dash)
        return -1;
    if (s_clock (text, (size_t) (dash - text), start_min) != 0
    ||  s_clock (dash + 1, strlen (dash + 1), end_min) != 0
    ||  *start_min >= 1440 || *start_min == *end_min)
        return -1;
    return 0;
}
