/*  brk_state_saver: writes one state file (brk_state_file) on a thread of
    its own, so the broker's loop never waits for its fsyncs unless it
    asks to.

    post hands over a text to be written soon: it copies the text,
    replaces any text posted before and not yet written (only the newest
    state matters), wakes the thread and returns; it waits for no I/O,
    only for a mutex the thread never holds across a write. write writes
    a text now, on the caller's thread, and returns when it is on disk
    (or failed): it drops a posted text not yet started (the caller's is
    newer) and waits for a write the thread has in progress to end first,
    so the file always ends with the newest text. The broker posts the
    policy state after lease events and writes it at an operator's pause
    or resume, whose reply promises it is durable.

    Failure: new returns NULL with errno (out of memory, no thread). post
    returns -1 with ENOMEM and keeps the older text. A background write
    that fails is logged (error, once per run of failures, and info when
    one succeeds again) and its text kept for the next post or the
    destroy to retry; failed () says whether the last background write
    failed. write returns -1 with errno and keeps nothing.
    Threads: every call from one owner thread. Cost: one copy of the text
    per post; one thread, idle between posts. destroy writes a posted text
    not yet written, then joins.
*/
#ifndef BRK_STATE_SAVER_H_INCLUDED
#define BRK_STATE_SAVER_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

typedef struct _brk_state_saver_t brk_state_saver_t;

//  A saver of dir/name (both copied), what = its name in log lines.
brk_state_saver_t *brk_state_saver_new (const char *dir, const char *name, const char *what);
void brk_state_saver_destroy (brk_state_saver_t **self_p);

int brk_state_saver_post (brk_state_saver_t *self, const char *text, size_t len);
int brk_state_saver_write (brk_state_saver_t *self, const char *text, size_t len);
bool brk_state_saver_failed (brk_state_saver_t *self);
//  Background writes completed (for tests).
unsigned long brk_state_saver_writes (brk_state_saver_t *self);

#endif
