/*  brk_journal: the broker's append-only journal. See brk_journal.h for the
    contract and JOURNAL.md for the on-disk format and the crash-safety
    argument.

    Who owns what:
    - the caller's thread (the broker loop) owns the append buffer, under
      the mutex, and reads the shared status fields under the mutex;
    - the writer thread owns everything on disk: the active segment, the
      list of files, the index of live messages, compaction. Before the
      writer starts, brk_journal_new builds these on the caller's thread.
*/
#include "brk_journal.h"
#include "mdl_log.h"

#include <assert.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#if defined (__x86_64__)
#include <nmmintrin.h>
#endif

#define JOURNAL_MAGIC       "MANDRILJ"
#define JOURNAL_VERSION     1
#define HEADER_SIZE         40
#define KIND_SEGMENT        1
#define KIND_SNAPSHOT       2
#define RECORD_HEAD         8               //  u32 length + u32 crc
#define RECORD_MAX          (16u << 20)     //  sanity bound on a record body
#define CHUNK_SIZE          (1u << 20)      //  compaction read and write chunks
#define MAX_FILES_BEFORE_COMPACT 64

enum {
    REC_PUBLISH = 1,
    REC_ACK = 2,
    REC_ATTEMPT = 3,
    REC_DEAD = 4,
    REC_REPLAY = 5,
    REC_PROGRESS = 6,
    REC_EPOCH = 7
};

//  --------------------------------------------------------------------
//  CRC-32C: SSE4.2 instruction when the CPU has it, else a table.

static uint32_t s_crc_table [8][256];
static pthread_once_t s_crc_once = PTHREAD_ONCE_INIT;
static bool s_crc_hw;

static void
s_crc_init (void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++)
            crc = (crc & 1)? (crc >> 1) ^ 0x82F63B78u: crc >> 1;
        s_crc_table [0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            s_crc_table [t][n] = (s_crc_table [t - 1][n] >> 8)
                               ^ s_crc_table [0][s_crc_table [t - 1][n] & 0xff];
#if defined (__x86_64__)
    __builtin_cpu_init ();
    s_crc_hw = __builtin_cpu_supports ("sse4.2");
#endif
}

#if defined (__x86_64__)
__attribute__ ((target ("sse4.2")))
static uint32_t
s_crc_hw_update (uint32_t crc, const uint8_t *p, size_t size)
{
    uint64_t c = crc;
    while (size >= 8) {
        uint64_t word;
        memcpy (&word, p, 8);
        c = _mm_crc32_u64 (c, word);
        p += 8;
        size -= 8;
    }
    uint32_t c32 = (uint32_t) c;
    while (size--)
        c32 = _mm_crc32_u8 (c32, *p++);
    return c32;
}
#endif

static uint32_t
s_crc_sw_update (uint32_t crc, const uint8_t *p, size_t size)
{
    while (size >= 8) {
        uint32_t lo, hi;
        memcpy (&lo, p, 4);
        memcpy (&hi, p + 4, 4);
        lo ^= crc;
        crc = s_crc_table [7][lo & 0xff] ^ s_crc_table [6][(lo >> 8) & 0xff]
            ^ s_crc_table [5][(lo >> 16) & 0xff] ^ s_crc_table [4][lo >> 24]
            ^ s_crc_table [3][hi & 0xff] ^ s_crc_table [2][(hi >> 8) & 0xff]
            ^ s_crc_table [1][(hi >> 16) & 0xff] ^ s_crc_table [0][hi >> 24];
        p += 8;
        size -= 8;
    }
    while (size--)
        crc = (crc >> 8) ^ s_crc_table [0][(crc ^ *p++) & 0xff];
    return crc;
}

uint32_t
brk_journal_crc32c (uint32_t crc, const void *data, size_t size)
{
    pthread_once (&s_crc_once, s_crc_init);
    crc = ~crc;
#if defined (__x86_64__)
    if (s_crc_hw)
        return ~s_crc_hw_update (crc, (const uint8_t *) data, size);
#endif
    return ~s_crc_sw_update (crc, (const uint8_t *) data, size);
}

//  --------------------------------------------------------------------
//  Little-endian helpers (the format is little-endian on every host).

static inline uint32_t
s_get32 (const uint8_t *p)
{
    return (uint32_t) p [0] | (uint32_t) p [1] << 8
         | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
}

static inline uint64_t
s_get64 (const uint8_t *p)
{
    return (uint64_t) s_get32 (p) | (uint64_t) s_get32 (p + 4) << 32;
}

static inline void
s_put32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) v;
    p [1] = (uint8_t) (v >> 8);
    p [2] = (uint8_t) (v >> 16);
    p [3] = (uint8_t) (v >> 24);
}

static inline void
s_put64 (uint8_t *p, uint64_t v)
{
    s_put32 (p, (uint32_t) v);
    s_put32 (p + 4, (uint32_t) (v >> 32));
}

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t
s_wall_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_REALTIME, &ts);
    return (uint64_t) ts.tv_sec * 1000 + (uint64_t) ts.tv_nsec / 1000000;
}

//  --------------------------------------------------------------------
//  A growable byte buffer.

typedef struct {
    uint8_t *data;              //  Bytes, NULL until first use
    size_t size;                //  Bytes in use
    size_t capacity;            //  Bytes allocated
} buffer_t;

static int
s_buffer_reserve (buffer_t *buffer, size_t more)
{
    if (buffer->size + more <= buffer->capacity)
        return 0;
    size_t capacity = buffer->capacity? buffer->capacity: 64 * 1024;
    while (capacity < buffer->size + more)
        capacity *= 2;
    uint8_t *data = realloc (buffer->data, capacity);
    if (!data)
        return -1;
    buffer->data = data;
    buffer->capacity = capacity;
    return 0;
}

static void
s_buffer_free (buffer_t *buffer)
{
    free (buffer->data);
    memset (buffer, 0, sizeof (*buffer));
}

//  --------------------------------------------------------------------
//  Records: [u32 body length][u32 crc32c of length+body][body].
//  Body: u8 type, then per type (str = u32 length, bytes, a zero byte):
//    PUBLISH  u64 published_ms, str id, str request
//    ACK      str id
//    ATTEMPT  u32 attempt, u64 delivery_id, str id
//    DEAD     u64 dead_ms, str id, str reason, str history
//    REPLAY   str id
//    PROGRESS u32 steps, str id
//    EPOCH    u64 epoch

typedef struct {
    int type;                   //  REC_*
    const char *id;             //  Message id, null-terminated in place
    uint32_t id_len;            //  Its length
    const char *text;           //  PUBLISH request, DEAD reason
    uint32_t text_len;          //  Its length
    const char *text2;          //  DEAD history
    uint32_t text2_len;         //  Its length
    uint64_t number;            //  published_ms, dead_ms, epoch, ATTEMPT delivery_id
    uint32_t value;             //  attempt, steps
} record_t;

