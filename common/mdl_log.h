/*  mdl_log: levelled logging to stderr for every Mandrill process.

    One line per event: "2026-11-26T07:44:37.123Z INFO  broker: text".
    The level is process-wide; lines below it cost one integer compare.
    Output goes through a private buffered stream that is flushed at the
    end of every line unless mdl_log_set_buffered (true) was called, in
    which case it is flushed by mdl_log_flush () (called from the owner's
    loop) or when the buffer fills, so per-message lines at high rates do
    not cost one write(2) each.
*/
#ifndef MDL_LOG_H_INCLUDED
#define MDL_LOG_H_INCLUDED

#include <stdbool.h>

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
