/*  mmp: the MMP/1 codec. See mmp.h for the API and PROTOCOL.md for the
    wire format this file implements.

    Decoding is done in passes that each refuse as early and as cheaply as
    they can: frames and signature, command for the direction, body size,
    one raw byte scan (nesting depth, control characters and \u0000 in
    strings, so neither a 100000-deep array nor a string that C would
    truncate ever reaches cJSON), then cJSON, then one walk over each
    object's members against the command's short fixed field list.

    Ownership: mmp_msg_t owns body (the cJSON tree) and the arrays it fills
    (one malloc each); every string it points to lives inside body. No
    allocation happens per field or per request: a 500-request PUBLISH costs
    the cJSON tree plus one array.
*/
#include "mmp.h"
#include "mdl_util.h"

#include <assert.h>
#include <errno.h>
#include <float.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

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
};

//  Largest integer a JSON double carries exactly; the bound for every
//  integer field that has no tighter limit of its own.
#define S_MAX_EXACT     ((int64_t) MMP_MAX_DELIVERY_ID)

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
//  Error reporting. A location is built only when something failed, so the
//  happy path never formats text.

typedef struct {
    const char *array;          //  Enclosing array field, e.g. "messages", or NULL
    size_t index;               //  Item index in that array
    const char *sub;            //  Object field inside the item, e.g. "message", or NULL
} s_where_t;

static const s_where_t s_top = { NULL, 0, NULL };

static int
s_fail (mmp_error_t *err, const char *code, const s_where_t *where,
        const char *field, const char *format, ...)
    __attribute__ ((format (printf, 5, 6)));

static int
s_fail (mmp_error_t *err, const char *code, const s_where_t *where,
        const char *field, const char *format, ...)
{
    err->code = code;
    char path [128] = "";
    size_t used = 0;
    if (where && where->array)
        used += (size_t) snprintf (path + used, sizeof path - used, "%s[%zu].",
                                   where->array, where->index);
    if (where && where->sub && used < sizeof path)
        used += (size_t) snprintf (path + used, sizeof path - used, "%s.", where->sub);
    if (field && used < sizeof path)
        used += (size_t) snprintf (path + used, sizeof path - used, "%s", field);
    else
    if (used > 0 && used < sizeof path)
        path [used - 1] = 0;    //  Drop the trailing dot of an item path

    char text [160];
    va_list args;
    va_start (args, format);
    vsnprintf (text, sizeof text, format, args);
    va_end (args);
    if (path [0])
        snprintf (err->reason, sizeof err->reason, "%.90s: %.100s", path, text);
    else
        snprintf (err->reason, sizeof err->reason, "%.150s", text);
    return -2;
}


//  --------------------------------------------------------------------------
//  Field lists. Each object is walked once; every member must match one of
//  at most a handful of names (a fixed list, so the scan is O(members)).

#define S_MAX_FIELDS 8

typedef struct {
    const char *names [S_MAX_FIELDS];   //  Field names, NULL-terminated
} s_schema_t;

//  Walk object's members into slots [] by name. A member not in the schema
//  is unknown_field; a name given twice is bad_json (cJSON keeps both and
//  a peer must not be able to smuggle a second value past us).
static int
s_collect (const cJSON *object, const s_schema_t *schema, const cJSON **slots,
           const s_where_t *where, mmp_error_t *err)
{
    for (int i = 0; i < S_MAX_FIELDS; i++)
        slots [i] = NULL;
    for (const cJSON *child = object->child; child; child = child->next) {
        const char *key = child->string;
        int found = -1;
        if (key) {
            for (int i = 0; i < S_MAX_FIELDS && schema->names [i]; i++)
                if (key [0] == schema->names [i][0] && strcmp (key, schema->names [i]) == 0) {
                    found = i;
                    break;
                }
        }
        if (found < 0) {
            char shown [48];
            snprintf (shown, sizeof shown, "%s", key ? key : "");
            return s_fail (err, MMP_ERR_UNKNOWN_FIELD, where, shown, "field is not defined here");
        }
        if (slots [found])
            return s_fail (err, MMP_ERR_BAD_JSON, where, schema->names [found], "field given twice");
        slots [found] = child;
    }
    return 0;
}

static int
s_missing (mmp_error_t *err, const s_where_t *where, const char *field)
{
    return s_fail (err, MMP_ERR_MISSING_FIELD, where, field, "required field is missing");
}

//  An integer in [min, max]. A non-number is bad_type; a fraction or a
//  number out of range (1.5, -1, 1e300) is bad_value.
static int
s_int (const cJSON *item, const char *field, int64_t min, int64_t max,
       int64_t *value, const s_where_t *where, mmp_error_t *err)
{
    if (!cJSON_IsNumber (item))
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be an integer");
    double number = item->valuedouble;
    if (!(number >= (double) min && number <= (double) max))
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field,
                       "must be in %lld..%lld", (long long) min, (long long) max);
    int64_t whole = (int64_t) number;
    if ((double) whole != number)
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field, "must be a whole number");
    *value = whole;
    return 0;
}

//  A string of at most max bytes; *len gets its length.
static int
s_text (const cJSON *item, const char *field, size_t max, const char **value,
        size_t *len, const s_where_t *where, mmp_error_t *err)
{
    if (!cJSON_IsString (item) || !item->valuestring)
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be a string");
    size_t length = strlen (item->valuestring);
    if (length > max)
        return s_fail (err, MMP_ERR_TOO_LONG, where, field, "longer than %zu bytes", max);
    *value = item->valuestring;
    if (len)
        *len = length;
    return 0;
}

//  An array with min..max items; *count gets its size.
static int
s_array (const cJSON *item, const char *field, size_t min, size_t max,
         size_t *count, const s_where_t *where, mmp_error_t *err)
{
    if (!cJSON_IsArray (item))
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be an array");
    size_t size = 0;
    for (const cJSON *child = item->child; child; child = child->next)
        if (++size > max)
            return s_fail (err, MMP_ERR_TOO_MANY, where, field, "more than %zu items", max);
    if (size < min)
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field, "must not be empty");
    *count = size;
    return 0;
}

