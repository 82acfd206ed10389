/*  mdl_util: see mdl_util.h. */
#include "mdl_util.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

int
mdl_parse_duration_ms (const char *text, int64_t *ms)
{
    if (!text || !*text)
        return -1;
    if (strcmp (text, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (!isdigit ((unsigned char) *text) && *text != '.')
        return -1;
    errno = 0;
    char *end;
    double value = strtod (text, &end);
    if (errno || end == text || !isfinite (value) || value < 0)
        return -1;
    double scale;
    if (strcmp (end, "ms") == 0)
        scale = 1;
    else
    if (strcmp (end, "s") == 0)
        scale = 1000;
    else
    if (strcmp (end, "m") == 0)
        scale = 60000;
    else
    if (strcmp (end, "h") == 0)
        scale = 3600000;
    else
        return -1;
    double result = value * scale;
    if (result > 9.0e15)
        return -1;
    *ms = (int64_t) llround (result);
    return 0;
}

int
mdl_parse_int (const char *text, int64_t min, int64_t max, int64_t *value)
{
    if (!text || !*text)
        return -1;
    errno = 0;
    char *end;
    long long parsed = strtoll (text, &end, 10);
    if (errno || *end || end == text || parsed < min || parsed > max)
        return -1;
    *value = parsed;
    return 0;
}

int
mdl_parse_double (const char *text, double min, double max, double *value)
{
    if (!text || !*text)
        return -1;
    errno = 0;
    char *end;
    double parsed = strtod (text, &end);
    if (errno || *end || end == text || !isfinite (parsed) || parsed < min || parsed > max)
        return -1;
    *value = parsed;
    return 0;
}

//  Random bytes come from getrandom () in blocks of 4 KiB, so a uuid costs
//  a copy, not a system call. The pool is per thread.
static _Thread_local unsigned char s_pool [4096];
static _Thread_local size_t s_pool_left;

static void
s_random_bytes (unsigned char *out, size_t len)
{
    while (len) {
        if (s_pool_left == 0) {
            size_t got = 0;
            while (got < sizeof s_pool) {
                ssize_t rc = getrandom (s_pool + got, sizeof s_pool - got, 0);
                if (rc > 0)
                    got += (size_t) rc;
                else
                if (rc < 0 && errno != EINTR)
                    abort ();       //  The kernel's CSPRNG is gone: nothing sane to do
            }
            s_pool_left = sizeof s_pool;
        }
        size_t take = len < s_pool_left ? len : s_pool_left;
        memcpy (out, s_pool + sizeof s_pool - s_pool_left, take);
        s_pool_left -= take;
        out += take;
        len -= take;
    }
}

void
mdl_uuid4 (char out [37])
{
    static const char hex [] = "0123456789abcdef";
    unsigned char bytes [16];
    s_random_bytes (bytes, sizeof bytes);
    bytes [6] = (bytes [6] & 0x0F) | 0x40;      //  Version 4
    bytes [8] = (bytes [8] & 0x3F) | 0x80;      //  RFC 4122 variant
    char *cursor = out;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            *cursor++ = '-';
        *cursor++ = hex [bytes [i] >> 4];
        *cursor++ = hex [bytes [i] & 15];
    }
    *cursor = 0;
}

bool
mdl_uuid_valid (const char *text, size_t len)
{
    if (!text || len != 36)
        return false;
    for (size_t i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (text [i] != '-')
                return false;
        }
        else
        if (!isxdigit ((unsigned char) text [i]))
            return false;
    }
    return true;
}

size_t
mdl_hash_u64 (const void *key)
{
    //  The finaliser of MurmurHash3: sequential ids spread over all buckets
    uint64_t x = *(const uint64_t *) key;
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return (size_t) x;
}

int
mdl_compare_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}
