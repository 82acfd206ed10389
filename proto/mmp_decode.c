/*  mmp_decode: the MMP/1 decoder. See mmp.h for the API and PROTOCOL.md
    for the wire format this file implements.

    Two passes, each refusing as early and as cheaply as it can, after the
    frame checks (signature, command for the direction, body size):

    1. s_check: the whole body against RFC 8259 in one linear scan with no
       allocation and no recursion: syntax, numbers, nesting depth, string
       bytes (control characters, \u0000, lone surrogates) and UTF-8.
    2. The schema walk, on the message's own copy of the body (one malloc
       and one memcpy): each object's members are located and checked
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
*/
#include "mmp.h"
#include "mmp_decode.h"
#include "mdl_util.h"

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


//  Cut text at its first byte that does not start a valid UTF-8 sequence:
//  a reason built from decoded names and cut to size never carries half a
//  character.
static void
s_clean_utf8 (char *text)
{
    unsigned char *cursor = (unsigned char *) text;
    unsigned char *end = cursor + strlen (text);
    while (cursor < end) {
        size_t len = mmp_utf8_length (cursor, end);
        if (len == 0) {
            *cursor = 0;
            return;
        }
        cursor += len;
    }
}

int
mmp_fail (mmp_error_t *err, const char *code, const char *format, ...)
{
    err->code = code;
    va_list args;
    va_start (args, format);
    vsnprintf (err->reason, sizeof err->reason, format, args);
    va_end (args);
    s_clean_utf8 (err->reason);
    return -2;
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
    s_clean_utf8 (err->reason);
    return -2;
}

//  --------------------------------------------------------------------------
//  Pass 1: the whole body checked against RFC 8259 in one linear scan,
//  with no allocation and no recursion: syntax (numbers included: no
//  leading zero, no bare '.', '-' or exponent), nesting depth, raw control
//  characters, escapes, \u0000, lone surrogates, and UTF-8 (RFC 3629: no
//  overlong forms, no surrogates, nothing over U+10FFFF, nothing cut
//  short). After it, pass 2 may assume well-formed JSON.

//  Byte classes of the scan inside strings; everything else is 0.
enum { S_QUOTE = 1, S_ESCAPE = 2, S_CONTROL = 3, S_HIGH = 4 };
static unsigned char s_string_class [256];

static void
s_scan_tables (void)
{
    s_string_class ['"'] = S_QUOTE;
    s_string_class ['\\'] = S_ESCAPE;
    for (int c = 0; c < 0x20; c++)
        s_string_class [c] = S_CONTROL;
    for (int c = 0x80; c < 0x100; c++)
        s_string_class [c] = S_HIGH;
}

//  Eight string bytes at once: true when none of them is a quote, a
//  backslash, a control character or a non-ASCII byte, i.e. none the scan
//  must look at. (The has-zero-byte and has-byte-below-n tricks: exact as
//  a yes/no.)
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
                   | ((word - ones * 0x20) & ~word)
                   | word;
    return (found & highs) == 0;
}

static inline const unsigned char *
s_ws (const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}

static int
s_hex4 (const unsigned char *p, unsigned *value)
{
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        unsigned char c = p [i];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned) (c - '0');
        else
        if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
            v |= (unsigned) ((c | 0x20) - 'a' + 10);
        else
            return -1;
    }
    *value = v;
    return 0;
}

//  A string from its opening quote; *pp moves past the closing quote.
static int
s_check_string (const unsigned char **pp, const unsigned char *base,
                const unsigned char *end, mmp_error_t *err)
{
    const unsigned char *cursor = *pp + 1;
    while (true) {
        while (end - cursor >= 8 && s_plain_word (cursor))
            cursor += 8;
        if (cursor >= end)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "body ends inside a string");
        unsigned char kind = s_string_class [*cursor];
        if (kind == 0) {
            cursor++;
            continue;
        }
        if (kind == S_QUOTE) {
            *pp = cursor + 1;
            return 0;
        }
        if (kind == S_CONTROL)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "control character in a string at byte %zu",
                             (size_t) (cursor - base));
        if (kind == S_HIGH) {
            size_t len = mmp_utf8_length (cursor, end);
            if (len == 0)
                return mmp_fail (err, MMP_ERR_BAD_JSON, "invalid UTF-8 in a string at byte %zu",
                                 (size_t) (cursor - base));
            cursor += len;
            continue;
        }
        //  An escape
        const unsigned char *escape = cursor;
        if (end - cursor < 2)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "body ends inside a string");
        unsigned char c = cursor [1];
        if (c == '"' || c == '\\' || c == '/' || c == 'b' || c == 'f'
        ||  c == 'n' || c == 'r' || c == 't') {
            cursor += 2;
            continue;
        }
        unsigned code;
        if (c != 'u' || end - cursor < 6 || s_hex4 (cursor + 2, &code))
            return mmp_fail (err, MMP_ERR_BAD_JSON, "bad escape in a string at byte %zu",
                             (size_t) (escape - base));
        cursor += 6;
        if (code == 0)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "\\u0000 in a string at byte %zu",
                             (size_t) (escape - base));
        if (code >= 0xDC00 && code <= 0xDFFF)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "lone low surrogate in a string at byte %zu",
                             (size_t) (escape - base));
        if (code >= 0xD800 && code <= 0xDBFF) {
            unsigned low;
            if (end - cursor < 6 || cursor [0] != '\\' || cursor [1] != 'u'
            ||  s_hex4 (cursor + 2, &low) || low < 0xDC00 || low > 0xDFFF)
                return mmp_fail (err, MMP_ERR_BAD_JSON,
                                 "lone high surrogate in a string at byte %zu",
                                 (size_t) (escape - base));
            cursor += 6;
        }
    }
}

