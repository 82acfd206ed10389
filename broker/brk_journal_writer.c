/*  brk_journal_writer: the writer thread (JOURNAL.md, "Segments, the
    writer and durability"). It owns everything on disk after
    brk_journal_new: it takes the whole append buffer at once (a batch),
    gives it its place (file, offset), writes it with one pwrite at the end
    of the active segment, fsyncs per the mode, publishes the durable
    sequence, and only then puts its records into the live index (so
    replies do not wait for that work); it rotates segments, retries a
    failed batch in place (indexed once a retry succeeds), and compacts
    between batches. It wakes the broker's loop through the event fd when
    durability advanced or the status changed.

    Locking: the mutex is held only to take the buffer and to publish the
    results (durable, status, stats); all I/O runs without it, so appends
    never wait for a disk.
*/
#include "brk_journal_internal.h"
#include "mdl_array.h"
#include "mdl_log.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

//  Move the appended records into pend (under mutex). Sets *start to where
//  they begin in pend. Returns false if nothing moved.
static bool
s_take (brk_journal_t *self, size_t *start)
{
    *start = self->pend.size;
    if (self->buf.size == 0)
        return false;
    if (self->pend.size == 0) {
        brk_journal_bytes_t swap = self->pend;
        self->pend = self->buf;
        self->buf = swap;
        self->buf.size = 0;
    }
    else {
        if (brk_journal_bytes_reserve (&self->pend, self->buf.size))
            return false;       //  Stays in buf until memory returns
        memcpy (self->pend.data + self->pend.size, self->buf.data, self->buf.size);
        self->pend.size += self->buf.size;
        self->buf.size = 0;
    }
    self->pend_seq = self->buf_seq;
    return true;
}

//  Give the new records in pend (from start) their place on disk: a
//  fresh batch goes to a new segment when the active one is full; a
//  retried batch stays where it was placed.
static void
s_position (brk_journal_t *self, size_t start)
{
    if (start != 0)
        return;
    if (self->active_created && self->active_size >= self->config.segment_size) {
        if (self->active_fd >= 0)
            close (self->active_fd);
        self->active_fd = -1;
        self->active_prev = self->active_number;
        self->active_number = ++self->last_number;
        self->active_created = false;
        self->active_dirsynced = false;
        self->active_size = HEADER_SIZE;
        self->active_synced = 0;
    }
    self->pend_off = self->active_size;
}

void
brk_journal_index_records (brk_journal_t *self, const uint8_t *records, size_t size,
                           uint32_t file, uint64_t offset)
{
    size_t off = 0;
    while (off < size) {
        const uint8_t *data = records + off;
        size_t len = RECORD_HEAD + brk_journal_get32 (data);
        brk_journal_record_t record;
        int rc = brk_journal_decode (data + RECORD_HEAD, len - RECORD_HEAD,
                                     JOURNAL_VERSION, &record);
        assert (rc == 0);       //  We encoded it
        if (brk_journal_index_apply (&self->index, &record, file, offset + off,
                                     (uint32_t) len, &self->epoch)
        &&  !self->index_incomplete) {
            //  The record is safe in its file, but a snapshot made from
            //  this index would leave its message out and delete that
            //  file: no compaction until a start rebuilds the index
            self->index_incomplete = true;
            mdl_error ("journal: out of memory in the index (message %s): compaction"
                       " is off until the broker restarts", record.id? record.id: "?");
        }
        off += len;
    }
}

//  After an fsync: write a SYNCED record saying how far this file is
//  fsynced, right after it (JOURNAL.md, "Torn batches"). It is not
//  fsynced itself: it rides along with the next batch's fsync, or with
//  the page cache. A failed write changes nothing: the next batch is
//  written over whatever part of it landed.
static void
s_mark_synced (brk_journal_t *self)
{
    uint8_t bytes [SYNCED_RECORD_SIZE];
    brk_journal_bytes_t marker = { bytes, 0, sizeof (bytes) };
    int rc = brk_journal_encode_record (&marker, REC_SYNCED, self->active_synced, 0,
                                        NULL, NULL, NULL);
    assert (rc == 0 && marker.size == SYNCED_RECORD_SIZE);
    if (brk_journal_write_all (self, self->active_fd, bytes, marker.size, self->active_size))
        mdl_debug ("journal: cannot write a synced marker: %s", strerror (errno));
    else
        self->active_size += marker.size;
}

