/*  brk_journal_internal: what the journal's own files share, and nobody
    else. The public contract is brk_journal.h; the on-disk format is
    JOURNAL.md. The module is split by concern:

    - brk_journal.c           the public API: open, appends, commit, sync,
                              status, stats, close;
    - brk_journal_format.c    bytes: the record and header layouts, encode,
                              decode and check (CRC-32C from mdl_crc32c);
    - brk_journal_index.c     the live set: message id -> where its records
                              are, on mdl_strmap_t, in publish order;
    - brk_journal_io.c        the io seam (brk_journal_io_system), paths,
                              whole writes, fsync counting, the file list;
    - brk_journal_recovery.c  reading the files at start: chain, torn
                              tails, salvage, handing the live set over;
    - brk_journal_writer.c    the writer thread: batches, group commit,
                              fsync, segment rotation, synced markers;
    - brk_journal_compact.c   snapshots.

    Threads: see brk_journal.c. Everything declared here is called either
    on the writer thread or, before the writer starts, on the thread that
    runs brk_journal_new; none of it takes the mutex unless it says so.
*/
#ifndef BRK_JOURNAL_INTERNAL_H_INCLUDED
#define BRK_JOURNAL_INTERNAL_H_INCLUDED

#include "brk_journal.h"
#include "mdl_map.h"

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JOURNAL_MAGIC       "MANDRILJ"
#define JOURNAL_VERSION     3               //  What this broker writes
#define JOURNAL_VERSION_MIN 1               //  Oldest it reads
#define HEADER_SIZE         40
#define KIND_SEGMENT        1
#define KIND_SNAPSHOT       2
#define RECORD_HEAD         8               //  u32 length + u32 crc
#define RECORD_MAX          (16u << 20)     //  Sanity bound on a record body
#define CHUNK_SIZE          (1u << 20)      //  Compaction read and write chunks
#define MAX_FILES_BEFORE_COMPACT 64
#define SLOW_FSYNC_REPORT_MS 10000
#define SYNCED_RECORD_SIZE  (RECORD_HEAD + 9)
#define PUBLISHER_MAX       256             //  Bytes of a PUBLISH record's publisher (version 3)

enum {
    REC_PUBLISH = 1,
    REC_ACK = 2,
    REC_ATTEMPT = 3,
    REC_DEAD = 4,
    REC_REPLAY = 5,
    REC_PROGRESS = 6,
    REC_EPOCH = 7,
    REC_SYNCED = 8              //  Version 2: "this file is fsynced up to N"
};

//  --------------------------------------------------------------------
//  Little-endian helpers (the format is little-endian on every host).

static inline uint32_t
brk_journal_get32 (const uint8_t *p)
{
    return (uint32_t) p [0] | (uint32_t) p [1] << 8
         | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
}

static inline uint64_t
brk_journal_get64 (const uint8_t *p)
{
    return (uint64_t) brk_journal_get32 (p) | (uint64_t) brk_journal_get32 (p + 4) << 32;
}

static inline void
brk_journal_put32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) v;
    p [1] = (uint8_t) (v >> 8);
    p [2] = (uint8_t) (v >> 16);
    p [3] = (uint8_t) (v >> 24);
}

static inline void
brk_journal_put64 (uint8_t *p, uint64_t v)
{
    brk_journal_put32 (p, (uint32_t) v);
    brk_journal_put32 (p + 4, (uint32_t) (v >> 32));
}

//  --------------------------------------------------------------------
//  brk_journal_format.c

//  A growable byte buffer: the append buffer, a batch, a snapshot chunk.
typedef struct {
    uint8_t *data;              //  Bytes, NULL until first use
    size_t size;                //  Bytes in use
    size_t capacity;            //  Bytes allocated
} brk_journal_bytes_t;

//  Make room for more bytes. Returns 0 or -1 (out of memory, unchanged).
int brk_journal_bytes_reserve (brk_journal_bytes_t *bytes, size_t more);
void brk_journal_bytes_free (brk_journal_bytes_t *bytes);

