/*  mdl_map: see mdl_map.h.

    Both classes share one layout: a power-of-two array of slots, a slot
    empty when its value is NULL. A key lives in the first free slot at or
    after its home (hash & mask). Deleting shifts later members of the same
    probe run back by one, so runs stay as short as if the deleted key had
    never been there, and a look-up can stop at the first empty slot.
*/
#include "mdl_map.h"

#include <assert.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#define S_MIN_CAPACITY 16

//  A table grows before it is 3/4 full: linear probing stays short (a
//  miss, which every new id's publish costs, probes ~4 slots at 3/4)
static inline bool
s_too_full (size_t size, size_t capacity)
{
    return (size + 1) * 4 > capacity * 3;
}

//  Is slot j, whose home is k, allowed to move back into the hole at i?
//  Only when k is not cyclically inside (i, j]: otherwise it would land
//  before its home and become unreachable.
static inline bool
s_can_fill (size_t i, size_t j, size_t k)
{
    if (i <= j)
        return k <= i || k > j;
    return k <= i && k > j;
}

//  Final mixer of MurmurHash3: every input bit moves every output bit, so
//  sequential ids (delivery ids are) spread over the whole table.
static inline uint64_t
s_mix (uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return x;
}

size_t
mdl_hash_u64 (const void *key)
{
    return (size_t) s_mix (*(const uint64_t *) key);
}

int
mdl_compare_u64 (const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
    return x < y ? -1 : x > y;
}

//  --------------------------------------------------------------------------
//  uint64_t keys

typedef struct {
    uint64_t key;               //  The key
    void *value;                //  NULL when the slot is empty
} s_slot_t;

struct _mdl_map_t {
    s_slot_t *slots;            //  capacity slots
    size_t capacity;            //  A power of two
    size_t size;                //  Slots used
};

mdl_map_t *
mdl_map_new (void)
{
    mdl_map_t *self = calloc (1, sizeof (mdl_map_t));
    if (!self)
        return NULL;
    self->slots = calloc (S_MIN_CAPACITY, sizeof (s_slot_t));
    if (!self->slots) {
        free (self);
        return NULL;
    }
    self->capacity = S_MIN_CAPACITY;
    return self;
}

void
mdl_map_destroy (mdl_map_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        free ((*self_p)->slots);
        free (*self_p);
        *self_p = NULL;
    }
}

static int
s_map_grow (mdl_map_t *self)
{
    size_t capacity = self->capacity * 2;
    s_slot_t *slots = calloc (capacity, sizeof (s_slot_t));
    if (!slots)
        return -1;
    size_t mask = capacity - 1;
    for (size_t i = 0; i < self->capacity; i++) {
        if (!self->slots [i].value)
            continue;
        size_t at = s_mix (self->slots [i].key) & mask;
        while (slots [at].value)
            at = (at + 1) & mask;
        slots [at] = self->slots [i];
    }
    free (self->slots);
    self->slots = slots;
    self->capacity = capacity;
    return 0;
}

int
mdl_map_insert (mdl_map_t *self, uint64_t key, void *value)
{
    assert (self && value);
    if (s_too_full (self->size, self->capacity) && s_map_grow (self))
        return -1;
    size_t mask = self->capacity - 1;
    size_t at = s_mix (key) & mask;
    while (self->slots [at].value) {
        if (self->slots [at].key == key)
            return 1;
        at = (at + 1) & mask;
    }
    self->slots [at].key = key;
    self->slots [at].value = value;
    self->size++;
    return 0;
}

void *
mdl_map_lookup (const mdl_map_t *self, uint64_t key)
{
    assert (self);
    size_t mask = self->capacity - 1;
    size_t at = s_mix (key) & mask;
    while (self->slots [at].value) {
        if (self->slots [at].key == key)
            return self->slots [at].value;
        at = (at + 1) & mask;
    }
    return NULL;
}

void *
mdl_map_delete (mdl_map_t *self, uint64_t key)
{
    assert (self);
    size_t mask = self->capacity - 1;
    size_t hole = s_mix (key) & mask;
    while (self->slots [hole].value && self->slots [hole].key != key)
        hole = (hole + 1) & mask;
    void *value = self->slots [hole].value;
    if (!value)
        return NULL;
    //  Pull later members of the run back into the hole where allowed
    size_t next = hole;
    while (true) {
        next = (next + 1) & mask;
        if (!self->slots [next].value)
            break;
        size_t home = s_mix (self->slots [next].key) & mask;
        if (s_can_fill (hole, next, home)) {
            self->slots [hole] = self->slots [next];
            hole = next;
        }
    }
    self->slots [hole].value = NULL;
    self->size--;
    return value;
}

size_t
mdl_map_size (const mdl_map_t *self)
{
    assert (self);
    return self->size;
}

