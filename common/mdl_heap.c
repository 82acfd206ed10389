/*  mdl_heap: see mdl_heap.h. Array of node pointers, 1-based positions
    stored in the nodes so that remove and update are O(log N).
*/
#include "mdl_heap.h"
#include "mdl_array.h"

#include <assert.h>
#include <stdlib.h>

struct _mdl_heap_t {
    mdl_heap_node_t **nodes;    //  nodes [0 .. size-1]
    size_t size;                //  Nodes in the heap
    size_t capacity;            //  Allocated slots
    uint64_t next_order;        //  Tie-break sequence for the next insert
};

mdl_heap_t *
mdl_heap_new (void)
{
    return calloc (1, sizeof (mdl_heap_t));
}

void
mdl_heap_destroy (mdl_heap_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        mdl_heap_t *self = *self_p;
        for (size_t i = 0; i < self->size; i++)
            self->nodes [i]->index = 0;
        free (self->nodes);
        free (self);
        *self_p = NULL;
    }
}

static inline bool
s_less (const mdl_heap_node_t *a, const mdl_heap_node_t *b)
{
    return a->key < b->key || (a->key == b->key && a->order < b->order);
}

static inline void
s_place (mdl_heap_t *self, size_t pos, mdl_heap_node_t *node)
{
    self->nodes [pos] = node;
    node->index = pos + 1;
}

static void
s_sift_up (mdl_heap_t *self, size_t pos)
{
    mdl_heap_node_t *node = self->nodes [pos];
    while (pos > 0) {
        size_t parent = (pos - 1) / 2;
        if (!s_less (node, self->nodes [parent]))
            break;
        s_place (self, pos, self->nodes [parent]);
        pos = parent;
    }
    s_place (self, pos, node);
}

static void
s_sift_down (mdl_heap_t *self, size_t pos)
{
    mdl_heap_node_t *node = self->nodes [pos];
    while (true) {
        size_t child = 2 * pos + 1;
        if (child >= self->size)
            break;
        if (child + 1 < self->size && s_less (self->nodes [child + 1], self->nodes [child]))
            child++;
        if (!s_less (self->nodes [child], node))
            break;
        s_place (self, pos, self->nodes [child]);
        pos = child;
    }
    s_place (self, pos, node);
}

int
mdl_heap_insert (mdl_heap_t *self, mdl_heap_node_t *node, int64_t key)
{
    assert (self && node);
    assert (node->index == 0);
    if (mdl_array_reserve (&self->nodes, &self->capacity, self->size + 1, sizeof *self->nodes))
        return -1;
    node->key = key;
    node->order = self->next_order++;
    self->nodes [self->size] = node;
    node->index = ++self->size;
    s_sift_up (self, self->size - 1);
    return 0;
}

void
mdl_heap_remove (mdl_heap_t *self, mdl_heap_node_t *node)
{
    assert (self && node);
    if (node->index == 0)
        return;
    size_t pos = node->index - 1;
    assert (pos < self->size && self->nodes [pos] == node);
    node->index = 0;
    self->size--;
    if (pos == self->size)
        return;
    mdl_heap_node_t *last = self->nodes [self->size];
    s_place (self, pos, last);
    if (pos > 0 && s_less (last, self->nodes [(pos - 1) / 2]))
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}

void
mdl_heap_update (mdl_heap_t *self, mdl_heap_node_t *node, int64_t key)
{
    assert (self && node && node->index);
    int64_t old = node->key;
    node->key = key;
    //  A re-keyed node goes behind others with the same key
    node->order = self->next_order++;
    size_t pos = node->index - 1;
    if (key < old)
        s_sift_up (self, pos);
    else
        s_sift_down (self, pos);
}

mdl_heap_node_t *
mdl_heap_top (mdl_heap_t *self)
{
    assert (self);
    return self->size ? self->nodes [0] : NULL;
}

mdl_heap_node_t *
mdl_heap_pop (mdl_heap_t *self)
{
    mdl_heap_node_t *top = mdl_heap_top (self);
    if (top)
        mdl_heap_remove (self, top);
    return top;
}

size_t
mdl_heap_size (mdl_heap_t *self)
{
    assert (self);
    return self->size;
}
