/*  brk_store_journal: see brk_store_journal.h. Every call goes through
    the brk_journal.h API, nothing else of the journal is used. */
#include "brk_store_journal.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "brk_state_file.h"
#include "brk_state_saver.h"
#include "mdl_log.h"

typedef struct {
    brk_journal_t *journal;     //  Owned
    char *dir;                  //  Copy of the data dir
    brk_state_saver_t *saver;   //  Policy state writer, from the first post (owned)
} s_journal_store_t;

typedef struct {
    brk_store_recover_fn *recover;  //  The broker's
    void *arg;                  //  Its argument
} s_recover_ctx_t;

static uint64_t
s_append (void *state, const brk_store_record_t *record)
{
    brk_journal_t *journal = ((s_journal_store_t *) state)->journal;
    const char *id = record->message_id;
    switch (record->kind) {
        case BRK_STORE_PUBLISH:
            return brk_journal_append_publish_from (journal, id, record->request,
                                                    record->published_ms, record->publisher);
        case BRK_STORE_ACK:
            return brk_journal_append_ack (journal, id);
        case BRK_STORE_ATTEMPT:
            return brk_journal_append_attempt (journal, id, record->attempt, record->delivery_id);
        case BRK_STORE_DEAD:
            return brk_journal_append_dead (journal, id, record->reason ? record->reason : "",
                                            record->history ? record->history : "[]",
                                            record->dead_ms);
        case BRK_STORE_REPLAY:
            return brk_journal_append_replay (journal, id);
        case BRK_STORE_PROGRESS:
            return brk_journal_append_progress (journal, id, record->steps);
        case BRK_STORE_EPOCH:
            return brk_journal_append_epoch (journal, record->epoch);
    }
    return 0;
}

static int
s_commit (void *state)
{
    return brk_journal_commit (((s_journal_store_t *) state)->journal);
}

static uint64_t
s_durable (void *state)
{
    return brk_journal_durable (((s_journal_store_t *) state)->journal);
}

static int
s_fd (void *state)
{
    return brk_journal_fd (((s_journal_store_t *) state)->journal);
}

static int
s_status (void *state)
{
    return brk_journal_status (((s_journal_store_t *) state)->journal);
}

static void
s_stats (void *state, brk_store_stats_t *stats)
{
    s_journal_store_t *self = (s_journal_store_t *) state;
    brk_journal_stats_t journal;
    brk_journal_stats (self->journal, &journal);
    memset (stats, 0, sizeof *stats);
    stats->persistent = true;
    stats->dir = self->dir;
    stats->appended = journal.appended;
    stats->durable = journal.durable;
    stats->disk_bytes = journal.disk_bytes;
    stats->files = journal.files;
    stats->live_messages = journal.live_messages;
    stats->fsyncs = journal.fsyncs;
    stats->compactions = journal.compactions;
    stats->refused = journal.refused;
    stats->fsync_max_us = journal.fsync_max_us;
    stats->error = journal.error;
}

static int
s_sync (void *state)
{
    return brk_journal_sync (((s_journal_store_t *) state)->journal);
}

static void
s_destroy (void *state)
{
    s_journal_store_t *self = (s_journal_store_t *) state;
    if (self) {
        brk_state_saver_destroy (&self->saver);     //  Writes a posted state first
        brk_journal_destroy (&self->journal);
        free (self->dir);
        free (self);
    }
}

//  The policy state lives beside the journal in DATA_DIR/policy.state,
//  replaced atomically (brk_state_file.h), not in the journal's records.
//  A save writes it on the caller's thread (after any write the saver has
//  in progress, whose text is older); a post hands it to the saver.
static int
s_save_state (void *state, const char *blob, size_t len)
{
    s_journal_store_t *self = (s_journal_store_t *) state;
    if (self->saver)
        return brk_state_saver_write (self->saver, blob, len);
    return brk_state_file_write (self->dir, BRK_POLICY_STATE_FILE, blob, len);
}

static int
s_post_state (void *state, const char *blob, size_t len)
{
    s_journal_store_t *self = (s_journal_store_t *) state;
    if (!self->saver)
        self->saver = brk_state_saver_new (self->dir, BRK_POLICY_STATE_FILE, "policy");
    if (!self->saver)
        return s_save_state (state, blob, len);     //  No thread: at once, as before
    return brk_state_saver_post (self->saver, blob, len);
}

static char *
s_load_state (void *state)
{
    return brk_state_file_read (((s_journal_store_t *) state)->dir, BRK_POLICY_STATE_FILE);
}

static const brk_store_ops_t s_ops = {
    s_append, s_commit, s_durable, s_fd, s_status, s_stats, s_sync, s_destroy,
    s_save_state, s_load_state, s_post_state
};

static int
s_replay (const brk_journal_message_t *message, void *arg)
{
    s_recover_ctx_t *ctx = (s_recover_ctx_t *) arg;
    brk_restore_t restore = {
        .message_id = message->message_id,
        .done = message->done,
        .publisher = message->publisher,
        .json = message->request,
        .json_len = message->request_size,
        .published_ms = (int64_t) message->published_ms,
        .attempts = message->attempts,
        .delivery_id = message->delivery_id,
        .steps = message->steps,
        .dead = message->dead,
        .dead_reason = message->dead_reason,
        .dead_history = message->dead_history,
        .dead_ms = (int64_t) message->dead_ms
    };
    return ctx->recover ? ctx->recover (ctx->arg, &restore) : 0;
}

brk_store_t *
brk_store_journal_new (const brk_journal_config_t *config,
                       brk_store_recover_fn *recover, void *arg, int *status)
{
    *status = BRK_STORE_FAILED;
    s_journal_store_t *self = calloc (1, sizeof (s_journal_store_t));
    if (!self)
        return NULL;
    self->dir = strdup (config->dir ? config->dir : "");
    if (!self->dir) {
        free (self);
        return NULL;
    }
    brk_journal_report_t report;
    memset (&report, 0, sizeof report);
    s_recover_ctx_t ctx = { recover, arg };
    self->journal = brk_journal_new (config, s_replay, &ctx, &report);
    if (!self->journal) {
        mdl_error ("journal: cannot open %s: %s", self->dir, report.message);
        if (report.code == EILSEQ) {
            mdl_error ("journal: the journal is corrupt before its end; start with --salvage "
                       "to keep what can be read and skip the rest");
            *status = BRK_STORE_CORRUPT;
        }
        else
        if (report.code == EBUSY)
            *status = BRK_STORE_LOCKED;
        s_destroy (self);
        return NULL;
    }
    if (report.torn_bytes || report.salvaged_bytes)
        mdl_warn ("journal: %s", report.message);
    mdl_info ("journal: %s, %s durability; recovered %" PRIu64 " live messages (%" PRIu64
              " dead letters) in %" PRId64 " ms; epoch %" PRIu64, self->dir,
              brk_journal_mode_name (config->mode), report.live, report.dead,
              report.elapsed_ms, report.epoch);
    brk_store_t *store = brk_store_new (&s_ops, self, brk_journal_mode_name (config->mode),
                                        config->mode != BRK_JOURNAL_NONE,
                                        brk_journal_epoch (self->journal));
    if (store)
        *status = BRK_STORE_OK;
    return store;
}