void *
mdl_map_next (const mdl_map_t *self, size_t *cursor)
{
    assert (self && cursor);
    while (*cursor < self->capacity) {
        void *value = self->slots [(*cursor)++].value;
        if (value)
            return value;
    }
    return NULL;
}

//  --------------------------------------------------------------------------
//  String keys

typedef struct {
    uint64_t hash;              //  Hash of key, compared before the text
    const char *key;            //  Borrowed key
    void *value;                //  NULL when the slot is empty
} s_str_slot_t;

struct _mdl_strmap_t {
    s_str_slot_t *slots;        //  capacity slots
    size_t capacity;            //  A power of two
    size_t size;                //  Slots used
};

//  Eight bytes at a time: a uuid key is five multiplies, not 36 rounds.
static uint64_t
s_str_hash (const char *key)
{
    size_t len = strlen (key);
    const unsigned char *cursor = (const unsigned char *) key;
    uint64_t hash = 0x9e3779b97f4a7c15ULL ^ (uint64_t) len;
    while (len >= 8) {
        uint64_t word;
        memcpy (&word, cursor, 8);
        hash = (hash ^ word) * 0xbf58476d1ce4e5b9ULL;
        hash ^= hash >> 31;
        cursor += 8;
        len -= 8;
    }
    uint64_t tail = 0;
    memcpy (&tail, cursor, len);
    return s_mix (hash ^ tail);
}

mdl_strmap_t *
mdl_strmap_new (void)
{
    mdl_strmap_t *self = calloc (1, sizeof (mdl_strmap_t));
    if (!self)
        return NULL;
    self->slots = calloc (S_MIN_CAPACITY, sizeof (s_str_slot_t));
    if (!self->slots) {
        free (self);
        return NULL;
    }
    self->capacity = S_MIN_CAPACITY;
    return self;
}

void
mdl_strmap_destroy (mdl_strmap_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        free ((*self_p)->slots);
        free (*self_p);
        *self_p = NULL;
    }
}

static int
s_strmap_grow (mdl_strmap_t *self)
{
    size_t capacity = self->capacity * 2;
    s_str_slot_t *slots = calloc (capacity, sizeof (s_str_slot_t));
    if (!slots)
        return -1;
    size_t mask = capacity - 1;
    for (size_t i = 0; i < self->capacity; i++) {
        if (!self->slots [i].value)
            continue;
        size_t at = self->slots [i].hash & mask;
        while (slots [at].value)
            at = (at + 1) & mask;
        slots [at] = self->slots [i];
    }
    free (self->slots);
    self->slots = slots;
    self->capacity = capacity;
    return 0;
}

//  Slot holding key, or the empty slot ending its probe run.
static inline size_t
s_strmap_find (const mdl_strmap_t *self, const char *key, uint64_t hash)
{
    size_t mask = self->capacity - 1;
    size_t at = hash & mask;
    while (self->slots [at].value) {
        if (self->slots [at].hash == hash && strcmp (self->slots [at].key, key) == 0)
            break;
        at = (at + 1) & mask;
    }
    return at;
}

int
mdl_strmap_insert (mdl_strmap_t *self, const char *key, void *value)
{
    assert (self && key && value);
    if (s_too_full (self->size, self->capacity) && s_strmap_grow (self))
        return -1;
    uint64_t hash = s_str_hash (key);
    size_t at = s_strmap_find (self, key, hash);
    if (self->slots [at].value)
        return 1;
    self->slots [at].hash = hash;
    self->slots [at].key = key;
    self->slots [at].value = value;
    self->size++;
    return 0;
}

void *
mdl_strmap_lookup (const mdl_strmap_t *self, const char *key)
{
    assert (self && key);
    return self->slots [s_strmap_find (self, key, s_str_hash (key))].value;
}

void *
mdl_strmap_delete (mdl_strmap_t *self, const char *key)
{
    assert (self && key);
    size_t mask = self->capacity - 1;
    size_t hole = s_strmap_find (self, key, s_str_hash (key));
    void *value = self->slots [hole].value;
    if (!value)
        return NULL;
    size_t next = hole;
    while (true) {
        next = (next + 1) & mask;
        if (!self->slots [next].value)
            break;
        if (s_can_fill (hole, next, self->slots [next].hash & mask)) {
            self->slots [hole] = self->slots [next];
            hole = next;
        }
    }
    self->slots [hole].value = NULL;
    self->slots [hole].key = NULL;
    self->size--;
    return value;
}

size_t
mdl_strmap_size (const mdl_strmap_t *self)
{
    assert (self);
    return self->size;
}

void *
mdl_strmap_next (const mdl_strmap_t *self, size_t *cursor)
{
    assert (self && cursor);
    while (*cursor < self->capacity) {
        void *value = self->slots [(*cursor)++].value;
        if (value)
            return value;
    }
    return NULL;
}
