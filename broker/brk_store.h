/*  brk_store: what the broker needs from durability, as one interface.

    The server appends every change that must survive a restart, asks for
    a commit once per loop turn, and learns from the store's durable
    position which changes it may act on (release held messages, send the
    PUBACK, ACKED or PROGRESSED that waited). It never knows which store it
    has: every store answers every call.

    Two stores come with the broker:
      brk_store_journal (brk_store_journal.h)  over brk_journal: on disk, in
          the journal's mode (none, batch, sync); recovers at open.
      brk_store_memory (brk_store_memory.h)   a null object: nothing is
          written, everything is durable at once, nothing is recovered.
    A test can make its own with brk_store_new () and a table of functions
    (tests/test_brk_store.c records the server's calls that way).

    Sequence numbers: append returns 1, 2, ... within one run (0 means the
    store refused the record). durable () is the highest number that is as
    durable as the store promises; every lower number is too. A store that
    is "deferred" makes the server wait for durable () before acting on a
    change; one that is not (memory, the journal in none mode) lets it act
    at once.

    Threads: every call comes from the broker's loop thread. A store may
    run threads of its own; it tells the loop that durable () or status ()
    changed by making fd () readable (-1: it never does, and never needs to).

    Failure: a store that cannot write reports an errno in status () and
    may refuse appends (PUBLISH first: the server then answers ERROR
    unavailable); it goes back to 0 when writing works again.
    Cost: one indirect call per record; the built-in stores copy a record
    into memory and never block the loop on I/O (sync () excepted).
*/
#ifndef BRK_STORE_H_INCLUDED
#define BRK_STORE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "brk_queue.h"

typedef struct _brk_store_t brk_store_t;

//  What changed. A store that persists fixes the run's epoch when it
//  opens (brk_store_epoch ()); EPOCH says the queue moved its delivery ids
//  to a later one during the run (after 2^32 leases), which the next open
//  must pass: the server syncs right after appending it.
typedef enum {
    BRK_STORE_PUBLISH,          //  message_id, request, published_ms, publisher
    BRK_STORE_ACK,              //  message_id
    BRK_STORE_ATTEMPT,          //  message_id, attempt, delivery_id
    BRK_STORE_DEAD,             //  message_id, reason, history, dead_ms
    BRK_STORE_REPLAY,           //  message_id
    BRK_STORE_PROGRESS,         //  message_id, steps (the OR of all so far)
    BRK_STORE_EPOCH             //  epoch (message_id NULL)
} brk_store_kind_t;

//  One change. Strings are null-terminated and only read during append.
typedef struct {
    brk_store_kind_t kind;      //  Which fields below count
    const char *message_id;     //  Canonical lower-case uuid
    const char *request;        //  PUBLISH: the request's JSON text
    uint64_t published_ms;      //  PUBLISH: unix ms
    const char *publisher;      //  PUBLISH: authenticated publisher name, or NULL
    uint32_t attempt;           //  ATTEMPT: delivery number
    uint64_t delivery_id;       //  ATTEMPT: the lease
    uint32_t steps;             //  PROGRESS: steps done
    const char *reason;         //  DEAD: why
    const char *history;        //  DEAD: attempt history, JSON text
    uint64_t dead_ms;           //  DEAD: unix ms
    uint64_t epoch;             //  EPOCH: the queue's new epoch
} brk_store_record_t;

typedef struct {
    bool persistent;            //  Keeps messages across restarts
    const char *dir;            //  Where, or NULL
    uint64_t appended;          //  Last sequence number handed out
    uint64_t durable;           //  As brk_store_durable
    uint64_t disk_bytes;        //  Bytes on disk
    uint64_t files;             //  Files on disk
    uint64_t live_messages;     //  Messages the store would recover now
    uint64_t fsyncs;            //  fsync calls made
    uint64_t compactions;       //  Compactions completed
    uint64_t refused;           //  Appends refused
    int64_t fsync_max_us;       //  Slowest fsync seen, or -1 when the store does not measure it
    int error;                  //  As brk_store_status
} brk_store_stats_t;