static int
s_decode_str (const uint8_t *body, size_t size, size_t *pos,
              const char **text, uint32_t *len)
{
    if (size - *pos < 5)
        return -1;
    uint32_t n = s_get32 (body + *pos);
    if (n > size - *pos - 5 || body [*pos + 4 + n] != 0)
        return -1;
    *text = (const char *) body + *pos + 4;
    *len = n;
    *pos += 5 + n;
    return 0;
}

//  Parse a body whose checksum was verified. Every byte is still checked:
//  a valid checksum proves only that the bytes are the ones written.
static int
s_decode (const uint8_t *body, size_t size, record_t *record)
{
    memset (record, 0, sizeof (*record));
    if (size < 1)
        return -1;
    record->type = body [0];
    size_t pos = 1;
    switch (record->type) {
        case REC_PUBLISH:
        case REC_DEAD:
            if (size - pos < 8)
                return -1;
            record->number = s_get64 (body + pos);
            pos += 8;
            if (s_decode_str (body, size, &pos, &record->id, &record->id_len)
            ||  s_decode_str (body, size, &pos, &record->text, &record->text_len))
                return -1;
            if (record->type == REC_DEAD
            &&  s_decode_str (body, size, &pos, &record->text2, &record->text2_len))
                return -1;
            break;
        case REC_ACK:
        case REC_REPLAY:
            if (s_decode_str (body, size, &pos, &record->id, &record->id_len))
                return -1;
            break;
        case REC_ATTEMPT:
        case REC_PROGRESS:
            if (size - pos < 4)
                return -1;
            record->value = s_get32 (body + pos);
            pos += 4;
            if (record->type == REC_ATTEMPT) {
                if (size - pos < 8)
                    return -1;
                record->number = s_get64 (body + pos);
                pos += 8;
            }
            if (s_decode_str (body, size, &pos, &record->id, &record->id_len))
                return -1;
            break;
        case REC_EPOCH:
            if (size - pos < 8)
                return -1;
            record->number = s_get64 (body + pos);
            pos += 8;
            break;
        default:
            return -1;
    }
    return pos == size? 0: -1;
}

//  Validate the record at data [0..avail): returns its total size, or 0
//  if it is not a whole valid record.
static size_t
s_check_record (const uint8_t *data, size_t avail, record_t *record)
{
    if (avail < RECORD_HEAD + 1)
        return 0;
    uint32_t len = s_get32 (data);
    if (len < 1 || len > RECORD_MAX || len > avail - RECORD_HEAD)
        return 0;
    uint32_t crc = brk_journal_crc32c (0, data, 4);
    crc = brk_journal_crc32c (crc, data + RECORD_HEAD, len);
    if (crc != s_get32 (data + 4))
        return 0;
    if (s_decode (data + RECORD_HEAD, len, record))
        return 0;
    return RECORD_HEAD + len;
}

//  Encoder: reserve, fill, then seal (length and checksum).
typedef struct {
    uint8_t *start;             //  Record start in the buffer
    uint8_t *pos;               //  Next byte to fill
} encoder_t;

static void
s_enc_str (encoder_t *enc, const char *text, size_t len)
{
    s_put32 (enc->pos, (uint32_t) len);
    memcpy (enc->pos + 4, text, len);
    enc->pos [4 + len] = 0;
    enc->pos += 5 + len;
}

static void
s_enc_seal (encoder_t *enc)
{
    uint32_t len = (uint32_t) (enc->pos - enc->start - RECORD_HEAD);
    s_put32 (enc->start, len);
    uint32_t crc = brk_journal_crc32c (0, enc->start, 4);
    crc = brk_journal_crc32c (crc, enc->start + RECORD_HEAD, len);
    s_put32 (enc->start + 4, crc);
}

static void
s_header_encode (uint8_t *out, uint32_t kind, uint32_t number, uint32_t prev)
{
    memcpy (out, JOURNAL_MAGIC, 8);
    s_put32 (out + 8, JOURNAL_VERSION);
    s_put32 (out + 12, kind);
    s_put32 (out + 16, number);
    s_put32 (out + 20, prev);
    s_put64 (out + 24, s_wall_ms ());
    s_put32 (out + 32, 0);
    s_put32 (out + 36, brk_journal_crc32c (0, out, 36));
}

//  --------------------------------------------------------------------
//  Index of live messages: open addressing with linear probing and
//  backward-shift deletion, plus a list in publish order (snapshots and
//  replay keep that order so the broker's queue order survives).

typedef struct s_entry {
    struct s_entry *prev;       //  Previous in publish order
    struct s_entry *next;       //  Next in publish order
    uint32_t hash;              //  Hash of id
    uint32_t pub_file;          //  File holding the PUBLISH record
    uint32_t pub_off;           //  Its offset
    uint32_t pub_len;           //  Its total size
    uint32_t dead_file;         //  File holding the DEAD record
    uint32_t dead_off;          //  Its offset
    uint32_t dead_len;          //  Its total size, 0 when not dead
    uint32_t attempts;          //  Latest attempt
    uint64_t delivery_id;       //  Delivery id of the latest attempt
    uint32_t steps;             //  OR of progress masks
    uint32_t id_len;            //  Length of id
    char id [];                 //  Message id, null-terminated
} entry_t;

//  A slot keeps the entry's hash beside the pointer, so probing past
//  other ids reads only the slot array, never their entries.
typedef struct {
    entry_t *entry;             //  NULL = empty
    uint32_t hash;              //  entry->hash
} islot_t;

typedef struct {
    islot_t *slots;             //  capacity slots
    size_t capacity;            //  Power of two
    size_t count;               //  Entries
    entry_t *head;              //  Oldest published
    entry_t *tail;              //  Newest published
    uint64_t bytes;             //  Sum of pub_len + dead_len (+ small records)
} index_t;