int
brk_journal_flush (brk_journal_t *self, bool force)
{
    if (!self->active_created) {
        char path [4096];
        brk_journal_path (self, path, sizeof (path), self->active_number, KIND_SEGMENT, "");
        int fd = self->io.open (self->io.arg, path,
                                O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return -1;
        uint8_t header [HEADER_SIZE];
        brk_journal_header_encode (header, KIND_SEGMENT, self->active_number, self->active_prev);
        if (brk_journal_write_all (self, fd, header, HEADER_SIZE, 0)) {
            int saved = errno;
            close (fd);
            errno = saved;
            return -1;
        }
        if (brk_journal_files_add (&self->files, self->active_number, KIND_SEGMENT,
                                   HEADER_SIZE)) {
            close (fd);
            errno = ENOMEM;
            return -1;
        }
        self->active_fd = fd;
        self->active_created = true;
        self->active_size = HEADER_SIZE;
        self->active_synced = 0;
        self->unsynced = true;
    }
    if (self->pend.size == 0)
        self->pend_off = self->active_size;     //  Nothing placed: nothing moves
    if (self->pend.size) {
        if (brk_journal_write_all (self, self->active_fd, self->pend.data, self->pend.size,
                                   self->pend_off)) {
            int saved = errno;
            //  Best effort: leave no partial record behind if we die now
            if (self->io.ftruncate (self->io.arg, self->active_fd, (off_t) self->pend_off))
                mdl_debug ("journal: ftruncate after a failed write: %s", strerror (errno));
            errno = saved;
            return -1;
        }
        self->unsynced = true;
    }
    if ((self->config.mode != BRK_JOURNAL_NONE || force) && self->unsynced) {
        if (brk_journal_fsync (self, self->active_fd))
            return -1;
        if (!self->active_dirsynced) {
            if (brk_journal_fsync (self, self->dir_fd))
                return -1;
            self->active_dirsynced = true;
        }
        self->unsynced = false;
        self->active_synced = self->pend_off + self->pend.size;
        self->active_size = self->active_synced;
        s_mark_synced (self);
    }
    else
        self->active_size = self->pend_off + self->pend.size;
    self->files.items [self->files.count - 1].size = self->active_size;
    self->pend.size = 0;
    return 0;
}

int
brk_journal_commit_between (brk_journal_t *self, brk_journal_later_t *later)
{
    //  Room for the batch's entry first: without it, commits wait for the
    //  end of the compaction, as they would without this
    if (mdl_array_reserve (&later->batches, &later->capacity, later->count + 1,
                           sizeof (*later->batches)))
        return 0;
    pthread_mutex_lock (&self->mutex);
    //  The writer's own rule (brk_journal_writer): a commit is taken at
    //  once, as the next group commit, so a compaction delays a request by
    //  one chunk of the snapshot at most. Records nobody commits wait one
    //  interval (in mode none, where they have no start time and nothing
    //  waits for an fsync, none at all).
    bool aged = brk_journal_mono_ms () - self->buf_since >= self->config.fsync_interval_ms;
    bool asked = self->sync_asked || self->stop || self->commit_asked || aged
              || self->buf.size >= self->config.max_buffer / 2;
    if (!asked || self->buf.size == 0 || self->pend.size > 0) {
        pthread_mutex_unlock (&self->mutex);
        return 0;
    }
    self->commit_asked = false;
    size_t start;
    bool took = s_take (self, &start);
    uint64_t seq = self->pend_seq;
    pthread_mutex_unlock (&self->mutex);
    if (!took)
        return 0;
    //  pend was empty, so start is 0: a fresh batch
    s_position (self, 0);
    uint32_t file = self->active_number;
    uint64_t offset = self->pend_off;
    size_t size = self->pend.size;
    if (brk_journal_flush (self, false)) {
        //  pend stays for the writer's next batch; the compaction stops
        //  and indexes it (it is placed)
        later->pend_unindexed = true;
        return -1;
    }
    //  The batch's bytes move to later as they are: pend grows anew
    later->batches [later->count++] = (brk_journal_later_batch_t) { file, offset, self->pend.data, size };
    self->pend = (brk_journal_bytes_t) { NULL, 0, 0 };

    pthread_mutex_lock (&self->mutex);
    bool signal = seq > self->durable;
    if (signal)
        self->durable = seq;
    if (!self->unsynced)
        self->synced = seq;
    self->batch_gen++;
    pthread_cond_broadcast (&self->done);
    if (signal)
        brk_journal_signal_loop (self);
    pthread_mutex_unlock (&self->mutex);
    return 0;
}

void
brk_journal_later_apply (brk_journal_t *self, brk_journal_later_t *later)
{
    for (size_t i = 0; i < later->count; i++) {
        brk_journal_later_batch_t *batch = &later->batches [i];
        brk_journal_index_records (self, batch->records, batch->size, batch->file, batch->offset);
        free (batch->records);
    }
    bool pend_too = later->pend_unindexed;
    free (later->batches);
    *later = (brk_journal_later_t) { NULL, 0, 0, false };
    if (pend_too && self->pend.size > self->pend_indexed) {
        brk_journal_index_records (self, self->pend.data + self->pend_indexed,
                                   self->pend.size - self->pend_indexed,
                                   self->active_number, self->pend_off + self->pend_indexed);
        self->pend_indexed = self->pend.size;
    }
}

static void
s_wait_until (brk_journal_t *self, int64_t due)
{
    if (due == INT64_MAX) {
        pthread_cond_wait (&self->wake, &self->mutex);
        return;
    }
    struct timespec ts = { (time_t) (due / 1000), (long) (due % 1000) * 1000000 };
    pthread_cond_timedwait (&self->wake, &self->mutex, &ts);
}

static void
s_update_stats (brk_journal_t *self)
{
    self->stats.disk_bytes = brk_journal_files_bytes (&self->files);
    self->stats.files = self->files.count;
    self->stats.live_messages = brk_journal_index_count (&self->index);
    self->stats.live_bytes = self->index.bytes;
    self->stats.fsyncs = self->fsyncs;
    self->stats.slow_fsyncs = self->slow_fsyncs;
    self->stats.fsync_max_us = self->fsync_max_us;
    self->stats.compactions = self->compactions;
}

//  Under the mutex, after a batch up to seq was written (and fsynced,
//  unless mode none): advance durable (and synced, if nothing is left
//  unsynced) and wake the loop when durable moved.
static void
s_publish_durable (brk_journal_t *self, uint64_t seq)
{
    if (seq > self->durable) {
        self->durable = seq;
        brk_journal_signal_loop (self);
    }
    if (!self->unsynced && seq > self->synced)
        self->synced = seq;
}

void *
brk_journal_writer (void *arg)
{
    brk_journal_t *self = (brk_journal_t *) arg;
    int64_t last_batch = 0;
    pthread_mutex_lock (&self->mutex);
    while (true) {
        int64_t now = brk_journal_mono_ms ();
        bool have = self->buf.size > 0 || self->pend.size > 0;
        int64_t due = INT64_MAX;
        if (self->stop || self->sync_asked || self->compact_asked
        ||  (!self->error && self->buf.size >= self->config.max_buffer / 2))
            due = now;
        else
        if (have) {
            if (self->error)
                //  Retry at every commit (at most once an interval), else
                //  every retry interval
                due = last_batch + (self->commit_asked? self->config.fsync_interval_ms
                                                      : self->config.retry_interval_ms);
            else
            if (self->config.mode == BRK_JOURNAL_NONE)
                due = last_batch + self->config.fsync_interval_ms;
            else
            if (self->commit_asked)
                //  Group commit: the next fsync starts as soon as the
                //  previous one ended, with everything committed meanwhile,
                //  so the interval is never a rate limit
                due = now;
            else
                //  The loop appends a whole PUBLISH and then commits:
                //  taking the buffer at the first append would fsync a
                //  sliver of it and leave the rest (and its PUBACK) for
                //  the next fsync. So wait for the commit or, for records
                //  nobody commits, until one interval after the first.
                due = self->buf_since + self->config.fsync_interval_ms;
        }
        if (due > now) {
            s_wait_until (self, due);
            continue;
        }
        bool stopping = self->stop;
        bool force = stopping || self->sync_asked;
        bool compact = self->compact_asked;
        self->sync_asked = false;
        self->compact_asked = false;
        self->commit_asked = false;
        size_t start;
        bool took = s_take (self, &start);
        uint64_t seq = self->pend_seq;
        pthread_mutex_unlock (&self->mutex);

        last_batch = now;
        if (took)
            s_position (self, start);
        //  Where this batch goes: it enters the index once it is written,
        //  after its durability is published, so the replies waiting for
        //  it do not wait for the index work too (only this thread reads
        //  the index). A failed batch stays in pend, unindexed, and is
        //  retried in place.
        size_t batch_size = self->pend.size;
        uint32_t batch_file = self->active_number;
        uint64_t batch_offset = self->pend_off;
        int rc = 0, err = 0;
        if (self->pend.size > 0 || !self->active_created || (force && self->unsynced)) {
            rc = brk_journal_flush (self, force);
            err = rc? (errno? errno: EIO): 0;
        }
        if (rc == 0) {
            if (batch_size > self->pend_indexed) {
                //  Only durable, for the replies: synced (what
                //  brk_journal_sync waits for) moves at the end of the
                //  batch, with the stats, so a sync still returns with
                //  stats that count this batch
                pthread_mutex_lock (&self->mutex);
                if (seq > self->durable) {
                    self->durable = seq;
                    brk_journal_signal_loop (self);
                }
                pthread_mutex_unlock (&self->mutex);
                //  flush emptied pend; its bytes stay until the next take
                brk_journal_index_records (self, self->pend.data + self->pend_indexed,
                                           batch_size - self->pend_indexed, batch_file,
                                           batch_offset + self->pend_indexed);
            }
            self->pend_indexed = 0;
        }
        bool compacted = false;
        int compact_err = err;
        if (rc == 0 && !stopping && (compact || brk_journal_compact_due (self, now))) {
            //  This batch is on disk: its PUBACKs and ACKEDs go out now,
            //  not after the compaction, which takes a while (the loop
            //  stops getting work while its replies wait)
            pthread_mutex_lock (&self->mutex);
            s_publish_durable (self, seq);
            pthread_mutex_unlock (&self->mutex);
            compacted = true;
            compact_err = brk_journal_compact_now (self)? (errno? errno: EIO): 0;
            if (compact_err) {
                mdl_warn ("journal: compaction failed: %s", strerror (compact_err));
                self->compact_not_before = brk_journal_mono_ms () + 1000;
            }
        }

        pthread_mutex_lock (&self->mutex);
        bool signal = false;
        if (rc == 0) {
            //  Again after a compaction, which may have made later batches
            //  durable meanwhile
            s_publish_durable (self, seq);
            if (self->error) {
                mdl_info ("journal: writing again after: %s", strerror (self->error));
                self->error = 0;
                signal = true;
            }
        }
        else {
            if (self->error != err) {
                mdl_error ("journal: cannot write to %s: %s; publishing is refused until"
                           " it works again", self->dir, strerror (err));
                signal = true;
            }
            self->error = err;
        }
        //  Only a compaction asked for (taken at this batch's start)
        //  answers brk_journal_compact: one that was already running when
        //  it asked made its snapshot from an older index
        if (compact) {
            self->compact_rc = compacted? compact_err: err;
            self->compact_gen++;
        }
        self->batch_gen++;
        s_update_stats (self);
        pthread_cond_broadcast (&self->done);
        if (signal)
            brk_journal_signal_loop (self);
        if (stopping)
            break;
    }
    size_t lost = self->buf.size + self->pend.size;
    pthread_mutex_unlock (&self->mutex);
    if (lost)
        mdl_error ("journal: %zu bytes of records could not be written before closing", lost);
    return NULL;
}

void
brk_journal_writer_stats (brk_journal_t *self)
{
    s_update_stats (self);
}
