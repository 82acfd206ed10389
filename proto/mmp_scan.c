/*  mmp_scan: pass 1 of the MMP/1 decoder. See mmp_decode.h.

    One linear scan over the raw body with no allocation and no recursion
    (a stack of MMP_MAX_DEPTH bytes): RFC 8259 syntax and numbers, nesting
    depth, raw control characters, escapes, \u0000 and lone surrogates,
    and RFC 3629 UTF-8 inside strings, the first problem in the text being
    the one reported. Cost: O(body bytes); plain ASCII inside strings is
    taken eight bytes at a time.
*/
#include "mmp_decode.h"

#include <pthread.h>
#include <stdbool.h>

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


static inline const unsigned char *
s_ws (const unsigned char *p, const unsigned char *end)
{
    while (p < end && (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t'))
        p++;
    return p;
}


//  A string from its opening quote; *pp moves past the closing quote.
static int
s_check_string (const unsigned char **pp, const unsigned char *base,
                const unsigned char *end, mmp_error_t *err)
{
    const unsigned char *cursor = *pp + 1;
    while (true) {
        while (end - cursor >= 8 && mmp_plain_word (cursor))
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
        if (c != 'u' || end - cursor < 6 || mmp_hex4 (cursor + 2, &code))
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
            ||  mmp_hex4 (cursor + 2, &low) || low < 0xDC00 || low > 0xDFFF)
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


int
mmp_scan (const unsigned char *base, size_t size, mmp_hints_t *hints, mmp_error_t *err)
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
    if (depth == 1 && hints->count < MMP_MAX_HINTS)
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
//  Depth of one value the scan passed (see mmp_decode.h).

int
mmp_nesting (const unsigned char *json, size_t size)
{
    int depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < size; i++) {
        unsigned char c = json [i];
        if (in_string) {
            if (c == '\\')
                i++;
            else
            if (c == '"')
                in_string = false;
        }
        else
        if (c == '"')
            in_string = true;
        else
        if (c == '{' || c == '[') {
            if (++depth > deepest)
                deepest = depth;
        }
        else
        if (c == '}' || c == ']')
            depth--;
    }
    return deepest;
}
