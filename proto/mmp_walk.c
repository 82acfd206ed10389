/*  mmp_walk: pass 2 primitives of the MMP/1 decoder. See mmp_decode.h.

    They run on text mmp_scan accepted, so they never meet bad syntax and
    need no bounds: every loop stops at a quote or a bracket that must be
    there, or at the zero padding after the copy. Strings the message hands
    out are unescaped in place and null-terminated over their closing
    quote, which is why an object's members are all located (mmp_collect)
    before any of them is decoded, and an array's next item is found
    before the current one is decoded. Cost: each byte is read a small
    constant number of times; allocation only for id and uuid arrays.
*/
#include "mmp_decode.h"
#include "mdl_uuid.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>

const mmp_where_t mmp_top = { NULL, 0, NULL };

//  Cut text at its first byte that does not start a valid UTF-8 sequence:
//  a reason built from decoded names and cut to size never carries half a
//  character.
void
mmp_clean_utf8 (char *text)
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
    mmp_clean_utf8 (err->reason);
    return -2;
}



int
mmp_fail_at (mmp_error_t *err, const char *code, const mmp_where_t *where,
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
    mmp_clean_utf8 (err->reason);
    return -2;
}

//  --------------------------------------------------------------------------
//  Pass 2 helpers, on text pass 1 accepted: they never see bad syntax.
//  Values are addressed by the position of their first byte in msg->raw,
//  the message's own copy of the body. Strings the message hands out are
//  unescaped in place there and null-terminated over their closing quote,
//  which is why an object's members are all located (mmp_collect) before
//  any of them is decoded, and an array's next item is found before the
//  current one is.