//  A number, RFC 8259 section 6; *pp moves past it.
static int
s_check_number (const unsigned char **pp, const unsigned char *base,
                const unsigned char *end, mmp_error_t *err)
{
    const unsigned char *p = *pp;
    const unsigned char *start = p;
    if (p < end && *p == '-')
        p++;
    if (p < end && *p == '0')
        p++;
    else
    if (p < end && *p >= '1' && *p <= '9')
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    else
        goto bad;
    if (p < end && *p == '.') {
        p++;
        if (!(p < end && *p >= '0' && *p <= '9'))
            goto bad;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-'))
            p++;
        if (!(p < end && *p >= '0' && *p <= '9'))
            goto bad;
        while (p < end && *p >= '0' && *p <= '9')
            p++;
    }
    *pp = p;
    return 0;
bad:
    return mmp_fail (err, MMP_ERR_BAD_JSON, "bad number at byte %zu", (size_t) (start - base));
}

//  Where each top-level member's value ends (offsets from the start of the
//  body), recorded by s_check so that the schema walk of the top object
//  need not skip over a 1000-request array a second time.
#define S_MAX_HINTS 8

typedef struct {
    unsigned char *base;            //  Start of the copy of the body
    size_t ends [S_MAX_HINTS];      //  End offset of member value i
    size_t count;                   //  How many were recorded
} s_hints_t;

static int
s_check (const unsigned char *base, size_t size, s_hints_t *hints, mmp_error_t *err)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once (&once, s_scan_tables);
    const unsigned char *end = base + size;
    const unsigned char *p = s_ws (base, end);
    char stack [MMP_MAX_DEPTH + 1];     //  '{' or '[' per open level
    int depth = 0;
    if (p == end)
        return mmp_fail (err, MMP_ERR_BAD_JSON, "body is empty");

value:
    p = s_ws (p, end);
    if (p == end)
        return mmp_fail (err, MMP_ERR_BAD_JSON, "body ends where a value should be");
    switch (*p) {
        case '{':
        case '[':
            if (depth == MMP_MAX_DEPTH)
                return mmp_fail (err, MMP_ERR_TOO_DEEP, "nesting deeper than %d", MMP_MAX_DEPTH);
            stack [++depth] = (char) *p++;
            p = s_ws (p, end);
            if (p < end && *p == (stack [depth] == '{'? '}': ']')) {
                p++;
                depth--;
                goto after;
            }
            if (stack [depth] == '{')
                goto key;
            goto value;
        case '"':
            if (s_check_string (&p, base, end, err))
                return -2;
            goto after;
        case 't':
            if (end - p >= 4 && memcmp (p, "true", 4) == 0) { p += 4; goto after; }
            break;
        case 'f':
            if (end - p >= 5 && memcmp (p, "false", 5) == 0) { p += 5; goto after; }
            break;
        case 'n':
            if (end - p >= 4 && memcmp (p, "null", 4) == 0) { p += 4; goto after; }
            break;
        default:
            if (*p == '-' || (*p >= '0' && *p <= '9')) {
                if (s_check_number (&p, base, end, err))
                    return -2;
                goto after;
            }
    }
    return mmp_fail (err, MMP_ERR_BAD_JSON, "unexpected byte at %zu", (size_t) (p - base));

key:
    p = s_ws (p, end);
    if (p == end || *p != '"')
        return mmp_fail (err, MMP_ERR_BAD_JSON, "member name expected at byte %zu", (size_t) (p - base));
    if (s_check_string (&p, base, end, err))
        return -2;
    p = s_ws (p, end);
    if (p == end || *p != ':')
        return mmp_fail (err, MMP_ERR_BAD_JSON, "':' expected at byte %zu", (size_t) (p - base));
    p++;
    goto value;

