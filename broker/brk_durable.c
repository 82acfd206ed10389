/*  brk_durable: what waits for the store; see brk_server_internal.h.

    The server keeps two promises here. A published message is delivered,
    and its PUBACK sent, only once its record is as durable as the store
    promises; an ACKED or PROGRESSED is sent only once what it confirms is.
    Both wait in the queue (held messages) or in the reply list until the
    store's fd says its durable position moved (brk_durable_progress).
    The queue's own changes (leases, acks, dead letters, replays, progress)
    are appended here, from its store handler; a refused append is not
    fatal: the change is in memory, and after a crash the message comes
    back (at least once).

    The server does not know which store it has: memory (never waits),
    the journal, or a test's. Cost: one append per change; the reply list
    is O(waiting replies) per progress, which is bounded by the requests
    that arrived within one commit interval.
*/
#include "brk_server_internal.h"

#include <string.h>

#include "brk_store_journal.h"
#include "brk_store_memory.h"
#include "mdl_log.h"

//  Changes the queue makes on its own (leases, acks, dead letters...).
static void
s_store (void *arg, const brk_event_info_t *info)
{
    s_server_t *self = (s_server_t *) arg;
    const char *id = info->msg ? brk_msg_id (info->msg) : NULL;
    brk_store_record_t record = { .message_id = id };
    mmp_buf_t history;
    mmp_buf_init (&history);
    switch (info->event) {
        case BRK_EVENT_DELIVERED:
            record.kind = BRK_STORE_ATTEMPT;
            record.attempt = (uint32_t) info->attempt;
            record.delivery_id = info->delivery_id;
            break;
        case BRK_EVENT_REQUEUED:
            //  The attempt given back, and no lease: recovery makes it ready
            record.kind = BRK_STORE_ATTEMPT;
            record.attempt = (uint32_t) info->attempt;
            record.delivery_id = 0;
            break;
        case BRK_EVENT_ACKED:
            record.kind = BRK_STORE_ACK;
            break;
        case BRK_EVENT_PROGRESS:
            record.kind = BRK_STORE_PROGRESS;
            record.steps = brk_msg_steps (info->msg);
            break;
        case BRK_EVENT_REPLAYED:
            record.kind = BRK_STORE_REPLAY;
            break;
        case BRK_EVENT_EPOCH:
            record.kind = BRK_STORE_EPOCH;
            record.epoch = info->delivery_id >> 32;
            break;
        case BRK_EVENT_DEAD_LETTERED:
            record.kind = BRK_STORE_DEAD;
            record.reason = info->reason ? info->reason : "";
            s_history_json (&history, info->msg);
            record.history = mmp_buf_data (&history);
            record.dead_ms = (uint64_t) brk_msg_dead_at (info->msg);
            break;
        default:
            return;
    }
    uint64_t seq = mmp_buf_failed (&history) ? 0 : brk_store_append (self->store, &record);
    mmp_buf_free (&history);
    if (seq) {
        self->store_dirty = true;
        self->last_seq = seq;
    }
    if (info->event == BRK_EVENT_EPOCH) {
        //  Once per 2^32 leases: the new epoch is on disk before its first
        //  delivery id leaves, so the next start cannot issue it again.
        //  The loop waits for one fsync here.
        if (!seq || brk_store_sync (self->store) != 0)
            mdl_error ("store: could not keep the new epoch %" PRIu64 " (%s); a restart"
                       " before the next one is journaled may reuse its delivery ids",
                       record.epoch, strerror (brk_store_status (self->store)));
        return;
    }
    if (!seq && brk_server_warn_allowed (self))
        mdl_warn ("store: could not record %s of %s (%s); it may be redone after a crash",
                  brk_event_name (info->event), id, strerror (brk_store_status (self->store)));
}

static int
s_recover (void *arg, const brk_restore_t *restore)
{
    s_server_t *self = (s_server_t *) arg;
    if (!restore->message_id || strlen (restore->message_id) != 36
    ||  (!restore->json && !restore->done)) {
        mdl_warn ("store: skipping a message with a malformed id");
        return 0;
    }
    return brk_queue_restore (self->queue, restore) < 0 ? -1 : 0;
}