//  Eight bytes at a time (a uuid is five rounds, not 36), then a full mix
//  so the low bits that pick the slot depend on every byte. In memory only:
//  nothing on disk depends on it.
static uint32_t
s_hash (const char *id, size_t len)
{
    const unsigned char *cursor = (const unsigned char *) id;
    uint64_t h = 0x9e3779b97f4a7c15ull ^ len;
    while (len >= 8) {
        uint64_t word;
        memcpy (&word, cursor, 8);
        h = (h ^ word) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        cursor += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy (&tail, cursor, len);
    h ^= tail;
    h ^= h >> 33;
    h *= 0xff51afd7ed558ccdull;
    h ^= h >> 33;
    h *= 0xc4ceb9fe1a85ec53ull;
    h ^= h >> 33;
    return (uint32_t) h;
}

//  Extra bytes an entry needs in a snapshot beyond its PUBLISH and DEAD.
static uint64_t
s_entry_extra (const entry_t *entry)
{
    uint64_t extra = 0;
    if (entry->attempts)
        extra += RECORD_HEAD + 18 + entry->id_len;
    if (entry->steps)
        extra += RECORD_HEAD + 10 + entry->id_len;
    return extra;
}

static size_t
s_index_find_slot (index_t *index, const char *id, size_t len, uint32_t hash)
{
    size_t mask = index->capacity - 1;
    size_t i = hash & mask;
    while (index->slots [i].entry) {
        if (index->slots [i].hash == hash) {
            entry_t *e = index->slots [i].entry;
            if (e->id_len == len && memcmp (e->id, id, len) == 0)
                return i;
        }
        i = (i + 1) & mask;
    }
    return i;
}

static entry_t *
s_index_find (index_t *index, const char *id, size_t len)
{
    if (!index->capacity)
        return NULL;
    return index->slots [s_index_find_slot (index, id, len, s_hash (id, len))].entry;
}

static int
s_index_grow (index_t *index)
{
    size_t capacity = index->capacity? index->capacity * 2: 1024;
    islot_t *slots = calloc (capacity, sizeof (islot_t));
    if (!slots)
        return -1;
    for (size_t i = 0; i < index->capacity; i++) {
        if (index->slots [i].entry) {
            size_t j = index->slots [i].hash & (capacity - 1);
            while (slots [j].entry)
                j = (j + 1) & (capacity - 1);
            slots [j] = index->slots [i];
        }
    }
    free (index->slots);
    index->slots = slots;
    index->capacity = capacity;
    return 0;
}

static void
s_index_remove (index_t *index, entry_t *entry)
{
    size_t mask = index->capacity - 1;
    //  The entry is in the map: find its slot by address, no key compares
    size_t i = entry->hash & mask;
    while (index->slots [i].entry != entry) {
        assert (index->slots [i].entry);
        i = (i + 1) & mask;
    }
    size_t j = i;
    while (true) {
        j = (j + 1) & mask;
        if (!index->slots [j].entry)
            break;
        size_t k = index->slots [j].hash & mask;
        //  Move j back to the hole at i unless its home k lies cyclically in (i, j]
        bool stays = (i <= j)? (i < k && k <= j): (i < k || k <= j);
        if (!stays) {
            index->slots [i] = index->slots [j];
            i = j;
        }
    }
    index->slots [i].entry = NULL;
    index->count--;
    index->bytes -= entry->pub_len + entry->dead_len + s_entry_extra (entry);
    if (entry->prev)
        entry->prev->next = entry->next;
    else
        index->head = entry->next;
    if (entry->next)
        entry->next->prev = entry->prev;
    else
        index->tail = entry->prev;
    free (entry);
}

static void
s_index_destroy (index_t *index)
{
    entry_t *e = index->head;
    while (e) {
        entry_t *next = e->next;
        free (e);
        e = next;
    }
    free (index->slots);
    memset (index, 0, sizeof (*index));
}

//  Apply one record found at (file, off, len). Returns 0 or -1 (no memory).
static int
s_index_apply (index_t *index, const record_t *record,
               uint32_t file, uint32_t off, uint32_t len, uint64_t *epoch)
{
    if (record->type == REC_EPOCH) {
        if (record->number > *epoch)
            *epoch = record->number;
        return 0;
    }
    entry_t *entry = s_index_find (index, record->id, record->id_len);
    switch (record->type) {
        case REC_PUBLISH:
            //  A second PUBLISH for an id starts a new message: the broker
            //  only journals one after the old one was acked.
            if (entry)
                s_index_remove (index, entry);
            if ((index->count + 1) * 10 >= index->capacity * 7
            &&  s_index_grow (index))
                return -1;
            entry = calloc (1, sizeof (entry_t) + record->id_len + 1);
            if (!entry)
                return -1;
            entry->hash = s_hash (record->id, record->id_len);
            entry->pub_file = file;
            entry->pub_off = off;
            entry->pub_len = len;
            entry->id_len = record->id_len;
            memcpy (entry->id, record->id, record->id_len);
            size_t slot = s_index_find_slot (index, entry->id, entry->id_len, entry->hash);
            index->slots [slot].entry = entry;
            index->slots [slot].hash = entry->hash;
            index->count++;
            entry->prev = index->tail;
            if (index->tail)
                index->tail->next = entry;
            else
                index->head = entry;
            index->tail = entry;
            index->bytes += len;
            break;
        case REC_ACK:
            if (entry)
                s_index_remove (index, entry);
            break;
        case REC_ATTEMPT:
        case REC_PROGRESS:
        case REC_DEAD:
        case REC_REPLAY:
            if (!entry)
                break;          //  Already acked: nothing to update
            index->bytes -= entry->dead_len + s_entry_extra (entry);
            if (record->type == REC_ATTEMPT) {
                entry->attempts = record->value;
                entry->delivery_id = record->number;
            }
            else
            if (record->type == REC_PROGRESS)
                entry->steps |= record->value;
            else
            if (record->type == REC_DEAD) {
                entry->dead_file = file;
                entry->dead_off = off;
                entry->dead_len = len;
            }
            else {
                //  A replayed dead letter starts its attempts afresh
                entry->dead_len = 0;
                entry->attempts = 0;
                entry->delivery_id = 0;
            }
            index->bytes += entry->dead_len + s_entry_extra (entry);
            break;
        default:
            break;
    }
    return 0;
}

//  --------------------------------------------------------------------
//  Journal files known to the writer.

typedef struct {
    uint32_t number;            //  File number
    uint32_t kind;              //  KIND_SEGMENT or KIND_SNAPSHOT
    uint64_t size;              //  Bytes
} file_t;

typedef struct {
    file_t *items;              //  Sorted by number
    size_t count;               //  In use
    size_t capacity;            //  Allocated
} file_list_t;

static int
s_files_add (file_list_t *list, uint32_t number, uint32_t kind, uint64_t size)
{
    if (list->count == list->capacity) {
        size_t capacity = list->capacity? list->capacity * 2: 16;
        file_t *items = realloc (list->items, capacity * sizeof (file_t));
        if (!items)
            return -1;
        list->items = items;
        list->capacity = capacity;
    }
    list->items [list->count++] = (file_t) { number, kind, size };
    return 0;
}

static uint64_t
s_files_bytes (const file_list_t *list)
{
    uint64_t bytes = 0;
    for (size_t i = 0; i < list->count; i++)
        bytes += list->items [i].size;
    return bytes;
}

//  --------------------------------------------------------------------
//  The journal.

struct _brk_journal_t {
    brk_journal_config_t config;    //  Copy of the caller's config
    char *dir;                      //  Own copy of config.dir
    brk_journal_io_t io;            //  Copy of the io seam
    int lock_fd;                    //  Holds the flock on dir/LOCK
    int dir_fd;                     //  For fsync of the directory
    int event_fd;                   //  Readable when durable/status changed
    uint64_t epoch;                 //  This run's epoch

    //  Shared between the loop and the writer, under mutex
    pthread_mutex_t mutex;          //  Guards the fields below
    pthread_cond_t wake;            //  Writer waits on it
    pthread_cond_t done;            //  brk_journal_sync/compact wait on it
    buffer_t buf;                   //  Records appended, not yet taken
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

    //  Writer-owned (caller-owned during brk_journal_new)
    index_t index;                  //  Live messages
    file_list_t files;              //  Journal files on disk
    uint32_t last_number;           //  Highest file number used
    uint32_t active_number;         //  File the next batch goes to
    uint32_t active_prev;           //  Its prev field (last file it follows)
    uint64_t active_size;           //  Bytes written to it (header included)
    int active_fd;                  //  -1 until created
    bool active_created;            //  Header written since it was chosen
    bool active_dirsynced;          //  Its directory entry is fsynced
    buffer_t pend;                  //  Taken records not yet durable
    uint64_t pend_seq;              //  Last sequence number in pend
    uint64_t pend_off;              //  Offset of pend in the active file
    bool unsynced;                  //  Written to the active file without fsync
    uint64_t batch_gen;             //  Batches done (shared, under mutex)
    uint64_t fsyncs;                //  fsync calls
    uint64_t compactions;           //  Completed compactions
    int64_t compact_not_before;     //  Backoff after a failed compaction
    uint64_t refused;               //  Appends refused (shared, under mutex)
};

static void
s_path (brk_journal_t *self, char *path, size_t size, uint32_t number, uint32_t kind,
        const char *suffix)
{
    snprintf (path, size, "%s/journal-%010" PRIu32 ".%s%s", self->dir, number,
              kind == KIND_SNAPSHOT? "snap": "seg", suffix);
}

//  Real io.
static int
s_sys_open (void *arg, const char *path, int flags, mode_t mode)
{
    return open (path, flags, mode);
}

static ssize_t
s_sys_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    return pwrite (fd, data, size, offset);
}

