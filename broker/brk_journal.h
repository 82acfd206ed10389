/*  brk_journal: the broker's append-only journal (write-ahead log).

    Every state change of a message that must survive a crash is appended
    here as a checksummed record: PUBLISH, ACK, ATTEMPT, DEAD, REPLAY,
    PROGRESS, plus EPOCH at every start (and when the broker's delivery
    ids move to a new epoch). The on-disk format is described in
    broker/JOURNAL.md (format version 3; versions 1 and 2 are read).

    Threads: the broker's loop owns the handle and is the only caller of
    every function below. Appends only copy the record into a memory
    buffer; a writer thread owned by the module writes, fsyncs, rotates
    segments and compacts. The loop learns that durability advanced (or
    that the writer started/stopped failing) when brk_journal_fd () becomes
    readable, and then calls brk_journal_durable ().

    Live state: the module keeps its own index of live messages (id ->
    where its PUBLISH/DEAD records are, attempt count, progress steps), so
    compaction needs nothing from the broker. It costs about 120 bytes of
    memory per live message, on the writer thread, and about 160 bytes per
    acked id kept for duplicate detection (at most done_window of them).

    Recovery: brk_journal_new () reads the journal, truncates a torn tail,
    and hands the broker the acked ids it keeps (oldest first), then the
    final state of each live message once, in publish order (not the raw
    history), then journals a new epoch.
*/
#ifndef BRK_JOURNAL_H_INCLUDED
#define BRK_JOURNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct _brk_journal_t brk_journal_t;

typedef enum {
    BRK_JOURNAL_NONE = 0,       //  write, never fsync; durable at once
    BRK_JOURNAL_BATCH = 1,      //  group commit: next fsync as soon as the last ended
    BRK_JOURNAL_SYNC = 2        //  fsync as soon as a commit is asked for
} brk_journal_mode_t;

//  "none", "batch", "sync" <-> mode. Parse returns 0 or -1.
int brk_journal_parse_mode (const char *text, brk_journal_mode_t *mode);
const char *brk_journal_mode_name (brk_journal_mode_t mode);

//  Fault-injection seam: every call that changes the disk goes through
//  these. Each returns what the system call returns and sets errno the
//  same way. They are called from the writer thread (and from
//  brk_journal_new on the caller's thread), so a test's fault switch must
//  be atomic. Reading the journal at start uses mmap and is not seamed.
typedef struct {
    int (*open) (void *arg, const char *path, int flags, mode_t mode);
    ssize_t (*pwrite) (void *arg, int fd, const void *data, size_t size, off_t offset);
    int (*fsync) (void *arg, int fd);
    int (*ftruncate) (void *arg, int fd, off_t size);
    int (*rename) (void *arg, const char *from, const char *to);
    int (*unlink) (void *arg, const char *path);
    void *arg;                  //  Passed to every function
    //  Allocates the writer's per-message index entries (released with
    //  free). NULL: malloc. A failure here is survived: see
    //  brk_journal_compact.
    void *(*alloc) (void *arg, size_t size);
} brk_journal_io_t;

//  The real system calls.
const brk_journal_io_t *brk_journal_io_system (void);

typedef struct {
    const char *dir;            //  Data directory, created if missing
    brk_journal_mode_t mode;    //  Durability mode
    int fsync_interval_ms;      //  Batch/sync: longest wait of an uncommitted record; none: write period
    int retry_interval_ms;      //  While failing, retry writing this often
    size_t segment_size;        //  Start a new segment file past this size
    size_t compact_slack_bytes; //  Compact when the files pass twice the live bytes plus this; 0 = never
    size_t max_buffer;          //  While failing, refuse appends past this many buffered bytes
    bool salvage;               //  On corruption in the middle: skip it instead of failing
    size_t done_window;         //  Acked ids kept across restarts for duplicate detection; 0 = none
    int slow_fsync_ms;          //  An fsync this slow or slower is counted and logged; 0 = never
    const brk_journal_io_t *io; //  NULL: brk_journal_io_system ()
} brk_journal_config_t;

