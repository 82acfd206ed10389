/*  mdl_log: see mdl_log.h. The level is an atomic; the name, the buffer
    and the accounting of what is in it are guarded by s_mutex.
*/
#include "mdl_log.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/time.h>
#include <time.h>

#define S_BUFFER_SIZE 65536

static _Atomic int s_level = MDL_LOG_INFO;          //  Lines above this are dropped
static char s_name [64] = "mandrill";               //  Printed after the level
static bool s_buffered = false;                     //  Hold INFO and below until a flush
static bool s_setup = false;                        //  setvbuf done
static size_t s_pending;                            //  Bytes in the buffer since the last flush
static char s_buffer [S_BUFFER_SIZE];               //  stderr's buffer
static pthread_mutex_t s_mutex = PTHREAD_MUTEX_INITIALIZER;
static const char *s_level_names [] = { "ERROR", "WARN ", "INFO ", "DEBUG", "TRACE" };

//  Called with s_mutex held.
static void
s_setup_stream (void)
{
    if (!s_setup) {
        fflush (stderr);
        setvbuf (stderr, s_buffer, _IOFBF, sizeof s_buffer);
        s_setup = true;
    }
}

//  Called with s_mutex held.
static void
s_flush (void)
{
    fflush (stderr);
    s_pending = 0;
}

void
mdl_log_set_level (mdl_log_level_t level)
{
    atomic_store_explicit (&s_level, (int) level, memory_order_relaxed);
}

mdl_log_level_t
mdl_log_level (void)
{
    return (mdl_log_level_t) atomic_load_explicit (&s_level, memory_order_relaxed);
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
    pthread_mutex_lock (&s_mutex);
    snprintf (s_name, sizeof s_name, "%s", name);
    pthread_mutex_unlock (&s_mutex);
}

void
mdl_log_set_buffered (bool buffered)
{
    pthread_mutex_lock (&s_mutex);
    s_setup_stream ();
    s_buffered = buffered;
    s_flush ();
    pthread_mutex_unlock (&s_mutex);
}

void
mdl_log_flush (void)
{
    pthread_mutex_lock (&s_mutex);
    if (s_pending)
        s_flush ();
    pthread_mutex_unlock (&s_mutex);
}

void
mdl_log_write (mdl_log_level_t level, const char *format, ...)
{
    if (!mdl_log_enabled (level))
        return;
    struct timeval tv;
    gettimeofday (&tv, NULL);
    struct tm tm;
    gmtime_r (&tv.tv_sec, &tm);
    char stamp [32];
    strftime (stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);

    //  The text is formatted before the lock; only the prefix's name is read under it
    char text [MDL_LOG_LINE_MAX];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);

    pthread_mutex_lock (&s_mutex);
    s_setup_stream ();
    char line [MDL_LOG_LINE_MAX];
    int used = snprintf (line, sizeof line - 1, "%s.%03dZ %s %s: %s", stamp,
                         (int) (tv.tv_usec / 1000), s_level_names [level], s_name, text);
    size_t len = used < 0 ? 0
               : (size_t) used < sizeof line - 1 ? (size_t) used : sizeof line - 2;
    line [len++] = '\n';
    //  A line never straddles two writes: if it would not fit what is left
    //  of the buffer, what is there goes first
    if (s_pending + len > sizeof s_buffer)
        s_flush ();
    fwrite (line, 1, len, stderr);
    s_pending += len;
    if (!s_buffered || level <= MDL_LOG_WARN)
        s_flush ();
    pthread_mutex_unlock (&s_mutex);
}
