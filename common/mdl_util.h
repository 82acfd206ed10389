/*  mdl_util: small helpers shared by every Mandrill program.
    Duration and number parsing for command-line flags, uuid4 making.
*/
#ifndef MDL_UTIL_H_INCLUDED
#define MDL_UTIL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

//  Parse a duration with a unit: "250ms", "10s", "1.5s", "2m", "1h".
//  A bare number is refused (ambiguous), except "0". Returns 0 and sets
//  *ms, or -1 for anything else (empty, negative, junk, overflow).
int mdl_parse_duration_ms (const char *text, int64_t *ms);

//  Parse a whole decimal number in [min, max]. Returns 0 or -1.
int mdl_parse_int (const char *text, int64_t min, int64_t max, int64_t *value);

//  Parse a decimal fraction in [min, max], e.g. "0.25". Returns 0 or -1.
int mdl_parse_double (const char *text, double min, double max, double *value);

//  Write a random (version 4) uuid in canonical lower-case form, 36
//  characters plus the terminating null, into out [37].
void mdl_uuid4 (char out [37]);

//  Is text a canonical uuid (8-4-4-4-12 hex digits, either case)?
bool mdl_uuid_valid (const char *text, size_t len);

//  Key callbacks for a CZMQ zhashx whose keys point at uint64_t values
//  (zhashx_set_key_hasher / zhashx_set_key_comparator).
size_t mdl_hash_u64 (const void *key);
int mdl_compare_u64 (const void *a, const void *b);

#endif