//  An array of delivery ids into a fresh array (NULL when empty).
static int
s_ids (const cJSON *item, const char *field, size_t min, uint64_t **ids,
       size_t *count, mmp_error_t *err)
{
    size_t size;
    if (s_array (item, field, min, MMP_MAX_IDS, &size, &s_top, err))
        return -2;
    *count = 0;
    if (size == 0)
        return 0;
    uint64_t *array = malloc (size * sizeof *array);
    if (!array)
        return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, field, "out of memory");
    s_where_t where = { field, 0, NULL };
    size_t index = 0;
    for (const cJSON *child = item->child; child; child = child->next, index++) {
        int64_t value = 0;
        where.index = index;
        if (s_int (child, NULL, 1, S_MAX_EXACT, &value, &where, err)) {
            free (array);
            return -2;
        }
        array [index] = (uint64_t) value;
    }
    *ids = array;
    *count = size;
    return 0;
}

//  An array of uuid strings into a fresh array of pointers into the body.
static int
s_uuids (const cJSON *item, const char *field, size_t min, size_t max,
         const char ***ids, size_t *count, mmp_error_t *err)
{
    size_t size;
    if (s_array (item, field, min, max, &size, &s_top, err))
        return -2;
    *count = 0;
    if (size == 0)
        return 0;
    const char **array = malloc (size * sizeof *array);
    if (!array)
        return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, field, "out of memory");
    s_where_t where = { field, 0, NULL };
    size_t index = 0;
    for (const cJSON *child = item->child; child; child = child->next, index++) {
        where.index = index;
        if (!cJSON_IsString (child) || !child->valuestring) {
            free (array);
            return s_fail (err, MMP_ERR_BAD_TYPE, &where, NULL, "must be a uuid string");
        }
        if (!mdl_uuid_valid (child->valuestring, strlen (child->valuestring))) {
            free (array);
            return s_fail (err, MMP_ERR_BAD_MESSAGE_ID, &where, NULL, "not a canonical uuid");
        }
        array [index] = child->valuestring;
    }
    *ids = (const char **) array;
    *count = size;
    return 0;
}

//  Steps: ["save"|"restart"], each at most once, min..2 of them.
static int
s_steps (const cJSON *item, size_t min, unsigned *steps,
         const s_where_t *where, mmp_error_t *err)
{
    if (!cJSON_IsArray (item))
        return s_fail (err, MMP_ERR_BAD_TYPE, where, "steps", "must be an array");
    unsigned seen = 0;
    size_t size = 0;
    for (const cJSON *child = item->child; child; child = child->next) {
        if (++size > 2)
            return s_fail (err, MMP_ERR_TOO_MANY, where, "steps", "more than 2 items");
        if (!cJSON_IsString (child) || !child->valuestring)
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "steps", "items must be strings");
        unsigned step;
        if (strcmp (child->valuestring, "save") == 0)
            step = MMP_STEP_SAVE;
        else
        if (strcmp (child->valuestring, "restart") == 0)
            step = MMP_STEP_RESTART;
        else
            return s_fail (err, MMP_ERR_BAD_VALUE, where, "steps",
                           "items must be \"save\" or \"restart\"");
        if (seen & step)
            return s_fail (err, MMP_ERR_BAD_VALUE, where, "steps", "a step is listed twice");
        seen |= step;
    }
    if (size < min)
        return s_fail (err, MMP_ERR_BAD_VALUE, where, "steps", "must not be empty");
    *steps = seen;
    return 0;
}

