/*  mmp_encode: every MMP/1 body Mandrill sends, built in one place. See
    mmp.h ("Encoders") for the API and PROTOCOL.md for the bodies.

    Each encoder writes one complete JSON object into a caller's mmp_buf_t
    (cleared first, unless its name says it appends) and returns 0, or -1
    when an allocation failed (the buffer then holds incomplete text and
    must not be sent). Strings that came from outside are escaped, cut to
    the limit the peer's decoder enforces, and never carry invalid UTF-8.
    Request objects and attributes are carried as the bytes they are
    given: they were validated when they arrived and are never re-printed.

    Cost: linear in the output; no allocation beyond the buffer's growth.
*/
#include "mmp.h"

#include <assert.h>
#include <string.h>

static int
s_done (mmp_buf_t *buf)
{
    return mmp_buf_failed (buf)? -1: 0;
}

static void
s_req (mmp_buf_t *buf, const char *req)
{
    if (req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string_max (buf, req, MMP_MAX_TEXT);
    }
}

static void
s_uuid_list (mmp_buf_t *buf, const char *const *ids, size_t count)
{
    mmp_buf_append (buf, "[", 1);
    for (size_t i = 0; i < count; i++) {
        if (i)
            mmp_buf_append (buf, ",", 1);
        mmp_buf_json_string_max (buf, ids [i], 36);
    }
    mmp_buf_append (buf, "]", 1);
}

static void
s_steps (mmp_buf_t *buf, unsigned steps)
{
    static const struct { unsigned bit; const char *name; } names [] = {
        { MMP_STEP_SAVE, "\"save\"" }, { MMP_STEP_RESTART, "\"restart\"" },
        { MMP_STEP_STARTED, "\"started\"" }
    };
    bool first = true;
    mmp_buf_append (buf, "[", 1);
    for (size_t i = 0; i < sizeof names / sizeof names [0]; i++)
        if (steps & names [i].bit) {
            if (!first)
                mmp_buf_append (buf, ",", 1);
            mmp_buf_puts (buf, names [i].name);
            first = false;
        }
    mmp_buf_append (buf, "]", 1);
}

int
mmp_encode_error (mmp_buf_t *buf, const char *code, const char *reason, const char *req)
{
    assert (buf && code);
    //  Truncated so our own ERROR always passes the peer's too_long check
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"code\":");
    mmp_buf_json_string_max (buf, code, MMP_MAX_TEXT);
    mmp_buf_puts (buf, ",\"reason\":");
    mmp_buf_json_string_max (buf, reason? reason: "", MMP_MAX_TEXT);
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}


//  --------------------------------------------------------------------------
//  Frontend