static int
s_sys_fsync (void *arg, int fd)
{
    return fsync (fd);
}

static int
s_sys_ftruncate (void *arg, int fd, off_t size)
{
    return ftruncate (fd, size);
}

static int
s_sys_rename (void *arg, const char *from, const char *to)
{
    return rename (from, to);
}

static int
s_sys_unlink (void *arg, const char *path)
{
    return unlink (path);
}

static const brk_journal_io_t s_io_system = {
    s_sys_open, s_sys_pwrite, s_sys_fsync, s_sys_ftruncate, s_sys_rename, s_sys_unlink, NULL
};

const brk_journal_io_t *
brk_journal_io_system (void)
{
    return &s_io_system;
}

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
    config->compact_min_bytes = 4u << 20;
    config->max_buffer = 64u << 20;
    config->salvage = false;
    config->io = NULL;
}

//  Write all of data at offset, through the seam. Returns 0 or -1.
static int
s_write_all (brk_journal_t *self, int fd, const uint8_t *data, size_t size, uint64_t offset)
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

static int
s_fsync (brk_journal_t *self, int fd)
{
    self->fsyncs++;
    return self->io.fsync (self->io.arg, fd);
}

static void
s_signal_loop (brk_journal_t *self)
{
    uint64_t one = 1;
    if (write (self->event_fd, &one, sizeof (one)) < 0 && errno != EAGAIN)
        mdl_warn ("journal: cannot signal the broker loop: %s", strerror (errno));
}

//  --------------------------------------------------------------------
//  Recovery

typedef struct {
    uint32_t number;            //  File number
    uint32_t kind;              //  KIND_*
    uint32_t prev;              //  Header's prev
    uint8_t *map;               //  mmap of the file, NULL if empty
    size_t map_size;            //  Bytes mapped
    size_t size;                //  Valid bytes (after truncation)
} rfile_t;

typedef struct {
    rfile_t *files;             //  Files read, by number
    size_t count;               //  How many
} recovery_t;

static int
s_report (brk_journal_report_t *report, int code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

static int
s_report (brk_journal_report_t *report, int code, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    vsnprintf (report->message, sizeof (report->message), format, args);
    va_end (args);
    report->code = code;
    return -1;
}

static int
s_cmp_rfile (const void *a, const void *b)
{
    uint32_t x = ((const rfile_t *) a)->number, y = ((const rfile_t *) b)->number;
    return x < y? -1: x > y;
}

//  List the directory: journal files into rec (not yet mapped); remove
//  leftover temporary snapshots.
static int
s_list_dir (brk_journal_t *self, recovery_t *rec, brk_journal_report_t *report)
{
    DIR *dir = opendir (self->dir);
    if (!dir)
        return s_report (report, errno, "cannot list %s: %s", self->dir, strerror (errno));
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
        if (rec->count == capacity) {
            capacity = capacity? capacity * 2: 16;
            rfile_t *files = realloc (rec->files, capacity * sizeof (rfile_t));
            if (!files) {
                rc = s_report (report, ENOMEM, "out of memory");
                break;
            }
            rec->files = files;
        }
        rec->files [rec->count++] = (rfile_t) { .number = number, .kind = kind };
    }
    closedir (dir);
    if (rec->count)
        qsort (rec->files, rec->count, sizeof (rfile_t), s_cmp_rfile);
    for (size_t i = 1; i < rec->count && rc == 0; i++)
        if (rec->files [i].number == rec->files [i - 1].number)
            rc = s_report (report, EILSEQ, "journal file %" PRIu32 " exists both as segment"
                           " and snapshot in %s", rec->files [i].number, self->dir);
    return rc;
}

//  Find the next offset >= from where a whole valid record starts, or 0.
static size_t
s_resync (const uint8_t *data, size_t size, size_t from)
{
    record_t record;
    for (size_t p = from; p + RECORD_HEAD < size; p++)
        if (s_check_record (data + p, size - p, &record))
            return p;
    return 0;
}

