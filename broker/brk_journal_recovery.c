/*  brk_journal_recovery: reading the data directory at start (JOURNAL.md,
    "Recovery at start"). Runs on the thread that calls brk_journal_new,
    before the writer exists, and leaves the writer its state: the live
    index, the list of files, the epoch, the highest file number and the
    chain position.

    Files are mapped read-only (mmap; not seamed: reading changes nothing
    on disk) and read in number order from the newest snapshot on. What may
    change the disk goes through the io seam: removing a leftover
    temporary snapshot, truncating a torn tail, removing files a snapshot
    covers (only after that snapshot was read and found whole).

    Cost: O(bytes read) plus O(live messages) for the hand-over; every file
    read stays mapped until the hand-over is done, so the address space
    (not the memory) needed is the size of the journal. Failure: -1 with
    report->code (EILSEQ corrupt, ENOMEM, an errno of the file system) and
    a message naming the file and offset.
*/
#include "brk_journal_internal.h"
#include "mdl_array.h"
#include "mdl_crc32c.h"
#include "mdl_log.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

//  A file found in the directory.
typedef struct {
    uint32_t number;            //  File number
    uint32_t kind;              //  KIND_*, 0 once skipped or removed
    uint32_t prev;              //  Header's prev
    uint32_t version;           //  Header's format version
    bool damaged;               //  A snapshot found damaged and passed over
    uint8_t *map;               //  mmap of the file, NULL if empty
    size_t map_size;            //  Bytes mapped
    size_t size;                //  Valid bytes (after truncation)
} s_found_t;

typedef struct {
    s_found_t *files;           //  Files found, by number
    size_t count;               //  How many
} s_found_list_t;

int
brk_journal_fail (brk_journal_report_t *report, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (report->message, sizeof (report->message), format, args);
    va_end (args);
    report->code = code;
    return -1;
}

static int
s_cmp_found (const void *a, const void *b)
{
    uint32_t x = ((const s_found_t *) a)->number, y = ((const s_found_t *) b)->number;
    return x < y? -1: x > y;
}

//  List the directory: journal files into found (not yet mapped); remove
//  leftover temporary snapshots.
static int
s_list_dir (brk_journal_t *self, s_found_list_t *found, brk_journal_report_t *report)
{
    DIR *dir = opendir (self->dir);
    if (!dir)
        return brk_journal_fail (report, errno, "cannot list %s: %s", self->dir, strerror (errno));
    size_t capacity = 0;
    struct dirent *de;
    int rc = 0;
    while ((de = readdir (dir))) {
        unsigned number;
        char ext [16];
        int used = 0;
        if (sscanf (de->d_name, "journal-%10u.%15[a-z.]%n", &number, ext, &used) != 2
        ||  de->d_name [used] != 0 || strlen (de->d_name) < 19)
            continue;
        uint32_t kind;
        if (strcmp (ext, "seg") == 0)
            kind = KIND_SEGMENT;
        else
        if (strcmp (ext, "snap") == 0)
            kind = KIND_SNAPSHOT;
        else {
            if (strcmp (ext, "snap.tmp") == 0) {
                //  A compaction that did not finish: its files are all still here
                char path [4096];
                snprintf (path, sizeof (path), "%s/%s", self->dir, de->d_name);
                if (self->io.unlink (self->io.arg, path))
                    mdl_warn ("journal: cannot remove %s: %s", path, strerror (errno));
            }
            continue;
        }
        if (mdl_array_reserve (&found->files, &capacity, found->count + 1, sizeof (s_found_t)) != 0) {
            rc = brk_journal_fail (report, ENOMEM, "out of memory");
            break;
        }
        found->files [found->count++] = (s_found_t) { .number = number, .kind = kind };
    }
    closedir (dir);
    if (found->count)
        qsort (found->files, found->count, sizeof (s_found_t), s_cmp_found);
    for (size_t i = 1; i < found->count && rc == 0; i++)
        if (found->files [i].number == found->files [i - 1].number)
            rc = brk_journal_fail (report, EILSEQ, "journal file %" PRIu32 " exists both as segment"
                           " and snapshot in %s", found->files [i].number, self->dir);
    return rc;
}

//  Find the next offset >= from where a whole valid record starts, or 0.
static size_t
s_resync (const uint8_t *data, size_t size, size_t from, uint32_t version)
{
    brk_journal_record_t record;
    for (size_t p = from; p + RECORD_HEAD < size; p++)
        if (brk_journal_check_record (data + p, size - p, version, &record))
            return p;
    return 0;
}

