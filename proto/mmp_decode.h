/*  mmp_decode.h: what the three parts of the decoder share (not part of
    the public API in mmp.h).

    mmp_scan.c   pass 1: the body against RFC 8259 and RFC 3629, one linear
                 scan, no allocation; records where top-level values end.
    mmp_walk.c   pass 2 primitives on text pass 1 accepted: locate an
                 object's members against a schema, skip values, read
                 integers, strings (unescaped in place), arrays of ids.
    mmp_decode.c the command table, the per-command bodies, mmp_decode.

    Positions (mmp_pos_t *) point into the message's own copy of the body,
    which has MMP_PADDING zero bytes after it: the word-at-a-time loops
    read up to 7 bytes past the byte they test. Every function here
    returns 0 or -2 (err set), like the public decoder.
*/
#ifndef MMP_DECODE_H_INCLUDED
#define MMP_DECODE_H_INCLUDED

#include "mmp.h"

#include <stdint.h>
#include <string.h>

//  Zero bytes after the copy of the body
#define MMP_PADDING 9

//  Largest integer a JSON double carries exactly; the bound for every
//  integer field that has no tighter limit of its own.
#define MMP_MAX_EXACT   ((int64_t) MMP_MAX_DELIVERY_ID)

//  Eight string bytes at once: true when none of them is a quote, a
//  backslash, a control character or a non-ASCII byte, i.e. none the scan
//  must look at. (The has-zero-byte and has-byte-below-n tricks: exact as
//  a yes/no.)
static inline bool
mmp_plain_word (const unsigned char *cursor)
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

static inline int
mmp_hex4 (const unsigned char *p, unsigned *value)
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

//  Where each top-level member's value ends (offsets from the start of the
//  body), recorded by mmp_scan so that the schema walk of the top object
//  need not skip over a 1000-request array a second time.
#define MMP_MAX_HINTS 8

typedef struct {
    unsigned char *base;            //  Start of the copy of the body
    size_t ends [MMP_MAX_HINTS];      //  End offset of member value i
    size_t count;                   //  How many were recorded
} mmp_hints_t;

//  Where an error is: built into the reason only when something failed, so
//  the happy path never formats text.
typedef struct {
    const char *array;          //  Enclosing array field, e.g. "messages", or NULL
    size_t index;               //  Item index in that array
    const char *sub;            //  Object field inside the item, e.g. "message", or NULL
} mmp_where_t;


typedef unsigned char mmp_pos_t;

static inline mmp_pos_t *
mmp_space (mmp_pos_t *p)
{
    while (*p == ' ' || *p == '\n' || *p == '\r' || *p == '\t')
        p++;
    return p;
}

#define MMP_MAX_FIELDS 8

typedef struct {
    const char *names [MMP_MAX_FIELDS];   //  Field names, NULL-terminated
} mmp_schema_t;

extern const mmp_where_t mmp_top;          //  The body object itself

//  Set *err to code and a formatted reason; returns -2 (malformed).
int mmp_fail (mmp_error_t *err, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));
//  The same, the reason prefixed with where and field ("messages[3].hostname: ...").
int mmp_fail_at (mmp_error_t *err, const char *code, const mmp_where_t *where,
                 const char *field, const char *format, ...)
    __attribute__ ((format (printf, 5, 6)));
//  Cut text at its first byte that does not start valid UTF-8.
void mmp_clean_utf8 (char *text);

//  Pass 1 (mmp_scan.c): 0 when the size bytes at base are one valid JSON
//  text (section 3 of PROTOCOL.md), with hints->ends filled for the first
//  MMP_MAX_HINTS top-level member values; else -2.
int mmp_scan (const unsigned char *base, size_t size, mmp_hints_t *hints, mmp_error_t *err);
//  Deepest nesting in one JSON value that mmp_scan passed, the value's
//  own brackets counting 1 (0 for a scalar). O(size), no allocation.
int mmp_nesting (const unsigned char *json, size_t size);

//  Pass 2 (mmp_walk.c). mmp_skip: past the value at p. mmp_unescape: the
//  string at p (its quote) unescaped into out (p + 1 for in place),
//  null-terminated, at most limit bytes kept; returns its full length,
//  *end_p past the closing quote. mmp_name: a member name into a buffer.
mmp_pos_t *mmp_skip (mmp_pos_t *p);
size_t mmp_unescape (mmp_pos_t *p, unsigned char *out, size_t limit, mmp_pos_t **end_p);
mmp_pos_t *mmp_name (mmp_pos_t *p, char *name, size_t size, size_t *len);
//  Locate the members of the object at p by schema into slots (value
//  positions or NULL); unknown_field / bad_json (repeated). *end_p past
//  the object. Decodes nothing. _top uses the hints of pass 1.
int mmp_collect (mmp_pos_t *p, const mmp_schema_t *schema, mmp_pos_t **slots, mmp_pos_t **end_p,
                 const mmp_where_t *where, mmp_error_t *err);
int mmp_collect_top (mmp_pos_t *p, const mmp_hints_t *hints, const mmp_schema_t *schema,
                     mmp_pos_t **slots, mmp_pos_t **end_p, const mmp_where_t *where,
                     mmp_error_t *err);
//  Array items: the first (NULL if empty), the one after p (not yet decoded).
mmp_pos_t *mmp_first (mmp_pos_t *p);
mmp_pos_t *mmp_next (mmp_pos_t *p);
int mmp_missing (mmp_error_t *err, const mmp_where_t *where, const char *field);
int mmp_read_int (mmp_pos_t *p, const char *field, int64_t min, int64_t max,
                  int64_t *value, const mmp_where_t *where, mmp_error_t *err);
int mmp_read_text (mmp_pos_t *p, const char *field, size_t max, const char **value,
                   size_t *len, const mmp_where_t *where, mmp_error_t *err);
int mmp_read_array (mmp_pos_t *p, const char *field, size_t min, size_t max,
                    size_t *count, const mmp_where_t *where, mmp_error_t *err);
int mmp_read_ids (mmp_pos_t *p, const char *field, size_t min, uint64_t **ids,
                  size_t *count, mmp_error_t *err);
int mmp_read_uuids (mmp_pos_t *p, const char *field, size_t min, size_t max,
                    const char ***ids, size_t *count, mmp_error_t *err);
int mmp_read_steps (mmp_pos_t *p, size_t min, unsigned *steps, const mmp_where_t *where,
                    mmp_error_t *err);

#endif
