/*  brk_journal: the public API of the broker's journal. See brk_journal.h
    for the contract, JOURNAL.md for the on-disk format and the
    crash-safety argument, and brk_journal_internal.h for how the module
    is split.

    Who owns what:
    - the caller's thread (the broker loop) owns the append buffer, under
      the mutex, and reads the shared status fields under the mutex;
    - the writer thread (brk_journal_writer.c) owns everything on disk:
      the active segment, the list of files, the index of live messages,
      compaction. Before the writer starts, brk_journal_new builds these
      on the caller's thread (brk_journal_recovery.c).
*/
#include "brk_journal_internal.h"
#include "mdl_log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

int
brk_journal_parse_mode (const char *text, brk_journal_mode_t *mode)
{
    if (!text)
        return -1;
    if (strcmp (text, "none") == 0)
        *mode = BRK_JOURNAL_NONE;
    else
    if (strcmp (text, "batch") == 0)
        *mode = BRK_JOURNAL_BATCH;
    else
    if (strcmp (text, "sync") == 0)
        *mode = BRK_JOURNAL_SYNC;
    else
        return -1;
    return 0;
}

const char *
brk_journal_mode_name (brk_journal_mode_t mode)
{
    return mode == BRK_JOURNAL_NONE? "none": mode == BRK_JOURNAL_SYNC? "sync": "batch";
}

void
brk_journal_config_defaults (brk_journal_config_t *config)
{
    memset (config, 0, sizeof (*config));
    config->dir = "./mandrill-data";
    config->mode = BRK_JOURNAL_BATCH;
    config->fsync_interval_ms = 10;
    config->retry_interval_ms = 100;
    config->segment_size = 16u << 20;
    config->compact_slack_bytes = 16u << 20;
    config->max_buffer = 64u << 20;
    config->salvage = false;
    config->done_window = 0;
    config->slow_fsync_ms = 1000;
    config->io = NULL;
}

//  --------------------------------------------------------------------
//  Public API

static void
s_free (brk_journal_t *self)
{
    if (self->active_fd >= 0)
        close (self->active_fd);
    if (self->dir_fd >= 0)
        close (self->dir_fd);
    if (self->event_fd >= 0)
        close (self->event_fd);
    if (self->lock_fd >= 0)
        close (self->lock_fd);
    brk_journal_bytes_free (&self->buf);
    brk_journal_bytes_free (&self->pend);
    brk_journal_index_destroy (&self->index);
    free (self->files.items);
    pthread_mutex_destroy (&self->mutex);
    pthread_cond_destroy (&self->wake);
    pthread_cond_destroy (&self->done);
    free (self->dir);
    free (self);
}

//  A directory just made exists after a crash only once its parent is
//  fsynced: without it the journal's first fsyncs could vanish with it.
static int
s_sync_parent (brk_journal_t *self, brk_journal_report_t *report)
{
    char parent [4096];
    snprintf (parent, sizeof (parent), "%s", self->dir);
    size_t len = strlen (parent);
    while (len > 1 && parent [len - 1] == '/')
        parent [--len] = 0;         //  "a/b/" names "a/b"
    char *slash = strrchr (parent, '/');
    if (!slash)
        snprintf (parent, sizeof (parent), ".");
    else
    if (slash == parent)
        parent [1] = 0;             //  "/a": the parent is "/"
    else
        *slash = 0;
    int fd = self->io.open (self->io.arg, parent, O_RDONLY | O_DIRECTORY | O_CLOEXEC, 0);
    if (fd < 0 || brk_journal_fsync (self, fd)) {
        brk_journal_fail (report, errno, "cannot fsync %s after creating %s: %s",
                          parent, self->dir, strerror (errno));
        if (fd >= 0)
            close (fd);
        return -1;
    }
    close (fd);
    return 0;
}