//  The optional "req" correlation string of frontend commands.
static int
s_req (const cJSON *item, mmp_msg_t *msg, mmp_error_t *err)
{
    if (!item)
        return 0;
    return s_text (item, "req", MMP_MAX_TEXT, &msg->req, NULL, &s_top, err);
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


//  --------------------------------------------------------------------------
//  The size cJSON_PrintUnformatted would give item, counted without
//  printing: cJSON prints every non-integer number with sprintf and checks
//  it with sscanf, which costs more than parsing the whole request. The
//  count follows cJSON's printer exactly (numbers as "%1.15g", or "%1.17g"
//  when that does not read back; strings escaped as cJSON escapes them).
//  Stops counting once over budget. Recursion is bounded by the raw scan's
//  depth limit.
//
//  Printing a number to learn its size is itself the expensive part (a
//  19-digit timestamp goes through both formats and a strtod), so the
//  check first counts every number at the longest text cJSON can print
//  for a double; only when that bound goes over budget is the exact count
//  made. The verdict is the same, since no exact size is above the bound.

//  Longest "%1.17g" of a double: "-1.2345678901234567e-308"
#define S_NUMBER_SIZE_MAX 24

static size_t
s_number_size (double number, bool exact)
{
    if (!exact)
        return S_NUMBER_SIZE_MAX;
    if (isnan (number) || isinf (number))
        return 4;                   //  "null"
    if (number == floor (number) && fabs (number) < 1e15) {
        //  "%1.15g" of an integer below 1e15 is its plain digits
        size_t size = signbit (number)? 2: 1;
        for (double rest = fabs (number); rest >= 10; rest = floor (rest / 10))
            size++;
        return size;
    }
    char text [32];
    int size = snprintf (text, sizeof text, "%1.15g", number);
    double back = strtod (text, NULL);
    double larger = fabs (back) > fabs (number)? fabs (back): fabs (number);
    if (!(fabs (back - number) <= larger * DBL_EPSILON))
        size = snprintf (text, sizeof text, "%1.17g", number);
    return size > 0? (size_t) size: 0;
}

static size_t
s_string_size (const char *text)
{
    size_t size = 2;
    if (!text)
        return size;
    for (const unsigned char *cursor = (const unsigned char *) text; *cursor; cursor++) {
        unsigned char c = *cursor;
        if (c == '"' || c == '\\' || c == '\b' || c == '\f' || c == '\n' || c == '\r' || c == '\t')
            size += 2;
        else
        if (c < 32)
            size += 6;
        else
            size += 1;
    }
    return size;
}

static size_t
s_printed_size (const cJSON *item, size_t budget, bool exact)
{
    if (cJSON_IsString (item))
        return s_string_size (item->valuestring);
    if (cJSON_IsNumber (item))
        return s_number_size (item->valuedouble, exact);
    if (cJSON_IsTrue (item) || cJSON_IsNull (item))
        return 4;
    if (cJSON_IsFalse (item))
        return 5;
    if (cJSON_IsArray (item) || cJSON_IsObject (item)) {
        bool object = cJSON_IsObject (item);
        size_t size = 2;            //  Brackets
        for (const cJSON *child = item->child; child; child = child->next) {
            if (child != item->child)
                size++;             //  Comma
            if (object)
                size += s_string_size (child->string) + 1;
            size += s_printed_size (child, budget, exact);
            if (size > budget)
                return size;
        }
        return size;
    }
    return budget + 1;              //  Raw or invalid: nothing a parse makes
}


//  --------------------------------------------------------------------------
//  A restart request: PUBLISH messages [i], DELIVER deliveries [i].message.

static const s_schema_t s_request_schema = {
    { "message_id", "instance_name", "hostname", "attributes", NULL }
};

static int
s_request (const cJSON *item, bool delivered, mmp_request_t *request,
           const s_where_t *where, mmp_error_t *err)
{
    if (!cJSON_IsObject (item))
        return s_fail (err, MMP_ERR_NOT_OBJECT, where, NULL, "a request must be an object");
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (item, &s_request_schema, slot, where, err))
        return -2;
    memset (request, 0, sizeof *request);
    size_t len;

    if (slot [0]) {
        if (!cJSON_IsString (slot [0]) || !slot [0]->valuestring)
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "message_id", "must be a uuid string");
        if (!mdl_uuid_valid (slot [0]->valuestring, strlen (slot [0]->valuestring)))
            return s_fail (err, MMP_ERR_BAD_MESSAGE_ID, where, "message_id", "not a canonical uuid");
        request->message_id = slot [0]->valuestring;
    }
    else
    if (delivered)
        return s_missing (err, where, "message_id");

    if (!slot [1])
        return s_missing (err, where, "instance_name");
    if (!cJSON_IsString (slot [1]) || !slot [1]->valuestring)
        return s_fail (err, MMP_ERR_BAD_TYPE, where, "instance_name", "must be a string");
    len = strlen (slot [1]->valuestring);
    if (!mmp_valid_instance_name (slot [1]->valuestring, len))
        return s_fail (err, MMP_ERR_BAD_INSTANCE_NAME, where, "instance_name",
                       "not an RFC 1123 label (1..63 of A-Z a-z 0-9 -, no '-' at either end)");
    request->instance_name = slot [1]->valuestring;

    if (slot [2]) {
        if (!cJSON_IsString (slot [2]) || !slot [2]->valuestring)
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "hostname", "must be a string");
        len = strlen (slot [2]->valuestring);
        if (!mmp_valid_hostname (slot [2]->valuestring, len))
            return s_fail (err, MMP_ERR_BAD_HOSTNAME, where, "hostname",
                           "not a DNS name (1..253 bytes of RFC 1123 labels, no trailing dot)");
        request->hostname = slot [2]->valuestring;
    }
    else
    if (delivered)
        return s_missing (err, where, "hostname");

    if (slot [3]) {
        if (!cJSON_IsObject (slot [3]))
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "attributes", "must be an object");
        if (s_printed_size (slot [3], MMP_MAX_ATTRIBUTES, false) > MMP_MAX_ATTRIBUTES
        &&  s_printed_size (slot [3], MMP_MAX_ATTRIBUTES, true) > MMP_MAX_ATTRIBUTES)
            return s_fail (err, MMP_ERR_TOO_LARGE, where, "attributes",
                           "printed size over %d bytes", MMP_MAX_ATTRIBUTES);
        request->attributes = (cJSON *) slot [3];
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Per-command bodies. Each gets the top-level object and fills msg; on
//  failure it returns -2 with err set and the caller resets msg.

static const s_schema_t s_publish_schema = { { "messages", "req", NULL } };

static int
s_publish (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_publish_schema, slot, &s_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "messages");
    size_t count;
    if (s_array (slot [0], "messages", 1, MMP_MAX_MESSAGES, &count, &s_top, err))
        return -2;
    msg->messages = malloc (count * sizeof *msg->messages);
    if (!msg->messages)
        return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, "messages", "out of memory");
    s_where_t where = { "messages", 0, NULL };
    for (const cJSON *child = slot [0]->child; child; child = child->next, where.index++)
        if (s_request (child, false, &msg->messages [where.index], &where, err))
            return -2;
    msg->message_count = count;
    return 0;
}

static const s_schema_t s_puback_schema = {
    { "message_ids", "duplicates", "durability", "req", NULL }
};

static int
s_puback (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_puback_schema, slot, &s_top, err) || s_req (slot [3], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "message_ids");
    if (!slot [1])
        return s_missing (err, &s_top, "duplicates");
    if (!slot [2])
        return s_missing (err, &s_top, "durability");
    if (s_uuids (slot [0], "message_ids", 1, MMP_MAX_MESSAGES,
                 &msg->message_ids, &msg->message_id_count, err)
    ||  s_uuids (slot [1], "duplicates", 0, MMP_MAX_MESSAGES,
                 &msg->other_ids, &msg->other_id_count, err)
    ||  s_text (slot [2], "durability", MMP_MAX_TEXT, &msg->durability, NULL, &s_top, err))
        return -2;
    const char *mode = msg->durability;
    if (strcmp (mode, "memory") && strcmp (mode, "none")
    &&  strcmp (mode, "batch") && strcmp (mode, "sync"))
        return s_fail (err, MMP_ERR_BAD_VALUE, &s_top, "durability",
                       "must be \"memory\", \"none\", \"batch\" or \"sync\"");
    return 0;
}

static const s_schema_t s_error_schema = { { "code", "reason", "req", NULL } };

static int
s_error (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_error_schema, slot, &s_top, err) || s_req (slot [2], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "code");
    if (!slot [1])
        return s_missing (err, &s_top, "reason");
    size_t len;
    if (s_text (slot [0], "code", MMP_MAX_TEXT, &msg->code, &len, &s_top, err)
    ||  s_text (slot [1], "reason", MMP_MAX_TEXT, &msg->reason, NULL, &s_top, err))
        return -2;
    if (len == 0)
        return s_fail (err, MMP_ERR_BAD_VALUE, &s_top, "code", "must not be empty");
    return 0;
}

