/*  mdl_log: see mdl_log.h. The level and name are process-wide; writes
    are serialised by a mutex because the worker's database thread logs too.
*/
#include "mdl_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

static mdl_log_level_t s_level = MDL_LOG_INFO;      //  Lines above this are dropped
static char s_name [64] = "mandrill";               //  Printed after the level
static bool s_buffered = false;                     //  Flush only on request
static pthread_mutex_t s_mutex = PTHREAD_MUTEX_INITIALIZER;
static const char *s_level_names [] = { "ERROR", "WARN ", "INFO ", "DEBUG", "TRACE" };

void
mdl_log_set_level (mdl_log_level_t level)
{
    s_level = level;
}

mdl_log_level_t
mdl_log_level (void)
{
    return s_level;
}

int
mdl_log_parse_level (const char *text, mdl_log_level_t *level)
{
    static const char *names [] = { "error", "warn", "info", "debug", "trace" };
    for (int i = 0; i < 5; i++)
        if (text && strcasecmp (text, names [i]) == 0) {
            *level = (mdl_log_level_t) i;
            return 0;
        }
    return -1;
}

void
mdl_log_set_name (const char *name)
{
    snprintf (s_name, sizeof s_name, "%s", name);
}

void
mdl_log_set_buffered (bool buffered)
{
    pthread_mutex_lock (&s_mutex);
    s_buffered = buffered;
    fflush (stderr);
    pthread_mutex_unlock (&s_mutex);
}

void
mdl_log_flush (void)
{
    pthread_mutex_lock (&s_mutex);
    fflush (stderr);
    pthread_mutex_unlock (&s_mutex);
}

void
mdl_log_write (mdl_log_level_t level, const char *format, ...)
{
    if (level > s_level)
        return;
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    char line [2048];
    int used = snprintf (line, sizeof line, "%s.%03dZ %s %s: ", stamp,
                         (int) (tv.tv_usec / 1000), s_level_names [level], s_name);
    va_list args;
    va_start (args, format);
    if (used > 0 && (size_t) used < sizeof line - 1)
        vsnprintf (line + used, sizeof line - 1 - (size_t) used, format, args);
    va_end (args);
    //  One write per line, newline included, so that the lines of several
    //  processes sharing a terminal never run into each other
    size_t len = strlen (line);
    line [len++] = '\n';

    pthread_mutex_lock (&s_mutex);
    fwrite (line, 1, len, stderr);
    if (!s_buffered || level <= MDL_LOG_WARN)
        fflush (stderr);
    pthread_mutex_unlock (&s_mutex);
}
