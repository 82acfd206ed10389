/*  brk_journal_compact: snapshots (JOURNAL.md, "Compaction"). Runs on the
    writer thread, between batches. Group commit goes on meanwhile: the
    active segment moves to a number after the snapshot's first, and after
    every 256 records (and each 1 MiB chunk) of the snapshot, and while
    the snapshot's fsync, the directory's and the deletes run on a
    short-lived thread, the batches the loop committed are written and
    fsynced there as the writer's group commit would
    (brk_journal_commit_between); they reach the index when the snapshot
    is done, since its walk must see the index as it began. So a commit
    waits for one chunk of the snapshot, or for that index update, not for
    the whole compaction, its fsyncs and its deletes.

    The live set is written in publish order into journal-S.snap.tmp, each
    PUBLISH and DEAD record copied byte for byte from where the index says
    it is (and checked on the way), ATTEMPT and PROGRESS re-encoded from
    the folded state; then fsync, rename, directory fsync, and only then
    are the files it replaces deleted. Any failure before the rename
    removes the tmp file and changes nothing.

    The acked ids the index keeps (done_window) are written first, oldest
    first, as ACK records, so replay puts them back on the done list.

    Cost: O(live messages + acked ids kept) records, sequential reads with 1 MiB read-ahead
    (random reads when the live set is scattered over many files), 1 MiB
    writes, and two arrays of 8 bytes per live message for the new offsets.
    Offsets are 64-bit, so a live set (and a snapshot) may pass 4 GiB;
    only a record is bounded (16 MiB).

    Refused (ENOMEM, nothing written) for the rest of the run once the
    index could not take a message (index_incomplete): a snapshot of that
    index would drop the message and delete the file holding its PUBLISH.
    The files keep growing until a restart rebuilds the index from them.
*/
#include "brk_journal_internal.h"
#include "mdl_array.h"
#include "mdl_log.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

//  An open journal file, for reading records back.
typedef struct {
    uint32_t number;            //  File number
    int fd;                     //  Its descriptor
} s_open_file_t;

//  Reads records by location, with read-ahead.
typedef struct {
    brk_journal_t *self;        //  For paths and the file list
    s_open_file_t *fds;         //  Open files
    size_t nfds;                //  How many
    size_t fds_cap;             //  Slots allocated in fds
    uint8_t *chunk;             //  Read-ahead buffer
    size_t chunk_cap;           //  Its capacity
    uint32_t chunk_file;        //  File the chunk holds
    uint64_t chunk_off;         //  Offset of chunk [0]
    size_t chunk_len;           //  Valid bytes in chunk
} s_reader_t;

