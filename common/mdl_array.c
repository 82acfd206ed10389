/*  mdl_array: see mdl_array.h. */
#include "mdl_array.h"

#include <assert.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int
mdl_array_reserve (void *items_p, size_t *capacity, size_t need, size_t item_size)
{
    assert (items_p && capacity && item_size);
    if (need <= *capacity)
        return 0;
    size_t grown = *capacity < 16 ? 16 : *capacity;
    while (grown < need) {
        if (grown > SIZE_MAX / 2)
            return -1;
        grown *= 2;
    }
    if (grown > SIZE_MAX / item_size)
        return -1;
    void *items;
    memcpy (&items, items_p, sizeof items);
    void *more = realloc (items, grown * item_size);
    if (!more)
        return -1;
    memcpy (items_p, &more, sizeof more);
    *capacity = grown;
    return 0;
}
