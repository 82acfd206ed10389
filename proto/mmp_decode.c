/*  mmp_decode: the MMP/1 decoder. See mmp.h for the API and PROTOCOL.md
    for the wire format this file implements.

    Two passes, each refusing as early and as cheaply as it can, after the
    frame checks (signature, command for the direction, body size):

    1. mmp_scan (mmp_scan.c): the whole body against RFC 8259 in one
       linear scan with no allocation and no recursion: syntax, numbers,
       nesting depth, string bytes (control characters, \u0000, lone
       surrogates) and UTF-8.
    2. The schema walk (this file, with the primitives of mmp_walk.c), on
       the message's own copy of the body (one malloc and one memcpy):
       each object's members are located and checked
       against the command's short fixed field list, then each value is
       read in place. Strings are unescaped where they stand and
       null-terminated over their closing quote; integers of plain digits
       are read without strtod; attributes are not parsed again at all:
       the request gets a span (pointer and size) of the bytes as sent.

    No tree is built, except for the frontend replies that tools read
    (PUBACK, STATS, DEADLETTERS, REPLAYED from the broker; the STATS and
    DEADLETTERS ones are open-ended): those also get a cJSON tree in
    msg->body, at the cost of a second parse on the client side.

    Ownership: mmp_msg_t owns raw (the copy), body (the rare tree) and the
    arrays it fills (one malloc each, the id lists grown by realloc); every
    string and span it hands out lives inside raw. Cost: O(body bytes),
    about three reads of each byte; no allocation per field or per request.
    This file is the command table and one short function per command
    body; at about 940 lines it is kept whole so that every body's rules
    can be read side by side with PROTOCOL.md section 4.
*/
#include "mmp.h"
#include "mmp_decode.h"
#include "mdl_uuid.h"

#include <assert.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Wire names, indexed by mmp_command_t.
static const char *const s_command_names [MMP_COMMAND_COUNT] = {
    [MMP_PUBLISH]     = "PUBLISH",
    [MMP_PUBACK]      = "PUBACK",
    [MMP_ERROR]       = "ERROR",
    [MMP_STATS]       = "STATS",
    [MMP_DEADLETTERS] = "DEADLETTERS",
    [MMP_REPLAY]      = "REPLAY",
    [MMP_REPLAYED]    = "REPLAYED",
    [MMP_HELLO]       = "HELLO",
    [MMP_WELCOME]     = "WELCOME",
    [MMP_DELIVER]     = "DELIVER",
    [MMP_CREDIT]      = "CREDIT",
    [MMP_EXTEND]      = "EXTEND",
    [MMP_EXTENDED]    = "EXTENDED",
    [MMP_ACK]         = "ACK",
    [MMP_ACKED]       = "ACKED",
    [MMP_NACK]        = "NACK",
    [MMP_NACKED]      = "NACKED",
    [MMP_PROGRESS]    = "PROGRESS",
    [MMP_PROGRESSED]  = "PROGRESSED",
    [MMP_HEARTBEAT]   = "HEARTBEAT",
    [MMP_BYE]         = "BYE",
    [MMP_PAUSE]       = "PAUSE",
    [MMP_RESUME]      = "RESUME",
    [MMP_GROUPS]      = "GROUPS",
    [MMP_INFLIGHT]    = "INFLIGHT",
    [MMP_WORKERS]     = "WORKERS",
    [MMP_RELOAD]      = "RELOAD",
};

//  Which way each command may travel: bit 0 to the broker, bit 1 from it.
#define S_TO    1u
#define S_FROM  2u
static const unsigned char s_command_ways [MMP_COMMAND_COUNT] = {
    [MMP_PUBLISH]     = S_TO,
    [MMP_PUBACK]      = S_FROM,
    [MMP_ERROR]       = S_FROM,
    [MMP_STATS]       = S_TO | S_FROM,
    [MMP_DEADLETTERS] = S_TO | S_FROM,
    [MMP_REPLAY]      = S_TO,
    [MMP_REPLAYED]    = S_FROM,
    [MMP_HELLO]       = S_TO,
    [MMP_WELCOME]     = S_FROM,
    [MMP_DELIVER]     = S_FROM,
    [MMP_CREDIT]      = S_TO,
    [MMP_EXTEND]      = S_TO,
    [MMP_EXTENDED]    = S_FROM,
    [MMP_ACK]         = S_TO,
    [MMP_ACKED]       = S_FROM,
    [MMP_NACK]        = S_TO,
    [MMP_NACKED]      = S_FROM,
    [MMP_PROGRESS]    = S_TO,
    [MMP_PROGRESSED]  = S_FROM,
    [MMP_HEARTBEAT]   = S_TO | S_FROM,
    [MMP_BYE]         = S_TO,
    [MMP_PAUSE]       = S_TO | S_FROM,
    [MMP_RESUME]      = S_TO | S_FROM,
    [MMP_GROUPS]      = S_TO | S_FROM,
    [MMP_INFLIGHT]    = S_TO | S_FROM,
    [MMP_WORKERS]     = S_TO | S_FROM,
    [MMP_RELOAD]      = S_TO | S_FROM,
};