int
mmp_encode_request (mmp_buf_t *buf, const char *message_id, const char *instance_name,
                    const char *hostname, const char *attributes, size_t attributes_size)
{
    assert (buf && instance_name);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{");
    if (message_id) {
        mmp_buf_puts (buf, "\"message_id\":");
        mmp_buf_json_string (buf, message_id);
        mmp_buf_puts (buf, ",");
    }
    mmp_buf_puts (buf, "\"instance_name\":");
    mmp_buf_json_string (buf, instance_name);
    if (hostname) {
        mmp_buf_puts (buf, ",\"hostname\":");
        mmp_buf_json_string (buf, hostname);
    }
    if (attributes) {
        mmp_buf_puts (buf, ",\"attributes\":");
        mmp_buf_append (buf, attributes, attributes_size);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

void
mmp_encode_publish_begin (mmp_buf_t *buf)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"messages\":[");
}

void
mmp_encode_publish_add (mmp_buf_t *buf, const char *request, size_t size)
{
    assert (buf && request);
    //  After a failed begin the buffer is empty (and failed): nothing to read
    const char *data = mmp_buf_data (buf);
    size_t used = mmp_buf_size (buf);
    if (used && data [used - 1] != '[')
        mmp_buf_append (buf, ",", 1);
    mmp_buf_append (buf, request, size);
}

int
mmp_encode_publish_end (mmp_buf_t *buf, const char *req)
{
    assert (buf);
    mmp_buf_puts (buf, "]");
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_publish (mmp_buf_t *buf, const char *req, const char *const *requests,
                    const size_t *sizes, size_t count)
{
    assert (buf && (requests || count == 0));
    mmp_encode_publish_begin (buf);
    for (size_t i = 0; i < count; i++)
        mmp_encode_publish_add (buf, requests [i], sizes? sizes [i]: strlen (requests [i]));
    return mmp_encode_publish_end (buf, req);
}

int
mmp_encode_puback (mmp_buf_t *buf, const char *ids, size_t stride, const bool *duplicates,
                   size_t count, const char *durability, const char *req)
{
    return mmp_encode_puback_coalesced (buf, ids, stride, duplicates, NULL, count, durability, req);
}

int
mmp_encode_puback_coalesced (mmp_buf_t *buf, const char *ids, size_t stride,
                             const bool *duplicates, const char *const *coalesced,
                             size_t count, const char *durability, const char *req)
{
    assert (buf && ids && durability);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"message_ids\":[");
    for (size_t i = 0; i < count; i++) {
        mmp_buf_puts (buf, i? ",\"": "\"");
        mmp_buf_append (buf, ids + i * stride, 36);
        mmp_buf_append (buf, "\"", 1);
    }
    mmp_buf_puts (buf, "],\"duplicates\":[");
    bool first = true;
    for (size_t i = 0; duplicates && i < count; i++)
        if (duplicates [i]) {
            mmp_buf_puts (buf, first? "\"": ",\"");
            mmp_buf_append (buf, ids + i * stride, 36);
            mmp_buf_append (buf, "\"", 1);
            first = false;
        }
    mmp_buf_puts (buf, "],\"durability\":");
    mmp_buf_json_string_max (buf, durability, MMP_MAX_TEXT);
    //  Only when it happened: a PUBACK without coalescing is unchanged
    first = true;
    for (size_t i = 0; coalesced && i < count; i++)
        if (coalesced [i]) {
            mmp_buf_puts (buf, first? ",\"coalesced_with\":{\"": ",\"");
            mmp_buf_append (buf, ids + i * stride, 36);
            mmp_buf_puts (buf, "\":");
            mmp_buf_json_string_max (buf, coalesced [i], 36);
            first = false;
        }
    if (!first)
        mmp_buf_append (buf, "}", 1);
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_group_command (mmp_buf_t *buf, mmp_command_t command, const char *group,
                          const char *reason, const char *req)
{
    assert (buf && (command == MMP_PAUSE || command == MMP_RESUME));
    mmp_buf_clear (buf);
    if (group) {
        mmp_buf_puts (buf, "{\"group\":");
        mmp_buf_json_string_max (buf, group, MMP_MAX_TEXT);
    }
    else
        mmp_buf_puts (buf, "{\"all\":true");
    if (command == MMP_PAUSE && reason) {
        mmp_buf_puts (buf, ",\"reason\":");
        mmp_buf_json_string_max (buf, reason, MMP_MAX_TEXT);
    }
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_request_only (mmp_buf_t *buf, const char *req, int64_t limit)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{");
    if (req) {
        mmp_buf_puts (buf, "\"req\":");
        mmp_buf_json_string_max (buf, req, MMP_MAX_TEXT);
    }
    if (limit > 0) {
        mmp_buf_puts (buf, req? ",\"limit\":": "\"limit\":");
        mmp_buf_i64 (buf, limit);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_replay (mmp_buf_t *buf, const char *const *ids, size_t count, const char *req)
{
    assert (buf && (ids || count == 0));
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"message_ids\":");
    s_uuid_list (buf, ids, count);
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_replayed (mmp_buf_t *buf, const char *const *replayed, size_t replayed_count,
                     const char *const *unknown, size_t unknown_count, const char *req)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"replayed\":");
    s_uuid_list (buf, replayed, replayed_count);
    mmp_buf_puts (buf, ",\"unknown\":");
    s_uuid_list (buf, unknown, unknown_count);
    s_req (buf, req);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}


//  --------------------------------------------------------------------------
//  Open-ended objects: STATS replies and DEADLETTERS replies. The writer
//  keeps the separator state in the object's first byte: a member after
//  '{' has no comma.

static void
s_member (mmp_buf_t *buf, const char *name)
{
    const char *data = mmp_buf_data (buf);
    size_t size = mmp_buf_size (buf);
    if (size && data [size - 1] != '{' && data [size - 1] != '[')
        mmp_buf_append (buf, ",", 1);
    mmp_buf_json_string_valid (buf, name);
    mmp_buf_append (buf, ":", 1);
}

void
mmp_encode_open (mmp_buf_t *buf)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_append (buf, "{", 1);
}

void
mmp_encode_member_int (mmp_buf_t *buf, const char *name, int64_t value)
{
    s_member (buf, name);
    mmp_buf_i64 (buf, value);
}

void
mmp_encode_member_string (mmp_buf_t *buf, const char *name, const char *value)
{
    s_member (buf, name);
    mmp_buf_json_string (buf, value? value: "");
}

//  An optional string member: left out when value is NULL.
static void
s_member_if (mmp_buf_t *buf, const char *name, const char *value)
{
    if (value)
        mmp_encode_member_string (buf, name, value);
}

void
mmp_encode_member_bool (mmp_buf_t *buf, const char *name, bool value)
{
    s_member (buf, name);
    mmp_buf_puts (buf, value? "true": "false");
}

void
mmp_encode_member_object (mmp_buf_t *buf, const char *name)
{
    s_member (buf, name);
    mmp_buf_append (buf, "{", 1);
}

void
mmp_encode_member_array (mmp_buf_t *buf, const char *name)
{
    s_member (buf, name);
    mmp_buf_append (buf, "[", 1);
}

void
mmp_encode_member_raw (mmp_buf_t *buf, const char *name, const char *json, size_t size)
{
    s_member (buf, name);
    mmp_buf_append (buf, json, size);
}

void
mmp_encode_item_object (mmp_buf_t *buf)
{
    const char *data = mmp_buf_data (buf);
    size_t used = mmp_buf_size (buf);
    if (used && data [used - 1] != '[')
        mmp_buf_append (buf, ",", 1);
    mmp_buf_append (buf, "{", 1);
}

void
mmp_encode_close_object (mmp_buf_t *buf)
{
    mmp_buf_append (buf, "}", 1);
}

void
mmp_encode_close_array (mmp_buf_t *buf)
{
    mmp_buf_append (buf, "]", 1);
}

int
mmp_encode_close (mmp_buf_t *buf, const char *req)
{
    if (req) {
        s_member (buf, "req");
        mmp_buf_json_string_max (buf, req, MMP_MAX_TEXT);
    }
    mmp_buf_append (buf, "}", 1);
    return s_done (buf);
}

void
mmp_encode_history_entry (mmp_buf_t *buf, int64_t attempt, uint64_t delivery_id,
                          const char *worker, const char *publisher, const char *outcome,
                          const char *reason, int64_t at_ms)
{
    mmp_encode_item_object (buf);
    mmp_encode_member_int (buf, "attempt", attempt);
    s_member (buf, "delivery_id");
    mmp_buf_u64 (buf, delivery_id);
    mmp_encode_member_string (buf, "worker", worker);
    if (publisher)
        mmp_encode_member_string (buf, "publisher", publisher);
    mmp_encode_member_string (buf, "outcome", outcome);
    if (reason && reason [0])
        mmp_encode_member_string (buf, "reason", reason);
    mmp_encode_member_int (buf, "at_ms", at_ms);
    mmp_encode_close_object (buf);
}


//  --------------------------------------------------------------------------
//  Events

int
mmp_encode_group_event (mmp_buf_t *buf, const char *event, int64_t at_ms, const char *group,
                        const char *reason)
{
    assert (buf && event && group);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"event\":");
    mmp_buf_json_string (buf, event);
    mmp_buf_puts (buf, ",\"at_ms\":");
    mmp_buf_i64 (buf, at_ms);
    mmp_buf_puts (buf, ",\"group\":");
    mmp_buf_json_string (buf, group);
    if (reason) {
        mmp_buf_puts (buf, ",\"reason\":");
        mmp_buf_json_string (buf, reason);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_event (mmp_buf_t *buf, const char *event, int64_t at_ms, const char *message_id,
                  int64_t attempt, uint64_t delivery_id, const char *worker,
                  const char *publisher, const char *reason)
{
    assert (buf && event);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"event\":");
    mmp_buf_json_string (buf, event);
    mmp_buf_puts (buf, ",\"at_ms\":");
    mmp_buf_i64 (buf, at_ms);
    if (message_id) {
        mmp_buf_puts (buf, ",\"message_id\":");
        mmp_buf_json_string (buf, message_id);
        if (attempt) {
            mmp_buf_puts (buf, ",\"attempt\":");
            mmp_buf_i64 (buf, attempt);
        }
    }
    if (delivery_id) {
        mmp_buf_puts (buf, ",\"delivery_id\":");
        mmp_buf_u64 (buf, delivery_id);
    }
    s_member_if (buf, "worker", worker);
    s_member_if (buf, "publisher", publisher);
    s_member_if (buf, "reason", reason);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

//  --------------------------------------------------------------------------
//  Backend

int
mmp_encode_hello (mmp_buf_t *buf, int64_t credit, const char *name, const char *subscription,
                  unsigned features)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"credit\":");
    mmp_buf_i64 (buf, credit);
    if (name) {
        mmp_buf_puts (buf, ",\"name\":");
        mmp_buf_json_string_max (buf, name, MMP_MAX_TEXT);
    }
    if (subscription) {
        mmp_buf_puts (buf, ",\"subscription\":");
        mmp_buf_json_string_max (buf, subscription, MMP_MAX_TEXT);
    }
    if (features) {
        static const char *names [] = { "in_doubt", "verify", "publisher" };
        mmp_buf_puts (buf, ",\"features\":[");
        bool first = true;
        for (unsigned i = 0; i < sizeof names / sizeof names [0]; i++)
            if (features & (1u << i)) {
                mmp_buf_puts (buf, first ? "\"" : ",\"");
                mmp_buf_puts (buf, names [i]);
                mmp_buf_puts (buf, "\"");
                first = false;
            }
        mmp_buf_puts (buf, "]");
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_welcome (mmp_buf_t *buf, int64_t ack_deadline_ms, int64_t heartbeat_ms, int64_t epoch)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"ack_deadline_ms\":");
    mmp_buf_i64 (buf, ack_deadline_ms);
    mmp_buf_puts (buf, ",\"heartbeat_ms\":");
    mmp_buf_i64 (buf, heartbeat_ms);
    mmp_buf_puts (buf, ",\"epoch\":");
    mmp_buf_i64 (buf, epoch);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_credit (mmp_buf_t *buf, int64_t credit)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"credit\":");
    mmp_buf_i64 (buf, credit);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_empty (mmp_buf_t *buf)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{}");
    return s_done (buf);
}