//  One decoded record. Strings point into the record's bytes, where each
//  is followed by its zero byte.
typedef struct {
    int type;                   //  REC_*
    const char *id;             //  Message id (no zero byte inside)
    uint32_t id_len;            //  Its length
    const char *text;           //  PUBLISH request, DEAD reason
    uint32_t text_len;          //  Its length
    const char *text2;          //  DEAD history; PUBLISH publisher (version 3, else NULL)
    uint32_t text2_len;         //  Its length
    uint64_t number;            //  published_ms, dead_ms, epoch, delivery_id, synced offset
    uint32_t value;             //  attempt, steps
} brk_journal_record_t;

//  Decode a body whose checksum was verified; every byte is still checked.
//  version is the file's format version (SYNCED exists from 2 on).
//  Returns 0 or -1 (not a valid body).
int brk_journal_decode (const uint8_t *body, size_t size, uint32_t version,
                        brk_journal_record_t *record);

//  Validate the record at data [0..avail): returns its total size, or 0
//  if it is not a whole valid record.
size_t brk_journal_check_record (const uint8_t *data, size_t avail, uint32_t version,
                                 brk_journal_record_t *record);

//  Append one sealed record to bytes. Strings are null-terminated or NULL
//  (absent); a PUBLISH of the current version needs text2 (the publisher,
//  "" for none, at most PUBLISHER_MAX bytes). Returns 0, or -1 with errno
//  EMSGSIZE or ENOMEM (unchanged).
int brk_journal_encode_record (brk_journal_bytes_t *bytes, int type, uint64_t number,
                               uint32_t value, const char *id, const char *text,
                               const char *text2);

//  Write a file header (HEADER_SIZE bytes) of the current version.
void brk_journal_header_encode (uint8_t *out, uint32_t kind, uint32_t number,
                                uint32_t prev);

//  --------------------------------------------------------------------
//  brk_journal_index.c: the live set

//  A live message: where its records are, and its folded state. Or,
//  with done set, an acked id kept for duplicate detection (only id and
//  the links count; it is on the done list, not in publish order).
typedef struct _brk_journal_live_t brk_journal_live_t;
struct _brk_journal_live_t {
    brk_journal_live_t *prev;   //  Previous in publish order (done: in ack order)
    brk_journal_live_t *next;   //  Next in publish order (done: in ack order)
    uint64_t pub_off;           //  Offset of its PUBLISH record
    uint64_t dead_off;          //  Offset of its DEAD record
    uint32_t pub_file;          //  File holding the PUBLISH record
    uint32_t pub_len;           //  Its total size
    uint32_t dead_file;         //  File holding the DEAD record
    uint32_t dead_len;          //  Its total size, 0 when not dead
    uint32_t attempts;          //  Latest attempt
    uint32_t steps;             //  OR of progress masks
    uint64_t delivery_id;       //  Delivery id of the latest attempt
    uint32_t id_len;            //  Length of id
    bool done;                  //  Acked: on the done list, not live
    char id [];                 //  Message id, null-terminated; the map's key
};

//  Allocator of live entries: the io seam's alloc, or malloc.
typedef void *(brk_journal_alloc_fn) (void *arg, size_t size);

typedef struct {
    mdl_strmap_t *map;          //  id -> brk_journal_live_t (key inside the value), live and done
    brk_journal_live_t *head;   //  Oldest published
    brk_journal_live_t *tail;   //  Newest published
    brk_journal_live_t *done_head;  //  Oldest acked id kept
    brk_journal_live_t *done_tail;  //  Newest acked id kept
    size_t done_count;          //  Entries on the done list
    size_t done_window;         //  Most acked ids kept (config.done_window)
    uint64_t bytes;             //  Record bytes a snapshot of it holds
    brk_journal_alloc_fn *alloc;    //  Entry allocator
    void *alloc_arg;            //  Its argument
} brk_journal_index_t;

//  Returns 0 or -1 (out of memory).
int brk_journal_index_init (brk_journal_index_t *index, brk_journal_alloc_fn *alloc,
                            void *alloc_arg);
void brk_journal_index_destroy (brk_journal_index_t *index);
//  Live messages (the done ids are not counted).
size_t brk_journal_index_count (const brk_journal_index_t *index);

//  Bytes of the ACK record a snapshot writes for a done id.
#define DONE_RECORD_SIZE(id_len) (RECORD_HEAD + 6 + (uint64_t) (id_len))