//  Largest integer a JSON double carries exactly; the bound for every
//  integer field that has no tighter limit of its own.


//  The most dead letters a DEADLETTERS request may ask for and a reply carry.
#define S_MAX_DEAD_LETTERS  100000


const char *
mmp_command_name (mmp_command_t command)
{
    if ((int) command < 0 || command >= MMP_COMMAND_COUNT)
        return NULL;
    return s_command_names [command];
}


void
mmp_msg_init (mmp_msg_t *msg)
{
    assert (msg);
    memset (msg, 0, sizeof *msg);
    msg->command = MMP_COMMAND_COUNT;
    msg->direction = MMP_TO_BROKER;
    msg->credit = -1;
    msg->extension_ms = -1;
    msg->delay_ms = -1;
    msg->deadline_ms = -1;
    msg->ack_deadline_ms = -1;
    msg->heartbeat_ms = -1;
    msg->epoch = -1;
    msg->limit = -1;
}


void
mmp_msg_reset (mmp_msg_t *msg)
{
    assert (msg);
    cJSON_Delete (msg->body);
    free (msg->raw);
    free (msg->messages);
    free (msg->deliveries);
    free (msg->ids);
    free (msg->stale);
    free (msg->unknown);
    free ((void *) msg->message_ids);
    free ((void *) msg->other_ids);
    mmp_msg_init (msg);
}





//  --------------------------------------------------------------------------
//  Validators

static inline bool
s_label_char (unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z')
        || (c >= '0' && c <= '9') || c == '-';
}

bool
mmp_valid_instance_name (const char *text, size_t len)
{
    if (!text || len == 0 || len > MMP_MAX_INSTANCE)
        return false;
    if (text [0] == '-' || text [len - 1] == '-')
        return false;
    for (size_t i = 0; i < len; i++)
        if (!s_label_char ((unsigned char) text [i]))
            return false;
    return true;
}

bool
mmp_valid_hostname (const char *text, size_t len)
{
    if (!text || len == 0 || len > MMP_MAX_HOSTNAME)
        return false;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i == len || text [i] == '.') {
            //  An empty label covers a leading, doubled or trailing dot
            if (!mmp_valid_instance_name (text + start, i - start))
                return false;
            start = i + 1;
        }
    }
    return true;
}



//  The optional "req" correlation string of frontend commands.
static int
s_req (mmp_pos_t *item, mmp_msg_t *msg, mmp_error_t *err)
{
    if (!item)
        return 0;
    return mmp_read_text (item, "req", MMP_MAX_TEXT, &msg->req, NULL, &mmp_top, err);
}


//  --------------------------------------------------------------------------

//  A restart request: PUBLISH messages [i], DELIVER deliveries [i].message.

static const mmp_schema_t s_request_schema = {
    { "message_id", "instance_name", "hostname", "attributes", NULL }
};

//  *end_p gets the position after the request object.
static int
s_request (mmp_pos_t *item, bool delivered, mmp_request_t *request, mmp_pos_t **end_p,
           const mmp_where_t *where, mmp_error_t *err)
{
    if (*item != '{') {
        *end_p = mmp_skip (item);
        return mmp_fail_at (err, MMP_ERR_NOT_OBJECT, where, NULL, "a request must be an object");
    }
    mmp_pos_t *slot [MMP_MAX_FIELDS];
    if (mmp_collect (item, &s_request_schema, slot, end_p, where, err))
        return -2;
    memset (request, 0, sizeof *request);
    size_t len;

    if (slot [0]) {
        if (*slot [0] != '"')
            return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, "message_id", "must be a uuid string");
        mmp_read_text (slot [0], "message_id", SIZE_MAX, &request->message_id, &len, where, err);
        if (!mdl_uuid_valid (request->message_id, len))
            return mmp_fail_at (err, MMP_ERR_BAD_MESSAGE_ID, where, "message_id", "not a canonical uuid");
    }
    else
    if (delivered)
        return mmp_missing (err, where, "message_id");

    if (!slot [1])
        return mmp_missing (err, where, "instance_name");
    if (mmp_read_text (slot [1], "instance_name", SIZE_MAX, &request->instance_name, &len, where, err))
        return -2;
    if (!mmp_valid_instance_name (request->instance_name, len))
        return mmp_fail_at (err, MMP_ERR_BAD_INSTANCE_NAME, where, "instance_name",
                       "not an RFC 1123 label (1..63 of A-Z a-z 0-9 -, no '-' at either end)");

    if (slot [2]) {
        if (mmp_read_text (slot [2], "hostname", SIZE_MAX, &request->hostname, &len, where, err))
            return -2;
        if (!mmp_valid_hostname (request->hostname, len))
            return mmp_fail_at (err, MMP_ERR_BAD_HOSTNAME, where, "hostname",
                           "not a DNS name (1..253 bytes of RFC 1123 labels, no trailing dot)");
    }
    else
    if (delivered)
        return mmp_missing (err, where, "hostname");

    if (slot [3]) {
        if (*slot [3] != '{')
            return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, "attributes", "must be an object");
        size_t size = (size_t) (mmp_skip (slot [3]) - slot [3]);
        if (size > MMP_MAX_ATTRIBUTES)
            return mmp_fail_at (err, MMP_ERR_TOO_LARGE, where, "attributes",
                           "%zu bytes, over %d", size, MMP_MAX_ATTRIBUTES);
        if (!delivered && mmp_nesting (slot [3], size) > MMP_MAX_ATTRIBUTES_DEPTH)
            return mmp_fail_at (err, MMP_ERR_TOO_DEEP, where, "attributes",
                                "nested deeper than %d (a DELIVER carries them one level deeper)",
                                MMP_MAX_ATTRIBUTES_DEPTH);
        request->attributes = (const char *) slot [3];
        request->attributes_size = size;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Per-command bodies. Each gets the top-level object and fills msg; on
