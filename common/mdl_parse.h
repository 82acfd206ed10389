/*  mdl_parse: the text forms of durations and numbers that every Mandrill
    program accepts on its command line, in its environment and in its
    configuration file.

    Contract: each parser takes the whole text (trailing junk is an error),
    never asserts on its input, and writes *value only on success, so a
    caller's default survives a failed parse. All are O(length of text)
    and allocate nothing.
*/
#ifndef MDL_PARSE_H_INCLUDED
#define MDL_PARSE_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

//  Parse a duration with a unit: "250ms", "10s", "1.5s", "2m", "1h".
//  A bare number is refused (ambiguous), except "0". Returns 0 and sets
//  *ms, or -1 for anything else (empty, negative, junk, overflow).
int mdl_parse_duration_ms (const char *text, int64_t *ms);

//  Parse a whole decimal number in [min, max]. Returns 0 or -1.
int mdl_parse_int (const char *text, int64_t min, int64_t max, int64_t *value);

//  Parse a decimal fraction in [min, max], e.g. "0.25". Returns 0 or -1.
int mdl_parse_double (const char *text, double min, double max, double *value);

//  Parse a boolean: "true", "yes", "on", "1" or "false", "no", "off", "0"
//  (any case). Returns 0 or -1.
int mdl_parse_bool (const char *text, bool *value);

#endif