static const s_schema_t s_req_only_schema = { { "req", NULL } };

static int
s_stats (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    if (msg->direction == MMP_FROM_BROKER) {
        //  The reply's counters belong to the broker and may grow; only the
        //  correlation string has a defined type.
        const cJSON *req = NULL;
        for (const cJSON *child = body->child; child; child = child->next)
            if (child->string && strcmp (child->string, "req") == 0) {
                if (req)
                    return s_fail (err, MMP_ERR_BAD_JSON, &s_top, "req", "field given twice");
                req = child;
            }
        return s_req (req, msg, err);
    }
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_req_only_schema, slot, &s_top, err) || s_req (slot [0], msg, err))
        return -2;
    return 0;
}

static const s_schema_t s_deadletters_to_schema = { { "req", "limit", NULL } };
static const s_schema_t s_deadletters_from_schema = { { "req", "dead_letters", "total", NULL } };

static int
s_deadletters (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (msg->direction == MMP_TO_BROKER) {
        if (s_collect (body, &s_deadletters_to_schema, slot, &s_top, err)
        ||  s_req (slot [0], msg, err))
            return -2;
        if (slot [1] && s_int (slot [1], "limit", 1, S_MAX_DEAD_LETTERS, &msg->limit, &s_top, err))
            return -2;
        return 0;
    }
    if (s_collect (body, &s_deadletters_from_schema, slot, &s_top, err)
    ||  s_req (slot [0], msg, err))
        return -2;
    if (!slot [1])
        return s_missing (err, &s_top, "dead_letters");
    if (!slot [2])
        return s_missing (err, &s_top, "total");
    size_t count;
    if (s_array (slot [1], "dead_letters", 0, S_MAX_DEAD_LETTERS, &count, &s_top, err))
        return -2;
    s_where_t where = { "dead_letters", 0, NULL };
    for (const cJSON *child = slot [1]->child; child; child = child->next, where.index++)
        if (!cJSON_IsObject (child))
            return s_fail (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a dead letter must be an object");
    //  mmp_msg_t has no field for the total: it is checked here and read
    //  from body by whoever prints it.
    int64_t total = 0;
    return s_int (slot [2], "total", 0, S_MAX_EXACT, &total, &s_top, err);
}

static const s_schema_t s_replay_schema = { { "message_ids", "req", NULL } };

static int
s_replay (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_replay_schema, slot, &s_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "message_ids");
    return s_uuids (slot [0], "message_ids", 1, MMP_MAX_IDS,
                    &msg->message_ids, &msg->message_id_count, err);
}

static const s_schema_t s_replayed_schema = { { "replayed", "unknown", "req", NULL } };

static int
s_replayed (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_replayed_schema, slot, &s_top, err) || s_req (slot [2], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "replayed");
    if (!slot [1])
        return s_missing (err, &s_top, "unknown");
    if (s_uuids (slot [0], "replayed", 0, MMP_MAX_IDS,
                 &msg->message_ids, &msg->message_id_count, err)
    ||  s_uuids (slot [1], "unknown", 0, MMP_MAX_IDS,
                 &msg->other_ids, &msg->other_id_count, err))
        return -2;
    return 0;
}

static const s_schema_t s_hello_schema = { { "credit", "subscription", "name", NULL } };

static int
s_hello (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_hello_schema, slot, &s_top, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "credit");
    if (s_int (slot [0], "credit", 0, MMP_MAX_CREDIT, &msg->credit, &s_top, err))
        return -2;
    if (slot [1] && s_text (slot [1], "subscription", MMP_MAX_TEXT, &msg->subscription, NULL, &s_top, err))
        return -2;
    if (slot [2] && s_text (slot [2], "name", MMP_MAX_TEXT, &msg->name, NULL, &s_top, err))
        return -2;
    return 0;
}

static const s_schema_t s_welcome_schema = {
    { "ack_deadline_ms", "heartbeat_ms", "epoch", NULL }
};

static int
s_welcome (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_welcome_schema, slot, &s_top, err))
        return -2;
    for (int i = 0; i < 3; i++)
        if (!slot [i])
            return s_missing (err, &s_top, s_welcome_schema.names [i]);
    if (s_int (slot [0], "ack_deadline_ms", 1, S_MAX_EXACT, &msg->ack_deadline_ms, &s_top, err)
    ||  s_int (slot [1], "heartbeat_ms", 1, S_MAX_EXACT, &msg->heartbeat_ms, &s_top, err)
    ||  s_int (slot [2], "epoch", 0, S_MAX_EXACT, &msg->epoch, &s_top, err))
        return -2;
    return 0;
}

static const s_schema_t s_deliver_schema = { { "deliveries", NULL } };
static const s_schema_t s_delivery_schema = {
    { "delivery_id", "attempt", "deadline_ms", "steps", "message", NULL }
};

static int
s_deliver (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_deliver_schema, slot, &s_top, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "deliveries");
    size_t count;
    if (s_array (slot [0], "deliveries", 1, MMP_MAX_DELIVERIES, &count, &s_top, err))
        return -2;
    msg->deliveries = malloc (count * sizeof *msg->deliveries);
    if (!msg->deliveries)
        return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, "deliveries", "out of memory");
    s_where_t where = { "deliveries", 0, NULL };
    for (const cJSON *child = slot [0]->child; child; child = child->next, where.index++) {
        mmp_delivery_t *delivery = &msg->deliveries [where.index];
        if (!cJSON_IsObject (child))
            return s_fail (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a delivery must be an object");
        const cJSON *field [S_MAX_FIELDS];
        if (s_collect (child, &s_delivery_schema, field, &where, err))
            return -2;
        for (int i = 0; i < 5; i++)
            if (!field [i])
                return s_missing (err, &where, s_delivery_schema.names [i]);
        int64_t id = 0;
        if (s_int (field [0], "delivery_id", 1, S_MAX_EXACT, &id, &where, err)
        ||  s_int (field [1], "attempt", 1, S_MAX_EXACT, &delivery->attempt, &where, err)
        ||  s_int (field [2], "deadline_ms", 0, S_MAX_EXACT, &delivery->deadline_ms, &where, err)
        ||  s_steps (field [3], 0, &delivery->steps, &where, err))
            return -2;
        delivery->delivery_id = (uint64_t) id;
        s_where_t inner = { "deliveries", where.index, "message" };
        if (s_request (field [4], true, &delivery->message, &inner, err))
            return -2;
    }
    msg->delivery_count = count;
    return 0;
}