//  failure it returns -2 with err set and the caller resets msg.

static const mmp_schema_t s_publish_schema = { { "messages", "req", NULL } };

//  Make room for one more item in *array (of size bytes each), growing
//  it fourfold: arrays are filled in one pass, never counted first.
static int
s_grow (void **array, size_t count, size_t *capacity, size_t size)
{
    if (count < *capacity)
        return 0;
    size_t grown = *capacity? *capacity * 4: 16;
    void *bigger = realloc (*array, grown * size);
    if (!bigger)
        return -1;
    *array = bigger;
    *capacity = grown;
    return 0;
}

//  After the item whose end is at p: the next item, or NULL at ']'.
static mmp_pos_t *
s_after (mmp_pos_t *p)
{
    p = mmp_space (p);
    return *p == ']'? NULL: mmp_space (p + 1);
}

static int
s_publish (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_publish_schema, slot, &end, &mmp_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "messages");
    if (*slot [0] != '[')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, "messages", "must be an array");
    size_t capacity = 0;
    mmp_where_t where = { "messages", 0, NULL };
    for (mmp_pos_t *item = mmp_first (slot [0]); item; item = s_after (end), where.index++) {
        if (where.index == MMP_MAX_MESSAGES)
            return mmp_fail_at (err, MMP_ERR_TOO_MANY, &mmp_top, "messages", "more than %d items",
                           MMP_MAX_MESSAGES);
        if (s_grow ((void **) &msg->messages, where.index, &capacity, sizeof *msg->messages))
            return mmp_fail_at (err, MMP_ERR_TOO_LARGE, &mmp_top, "messages", "out of memory");
        if (s_request (item, false, &msg->messages [where.index], &end, &where, err))
            return -2;
    }
    if (where.index == 0)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "messages", "must not be empty");
    msg->message_count = where.index;
    return 0;
}

static const mmp_schema_t s_puback_schema = {
    { "message_ids", "duplicates", "durability", "req", "coalesced_with", NULL }
};

static int
s_puback (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_puback_schema, slot, &end, &mmp_top, err) || s_req (slot [3], msg, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "message_ids");
    if (!slot [1])
        return mmp_missing (err, &mmp_top, "duplicates");
    if (!slot [2])
        return mmp_missing (err, &mmp_top, "durability");
    if (mmp_read_uuids (slot [0], "message_ids", 1, MMP_MAX_MESSAGES,
                 &msg->message_ids, &msg->message_id_count, err)
    ||  mmp_read_uuids (slot [1], "duplicates", 0, MMP_MAX_MESSAGES,
                 &msg->other_ids, &msg->other_id_count, err)
    ||  mmp_read_text (slot [2], "durability", MMP_MAX_TEXT, &msg->durability, NULL, &mmp_top, err))
        return -2;
    const char *mode = msg->durability;
    if (strcmp (mode, "memory") && strcmp (mode, "none")
    &&  strcmp (mode, "batch") && strcmp (mode, "sync"))
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "durability",
                       "must be \"memory\", \"none\", \"batch\" or \"sync\"");
    //  Optional (restart policy): {ID: LEADER_ID}, read from the tree
    if (slot [4] && *slot [4] != '{')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, "coalesced_with", "must be an object");
    return 0;
}

static const mmp_schema_t s_error_schema = { { "code", "reason", "req", NULL } };

