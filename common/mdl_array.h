/*  mdl_array: growth of a caller's dynamic array, the one way Mandrill
    grows its hand-held arrays.

    The caller keeps its own typed pointer and capacity (so items stay
    typed and the array stays a plain C array); mdl_array_reserve makes
    room for at least `need` items, doubling from a minimum of 16, so n
    appends cost O(n) amortised. On failure (out of memory or a size that
    would overflow) nothing changes and -1 is returned: the old array is
    still valid and still owned by the caller.

    Example:  if (mdl_array_reserve (&list, &capacity, count + 1, sizeof *list))
                  return -1;
              list [count++] = item;
*/
#ifndef MDL_ARRAY_H_INCLUDED
#define MDL_ARRAY_H_INCLUDED

#include <stddef.h>

//  items_p is the address of the caller's pointer (any T **, passed as
//  void *); *capacity is in items. Returns 0 or -1.
int mdl_array_reserve (void *items_p, size_t *capacity, size_t need, size_t item_size);

#endif