static int
s_truncate_file (brk_journal_t *self, const char *path, uint64_t size)
{
    int fd = self->io.open (self->io.arg, path, O_WRONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    int rc = self->io.ftruncate (self->io.arg, fd, (off_t) size);
    if (rc == 0)
        rc = s_fsync (self, fd);
    int saved = errno;
    close (fd);
    errno = saved;
    return rc;
}

//  Map and read one file, applying its records to the index.
static int
s_read_file (brk_journal_t *self, rfile_t *file, bool last,
             brk_journal_report_t *report)
{
    char path [4096];
    s_path (self, path, sizeof (path), file->number, file->kind, "");
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return s_report (report, errno, "cannot open %s: %s", path, strerror (errno));
    struct stat st;
    if (fstat (fd, &st)) {
        close (fd);
        return s_report (report, errno, "cannot stat %s: %s", path, strerror (errno));
    }
    size_t size = (size_t) st.st_size;
    if (size > 0) {
        file->map = mmap (NULL, size, PROT_READ, MAP_PRIVATE | MAP_POPULATE, fd, 0);
        if (file->map == MAP_FAILED) {
            file->map = NULL;
            close (fd);
            return s_report (report, errno, "cannot map %s: %s", path, strerror (errno));
        }
        file->map_size = size;
        madvise (file->map, size, MADV_SEQUENTIAL);
    }
    close (fd);
    report->files++;
    report->bytes += size;
    const uint8_t *data = file->map;

    //  Header: a torn header can only be the file being created at the crash
    bool header_ok = size >= HEADER_SIZE && memcmp (data, JOURNAL_MAGIC, 8) == 0
                  && s_get32 (data + 36) == brk_journal_crc32c (0, data, 36);
    if (header_ok && s_get32 (data + 8) != JOURNAL_VERSION)
        return s_report (report, EILSEQ, "%s has format version %" PRIu32
                         ", this broker reads version %d", path, s_get32 (data + 8),
                         JOURNAL_VERSION);
    if (header_ok && (s_get32 (data + 12) != file->kind || s_get32 (data + 16) != file->number))
        header_ok = false;
    if (!header_ok) {
        if (last && file->kind == KIND_SEGMENT && size <= HEADER_SIZE) {
            mdl_warn ("journal: %s has a torn header (%zu bytes): removing it", path, size);
            report->torn_bytes += size;
            file->size = 0;
            if (self->io.unlink (self->io.arg, path))
                return s_report (report, errno, "cannot remove %s: %s", path, strerror (errno));
            return 1;           //  Gone
        }
        if (!self->config.salvage)
            return s_report (report, EILSEQ, "%s has a bad header; start with salvage"
                             " to skip it", path);
        mdl_warn ("journal: salvage: skipping %s (bad header)", path);
        report->salvaged_bytes += size;
        report->salvaged_regions++;
        return 1;
    }
    file->prev = s_get32 (data + 20);

    size_t off = HEADER_SIZE;
    while (off < size) {
        record_t record;
        size_t len = s_check_record (data + off, size - off, &record);
        if (len) {
            if (s_index_apply (&self->index, &record, file->number, (uint32_t) off,
                               (uint32_t) len, &self->epoch))
                return s_report (report, ENOMEM, "out of memory replaying the journal");
            report->records++;
            off += len;
            continue;
        }
        size_t next = s_resync (data, size, off + 1);
        if (!next && last && file->kind == KIND_SEGMENT) {
            //  Torn tail: the last write before the crash
            mdl_warn ("journal: %s: torn tail at offset %zu, truncating %zu bytes",
                      path, off, size - off);
            report->torn_bytes += size - off;
            if (s_truncate_file (self, path, off))
                return s_report (report, errno, "cannot truncate %s: %s", path,
                                 strerror (errno));
            size = off;
            break;
        }
        if (!self->config.salvage)
            return s_report (report, EILSEQ, "%s: corrupt record at offset %zu with"
                             " valid data after it (%zu bytes to the end); start with"
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

static const uint8_t *
s_rfile_data (recovery_t *rec, uint32_t number)
{
    size_t lo = 0, hi = rec->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (rec->files [mid].number < number)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo < rec->count && rec->files [lo].number == number? rec->files [lo].map: NULL;
}

static int
s_replay_live (brk_journal_t *self, recovery_t *rec, brk_journal_replay_fn *replay,
               void *arg, brk_journal_report_t *report)
{
    for (entry_t *e = self->index.head; e; e = e->next) {
        report->live++;
        if (e->dead_len)
            report->dead++;
        if (!replay)
            continue;
        record_t pub, dead;
        const uint8_t *data = s_rfile_data (rec, e->pub_file);
        if (!data || s_decode (data + e->pub_off + RECORD_HEAD, e->pub_len - RECORD_HEAD, &pub))
            return s_report (report, EIO, "journal index points at a missing record");
        brk_journal_message_t message = {
            .message_id = e->id,
            .request = pub.text,
            .request_size = pub.text_len,
            .published_ms = pub.number,
            .attempts = e->attempts,
            .delivery_id = e->delivery_id,
            .steps = e->steps,
        };
        if (e->dead_len) {
            data = s_rfile_data (rec, e->dead_file);
            if (!data || s_decode (data + e->dead_off + RECORD_HEAD,
                                   e->dead_len - RECORD_HEAD, &dead))
                return s_report (report, EIO, "journal index points at a missing record");
            message.dead = true;
            message.dead_reason = dead.text;
            message.dead_history = dead.text2;
            message.dead_ms = dead.number;
        }
        if (replay (&message, arg))
            return s_report (report, ECANCELED, "the replay callback refused message %s",
                             e->id);
    }
    return 0;
}

static int
s_recover (brk_journal_t *self, brk_journal_replay_fn *replay, void *arg,
           brk_journal_report_t *report)
{
    recovery_t rec = { NULL, 0 };
    int rc = s_list_dir (self, &rec, report);

    //  Start at the newest snapshot: it covers every file below it, so any
    //  such file is left from a compaction interrupted before its deletes.
    size_t start = 0;
    for (size_t i = 0; i < rec.count; i++)
        if (rec.files [i].kind == KIND_SNAPSHOT)
            start = i;
    for (size_t i = 0; rc == 0 && i < start; i++) {
        char path [4096];
        s_path (self, path, sizeof (path), rec.files [i].number, rec.files [i].kind, "");
        mdl_info ("journal: removing %s, covered by a snapshot", path);
        if (self->io.unlink (self->io.arg, path))
            rc = s_report (report, errno, "cannot remove %s: %s", path, strerror (errno));
    }
    uint32_t covered = 0;       //  Number of the last file whose records are in
    bool have_covered = false;
    for (size_t i = start; rc == 0 && i < rec.count; i++) {
        rfile_t *file = &rec.files [i];
        int found = s_read_file (self, file, i + 1 == rec.count, report);
        if (found < 0) {
            rc = -1;
            break;
        }
        if (found == 1) {
            file->size = 0;
            file->kind = 0;     //  Skipped or removed: not a journal file any more
            continue;
        }
        //  The chain: each segment names the file it follows
        uint32_t expect = file->kind == KIND_SNAPSHOT? file->prev: file->number;
        if (have_covered && file->kind == KIND_SEGMENT && file->prev != covered) {
            if (!self->config.salvage) {
                rc = s_report (report, EILSEQ, "journal file %" PRIu32 " follows file %"
                               PRIu32 " but the last file read is %" PRIu32 ": a file is"
                               " missing; start with salvage to go on without it",
                               file->number, file->prev, covered);
                break;
            }
            mdl_warn ("journal: salvage: file %" PRIu32 " follows missing file %" PRIu32,
                      file->number, file->prev);
            report->salvaged_regions++;
        }
        covered = expect;
        have_covered = true;
    }
    if (rc == 0)
        rc = s_replay_live (self, &rec, replay, arg, report);

    //  Hand the file list to the writer
    for (size_t i = 0; i < rec.count; i++) {
        rfile_t *file = &rec.files [i];
        if (rc == 0 && i >= start && file->kind
        &&  s_files_add (&self->files, file->number, file->kind, file->size))
            rc = s_report (report, ENOMEM, "out of memory");
        if (file->number > self->last_number)
            self->last_number = file->number;
    }
    self->active_prev = covered;
    for (size_t i = 0; i < rec.count; i++)
        if (rec.files [i].map)
            munmap (rec.files [i].map, rec.files [i].map_size);
    free (rec.files);
    return rc;
}

//  --------------------------------------------------------------------
//  Writer

static int
s_encode_record (buffer_t *buf, int type, uint64_t number, uint32_t value,
                 const char *id, const char *text, const char *text2)
{
    size_t id_len = id? strlen (id): 0;
    size_t text_len = text? strlen (text): 0;
    size_t text2_len = text2? strlen (text2): 0;
    size_t body = 1 + (id? 5 + id_len: 0) + (text? 5 + text_len: 0)
                + (text2? 5 + text2_len: 0);
    if (type == REC_PUBLISH || type == REC_DEAD || type == REC_EPOCH || type == REC_ATTEMPT)
        body += 8;
    if (type == REC_ATTEMPT || type == REC_PROGRESS)
        body += 4;
    if (body > RECORD_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    if (s_buffer_reserve (buf, RECORD_HEAD + body)) {
        errno = ENOMEM;
        return -1;
    }
    encoder_t enc = { buf->data + buf->size, buf->data + buf->size + RECORD_HEAD };
    *enc.pos++ = (uint8_t) type;
    if (type == REC_PUBLISH || type == REC_DEAD || type == REC_EPOCH) {
        s_put64 (enc.pos, number);
        enc.pos += 8;
    }
    if (type == REC_ATTEMPT || type == REC_PROGRESS) {
        s_put32 (enc.pos, value);
        enc.pos += 4;
    }
    if (type == REC_ATTEMPT) {
        s_put64 (enc.pos, number);
        enc.pos += 8;
    }
    if (id)
        s_enc_str (&enc, id, id_len);
    if (text)
        s_enc_str (&enc, text, text_len);
    if (text2)
        s_enc_str (&enc, text2, text2_len);
    s_enc_seal (&enc);
    buf->size += RECORD_HEAD + body;
    return 0;
}

//  Move the appended records into pend (under mutex). Sets *start to where
//  they begin in pend. Returns false if nothing moved.
static bool
s_take (brk_journal_t *self, size_t *start)
{
    *start = self->pend.size;
    if (self->buf.size == 0)
        return false;
    if (self->pend.size == 0) {
        buffer_t swap = self->pend;
        self->pend = self->buf;
        self->buf = swap;
        self->buf.size = 0;
    }
    else {
        if (s_buffer_reserve (&self->pend, self->buf.size))
            return false;       //  Stays in buf until memory returns
        memcpy (self->pend.data + self->pend.size, self->buf.data, self->buf.size);
        self->pend.size += self->buf.size;
        self->buf.size = 0;
    }
    self->pend_seq = self->buf_seq;
    return true;
}

//  Give the new records in pend their place on disk and update the index.
//  A fresh batch goes to a new segment when the active one is full; a
//  retried batch stays where it was placed.
static void
s_place (brk_journal_t *self, size_t start)
{
    if (start == 0) {
        if (self->active_created && self->active_size >= self->config.segment_size) {
            if (self->active_fd >= 0)
                close (self->active_fd);
            self->active_fd = -1;
            self->active_prev = self->active_number;
            self->active_number = ++self->last_number;
            self->active_created = false;
            self->active_dirsynced = false;
            self->active_size = HEADER_SIZE;
        }
        self->pend_off = self->active_size;
    }
    size_t off = start;
    while (off < self->pend.size) {
        uint8_t *data = self->pend.data + off;
        size_t len = RECORD_HEAD + s_get32 (data);
        record_t record;
        int rc = s_decode (data + RECORD_HEAD, len - RECORD_HEAD, &record);
        assert (rc == 0);       //  We encoded it
        if (s_index_apply (&self->index, &record, self->active_number,
                           (uint32_t) (self->pend_off + off), (uint32_t) len, &self->epoch))
            mdl_error ("journal: out of memory in the index; compaction may lose %s",
                       record.id? record.id: "records");
        off += len;
    }
}

//  Write pend to the active segment (creating it first if needed), then
//  fsync unless in none mode (force: fsync in every mode). On failure pend
//  is kept as is: the retry rewrites it at the same offset.
static int
s_flush (brk_journal_t *self, bool force)
{
    if (!self->active_created) {
        char path [4096];
        s_path (self, path, sizeof (path), self->active_number, KIND_SEGMENT, "");
        int fd = self->io.open (self->io.arg, path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (fd < 0)
            return -1;
        uint8_t header [HEADER_SIZE];
        s_header_encode (header, KIND_SEGMENT, self->active_number, self->active_prev);
        if (s_write_all (self, fd, header, HEADER_SIZE, 0)) {
            int saved = errno;
            close (fd);
            errno = saved;
            return -1;
        }
        if (s_files_add (&self->files, self->active_number, KIND_SEGMENT, HEADER_SIZE)) {
            close (fd);
            errno = ENOMEM;
            return -1;
        }
        self->active_fd = fd;
        self->active_created = true;
        self->active_size = HEADER_SIZE;
        self->unsynced = true;
    }
    if (self->pend.size) {
        if (s_write_all (self, self->active_fd, self->pend.data, self->pend.size, self->pend_off)) {
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
        if (s_fsync (self, self->active_fd))
            return -1;
        if (!self->active_dirsynced) {
            if (s_fsync (self, self->dir_fd))
                return -1;
            self->active_dirsynced = true;
        }
        self->unsynced = false;
    }
    self->active_size = self->pend_off + self->pend.size;
    self->files.items [self->files.count - 1].size = self->active_size;
    self->pend.size = 0;
    return 0;
}

//  Sequential reader of records by location, for compaction.
typedef struct {
    uint32_t number;            //  Open file number
    int fd;                     //  Its descriptor
} reader_fd_t;

typedef struct {
    brk_journal_t *self;        //  For paths and the file list
    reader_fd_t *fds;           //  Open files
    size_t nfds;                //  How many
    uint8_t *chunk;             //  Read-ahead buffer
    size_t chunk_cap;           //  Its capacity
    uint32_t chunk_file;        //  File the chunk holds
    uint64_t chunk_off;         //  Offset of chunk [0]
    size_t chunk_len;           //  Valid bytes in chunk
} reader_t;

static const uint8_t *
s_reader_get (reader_t *r, uint32_t number, uint32_t off, uint32_t len)
{
    if (r->chunk_len && number == r->chunk_file && off >= r->chunk_off
    &&  off + (uint64_t) len <= r->chunk_off + r->chunk_len)
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
        s_path (r->self, path, sizeof (path), number, kind, "");
        fd = open (path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return NULL;
        reader_fd_t *fds = realloc (r->fds, (r->nfds + 1) * sizeof (reader_fd_t));
        if (!fds) {
            close (fd);
            errno = ENOMEM;
            return NULL;
        }
        r->fds = fds;
        r->fds [r->nfds++] = (reader_fd_t) { number, fd };
    }
    size_t want = len > CHUNK_SIZE? len: CHUNK_SIZE;
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
s_reader_close (reader_t *r)
{
    for (size_t i = 0; i < r->nfds; i++)
        close (r->fds [i].fd);
    free (r->fds);
    free (r->chunk);
}

//  Append a copy of a stored record to out, checking it on the way.
static int
s_copy_record (reader_t *reader, buffer_t *out, uint32_t file, uint32_t off,
               uint32_t len, int type)
{
    const uint8_t *src = s_reader_get (reader, file, off, len);
    if (!src)
        return -1;
    record_t record;
    if (s_check_record (src, len, &record) != len || record.type != type) {
        mdl_error ("journal: compaction found a bad record in file %" PRIu32
                   " at offset %" PRIu32, file, off);
        errno = EIO;
        return -1;
    }
    if (s_buffer_reserve (out, len)) {
        errno = ENOMEM;
        return -1;
    }
    memcpy (out->data + out->size, src, len);
    out->size += len;
    return 0;
}

//  Write the live set as a snapshot that replaces every file so far.
//  Crash safety: the snapshot is written to a .tmp name, fsynced, renamed
//  and the directory fsynced before any old file is deleted. See JOURNAL.md.
static int
s_compact (brk_journal_t *self)
{
    int64_t started = s_mono_ms ();
    uint64_t before = s_files_bytes (&self->files);
    uint32_t covered = self->active_created? self->active_number: self->active_prev;
    uint32_t snap = ++self->last_number;
    char tmp [4096], path [4096];
    s_path (self, tmp, sizeof (tmp), snap, KIND_SNAPSHOT, ".tmp");
    s_path (self, path, sizeof (path), snap, KIND_SNAPSHOT, "");

    size_t count = self->index.count;
    uint32_t *pub_off = malloc ((count + 1) * sizeof (uint32_t));
    uint32_t *dead_off = malloc ((count + 1) * sizeof (uint32_t));
    buffer_t out = { NULL, 0, 0 };
    reader_t reader = { .self = self };
    int fd = -1;
    int rc = -1;
    if (!pub_off || !dead_off || s_buffer_reserve (&out, CHUNK_SIZE + HEADER_SIZE)) {
        errno = ENOMEM;
        goto done;
    }
    fd = self->io.open (self->io.arg, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0)
        goto done;
    s_header_encode (out.data, KIND_SNAPSHOT, snap, covered);
    out.size = HEADER_SIZE;
    if (s_encode_record (&out, REC_EPOCH, self->epoch, 0, NULL, NULL, NULL))
        goto done;
    uint64_t written = 0;       //  File offset of out.data [0]
    size_t i = 0;
    for (entry_t *e = self->index.head; e; e = e->next, i++) {
        if (written + out.size + e->pub_len + e->dead_len + 64 + 2 * e->id_len > UINT32_MAX) {
            errno = EFBIG;
            goto done;
        }
        pub_off [i] = (uint32_t) (written + out.size);
        if (s_copy_record (&reader, &out, e->pub_file, e->pub_off, e->pub_len, REC_PUBLISH))
            goto done;
        if (e->attempts
        &&  s_encode_record (&out, REC_ATTEMPT, e->delivery_id, e->attempts, e->id, NULL, NULL))
            goto done;
        if (e->steps
        &&  s_encode_record (&out, REC_PROGRESS, 0, e->steps, e->id, NULL, NULL))
            goto done;
        dead_off [i] = (uint32_t) (written + out.size);
        if (e->dead_len
        &&  s_copy_record (&reader, &out, e->dead_file, e->dead_off, e->dead_len, REC_DEAD))
            goto done;
        if (out.size >= CHUNK_SIZE) {
            if (s_write_all (self, fd, out.data, out.size, written))
                goto done;
            written += out.size;
            out.size = 0;
        }
    }
    if (s_write_all (self, fd, out.data, out.size, written))
        goto done;
    written += out.size;
    if (s_fsync (self, fd))
        goto done;
    close (fd);
    fd = -1;
    if (self->io.rename (self->io.arg, tmp, path))
        goto done;

    //  From here the snapshot may be what the next start reads, so the
    //  records that follow must go to a segment numbered after it.
    if (self->active_fd >= 0)
        close (self->active_fd);
    self->active_fd = -1;
    self->active_number = ++self->last_number;
    self->active_prev = covered;
    self->active_created = false;
    self->active_dirsynced = false;
    self->active_size = HEADER_SIZE;
    s_files_add (&self->files, snap, KIND_SNAPSHOT, written);
    if (s_fsync (self, self->dir_fd)) {
        //  Keep the old files: the rename may not be durable
        rc = -1;
        goto done_renamed;
    }
    i = 0;
    for (entry_t *e = self->index.head; e; e = e->next, i++) {
        e->pub_file = snap;
        e->pub_off = pub_off [i];
        if (e->dead_len) {
            e->dead_file = snap;
            e->dead_off = dead_off [i];
        }
    }
    size_t kept = 0;
    for (size_t f = 0; f < self->files.count; f++) {
        file_t *file = &self->files.items [f];
        if (file->number < snap) {
            char old [4096];
            s_path (self, old, sizeof (old), file->number, file->kind, "");
            if (self->io.unlink (self->io.arg, old) && errno != ENOENT)
                mdl_warn ("journal: cannot remove %s: %s (the next start removes it)",
                          old, strerror (errno));
        }
        else
            self->files.items [kept++] = *file;
    }
    self->files.count = kept;
    self->compactions++;
    mdl_info ("journal: compacted %" PRIu64 " bytes into %" PRIu64 " (%zu live messages)"
              " in %" PRId64 " ms", before, written, count, s_mono_ms () - started);
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
        s_reader_close (&reader);
        s_buffer_free (&out);
        free (pub_off);
        free (dead_off);
        errno = saved;
    }
    return rc;
}

static bool
s_should_compact (brk_journal_t *self, int64_t now)
{
    if (self->config.compact_min_bytes == 0 || now < self->compact_not_before)
        return false;
    uint64_t disk = s_files_bytes (&self->files);
    uint64_t live = self->index.bytes + 2 * HEADER_SIZE;
    return (disk >= self->config.compact_min_bytes && disk > 2 * live)
        || self->files.count > MAX_FILES_BEFORE_COMPACT;
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
    self->stats.disk_bytes = s_files_bytes (&self->files);
    self->stats.files = self->files.count;
    self->stats.live_messages = self->index.count;
    self->stats.live_bytes = self->index.bytes;
    self->stats.fsyncs = self->fsyncs;
    self->stats.compactions = self->compactions;
}

static void *
s_writer (void *arg)
{
    brk_journal_t *self = (brk_journal_t *) arg;
    int64_t last_batch = 0;
    pthread_mutex_lock (&self->mutex);
    while (true) {
        int64_t now = s_mono_ms ();
        bool have = self->buf.size > 0 || self->pend.size > 0;
        int64_t due = INT64_MAX;
        if (self->stop || self->sync_asked || self->compact_asked
        ||  (!self->error && self->buf.size >= self->config.max_buffer / 2))
            due = now;
        else
        if (have) {
            int64_t gap = self->config.fsync_interval_ms;
            if (self->error)
                gap = self->commit_asked? gap: self->config.retry_interval_ms;
            else
            if (self->config.mode == BRK_JOURNAL_SYNC && self->commit_asked)
                gap = 0;
            due = last_batch + gap;
            //  Batch and sync: the loop appends a whole PUBLISH and then
            //  commits. Taking the buffer at the first append would fsync
            //  a sliver of it and leave the rest (and its PUBACK) for the
            //  next fsync, an interval later in batch mode; so wait for
            //  the commit, or, for records nobody commits, one interval
            //  after the first of them.
            if (self->config.mode != BRK_JOURNAL_NONE && !self->error
            &&  !self->commit_asked && self->buf.size > 0
            &&  due < self->buf_since + gap)
                due = self->buf_since + gap;
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
            s_place (self, start);
        int rc = 0, err = 0;
        if (self->pend.size > 0 || !self->active_created || (force && self->unsynced)) {
            rc = s_flush (self, force);
            err = rc? (errno? errno: EIO): 0;
        }
        bool compacted = false;
        int compact_err = err;
        if (rc == 0 && !stopping && (compact || s_should_compact (self, now))) {
            compacted = true;
            compact_err = s_compact (self)? (errno? errno: EIO): 0;
            if (compact_err) {
                mdl_warn ("journal: compaction failed: %s", strerror (compact_err));
                self->compact_not_before = s_mono_ms () + 1000;
            }
        }

        pthread_mutex_lock (&self->mutex);
        bool signal = false;
        if (rc == 0) {
            if (seq > self->durable) {
                self->durable = seq;
                signal = true;
            }
            if (!self->unsynced)
                self->synced = seq;
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
        if (compact || compacted) {
            self->compact_rc = compacted? compact_err: err;
            self->compact_gen++;
        }
        self->batch_gen++;
        s_update_stats (self);
        pthread_cond_broadcast (&self->done);
        if (signal)
            s_signal_loop (self);
        if (stopping)
            break;
    }
    size_t lost = self->buf.size + self->pend.size;
    pthread_mutex_unlock (&self->mutex);
    if (lost)
        mdl_error ("journal: %zu bytes of records could not be written before closing", lost);
    return NULL;
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
    s_buffer_free (&self->buf);
    s_buffer_free (&self->pend);
    s_index_destroy (&self->index);
    free (self->files.items);
    pthread_mutex_destroy (&self->mutex);
    pthread_cond_destroy (&self->wake);
    pthread_cond_destroy (&self->done);
    free (self->dir);
    free (self);
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
    int64_t started = s_mono_ms ();
    if (!config->dir || !*config->dir || config->fsync_interval_ms < 0
    ||  config->retry_interval_ms < 1 || config->segment_size < 4096
    ||  config->segment_size > (1u << 30) || config->max_buffer < 4096) {
        s_report (report, EINVAL, "invalid journal configuration");
        return NULL;
    }
    brk_journal_t *self = calloc (1, sizeof (brk_journal_t));
    if (!self) {
        s_report (report, ENOMEM, "out of memory");
        return NULL;
    }
    self->config = *config;
    self->dir = strdup (config->dir);
    self->config.dir = self->dir;
    self->io = config->io? *config->io: s_io_system;
    self->lock_fd = self->dir_fd = self->event_fd = self->active_fd = -1;
    pthread_mutex_init (&self->mutex, NULL);
    pthread_condattr_t attr;
    pthread_condattr_init (&attr);
    pthread_condattr_setclock (&attr, CLOCK_MONOTONIC);
    pthread_cond_init (&self->wake, &attr);
    pthread_condattr_destroy (&attr);
    pthread_cond_init (&self->done, NULL);
    if (!self->dir) {
        s_report (report, ENOMEM, "out of memory");
        goto fail;
    }
    if (mkdir (self->dir, 0755) && errno != EEXIST) {
        s_report (report, errno, "cannot create %s: %s", self->dir, strerror (errno));
        goto fail;
    }
    char path [4096];
    snprintf (path, sizeof (path), "%s/LOCK", self->dir);
    self->lock_fd = open (path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (self->lock_fd < 0) {
        s_report (report, errno, "cannot open %s: %s", path, strerror (errno));
        goto fail;
    }
    if (flock (self->lock_fd, LOCK_EX | LOCK_NB)) {
        if (errno == EWOULDBLOCK)
            s_report (report, EBUSY, "%s is in use by another broker", self->dir);
        else
            s_report (report, errno, "cannot lock %s: %s", path, strerror (errno));
        goto fail;
    }
    self->dir_fd = open (self->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    self->event_fd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (self->dir_fd < 0 || self->event_fd < 0) {
        s_report (report, errno, "cannot open %s: %s", self->dir, strerror (errno));
        goto fail;
    }
    if (s_recover (self, replay, arg, report))
        goto fail;

    //  Every run starts a segment with its epoch, fsynced before any
    //  delivery can be made, so delivery ids are never reused.
    self->epoch++;
    report->epoch = self->epoch;
    self->active_number = ++self->last_number;
    self->active_size = HEADER_SIZE;
    self->pend_off = HEADER_SIZE;
    if (s_encode_record (&self->pend, REC_EPOCH, self->epoch, 0, NULL, NULL, NULL)
    ||  s_flush (self, true)) {
        s_report (report, errno, "cannot write the journal in %s: %s", self->dir,
                  strerror (errno));
        goto fail;
    }
    //  Rewrite what salvage kept so the damaged files go away now
    if (report->salvaged_regions && s_compact (self)) {
        s_report (report, errno, "salvage could not compact %s: %s", self->dir,
                  strerror (errno));
        goto fail;
    }
    s_update_stats (self);
    if (pthread_create (&self->thread, NULL, s_writer, self)) {
        s_report (report, EAGAIN, "cannot start the journal writer");
        goto fail;
    }
    self->thread_started = true;
    report->elapsed_ms = s_mono_ms () - started;
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
    report->elapsed_ms = s_mono_ms () - started;
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
    return self->epoch;
}

static uint64_t
s_append (brk_journal_t *self, int type, uint64_t number, uint32_t value,
          const char *id, const char *text, const char *text2)
{
    assert (self);
    assert (id);
    uint64_t seq = 0;
    pthread_mutex_lock (&self->mutex);
    bool was_empty = self->buf.size == 0;
    if ((type == REC_PUBLISH && self->error) || self->buf.size >= self->config.max_buffer
    ||  s_encode_record (&self->buf, type, number, value, id, text, text2))
        self->refused++;
    else {
        seq = ++self->appended;
        self->buf_seq = seq;
        if (was_empty && self->config.mode != BRK_JOURNAL_NONE)
            self->buf_since = s_mono_ms ();
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
    assert (request);
    return s_append (self, REC_PUBLISH, published_ms, 0, message_id, request, NULL);
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