static int
s_error (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_error_schema, slot, &end, &mmp_top, err) || s_req (slot [2], msg, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "code");
    if (!slot [1])
        return mmp_missing (err, &mmp_top, "reason");
    size_t len;
    if (mmp_read_text (slot [0], "code", MMP_MAX_TEXT, &msg->code, &len, &mmp_top, err)
    ||  mmp_read_text (slot [1], "reason", MMP_MAX_TEXT, &msg->reason, NULL, &mmp_top, err))
        return -2;
    if (len == 0)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "code", "must not be empty");
    return 0;
}

static const mmp_schema_t s_req_only_schema = { { "req", NULL } };

//  The STATS reply: the counters belong to the broker and may grow; only
//  the correlation string has a defined type. Members are walked without
//  decoding any, so the object stays intact for the cJSON tree.
static int
s_open_reply (mmp_pos_t *body, mmp_pos_t **req, mmp_error_t *err)
{
    *req = NULL;
    mmp_pos_t *p = mmp_space (body + 1);
    while (*p != '}') {
        char name [8];
        size_t len;
        p = mmp_name (p, name, sizeof name, &len);
        p = mmp_space (mmp_space (p) + 1);
        if (len == 3 && strcmp (name, "req") == 0) {
            if (*req)
                return mmp_fail_at (err, MMP_ERR_BAD_JSON, &mmp_top, "req", "field given twice");
            *req = p;
        }
        p = mmp_space (mmp_skip (p));
        if (*p == ',')
            p = mmp_space (p + 1);
    }
    return 0;
}

static int
s_stats (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (msg->direction == MMP_FROM_BROKER) {
        mmp_pos_t *req;
        return s_open_reply (body, &req, err) || s_req (req, msg, err)? -2: 0;
    }
    if (mmp_collect_top (body, hints, &s_req_only_schema, slot, &end, &mmp_top, err) || s_req (slot [0], msg, err))
        return -2;
    return 0;
}

static const mmp_schema_t s_deadletters_to_schema = { { "req", "limit", NULL } };
static const mmp_schema_t s_deadletters_from_schema = { { "req", "dead_letters", "total", NULL } };

static int
s_deadletters (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (msg->direction == MMP_TO_BROKER) {
        if (mmp_collect_top (body, hints, &s_deadletters_to_schema, slot, &end, &mmp_top, err)
        ||  s_req (slot [0], msg, err))
            return -2;
        if (slot [1] && mmp_read_int (slot [1], "limit", 1, S_MAX_DEAD_LETTERS, &msg->limit, &mmp_top, err))
            return -2;
        return 0;
    }
    if (mmp_collect_top (body, hints, &s_deadletters_from_schema, slot, &end, &mmp_top, err))
        return -2;
    if (!slot [1])
        return mmp_missing (err, &mmp_top, "dead_letters");
    if (!slot [2])
        return mmp_missing (err, &mmp_top, "total");
    size_t count;
    if (mmp_read_array (slot [1], "dead_letters", 0, S_MAX_DEAD_LETTERS, &count, &mmp_top, err))
        return -2;
    mmp_where_t where = { "dead_letters", 0, NULL };
    for (mmp_pos_t *item = mmp_first (slot [1]); item; item = mmp_next (item), where.index++)
        if (*item != '{')
            return mmp_fail_at (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a dead letter must be an object");
    //  mmp_msg_t has no field for the total: it is checked here and read
    //  from body by whoever prints it.
    int64_t total = 0;
    if (mmp_read_int (slot [2], "total", 0, MMP_MAX_EXACT, &total, &mmp_top, err))
        return -2;
    //  Decoded last: the cJSON tree is built from the original bytes
    return s_req (slot [0], msg, err);
}

static const mmp_schema_t s_replay_schema = { { "message_ids", "req", NULL } };

static int
s_replay (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_replay_schema, slot, &end, &mmp_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "message_ids");
    return mmp_read_uuids (slot [0], "message_ids", 1, MMP_MAX_IDS,
                    &msg->message_ids, &msg->message_id_count, err);
}

static const mmp_schema_t s_replayed_schema = { { "replayed", "unknown", "req", NULL } };

static int
s_replayed (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_replayed_schema, slot, &end, &mmp_top, err) || s_req (slot [2], msg, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "replayed");
    if (!slot [1])
        return mmp_missing (err, &mmp_top, "unknown");
    if (mmp_read_uuids (slot [0], "replayed", 0, MMP_MAX_IDS,
                 &msg->message_ids, &msg->message_id_count, err)
    ||  mmp_read_uuids (slot [1], "unknown", 0, MMP_MAX_IDS,
                 &msg->other_ids, &msg->other_id_count, err))
        return -2;
    return 0;
}

static const mmp_schema_t s_hello_schema = {
    { "credit", "subscription", "name", "features", NULL }
};