//  Apply one record found at (file, off, len). EPOCH raises *epoch. ACK
//  ends a live message and keeps its id on the done list (the oldest
//  beyond done_window are forgotten); an ACK for an unknown id (a
//  snapshot's done list) only adds the id. Returns 0, or -1 when out of
//  memory for a PUBLISH: it is then NOT in the index (the caller must not
//  compact from this index). A done id that finds no memory is only
//  forgotten early (duplicate detection, not data).
int brk_journal_index_apply (brk_journal_index_t *index, const brk_journal_record_t *record,
                             uint32_t file, uint64_t off, uint32_t len, uint64_t *epoch);

//  --------------------------------------------------------------------
//  brk_journal_io.c

//  A journal file the writer knows.
typedef struct {
    uint32_t number;            //  File number
    uint32_t kind;              //  KIND_SEGMENT or KIND_SNAPSHOT
    uint64_t size;              //  Bytes
} brk_journal_file_t;

typedef struct {
    brk_journal_file_t *items;  //  Sorted by number
    size_t count;               //  In use
    size_t capacity;            //  Allocated
} brk_journal_files_t;

int brk_journal_files_add (brk_journal_files_t *files, uint32_t number, uint32_t kind,
                           uint64_t size);
uint64_t brk_journal_files_bytes (const brk_journal_files_t *files);

int64_t brk_journal_mono_ms (void);
uint64_t brk_journal_wall_ms (void);

//  --------------------------------------------------------------------
//  The journal. Fields are grouped by owner.

struct _brk_journal_t {
    brk_journal_config_t config;    //  Copy of the caller's config
    char *dir;                      //  Own copy of config.dir
    brk_journal_io_t io;            //  Copy of the io seam
    int lock_fd;                    //  Holds the flock on dir/LOCK
    int dir_fd;                     //  For fsync of the directory
    int event_fd;                   //  Readable when durable/status changed
    uint64_t epoch;                 //  Largest epoch journaled (writer-owned once it runs)
    uint64_t run_epoch;             //  The epoch this run started with (fixed at open)

    //  Shared between the loop and the writer, under mutex
    pthread_mutex_t mutex;          //  Guards the fields below
    pthread_cond_t wake;            //  Writer waits on it
    pthread_cond_t done;            //  brk_journal_sync/compact wait on it
    brk_journal_bytes_t buf;        //  Records appended, not yet taken
    uint64_t appended;              //  Last sequence number handed out
    uint64_t buf_seq;               //  Last sequence number in buf
    int64_t buf_since;              //  Monotonic ms of the first record in buf
    uint64_t durable;               //  Durable per the mode (not for none)
    uint64_t synced;                //  Written and fsynced
    int error;                      //  0 or errno of the failing writer
    bool commit_asked;              //  A commit is waiting
    bool sync_asked;                //  brk_journal_sync is waiting
    bool compact_asked;             //  brk_journal_compact or salvage asked
    uint64_t compact_gen;           //  Incremented when a compaction ends
    int compact_rc;                 //  Result of the last compaction (errno)
    bool stop;                      //  destroy asked the writer to end
    brk_journal_stats_t stats;      //  Writer's counters, copied per batch
    bool thread_started;            //  writer is running
    pthread_t thread;               //  The writer thread
    uint64_t batch_gen;             //  Batches done
    uint64_t refused;               //  Appends refused

    //  Writer-owned (caller-owned during brk_journal_new)
    brk_journal_index_t index;      //  Live messages
    bool index_incomplete;          //  An index update ran out of memory: no compaction
    brk_journal_files_t files;      //  Journal files on disk
    uint32_t last_number;           //  Highest file number used
    uint32_t active_number;         //  File the next batch goes to
    uint32_t active_prev;           //  Its prev field (last file it follows)
    uint64_t active_size;           //  Bytes written to it (header included)
    uint64_t active_synced;         //  Bytes of it known fsynced
    int active_fd;                  //  -1 until created
    bool active_created;            //  Header written since it was chosen
    bool active_dirsynced;          //  Its directory entry is fsynced
    brk_journal_bytes_t pend;       //  Taken records not yet durable
    uint64_t pend_seq;              //  Last sequence number in pend
    uint64_t pend_off;              //  Offset of pend in the active file
    size_t pend_indexed;            //  Bytes at pend's start already in the index
    bool unsynced;                  //  Written to the active file without fsync
    uint64_t fsyncs;                //  fsync calls
    uint64_t slow_fsyncs;           //  Of which slow (config.slow_fsync_ms)
    uint64_t slow_unreported;       //  Slow ones not in a warn line yet
    int64_t slow_reported_ms;       //  When the last warn line went out (0: never)
    int64_t fsync_max_us;           //  Slowest fsync timed
    uint64_t compactions;           //  Completed compactions
    int64_t compact_not_before;     //  Backoff after a failed compaction
};