static const s_schema_t s_credit_schema = { { "credit", NULL } };

static int
s_credit (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, &s_credit_schema, slot, &s_top, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "credit");
    return s_int (slot [0], "credit", 0, MMP_MAX_CREDIT, &msg->credit, &s_top, err);
}

//  EXTEND, ACK, NACK, PROGRESS: delivery_ids plus at most two extras.
static const s_schema_t s_extend_schema = { { "delivery_ids", "extension_ms", NULL } };
static const s_schema_t s_ack_schema = { { "delivery_ids", NULL } };
static const s_schema_t s_nack_schema = { { "delivery_ids", "delay_ms", "reason", NULL } };
static const s_schema_t s_progress_schema = { { "delivery_ids", "steps", NULL } };

static int
s_id_command (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const s_schema_t *schema =
        msg->command == MMP_EXTEND? &s_extend_schema:
        msg->command == MMP_NACK? &s_nack_schema:
        msg->command == MMP_PROGRESS? &s_progress_schema: &s_ack_schema;
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, schema, slot, &s_top, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "delivery_ids");
    if (msg->command == MMP_PROGRESS && !slot [1])
        return s_missing (err, &s_top, "steps");
    if (s_ids (slot [0], "delivery_ids", 1, &msg->ids, &msg->id_count, err))
        return -2;
    switch (msg->command) {
        case MMP_EXTEND:
            if (slot [1] && s_int (slot [1], "extension_ms", 1, MMP_MAX_EXTENSION_MS,
                                   &msg->extension_ms, &s_top, err))
                return -2;
            break;
        case MMP_NACK:
            if (slot [1] && s_int (slot [1], "delay_ms", 0, MMP_MAX_DELAY_MS,
                                   &msg->delay_ms, &s_top, err))
                return -2;
            if (slot [2] && s_text (slot [2], "reason", MMP_MAX_TEXT, &msg->reason, NULL, &s_top, err))
                return -2;
            break;
        case MMP_PROGRESS:
            if (s_steps (slot [1], 1, &msg->steps, &s_top, err))
                return -2;
            break;
        default:
            break;
    }
    return 0;
}

//  EXTENDED, ACKED, NACKED, PROGRESSED: ok, stale, unknown (+ deadline_ms).
static const s_schema_t s_id_reply_schema = { { "ok", "stale", "unknown", "deadline_ms", NULL } };
static const s_schema_t s_id_reply_short_schema = { { "ok", "stale", "unknown", NULL } };

static int
s_id_reply (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    bool extended = msg->command == MMP_EXTENDED;
    const cJSON *slot [S_MAX_FIELDS];
    if (s_collect (body, extended? &s_id_reply_schema: &s_id_reply_short_schema, slot, &s_top, err))
        return -2;
    for (int i = 0; i < (extended? 4: 3); i++)
        if (!slot [i])
            return s_missing (err, &s_top, s_id_reply_schema.names [i]);
    if (s_ids (slot [0], "ok", 0, &msg->ids, &msg->id_count, err)
    ||  s_ids (slot [1], "stale", 0, &msg->stale, &msg->stale_count, err)
    ||  s_ids (slot [2], "unknown", 0, &msg->unknown, &msg->unknown_count, err))
        return -2;
    if (extended
    &&  s_int (slot [3], "deadline_ms", 0, S_MAX_EXACT, &msg->deadline_ms, &s_top, err))
        return -2;
    return 0;
}

static const s_schema_t s_empty_schema = { { NULL } };

static int
s_empty (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err)
{
    const cJSON *slot [S_MAX_FIELDS];
    return s_collect (body, &s_empty_schema, slot, &s_top, err);
}

typedef int (s_body_fn) (const cJSON *body, mmp_msg_t *msg, mmp_error_t *err);

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
};


//  --------------------------------------------------------------------------
//  Raw body scan, before cJSON sees a byte. Checks nesting depth (so
//  cJSON's recursion stays shallow whatever arrives), and refuses raw
//  control characters and \u0000 escapes inside strings: JSON forbids the
//  first, and the second would silently cut a C string short
//  ("cattle\u0000; x" would pass as "cattle").

//  Byte classes for the scan: everything else is 0.
enum { S_OPEN = 1, S_CLOSE = 2, S_QUOTE = 3, S_ESCAPE = 4, S_CONTROL = 5 };
static unsigned char s_class [256];
static unsigned char s_string_class [256];

static void
s_scan_tables (void)
{
    s_class ['{'] = s_class ['['] = S_OPEN;
    s_class ['}'] = s_class [']'] = S_CLOSE;
    s_class ['"'] = S_QUOTE;
    s_string_class ['"'] = S_QUOTE;
    s_string_class ['\\'] = S_ESCAPE;
    for (int c = 0; c < 0x20; c++)
        s_string_class [c] = S_CONTROL;
}

//  Eight string bytes at once: true when none of them is a quote, a
//  backslash or a control character, i.e. none the scan must look at.
//  (The has-zero-byte and has-byte-below-n tricks: exact as a yes/no.)
static inline bool
s_plain_word (const unsigned char *cursor)
{
    const uint64_t ones = UINT64_C (0x0101010101010101);
    const uint64_t highs = UINT64_C (0x8080808080808080);
    uint64_t word;
    memcpy (&word, cursor, 8);
    uint64_t quote = word ^ (ones * '"');
    uint64_t backslash = word ^ (ones * '\\');
    uint64_t found = ((quote - ones) & ~quote)
                   | ((backslash - ones) & ~backslash)
                   | ((word - ones * 0x20) & ~word);
    return (found & highs) == 0;
}