//  HELLO features: an array of at most MMP_MAX_FEATURES strings; names this
//  codec does not know are ignored (a newer worker may declare more).
static int
s_features (mmp_pos_t *p, unsigned *features, mmp_error_t *err)
{
    static const struct { const char *name; unsigned bit; } known [] = {
        { "in_doubt", MMP_FEATURE_IN_DOUBT },
        { "verify", MMP_FEATURE_VERIFY },
        { "publisher", MMP_FEATURE_PUBLISHER }
    };
    size_t count;
    if (mmp_read_array (p, "features", 0, MMP_MAX_FEATURES, &count, &mmp_top, err))
        return -2;
    unsigned seen = 0;
    for (mmp_pos_t *item = mmp_first (p), *next; item; item = next) {
        next = mmp_next (item);
        const char *text;
        if (mmp_read_text (item, "features", MMP_MAX_TEXT, &text, NULL, &mmp_top, err))
            return -2;
        for (size_t i = 0; i < sizeof known / sizeof known [0]; i++)
            if (strcmp (text, known [i].name) == 0)
                seen |= known [i].bit;
    }
    *features = seen;
    return 0;
}

static int
s_hello (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_hello_schema, slot, &end, &mmp_top, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "credit");
    if (mmp_read_int (slot [0], "credit", 0, MMP_MAX_CREDIT, &msg->credit, &mmp_top, err))
        return -2;
    if (slot [1] && mmp_read_text (slot [1], "subscription", MMP_MAX_TEXT, &msg->subscription, NULL, &mmp_top, err))
        return -2;
    if (slot [2] && mmp_read_text (slot [2], "name", MMP_MAX_TEXT, &msg->name, NULL, &mmp_top, err))
        return -2;
    if (slot [3] && s_features (slot [3], &msg->features, err))
        return -2;
    return 0;
}

static const mmp_schema_t s_welcome_schema = {
    { "ack_deadline_ms", "heartbeat_ms", "epoch", NULL }
};

static int
s_welcome (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_welcome_schema, slot, &end, &mmp_top, err))
        return -2;
    for (int i = 0; i < 3; i++)
        if (!slot [i])
            return mmp_missing (err, &mmp_top, s_welcome_schema.names [i]);
    if (mmp_read_int (slot [0], "ack_deadline_ms", 1, MMP_MAX_EXACT, &msg->ack_deadline_ms, &mmp_top, err)
    ||  mmp_read_int (slot [1], "heartbeat_ms", 1, MMP_MAX_EXACT, &msg->heartbeat_ms, &mmp_top, err)
    ||  mmp_read_int (slot [2], "epoch", 0, MMP_MAX_EXACT, &msg->epoch, &mmp_top, err))
        return -2;
    return 0;
}

static const mmp_schema_t s_deliver_schema = { { "deliveries", NULL } };
static const mmp_schema_t s_delivery_schema = {
    { "delivery_id", "attempt", "deadline_ms", "steps", "message", "in_doubt", "publisher", NULL }
};

static int
s_deliver (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_deliver_schema, slot, &end, &mmp_top, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "deliveries");
    if (*slot [0] != '[')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, "deliveries", "must be an array");
    size_t capacity = 0;
    mmp_where_t where = { "deliveries", 0, NULL };
    for (mmp_pos_t *item = mmp_first (slot [0]), *next; item; item = next, where.index++) {
        if (where.index == MMP_MAX_DELIVERIES)
            return mmp_fail_at (err, MMP_ERR_TOO_MANY, &mmp_top, "deliveries", "more than %d items",
                           MMP_MAX_DELIVERIES);
        if (s_grow ((void **) &msg->deliveries, where.index, &capacity, sizeof *msg->deliveries))
            return mmp_fail_at (err, MMP_ERR_TOO_LARGE, &mmp_top, "deliveries", "out of memory");
        mmp_delivery_t *delivery = &msg->deliveries [where.index];
        if (*item != '{')
            return mmp_fail_at (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a delivery must be an object");
        mmp_pos_t *field [MMP_MAX_FIELDS];
        delivery->in_doubt = false;
        if (mmp_collect (item, &s_delivery_schema, field, &next, &where, err))
            return -2;
        next = mmp_space (next);
        next = *next == ']'? NULL: mmp_space (next + 1);
        for (int i = 0; i < 5; i++)
            if (!field [i])
                return mmp_missing (err, &where, s_delivery_schema.names [i]);
        int64_t id = 0;
        if (mmp_read_int (field [0], "delivery_id", 1, MMP_MAX_EXACT, &id, &where, err)
        ||  mmp_read_int (field [1], "attempt", 1, MMP_MAX_EXACT, &delivery->attempt, &where, err)
        ||  mmp_read_int (field [2], "deadline_ms", 0, MMP_MAX_EXACT, &delivery->deadline_ms, &where, err)
        ||  mmp_read_steps (field [3], 0, &delivery->steps, &where, err))
            return -2;
        delivery->delivery_id = (uint64_t) id;
        delivery->publisher = NULL;
        if (field [6] && mmp_read_text (field [6], "publisher", MMP_MAX_TEXT, &delivery->publisher,
                                        NULL, &where, err))
            return -2;
        mmp_where_t inner = { "deliveries", where.index, "message" };
        mmp_pos_t *message_end;
        if (s_request (field [4], true, &delivery->message, &message_end, &inner, err))
            return -2;
        if (field [5]) {
            //  The scan pass validated the JSON: a literal starts with t or f
            if (*field [5] != 't' && *field [5] != 'f')
                return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &where, "in_doubt", "must be true or false");
            delivery->in_doubt = *field [5] == 't';
        }
    }
    if (where.index == 0)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "deliveries", "must not be empty");
    msg->delivery_count = where.index;
    return 0;
}

