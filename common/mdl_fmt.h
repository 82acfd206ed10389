/*  mdl_fmt: the one integer-to-decimal writer of Mandrill.

    printf is slow on hot paths (the broker writes a delivery id and an
    attempt into every DELIVER), so ids and counters are written with
    these instead. Each writes the digits and a terminating null at out,
    which must have room for MDL_FMT_U64_SIZE (or MDL_FMT_I64_SIZE) bytes,
    and returns the number of digits (the null not counted), so a caller
    building text in place advances its cursor by the result.
    Cost: O(digits), no allocation, no locale.
*/
#ifndef MDL_FMT_H_INCLUDED
#define MDL_FMT_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

#define MDL_FMT_U64_SIZE 21     //  "18446744073709551615" and a null
#define MDL_FMT_I64_SIZE 21     //  "-9223372036854775808" and a null

size_t mdl_fmt_u64 (char *out, uint64_t value);
size_t mdl_fmt_i64 (char *out, int64_t value);

#endif