after:
    if (depth == 1 && hints->count < S_MAX_HINTS)
        hints->ends [hints->count++] = (size_t) (p - base);
    p = s_ws (p, end);
    if (depth == 0) {
        if (p != end)
            return mmp_fail (err, MMP_ERR_BAD_JSON, "text after the JSON value at byte %zu",
                             (size_t) (p - base));
        return 0;
    }
    if (p < end && *p == ',') {
        p++;
        if (stack [depth] == '{')
            goto key;
        goto value;
    }
    if (p < end && *p == (stack [depth] == '{'? '}': ']')) {
        p++;
        depth--;
        goto after;
    }
    return mmp_fail (err, MMP_ERR_BAD_JSON, "',' or '%c' expected at byte %zu",
                     stack [depth] == '{'? '}': ']', (size_t) (p - base));
}


//  --------------------------------------------------------------------------
//  Pass 2 helpers, on text pass 1 accepted: they never see bad syntax.
//  Values are addressed by the position of their first byte in msg->raw,
//  the message's own copy of the body. Strings the message hands out are
//  unescaped in place there and null-terminated over their closing quote,
//  which is why an object's members are all located (s_collect) before
//  any of them is decoded, and an array's next item is found before the
//  current one is.

typedef unsigned char s_pos_t;

//  Past the string that starts at p (its opening quote).
static inline s_pos_t *
s_skip_string (s_pos_t *p)
{
    p++;
    while (true) {
        while (s_plain_word (p))        //  Safe: raw has 8 spare zero bytes at its end
            p += 8;
        if (*p == '"')
            return p + 1;
        if (*p == '\\')
            p += 2;
        else
            p++;
    }
}

//  Past the value that starts at p.
static s_pos_t *
s_skip (s_pos_t *p)
{
    if (*p == '"')
        return s_skip_string (p);
    if (*p == '{' || *p == '[') {
        int depth = 0;
        while (true) {
            unsigned char c = *p;
            if (c == '"') {
                p = s_skip_string (p);
                continue;
            }
            p++;
            if (c == '{' || c == '[')
                depth++;
            else
            if ((c == '}' || c == ']') && --depth == 0)
                return p;
        }
    }
    while (*p && *p != ',' && *p != '}' && *p != ']'
       &&  *p != ' ' && *p != '\n' && *p != '\r' && *p != '\t')
        p++;
    return p;
}

