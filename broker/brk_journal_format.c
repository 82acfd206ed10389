/*  brk_journal_format: the journal's bytes (JOURNAL.md, "File header" and
    "Records"). Encoding appends sealed records to a growable buffer;
    decoding checks a record's length, checksum and every byte of its body,
    since a matching checksum proves only that the bytes are the ones
    written. Pure functions on memory: no I/O, no shared state. Cost: O(the
    record) each; the checksum is mdl_crc32c.
*/
#include "brk_journal_internal.h"
#include "mdl_crc32c.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

//  Not mdl_array_reserve: this is a byte buffer that reserves room for
//  "more" bytes past its fill, starting at 64 KiB (a group commit's worth)
//  rather than at 16 items, so the first records never pay for growth.
int
brk_journal_bytes_reserve (brk_journal_bytes_t *bytes, size_t more)
{
    if (bytes->size + more <= bytes->capacity)
        return 0;
    size_t capacity = bytes->capacity? bytes->capacity: 64 * 1024;
    while (capacity < bytes->size + more)
        capacity *= 2;
    uint8_t *data = realloc (bytes->data, capacity);
    if (!data)
        return -1;
    bytes->data = data;
    bytes->capacity = capacity;
    return 0;
}

void
brk_journal_bytes_free (brk_journal_bytes_t *bytes)
{
    free (bytes->data);
    memset (bytes, 0, sizeof (*bytes));
}

uint32_t
brk_journal_crc32c (uint32_t crc, const void *data, size_t size)
{
    return mdl_crc32c (crc, data, size);
}

//  str = u32 n, n bytes, a zero byte. The writer encodes C strings, so
//  a zero byte inside is damage (the broker would see a shorter text).
static int
s_decode_str (const uint8_t *body, size_t size, size_t *pos,
              const char **text, uint32_t *len)
{
    if (size - *pos < 5)
        return -1;
    uint32_t n = brk_journal_get32 (body + *pos);
    if (n > size - *pos - 5 || body [*pos + 4 + n] != 0
    ||  memchr (body + *pos + 4, 0, n))
        return -1;
    *text = (const char *) body + *pos + 4;
    *len = n;
    *pos += 5 + n;
    return 0;
}

static int
s_decode_id (const uint8_t *body, size_t size, size_t *pos, brk_journal_record_t *record)
{
    return s_decode_str (body, size, pos, &record->id, &record->id_len);
}

int
brk_journal_decode (const uint8_t *body, size_t size, uint32_t version,
                    brk_journal_record_t *record)
{
    memset (record, 0, sizeof (*record));
    if (size < 1)
        return -1;
    record->type = body [0];
    size_t pos = 1;
    switch (record->type) {
        case REC_PUBLISH:
        case REC_DEAD:
            if (size - pos < 8)
                return -1;
            record->number = brk_journal_get64 (body + pos);
            pos += 8;
            if (s_decode_id (body, size, &pos, record)
            ||  s_decode_str (body, size, &pos, &record->text, &record->text_len))
                return -1;
            if (record->type == REC_DEAD
            &&  s_decode_str (body, size, &pos, &record->text2, &record->text2_len))
                return -1;
            //  Version 3: the publisher's authenticated name ("" for none)
            if (record->type == REC_PUBLISH && version >= 3
            &&  (s_decode_str (body, size, &pos, &record->text2, &record->text2_len)
              || record->text2_len > PUBLISHER_MAX))
                return -1;
            break;
        case REC_ACK:
        case REC_REPLAY:
            if (s_decode_id (body, size, &pos, record))
                return -1;
            break;
        case REC_ATTEMPT:
        case REC_PROGRESS:
            if (size - pos < 4)
                return -1;
            record->value = brk_journal_get32 (body + pos);
            pos += 4;
            if (record->type == REC_ATTEMPT) {
                if (size - pos < 8)
                    return -1;
                record->number = brk_journal_get64 (body + pos);
                pos += 8;
            }
            if (s_decode_id (body, size, &pos, record))
                return -1;
            break;
        case REC_EPOCH:
            if (size - pos < 8)
                return -1;
            record->number = brk_journal_get64 (body + pos);
            pos += 8;
            break;
        case REC_SYNCED:
            if (version < 2 || size - pos < 8)
                return -1;
            record->number = brk_journal_get64 (body + pos);
            pos += 8;
            break;
        default:
            return -1;
    }
    return pos == size? 0: -1;
}

