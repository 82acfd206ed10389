/*  mmp_json: the one JSON writer of Mandrill: a growing text buffer and
    the string escaper every MMP body is built with (proto/mmp_encode.c
    builds the bodies themselves; nothing outside proto/ should need more
    than mmp_buf_init/free/clear and the accessors).

    Contract: appends never fail loudly. After a failed allocation the
    buffer keeps what it had, stops growing and reports failed, so a
    caller builds a whole body and checks once at the end. Text is always
    null-terminated once anything was appended. Cost: amortised O(1) per
    byte (the capacity doubles); one buffer reused per peer or per loop
    allocates only while it grows.

    The struct is declared here only so that a buffer can live on the
    stack or inside another struct: its fields are private to
    mmp_json.c. Read it through mmp_buf_data / mmp_buf_size /
    mmp_buf_failed.
*/
#ifndef MMP_JSON_H_INCLUDED
#define MMP_JSON_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    char *data;                 //  Private: null-terminated text
    size_t size;                //  Private: bytes used, excluding the null
    size_t capacity;            //  Private: bytes allocated
    bool failed;                //  Private: an allocation failed; text is incomplete
} mmp_buf_t;

void mmp_buf_init (mmp_buf_t *buf);
void mmp_buf_free (mmp_buf_t *buf);
void mmp_buf_clear (mmp_buf_t *buf);
//  The text so far ("" when nothing was appended), its size, and whether
//  an allocation failed since the last clear (the text is then incomplete).
const char *mmp_buf_data (const mmp_buf_t *buf);
size_t mmp_buf_size (const mmp_buf_t *buf);
bool mmp_buf_failed (const mmp_buf_t *buf);
//  Cut the text back to size bytes (size <= mmp_buf_size): undoes appends.
void mmp_buf_truncate (mmp_buf_t *buf, size_t size);
//  Take the text (malloc'ed, null-terminated; *size_p gets its size) and
//  leave the buffer empty. NULL if the buffer failed or is empty.
char *mmp_buf_detach (mmp_buf_t *buf, size_t *size_p);

void mmp_buf_append (mmp_buf_t *buf, const char *text, size_t len);
void mmp_buf_puts (mmp_buf_t *buf, const char *text);
void mmp_buf_printf (mmp_buf_t *buf, const char *format, ...) __attribute__ ((format (printf, 2, 3)));
void mmp_buf_u64 (mmp_buf_t *buf, uint64_t value);
void mmp_buf_i64 (mmp_buf_t *buf, int64_t value);
//  Append text as a JSON string literal, quotes and escapes included.
//  Invalid UTF-8 becomes U+FFFD, so the output is always valid UTF-8.
void mmp_buf_json_string (mmp_buf_t *buf, const char *text);
//  The same, cut (between characters) so that the decoded string is at
//  most max bytes: what a peer's too_long check will accept.
void mmp_buf_json_string_max (mmp_buf_t *buf, const char *text, size_t max);
//  The same for text already known to be valid UTF-8 (a decoded string),
//  without the check.
void mmp_buf_json_string_valid (mmp_buf_t *buf, const char *text);
//  Append [a,b,c] of ids.
void mmp_buf_id_array (mmp_buf_t *buf, const uint64_t *ids, size_t count);

//  Length of the valid UTF-8 sequence at text (1..4), or 0 if the bytes
//  there are not one (overlong forms, surrogates, values over U+10FFFF,
//  a sequence cut by end), per RFC 3629.
size_t mmp_utf8_length (const unsigned char *text, const unsigned char *end);

#endif
