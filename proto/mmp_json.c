/*  mmp_json: the growing text buffer and the JSON string escaper. See
    mmp_json.h for the contract. Every MMP body Mandrill sends is built
    with these (through proto/mmp_encode.c), so there is one escaper and
    one place that decides what valid output is: JSON in valid UTF-8,
    control characters escaped, invalid input bytes as U+FFFD.
*/
#include "mmp_json.h"

#include <assert.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_fmt.h"

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

const char *
mmp_buf_data (const mmp_buf_t *buf)
{
    assert (buf);
    return buf->data? buf->data: "";
}

size_t
mmp_buf_size (const mmp_buf_t *buf)
{
    assert (buf);
    return buf->size;
}

bool
mmp_buf_failed (const mmp_buf_t *buf)
{
    assert (buf);
    return buf->failed;
}

void
mmp_buf_truncate (mmp_buf_t *buf, size_t size)
{
    assert (buf);
    assert (size <= buf->size);
    buf->size = size;
    if (buf->data)
        buf->data [size] = 0;
}

char *
mmp_buf_detach (mmp_buf_t *buf, size_t *size_p)
{
    assert (buf);
    char *data = buf->failed? NULL: buf->data;
    if (size_p)
        *size_p = data? buf->size: 0;
    if (!data)
        free (buf->data);
    mmp_buf_init (buf);
    return data;
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
mmp_buf_i64 (mmp_buf_t *buf, int64_t value)
{
    char text [MDL_FMT_I64_SIZE];
    mmp_buf_append (buf, text, mdl_fmt_i64 (text, value));
}

void
mmp_buf_u64 (mmp_buf_t *buf, uint64_t value)
{
    char text [MDL_FMT_U64_SIZE];
    mmp_buf_append (buf, text, mdl_fmt_u64 (text, value));
}

size_t
mmp_utf8_length (const unsigned char *text, const unsigned char *end)
{
    unsigned char c = text [0];
    if (c < 0x80)
        return 1;
    size_t left = (size_t) (end - text);
    if (c >= 0xC2 && c <= 0xDF)
        return left >= 2 && (text [1] & 0xC0) == 0x80? 2: 0;
    if (c >= 0xE0 && c <= 0xEF) {
        unsigned char low = c == 0xE0? 0xA0: 0x80;
        unsigned char high = c == 0xED? 0x9F: 0xBF;
        if (left < 3 || text [1] < low || text [1] > high || (text [2] & 0xC0) != 0x80)
            return 0;
        return 3;
    }
    if (c >= 0xF0 && c <= 0xF4) {
        unsigned char low = c == 0xF0? 0x90: 0x80;
        unsigned char high = c == 0xF4? 0x8F: 0xBF;
        if (left < 4 || text [1] < low || text [1] > high
        ||  (text [2] & 0xC0) != 0x80 || (text [3] & 0xC0) != 0x80)
            return 0;
        return 4;
    }
    return 0;
}

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

//  Append text as a JSON string whose decoded form is at most max bytes,
//  cut between characters, never inside one. Invalid UTF-8 bytes become
//  U+FFFD, so the output is always valid JSON in valid UTF-8.
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
            size_t len = mmp_utf8_length (cursor, cursor + 4);
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
mmp_buf_json_string_max (mmp_buf_t *buf, const char *text, size_t max)
{
    assert (buf);
    s_json_string (buf, text, max);
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
        //  Its null lands where the next comma or the ']' goes
        cursor += mdl_fmt_u64 (cursor, ids [i]);
    }
    *cursor++ = ']';
    *cursor = 0;
    buf->size = (size_t) (cursor - buf->data);
}