//  Fill in the defaults: mode batch, 10 ms, 100 ms, 16 MiB segments,
//  compaction from 4 MiB, 64 MiB buffer, no salvage, no acked ids kept
//  (the broker sets done_window to its dedup_window), slow fsyncs from
//  1000 ms (a warn line at most every 10 s says how slow and how many:
//  every PUBACK and lease waits for the disk), the real io.
//  dir is set to "./mandrill-data".
void brk_journal_config_defaults (brk_journal_config_t *config);

//  A live message as recovered, or (done) an acked id kept for duplicate
//  detection: then only message_id is set. Strings are null-terminated and
//  valid only during the callback.
typedef struct {
    const char *message_id;     //  As journaled by the broker
    bool done;                  //  An acked id, not a live message
    const char *request;        //  The request's JSON text
    size_t request_size;        //  strlen (request)
    uint64_t published_ms;      //  Publish time given to append_publish
    const char *publisher;      //  Publisher's name given to append_publish_from, or NULL
    uint32_t attempts;          //  Latest ATTEMPT number, 0 if never delivered
    uint64_t delivery_id;       //  Delivery id of that attempt, 0 if none
    uint32_t steps;             //  OR of every PROGRESS mask
    bool dead;                  //  Dead-lettered and not replayed since
    const char *dead_reason;    //  When dead, else NULL
    const char *dead_history;   //  When dead: history JSON text, else NULL
    uint64_t dead_ms;           //  When dead: time given to append_dead
} brk_journal_message_t;

//  Called once per live message during brk_journal_new. Return 0 to go on,
//  -1 to abort the open (brk_journal_new then fails with ECANCELED).
typedef int (brk_journal_replay_fn) (const brk_journal_message_t *message, void *arg);

//  What brk_journal_new found; filled on success and on failure.
typedef struct {
    int code;                   //  0, or errno: EILSEQ corrupt, EBUSY locked, ECANCELED, ...
    char message [512];         //  Human-readable summary of the failure or of repairs
    uint64_t files;             //  Journal files read
    uint64_t bytes;             //  Bytes read
    uint64_t records;           //  Valid records read
    uint64_t live;              //  Live messages handed to the callback
    uint64_t dead;              //  ... of which dead letters
    uint64_t done;              //  Acked ids handed over (before the live messages)
    uint64_t torn_bytes;        //  Bytes truncated from the tail
    uint64_t salvaged_bytes;    //  Bytes skipped in salvage mode
    uint64_t salvaged_regions;  //  Corrupt regions (or missing files) skipped
    uint64_t epoch;             //  The new epoch
    int64_t elapsed_ms;         //  Time spent in brk_journal_new
} brk_journal_report_t;

//  Open (or create) the journal in config->dir, replay the live messages
//  into replay (may be NULL), journal and fsync a new epoch, start the
//  writer. Returns NULL on failure with report->code and report->message
//  set. A new dir's parent is fsynced after mkdir. A torn tail (bytes of
//  the last segment that no fsync covered, even with valid records after
//  them) is truncated and reported in the report (and at warn level).
//  Corruption in fsynced data fails the open with EILSEQ unless
//  config->salvage, in which case unreadable bytes are skipped, counted,
//  and the journal is compacted at once so the damaged files go away. A
//  damaged newest snapshot keeps the older files it replaced (if any are
//  left) and salvage recovers from them. Only one handle may hold a data
//  dir (flock).
brk_journal_t *brk_journal_new (const brk_journal_config_t *config,
                                brk_journal_replay_fn *replay, void *arg,
                                brk_journal_report_t *report);

//  Flush, fsync (in every mode), stop the writer, close. Records that
//  still cannot be written are logged as lost. Safe twice; nulls *self_p.
void brk_journal_destroy (brk_journal_t **self_p);

//  The epoch of this run: the largest epoch journaled before + 1 (1 for
//  a new dir). Fixed at open: brk_journal_append_epoch does not change it.
uint64_t brk_journal_epoch (brk_journal_t *self);

//  Appends. Each returns the record's sequence number (1, 2, ... within
//  this run), or 0 if it was refused: PUBLISH is refused while the writer
//  is failing (answer the publisher ERROR unavailable); the others only
//  when the buffer is over max_buffer (the change stays in the broker's
//  memory; after a crash the message may come back, at-least-once).
//  Strings must be null-terminated; request is the JSON text to store.
uint64_t brk_journal_append_publish (brk_journal_t *self, const char *message_id,
                                     const char *request, uint64_t published_ms);
