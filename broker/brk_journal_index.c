/*  brk_journal_index: the live set, rebuilt from the records and kept up
    to date by the writer, so compaction needs nothing from the broker.

    A message id maps (mdl_strmap_t; the key lives inside the entry) to an
    entry holding where its PUBLISH and DEAD records are and its folded
    attempts, delivery id and steps; entries are also linked in publish
    order, which snapshots and replay keep so the broker's queue order
    survives a restart. Cost: O(1) per record on average; about 120 bytes
    per live message (the entry, its id, and a 24-byte map slot at 3/4
    load). Memory: an entry comes from the io seam's alloc (malloc when
    NULL), so tests can make it fail; a failure is returned, never hidden.

    Acked ids: an ACK keeps the message's entry as a "done" entry on a
    second list, in ack order, so that duplicate detection survives a
    restart (snapshots write them as ACK records, replay hands them over).
    At most done_window of them are kept, the oldest forgotten first; each
    costs the same as a live entry, about 160 bytes with a 36-byte id
    (the entry is reused, so an ack allocates nothing), and 50 bytes in
    a snapshot.
*/
#include "brk_journal_internal.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

static void *
s_malloc (void *arg, size_t size)
{
    (void) arg;
    return malloc (size);
}

int
brk_journal_index_init (brk_journal_index_t *index, brk_journal_alloc_fn *alloc,
                        void *alloc_arg)
{
    memset (index, 0, sizeof (*index));
    index->map = mdl_strmap_new ();
    index->alloc = alloc? alloc: s_malloc;
    index->alloc_arg = alloc_arg;
    return index->map? 0: -1;
}

void
brk_journal_index_destroy (brk_journal_index_t *index)
{
    brk_journal_live_t *lists [2] = { index->head, index->done_head };
    for (int i = 0; i < 2; i++) {
        brk_journal_live_t *live = lists [i];
        while (live) {
            brk_journal_live_t *next = live->next;
            free (live);
            live = next;
        }
    }
    mdl_strmap_destroy (&index->map);
    memset (index, 0, sizeof (*index));
}

size_t
brk_journal_index_count (const brk_journal_index_t *index)
{
    return index->map? mdl_strmap_size (index->map) - index->done_count: 0;
}

//  Bytes an entry adds to a snapshot beyond its PUBLISH and DEAD records.
static uint64_t
s_extra (const brk_journal_live_t *live)
{
    uint64_t extra = 0;
    if (live->attempts)
        extra += RECORD_HEAD + 18 + live->id_len;
    if (live->steps)
        extra += RECORD_HEAD + 10 + live->id_len;
    return extra;
}

//  Take a live entry out of publish order (it stays in the map).
static void
s_unlink (brk_journal_index_t *index, brk_journal_live_t *live)
{
    index->bytes -= live->pub_len + live->dead_len + s_extra (live);
    if (live->prev)
        live->prev->next = live->next;
    else
        index->head = live->next;
    if (live->next)
        live->next->prev = live->prev;
    else
        index->tail = live->prev;
    live->prev = live->next = NULL;
}

static void
s_remove (brk_journal_index_t *index, brk_journal_live_t *live)
{
    mdl_strmap_delete (index->map, live->id);
    s_unlink (index, live);
    free (live);
}

//  Forget a done id.
static void
s_remove_done (brk_journal_index_t *index, brk_journal_live_t *done)
{
    mdl_strmap_delete (index->map, done->id);
    index->bytes -= DONE_RECORD_SIZE (done->id_len);
    if (done->prev)
        done->prev->next = done->next;
    else
        index->done_head = done->next;
    if (done->next)
        done->next->prev = done->prev;
    else
        index->done_tail = done->prev;
    index->done_count--;
    free (done);
}

//  Put an entry (in the map, on no list) at the end of the done list,
//  then forget the oldest beyond the window.
static void
s_push_done (brk_journal_index_t *index, brk_journal_live_t *done)
{
    uint32_t id_len = done->id_len;
    //  Not sizeof: the id may start inside the struct's tail padding
    memset (done, 0, offsetof (brk_journal_live_t, id));
    done->id_len = id_len;
    done->done = true;
    done->prev = index->done_tail;
    if (index->done_tail)
        index->done_tail->next = done;
    else
        index->done_head = done;
    index->done_tail = done;
    index->done_count++;
    index->bytes += DONE_RECORD_SIZE (id_len);
    while (index->done_count > index->done_window)
        s_remove_done (index, index->done_head);
}

