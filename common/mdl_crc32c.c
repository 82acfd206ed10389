/*  mdl_crc32c: see mdl_crc32c.h. */
#include "mdl_crc32c.h"

#include <pthread.h>
#include <string.h>

#if defined (__x86_64__)
#include <nmmintrin.h>
#endif

static uint32_t s_table [8][256];
static pthread_once_t s_once = PTHREAD_ONCE_INIT;
static bool s_hw;

static void
s_init (void)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int k = 0; k < 8; k++)
            crc = (crc & 1)? (crc >> 1) ^ 0x82F63B78u: crc >> 1;
        s_table [0][n] = crc;
    }
    for (uint32_t n = 0; n < 256; n++)
        for (int t = 1; t < 8; t++)
            s_table [t][n] = (s_table [t - 1][n] >> 8) ^ s_table [0][s_table [t - 1][n] & 0xff];
#if defined (__x86_64__)
    __builtin_cpu_init ();
    s_hw = __builtin_cpu_supports ("sse4.2");
#endif
}

#if defined (__x86_64__)
__attribute__ ((target ("sse4.2")))
static uint32_t
s_hw_update (uint32_t crc, const uint8_t *p, size_t size)
{
    uint64_t c = crc;
    while (size >= 8) {
        uint64_t word;
        memcpy (&word, p, 8);
        c = _mm_crc32_u64 (c, word);
        p += 8;
        size -= 8;
    }
    uint32_t c32 = (uint32_t) c;
    while (size--)
        c32 = _mm_crc32_u8 (c32, *p++);
    return c32;
}
#endif

//  Slicing-by-8; the words are read as little-endian, as the table
//  expects, on any host.
static uint32_t
s_sw_update (uint32_t crc, const uint8_t *p, size_t size)
{
    while (size >= 8) {
        uint32_t lo = (uint32_t) p [0] | (uint32_t) p [1] << 8
                    | (uint32_t) p [2] << 16 | (uint32_t) p [3] << 24;
        uint32_t hi = (uint32_t) p [4] | (uint32_t) p [5] << 8
                    | (uint32_t) p [6] << 16 | (uint32_t) p [7] << 24;
        lo ^= crc;
        crc = s_table [7][lo & 0xff] ^ s_table [6][(lo >> 8) & 0xff]
            ^ s_table [5][(lo >> 16) & 0xff] ^ s_table [4][lo >> 24]
            ^ s_table [3][hi & 0xff] ^ s_table [2][(hi >> 8) & 0xff]
            ^ s_table [1][(hi >> 16) & 0xff] ^ s_table [0][hi >> 24];
        p += 8;
        size -= 8;
    }
    while (size--)
        crc = (crc >> 8) ^ s_table [0][(crc ^ *p++) & 0xff];
    return crc;
}

uint32_t
mdl_crc32c_sw (uint32_t crc, const void *data, size_t size)
{
    pthread_once (&s_once, s_init);
    return ~s_sw_update (~crc, (const uint8_t *) data, size);
}

uint32_t
mdl_crc32c (uint32_t crc, const void *data, size_t size)
{
    pthread_once (&s_once, s_init);
#if defined (__x86_64__)
    if (s_hw)
        return ~s_hw_update (~crc, (const uint8_t *) data, size);
#endif
    return ~s_sw_update (~crc, (const uint8_t *) data, size);
}

bool
mdl_crc32c_hw (void)
{
    pthread_once (&s_once, s_init);
    return s_hw;
}