static inline s_pos_t *
s_space (s_pos_t *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

//  UTF-8 of code point at out; returns bytes written.
static size_t
s_put_utf8 (unsigned char *out, unsigned code)
{
    if (code < 0x80) {
        out [0] = (unsigned char) code;
        return 1;
    }
    if (code < 0x800) {
        out [0] = (unsigned char) (0xC0 | (code >> 6));
        out [1] = (unsigned char) (0x80 | (code & 0x3F));
        return 2;
    }
    if (code < 0x10000) {
        out [0] = (unsigned char) (0xE0 | (code >> 12));
        out [1] = (unsigned char) (0x80 | ((code >> 6) & 0x3F));
        out [2] = (unsigned char) (0x80 | (code & 0x3F));
        return 3;
    }
    out [0] = (unsigned char) (0xF0 | (code >> 18));
    out [1] = (unsigned char) (0x80 | ((code >> 12) & 0x3F));
    out [2] = (unsigned char) (0x80 | ((code >> 6) & 0x3F));
    out [3] = (unsigned char) (0x80 | (code & 0x3F));
    return 4;
}

//  Unescape the string at p (its opening quote) into out (which may be
//  p + 1: the text only shrinks), null-terminated; returns its length.
//  At most limit bytes are written before the null (the rest is dropped);
//  *end_p gets the position after the closing quote.
static size_t
s_unescape (s_pos_t *p, unsigned char *out, size_t limit, s_pos_t **end_p)
{
    p++;
    //  Fast path: no escape, so the text is the bytes up to the quote
    s_pos_t *q = p;
    while (true) {
        while (s_plain_word (q))
            q += 8;
        if (*q == '"' || *q == '\\')
            break;
        q++;
    }
    if (*q == '"') {
        size_t length = (size_t) (q - p);
        size_t kept = length < limit? length: limit;
        if (out != p)
            memmove (out, p, kept);
        out [kept] = 0;
        *end_p = q + 1;
        return length;
    }
    size_t used = 0;
    while (*p != '"') {
        unsigned char buffer [4];
        size_t size = 1;
        if (*p != '\\') {
            buffer [0] = *p++;
        }
        else {
            unsigned char c = p [1];
            p += 2;
            switch (c) {
                case 'b': buffer [0] = '\b'; break;
                case 'f': buffer [0] = '\f'; break;
                case 'n': buffer [0] = '\n'; break;
                case 'r': buffer [0] = '\r'; break;
                case 't': buffer [0] = '\t'; break;
                case 'u': {
                    unsigned code = 0, low = 0;
                    s_hex4 (p, &code);
                    p += 4;
                    if (code >= 0xD800 && code <= 0xDBFF) {
                        s_hex4 (p + 2, &low);
                        p += 6;
                        code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    }
                    size = s_put_utf8 (buffer, code);
                    break;
                }
                default: buffer [0] = c;
            }
        }
        if (used + size <= limit)
            memcpy (out + used, buffer, size);
        used += size;
    }
    *end_p = p + 1;
    out [used < limit? used: limit] = 0;
    return used;
}

//  A member name, for comparison with a schema: unescaped into name
//  (size bytes, always null-terminated; longer names are cut and can match
//  nothing). Returns the position after the name's closing quote.
static s_pos_t *
s_name (s_pos_t *p, char *name, size_t size, size_t *len)
{
    s_pos_t *end = NULL;
    size_t length = s_unescape (p, (unsigned char *) name, size - 1, &end);
    *len = length;
    return end;
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
//  Field lists. Each object is walked once; every member must match one of
//  at most a handful of names (a fixed list, so the scan is O(members)).

#define S_MAX_FIELDS 8

typedef struct {
    const char *names [S_MAX_FIELDS];   //  Field names, NULL-terminated
} s_schema_t;

//  Locate the members of the object at p into slots [] (the position of
//  each value, or NULL), by name. A member not in the schema is
//  unknown_field; a name given twice is bad_json (a peer must not be able
//  to smuggle a second value past us). *end_p gets the position after the
//  object. Nothing is decoded, so the object is still intact afterwards.
static int
s_collect_hinted (s_pos_t *p, const s_hints_t *hints, const s_schema_t *schema,
                  s_pos_t **slots, s_pos_t **end_p, const s_where_t *where, mmp_error_t *err)
{
    size_t member = 0;
    for (int i = 0; i < S_MAX_FIELDS; i++)
        slots [i] = NULL;
    p = s_space (p + 1);
    if (*p == '}') {
        *end_p = p + 1;
        return 0;
    }
    while (true) {
        char name [64];
        size_t len;
        p = s_name (p, name, sizeof name, &len);
        int found = -1;
        if (len < sizeof name)
            for (int i = 0; i < S_MAX_FIELDS && schema->names [i]; i++)
                if (name [0] == schema->names [i][0] && strcmp (name, schema->names [i]) == 0) {
                    found = i;
                    break;
                }
        if (found < 0) {
            char shown [48];
            snprintf (shown, sizeof shown, "%.47s", name);
            s_clean_utf8 (shown);
            return s_fail (err, MMP_ERR_UNKNOWN_FIELD, where, shown, "field is not defined here");
        }
        if (slots [found])
            return s_fail (err, MMP_ERR_BAD_JSON, where, schema->names [found], "field given twice");
        p = s_space (s_space (p) + 1);      //  Past the ':'
        slots [found] = p;
        if (hints && member < hints->count)
            p = s_space (hints->base + hints->ends [member]);
        else
            p = s_space (s_skip (p));
        member++;
        if (*p == '}') {
            *end_p = p + 1;
            return 0;
        }
        p = s_space (p + 1);                //  Past the ','
    }
}

static int
s_collect (s_pos_t *p, const s_schema_t *schema, s_pos_t **slots, s_pos_t **end_p,
           const s_where_t *where, mmp_error_t *err)
{
    return s_collect_hinted (p, NULL, schema, slots, end_p, where, err);
}

//  The body object, with the value ends pass 1 recorded.
static int
s_collect_top (s_pos_t *p, const s_hints_t *hints, const s_schema_t *schema,
               s_pos_t **slots, s_pos_t **end_p, const s_where_t *where, mmp_error_t *err)
{
    return s_collect_hinted (p, hints, schema, slots, end_p, where, err);
}

//  Items of the array at p: s_first gives the first item's position (or
//  NULL for an empty array), s_next the one after the item at p, which
//  must not have been decoded yet (or NULL at the end).
static s_pos_t *
s_first (s_pos_t *p)
{
    p = s_space (p + 1);
    return *p == ']'? NULL: p;
}

static s_pos_t *
s_next (s_pos_t *p)
{
    p = s_space (s_skip (p));
    return *p == ']'? NULL: s_space (p + 1);
}

static int
s_missing (mmp_error_t *err, const s_where_t *where, const char *field)
{
    return s_fail (err, MMP_ERR_MISSING_FIELD, where, field, "required field is missing");
}

//  An integer in [min, max]. A non-number is bad_type; a fraction or a
//  number out of range (1.5, -1, 1e300) is bad_value. Plain digits (the
//  common case) are read exactly; other forms (2.0, 2e0) through strtod,
//  which stops at the delimiter after the number.
static int
s_int (s_pos_t *p, const char *field, int64_t min, int64_t max,
       int64_t *value, const s_where_t *where, mmp_error_t *err)
{
    if (*p != '-' && (*p < '0' || *p > '9'))
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be an integer");
    s_pos_t *digit = p;
    uint64_t whole = 0;
    while (*digit >= '0' && *digit <= '9' && digit - p < 16)
        whole = whole * 10 + (uint64_t) (*digit++ - '0');
    if (digit > p && *digit != '.' && *digit != 'e' && *digit != 'E'
    &&  (*digit < '0' || *digit > '9')) {
        if ((int64_t) whole < min || (int64_t) whole > max)
            return s_fail (err, MMP_ERR_BAD_VALUE, where, field,
                           "must be in %lld..%lld", (long long) min, (long long) max);
        *value = (int64_t) whole;
        return 0;
    }
    double number = strtod ((const char *) p, NULL);
    if (!(number >= (double) min && number <= (double) max))
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field,
                       "must be in %lld..%lld", (long long) min, (long long) max);
    int64_t integer = (int64_t) number;
    if ((double) integer != number)
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field, "must be a whole number");
    *value = integer;
    return 0;
}

