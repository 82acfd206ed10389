/*  mdl_fmt: see mdl_fmt.h. */
#include "mdl_fmt.h"

#include <string.h>

size_t
mdl_fmt_u64 (char *out, uint64_t value)
{
    char digits [MDL_FMT_U64_SIZE];
    char *start = digits + sizeof digits;
    do {
        *--start = (char) ('0' + value % 10);
        value /= 10;
    } while (value);
    size_t size = (size_t) (digits + sizeof digits - start);
    memcpy (out, start, size);
    out [size] = 0;
    return size;
}

size_t
mdl_fmt_i64 (char *out, int64_t value)
{
    if (value >= 0)
        return mdl_fmt_u64 (out, (uint64_t) value);
    //  Negate in unsigned arithmetic: -INT64_MIN does not fit an int64_t
    *out = '-';
    return 1 + mdl_fmt_u64 (out + 1, 0 - (uint64_t) value);
}