//  Past the string that starts at p (its opening quote).
static inline mmp_pos_t *
s_skip_string (mmp_pos_t *p)
{
    p++;
    while (true) {
        while (mmp_plain_word (p))        //  Safe: raw has 8 spare zero bytes at its end
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
mmp_pos_t *
mmp_skip (mmp_pos_t *p)
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
size_t
mmp_unescape (mmp_pos_t *p, unsigned char *out, size_t limit, mmp_pos_t **end_p)
{
    p++;
    //  Fast path: no escape, so the text is the bytes up to the quote
    mmp_pos_t *q = p;
    while (true) {
        while (mmp_plain_word (q))
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
                    mmp_hex4 (p, &code);
                    p += 4;
                    if (code >= 0xD800 && code <= 0xDBFF) {
                        mmp_hex4 (p + 2, &low);
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
mmp_pos_t *
mmp_name (mmp_pos_t *p, char *name, size_t size, size_t *len)
{
    mmp_pos_t *end = NULL;
    size_t length = mmp_unescape (p, (unsigned char *) name, size - 1, &end);
    *len = length;
    return end;
}

//  --------------------------------------------------------------------------
//  Field lists. Each object is walked once; every member must match one of
//  at most a handful of names (a fixed list, so the scan is O(members)).


//  Locate the members of the object at p into slots [] (the position of
//  each value, or NULL), by name. A member not in the schema is
//  unknown_field; a name given twice is bad_json (a peer must not be able
//  to smuggle a second value past us). *end_p gets the position after the
//  object. Nothing is decoded, so the object is still intact afterwards.
static int
s_collect_hinted (mmp_pos_t *p, const mmp_hints_t *hints, const mmp_schema_t *schema,
                  mmp_pos_t **slots, mmp_pos_t **end_p, const mmp_where_t *where, mmp_error_t *err)
{
    size_t member = 0;
    for (int i = 0; i < MMP_MAX_FIELDS; i++)
        slots [i] = NULL;
    p = mmp_space (p + 1);
    if (*p == '}') {
        *end_p = p + 1;
        return 0;
    }
    while (true) {
        char name [64];
        size_t len;
        p = mmp_name (p, name, sizeof name, &len);
        int found = -1;
        if (len < sizeof name)
            for (int i = 0; i < MMP_MAX_FIELDS && schema->names [i]; i++)
                if (name [0] == schema->names [i][0] && strcmp (name, schema->names [i]) == 0) {
                    found = i;
                    break;
                }
        if (found < 0) {
            char shown [48];
            snprintf (shown, sizeof shown, "%.47s", name);
            mmp_clean_utf8 (shown);
            return mmp_fail_at (err, MMP_ERR_UNKNOWN_FIELD, where, shown, "field is not defined here");
        }
        if (slots [found])
            return mmp_fail_at (err, MMP_ERR_BAD_JSON, where, schema->names [found], "field given twice");
        p = mmp_space (mmp_space (p) + 1);      //  Past the ':'
        slots [found] = p;
        if (hints && member < hints->count)
            p = mmp_space (hints->base + hints->ends [member]);
        else
            p = mmp_space (mmp_skip (p));
        member++;
        if (*p == '}') {
            *end_p = p + 1;
            return 0;
        }
        p = mmp_space (p + 1);                //  Past the ','
    }
}

int
mmp_collect (mmp_pos_t *p, const mmp_schema_t *schema, mmp_pos_t **slots, mmp_pos_t **end_p,
           const mmp_where_t *where, mmp_error_t *err)
{
    return s_collect_hinted (p, NULL, schema, slots, end_p, where, err);
}

//  The body object, with the value ends pass 1 recorded.
int
mmp_collect_top (mmp_pos_t *p, const mmp_hints_t *hints, const mmp_schema_t *schema,
               mmp_pos_t **slots, mmp_pos_t **end_p, const mmp_where_t *where, mmp_error_t *err)
{
    return s_collect_hinted (p, hints, schema, slots, end_p, where, err);
}

//  Items of the array at p: mmp_first gives the first item's position (or
//  NULL for an empty array), mmp_next the one after the item at p, which
//  must not have been decoded yet (or NULL at the end).
mmp_pos_t *
mmp_first (mmp_pos_t *p)
{
    p = mmp_space (p + 1);
    return *p == ']'? NULL: p;
}

mmp_pos_t *
mmp_next (mmp_pos_t *p)
{
    p = mmp_space (mmp_skip (p));
    return *p == ']'? NULL: mmp_space (p + 1);
}

int
mmp_missing (mmp_error_t *err, const mmp_where_t *where, const char *field)
{
    return mmp_fail_at (err, MMP_ERR_MISSING_FIELD, where, field, "required field is missing");
}

//  An integer in [min, max]. A non-number is bad_type; a fraction or a
//  number out of range (1.5, -1, 1e300) is bad_value. Plain digits (the
//  common case) are read exactly; other forms (2.0, 2e0) through strtod,
//  which stops at the delimiter after the number.
int
mmp_read_int (mmp_pos_t *p, const char *field, int64_t min, int64_t max,
       int64_t *value, const mmp_where_t *where, mmp_error_t *err)
{
    if (*p != '-' && (*p < '0' || *p > '9'))
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, field, "must be an integer");
    mmp_pos_t *digit = p;
    uint64_t whole = 0;
    while (*digit >= '0' && *digit <= '9' && digit - p < 16)
        whole = whole * 10 + (uint64_t) (*digit++ - '0');
    if (digit > p && *digit != '.' && *digit != 'e' && *digit != 'E'
    &&  (*digit < '0' || *digit > '9')) {
        if ((int64_t) whole < min || (int64_t) whole > max)
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, field,
                           "must be in %lld..%lld", (long long) min, (long long) max);
        *value = (int64_t) whole;
        return 0;
    }
    double number = strtod ((const char *) p, NULL);
    if (!(number >= (double) min && number <= (double) max))
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, field,
                       "must be in %lld..%lld", (long long) min, (long long) max);
    int64_t integer = (int64_t) number;
    if ((double) integer != number)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, field, "must be a whole number");
    *value = integer;
    return 0;
}

//  A string of at most max bytes, unescaped in place; *value points to it
//  (null-terminated) and *len gets its length.
int
mmp_read_text (mmp_pos_t *p, const char *field, size_t max, const char **value,
        size_t *len, const mmp_where_t *where, mmp_error_t *err)
{
    if (*p != '"')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, field, "must be a string");
    mmp_pos_t *end;
    size_t length = mmp_unescape (p, p + 1, SIZE_MAX, &end);
    if (length > max)
        return mmp_fail_at (err, MMP_ERR_TOO_LONG, where, field, "longer than %zu bytes", max);
    *value = (const char *) p + 1;
    if (len)
        *len = length;
    return 0;
}

//  An array with min..max items; *count gets its size.
int
mmp_read_array (mmp_pos_t *p, const char *field, size_t min, size_t max,
         size_t *count, const mmp_where_t *where, mmp_error_t *err)
{
    if (*p != '[')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, field, "must be an array");
    size_t size = 0;
    for (mmp_pos_t *item = mmp_first (p); item; item = mmp_next (item))
        if (++size > max)
            return mmp_fail_at (err, MMP_ERR_TOO_MANY, where, field, "more than %zu items", max);
    if (size < min)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, field, "must not be empty");
    *count = size;
    return 0;
}