int
brk_durable_open (s_server_t *self)
{
    int status = BRK_STORE_FAILED;
    if (self->config.store_open)
        self->store = self->config.store_open (self->config.store_arg, s_recover, self, &status);
    else
    if (self->data_dir) {
        brk_journal_config_t config = self->config.journal;
        config.dir = self->data_dir;
        //  Acked ids survive a restart as far back as the queue remembers them
        config.done_window = self->config.queue.dedup_window > 0
                           ? (size_t) self->config.queue.dedup_window : 0;
        self->store = brk_store_journal_new (&config, s_recover, self, &status);
    }
    else {
        self->store = brk_store_memory_new ((uint64_t) self->config.queue.epoch);
        status = self->store ? BRK_STORE_OK : BRK_STORE_FAILED;
    }
    if (!self->store)
        return status == BRK_STORE_CORRUPT ? BRK_SERVER_CORRUPT
             : status == BRK_STORE_LOCKED ? BRK_SERVER_LOCKED : BRK_SERVER_FAILED;
    brk_queue_set_epoch (self->queue, (int64_t) brk_store_epoch (self->store));
    brk_queue_set_store_handler (self->queue, s_store, self);
    self->durability = brk_store_name (self->store);
    self->durable = brk_store_durable (self->store);
    self->released = self->durable;
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    if (stats.ready + stats.in_flight + stats.dead)
        mdl_info ("queue: %" PRIu64 " pending (%" PRIu64 " of them leased before the "
                  "restart) and %" PRIu64 " dead letters restored; epoch %" PRIu64,
                  stats.ready + stats.in_flight, stats.in_flight, stats.dead,
                  brk_store_epoch (self->store));
    return BRK_SERVER_OK;
}

//  The store moved on: release held messages (when release) and waiting
//  replies, and say when writing starts or stops failing.
static void
s_progress (s_server_t *self, bool release)
{
    uint64_t durable = brk_store_durable (self->store);
    int error = brk_store_status (self->store);
    if (error != self->store_error) {
        if (error)
            mdl_error ("store %s: writing fails: %s; PUBLISH is refused until it works again",
                       self->durability, strerror (error));
        else
            mdl_info ("store %s: writing works again", self->durability);
        self->store_error = error;
    }
    if (release && durable != self->released) {
        brk_queue_release (self->queue, durable);
        self->released = durable;
    }
    if (durable == self->durable)
        return;
    self->durable = durable;
    brk_reply_t **link = &self->replies;
    self->replies_tail = NULL;
    while (*link) {
        brk_reply_t *reply = *link;
        if (reply->seq <= durable) {
            //  A peer gone meanwhile is no matter: it will ask again
            mmp_send (reply->sock, reply->routing_id, reply->command, reply->json, reply->size);
            *link = reply->next;
            zframe_destroy (&reply->routing_id);
            free (reply->json);
            free (reply);
            self->reply_count--;
        }
        else {
            self->replies_tail = reply;
            link = &reply->next;
        }
    }
}

void
brk_durable_progress (s_server_t *self)
{
    s_progress (self, true);
}

void
brk_durable_send_replies (s_server_t *self)
{
    s_progress (self, false);
}

//  Send the reply in buf now if the store is durable up to seq (or
//  there is no such promise to keep), else hold it until it is. Returns 0,
//  or -1 when out of memory (nothing was sent).
int
s_reply_when_durable (s_server_t *self, zsock_t *sock, zframe_t *routing_id,
                      mmp_command_t command, const mmp_buf_t *buf, uint64_t seq)
{
    if (seq == 0 || seq <= self->durable) {
        mmp_send (sock, routing_id, command, mmp_buf_data (buf), mmp_buf_size (buf));
        return 0;
    }
    brk_reply_t *reply = calloc (1, sizeof (brk_reply_t));
    if (reply) {
        reply->routing_id = zframe_dup (routing_id);
        reply->json = malloc (mmp_buf_size (buf));
        if (reply->json)
            memcpy (reply->json, mmp_buf_data (buf), mmp_buf_size (buf));
    }
    if (!reply || !reply->routing_id || !reply->json) {
        if (reply) {
            zframe_destroy (&reply->routing_id);
            free (reply->json);
            free (reply);
        }
        return -1;
    }
    reply->sock = sock;
    reply->command = command;
    reply->size = mmp_buf_size (buf);
    reply->seq = seq;
    if (self->replies_tail)
        self->replies_tail->next = reply;
    else
        self->replies = reply;
    self->replies_tail = reply;
    self->reply_count++;
    return 0;
}

void
brk_durable_drop_replies (s_server_t *self)
{
    while (self->replies) {
        brk_reply_t *reply = self->replies;
        self->replies = reply->next;
        zframe_destroy (&reply->routing_id);
        free (reply->json);
        free (reply);
    }
    self->replies_tail = NULL;
    self->reply_count = 0;
}