//  {"delivery_ids":[...] without the closing brace
static void
s_id_head (mmp_buf_t *buf, const uint64_t *ids, size_t count)
{
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"delivery_ids\":");
    mmp_buf_id_array (buf, ids, count);
}

int
mmp_encode_ack (mmp_buf_t *buf, const uint64_t *ids, size_t count)
{
    s_id_head (buf, ids, count);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_extend (mmp_buf_t *buf, const uint64_t *ids, size_t count, int64_t extension_ms)
{
    s_id_head (buf, ids, count);
    if (extension_ms >= 0) {
        mmp_buf_puts (buf, ",\"extension_ms\":");
        mmp_buf_i64 (buf, extension_ms);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_nack (mmp_buf_t *buf, const uint64_t *ids, size_t count, int64_t delay_ms,
                 const char *reason)
{
    s_id_head (buf, ids, count);
    if (delay_ms >= 0) {
        mmp_buf_puts (buf, ",\"delay_ms\":");
        mmp_buf_i64 (buf, delay_ms);
    }
    if (reason) {
        mmp_buf_puts (buf, ",\"reason\":");
        mmp_buf_json_string_max (buf, reason, MMP_MAX_TEXT);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_nack_requeue (mmp_buf_t *buf, const uint64_t *ids, size_t count, const char *reason)
{
    s_id_head (buf, ids, count);
    if (reason) {
        mmp_buf_puts (buf, ",\"reason\":");
        mmp_buf_json_string_max (buf, reason, MMP_MAX_TEXT);
    }
    mmp_buf_puts (buf, ",\"requeue\":true}");
    return s_done (buf);
}

int
mmp_encode_progress (mmp_buf_t *buf, const uint64_t *ids, size_t count, unsigned steps)
{
    s_id_head (buf, ids, count);
    mmp_buf_puts (buf, ",\"steps\":");
    s_steps (buf, steps);
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}

int
mmp_encode_id_reply (mmp_buf_t *buf, const uint64_t *ok, size_t ok_count,
                     const uint64_t *stale, size_t stale_count,
                     const uint64_t *unknown, size_t unknown_count, int64_t deadline_ms)
{
    assert (buf);
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"ok\":");
    mmp_buf_id_array (buf, ok, ok_count);
    mmp_buf_puts (buf, ",\"stale\":");
    mmp_buf_id_array (buf, stale, stale_count);
    mmp_buf_puts (buf, ",\"unknown\":");
    mmp_buf_id_array (buf, unknown, unknown_count);
    if (deadline_ms >= 0) {
        mmp_buf_puts (buf, ",\"deadline_ms\":");
        mmp_buf_i64 (buf, deadline_ms);
    }
    mmp_buf_puts (buf, "}");
    return s_done (buf);
}


//  --------------------------------------------------------------------------
//  DELIVER, with a byte budget. A frame holds at most MMP_MAX_DELIVERIES
//  leases and at most MMP_MAX_BODY bytes once closed. A lease is appended
//  and taken back (the buffer cut to where it was) when it went over, so
//  the check is exact and costs nothing on the common path.

//  Closing "]}"
#define S_DELIVER_TAIL  2

int
mmp_encode_deliver_add (mmp_buf_t *buf, size_t count, uint64_t delivery_id, int64_t attempt,
                        int64_t deadline_ms, unsigned steps, bool in_doubt,
                        const char *publisher, const char *request, size_t request_size)
{
    assert (buf && request);
    steps &= MMP_STEP_SAVE | MMP_STEP_RESTART;
    if (count >= MMP_MAX_DELIVERIES)
        return 1;
    if (count == 0) {
        mmp_buf_clear (buf);
        mmp_buf_puts (buf, "{\"deliveries\":[");
    }
    size_t mark = mmp_buf_size (buf);
    if (count)
        mmp_buf_append (buf, ",", 1);
    mmp_buf_puts (buf, "{\"delivery_id\":");
    mmp_buf_u64 (buf, delivery_id);
    mmp_buf_puts (buf, ",\"attempt\":");
    mmp_buf_i64 (buf, attempt);
    mmp_buf_puts (buf, ",\"deadline_ms\":");
    mmp_buf_i64 (buf, deadline_ms);
    mmp_buf_puts (buf, ",\"steps\":");
    s_steps (buf, steps);
    if (in_doubt)
        mmp_buf_puts (buf, ",\"in_doubt\":true");
    if (publisher) {
        mmp_buf_puts (buf, ",\"publisher\":");
        mmp_buf_json_string_max (buf, publisher, MMP_MAX_TEXT);
    }
    mmp_buf_puts (buf, ",\"message\":");
    mmp_buf_append (buf, request, request_size);
    mmp_buf_append (buf, "}", 1);
    if (mmp_buf_failed (buf))
        return -1;
    if (mmp_buf_size (buf) + S_DELIVER_TAIL > MMP_MAX_BODY) {
        mmp_buf_truncate (buf, count? mark: 0);
        return count? 1: -1;
    }
    return 0;
}

int
mmp_encode_deliver_end (mmp_buf_t *buf)
{
    assert (buf);
    mmp_buf_append (buf, "]}", S_DELIVER_TAIL);
    return s_done (buf);
}
