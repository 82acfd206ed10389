/*  brk_events: the broker's XPUB event feed; see brk_server_internal.h.

    Every lifecycle event is a topic frame (the event name) and a JSON
    frame. A slow subscriber loses events (PUB semantics), never the
    broker's time: sends never block. Events are made only while someone
    is subscribed (the queue calls nothing otherwise), so an unobserved
    broker pays nothing for them. Group events (group_paused,
    group_resumed) carry the group in a field of their own
    (mmp_encode_group_event); operators' pauses come from brk_control.c.
*/
#include "brk_server_internal.h"

#include <string.h>

//  The publisher is named where it answers "who asked for this": when a
//  request enters (published) and when it is given up (dead_lettered).
static const char *
s_publisher (const brk_event_info_t *info)
{
    if (!info->msg || (info->event != BRK_EVENT_PUBLISHED && info->event != BRK_EVENT_DEAD_LETTERED))
        return NULL;
    return brk_msg_publisher (info->msg);
}

void
brk_events_publish (void *arg, const brk_event_info_t *info)
{
    s_server_t *self = (s_server_t *) arg;
    mmp_buf_t *buf = &self->event;
    const char *name = brk_event_name (info->event);
    if (info->event == BRK_EVENT_GROUP_PAUSED && !info->msg && info->reason) {
        //  The queue's error stop says "GROUP: why": the group gets its field
        const char *colon = strstr (info->reason, ": ");
        char group [BRK_POLICY_NAME_MAX];
        size_t len = colon ? (size_t) (colon - info->reason) : 0;
        if (len > 0 && len < sizeof group) {
            memcpy (group, info->reason, len);
            group [len] = 0;
            brk_server_group_event (self, name, group, colon + 2);
            return;
        }
    }
    if (mmp_encode_event (buf, name, mdl_clock_wall (),
                          info->msg ? brk_msg_id (info->msg) : NULL,
                          info->attempt, info->delivery_id,
                          info->worker ? brk_worker_name (info->worker) : NULL,
                          s_publisher (info), info->reason) != 0)
        return;
    void *handle = zsock_resolve (self->events);
    //  A slow subscriber loses events (PUB semantics), never the broker's time
    if (zmq_send (handle, name, strlen (name), ZMQ_SNDMORE | ZMQ_DONTWAIT) >= 0)
        zmq_send (handle, mmp_buf_data (buf), mmp_buf_size (buf), ZMQ_DONTWAIT);
}

void
brk_events_handle_subscriptions (s_server_t *self)
{
    void *handle = zsock_resolve (self->events);
    for (int i = 0; i < BRK_DRAIN_BATCH; i++) {
        zmq_msg_t msg;
        zmq_msg_init (&msg);
        if (zmq_msg_recv (&msg, handle, ZMQ_DONTWAIT) == -1) {
            zmq_msg_close (&msg);
            break;
        }
        const byte *data = zmq_msg_data (&msg);
        if (zmq_msg_size (&msg) >= 1) {
            if (data [0] == 1)
                self->subscriptions++;
            else
            if (data [0] == 0 && self->subscriptions > 0)
                self->subscriptions--;
        }
        zmq_msg_close (&msg);
    }
    brk_queue_set_events_enabled (self->queue, self->subscriptions > 0);
}
