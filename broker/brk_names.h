/*  brk_names: the broker's table of authenticated names, interned.

    brk_names_t *names = brk_names_new ();
    const char *name = brk_names_intern (names, "alice");   //  the same pointer every time
    brk_names_destroy (&names);

    Every message remembers which publisher's key sent it (brk_msg_publisher).
    There are few distinct publishers and many messages, so a message holds
    one pointer into this table instead of a copy of the name. A name, once
    interned, lives until the table is destroyed: nothing is ever removed,
    so no message can point at a freed name. The queue owns one table.

    Bound: at most BRK_NAMES_MAX distinct names (each at most
    BRK_NAMES_MAX_LEN bytes; a longer one is cut). Names come from the
    operator's key directories (brk_auth), so the bound is only a guard
    against a directory churned without end: past it, a new name is not
    interned and brk_names_intern returns NULL (the message is unnamed,
    never refused). Out of memory: NULL likewise.
    Cost: O(1) per intern (a hash look-up); one allocation per new name.
*/
#ifndef BRK_NAMES_H_INCLUDED
#define BRK_NAMES_H_INCLUDED

#include <stddef.h>

#define BRK_NAMES_MAX       4096    //  Distinct names kept
#define BRK_NAMES_MAX_LEN   255     //  Bytes of one name

typedef struct _brk_names_t brk_names_t;

//  An empty table, or NULL when out of memory.
brk_names_t *brk_names_new (void);

//  Free the table and every name in it; safe twice. Pointers it handed
//  out are dangling after this.
void brk_names_destroy (brk_names_t **self_p);

//  The table's copy of name: the same pointer for the same text, valid
//  until the table is destroyed. NULL for NULL or "", when the table is
//  full, or when out of memory.
const char *brk_names_intern (brk_names_t *self, const char *name);

//  Distinct names held.
size_t brk_names_size (const brk_names_t *self);

#endif