//  The same with the publisher's authenticated name (NULL or "": none);
//  a name longer than 256 bytes is cut to 256. Recovery gives it back.
uint64_t brk_journal_append_publish_from (brk_journal_t *self, const char *message_id,
                                          const char *request, uint64_t published_ms,
                                          const char *publisher);
//  The broker moved its delivery ids to epoch (after 2^32 leases in one
//  run). The next start's epoch is the largest journaled + 1; make the
//  record durable (brk_journal_sync) before using the new epoch.
uint64_t brk_journal_append_epoch (brk_journal_t *self, uint64_t epoch);
uint64_t brk_journal_append_ack (brk_journal_t *self, const char *message_id);
uint64_t brk_journal_append_attempt (brk_journal_t *self, const char *message_id,
                                     uint32_t attempt, uint64_t delivery_id);
uint64_t brk_journal_append_dead (brk_journal_t *self, const char *message_id,
                                  const char *reason, const char *history,
                                  uint64_t dead_ms);
uint64_t brk_journal_append_replay (brk_journal_t *self, const char *message_id);
uint64_t brk_journal_append_progress (brk_journal_t *self, const char *message_id,
                                      uint32_t steps);

//  Ask for what is buffered to be made durable per the mode: batch and
//  sync start an fsync now, or as soon as the one in progress ends (so
//  every commit made during an fsync shares the next one), none ignores
//  it. While failing, it also asks for a retry (at most once an
//  interval). Never blocks on I/O. Returns 0.
int brk_journal_commit (brk_journal_t *self);

//  Block until every record appended so far is written and fsynced (in
//  every mode). Returns 0, or -1 with errno if the writer is failing.
//  For shutdown, tools and tests; the loop should poll the fd instead.
int brk_journal_sync (brk_journal_t *self);

//  A file descriptor that is readable when the durable sequence advanced
//  or the status changed. brk_journal_durable () clears it.
int brk_journal_fd (brk_journal_t *self);

//  Highest sequence number that is durable per the mode (in none mode,
//  the last appended). Every record with a lower number is durable too.
uint64_t brk_journal_durable (brk_journal_t *self);

//  0 if the writer is healthy, else the errno of its last failure
//  (ENOSPC, EIO, ...). It goes back to 0 once a retry succeeds.
int brk_journal_status (brk_journal_t *self);

//  Write the live set into a snapshot file and delete the files it
//  replaces, now, on the writer thread; block until done. Compaction also
//  runs automatically when the files hold more than twice the live bytes
//  plus compact_slack_bytes. Returns 0 or -1 (errno set; nothing is lost).
//  Once the writer's index could not allocate an entry (io->alloc
//  failed), every compaction fails with ENOMEM until the next start,
//  which rebuilds the index from the files: the disk use then grows.
int brk_journal_compact (brk_journal_t *self);

typedef struct {
    uint64_t appended;          //  Last sequence number handed out
    uint64_t durable;           //  As brk_journal_durable
    uint64_t disk_bytes;        //  Size of every journal file
    uint64_t files;             //  Number of journal files
    uint64_t live_messages;     //  Messages in the index (pending + dead)
    uint64_t live_bytes;        //  Their record bytes (what a snapshot holds)
    uint64_t fsyncs;            //  fsync calls on journal files
    uint64_t slow_fsyncs;       //  Of which took slow_fsync_ms or longer
    int64_t fsync_max_us;       //  The slowest fsync of the writer so far
    uint64_t compactions;       //  Completed compactions
    uint64_t refused;           //  Appends refused
    int error;                  //  As brk_journal_status
} brk_journal_stats_t;

//  Counters as of the writer's last batch.
void brk_journal_stats (brk_journal_t *self, brk_journal_stats_t *stats);

//  CRC-32C (Castagnoli) of data, continuing from crc (start with 0).
uint32_t brk_journal_crc32c (uint32_t crc, const void *data, size_t size);

#endif
