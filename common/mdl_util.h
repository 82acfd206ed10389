/*  mdl_util: kept only so that files not yet moved to the split headers
    still build. New code includes what it uses: mdl_parse.h (durations,
    numbers), mdl_uuid.h (uuid4), mdl_map.h (the zhashx u64 callbacks).
    Remove this file once nothing includes it.
*/
#ifndef MDL_UTIL_H_INCLUDED
#define MDL_UTIL_H_INCLUDED

#include "mdl_map.h"
#include "mdl_parse.h"
#include "mdl_uuid.h"

#endif
