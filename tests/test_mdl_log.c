/*  Tests for mdl_log: one write(2) per line, buffering, levels.

    stderr is pointed at one end of a SOCK_SEQPACKET socket pair, which
    keeps the boundary of every write: each recv () returns exactly one
    write(2), so the tests see how the lines were written, not only what.
    Each test runs in its own process (Criterion forks), so the dup2 does
    not leak into other tests.
*/
#include <criterion/criterion.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "mdl_log.h"

static int s_reader = -1;

static void
s_capture (void)
{
    int pair [2];
    cr_assert_eq (socketpair (AF_UNIX, SOCK_SEQPACKET, 0, pair), 0);
    int buffer = 1 << 20;
    setsockopt (pair [0], SOL_SOCKET, SO_SNDBUF, &buffer, sizeof buffer);
    setsockopt (pair [1], SOL_SOCKET, SO_RCVBUF, &buffer, sizeof buffer);
    cr_assert_eq (dup2 (pair [0], STDERR_FILENO), STDERR_FILENO);
    close (pair [0]);
    s_reader = pair [1];
}

//  One write(2), or -1 when none comes within timeout_ms.
static ssize_t
s_next_write (char *out, size_t size, int timeout_ms)
{
    struct pollfd item = { s_reader, POLLIN, 0 };
    if (poll (&item, 1, timeout_ms) != 1)
        return -1;
    ssize_t got = recv (s_reader, out, size - 1, 0);
    if (got >= 0)
        out [got] = 0;
    return got;
}

static size_t
s_count_lines (const char *text)
{
    size_t lines = 0;
    for (; *text; text++)
        lines += *text == '\n';
    return lines;
}

Test (mdl_log, one_write_per_line, .init = s_capture, .timeout = 10)
{
    mdl_log_set_name ("test");
    mdl_info ("first %d", 1);
    mdl_warn ("second");
    static char got [70000];
    cr_assert_gt (s_next_write (got, sizeof got, 2000), 0);
    cr_assert (strstr (got, " INFO  test: first 1\n"), "got '%s'", got);
    cr_assert_eq (s_count_lines (got), 1, "one line per write: '%s'", got);
    cr_assert_gt (s_next_write (got, sizeof got, 2000), 0);
    cr_assert (strstr (got, " WARN  test: second\n"), "got '%s'", got);
    cr_assert_eq (s_count_lines (got), 1);
}

Test (mdl_log, level_filters, .init = s_capture, .timeout = 10)
{
    mdl_log_set_level (MDL_LOG_WARN);
    cr_assert_not (mdl_log_enabled (MDL_LOG_INFO));
    cr_assert (mdl_log_enabled (MDL_LOG_ERROR));
    mdl_info ("hidden");
    mdl_debug ("hidden");
    mdl_error ("shown");
    static char got [70000];
    cr_assert_gt (s_next_write (got, sizeof got, 2000), 0);
    cr_assert (strstr (got, "ERROR") && strstr (got, "shown"), "got '%s'", got);
    cr_assert_eq (s_next_write (got, sizeof got, 100), -1, "nothing else: '%s'", got);
    mdl_log_level_t level;
    cr_assert_eq (mdl_log_parse_level ("DEBUG", &level), 0);
    cr_assert_eq (level, MDL_LOG_DEBUG);
    cr_assert_eq (mdl_log_parse_level ("loud", &level), -1);
    cr_assert_eq (mdl_log_parse_level (NULL, &level), -1);
}

Test (mdl_log, buffered_until_flush_and_warn_at_once, .init = s_capture, .timeout = 10)
{
    mdl_log_set_buffered (true);
    for (int i = 0; i < 10; i++)
        mdl_info ("line %d", i);
    static char got [70000];
    cr_assert_eq (s_next_write (got, sizeof got, 100), -1, "held until a flush");
    mdl_log_flush ();
    cr_assert_gt (s_next_write (got, sizeof got, 2000), 0);
    cr_assert_eq (s_count_lines (got), 10, "the ten lines in one write: '%s'", got);
    cr_assert (strstr (got, "line 0\n") && strstr (got, "line 9\n"));
    mdl_warn ("urgent");
    cr_assert_gt (s_next_write (got, sizeof got, 2000), 0, "WARN is not held");
    cr_assert (strstr (got, "urgent"));
}

Test (mdl_log, full_buffer_never_splits_a_line, .init = s_capture, .timeout = 10)
{
    mdl_log_set_buffered (true);
    char text [300];
    memset (text, 'x', sizeof text - 1);
    text [sizeof text - 1] = 0;
    //  About 330 bytes a line: 1000 lines overflow the 64 KiB buffer several times
    for (int i = 0; i < 1000; i++)
        mdl_info ("%04d %s", i, text);
    mdl_log_flush ();
    static char got [70000];
    int lines = 0, writes = 0;
    ssize_t size;
    while ((size = s_next_write (got, sizeof got, 500)) > 0) {
        writes++;
        cr_assert_eq (got [size - 1], '\n', "write %d ends mid-line", writes);
        lines += (int) s_count_lines (got);
    }
    cr_assert_eq (lines, 1000);
    cr_assert_lt (writes, 20, "%d writes for 1000 buffered lines", writes);
}

Test (mdl_log, long_text_is_cut_to_one_line, .init = s_capture, .timeout = 10)
{
    static char text [5000];
    memset (text, 'y', sizeof text - 1);
    mdl_info ("%s", text);
    static char got [70000];
    ssize_t size = s_next_write (got, sizeof got, 2000);
    cr_assert_eq (size, MDL_LOG_LINE_MAX - 1);
    cr_assert_eq (got [size - 1], '\n');
    cr_assert_eq (s_count_lines (got), 1);
}

static void *
s_logger (void *arg)
{
    for (int i = 0; i < 200; i++)
        mdl_info ("thread %d line %d", *(int *) arg, i);
    return NULL;
}

Test (mdl_log, threads_never_interleave, .init = s_capture, .timeout = 20)
{
    pthread_t threads [4];
    int ids [4] = { 0, 1, 2, 3 };
    for (int i = 0; i < 4; i++)
        pthread_create (&threads [i], NULL, s_logger, &ids [i]);
    for (int i = 0; i < 4; i++)
        pthread_join (threads [i], NULL);
    static char got [70000];
    int lines = 0;
    while (s_next_write (got, sizeof got, 500) > 0) {
        cr_assert_eq (s_count_lines (got), 1);
        cr_assert (strstr (got, "INFO  mandrill: thread "), "got '%s'", got);
        lines++;
    }
    cr_assert_eq (lines, 800);
}