//  A new entry for record's id, on no list and not yet in the map; NULL
//  when out of memory.
static brk_journal_live_t *
s_alloc_entry (brk_journal_index_t *index, const brk_journal_record_t *record)
{
    brk_journal_live_t *live = index->alloc (index->alloc_arg,
                                             sizeof (brk_journal_live_t) + record->id_len + 1);
    if (!live)
        return NULL;
    memset (live, 0, sizeof (brk_journal_live_t));
    live->id_len = record->id_len;
    memcpy (live->id, record->id, record->id_len);
    live->id [record->id_len] = 0;
    return live;
}

//  A new entry for record's id, in the map and on no list; NULL when out
//  of memory. The id must not be in the map.
static brk_journal_live_t *
s_new_entry (brk_journal_index_t *index, const brk_journal_record_t *record)
{
    brk_journal_live_t *live = s_alloc_entry (index, record);
    if (live && mdl_strmap_insert (index->map, live->id, live) != 0) {
        free (live);
        return NULL;
    }
    return live;
}

//  A PUBLISH: its id's new entry, in the map and on no list, after any
//  older entry for the id was forgotten; NULL when out of memory. A new
//  id (every PUBLISH but a re-publish) costs one probe of the map.
static brk_journal_live_t *
s_publish_entry (brk_journal_index_t *index, const brk_journal_record_t *record)
{
    brk_journal_live_t *fresh = s_alloc_entry (index, record);
    if (!fresh)
        return NULL;
    int rc = mdl_strmap_insert (index->map, fresh->id, fresh);
    if (rc == 1) {
        //  A second PUBLISH for an id starts a new message: the broker
        //  only journals one after the old one was acked (and, for a
        //  done id, after it left the broker's own window).
        brk_journal_live_t *old = mdl_strmap_lookup (index->map, fresh->id);
        if (old->done)
            s_remove_done (index, old);
        else
            s_remove (index, old);
        rc = mdl_strmap_insert (index->map, fresh->id, fresh);
    }
    if (rc != 0) {
        free (fresh);
        return NULL;
    }
    return fresh;
}

int
brk_journal_index_apply (brk_journal_index_t *index, const brk_journal_record_t *record,
                         uint32_t file, uint64_t off, uint32_t len, uint64_t *epoch)
{
    if (record->type == REC_EPOCH) {
        if (record->number > *epoch)
            *epoch = record->number;
        return 0;
    }
    if (record->type == REC_SYNCED)
        return 0;
    brk_journal_live_t *live = NULL;
    if (record->type != REC_PUBLISH) {
        live = mdl_strmap_lookup (index->map, record->id);
        if (live && live->done && record->type != REC_ACK)
            live = NULL;        //  Acked: nothing to update
    }
    switch (record->type) {
        case REC_PUBLISH:
            live = s_publish_entry (index, record);
            if (!live)
                return -1;
            live->pub_file = file;
            live->pub_off = off;
            live->pub_len = len;
            live->prev = index->tail;
            if (index->tail)
                index->tail->next = live;
            else
                index->head = live;
            index->tail = live;
            index->bytes += len;
            break;
        case REC_ACK:
            if (live && live->done)
                break;          //  Acked twice: keep its first place
            if (live && index->done_window) {
                s_unlink (index, live);
                s_push_done (index, live);
            }
            else
            if (live)
                s_remove (index, live);
            else
            if (index->done_window) {
                live = s_new_entry (index, record);
                if (live)
                    s_push_done (index, live);
            }
            break;
        case REC_ATTEMPT:
        case REC_PROGRESS:
        case REC_DEAD:
        case REC_REPLAY:
            if (!live)
                break;          //  Already acked: nothing to update
            index->bytes -= live->dead_len + s_extra (live);
            if (record->type == REC_ATTEMPT) {
                live->attempts = record->value;
                live->delivery_id = record->number;
            }
            else
            if (record->type == REC_PROGRESS)
                live->steps |= record->value;
            else
            if (record->type == REC_DEAD) {
                live->dead_file = file;
                live->dead_off = off;
                live->dead_len = len;
            }
            else {
                //  A replayed dead letter starts its attempts afresh
                live->dead_len = 0;
                live->attempts = 0;
                live->delivery_id = 0;
            }
            index->bytes += live->dead_len + s_extra (live);
            break;
        default:
            break;
    }
    return 0;
}
