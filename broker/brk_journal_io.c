/*  brk_journal_io: the io seam and the small helpers every other part of
    the journal writes through. brk_journal_io_system () is the real
    system calls; tests pass their own table (config->io) to inject
    ENOSPC, EIO, short writes or a failing allocation. Also: file paths,
    the list of files on disk, clocks, and the broker loop's wake-up.
    Costs: one system call per call; nothing here allocates except
    brk_journal_files_add (amortised O(1)).
*/
#include "brk_journal_internal.h"
#include "mdl_array.h"
#include "mdl_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static int
s_sys_open (void *arg, const char *path, int flags, mode_t mode)
{
    (void) arg;
    return open (path, flags, mode);
}

static ssize_t
s_sys_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    (void) arg;
    return pwrite (fd, data, size, offset);
}

static int
s_sys_fsync (void *arg, int fd)
{
    (void) arg;
    return fsync (fd);
}

static int
s_sys_ftruncate (void *arg, int fd, off_t size)
{
    (void) arg;
    return ftruncate (fd, size);
}

static int
s_sys_rename (void *arg, const char *from, const char *to)
{
    (void) arg;
    return rename (from, to);
}

static int
s_sys_unlink (void *arg, const char *path)
{
    (void) arg;
    return unlink (path);
}

static void *
s_sys_alloc (void *arg, size_t size)
{
    (void) arg;
    return malloc (size);
}

static const brk_journal_io_t s_io_system = {
    s_sys_open, s_sys_pwrite, s_sys_fsync, s_sys_ftruncate, s_sys_rename, s_sys_unlink,
    NULL, s_sys_alloc
};

const brk_journal_io_t *
brk_journal_io_system (void)
{
    return &s_io_system;
}

void
brk_journal_path (brk_journal_t *self, char *path, size_t size, uint32_t number,
                  uint32_t kind, const char *suffix)
{
    snprintf (path, size, "%s/journal-%010" PRIu32 ".%s%s", self->dir, number,
              kind == KIND_SNAPSHOT? "snap": "seg", suffix);
}

int
brk_journal_write_all (brk_journal_t *self, int fd, const uint8_t *data, size_t size,
                       uint64_t offset)
{
    while (size > 0) {
        ssize_t rc = self->io.pwrite (self->io.arg, fd, data, size, (off_t) offset);
        if (rc < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (rc == 0) {
            errno = EIO;
            return -1;
        }
        data += rc;
        size -= (size_t) rc;
        offset += (uint64_t) rc;
    }
    return 0;
}

static int64_t
s_mono_us (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

int
brk_journal_fsync (brk_journal_t *self, int fd)
{
    self->fsyncs++;
    int64_t start = s_mono_us ();
    int rc = self->io.fsync (self->io.arg, fd);
    int64_t took = s_mono_us () - start;
    if (took > self->fsync_max_us)
        self->fsync_max_us = took;
    int slow_ms = self->config.slow_fsync_ms;
    if (slow_ms > 0 && took >= (int64_t) slow_ms * 1000) {
        self->slow_fsyncs++;
        self->slow_unreported++;
        int64_t now = start / 1000 + took / 1000;
        if (self->slow_reported_ms == 0 || now - self->slow_reported_ms >= SLOW_FSYNC_REPORT_MS) {
            mdl_warn ("journal: an fsync took %" PRId64 " ms (%" PRIu64 " of %d ms or more since"
                      " the last report, %" PRIu64 " in all): every PUBACK, lease and ACKED"
                      " waits for the disk", took / 1000, self->slow_unreported, slow_ms,
                      self->slow_fsyncs);
            self->slow_reported_ms = now;
            self->slow_unreported = 0;
        }
    }
    return rc;
}

void
brk_journal_signal_loop (brk_journal_t *self)
{
    uint64_t one = 1;
    if (write (self->event_fd, &one, sizeof (one)) < 0 && errno != EAGAIN)
        mdl_warn ("journal: cannot signal the broker loop: %s", strerror (errno));
}

int
brk_journal_files_add (brk_journal_files_t *files, uint32_t number, uint32_t kind,
                       uint64_t size)
{
    if (mdl_array_reserve (&files->items, &files->capacity, files->count + 1, sizeof (*files->items)) != 0)
        return -1;
    files->items [files->count++] = (brk_journal_file_t) { number, kind, size };
    return 0;
}

uint64_t
brk_journal_files_bytes (const brk_journal_files_t *files)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < files->count; i++)
        bytes += files->items [i].size;
    return bytes;
}

int64_t
brk_journal_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

uint64_t
brk_journal_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}
