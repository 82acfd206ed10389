/*  mdl_uuid: see mdl_uuid.h. */
#include "mdl_uuid.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

static _Thread_local unsigned char s_pool [4096];   //  Random bytes not yet used
static _Thread_local size_t s_pool_left;            //  How many of them are left

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
