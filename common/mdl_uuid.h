/*  mdl_uuid: random (version 4) uuids, the message ids of Mandrill.

    Random bytes come from getrandom () through a per-thread pool of 4 KiB,
    so a uuid costs a copy, not a system call; the pool is refilled with
    one call per 256 uuids. If the kernel's random source fails for a
    reason other than EINTR the process aborts: there is no safe fallback
    for ids that must never collide.
*/
#ifndef MDL_UUID_H_INCLUDED
#define MDL_UUID_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

//  Write a random (version 4) uuid in canonical lower-case form, 36
//  characters plus the terminating null, into out [37].
void mdl_uuid4 (char out [37]);

//  Is text (len bytes, need not be null-terminated) a canonical uuid
//  (8-4-4-4-12 hex digits, either case)? False for NULL.
bool mdl_uuid_valid (const char *text, size_t len);

#endif
