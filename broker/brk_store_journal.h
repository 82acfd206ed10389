/*  brk_store_journal: the broker's store over brk_journal (a data dir).

    Opening replays the journal into the broker (each live message once,
    as a brk_restore_t) and journals a new epoch; the run's epoch is the
    journal's. Records go to the journal's buffer; its writer thread makes
    them durable per its mode, and the store's fd is the journal's. In
    none mode the store is not deferred (changes are acted on at once, the
    journal is written but never fsynced); in batch and sync mode it is.

    Open failures are logged here and answered as BRK_STORE_CORRUPT
    (corrupt before its tail: see salvage), BRK_STORE_LOCKED (another
    broker holds the dir) or BRK_STORE_FAILED. A torn tail is repaired and
    logged at warn level. Costs and threads: see brk_journal.h.
*/
#ifndef BRK_STORE_JOURNAL_H_INCLUDED
#define BRK_STORE_JOURNAL_H_INCLUDED

#include "brk_journal.h"
#include "brk_store.h"

//  Open the journal in config->dir (copied). Returns NULL with *status set
//  on failure.
brk_store_t *brk_store_journal_new (const brk_journal_config_t *config,
                                    brk_store_recover_fn *recover, void *arg, int *status);

#endif