static int
s_scan (const unsigned char *data, size_t size, mmp_error_t *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once (&once, s_scan_tables);
    int depth = 0;
    const unsigned char *cursor = data;
    const unsigned char *end = data + size;
    while (cursor < end) {
        unsigned char kind = s_class [*cursor++];
        if (kind == 0)
            continue;
        if (kind == S_QUOTE) {
            //  Inside a string until the closing quote
            while (cursor < end) {
                if (end - cursor >= 8 && s_plain_word (cursor)) {
                    cursor += 8;
                    continue;
                }
                unsigned char inner = s_string_class [*cursor++];
                if (inner == 0)
                    continue;
                if (inner == S_QUOTE)
                    break;
                if (inner == S_CONTROL)
                    return s_fail (err, MMP_ERR_BAD_JSON, NULL, NULL,
                                   "control character in a string at byte %zu",
                                   (size_t) (cursor - 1 - data));
                //  An escape: refuse \u0000, skip the escaped character
                if (cursor + 5 <= end && memcmp (cursor, "u0000", 5) == 0)
                    return s_fail (err, MMP_ERR_BAD_JSON, NULL, NULL,
                                   "\\u0000 in a string at byte %zu",
                                   (size_t) (cursor - 1 - data));
                if (cursor < end)
                    cursor++;
            }
        }
        else
        if (kind == S_OPEN) {
            if (++depth > MMP_MAX_DEPTH)
                return s_fail (err, MMP_ERR_TOO_DEEP, NULL, NULL,
                               "nesting deeper than %d", MMP_MAX_DEPTH);
        }
        else
        if (depth > 0)
            depth--;
    }
    return 0;
}

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