//  A string of at most max bytes, unescaped in place; *value points to it
//  (null-terminated) and *len gets its length.
static int
s_text (s_pos_t *p, const char *field, size_t max, const char **value,
        size_t *len, const s_where_t *where, mmp_error_t *err)
{
    if (*p != '"')
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be a string");
    s_pos_t *end;
    size_t length = s_unescape (p, p + 1, SIZE_MAX, &end);
    if (length > max)
        return s_fail (err, MMP_ERR_TOO_LONG, where, field, "longer than %zu bytes", max);
    *value = (const char *) p + 1;
    if (len)
        *len = length;
    return 0;
}

//  An array with min..max items; *count gets its size.
static int
s_array (s_pos_t *p, const char *field, size_t min, size_t max,
         size_t *count, const s_where_t *where, mmp_error_t *err)
{
    if (*p != '[')
        return s_fail (err, MMP_ERR_BAD_TYPE, where, field, "must be an array");
    size_t size = 0;
    for (s_pos_t *item = s_first (p); item; item = s_next (item))
        if (++size > max)
            return s_fail (err, MMP_ERR_TOO_MANY, where, field, "more than %zu items", max);
    if (size < min)
        return s_fail (err, MMP_ERR_BAD_VALUE, where, field, "must not be empty");
    *count = size;
    return 0;
}

//  An array of delivery ids into a fresh array (NULL when empty). One pass:
//  the array grows as ids are read, so the list is never walked twice.
static int
s_ids (s_pos_t *p, const char *field, size_t min, uint64_t **ids,
       size_t *count, mmp_error_t *err)
{
    if (*p != '[')
        return s_fail (err, MMP_ERR_BAD_TYPE, &s_top, field, "must be an array");
    *count = 0;
    uint64_t *array = NULL;
    size_t size = 0, capacity = 0;
    s_where_t where = { field, 0, NULL };
    p = s_space (p + 1);
    while (*p != ']') {
        if (size == MMP_MAX_IDS) {
            free (array);
            return s_fail (err, MMP_ERR_TOO_MANY, &s_top, field, "more than %d items", MMP_MAX_IDS);
        }
        if (size == capacity) {
            capacity = capacity? capacity * 4: 16;
            uint64_t *grown = realloc (array, capacity * sizeof *array);
            if (!grown) {
                free (array);
                return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, field, "out of memory");
            }
            array = grown;
        }
        int64_t value = 0;
        where.index = size;
        if (s_int (p, NULL, 1, S_MAX_EXACT, &value, &where, err)) {
            free (array);
            return -2;
        }
        array [size++] = (uint64_t) value;
        p = s_space (s_skip (p));
        if (*p == ',')
            p = s_space (p + 1);
    }
    if (size < min)
        return s_fail (err, MMP_ERR_BAD_VALUE, &s_top, field, "must not be empty");
    *ids = array;
    *count = size;
    return 0;
}

//  An array of uuid strings into a fresh array of pointers into raw.
static int
s_uuids (s_pos_t *p, const char *field, size_t min, size_t max,
         const char ***ids, size_t *count, mmp_error_t *err)
{
    size_t size;
    if (s_array (p, field, min, max, &size, &s_top, err))
        return -2;
    *count = 0;
    if (size == 0)
        return 0;
    const char **array = malloc (size * sizeof *array);
    if (!array)
        return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, field, "out of memory");
    s_where_t where = { field, 0, NULL };
    size_t index = 0;
    for (s_pos_t *item = s_first (p), *next; item; item = next, index++) {
        next = s_next (item);
        where.index = index;
        const char *text;
        size_t len;
        if (*item != '"') {
            free (array);
            return s_fail (err, MMP_ERR_BAD_TYPE, &where, NULL, "must be a uuid string");
        }
        s_text (item, NULL, SIZE_MAX, &text, &len, &where, err);
        if (!mdl_uuid_valid (text, len)) {
            free (array);
            return s_fail (err, MMP_ERR_BAD_MESSAGE_ID, &where, NULL, "not a canonical uuid");
        }
        array [index] = text;
    }
    *ids = array;
    *count = size;
    return 0;
}

