/*  mmp_decode.h: what the decoder shares with the rest of proto/ (not
    part of the public API in mmp.h).
*/
#ifndef MMP_DECODE_H_INCLUDED
#define MMP_DECODE_H_INCLUDED

#include "mmp.h"

//  Set *err to code and a formatted reason; returns -2 (malformed).
int mmp_fail (mmp_error_t *err, const char *code, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

#endif