int
mmp_decode (const void *signature, size_t signature_size,
            const void *command, size_t command_size,
            const void *body, size_t body_size,
            mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err)
{
    assert (msg);
    assert (!msg->body && !msg->messages && !msg->deliveries && !msg->ids);
    mmp_error_t spare;
    if (!err)
        err = &spare;
    err->code = NULL;
    err->reason [0] = 0;

    if (!signature || signature_size != 4 || memcmp (signature, MMP_SIGNATURE, 4) != 0) {
        if (signature && signature_size >= 3 && memcmp (signature, "MMP", 3) == 0)
            return s_fail (err, MMP_ERR_BAD_VERSION, NULL, NULL,
                           "this peer speaks only %s", MMP_SIGNATURE);
        return s_fail (err, MMP_ERR_BAD_SIGNATURE, NULL, NULL,
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
        return s_fail (err, MMP_ERR_UNKNOWN_COMMAND, NULL, NULL,
                       "no command \"%s%s\"", shown, command_size > 16? "...": "");
    }
    unsigned way = direction == MMP_TO_BROKER? S_TO: S_FROM;
    if (!(s_command_ways [found] & way))
        return s_fail (err, MMP_ERR_UNKNOWN_COMMAND, NULL, NULL, "%s is not sent %s the broker",
                       s_command_names [found], direction == MMP_TO_BROKER? "to": "by");
    if (body_size > MMP_MAX_BODY)
        return s_fail (err, MMP_ERR_TOO_LARGE, NULL, NULL,
                       "body is %zu bytes, over %d", body_size, MMP_MAX_BODY);
    if (!body || body_size == 0)
        return s_fail (err, MMP_ERR_BAD_JSON, NULL, NULL, "body is empty");
    if (s_scan (body, body_size, err))
        return -2;

    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts (body, body_size, &end, false);
    if (!root)
        return s_fail (err, MMP_ERR_BAD_JSON, NULL, NULL, "body is not valid JSON");
    //  cJSON stops after the first value; anything but white space after it
    //  makes the body something other than one JSON value.
    const char *stop = (const char *) body + body_size;
    while (end && end < stop && (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r'))
        end++;
    if (!end || end != stop) {
        cJSON_Delete (root);
        return s_fail (err, MMP_ERR_BAD_JSON, NULL, NULL, "text after the JSON value");
    }
    if (!cJSON_IsObject (root)) {
        cJSON_Delete (root);
        return s_fail (err, MMP_ERR_NOT_OBJECT, NULL, NULL, "body must be a JSON object");
    }
    msg->body = root;
    msg->command = found;
    msg->direction = direction;
    if (s_body_decoders [found] (root, msg, err)) {
        mmp_msg_reset (msg);
        return -2;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Sockets

int
mmp_recv (zsock_t *sock, bool wait, zframe_t **routing_id,
          mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err)
{
    return mmp_recv_meta (sock, wait, routing_id, direction, msg, err, NULL);
}

//  Copy the message property name (metadata libzmq attached to the
//  connection) into out; "" when there is none.
static void
s_property (zmq_msg_t *part, const char *name, char *out, size_t size)
{
    const char *value = zmq_msg_gets (part, name);
    snprintf (out, size, "%s", value ? value : "");
}

int
mmp_recv_meta (zsock_t *sock, bool wait, zframe_t **routing_id,
               mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err, mmp_meta_t *meta)
{
    assert (sock);
    if (meta)
        meta->user_id [0] = meta->key [0] = 0;
    assert (msg);
    mmp_error_t spare;
    if (!err)
        err = &spare;
    if (routing_id)
        *routing_id = NULL;
    void *handle = zsock_resolve (sock);
    assert (handle);

    //  Keep the first parts; count and drop the rest, so the whole
    //  multipart message is always consumed whatever its shape.
    enum { KEEP = 4 };
    zmq_msg_t parts [KEEP];
    size_t kept = 0;
    size_t total = 0;
    int rc = -1;
    int more = 1;
    while (more) {
        zmq_msg_t *part = kept < KEEP? &parts [kept]: NULL;
        zmq_msg_t spill;
        if (!part)
            part = &spill;
        zmq_msg_init (part);
        //  Only the first part can be absent: a multipart message arrives whole.
        int flags = (total == 0 && !wait)? ZMQ_DONTWAIT: 0;
        if (zmq_msg_recv (part, handle, flags) == -1) {
            zmq_msg_close (part);
            if (total == 0)
                goto done;      //  Nothing queued, timed out or interrupted
            //  Interrupted mid-message (only at context end): treat as bad
            total = 0;
            break;
        }
        more = zmq_msg_more (part);
        total++;
        if (part == &spill)
            zmq_msg_close (part);
        else
            kept++;
    }
    if (total == 0) {
        rc = s_fail (err, MMP_ERR_BAD_FRAMES, NULL, NULL, "message cut short");
        goto done;
    }
    //  A ROUTER's routing id part is made locally and carries no metadata:
    //  ask a part that came off the wire
    if (meta && kept > 0) {
        s_property (&parts [kept - 1], "User-Id", meta->user_id, sizeof meta->user_id);
        s_property (&parts [kept - 1], "Curve-Key", meta->key, sizeof meta->key);
    }
    size_t first = 0;
    if (routing_id) {
        *routing_id = zframe_new (zmq_msg_data (&parts [0]), zmq_msg_size (&parts [0]));
        first = 1;
    }
    if (total - first != 3) {
        rc = s_fail (err, MMP_ERR_BAD_FRAMES, NULL, NULL,
                     "%zu frames, an MMP message has 3", total - first);
        goto done;
    }
    rc = mmp_decode (zmq_msg_data (&parts [first]), zmq_msg_size (&parts [first]),
                     zmq_msg_data (&parts [first + 1]), zmq_msg_size (&parts [first + 1]),
                     zmq_msg_data (&parts [first + 2]), zmq_msg_size (&parts [first + 2]),
                     direction, msg, err);
done:
    for (size_t i = 0; i < kept; i++)
        zmq_msg_close (&parts [i]);
    return rc;
}

int
mmp_send (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
          const char *json, size_t json_size)
{
    assert (sock);
    const char *name = mmp_command_name (command);
    assert (name);
    if (!json) {
        json = "{}";
        json_size = 2;
    }
    void *handle = zsock_resolve (sock);
    assert (handle);
    //  zmq_send copies and zmq_send_const references: nothing of ours is
    //  held by libzmq after a failure, so nothing can leak. Only the first
    //  part can fail on a full or unroutable peer; libzmq takes the rest
    //  of a multipart message whole once it took the first part.
    if (routing_id
    &&  zmq_send (handle, zframe_data (routing_id), zframe_size (routing_id), ZMQ_SNDMORE) == -1)
        return -1;
    if (zmq_send_const (handle, MMP_SIGNATURE, 4, ZMQ_SNDMORE) == -1
    ||  zmq_send_const (handle, name, strlen (name), ZMQ_SNDMORE) == -1
    ||  zmq_send (handle, json, json_size, 0) == -1)
        return -1;
    return 0;
}

int
mmp_send_json (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
               const cJSON *body)
{
    assert (body);
    char *text = cJSON_PrintUnformatted (body);
    if (!text)
        return -1;
    int rc = mmp_send (sock, routing_id, command, text, strlen (text));
    cJSON_free (text);
    return rc;
}

static void
s_json_string (mmp_buf_t *buf, const char *text, size_t max);

int
mmp_send_error (zsock_t *sock, zframe_t *routing_id, const char *code,
                const char *reason, const char *req)
{
    assert (code);
    //  Truncated so our own ERROR always passes the peer's too_long check
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    mmp_buf_puts (&buf, "{\"code\":");
    s_json_string (&buf, code, MMP_MAX_TEXT);
    mmp_buf_puts (&buf, ",\"reason\":");
    s_json_string (&buf, reason? reason: "", MMP_MAX_TEXT);
    if (req) {
        mmp_buf_puts (&buf, ",\"req\":");
        s_json_string (&buf, req, MMP_MAX_TEXT);
    }
    mmp_buf_puts (&buf, "}");
    int rc = buf.failed? -1: mmp_send (sock, routing_id, MMP_ERROR, buf.data, buf.size);
    mmp_buf_free (&buf);
    return rc;
}


//  --------------------------------------------------------------------------
//  mmp_buf: text is always null-terminated once anything was appended;
//  after a failed allocation the buffer keeps what it had and sets failed,
//  so callers check once at the end instead of after every append.

void
mmp_buf_init (mmp_buf_t *buf)
{
    assert (buf);
    buf->data = NULL;
    buf->size = 0;
    buf->capacity = 0;
    buf->failed = false;
}

void
mmp_buf_free (mmp_buf_t *buf)
{
    assert (buf);
    free (buf->data);
    mmp_buf_init (buf);
}

void
mmp_buf_clear (mmp_buf_t *buf)
{
    assert (buf);
    buf->size = 0;
    buf->failed = false;
    if (buf->data)
        buf->data [0] = 0;
}

//  Make room for extra more bytes plus the null. Returns 0 or -1.
static int
s_buf_reserve (mmp_buf_t *buf, size_t extra)
{
    if (buf->failed)
        return -1;
    if (buf->size + extra + 1 <= buf->capacity)
        return 0;
    size_t capacity = buf->capacity? buf->capacity: 256;
    while (capacity < buf->size + extra + 1) {
        if (capacity > SIZE_MAX / 2) {
            buf->failed = true;
            return -1;
        }
        capacity *= 2;
    }
    char *data = realloc (buf->data, capacity);
    if (!data) {
        buf->failed = true;
        return -1;
    }
    buf->data = data;
    buf->capacity = capacity;
    return 0;
}

void
mmp_buf_append (mmp_buf_t *buf, const char *text, size_t len)
{
    assert (buf);
    if (s_buf_reserve (buf, len))
        return;
    if (len)
        memcpy (buf->data + buf->size, text, len);
    buf->size += len;
    buf->data [buf->size] = 0;
}

void
mmp_buf_puts (mmp_buf_t *buf, const char *text)
{
    mmp_buf_append (buf, text, strlen (text));
}

void
mmp_buf_printf (mmp_buf_t *buf, const char *format, ...)
{
    assert (buf);
    if (s_buf_reserve (buf, 64))
        return;
    va_list args;
    va_start (args, format);
    int needed = vsnprintf (buf->data + buf->size, buf->capacity - buf->size, format, args);
    va_end (args);
    if (needed < 0) {
        buf->data [buf->size] = 0;
        buf->failed = true;
        return;
    }
    if ((size_t) needed >= buf->capacity - buf->size) {
        if (s_buf_reserve (buf, (size_t) needed)) {
            buf->data [buf->size] = 0;
            return;
        }
        va_start (args, format);
        vsnprintf (buf->data + buf->size, buf->capacity - buf->size, format, args);
        va_end (args);
    }
    buf->size += (size_t) needed;
}

void
mmp_buf_u64 (mmp_buf_t *buf, uint64_t value)
{
    char digits [24];
    char *cursor = digits + sizeof digits;
    do {
        *--cursor = (char) ('0' + value % 10);
        value /= 10;
    } while (value);
    mmp_buf_append (buf, cursor, (size_t) (digits + sizeof digits - cursor));
}

//  Length of the valid UTF-8 sequence at text (1..4), or 0 if the bytes
//  there are not one (overlong forms, surrogates and values over U+10FFFF
//  included), per RFC 3629.
static size_t
s_utf8_length (const unsigned char *text)
{
    unsigned char c = text [0];
    if (c < 0x80)
        return 1;
    if (c >= 0xC2 && c <= 0xDF)
        return (text [1] & 0xC0) == 0x80? 2: 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char low = c == 0xE0? 0xA0: 0x80;
        unsigned char high = c == 0xED? 0x9F: 0xBF;
        if (text [1] < low || text [1] > high || (text [2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char low = c == 0xF0? 0x90: 0x80;
        unsigned char high = c == 0xF4? 0x8F: 0xBF;
        if (text [1] < low || text [1] > high
        ||  (text [2] & 0xC0) != 0x80 || (text [3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

//  Append text as a JSON string whose decoded form is at most max bytes,
//  cut between characters, never inside one. Invalid UTF-8 bytes become
//  U+FFFD, so the output is always valid JSON in valid UTF-8.
//  Append the JSON escape of an ASCII byte that cannot stand as itself:
//  a quote, a backslash or a control character.
static void
s_escape (mmp_buf_t *buf, unsigned char c)
{
    static const char hex [] = "0123456789abcdef";
    char escape [6] = { '\\', 0, 0, 0, 0, 0 };
    size_t size = 2;
    switch (c) {
        case '"':  escape [1] = '"'; break;
        case '\\': escape [1] = '\\'; break;
        case '\b': escape [1] = 'b'; break;
        case '\f': escape [1] = 'f'; break;
        case '\n': escape [1] = 'n'; break;
        case '\r': escape [1] = 'r'; break;
        case '\t': escape [1] = 't'; break;
        default:
            escape [1] = 'u';
            escape [2] = '0';
            escape [3] = '0';
            escape [4] = hex [c >> 4];
            escape [5] = hex [c & 15];
            size = 6;
    }
    mmp_buf_append (buf, escape, size);
}

void
mmp_buf_json_string_valid (mmp_buf_t *buf, const char *text)
{
    assert (buf && text);
    const unsigned char *cursor = (const unsigned char *) text;
    mmp_buf_append (buf, "\"", 1);
    while (*cursor) {
        const unsigned char *run = cursor;
        while (*cursor >= 0x20 && *cursor != '"' && *cursor != '\\')
            cursor++;
        if (cursor > run)
            mmp_buf_append (buf, (const char *) run, (size_t) (cursor - run));
        if (!*cursor)
            break;
        s_escape (buf, *cursor++);
    }
    mmp_buf_append (buf, "\"", 1);
}

static void
s_json_string (mmp_buf_t *buf, const char *text, size_t max)
{
    if (!text)
        text = "";
    const unsigned char *cursor = (const unsigned char *) text;
    size_t decoded = 0;
    mmp_buf_append (buf, "\"", 1);
    while (*cursor) {
        //  Copy the longest run that needs no escaping in one append
        const unsigned char *run = cursor;
        while (*cursor >= 0x20 && *cursor < 0x80 && *cursor != '"' && *cursor != '\\'
           &&  decoded < max) {
            cursor++;
            decoded++;
        }
        if (cursor > run)
            mmp_buf_append (buf, (const char *) run, (size_t) (cursor - run));
        unsigned char c = *cursor;
        if (c == 0 || decoded >= max)
            break;
        if (c >= 0x80) {
            //  The text ends in a null, so looking up to 3 bytes on stops
            //  at the null at worst: a continuation check fails there.
            size_t len = s_utf8_length (cursor);
            size_t width = len? len: 3;
            if (decoded + width > max)
                break;
            if (len)
                mmp_buf_append (buf, (const char *) cursor, len);
            else {
                mmp_buf_append (buf, "\\ufffd", 6);     //  Invalid byte: replacement character
                len = 1;
            }
            decoded += width;
            cursor += len;
            continue;
        }
        s_escape (buf, c);
        decoded++;
        cursor++;
    }
    mmp_buf_append (buf, "\"", 1);
}

void
mmp_buf_json_string (mmp_buf_t *buf, const char *text)
{
    assert (buf);
    s_json_string (buf, text, SIZE_MAX);
}

void
mmp_buf_id_array (mmp_buf_t *buf, const uint64_t *ids, size_t count)
{
    //  Room for the worst case (20 digits and a comma per id) at once, then
    //  digits written in place: an ACKED of 100 ids is one reservation
    if (count > (SIZE_MAX - 2) / 21) {
        buf->failed = true;
        return;
    }
    if (s_buf_reserve (buf, 2 + 21 * count))
        return;
    char *cursor = buf->data + buf->size;
    *cursor++ = '[';
    for (size_t i = 0; i < count; i++) {
        if (i)
            *cursor++ = ',';
        char digits [20];
        char *start = digits + sizeof digits;
        uint64_t value = ids [i];
        do {
            *--start = (char) ('0' + value % 10);
            value /= 10;
        } while (value);
        size_t size = (size_t) (digits + sizeof digits - start);
        memcpy (cursor, start, size);
        cursor += size;
    }
    *cursor++ = ']';
    *cursor = 0;
    buf->size = (size_t) (cursor - buf->data);
}
