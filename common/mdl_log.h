/*  mdl_log: levelled logging to stderr for every Mandrill process.

    One line per event: "2026-11-26T07:44:37.123Z INFO  broker: text",
    at most MDL_LOG_LINE_MAX bytes (longer text is cut).

    Output: the first line sets stderr fully buffered on a private 64 KiB
    buffer (setvbuf), so call mdl_log_* before anything else writes to
    stderr. Every line reaches the file descriptor in one write(2),
    newline included, so the lines of several processes (or threads)
    sharing a terminal or a pipe never run into each other. By default
    each line is written at once. After mdl_log_set_buffered (true), INFO
    and below wait in the buffer until mdl_log_flush () (called from the
    owner's loop) or until the next line would not fit (then the buffer is
    written first), so per-message lines at high rates cost one write(2)
    per buffer, not per line; WARN and ERROR are always written at once.
    Other text written to stderr with stdio shares the buffer and may be
    held until the next flush; exit () flushes it.

    Threads: any thread may log; lines are serialised by a mutex. The level
    is an atomic, so mdl_log_enabled () costs one relaxed load and lines
    below the level cost nothing else.
*/
#ifndef MDL_LOG_H_INCLUDED
#define MDL_LOG_H_INCLUDED

#include <stdbool.h>

#define MDL_LOG_LINE_MAX 2048     //  Bytes per line, newline included

typedef enum {
    MDL_LOG_ERROR = 0,
    MDL_LOG_WARN = 1,
    MDL_LOG_INFO = 2,
    MDL_LOG_DEBUG = 3,
    MDL_LOG_TRACE = 4
} mdl_log_level_t;

//  Set the process-wide level; lines above it are dropped.
void mdl_log_set_level (mdl_log_level_t level);
mdl_log_level_t mdl_log_level (void);

//  Parse "error", "warn", "info", "debug", "trace". Returns 0 or -1.
int mdl_log_parse_level (const char *text, mdl_log_level_t *level);

//  Name printed after the level, e.g. "broker" or "worker-1". Copied.
void mdl_log_set_name (const char *name);

//  Flush only when asked (or the buffer fills) instead of at every line.
void mdl_log_set_buffered (bool buffered);
void mdl_log_flush (void);

//  Is a line at this level going to be printed?
#define mdl_log_enabled(level) ((level) <= mdl_log_level ())

void mdl_log_write (mdl_log_level_t level, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

#define mdl_error(...) mdl_log_write (MDL_LOG_ERROR, __VA_ARGS__)
#define mdl_warn(...)  mdl_log_write (MDL_LOG_WARN, __VA_ARGS__)
#define mdl_info(...)  do { if (mdl_log_enabled (MDL_LOG_INFO)) mdl_log_write (MDL_LOG_INFO, __VA_ARGS__); } while (0)
#define mdl_debug(...) do { if (mdl_log_enabled (MDL_LOG_DEBUG)) mdl_log_write (MDL_LOG_DEBUG, __VA_ARGS__); } while (0)
#define mdl_trace(...) do { if (mdl_log_enabled (MDL_LOG_TRACE)) mdl_log_write (MDL_LOG_TRACE, __VA_ARGS__); } while (0)

#endif