//  A store's functions. state is what brk_store_new was given.
typedef struct {
    uint64_t (*append) (void *state, const brk_store_record_t *record);
    int (*commit) (void *state);
    uint64_t (*durable) (void *state);
    int (*fd) (void *state);
    int (*status) (void *state);
    void (*stats) (void *state, brk_store_stats_t *stats);
    int (*sync) (void *state);
    void (*destroy) (void *state);
    //  Optional (NULL: the store keeps no state blob). The restart
    //  policy's durable state (brk_policy_serialise): save replaces the
    //  kept blob as a whole (0 or -1 with errno); load returns the blob
    //  kept (malloc'd, null-terminated, the caller frees it) or NULL when
    //  there is none or it cannot be read (errno 0 for none).
    int (*save_state) (void *state, const char *blob, size_t len);
    char *(*load_state) (void *state);
    //  Optional (NULL: post saves at once). Hand the blob over to be saved
    //  soon, without waiting for I/O: a newer post or save replaces it.
    //  0, or -1 with errno (ENOMEM); a later failure is the store's to log.
    int (*post_state) (void *state, const char *blob, size_t len);
} brk_store_ops_t;

//  Outcome of opening a store (the values of BRK_SERVER_*).
#define BRK_STORE_OK        0   //  Open
#define BRK_STORE_FAILED    1   //  Memory, I/O
#define BRK_STORE_CORRUPT   2   //  Damaged before its end (see the journal's salvage)
#define BRK_STORE_LOCKED    3   //  Held by another broker

//  Recovery: called once per message a store kept, during its open, and
//  before them once per acked id it kept for duplicate detection
//  (restore->done, oldest first). Return 0 to go on, -1 to fail the open.
typedef int (brk_store_recover_fn) (void *arg, const brk_restore_t *restore);

//  How a server opens its store: recover into (recover, recover_arg),
//  set *status to BRK_STORE_*, return the store or NULL. arg is the
//  opener's own (brk_server_config_t.store_arg).
typedef brk_store_t *(brk_store_open_fn) (void *arg, brk_store_recover_fn *recover,
                                          void *recover_arg, int *status);

//  Wrap a store's functions. name is what PUBACK's durability says
//  ("memory", "batch", ...; static), deferred whether changes wait for
//  durable (), epoch this run's epoch (>= 1). Takes ownership of state
//  (ops->destroy frees it, also when this fails). NULL when out of memory.
brk_store_t *brk_store_new (const brk_store_ops_t *ops, void *state, const char *name,
                            bool deferred, uint64_t epoch);

//  Flush what can be flushed (ops->destroy decides), free. Safe twice.
void brk_store_destroy (brk_store_t **self_p);

const char *brk_store_name (const brk_store_t *self);
bool brk_store_deferred (const brk_store_t *self);
uint64_t brk_store_epoch (const brk_store_t *self);

//  The record's sequence number, or 0 when refused.
uint64_t brk_store_append (brk_store_t *self, const brk_store_record_t *record);
//  Ask for what was appended to be made durable; never blocks. Returns 0.
int brk_store_commit (brk_store_t *self);
uint64_t brk_store_durable (brk_store_t *self);
int brk_store_fd (brk_store_t *self);
//  0, or the errno of the store's last failure.
int brk_store_status (brk_store_t *self);
void brk_store_stats (brk_store_t *self, brk_store_stats_t *stats);
//  Block until everything appended is durable (for shutdown). 0 or -1.
int brk_store_sync (brk_store_t *self);
//  The policy state blob (see ops): a store without it saves nothing
//  (returns 0) and loads NULL. Save blocks on I/O (the journal store
//  writes and fsyncs one small file): the server calls it once per
//  operator action or error stop, and posts the rest (below).
int brk_store_save_state (brk_store_t *self, const char *blob, size_t len);
//  The same, without waiting: the journal store writes it on a thread of
//  its own (brk_state_saver), so the loop does not stop for the fsyncs.
//  Nothing is promised durable when it returns. A store without
//  post_state saves at once.
int brk_store_post_state (brk_store_t *self, const char *blob, size_t len);
//  Does the store keep a state blob at all (save_state given)? The server
//  does not even serialise the policy for one that does not.
bool brk_store_keeps_state (const brk_store_t *self);
char *brk_store_load_state (brk_store_t *self);

#endif