static const uint8_t *
s_reader_get (s_reader_t *r, uint32_t number, uint64_t off, uint32_t len)
{
    if (r->chunk_len && number == r->chunk_file && off >= r->chunk_off
    &&  off + len <= r->chunk_off + r->chunk_len)
        return r->chunk + (off - r->chunk_off);
    int fd = -1;
    for (size_t i = 0; i < r->nfds; i++)
        if (r->fds [i].number == number)
            fd = r->fds [i].fd;
    if (fd < 0) {
        uint32_t kind = KIND_SEGMENT;
        for (size_t i = 0; i < r->self->files.count; i++)
            if (r->self->files.items [i].number == number)
                kind = r->self->files.items [i].kind;
        char path [4096];
        brk_journal_path (r->self, path, sizeof (path), number, kind, "");
        fd = open (path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return NULL;
        if (mdl_array_reserve (&r->fds, &r->fds_cap, r->nfds + 1, sizeof (s_open_file_t)) != 0) {
            close (fd);
            errno = ENOMEM;
            return NULL;
        }
        r->fds [r->nfds++] = (s_open_file_t) { number, fd };
    }
    size_t want = len > CHUNK_SIZE? len: CHUNK_SIZE;
    //  Not mdl_array_reserve: the read-ahead is refilled, never appended
    //  to, so it takes exactly the size of the largest read, not a doubling
    if (r->chunk_cap < want) {
        uint8_t *chunk = realloc (r->chunk, want);
        if (!chunk) {
            errno = ENOMEM;
            return NULL;
        }
        r->chunk = chunk;
        r->chunk_cap = want;
    }
    size_t got = 0;
    while (got < want) {
        ssize_t n = pread (fd, r->chunk + got, want - got, (off_t) (off + got));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return NULL;
        if (n == 0)
            break;
        got += (size_t) n;
    }
    r->chunk_file = number;
    r->chunk_off = off;
    r->chunk_len = got;
    if (got < len) {
        r->chunk_len = 0;
        errno = EIO;
        return NULL;
    }
    return r->chunk;
}

static void
s_reader_close (s_reader_t *r)
{
    for (size_t i = 0; i < r->nfds; i++)
        close (r->fds [i].fd);
    free (r->fds);
    free (r->chunk);
}

//  Append a copy of a stored record to out, checking it on the way. A
//  PUBLISH from a file older than version 3 has no publisher: it is
//  re-encoded with an empty one (the layouts cannot be mistaken for each
//  other: a version 3 body is longer than the older layout allows).
static int
s_copy_record (s_reader_t *reader, brk_journal_bytes_t *out, uint32_t file, uint64_t off,
               uint32_t len, int type)
{
    const uint8_t *src = s_reader_get (reader, file, off, len);
    if (!src)
        return -1;
    brk_journal_record_t record;
    if (type == REC_PUBLISH && brk_journal_check_record (src, len, JOURNAL_VERSION, &record) != len
    &&  brk_journal_check_record (src, len, 2, &record) == len && record.type == REC_PUBLISH) {
        //  The strings are null-terminated in the reader's chunk, which
        //  encoding into out does not touch
        return brk_journal_encode_record (out, REC_PUBLISH, record.number, 0, record.id,
                                          record.text, "");
    }
    if (brk_journal_check_record (src, len, JOURNAL_VERSION, &record) != len
    ||  record.type != type) {
        mdl_error ("journal: compaction found a bad record in file %" PRIu32
                   " at offset %" PRIu64, file, off);
        errno = EIO;
        return -1;
    }
    if (brk_journal_bytes_reserve (out, len)) {
        errno = ENOMEM;
        return -1;
    }
    memcpy (out->data + out->size, src, len);
    out->size += len;
    return 0;
}

//  Write the chunk out at *written and empty it, then let the records
//  committed meanwhile become durable. Returns 0 or -1 with errno.
static int
s_write_chunk (brk_journal_t *self, int fd, brk_journal_bytes_t *out, uint64_t *written,
               brk_journal_later_t *later)
{
    if (brk_journal_write_all (self, fd, out->data, out->size, *written))
        return -1;
    *written += out->size;
    out->size = 0;
    return brk_journal_commit_between (self, later);
}

//  Every this many records written into the snapshot, the batches the
//  loop committed meanwhile are made durable (a check under the mutex
//  when there are none)
#define S_RECORDS_PER_CHECK 256

//  A slow step of the compaction (the snapshot's fsync, the directory's,
//  the deletes), run on a thread of its own so that commits go on during
//  it (the writer waits on its wake condition meanwhile). The step
//  touches only what it is given and the io seam, never the writer's
//  file list or index.
typedef int (s_step_fn) (brk_journal_t *self, void *arg);

typedef struct {
    brk_journal_t *self;
    s_step_fn *step;
    void *arg;
    int rc;                     //  What the step returned
    int error;                  //  Its errno
    bool done;                  //  Under self->mutex
} s_step_job_t;

static void *
s_step_thread (void *arg)
{
    s_step_job_t *job = (s_step_job_t *) arg;
    job->rc = job->step (job->self, job->arg);
    job->error = job->rc ? errno : 0;
    pthread_mutex_lock (&job->self->mutex);
    job->done = true;
    pthread_cond_broadcast (&job->self->wake);
    pthread_mutex_unlock (&job->self->mutex);
    return NULL;
}

//  Run step while committing what the loop commits. Returns what the step
//  returned (0, or -1 with errno), or -1 when a commit's write failed
//  (after the step ended).
static int
s_run_committing (brk_journal_t *self, s_step_fn *step, void *arg, brk_journal_later_t *later)
{
    s_step_job_t job = { self, step, arg, 0, 0, false };
    pthread_t thread;
    if (pthread_create (&thread, NULL, s_step_thread, &job) != 0)
        return step (self, arg);        //  No thread: wait for it here
    int committed = 0;
    bool retried = false;
    pthread_mutex_lock (&self->mutex);
    while (!job.done) {
        pthread_mutex_unlock (&self->mutex);
        size_t before = later->count;
        if (committed == 0)
            committed = brk_journal_commit_between (self, later);
        bool took = later->count > before;
        pthread_mutex_lock (&self->mutex);
        if (job.done)
            break;
        //  A commit made while this thread was not waiting woke nobody
        //  (brk_journal_commit wakes the writer at the first commit of a
        //  batch only): take it now, without waiting. Once more when the
        //  last try took nothing (a commit refused for lack of memory must
        //  not spin). Records nobody commits wait one interval, so wake at
        //  least that often.
        bool pending = committed == 0 && self->commit_asked && self->buf.size > 0;
        if (pending && (took || !retried)) {
            retried = !took;
            continue;
        }
        retried = false;
        int64_t due = brk_journal_mono_ms () + (self->config.fsync_interval_ms > 0
                                               ? self->config.fsync_interval_ms : 1);
        struct timespec ts = { (time_t) (due / 1000), (long) (due % 1000) * 1000000 };
        pthread_cond_timedwait (&self->wake, &self->mutex, &ts);
    }
    pthread_mutex_unlock (&self->mutex);
    pthread_join (thread, NULL);
    if (job.rc) {
        errno = job.error;
        return -1;
    }
    return committed;
}

static int
s_fsync_step (brk_journal_t *self, void *arg)
{
    return self->io.fsync (self->io.arg, *(int *) arg);
}

//  fsync fd (the snapshot, then the directory) while committing.
static int
s_fsync_committing (brk_journal_t *self, int fd, brk_journal_later_t *later)
{
    self->fsyncs++;
    return s_run_committing (self, s_fsync_step, &fd, later);
}

//  The files a snapshot replaced, by path.
typedef struct {
    char **paths;
    size_t count;
} s_doomed_t;

//  Delete them. A file that cannot be removed is logged; the next start
//  removes it (it is numbered below the snapshot). Always returns 0.
static int
s_unlink_step (brk_journal_t *self, void *arg)
{
    s_doomed_t *doomed = (s_doomed_t *) arg;
    for (size_t i = 0; i < doomed->count; i++)
        if (self->io.unlink (self->io.arg, doomed->paths [i]) && errno != ENOENT)
            mdl_warn ("journal: cannot remove %s: %s (the next start removes it)",
                      doomed->paths [i], strerror (errno));
    return 0;
}

int
brk_journal_compact_now (brk_journal_t *self)
{
    if (self->index_incomplete) {
        errno = ENOMEM;
        return -1;
    }
    int64_t started = brk_journal_mono_ms ();
    uint64_t before = brk_journal_files_bytes (&self->files);
    uint32_t covered = self->active_created? self->active_number: self->active_prev;
    uint32_t snap = ++self->last_number;
    //  Records committed from now on go to a segment numbered after the
    //  snapshot, which outlives it: they are made durable while it is
    //  written (brk_journal_commit_between), not after
    if (self->active_fd >= 0)
        close (self->active_fd);
    self->active_fd = -1;
    self->active_number = ++self->last_number;
    self->active_prev = covered;
    self->active_created = false;
    self->active_dirsynced = false;
    self->active_size = HEADER_SIZE;
    self->active_synced = 0;
    brk_journal_later_t later = { NULL, 0, 0, false };
    char tmp [4096], path [4096];
    brk_journal_path (self, tmp, sizeof (tmp), snap, KIND_SNAPSHOT, ".tmp");
    brk_journal_path (self, path, sizeof (path), snap, KIND_SNAPSHOT, "");

    size_t count = brk_journal_index_count (&self->index);
    uint64_t *pub_off = malloc ((count + 1) * sizeof (uint64_t));
    uint64_t *dead_off = malloc ((count + 1) * sizeof (uint64_t));
    uint32_t *pub_len = malloc ((count + 1) * sizeof (uint32_t));
    brk_journal_bytes_t out = { NULL, 0, 0 };
    s_reader_t reader = { .self = self };
    int fd = -1;
    int rc = -1;
    if (!pub_off || !dead_off || !pub_len || brk_journal_bytes_reserve (&out, CHUNK_SIZE + HEADER_SIZE)) {
        errno = ENOMEM;
        goto done;
    }
    fd = self->io.open (self->io.arg, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto done;
    brk_journal_header_encode (out.data, KIND_SNAPSHOT, snap, covered);
    out.size = HEADER_SIZE;
    if (brk_journal_encode_record (&out, REC_EPOCH, self->epoch, 0, NULL, NULL, NULL))
        goto done;
    uint64_t written = 0;       //  File offset of out.data [0]
    size_t records = 0;         //  Written into the snapshot, for S_RECORDS_PER_CHECK
    //  The acked ids kept, oldest first, as ACK records: replay puts
    //  them back on the done list before any live message
    for (brk_journal_live_t *e = self->index.done_head; e; e = e->next) {
        if (brk_journal_encode_record (&out, REC_ACK, 0, 0, e->id, NULL, NULL))
            goto done;
        if (out.size >= CHUNK_SIZE && s_write_chunk (self, fd, &out, &written, &later))
            goto done;
        if (++records % S_RECORDS_PER_CHECK == 0 && brk_journal_commit_between (self, &later))
            goto done;
    }
    size_t i = 0;
    for (brk_journal_live_t *e = self->index.head; e; e = e->next, i++) {
        pub_off [i] = written + out.size;
        if (s_copy_record (&reader, &out, e->pub_file, e->pub_off, e->pub_len, REC_PUBLISH))
            goto done;
        //  Longer than the original when an older PUBLISH was re-encoded
        pub_len [i] = (uint32_t) (written + out.size - pub_off [i]);
        if (e->attempts
        &&  brk_journal_encode_record (&out, REC_ATTEMPT, e->delivery_id, e->attempts,
                                       e->id, NULL, NULL))
            goto done;
        if (e->steps
        &&  brk_journal_encode_record (&out, REC_PROGRESS, 0, e->steps, e->id, NULL, NULL))
            goto done;
        dead_off [i] = written + out.size;
        if (e->dead_len
        &&  s_copy_record (&reader, &out, e->dead_file, e->dead_off, e->dead_len, REC_DEAD))
            goto done;
        if (out.size >= CHUNK_SIZE && s_write_chunk (self, fd, &out, &written, &later))
            goto done;
        if (++records % S_RECORDS_PER_CHECK == 0 && brk_journal_commit_between (self, &later))
            goto done;
    }
    if (s_write_chunk (self, fd, &out, &written, &later) || s_fsync_committing (self, fd, &later))
        goto done;
    close (fd);
    fd = -1;
    if (self->io.rename (self->io.arg, tmp, path))
        goto done;

    //  From here the snapshot may be what the next start reads; the
    //  records that follow it are in the segment(s) after it already.
    //  The list stays in file order: the active segment is its last.
    if (brk_journal_files_add (&self->files, snap, KIND_SNAPSHOT, written))
        mdl_warn ("journal: out of memory listing %s (the next start finds it)", path);
    else
        for (size_t f = self->files.count - 1; f > 0 && self->files.items [f - 1].number > snap; f--) {
            brk_journal_file_t swap = self->files.items [f - 1];
            self->files.items [f - 1] = self->files.items [f];
            self->files.items [f] = swap;
        }
    //  Commits go on during this fsync too. A commit that fails here
    //  fails the compaction as well: the old files are kept, and they
    //  and the snapshot describe the same state.
    if (s_fsync_committing (self, self->dir_fd, &later)) {
        //  Keep the old files: the rename may not be durable
        rc = -1;
        goto done_renamed;
    }
    i = 0;
    for (brk_journal_live_t *e = self->index.head; e; e = e->next, i++) {
        e->pub_file = snap;
        e->pub_off = pub_off [i];
        self->index.bytes += pub_len [i] - (uint64_t) e->pub_len;
        e->pub_len = pub_len [i];
        if (e->dead_len) {
            e->dead_file = snap;
            e->dead_off = dead_off [i];
        }
    }
    //  The files the snapshot replaced leave the list now, and are deleted
    //  while commits go on: on a disk that discards freed blocks, deleting
    //  a 16 MiB segment can take milliseconds
    s_doomed_t doomed = { calloc (self->files.count, sizeof (char *)), 0 };
    size_t kept = 0;
    for (size_t f = 0; f < self->files.count; f++) {
        brk_journal_file_t *file = &self->files.items [f];
        if (file->number < snap) {
            char old [4096];
            brk_journal_path (self, old, sizeof (old), file->number, file->kind, "");
            char *copy = doomed.paths? strdup (old): NULL;
            if (copy)
                doomed.paths [doomed.count++] = copy;
            else
            if (self->io.unlink (self->io.arg, old) && errno != ENOENT)
                mdl_warn ("journal: cannot remove %s: %s (the next start removes it)",
                          old, strerror (errno));
        }
        else
            self->files.items [kept++] = *file;
    }
    self->files.count = kept;
    if (doomed.count
    &&  s_run_committing (self, s_unlink_step, &doomed, &later))
        mdl_warn ("journal: a commit failed while deleting the old files: %s"
                  " (the next batch retries it)", strerror (errno));
    for (size_t i = 0; i < doomed.count; i++)
        free (doomed.paths [i]);
    free (doomed.paths);
    self->compactions++;
    mdl_info ("journal: compacted %" PRIu64 " bytes into %" PRIu64 " (%zu live messages)"
              " in %" PRId64 " ms; %zu batches committed meanwhile", before, written, count,
              brk_journal_mono_ms () - started, later.count);
    rc = 0;
    goto done_renamed;

done:
    if (fd >= 0) {
        int saved = errno;
        close (fd);
        self->io.unlink (self->io.arg, tmp);
        errno = saved;
    }
done_renamed:
    {
        int saved = errno;
        brk_journal_later_apply (self, &later);
        s_reader_close (&reader);
        brk_journal_bytes_free (&out);
        free (pub_off);
        free (dead_off);
        free (pub_len);
        errno = saved;
    }
    return rc;
}

bool
brk_journal_compact_due (brk_journal_t *self, int64_t now)
{
    if (self->config.compact_slack_bytes == 0 || now < self->compact_not_before
    ||  self->index_incomplete)
        return false;
    uint64_t disk = brk_journal_files_bytes (&self->files);
    uint64_t live = self->index.bytes + 2 * HEADER_SIZE;
    //  Each compaction writes the live bytes again, the acked ids kept
    //  included (50 bytes an id: 5 MB at the broker's default window).
    //  With a steady live set, the slack puts that much new data between
    //  two compactions besides live's worth, so what they write stays a
    //  fraction of what the journal does
    return disk > 2 * live + self->config.compact_slack_bytes
        || self->files.count > MAX_FILES_BEFORE_COMPACT;
}