//  brk_journal_io.c: paths and the seam's helpers

//  dir/journal-NNNNNNNNNN.(seg|snap)suffix
void brk_journal_path (brk_journal_t *self, char *path, size_t size, uint32_t number,
                       uint32_t kind, const char *suffix);

//  Write all of data at offset, through the seam. Returns 0 or -1.
int brk_journal_write_all (brk_journal_t *self, int fd, const uint8_t *data, size_t size,
                           uint64_t offset);

//  fsync through the seam, counted. Returns what fsync returns.
//  Times it: one that takes config.slow_fsync_ms or longer is counted,
//  and logged (warn) at most every SLOW_FSYNC_REPORT_MS with how many
//  were slow since the last line. Writer thread (or open, before it).
int brk_journal_fsync (brk_journal_t *self, int fd);

//  Wake the broker's loop (the event fd).
void brk_journal_signal_loop (brk_journal_t *self);

//  brk_journal_recovery.c: read config->dir into self (index, files,
//  epoch, last_number, active_prev) and hand the live set to replay.
//  Returns 0 or -1 with report->code and report->message set.
int brk_journal_recover (brk_journal_t *self, brk_journal_replay_fn *replay, void *arg,
                         brk_journal_report_t *report);

//  Fill report with code and a message; returns -1.
int brk_journal_fail (brk_journal_report_t *report, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

//  brk_journal_writer.c: the thread, and the one batch write that
//  brk_journal_new makes before it starts (the epoch).
void *brk_journal_writer (void *arg);

//  Write pend to the active segment (creating it first), then fsync unless
//  in none mode (force: in every mode). On failure pend is kept: the retry
//  rewrites it at the same offset. Returns 0 or -1 with errno.
int brk_journal_flush (brk_journal_t *self, bool force);

//  Records applied to the live index from records [0, size), which sit
//  in file at offset. On the writer thread.
void brk_journal_index_records (brk_journal_t *self, const uint8_t *records, size_t size,
                                uint32_t file, uint64_t offset);

//  Batches made durable while a compaction walks the index: written to
//  the segment after the snapshot at once, applied to the index only when
//  the compaction is done (its walk must see the index as it began).
typedef struct {
    uint32_t file;              //  Where the batch was written
    uint64_t offset;
    uint8_t *records;           //  Its records (owned)
    size_t size;
} brk_journal_later_batch_t;

typedef struct {
    brk_journal_later_batch_t *batches; //  Oldest first
    size_t count;
    size_t capacity;
    bool pend_unindexed;        //  pend is placed but was not written: index it too
} brk_journal_later_t;

//  Between two chunks of a compaction: if the loop committed records, or
//  has had records waiting for fsync_interval_ms, or a sync or stop waits,
//  or the buffer is half full, write and fsync them to the active segment
//  now, publish their durability, and keep the batch in later. Returns 0 (nothing to do, or done), or -1 with errno when the
//  write failed: the compaction must stop (pend is kept for the writer's
//  next batch, as after any failed write). Cost: one batch write and
//  fsync; the batch's buffer moves to later (no copy).
int brk_journal_commit_between (brk_journal_t *self, brk_journal_later_t *later);

//  Apply every batch kept in later to the index, oldest first (then pend
//  when pend_unindexed), and free them. later is empty afterwards.
void brk_journal_later_apply (brk_journal_t *self, brk_journal_later_t *later);

//  Copy the writer's counters into self->stats (under the mutex, or
//  before the writer starts).
void brk_journal_writer_stats (brk_journal_t *self);

//  brk_journal_compact.c: write the live set as a snapshot replacing every
//  file so far. Returns 0 or -1 with errno (nothing lost either way).
int brk_journal_compact_now (brk_journal_t *self);

//  Is an automatic compaction due?
bool brk_journal_compact_due (brk_journal_t *self, int64_t now);

#endif