//  Steps: ["save"|"restart"], each at most once, min..2 of them.
static int
s_steps (s_pos_t *p, size_t min, unsigned *steps, const s_where_t *where, mmp_error_t *err)
{
    if (*p != '[')
        return s_fail (err, MMP_ERR_BAD_TYPE, where, "steps", "must be an array");
    unsigned seen = 0;
    size_t size = 0;
    for (s_pos_t *item = s_first (p), *next; item; item = next) {
        next = s_next (item);
        if (++size > 2)
            return s_fail (err, MMP_ERR_TOO_MANY, where, "steps", "more than 2 items");
        if (*item != '"')
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "steps", "items must be strings");
        const char *text;
        s_text (item, NULL, SIZE_MAX, &text, NULL, where, err);
        unsigned step;
        if (strcmp (text, "save") == 0)
            step = MMP_STEP_SAVE;
        else
        if (strcmp (text, "restart") == 0)
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
s_req (s_pos_t *item, mmp_msg_t *msg, mmp_error_t *err)
{
    if (!item)
        return 0;
    return s_text (item, "req", MMP_MAX_TEXT, &msg->req, NULL, &s_top, err);
}


//  --------------------------------------------------------------------------
//  A restart request: PUBLISH messages [i], DELIVER deliveries [i].message.

static const s_schema_t s_request_schema = {
    { "message_id", "instance_name", "hostname", "attributes", NULL }
};

//  *end_p gets the position after the request object.
static int
s_request (s_pos_t *item, bool delivered, mmp_request_t *request, s_pos_t **end_p,
           const s_where_t *where, mmp_error_t *err)
{
    if (*item != '{') {
        *end_p = s_skip (item);
        return s_fail (err, MMP_ERR_NOT_OBJECT, where, NULL, "a request must be an object");
    }
    s_pos_t *slot [S_MAX_FIELDS];
    if (s_collect (item, &s_request_schema, slot, end_p, where, err))
        return -2;
    memset (request, 0, sizeof *request);
    size_t len;

    if (slot [0]) {
        if (*slot [0] != '"')
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "message_id", "must be a uuid string");
        s_text (slot [0], "message_id", SIZE_MAX, &request->message_id, &len, where, err);
        if (!mdl_uuid_valid (request->message_id, len))
            return s_fail (err, MMP_ERR_BAD_MESSAGE_ID, where, "message_id", "not a canonical uuid");
    }
    else
    if (delivered)
        return s_missing (err, where, "message_id");

    if (!slot [1])
        return s_missing (err, where, "instance_name");
    if (s_text (slot [1], "instance_name", SIZE_MAX, &request->instance_name, &len, where, err))
        return -2;
    if (!mmp_valid_instance_name (request->instance_name, len))
        return s_fail (err, MMP_ERR_BAD_INSTANCE_NAME, where, "instance_name",
                       "not an RFC 1123 label (1..63 of A-Z a-z 0-9 -, no '-' at either end)");

    if (slot [2]) {
        if (s_text (slot [2], "hostname", SIZE_MAX, &request->hostname, &len, where, err))
            return -2;
        if (!mmp_valid_hostname (request->hostname, len))
            return s_fail (err, MMP_ERR_BAD_HOSTNAME, where, "hostname",
                           "not a DNS name (1..253 bytes of RFC 1123 labels, no trailing dot)");
    }
    else
    if (delivered)
        return s_missing (err, where, "hostname");

    if (slot [3]) {
        if (*slot [3] != '{')
            return s_fail (err, MMP_ERR_BAD_TYPE, where, "attributes", "must be an object");
        size_t size = (size_t) (s_skip (slot [3]) - slot [3]);
        if (size > MMP_MAX_ATTRIBUTES)
            return s_fail (err, MMP_ERR_TOO_LARGE, where, "attributes",
                           "%zu bytes, over %d", size, MMP_MAX_ATTRIBUTES);
        request->attributes = (const char *) slot [3];
        request->attributes_size = size;
    }
    return 0;
}


//  --------------------------------------------------------------------------
//  Per-command bodies. Each gets the top-level object and fills msg; on
//  failure it returns -2 with err set and the caller resets msg.

static const s_schema_t s_publish_schema = { { "messages", "req", NULL } };

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
static s_pos_t *
s_after (s_pos_t *p)
{
    p = s_space (p);
    return *p == ']'? NULL: s_space (p + 1);
}