static const mmp_schema_t s_credit_schema = { { "credit", NULL } };

static int
s_credit (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, &s_credit_schema, slot, &end, &mmp_top, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "credit");
    return mmp_read_int (slot [0], "credit", 0, MMP_MAX_CREDIT, &msg->credit, &mmp_top, err);
}

//  EXTEND, ACK, NACK, PROGRESS: delivery_ids plus at most two extras.
static const mmp_schema_t s_extend_schema = { { "delivery_ids", "extension_ms", NULL } };
static const mmp_schema_t s_ack_schema = { { "delivery_ids", NULL } };
static const mmp_schema_t s_nack_schema = { { "delivery_ids", "delay_ms", "reason", "requeue", NULL } };
static const mmp_schema_t s_progress_schema = { { "delivery_ids", "steps", NULL } };

static int
s_id_command (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    const mmp_schema_t *schema =
        msg->command == MMP_EXTEND? &s_extend_schema:
        msg->command == MMP_NACK? &s_nack_schema:
        msg->command == MMP_PROGRESS? &s_progress_schema: &s_ack_schema;
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, schema, slot, &end, &mmp_top, err))
        return -2;
    if (!slot [0])
        return mmp_missing (err, &mmp_top, "delivery_ids");
    if (msg->command == MMP_PROGRESS && !slot [1])
        return mmp_missing (err, &mmp_top, "steps");
    if (mmp_read_ids (slot [0], "delivery_ids", 1, &msg->ids, &msg->id_count, err))
        return -2;
    switch (msg->command) {
        case MMP_EXTEND:
            if (slot [1] && mmp_read_int (slot [1], "extension_ms", 1, MMP_MAX_EXTENSION_MS,
                                   &msg->extension_ms, &mmp_top, err))
                return -2;
            break;
        case MMP_NACK:
            if (slot [1] && mmp_read_int (slot [1], "delay_ms", 0, MMP_MAX_DELAY_MS,
                                   &msg->delay_ms, &mmp_top, err))
                return -2;
            if (slot [2] && mmp_read_text (slot [2], "reason", MMP_MAX_TEXT, &msg->reason, NULL, &mmp_top, err))
                return -2;
            //  Pass 1 accepted the text: a value starting t or f is true or false
            if (slot [3]) {
                if (*slot [3] != 't' && *slot [3] != 'f')
                    return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, "requeue", "must be true or false");
                msg->requeue = *slot [3] == 't';
            }
            break;
        case MMP_PROGRESS:
            if (mmp_read_steps (slot [1], 1, &msg->steps, &mmp_top, err))
                return -2;
            break;
        default:
            break;
    }
    return 0;
}

//  EXTENDED, ACKED, NACKED, PROGRESSED: ok, stale, unknown (+ deadline_ms).
static const mmp_schema_t s_id_reply_schema = { { "ok", "stale", "unknown", "deadline_ms", NULL } };
static const mmp_schema_t s_id_reply_short_schema = { { "ok", "stale", "unknown", NULL } };

static int
s_id_reply (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    bool extended = msg->command == MMP_EXTENDED;
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (mmp_collect_top (body, hints, extended? &s_id_reply_schema: &s_id_reply_short_schema,
                   slot, &end, &mmp_top, err))
        return -2;
    for (int i = 0; i < (extended? 4: 3); i++)
        if (!slot [i])
            return mmp_missing (err, &mmp_top, s_id_reply_schema.names [i]);
    if (mmp_read_ids (slot [0], "ok", 0, &msg->ids, &msg->id_count, err)
    ||  mmp_read_ids (slot [1], "stale", 0, &msg->stale, &msg->stale_count, err)
    ||  mmp_read_ids (slot [2], "unknown", 0, &msg->unknown, &msg->unknown_count, err))
        return -2;
    if (extended
    &&  mmp_read_int (slot [3], "deadline_ms", 0, MMP_MAX_EXACT, &msg->deadline_ms, &mmp_top, err))
        return -2;
    return 0;
}

