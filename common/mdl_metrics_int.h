/*  mdl_metrics_int: what mdl_metrics.c (the registry) and
    mdl_metrics_text.c (the exposition format) share. Private to those two
    files; everyone else uses mdl_metrics.h.

    The layout and its thread rules: families form a singly linked list in
    registration order, each with a singly linked list of its series.
    Registrants (serialised by the mutex) fill a node completely, then link
    it with a release store; readers walk the lists with acquire loads and
    so see only complete nodes. A node's fields never change after it is
    linked, except the atomic values, so a reader needs no lock.
*/
#ifndef MDL_METRICS_INT_H_INCLUDED
#define MDL_METRICS_INT_H_INCLUDED

#include "mdl_metrics.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#define MDL_METRICS_MAX_COLLECTORS 8

typedef enum { MDL_METRICS_COUNTER, MDL_METRICS_GAUGE, MDL_METRICS_HISTOGRAM } mdl_metrics_type_t;

typedef struct _mdl_metrics_series_t mdl_metrics_series_t;
typedef struct _mdl_metrics_family_t mdl_metrics_family_t;

struct _mdl_metrics_family_t {
    _Atomic (mdl_metrics_family_t *) next; //  Next family, in registration order
    mdl_metrics_type_t type;            //  Counter, gauge or histogram
    char *name;                         //  Metric name, owned
    char *help;                         //  Help text as given, owned
    size_t label_count;                 //  Label names per series
    char *label_names [MDL_METRICS_MAX_LABELS]; //  Owned, in order
    size_t bound_count;                 //  Histogram: finite bucket bounds
    double bounds [MDL_METRICS_MAX_BUCKETS]; //  Histogram: strictly increasing
    char les [MDL_METRICS_MAX_BUCKETS + 1][32]; //  Histogram: bounds as le values
    _Atomic (mdl_metrics_series_t *) series; //  First series
    mdl_metrics_series_t *tail;         //  Last series; registrants only
};

struct _mdl_metrics_series_t {
    _Atomic (mdl_metrics_series_t *) next; //  Next series of the family
    mdl_metrics_family_t *family;       //  Family it belongs to
    char *label_values [MDL_METRICS_MAX_LABELS]; //  Owned, as given
    char *labels;                       //  Rendered 'a="x",b="y"' or "", owned
    _Atomic uint64_t value;             //  Counter value, or gauge double bits
    _Atomic uint64_t sum;               //  Histogram: double bits of the sum
    _Atomic uint64_t buckets [];        //  Histogram: bound_count + 1 counts
};

typedef struct {
    mdl_metrics_collect_fn *fn;         //  Sets gauges on the owner's thread
    void *arg;                          //  Passed to fn
} mdl_metrics_collector_t;

struct _mdl_metrics_t {
    pthread_mutex_t mutex;              //  Serialises registrants, never readers
    _Atomic (mdl_metrics_family_t *) families; //  First family
    mdl_metrics_family_t *tail;         //  Last family; registrants only
    mdl_metrics_collector_t collectors [MDL_METRICS_MAX_COLLECTORS]; //  Owner's thread only
    size_t collector_count;             //  Collectors in use
    int64_t collect_interval;           //  Least ms between collects
    int64_t collected_at;               //  Monotonic ms of the last collect
    bool collected;                     //  Has a collect run yet?
};

static inline uint64_t
mdl_metrics_bits (double value)
{
    uint64_t bits;
    memcpy (&bits, &value, sizeof bits);
    return bits;
}

static inline double
mdl_metrics_double (uint64_t bits)
{
    double value;
    memcpy (&value, &bits, sizeof value);
    return value;
}

//  A growing text buffer; a failed allocation sticks and is seen at the end
typedef struct {
    char *data;                         //  Text so far, null-terminated
    size_t size;                        //  Length without the null
    size_t capacity;                    //  Bytes allocated
    bool failed;                        //  An allocation failed
} mdl_metrics_buf_t;

//  Make room for more bytes (and the null). Returns false when out of memory.
bool mdl_metrics_buf_reserve (mdl_metrics_buf_t *buf, size_t more);
void mdl_metrics_buf_put (mdl_metrics_buf_t *buf, const char *text, size_t len);
void mdl_metrics_buf_puts (mdl_metrics_buf_t *buf, const char *text);
void mdl_metrics_buf_putc (mdl_metrics_buf_t *buf, char c);
//  Escape backslash and newline (help text), and double quote too when
//  quote is set (label values), as the text format requires.
void mdl_metrics_buf_escaped (mdl_metrics_buf_t *buf, const char *text, bool quote);

//  The shortest of %.15g and %.17g that reads back as the same double;
//  NaN, +Inf and -Inf as Prometheus spells them.
void mdl_metrics_format_double (char text [32], double value);

//  "counter", "gauge" or "histogram".
const char *mdl_metrics_type_name (mdl_metrics_type_t type);

#endif
