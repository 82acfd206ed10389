/*  brk_msg: see brk_msg.h and brk_queue_internal.h. */
#include "brk_queue_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

brk_msg_t *
brk_msg_new (const char *message_id)
{
    brk_msg_t *msg = calloc (1, sizeof (brk_msg_t));
    if (msg)
        snprintf (msg->id, sizeof msg->id, "%s", message_id);
    return msg;
}

void
brk_msg_destroy (brk_msg_t **msg_p)
{
    brk_msg_t *msg = *msg_p;
    if (msg) {
        free (msg->json);
        if (msg->extra) {
            free (msg->extra->history);
            free (msg->extra->dead_reason);
            free (msg->extra->history_json);
            free (msg->extra);
        }
        free (msg);
        *msg_p = NULL;
    }
}

int
brk_msg_set_body (brk_msg_t *msg, const char *json, size_t len)
{
    char *copy = malloc (len + 1);
    if (!copy)
        return -1;
    memcpy (copy, json, len);
    copy [len] = 0;
    free (msg->json);
    msg->json = copy;
    msg->json_len = len;
    return 0;
}

void
brk_msg_forget_body (brk_msg_t *msg)
{
    free (msg->json);
    msg->json = NULL;
    msg->json_len = 0;
    if (msg->extra) {
        free (msg->extra->history);
        msg->extra->history = NULL;
        msg->extra->history_size = 0;
    }
}

brk_msg_extra_t *
brk_msg_extra (brk_msg_t *msg)
{
    if (!msg->extra) {
        msg->extra = calloc (1, sizeof (brk_msg_extra_t));
        if (msg->extra)
            msg->extra->msg = msg;
    }
    return msg->extra;
}

void
brk_msg_record (brk_msg_t *msg, size_t keep, uint64_t delivery_id, const char *worker,
                const char *outcome, const char *reason, int64_t at_ms)
{
    brk_msg_extra_t *extra = brk_msg_extra (msg);
    if (!extra || keep == 0)
        return;                 //  History is best effort; the message is not
    if (!extra->history) {
        extra->history = calloc (keep, sizeof (brk_attempt_t));
        if (!extra->history)
            return;
    }
    if (extra->history_size == keep) {
        memmove (extra->history, extra->history + 1, (keep - 1) * sizeof (brk_attempt_t));
        extra->history_size--;
    }
    brk_attempt_t *entry = &extra->history [extra->history_size++];
    entry->attempt = msg->attempts;
    entry->delivery_id = delivery_id;
    snprintf (entry->worker, sizeof entry->worker, "%s", worker);
    entry->outcome = outcome;
    snprintf (entry->reason, sizeof entry->reason, "%s", reason ? reason : "");
    entry->at_ms = at_ms;
}

//  --------------------------------------------------------------------------
//  Accessors

const char *
brk_msg_id (const brk_msg_t *msg)
{
    return msg->id;
}

const char *
brk_msg_json (const brk_msg_t *msg, size_t *len)
{
    if (len)
        *len = msg->json_len;
    return msg->json;
}

int64_t
brk_msg_attempts (const brk_msg_t *msg)
{
    return msg->attempts;
}

unsigned
brk_msg_steps (const brk_msg_t *msg)
{
    return msg->steps;
}

uint64_t
brk_msg_seq (const brk_msg_t *msg)
{
    return msg->seq;
}

bool
brk_msg_held (const brk_msg_t *msg)
{
    return msg->state == BRK_MSG_HELD;
}

const char *
brk_msg_publisher (const brk_msg_t *msg)
{
    return msg->publisher;
}

const char *
brk_msg_history_json (const brk_msg_t *msg)
{
    return msg->extra ? msg->extra->history_json : NULL;
}

const char *
brk_msg_dead_reason (const brk_msg_t *msg)
{
    return msg->extra ? msg->extra->dead_reason : NULL;
}

int64_t
brk_msg_dead_at (const brk_msg_t *msg)
{
    return msg->extra ? msg->extra->dead_at : 0;
}

size_t
brk_msg_history (const brk_msg_t *msg, const brk_attempt_t **history)
{
    *history = msg->extra ? msg->extra->history : NULL;
    return msg->extra ? msg->extra->history_size : 0;
}
