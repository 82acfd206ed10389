/*  mdl_map: hash maps from a key to a pointer, for the broker's hot paths.

    Two classes: mdl_map_t keys on a uint64_t (delivery ids), mdl_strmap_t
    on a null-terminated string (message ids). Both are open-addressing
    tables with linear probing and backward-shift deletion, so an insert
    allocates nothing (the table doubles now and then) and a delete leaves
    no tombstone behind; look-ups touch one or two cache lines. A string
    map keeps each key's 64-bit hash next to it, so a probe compares the
    key text only when the hashes match.

    Ownership: a map owns neither keys nor values. A string map borrows its
    keys: the caller keeps each key alive and unchanged while it is in the
    map (typically the key lives inside the value). Values are never NULL:
    NULL is what a look-up of a missing key returns.

    Costs: insert, look-up and delete are O(1) on average; a table is kept
    at most 3/4 full and grows by doubling (O(N) once in a while); it never
    shrinks, so a map holds memory for the most entries it ever had.
    Iteration (mdl_map_next) walks the table, O(capacity), and must not
    overlap a change to the map.
*/
#ifndef MDL_MAP_H_INCLUDED
#define MDL_MAP_H_INCLUDED

#include <stddef.h>
#include <stdint.h>

typedef struct _mdl_map_t mdl_map_t;
typedef struct _mdl_strmap_t mdl_strmap_t;

//  Create an empty map. Returns NULL when out of memory.
mdl_map_t *mdl_map_new (void);
void mdl_map_destroy (mdl_map_t **self_p);

//  Add key -> value (value not NULL). Returns 0, 1 when the key is already
//  there (nothing changes), or -1 when out of memory (nothing changes).
int mdl_map_insert (mdl_map_t *self, uint64_t key, void *value);

//  The value of key, or NULL.
void *mdl_map_lookup (const mdl_map_t *self, uint64_t key);

//  Remove key. Returns its value, or NULL when it was not there.
void *mdl_map_delete (mdl_map_t *self, uint64_t key);

size_t mdl_map_size (const mdl_map_t *self);

//  Iterate: start with *cursor = 0; each call returns the next value and
//  moves *cursor on, NULL at the end. Order is the table's, not insertion.
void *mdl_map_next (const mdl_map_t *self, size_t *cursor);


//  The same for string keys (borrowed, see above).
mdl_strmap_t *mdl_strmap_new (void);
void mdl_strmap_destroy (mdl_strmap_t **self_p);
int mdl_strmap_insert (mdl_strmap_t *self, const char *key, void *value);
void *mdl_strmap_lookup (const mdl_strmap_t *self, const char *key);
void *mdl_strmap_delete (mdl_strmap_t *self, const char *key);
size_t mdl_strmap_size (const mdl_strmap_t *self);
void *mdl_strmap_next (const mdl_strmap_t *self, size_t *cursor);


//  Key callbacks for a CZMQ zhashx whose keys point at uint64_t values
//  (zhashx_set_key_hasher / zhashx_set_key_comparator), for code that
//  still needs a zhashx (its items are freed by destructors, which mdl_map
//  does not do). The hash is mdl_map's own mixer.
size_t mdl_hash_u64 (const void *key);
int mdl_compare_u64 (const void *a, const void *b);

#endif