//  An array of delivery ids into a fresh array (NULL when empty). One pass:
//  the array grows as ids are read, so the list is never walked twice.
int
mmp_read_ids (mmp_pos_t *p, const char *field, size_t min, uint64_t **ids,
       size_t *count, mmp_error_t *err)
{
    if (*p != '[')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &mmp_top, field, "must be an array");
    *count = 0;
    uint64_t *array = NULL;
    size_t size = 0, capacity = 0;
    mmp_where_t where = { field, 0, NULL };
    p = mmp_space (p + 1);
    while (*p != ']') {
        if (size == MMP_MAX_IDS) {
            free (array);
            return mmp_fail_at (err, MMP_ERR_TOO_MANY, &mmp_top, field, "more than %d items", MMP_MAX_IDS);
        }
        if (size == capacity) {
            capacity = capacity? capacity * 4: 16;
            uint64_t *grown = realloc (array, capacity * sizeof *array);
            if (!grown) {
                free (array);
                return mmp_fail_at (err, MMP_ERR_TOO_LARGE, &mmp_top, field, "out of memory");
            }
            array = grown;
        }
        int64_t value = 0;
        where.index = size;
        if (mmp_read_int (p, NULL, 1, MMP_MAX_EXACT, &value, &where, err)) {
            free (array);
            return -2;
        }
        array [size++] = (uint64_t) value;
        p = mmp_space (mmp_skip (p));
        if (*p == ',')
            p = mmp_space (p + 1);
    }
    if (size < min)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, &mmp_top, field, "must not be empty");
    *ids = array;
    *count = size;
    return 0;
}

//  An array of uuid strings into a fresh array of pointers into raw.
int
mmp_read_uuids (mmp_pos_t *p, const char *field, size_t min, size_t max,
         const char ***ids, size_t *count, mmp_error_t *err)
{
    size_t size;
    if (mmp_read_array (p, field, min, max, &size, &mmp_top, err))
        return -2;
    *count = 0;
    if (size == 0)
        return 0;
    const char **array = malloc (size * sizeof *array);
    if (!array)
        return mmp_fail_at (err, MMP_ERR_TOO_LARGE, &mmp_top, field, "out of memory");
    mmp_where_t where = { field, 0, NULL };
    size_t index = 0;
    for (mmp_pos_t *item = mmp_first (p), *next; item; item = next, index++) {
        next = mmp_next (item);
        where.index = index;
        const char *text;
        size_t len;
        if (*item != '"') {
            free (array);
            return mmp_fail_at (err, MMP_ERR_BAD_TYPE, &where, NULL, "must be a uuid string");
        }
        mmp_read_text (item, NULL, SIZE_MAX, &text, &len, &where, err);
        if (!mdl_uuid_valid (text, len)) {
            free (array);
            return mmp_fail_at (err, MMP_ERR_BAD_MESSAGE_ID, &where, NULL, "not a canonical uuid");
        }
        array [index] = text;
    }
    *ids = array;
    *count = size;
    return 0;
}

//  Steps: ["save"|"restart"|"started"], each at most once, min..3 of them.
int
mmp_read_steps (mmp_pos_t *p, size_t min, unsigned *steps, const mmp_where_t *where, mmp_error_t *err)
{
    if (*p != '[')
        return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, "steps", "must be an array");
    unsigned seen = 0;
    size_t size = 0;
    for (mmp_pos_t *item = mmp_first (p), *next; item; item = next) {
        next = mmp_next (item);
        if (++size > 3)
            return mmp_fail_at (err, MMP_ERR_TOO_MANY, where, "steps", "more than 3 items");
        if (*item != '"')
            return mmp_fail_at (err, MMP_ERR_BAD_TYPE, where, "steps", "items must be strings");
        const char *text;
        mmp_read_text (item, NULL, SIZE_MAX, &text, NULL, where, err);
        unsigned step;
        if (strcmp (text, "save") == 0)
            step = MMP_STEP_SAVE;
        else
        if (strcmp (text, "restart") == 0)
            step = MMP_STEP_RESTART;
        else
        if (strcmp (text, "started") == 0)
            step = MMP_STEP_STARTED;
        else
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, "steps",
                           "items must be \"save\", \"restart\" or \"started\"");
        if (seen & step)
            return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, "steps", "a step is listed twice");
        seen |= step;
    }
    if (size < min)
        return mmp_fail_at (err, MMP_ERR_BAD_VALUE, where, "steps", "must not be empty");
    *steps = seen;
    return 0;
}
