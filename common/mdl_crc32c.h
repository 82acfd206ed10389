/*  mdl_crc32c: CRC-32C (Castagnoli, polynomial 0x1EDC6F41, reflected), the
    checksum of the broker journal's records and file headers.

    Two implementations that give the same result: the SSE4.2 crc32
    instruction (x86-64 CPUs that have it, chosen once at first use), and a
    slicing-by-8 table (every other CPU; 8 KiB of tables built once).
    mdl_crc32c picks the fast one; mdl_crc32c_sw always runs the table, so
    the portable path is tested on x86 too.

    Contract: crc continues a running checksum (start with 0), so
    mdl_crc32c (mdl_crc32c (0, a, n), b, m) is the CRC of a followed by b.
    Pure functions, safe from any thread (the tables are built under
    pthread_once). Cost: O(size); about 0.1 ns/byte with the instruction,
    about 1 ns/byte with the table. Never fails.
*/
#ifndef MDL_CRC32C_H_INCLUDED
#define MDL_CRC32C_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  CRC-32C of data, continuing from crc, by the fastest path available.
uint32_t mdl_crc32c (uint32_t crc, const void *data, size_t size);

//  The same by the table, whatever the CPU.
uint32_t mdl_crc32c_sw (uint32_t crc, const void *data, size_t size);

//  True when mdl_crc32c uses the CPU's instruction.
bool mdl_crc32c_hw (void);

#endif