//  The restart-policy commands (docs/POLICY.md). To the broker: PAUSE
//  {group | all:true, reason?}, RESUME {group | all:true}, GROUPS {},
//  INFLIGHT {limit?}, WORKERS {}, RELOAD {}, each with req?. From it:
//  open-ended replies of the same names, like STATS.
static const mmp_schema_t s_pause_schema = { { "req", "group", "all", "reason", NULL } };
static const mmp_schema_t s_resume_schema = { { "req", "group", "all", NULL } };
static const mmp_schema_t s_inflight_schema = { { "req", "limit", NULL } };

//  The most leases an INFLIGHT request may ask for.
#define S_MAX_INFLIGHT  100000

static int
s_policy_command (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    if (msg->direction == MMP_FROM_BROKER) {
        mmp_pos_t *req;
        return s_open_reply (body, &req, err) || s_req (req, msg, err)? -2: 0;
    }
    const mmp_schema_t *schema =
        msg->command == MMP_PAUSE? &s_pause_schema:
        msg->command == MMP_RESUME? &s_resume_schema:
        msg->command == MMP_INFLIGHT? &s_inflight_schema: &s_req_only_schema;
    if (mmp_collect_top (body, hints, schema, slot, &end, &mmp_top, err) || s_req (slot [0], msg, err))
        return -2;
    if (msg->command == MMP_INFLIGHT)
        return slot [1] && mmp_read_int (slot [1], "limit", 1, S_MAX_INFLIGHT, &msg->limit,
                                         &mmp_top, err)? -2: 0;
    if (msg->command != MMP_PAUSE && msg->command != MMP_RESUME)
        return 0;
    if (slot [2]) {
        //  The scan passed the body: a value starting with t or f is a boolean
        if (*slot [2] != 't' && *slot [2] != 'f')
            return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, "all", "must be a boolean");
        if (*slot [2] == 'f')
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "all",
                                "must be true (or left out, with a group)");
        msg->all = true;
    }
    if (slot [1]) {
        size_t len;
        if (msg->all)
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "group",
                                "give a group or all, not both");
        if (mmp_read_text (slot [1], "group", MMP_MAX_TEXT, &msg->group, &len, &mmp_top, err))
            return -2;
        if (len == 0)
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, "group", "must not be empty");
    }
    else
    if (!msg->all)
        return mmp_missing (err, &mmp_top, "group");
    if (msg->command == MMP_PAUSE && slot [3]
    &&  mmp_read_text (slot [3], "reason", MMP_MAX_TEXT, &msg->reason, NULL, &mmp_top, err))
        return -2;
    return 0;
}

static const mmp_schema_t s_empty_schema = { { NULL } };

static int
s_empty (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    (void) msg;
    mmp_pos_t *slot [MMP_MAX_FIELDS], *end;
    return mmp_collect_top (body, hints, &s_empty_schema, slot, &end, &mmp_top, err);
}

typedef int (s_body_fn) (mmp_pos_t *body, const mmp_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err);

static s_body_fn *const s_body_decoders [MMP_COMMAND_COUNT] = {
    [MMP_PUBLISH]     = s_publish,
    [MMP_PUBACK]      = s_puback,
    [MMP_ERROR]       = s_error,
    [MMP_STATS]       = s_stats,
    [MMP_DEADLETTERS] = s_deadletters,
    [MMP_REPLAY]      = s_replay,
    [MMP_REPLAYED]    = s_replayed,
    [MMP_HELLO]       = s_hello,
    [MMP_WELCOME]     = s_welcome,
    [MMP_DELIVER]     = s_deliver,
    [MMP_CREDIT]      = s_credit,
    [MMP_EXTEND]      = s_id_command,
    [MMP_EXTENDED]    = s_id_reply,
    [MMP_ACK]         = s_id_command,
    [MMP_ACKED]       = s_id_reply,
    [MMP_NACK]        = s_id_command,
    [MMP_NACKED]      = s_id_reply,
    [MMP_PROGRESS]    = s_id_command,
    [MMP_PROGRESSED]  = s_id_reply,
    [MMP_HEARTBEAT]   = s_empty,
    [MMP_BYE]         = s_empty,
    [MMP_PAUSE]       = s_policy_command,
    [MMP_RESUME]      = s_policy_command,
    [MMP_GROUPS]      = s_policy_command,
    [MMP_INFLIGHT]    = s_policy_command,
    [MMP_WORKERS]     = s_policy_command,
    [MMP_RELOAD]      = s_policy_command,
};

static int
s_find_command (const void *command, size_t size, mmp_command_t *found)
{
    for (int i = 0; i < MMP_COMMAND_COUNT; i++) {
        const char *name = s_command_names [i];
        if (strlen (name) == size && memcmp (name, command, size) == 0) {
            *found = (mmp_command_t) i;
            return 0;
        }
    }
    return -1;
}

