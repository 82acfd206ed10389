/*  brk_state_file: a small file in the data directory, replaced whole and
    atomically: written to NAME.tmp, fsynced, renamed over NAME, and the
    directory fsynced, so after a crash the file holds either the old
    text or the new one, never a mix. The journal store keeps the restart
    policy's state this way (BRK_POLICY_STATE_FILE).

    Failure: write returns -1 with errno (the old file stays as it was);
    read returns NULL with errno (0 when there is no such file).
    Cost: one open, write, two fsyncs and a rename per write: it blocks
    the caller for the length of two fsyncs, so callers write rarely.
*/
#ifndef BRK_STATE_FILE_H_INCLUDED
#define BRK_STATE_FILE_H_INCLUDED

#include <stddef.h>

#define BRK_POLICY_STATE_FILE   "policy.state"
#define BRK_STATE_FILE_MAX      (16 * 1024 * 1024)     //  Larger is refused (EFBIG)

int brk_state_file_write (const char *dir, const char *name, const char *text, size_t len);
//  The text (malloc'd, null-terminated), or NULL.
char *brk_state_file_read (const char *dir, const char *name);

#endif
