/*  Tests for mdl_crc32c: both paths (the table always, whatever the CPU)
    against published vectors (RFC 3720 appendix B.4 and the usual check
    value), chaining, and the two paths against each other on every length
    and alignment up to a few hundred bytes.
*/
#include <criterion/criterion.h>
#include <stdint.h>
#include <string.h>

#include "mdl_crc32c.h"

typedef uint32_t (crc_fn) (uint32_t crc, const void *data, size_t size);

static void
s_vectors (crc_fn *crc, const char *name)
{
    uint8_t buf [32];
    cr_expect_eq (crc (0, "", 0), 0, "%s: empty", name);
    cr_expect_eq (crc (0, "123456789", 9), 0xE3069283u, "%s: check value", name);
    memset (buf, 0, sizeof (buf));
    cr_expect_eq (crc (0, buf, 32), 0x8A9136AAu, "%s: 32 zeros", name);
    memset (buf, 0xff, sizeof (buf));
    cr_expect_eq (crc (0, buf, 32), 0x62A8AB43u, "%s: 32 ones", name);
    for (int i = 0; i < 32; i++)
        buf [i] = (uint8_t) i;
    cr_expect_eq (crc (0, buf, 32), 0x46DD794Eu, "%s: incrementing", name);
    for (int i = 0; i < 32; i++)
        buf [i] = (uint8_t) (31 - i);
    cr_expect_eq (crc (0, buf, 32), 0x113FDB5Cu, "%s: decrementing", name);
    //  Chained in two parts, at every split point
    for (size_t split = 0; split <= 9; split++)
        cr_expect_eq (crc (crc (0, "123456789", split), "123456789" + split, 9 - split),
                      0xE3069283u, "%s: split at %zu", name, split);
}

Test (mdl_crc32c, software_path_vectors, .timeout = 10)
{
    s_vectors (mdl_crc32c_sw, "table");
}

Test (mdl_crc32c, default_path_vectors, .timeout = 10)
{
    s_vectors (mdl_crc32c, mdl_crc32c_hw ()? "instruction": "table");
}

Test (mdl_crc32c, paths_agree_on_every_length_and_alignment, .timeout = 10)
{
    uint8_t data [600];
    uint32_t state = 12345;
    for (size_t i = 0; i < sizeof (data); i++) {
        state = state * 1103515245u + 12345u;
        data [i] = (uint8_t) (state >> 16);
    }
    for (size_t offset = 0; offset < 8; offset++)
        for (size_t size = 0; size + offset <= 520; size++)
            cr_assert_eq (mdl_crc32c (7, data + offset, size),
                          mdl_crc32c_sw (7, data + offset, size),
                          "offset %zu size %zu", offset, size);
}