static int
s_publish (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_publish_schema, slot, &end, &s_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "messages");
    if (*slot [0] != '[')
        return s_fail (err, MMP_ERR_BAD_TYPE, &s_top, "messages", "must be an array");
    size_t capacity = 0;
    s_where_t where = { "messages", 0, NULL };
    for (s_pos_t *item = s_first (slot [0]); item; item = s_after (end), where.index++) {
        if (where.index == MMP_MAX_MESSAGES)
            return s_fail (err, MMP_ERR_TOO_MANY, &s_top, "messages", "more than %d items",
                           MMP_MAX_MESSAGES);
        if (s_grow ((void **) &msg->messages, where.index, &capacity, sizeof *msg->messages))
            return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, "messages", "out of memory");
        if (s_request (item, false, &msg->messages [where.index], &end, &where, err))
            return -2;
    }
    if (where.index == 0)
        return s_fail (err, MMP_ERR_BAD_VALUE, &s_top, "messages", "must not be empty");
    msg->message_count = where.index;
    return 0;
}

static const s_schema_t s_puback_schema = {
    { "message_ids", "duplicates", "durability", "req", NULL }
};

static int
s_puback (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_puback_schema, slot, &end, &s_top, err) || s_req (slot [3], msg, err))
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
s_error (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_error_schema, slot, &end, &s_top, err) || s_req (slot [2], msg, err))
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

//  The STATS reply: the counters belong to the broker and may grow; only
//  the correlation string has a defined type. Members are walked without
//  decoding any, so the object stays intact for the cJSON tree.
static int
s_open_reply (s_pos_t *body, s_pos_t **req, mmp_error_t *err)
{
    *req = NULL;
    s_pos_t *p = s_space (body + 1);
    while (*p != '}') {
        char name [8];
        size_t len;
        p = s_name (p, name, sizeof name, &len);
        p = s_space (s_space (p) + 1);
        if (len == 3 && strcmp (name, "req") == 0) {
            if (*req)
                return s_fail (err, MMP_ERR_BAD_JSON, &s_top, "req", "field given twice");
            *req = p;
        }
        p = s_space (s_skip (p));
        if (*p == ',')
            p = s_space (p + 1);
    }
    return 0;
}

static int
s_stats (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (msg->direction == MMP_FROM_BROKER) {
        s_pos_t *req;
        return s_open_reply (body, &req, err) || s_req (req, msg, err)? -2: 0;
    }
    if (s_collect_top (body, hints, &s_req_only_schema, slot, &end, &s_top, err) || s_req (slot [0], msg, err))
        return -2;
    return 0;
}

static const s_schema_t s_deadletters_to_schema = { { "req", "limit", NULL } };
static const s_schema_t s_deadletters_from_schema = { { "req", "dead_letters", "total", NULL } };

static int
s_deadletters (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (msg->direction == MMP_TO_BROKER) {
        if (s_collect_top (body, hints, &s_deadletters_to_schema, slot, &end, &s_top, err)
        ||  s_req (slot [0], msg, err))
            return -2;
        if (slot [1] && s_int (slot [1], "limit", 1, S_MAX_DEAD_LETTERS, &msg->limit, &s_top, err))
            return -2;
        return 0;
    }
    if (s_collect_top (body, hints, &s_deadletters_from_schema, slot, &end, &s_top, err))
        return -2;
    if (!slot [1])
        return s_missing (err, &s_top, "dead_letters");
    if (!slot [2])
        return s_missing (err, &s_top, "total");
    size_t count;
    if (s_array (slot [1], "dead_letters", 0, S_MAX_DEAD_LETTERS, &count, &s_top, err))
        return -2;
    s_where_t where = { "dead_letters", 0, NULL };
    for (s_pos_t *item = s_first (slot [1]); item; item = s_next (item), where.index++)
        if (*item != '{')
            return s_fail (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a dead letter must be an object");
    //  mmp_msg_t has no field for the total: it is checked here and read
    //  from body by whoever prints it.
    int64_t total = 0;
    if (s_int (slot [2], "total", 0, S_MAX_EXACT, &total, &s_top, err))
        return -2;
    //  Decoded last: the cJSON tree is built from the original bytes
    return s_req (slot [0], msg, err);
}

static const s_schema_t s_replay_schema = { { "message_ids", "req", NULL } };

static int
s_replay (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_replay_schema, slot, &end, &s_top, err) || s_req (slot [1], msg, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "message_ids");
    return s_uuids (slot [0], "message_ids", 1, MMP_MAX_IDS,
                    &msg->message_ids, &msg->message_id_count, err);
}

static const s_schema_t s_replayed_schema = { { "replayed", "unknown", "req", NULL } };