size_t
brk_journal_check_record (const uint8_t *data, size_t avail, uint32_t version,
                          brk_journal_record_t *record)
{
    if (avail < RECORD_HEAD + 1)
        return 0;
    uint32_t len = brk_journal_get32 (data);
    if (len < 1 || len > RECORD_MAX || len > avail - RECORD_HEAD)
        return 0;
    uint32_t crc = mdl_crc32c (0, data, 4);
    crc = mdl_crc32c (crc, data + RECORD_HEAD, len);
    if (crc != brk_journal_get32 (data + 4))
        return 0;
    if (brk_journal_decode (data + RECORD_HEAD, len, version, record))
        return 0;
    return RECORD_HEAD + len;
}

//  Encoder: reserve, fill, then seal (length and checksum).
typedef struct {
    uint8_t *start;             //  Record start in the buffer
    uint8_t *pos;               //  Next byte to fill
} s_encoder_t;

static void
s_enc_str (s_encoder_t *enc, const char *text, size_t len)
{
    brk_journal_put32 (enc->pos, (uint32_t) len);
    memcpy (enc->pos + 4, text, len);
    enc->pos [4 + len] = 0;
    enc->pos += 5 + len;
}

static void
s_enc_seal (s_encoder_t *enc)
{
    uint32_t len = (uint32_t) (enc->pos - enc->start - RECORD_HEAD);
    brk_journal_put32 (enc->start, len);
    uint32_t crc = mdl_crc32c (0, enc->start, 4);
    crc = mdl_crc32c (crc, enc->start + RECORD_HEAD, len);
    brk_journal_put32 (enc->start + 4, crc);
}

int
brk_journal_encode_record (brk_journal_bytes_t *bytes, int type, uint64_t number,
                           uint32_t value, const char *id, const char *text,
                           const char *text2)
{
    size_t id_len = id? strlen (id): 0;
    size_t text_len = text? strlen (text): 0;
    size_t text2_len = text2? strlen (text2): 0;
    size_t body = 1 + (id? 5 + id_len: 0) + (text? 5 + text_len: 0)
                + (text2? 5 + text2_len: 0);
    bool has_number = type == REC_PUBLISH || type == REC_DEAD || type == REC_EPOCH
                   || type == REC_ATTEMPT || type == REC_SYNCED;
    if (has_number)
        body += 8;
    if (type == REC_ATTEMPT || type == REC_PROGRESS)
        body += 4;
    if (body > RECORD_MAX) {
        errno = EMSGSIZE;
        return -1;
    }
    if (brk_journal_bytes_reserve (bytes, RECORD_HEAD + body)) {
        errno = ENOMEM;
        return -1;
    }
    s_encoder_t enc = { bytes->data + bytes->size, bytes->data + bytes->size + RECORD_HEAD };
    *enc.pos++ = (uint8_t) type;
    if (has_number && type != REC_ATTEMPT) {
        brk_journal_put64 (enc.pos, number);
        enc.pos += 8;
    }
    if (type == REC_ATTEMPT || type == REC_PROGRESS) {
        brk_journal_put32 (enc.pos, value);
        enc.pos += 4;
    }
    if (type == REC_ATTEMPT) {
        brk_journal_put64 (enc.pos, number);
        enc.pos += 8;
    }
    if (id)
        s_enc_str (&enc, id, id_len);
    if (text)
        s_enc_str (&enc, text, text_len);
    if (text2)
        s_enc_str (&enc, text2, text2_len);
    s_enc_seal (&enc);
    bytes->size += RECORD_HEAD + body;
    return 0;
}

void
brk_journal_header_encode (uint8_t *out, uint32_t kind, uint32_t number, uint32_t prev)
{
    memcpy (out, JOURNAL_MAGIC, 8);
    brk_journal_put32 (out + 8, JOURNAL_VERSION);
    brk_journal_put32 (out + 12, kind);
    brk_journal_put32 (out + 16, number);
    brk_journal_put32 (out + 20, prev);
    brk_journal_put64 (out + 24, brk_journal_wall_ms ());
    brk_journal_put32 (out + 32, 0);
    brk_journal_put32 (out + 36, mdl_crc32c (0, out, 36));
}