brk_journal_t *
brk_journal_new (const brk_journal_config_t *config, brk_journal_replay_fn *replay,
                 void *arg, brk_journal_report_t *report)
{
    assert (config);
    brk_journal_report_t scratch;
    if (!report)
        report = &scratch;
    memset (report, 0, sizeof (*report));
    int64_t started = brk_journal_mono_ms ();
    if (!config->dir || !*config->dir || config->fsync_interval_ms < 0
    ||  config->retry_interval_ms < 1 || config->segment_size < 4096
    ||  config->segment_size > (1u << 30) || config->max_buffer < 4096) {
        brk_journal_fail (report, EINVAL, "invalid journal configuration");
        return NULL;
    }
    brk_journal_t *self = calloc (1, sizeof (brk_journal_t));
    if (!self) {
        brk_journal_fail (report, ENOMEM, "out of memory");
        return NULL;
    }
    self->config = *config;
    self->dir = strdup (config->dir);
    self->config.dir = self->dir;
    self->io = config->io? *config->io: *brk_journal_io_system ();
    self->lock_fd = self->dir_fd = self->event_fd = self->active_fd = -1;
    if (brk_journal_index_init (&self->index, self->io.alloc, self->io.arg)) {
        free (self->dir);
        free (self);
        brk_journal_fail (report, ENOMEM, "out of memory");
        return NULL;
    }
    self->index.done_window = config->done_window;
    pthread_mutex_init (&self->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&self->wake, &attr);
    pthread_condattr_destroy (&attr);
    pthread_cond_init (&self->done, NULL);
    if (!self->dir) {
        brk_journal_fail (report, ENOMEM, "out of memory");
        goto fail;
    }
    if (mkdir (self->dir, 0755) == 0) {
        if (s_sync_parent (self, report))
            goto fail;
    }
    else
    if (errno != EEXIST) {
        brk_journal_fail (report, errno, "cannot create %s: %s", self->dir, strerror (errno));
        goto fail;
    }
    char path [4096];
    snprintf (path, sizeof (path), "%s/LOCK", self->dir);
    self->lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (self->lock_fd < 0) {
        brk_journal_fail (report, errno, "cannot open %s: %s", path, strerror (errno));
        goto fail;
    }
    if (flock (self->lock_fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK)
            brk_journal_fail (report, EBUSY, "%s is in use by another broker", self->dir);
        else
            brk_journal_fail (report, errno, "cannot lock %s: %s", path, strerror (errno));
        goto fail;
    }
    self->dir_fd = open (self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    self->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->dir_fd < 0 || self->event_fd < 0) {
        brk_journal_fail (report, errno, "cannot open %s: %s", self->dir, strerror (errno));
        goto fail;
    }
    if (brk_journal_recover (self, replay, arg, report))
        goto fail;

    //  Every run starts a segment with its epoch, fsynced before any
    //  delivery can be made, so delivery ids are never reused.
    self->epoch++;
    self->run_epoch = self->epoch;
    report->epoch = self->epoch;
    self->active_number = ++self->last_number;
    self->active_size = HEADER_SIZE;
    self->pend_off = HEADER_SIZE;
    if (brk_journal_encode_record (&self->pend, REC_EPOCH, self->epoch, 0, NULL, NULL, NULL)
    ||  brk_journal_flush (self, true)) {
        brk_journal_fail (report, errno, "cannot write the journal in %s: %s", self->dir,
                  strerror (errno));
        goto fail;
    }
    //  Rewrite what salvage kept so the damaged files go away now
    if (report->salvaged_regions && brk_journal_compact_now (self)) {
        brk_journal_fail (report, errno, "salvage could not compact %s: %s", self->dir,
                  strerror (errno));
        goto fail;
    }
    brk_journal_writer_stats (self);
    if (pthread_create (&self->thread, NULL, brk_journal_writer, self)) {
        brk_journal_fail (report, EAGAIN, "cannot start the journal writer");
        goto fail;
    }
    self->thread_started = true;
    report->elapsed_ms = brk_journal_mono_ms () - started;
    if (report->torn_bytes || report->salvaged_regions)
        snprintf (report->message, sizeof (report->message),
                  "recovered %" PRIu64 " live messages; truncated %" PRIu64 " torn bytes;"
                  " salvage skipped %" PRIu64 " bytes in %" PRIu64 " places",
                  report->live, report->torn_bytes, report->salvaged_bytes,
                  report->salvaged_regions);
    else
        snprintf (report->message, sizeof (report->message),
                  "recovered %" PRIu64 " live messages from %" PRIu64 " records in %"
                  PRId64 " ms", report->live, report->records, report->elapsed_ms);
    return self;

fail:
    report->elapsed_ms = brk_journal_mono_ms () - started;
    s_free (self);
    return NULL;
}

void
brk_journal_destroy (brk_journal_t **self_p)
{
    assert (self_p);
    brk_journal_t *self = *self_p;
    if (!self)
        return;
    if (self->thread_started) {
        pthread_mutex_lock (&self->mutex);
        self->stop = true;
        pthread_cond_signal (&self->wake);
        pthread_mutex_unlock (&self->mutex);
        pthread_join (self->thread, NULL);
    }
    s_free (self);
    *self_p = NULL;
}

uint64_t
brk_journal_epoch (brk_journal_t *self)
{
    assert (self);
    return self->run_epoch;
}

static uint64_t
s_append (brk_journal_t *self, int type, uint64_t number, uint32_t value,
          const char *id, const char *text, const char *text2)
{
    assert (self);
    assert (id || type == REC_EPOCH);
    uint64_t seq = 0;
    pthread_mutex_lock (&self->mutex);
    bool was_empty = self->buf.size == 0;
    if ((type == REC_PUBLISH && self->error) || self->buf.size >= self->config.max_buffer
    ||  brk_journal_encode_record (&self->buf, type, number, value, id, text, text2))
        self->refused++;
    else {
        seq = ++self->appended;
        self->buf_seq = seq;
        if (was_empty && self->config.mode != BRK_JOURNAL_NONE)
            self->buf_since = brk_journal_mono_ms ();
        //  Wake the writer for a new batch, and again when the buffer
        //  passes half its cap so it is drained before appends are refused
        if (was_empty || self->buf.size >= self->config.max_buffer / 2)
            pthread_cond_signal (&self->wake);
    }
    pthread_mutex_unlock (&self->mutex);
    return seq;
}