static int
s_replayed (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_replayed_schema, slot, &end, &s_top, err) || s_req (slot [2], msg, err))
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
s_hello (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_hello_schema, slot, &end, &s_top, err))
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
s_welcome (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_welcome_schema, slot, &end, &s_top, err))
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
s_deliver (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_deliver_schema, slot, &end, &s_top, err))
        return -2;
    if (!slot [0])
        return s_missing (err, &s_top, "deliveries");
    if (*slot [0] != '[')
        return s_fail (err, MMP_ERR_BAD_TYPE, &s_top, "deliveries", "must be an array");
    size_t capacity = 0;
    s_where_t where = { "deliveries", 0, NULL };
    for (s_pos_t *item = s_first (slot [0]), *next; item; item = next, where.index++) {
        if (where.index == MMP_MAX_DELIVERIES)
            return s_fail (err, MMP_ERR_TOO_MANY, &s_top, "deliveries", "more than %d items",
                           MMP_MAX_DELIVERIES);
        if (s_grow ((void **) &msg->deliveries, where.index, &capacity, sizeof *msg->deliveries))
            return s_fail (err, MMP_ERR_TOO_LARGE, &s_top, "deliveries", "out of memory");
        mmp_delivery_t *delivery = &msg->deliveries [where.index];
        if (*item != '{')
            return s_fail (err, MMP_ERR_NOT_OBJECT, &where, NULL, "a delivery must be an object");
        s_pos_t *field [S_MAX_FIELDS];
        if (s_collect (item, &s_delivery_schema, field, &next, &where, err))
            return -2;
        next = s_space (next);
        next = *next == ']'? NULL: s_space (next + 1);
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
        s_pos_t *message_end;
        if (s_request (field [4], true, &delivery->message, &message_end, &inner, err))
            return -2;
    }
    if (where.index == 0)
        return s_fail (err, MMP_ERR_BAD_VALUE, &s_top, "deliveries", "must not be empty");
    msg->delivery_count = where.index;
    return 0;
}

static const s_schema_t s_credit_schema = { { "credit", NULL } };

static int
s_credit (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, &s_credit_schema, slot, &end, &s_top, err))
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
s_id_command (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    const s_schema_t *schema =
        msg->command == MMP_EXTEND? &s_extend_schema:
        msg->command == MMP_NACK? &s_nack_schema:
        msg->command == MMP_PROGRESS? &s_progress_schema: &s_ack_schema;
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, schema, slot, &end, &s_top, err))
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
s_id_reply (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    bool extended = msg->command == MMP_EXTENDED;
    s_pos_t *slot [S_MAX_FIELDS], *end;
    if (s_collect_top (body, hints, extended? &s_id_reply_schema: &s_id_reply_short_schema,
                   slot, &end, &s_top, err))
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
s_empty (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err)
{
    (void) msg;
    s_pos_t *slot [S_MAX_FIELDS], *end;
    return s_collect_top (body, hints, &s_empty_schema, slot, &end, &s_top, err);
}

typedef int (s_body_fn) (s_pos_t *body, const s_hints_t *hints, mmp_msg_t *msg, mmp_error_t *err);

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
    s_pos_t *req = NULL;
    mmp_error_t spare;
    if (s_open_reply (raw + offset, &req, &spare) || !req || *req != '"')
        return;
    s_pos_t *end;
    size_t len = s_unescape (req, req + 1, SIZE_MAX, &end);
    if (len <= MMP_MAX_TEXT)
        memcpy (err->req, req + 1, len + 1);
}

//  Bytes of zero after the copy of the body: the skip loops read a word
//  at a time and stop at them.
#define S_PADDING 9

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
    s_hints_t hints;
    hints.count = 0;
    if (s_check (body, body_size, &hints, err))
        return -2;
    const unsigned char *first = s_ws (body, (const unsigned char *) body + body_size);
    if (*first != '{')
        return s_fail (err, MMP_ERR_NOT_OBJECT, NULL, NULL, "body must be a JSON object");

    //  The message's own copy: strings are unescaped in it and attribute
    //  spans point into it, so it lives as long as the message.
    unsigned char *raw = malloc (body_size + S_PADDING);
    if (!raw)
        return s_fail (err, MMP_ERR_TOO_LARGE, NULL, NULL, "out of memory");
    memcpy (raw, body, body_size);
    memset (raw + body_size, 0, S_PADDING);
    msg->raw = (char *) raw;
    hints.base = raw;
    msg->raw_size = body_size;
    msg->command = found;
    msg->direction = direction;
    if (direction == MMP_FROM_BROKER && (found == MMP_PUBACK || found == MMP_STATS
                                     ||  found == MMP_DEADLETTERS || found == MMP_REPLAYED)) {
        //  Frontend replies, read by tools, some open-ended: also a tree
        msg->body = cJSON_ParseWithLength (body, body_size);
        if (!msg->body) {
            mmp_msg_reset (msg);
            return s_fail (err, MMP_ERR_TOO_LARGE, NULL, NULL, "out of memory");
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