//  Version 2: the largest offset that a SYNCED record at or after from
//  says is fsynced. from is where a valid record starts.
static uint64_t
s_synced_after (const uint8_t *data, size_t size, size_t from, uint32_t version)
{
    uint64_t synced = 0;
    size_t p = from;
    while (p && p < size) {
        brk_journal_record_t record;
        size_t len = brk_journal_check_record (data + p, size - p, version, &record);
        if (len) {
            if (record.type == REC_SYNCED && record.number > synced)
                synced = record.number;
            p += len;
        }
        else
            p = s_resync (data, size, p + 1, version);
    }
    return synced;
}

static int
s_truncate_file (brk_journal_t *self, const char *path, uint64_t size)
{
    int fd = self->io.open (self->io.arg, path, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = self->io.ftruncate (self->io.arg, fd, (off_t) size);
    if (rc == 0)
        rc = brk_journal_fsync (self, fd);
    int saved = errno;
    close (fd);
    errno = saved;
    return rc;
}

//  Map one file. Returns 0 or -1.
static int
s_map_file (brk_journal_t *self, s_found_t *file, const char *path,
            brk_journal_report_t *report)
{
    (void) self;
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return brk_journal_fail (report, errno, "cannot open %s: %s", path, strerror (errno));
    struct stat st;
    if (fstat (fd, &st)) {
        close (fd);
        return brk_journal_fail (report, errno, "cannot stat %s: %s", path, strerror (errno));
    }
    size_t size = (size_t) st.st_size;
    if (size > 0) {
        file->map = mmap (NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (file->map == MAP_FAILED) {
            file->map = NULL;
            close (fd);
            return brk_journal_fail (report, errno, "cannot map %s: %s", path, strerror (errno));
        }
        file->map_size = size;
        madvise (file->map, size, MADV_SEQUENTIAL);
    }
    close (fd);
    report->files++;
    report->bytes += size;
    return 0;
}

//  Map and read one file, applying its records to the index. Returns 0,
//  1 when the file was skipped or removed, or -1.
static int
s_read_file (brk_journal_t *self, s_found_t *file, bool last, bool salvage,
             brk_journal_report_t *report)
{
    char path [4096];
    brk_journal_path (self, path, sizeof (path), file->number, file->kind, "");
    if (!file->map && s_map_file (self, file, path, report))
        return -1;
    size_t size = file->map_size;
    const uint8_t *data = file->map;

    //  Header: a torn header can only be the file being created at the crash
    bool header_ok = size >= HEADER_SIZE && memcmp (data, JOURNAL_MAGIC, 8) == 0
                  && brk_journal_get32 (data + 36) == mdl_crc32c (0, data, 36);
    uint32_t version = header_ok? brk_journal_get32 (data + 8): 0;
    if (header_ok && (version < JOURNAL_VERSION_MIN || version > JOURNAL_VERSION))
        return brk_journal_fail (report, EILSEQ, "%s has format version %" PRIu32
                         ", this broker reads versions %d to %d", path, version,
                         JOURNAL_VERSION_MIN, JOURNAL_VERSION);
    if (header_ok && (brk_journal_get32 (data + 12) != file->kind
                  ||  brk_journal_get32 (data + 16) != file->number))
        header_ok = false;
    if (!header_ok) {
        if (last && file->kind == KIND_SEGMENT && size <= HEADER_SIZE) {
            mdl_warn ("journal: %s has a torn header (%zu bytes): removing it", path, size);
            report->torn_bytes += size;
            file->size = 0;
            if (self->io.unlink (self->io.arg, path))
                return brk_journal_fail (report, errno, "cannot remove %s: %s", path, strerror (errno));
            return 1;
        }
        if (!salvage)
            return brk_journal_fail (report, EILSEQ, "%s has a bad header; start with salvage"
                             " to skip it", path);
        mdl_warn ("journal: salvage: skipping %s (bad header)", path);
        report->salvaged_bytes += size;
        report->salvaged_regions++;
        return 1;
    }
    file->prev = brk_journal_get32 (data + 20);
    file->version = version;

    size_t off = HEADER_SIZE;
    while (off < size) {
        brk_journal_record_t record;
        size_t len = brk_journal_check_record (data + off, size - off, version, &record);
        if (len) {
            if (brk_journal_index_apply (&self->index, &record, file->number, off,
                                         (uint32_t) len, &self->epoch))
                return brk_journal_fail (report, ENOMEM, "out of memory replaying the journal");
            report->records++;
            off += len;
            continue;
        }
        size_t next = s_resync (data, size, off + 1, version);
        //  Torn tail: bytes of the last segment that no fsync covered.
        //  Version 1 can only tell when nothing valid follows; version 2
        //  knows how far the file was fsynced (SYNCED records), so a torn
        //  batch whose later sectors landed is a tail too.
        bool tail = last && file->kind == KIND_SEGMENT
                 && (!next || (version >= 2 && s_synced_after (data, size, next, version) <= off));
        if (tail) {
            mdl_warn ("journal: %s: torn tail at offset %zu, truncating %zu bytes",
                      path, off, size - off);
            report->torn_bytes += size - off;
            if (s_truncate_file (self, path, off))
                return brk_journal_fail (report, errno, "cannot truncate %s: %s", path,
                                 strerror (errno));
            size = off;
            break;
        }
        if (!salvage)
            return brk_journal_fail (report, EILSEQ, "%s: corrupt record at offset %zu in"
                             " data that was fsynced (%zu bytes to the end); start with"
                             " salvage to skip what cannot be read", path, off, size - off);
        size_t skip = (next? next: size) - off;
        mdl_warn ("journal: salvage: %s: skipping %zu unreadable bytes at offset %zu",
                  path, skip, off);
        report->salvaged_bytes += skip;
        report->salvaged_regions++;
        off += skip;
    }
    file->size = size;
    return 0;
}

static const s_found_t *
s_find (s_found_list_t *found, uint32_t number)
{
    size_t lo = 0, hi = found->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (found->files [mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < found->count && found->files [lo].number == number? &found->files [lo]: NULL;
}

//  Decode the record the index points at, or fail.
static int
s_fetch (s_found_list_t *found, uint32_t number, uint64_t off, uint32_t len,
         brk_journal_record_t *record)
{
    const s_found_t *file = s_find (found, number);
    if (!file || !file->map || off + len > file->map_size || len < RECORD_HEAD)
        return -1;
    return brk_journal_decode (file->map + off + RECORD_HEAD, len - RECORD_HEAD,
                               file->version, record);
}

static int
s_replay_live (brk_journal_t *self, s_found_list_t *found, brk_journal_replay_fn *replay,
               void *arg, brk_journal_report_t *report)
{
    //  Acked ids first, oldest first: the broker's done list keeps that order
    for (brk_journal_live_t *e = self->index.done_head; e; e = e->next) {
        report->done++;
        brk_journal_message_t message = { .message_id = e->id, .done = true };
        if (replay && replay (&message, arg))
            return brk_journal_fail (report, ECANCELED, "the replay callback refused acked id %s",
                             e->id);
    }
    for (brk_journal_live_t *e = self->index.head; e; e = e->next) {
        report->live++;
        if (e->dead_len)
            report->dead++;
        if (!replay)
            continue;
        brk_journal_record_t pub, dead;
        if (s_fetch (found, e->pub_file, e->pub_off, e->pub_len, &pub))
            return brk_journal_fail (report, EIO, "journal index points at a missing record");
        brk_journal_message_t message = {
            .message_id = e->id,
            .request = pub.text,
            .request_size = pub.text_len,
            .published_ms = pub.number,
            .publisher = pub.text2 && pub.text2_len? pub.text2: NULL,
            .attempts = e->attempts,
            .delivery_id = e->delivery_id,
            .steps = e->steps,
        };
        if (e->dead_len) {
            if (s_fetch (found, e->dead_file, e->dead_off, e->dead_len, &dead))
                return brk_journal_fail (report, EIO, "journal index points at a missing record");
            message.dead = true;
            message.dead_reason = dead.text;
            message.dead_history = dead.text2;
            message.dead_ms = dead.number;
        }
        if (replay (&message, arg))
            return brk_journal_fail (report, ECANCELED, "the replay callback refused message %s",
                             e->id);
    }
    return 0;
}

//  Index of the newest snapshot below end that is not damaged, else 0.
static size_t
s_newest_snapshot (s_found_list_t *found, size_t end)
{
    size_t start = 0;
    for (size_t i = 0; i < end; i++)
        if (found->files [i].kind == KIND_SNAPSHOT && !found->files [i].damaged)
            start = i;
    return start;
}

//  Can recovery start at this file and miss nothing? A snapshot holds the
//  whole state; a segment only when it is the first ever (prev 0): older
//  files left by a compaction that died during its deletes may lack some.
static bool
s_starts_chain (brk_journal_t *self, s_found_t *file, brk_journal_report_t *report)
{
    if (file->kind == KIND_SNAPSHOT)
        return true;
    char path [4096];
    brk_journal_path (self, path, sizeof (path), file->number, file->kind, "");
    if (!file->map && s_map_file (self, file, path, report))
        return false;
    return file->map_size >= HEADER_SIZE && memcmp (file->map, JOURNAL_MAGIC, 8) == 0
        && brk_journal_get32 (file->map + 36) == mdl_crc32c (0, file->map, 36)
        && brk_journal_get32 (file->map + 20) == 0;
}

//  Read the files from start on, in order, checking the chain. With
//  strict, a snapshot read as the first of several files is read without
//  salvage, so that damage in it can send recovery to the older files.
static int
s_read_chain (brk_journal_t *self, s_found_list_t *found, size_t start, bool strict_first,
              uint32_t *covered, brk_journal_report_t *report)
{
    bool have_covered = false;
    for (size_t i = start; i < found->count; i++) {
        s_found_t *file = &found->files [i];
        if (file->damaged || !file->kind)
            continue;
        bool strict = strict_first && i == start && start > 0 && file->kind == KIND_SNAPSHOT;
        int got = s_read_file (self, file, i + 1 == found->count,
                               self->config.salvage && !strict, report);
        if (got < 0)
            return -1;
        if (got == 1) {
            file->size = 0;
            file->kind = 0;     //  Skipped or removed: not a journal file any more
            continue;
        }
        //  The chain: each segment names the file it follows
        uint32_t expect = file->kind == KIND_SNAPSHOT? file->prev: file->number;
        if (have_covered && file->kind == KIND_SEGMENT && file->prev != *covered) {
            if (!self->config.salvage)
                return brk_journal_fail (report, EILSEQ, "journal file %" PRIu32 " follows"
                                         " file %" PRIu32 " but the last file read is %"
                                         PRIu32 ": a file is missing; start with salvage"
                                         " to go on without it",
                                         file->number, file->prev, *covered);
            mdl_warn ("journal: salvage: file %" PRIu32 " follows missing file %" PRIu32,
                      file->number, file->prev);
            report->salvaged_regions++;
        }
        *covered = expect;
        have_covered = true;
    }
    return 0;
}

int
brk_journal_recover (brk_journal_t *self, brk_journal_replay_fn *replay, void *arg,
                     brk_journal_report_t *report)
{
    s_found_list_t found = { NULL, 0 };
    int rc = s_list_dir (self, &found, report);

    //  Start at the newest snapshot: it covers every file below it, so any
    //  such file is left from a compaction interrupted before its deletes.
    //  They are removed only once the snapshot was read whole: when it is
    //  damaged, they are what salvage recovers from.
    size_t start = s_newest_snapshot (&found, found.count);
    uint32_t covered = 0;       //  Number of the last file whose records are in
    bool strict_first = true;   //  May still fall back to older files
    while (rc == 0) {
        covered = 0;
        rc = s_read_chain (self, &found, start, strict_first, &covered, report);
        if (rc == 0 || start == 0 || report->code != EILSEQ || found.files [start].map == NULL
        ||  found.files [start].kind != KIND_SNAPSHOT || found.files [start].size)
            break;
        //  The snapshot itself is damaged, and older files are here
        if (!self->config.salvage) {
            char message [sizeof (report->message)];
            snprintf (message, sizeof (message), "%s", report->message);
            rc = brk_journal_fail (report, EILSEQ, "%s; the %zu older files it replaces are"
                                   " kept: start with salvage to recover from them",
                                   message, start);
            break;
        }
        size_t older = s_newest_snapshot (&found, start);
        brk_journal_report_t peek = *report;
        bool whole = s_starts_chain (self, &found.files [older], &peek);
        if (whole) {
            mdl_warn ("journal: salvage: %s; recovering from the %zu older files",
                      report->message, start);
            found.files [start].damaged = true;
            report->salvaged_bytes += found.files [start].map_size;
            report->salvaged_regions++;
        }
        else
            //  Some of them are gone: the snapshot, read with salvage,
            //  holds more than they do
            mdl_warn ("journal: salvage: %s; the older files are incomplete, reading"
                      " what the snapshot still holds", report->message);
        report->code = 0;
        report->message [0] = 0;
        brk_journal_index_destroy (&self->index);
        if (brk_journal_index_init (&self->index, self->io.alloc, self->io.arg)) {
            rc = brk_journal_fail (report, ENOMEM, "out of memory");
            break;
        }
        self->index.done_window = self->config.done_window;
        if (whole)
            start = older;
        strict_first = false;
        rc = 0;
    }
    for (size_t i = 0; rc == 0 && i < start; i++) {
        char path [4096];
        brk_journal_path (self, path, sizeof (path), found.files [i].number,
                          found.files [i].kind, "");
        mdl_info ("journal: removing %s, covered by a snapshot", path);
        if (self->io.unlink (self->io.arg, path))
            mdl_warn ("journal: cannot remove %s: %s (the next start removes it)", path,
                      strerror (errno));
    }
    if (rc == 0)
        rc = s_replay_live (self, &found, replay, arg, report);

    //  Hand the file list to the writer
    for (size_t i = 0; i < found.count; i++) {
        s_found_t *file = &found.files [i];
        if (rc == 0 && i >= start && file->kind
        &&  brk_journal_files_add (&self->files, file->number, file->kind, file->size))
            rc = brk_journal_fail (report, ENOMEM, "out of memory");
        if (file->number > self->last_number)
            self->last_number = file->number;
    }
    self->active_prev = covered;
    for (size_t i = 0; i < found.count; i++)
        if (found.files [i].map)
            munmap (found.files [i].map, found.files [i].map_size);
    free (found.files);
    return rc;
}