uint64_t
brk_journal_append_publish (brk_journal_t *self, const char *message_id,
                            const char *request, uint64_t published_ms)
{
    return brk_journal_append_publish_from (self, message_id, request, published_ms, NULL);
}

uint64_t
brk_journal_append_publish_from (brk_journal_t *self, const char *message_id,
                                 const char *request, uint64_t published_ms,
                                 const char *publisher)
{
    assert (request);
    char cut [PUBLISHER_MAX + 1];
    if (!publisher)
        publisher = "";
    else
    if (strlen (publisher) > PUBLISHER_MAX) {
        memcpy (cut, publisher, PUBLISHER_MAX);
        cut [PUBLISHER_MAX] = 0;
        publisher = cut;
    }
    return s_append (self, REC_PUBLISH, published_ms, 0, message_id, request, publisher);
}

uint64_t
brk_journal_append_epoch (brk_journal_t *self, uint64_t epoch)
{
    return s_append (self, REC_EPOCH, epoch, 0, NULL, NULL, NULL);
}

uint64_t
brk_journal_append_ack (brk_journal_t *self, const char *message_id)
{
    return s_append (self, REC_ACK, 0, 0, message_id, NULL, NULL);
}

uint64_t
brk_journal_append_attempt (brk_journal_t *self, const char *message_id, uint32_t attempt,
                            uint64_t delivery_id)
{
    return s_append (self, REC_ATTEMPT, delivery_id, attempt, message_id, NULL, NULL);
}

uint64_t
brk_journal_append_dead (brk_journal_t *self, const char *message_id, const char *reason,
                         const char *history, uint64_t dead_ms)
{
    return s_append (self, REC_DEAD, dead_ms, 0, message_id,
                     reason? reason: "", history? history: "[]");
}

uint64_t
brk_journal_append_replay (brk_journal_t *self, const char *message_id)
{
    return s_append (self, REC_REPLAY, 0, 0, message_id, NULL, NULL);
}

uint64_t
brk_journal_append_progress (brk_journal_t *self, const char *message_id, uint32_t steps)
{
    return s_append (self, REC_PROGRESS, 0, steps, message_id, NULL, NULL);
}

int
brk_journal_commit (brk_journal_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->mutex);
    //  Batch: the first commit after a batch may be what the writer waits
    //  for (see s_writer); later ones change nothing until it takes them.
    if (self->config.mode == BRK_JOURNAL_SYNC || self->error
    ||  (self->config.mode == BRK_JOURNAL_BATCH && !self->commit_asked))
        pthread_cond_signal (&self->wake);
    self->commit_asked = true;
    pthread_mutex_unlock (&self->mutex);
    return 0;
}

int
brk_journal_sync (brk_journal_t *self)
{
    assert (self);
    int rc = 0;
    pthread_mutex_lock (&self->mutex);
    uint64_t target = self->appended;
    uint64_t asked_at = 0;
    bool asked = false;
    while (self->synced < target) {
        if (asked && self->batch_gen > asked_at && self->error) {
            errno = self->error;
            rc = -1;
            break;
        }
        asked_at = self->batch_gen;
        asked = true;
        self->sync_asked = true;
        pthread_cond_signal (&self->wake);
        while (self->batch_gen == asked_at)
            pthread_cond_wait (&self->done, &self->mutex);
    }
    pthread_mutex_unlock (&self->mutex);
    return rc;
}

int
brk_journal_fd (brk_journal_t *self)
{
    assert (self);
    return self->event_fd;
}

uint64_t
brk_journal_durable (brk_journal_t *self)
{
    assert (self);
    uint64_t count;
    if (read (self->event_fd, &count, sizeof (count)) < 0 && errno != EAGAIN)
        mdl_warn ("journal: reading the event fd: %s", strerror (errno));
    pthread_mutex_lock (&self->mutex);
    uint64_t durable = self->config.mode == BRK_JOURNAL_NONE? self->appended: self->durable;
    pthread_mutex_unlock (&self->mutex);
    return durable;
}

int
brk_journal_status (brk_journal_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->mutex);
    int error = self->error;
    pthread_mutex_unlock (&self->mutex);
    return error;
}

int
brk_journal_compact (brk_journal_t *self)
{
    assert (self);
    pthread_mutex_lock (&self->mutex);
    uint64_t gen = self->compact_gen;
    self->compact_asked = true;
    pthread_cond_signal (&self->wake);
    while (self->compact_gen == gen)
        pthread_cond_wait (&self->done, &self->mutex);
    int rc = self->compact_rc;
    pthread_mutex_unlock (&self->mutex);
    if (rc) {
        errno = rc;
        return -1;
    }
    return 0;
}

void
brk_journal_stats (brk_journal_t *self, brk_journal_stats_t *stats)
{
    assert (self);
    assert (stats);
    pthread_mutex_lock (&self->mutex);
    *stats = self->stats;
    stats->appended = self->appended;
    stats->durable = self->config.mode == BRK_JOURNAL_NONE? self->appended: self->durable;
    stats->refused = self->refused;
    stats->error = self->error;
    pthread_mutex_unlock (&self->mutex);
}