//  After a body that is valid JSON failed the schema walk: find its
//  top-level "req" in a fresh copy (the walk unescaped strings in raw),
//  so the ERROR can carry it. Only a string within its limit is kept.
static void
s_salvage_req (unsigned char *raw, const void *body, size_t body_size, size_t offset,
               mmp_error_t *err)
{
    memcpy (raw, body, body_size);
    mmp_pos_t *req = NULL;
    mmp_error_t spare;
    if (s_open_reply (raw + offset, &req, &spare) || !req || *req != '"')
        return;
    mmp_pos_t *end;
    size_t len = mmp_unescape (req, req + 1, SIZE_MAX, &end);
    if (len <= MMP_MAX_TEXT)
        memcpy (err->req, req + 1, len + 1);
}


int
mmp_decode (const void *signature, size_t signature_size,
            const void *command, size_t command_size,
            const void *body, size_t body_size,
            mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err)
{
    assert (msg);
    assert (!msg->raw && !msg->body && !msg->messages && !msg->deliveries && !msg->ids);
    mmp_error_t spare;
    if (!err)
        err = &spare;
    err->code = NULL;
    err->reason [0] = 0;
    err->req [0] = 0;

    if (!signature || signature_size != 4 || memcmp (signature, MMP_SIGNATURE, 4) != 0) {
        if (signature && signature_size >= 3 && memcmp (signature, "MMP", 3) == 0)
            return mmp_fail_at (err, MMP_ERR_BAD_VERSION, NULL, NULL,
                           "this peer speaks only %s", MMP_SIGNATURE);
        return mmp_fail_at (err, MMP_ERR_BAD_SIGNATURE, NULL, NULL,
                       "first frame is not %s", MMP_SIGNATURE);
    }
    mmp_command_t found;
    if (!command || s_find_command (command, command_size, &found) != 0) {
        char shown [24];
        size_t shown_size = command? (command_size < 16? command_size: 16): 0;
        for (size_t i = 0; i < shown_size; i++) {
            unsigned char c = ((const unsigned char *) command) [i];
            shown [i] = (c >= 0x20 && c < 0x7f)? (char) c: '?';
        }
        shown [shown_size] = 0;
        return mmp_fail_at (err, MMP_ERR_UNKNOWN_COMMAND, NULL, NULL,
                       "no command \"%s%s\"", shown, command_size > 16? "...": "");
    }
    unsigned way = direction == MMP_TO_BROKER? S_TO: S_FROM;
    if (!(s_command_ways [found] & way))
        return mmp_fail_at (err, MMP_ERR_UNKNOWN_COMMAND, NULL, NULL, "%s is not sent %s the broker",
                       s_command_names [found], direction == MMP_TO_BROKER? "to": "by");
    if (body_size > MMP_MAX_BODY)
        return mmp_fail_at (err, MMP_ERR_TOO_LARGE, NULL, NULL,
                       "body is %zu bytes, over %d", body_size, MMP_MAX_BODY);
    if (!body || body_size == 0)
        return mmp_fail_at (err, MMP_ERR_BAD_JSON, NULL, NULL, "body is empty");
    mmp_hints_t hints;
    hints.count = 0;
    if (mmp_scan (body, body_size, &hints, err))
        return -2;
    //  After the scan the body holds one value: white space, then it
    const unsigned char *first = body;
    while (*first == ' ' || *first == '\n' || *first == '\r' || *first == '\t')
        first++;
    if (*first != '{')
        return mmp_fail_at (err, MMP_ERR_NOT_OBJECT, NULL, NULL, "body must be a JSON object");

    //  The message's own copy: strings are unescaped in it and attribute
    //  spans point into it, so it lives as long as the message.
    unsigned char *raw = malloc (body_size + MMP_PADDING);
    if (!raw)
        return mmp_fail_at (err, MMP_ERR_TOO_LARGE, NULL, NULL, "out of memory");
    memcpy (raw, body, body_size);
    memset (raw + body_size, 0, MMP_PADDING);
    msg->raw = (char *) raw;
    hints.base = raw;
    msg->raw_size = body_size;
    msg->command = found;
    msg->direction = direction;
    if (direction == MMP_FROM_BROKER && (found == MMP_PUBACK || found == MMP_STATS
                                     ||  found == MMP_DEADLETTERS || found == MMP_REPLAYED
                                     ||  (found >= MMP_PAUSE && found <= MMP_RELOAD))) {
        //  Frontend replies, read by tools, some open-ended: also a tree
        msg->body = cJSON_ParseWithLength (body, body_size);
        if (!msg->body) {
            mmp_msg_reset (msg);
            return mmp_fail_at (err, MMP_ERR_TOO_LARGE, NULL, NULL, "out of memory");
        }
    }
    size_t offset = (size_t) (first - (const unsigned char *) body);
    if (s_body_decoders [found] (raw + offset, &hints, msg, err)) {
        if (direction == MMP_TO_BROKER)
            s_salvage_req (raw, body, body_size, offset, err);
        mmp_msg_reset (msg);
        return -2;
    }
    return 0;
}
