/*  mdl_heap: an indexed binary min-heap of deadlines.

    The one deadline structure of a loop: leases, delayed redeliveries and
    the like embed an mdl_heap_node_t and are ordered by its key (a
    monotonic time in ms). Insert, remove and re-key are O(log N); the
    earliest is O(1). The heap does not own the nodes; a node is in at
    most one heap at a time and knows its own position, so removal needs
    no search. Ties are broken by insertion order, so equal deadlines fire
    first-in first-out.
*/
#ifndef MDL_HEAP_H_INCLUDED
#define MDL_HEAP_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct {
    int64_t key;                //  Deadline, monotonic ms
    uint64_t order;             //  Insertion sequence, breaks ties
    size_t index;               //  Position in the heap + 1; 0 when not in a heap
} mdl_heap_node_t;

typedef struct _mdl_heap_t mdl_heap_t;

mdl_heap_t *mdl_heap_new (void);
void mdl_heap_destroy (mdl_heap_t **self_p);

//  Insert node with key. Returns 0, or -1 when out of memory.
int mdl_heap_insert (mdl_heap_t *self, mdl_heap_node_t *node, int64_t key);

//  Remove node if it is in the heap; harmless otherwise.
void mdl_heap_remove (mdl_heap_t *self, mdl_heap_node_t *node);

//  Change the key of a node in the heap.
void mdl_heap_update (mdl_heap_t *self, mdl_heap_node_t *node, int64_t key);

//  The earliest node, or NULL when empty.
mdl_heap_node_t *mdl_heap_top (mdl_heap_t *self);

//  Remove and return the earliest node, or NULL when empty.
mdl_heap_node_t *mdl_heap_pop (mdl_heap_t *self);

size_t mdl_heap_size (mdl_heap_t *self);

static inline bool
mdl_heap_contains (const mdl_heap_node_t *node)
{
    return node->index != 0;
}

#endif
