/*  brk_names: see brk_names.h. A string map whose keys live inside the
    values (each value is the name's own copy), so the map borrows nothing
    that can go away. */
#include "brk_names.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_map.h"

struct _brk_names_t {
    mdl_strmap_t *map;          //  Name -> its copy (key and value are the copy)
};

brk_names_t *
brk_names_new (void)
{
    brk_names_t *self = calloc (1, sizeof (brk_names_t));
    if (!self)
        return NULL;
    self->map = mdl_strmap_new ();
    if (!self->map) {
        free (self);
        return NULL;
    }
    return self;
}

void
brk_names_destroy (brk_names_t **self_p)
{
    brk_names_t *self = *self_p;
    if (!self)
        return;
    //  The walk reads only the slots' values, never a key: freeing the
    //  names as they come is safe, and the map is freed right after
    size_t cursor = 0;
    char *copy;
    while ((copy = mdl_strmap_next (self->map, &cursor)) != NULL)
        free (copy);
    mdl_strmap_destroy (&self->map);
    free (self);
    *self_p = NULL;
}

const char *
brk_names_intern (brk_names_t *self, const char *name)
{
    assert (self);
    if (!name || !name [0])
        return NULL;
    char cut [BRK_NAMES_MAX_LEN + 1];
    size_t len = strnlen (name, BRK_NAMES_MAX_LEN + 1);
    if (len > BRK_NAMES_MAX_LEN) {
        memcpy (cut, name, BRK_NAMES_MAX_LEN);
        cut [BRK_NAMES_MAX_LEN] = 0;
        name = cut;
        len = BRK_NAMES_MAX_LEN;
    }
    const char *known = mdl_strmap_lookup (self->map, name);
    if (known)
        return known;
    if (mdl_strmap_size (self->map) >= BRK_NAMES_MAX)
        return NULL;
    char *copy = malloc (len + 1);
    if (!copy)
        return NULL;
    memcpy (copy, name, len + 1);
    if (mdl_strmap_insert (self->map, copy, copy) != 0) {
        free (copy);
        return NULL;
    }
    return copy;
}

size_t
brk_names_size (const brk_names_t *self)
{
    assert (self);
    return mdl_strmap_size (self->map);
}
