/*  mdl_metrics: see mdl_metrics.h.

    Layout: a singly linked list of families in registration order, each
    with a singly linked list of its series. Registrants (serialised by
    the mutex) fill a node completely, then link it with a release store;
    readers walk the lists with acquire loads and so see only complete
    nodes. A node's fields never change after it is linked, except the
    atomic values, so the reader needs no lock. The public series types
    are opaque names for s_series_t, cast at the boundary.
*/
#include "mdl_metrics.h"
#include "mdl_log.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define S_MAX_COLLECTORS 8

const double mdl_metrics_seconds_buckets [] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
const size_t mdl_metrics_seconds_buckets_count =
    sizeof mdl_metrics_seconds_buckets / sizeof mdl_metrics_seconds_buckets [0];

typedef enum { S_COUNTER, S_GAUGE, S_HISTOGRAM } s_type_t;

typedef struct _s_series_t s_series_t;
typedef struct _s_family_t s_family_t;

struct _s_family_t {
    _Atomic (s_family_t *) next;        //  Next family, in registration order
    s_type_t type;                      //  Counter, gauge or histogram
    char *name;                         //  Metric name, owned
    char *help;                         //  Help text as given, owned
    size_t label_count;                 //  Label names per series
    char *label_names [MDL_METRICS_MAX_LABELS];  //  Owned, in order
    size_t bound_count;                 //  Histogram: finite bucket bounds
    double bounds [MDL_METRICS_MAX_BUCKETS];     //  Histogram: strictly increasing
    char les [MDL_METRICS_MAX_BUCKETS + 1][32];  //  Histogram: bounds as le values
    _Atomic (s_series_t *) series;      //  First series
    s_series_t *tail;                   //  Last series; registrants only
};

struct _s_series_t {
    _Atomic (s_series_t *) next;        //  Next series of the family
    s_family_t *family;                 //  Family it belongs to
    char *label_values [MDL_METRICS_MAX_LABELS];  //  Owned, as given
    char *labels;                       //  Rendered 'a="x",b="y"' or "", owned
    _Atomic uint64_t value;             //  Counter value, or gauge double bits
    _Atomic uint64_t sum;               //  Histogram: double bits of the sum
    _Atomic uint64_t buckets [];        //  Histogram: bound_count + 1 counts
};

typedef struct {
    mdl_metrics_collect_fn *fn;         //  Sets gauges on the owner's thread
    void *arg;                          //  Passed to fn
} s_collector_t;

struct _mdl_metrics_t {
    pthread_mutex_t mutex;              //  Serialises registrants, never readers
    _Atomic (s_family_t *) families;    //  First family
    s_family_t *tail;                   //  Last family; registrants only
    s_collector_t collectors [S_MAX_COLLECTORS];  //  Owner's thread only
    size_t collector_count;             //  Collectors in use
    int64_t collect_interval;           //  Least ms between collects
    int64_t collected_at;               //  Monotonic ms of the last collect
    bool collected;                     //  Has a collect run yet?
};

static inline s_series_t *
s_series (const void *opaque)
{
    assert (opaque);
    return (s_series_t *) opaque;
}

static inline uint64_t
s_bits (double value)
{
    uint64_t bits;
    memcpy (&bits, &value, sizeof bits);
    return bits;
}

static inline double
s_double (uint64_t bits)
{
    double value;
    memcpy (&value, &bits, sizeof value);
    return value;
}


//  --------------------------------------------------------------------
//  A growing text buffer; a failed allocation sticks and is seen at the end

typedef struct {
    char *data;                         //  Text so far, null-terminated
    size_t size;                        //  Length without the null
    size_t capacity;                    //  Bytes allocated
    bool failed;                        //  An allocation failed
} s_buf_t;

static bool
s_buf_reserve (s_buf_t *buf, size_t more)
{
    if (buf->failed)
        return false;
    if (buf->size + more + 1 <= buf->capacity)
        return true;
    size_t capacity = buf->capacity ? buf->capacity : 4096;
    while (capacity < buf->size + more + 1)
        capacity *= 2;
    char *data = realloc (buf->data, capacity);
    if (!data) {
        buf->failed = true;
        return false;
    }
    buf->data = data;
    buf->data [buf->size] = 0;
    buf->capacity = capacity;
    return true;
}

static void
s_buf_put (s_buf_t *buf, const char *text, size_t len)
{
    if (!s_buf_reserve (buf, len))
        return;
    memcpy (buf->data + buf->size, text, len);
    buf->size += len;
    buf->data [buf->size] = 0;
}

static void
s_buf_puts (s_buf_t *buf, const char *text)
{
    s_buf_put (buf, text, strlen (text));
}

static void
s_buf_putc (s_buf_t *buf, char c)
{
    s_buf_put (buf, &c, 1);
}

//  Escape backslash and newline (help text), and double quote too when
//  quote is set (label values), as the text format requires.
static void
s_buf_escaped (s_buf_t *buf, const char *text, bool quote)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            s_buf_put (buf, "\\\\", 2);
        else
        if (*p == '\n')
            s_buf_put (buf, "\\n", 2);
        else
        if (*p == '"' && quote)
            s_buf_put (buf, "\\\"", 2);
        else
            s_buf_putc (buf, *p);
    }
}

static void
s_buf_u64 (s_buf_t *buf, uint64_t value)
{
    char text [24];
    int len = snprintf (text, sizeof text, "%" PRIu64, value);
    s_buf_put (buf, text, (size_t) len);
}

//  The shortest of %.15g and %.17g that reads back as the same double,
//  so 0.1 prints as "0.1"; NaN and infinities as Prometheus spells them.
static void
s_format_double (char text [32], double value)
{
    if (isnan (value))
        strcpy (text, "NaN");
    else
    if (isinf (value))
        strcpy (text, value > 0 ? "+Inf" : "-Inf");
    else {
        snprintf (text, 32, "%.15g", value);
        if (strtod (text, NULL) != value)
            snprintf (text, 32, "%.17g", value);
    }
}

static void
s_buf_double (s_buf_t *buf, double value)
{
    char text [32];
    s_format_double (text, value);
    s_buf_puts (buf, text);
}


//  --------------------------------------------------------------------
//  Validation of what registrants pass in

static bool
s_valid_name (const char *name, bool colon)
{
    if (!name || !*name)
        return false;
    for (const char *p = name; *p; p++) {
        char c = *p;
        bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'
                  || (colon && c == ':');
        bool digit = c >= '0' && c <= '9';
        if (!alpha && !(digit && p != name))
            return false;
    }
    return true;
}

static bool
s_valid_utf8 (const char *text)
{
    const unsigned char *p = (const unsigned char *) text;
    while (*p) {
        size_t extra;
        uint32_t code;
        if (*p < 0x80) {
            p++;
            continue;
        }
        else
        if ((*p & 0xE0) == 0xC0) { extra = 1; code = *p & 0x1F; }
        else
        if ((*p & 0xF0) == 0xE0) { extra = 2; code = *p & 0x0F; }
        else
        if ((*p & 0xF8) == 0xF0) { extra = 3; code = *p & 0x07; }
        else
            return false;
        p++;
        for (size_t i = 0; i < extra; i++, p++) {
            if ((*p & 0xC0) != 0x80)
                return false;
            code = (code << 6) | (*p & 0x3F);
        }
        //  Overlong forms, surrogates and code points past U+10FFFF
        if ((extra == 1 && code < 0x80) || (extra == 2 && code < 0x800)
        ||  (extra == 3 && code < 0x10000) || code > 0x10FFFF
        ||  (code >= 0xD800 && code <= 0xDFFF))
            return false;
    }
    return true;
}

static bool
s_ends_with (const char *text, const char *suffix)
{
    size_t len = strlen (text), slen = strlen (suffix);
    return len >= slen && strcmp (text + len - slen, suffix) == 0;
}


//  --------------------------------------------------------------------
//  Registry

mdl_metrics_t *
mdl_metrics_new (void)
{
    mdl_metrics_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    if (pthread_mutex_init (&self->mutex, NULL) != 0) {
        free (self);
        return NULL;
    }
    atomic_init (&self->families, NULL);
    self->collect_interval = 1000;
    return self;
}

static void
s_series_free (s_series_t *series, size_t label_count)
{
    if (!series)
        return;
    for (size_t i = 0; i < label_count; i++)
        free (series->label_values [i]);
    free (series->labels);
    free (series);
}

static void
s_family_free (s_family_t *family)
{
    if (!family)
        return;
    s_series_t *series = atomic_load_explicit (&family->series, memory_order_relaxed);
    while (series) {
        s_series_t *next = atomic_load_explicit (&series->next, memory_order_relaxed);
        s_series_free (series, family->label_count);
        series = next;
    }
    for (size_t i = 0; i < family->label_count; i++)
        free (family->label_names [i]);
    free (family->name);
    free (family->help);
    free (family);
}

void
mdl_metrics_destroy (mdl_metrics_t **self_p)
{
    assert (self_p);
    mdl_metrics_t *self = *self_p;
    if (!self)
        return;
    s_family_t *family = atomic_load_explicit (&self->families, memory_order_relaxed);
    while (family) {
        s_family_t *next = atomic_load_explicit (&family->next, memory_order_relaxed);
        s_family_free (family);
        family = next;
    }
    pthread_mutex_destroy (&self->mutex);
    free (self);
    *self_p = NULL;
}

//  What one registration asks for, checked before the registry is touched
typedef struct {
    s_type_t type;                      //  Kind of series
    const char *name;                   //  Metric name
    const char *help;                   //  Help text
    size_t label_count;                 //  Pairs given
    const char *label_names [MDL_METRICS_MAX_LABELS];   //  Borrowed
    const char *label_values [MDL_METRICS_MAX_LABELS];  //  Borrowed
    const double *bounds;               //  Histogram bounds, borrowed
    size_t bound_count;                 //  Number of bounds
} s_request_t;

static const char *
s_type_name (s_type_t type)
{
    return type == S_COUNTER ? "counter" : type == S_GAUGE ? "gauge" : "histogram";
}

//  Returns NULL when the request is sound, else why not.
static const char *
s_check (s_request_t *req, va_list args)
{
    if (!s_valid_name (req->name, true))
        return "metric name is not [a-zA-Z_:][a-zA-Z0-9_:]*";
    if (req->type == S_COUNTER && !s_ends_with (req->name, "_total"))
        return "a counter's name ends in _total";
    if (!req->help || !s_valid_utf8 (req->help))
        return "help text is missing or not UTF-8";
    const char *label;
    while ((label = va_arg (args, const char *))) {
        const char *value = va_arg (args, const char *);
        if (req->label_count == MDL_METRICS_MAX_LABELS)
            return "too many labels";
        if (!s_valid_name (label, false) || strncmp (label, "__", 2) == 0)
            return "label name is not [a-zA-Z_][a-zA-Z0-9_]* or starts with __";
        if (req->type == S_HISTOGRAM && strcmp (label, "le") == 0)
            return "a histogram cannot have a label named le";
        if (!value || !s_valid_utf8 (value))
            return "label value is missing or not UTF-8";
        for (size_t i = 0; i < req->label_count; i++)
            if (strcmp (req->label_names [i], label) == 0)
                return "label name given twice";
        req->label_names [req->label_count] = label;
        req->label_values [req->label_count] = value;
        req->label_count++;
    }
    if (req->type == S_HISTOGRAM) {
        if (!req->bounds) {
            req->bounds = mdl_metrics_seconds_buckets;
            req->bound_count = mdl_metrics_seconds_buckets_count;
        }
        if (req->bound_count == 0 || req->bound_count > MDL_METRICS_MAX_BUCKETS)
            return "a histogram has 1 to 32 bucket bounds";
        for (size_t i = 0; i < req->bound_count; i++) {
            if (!isfinite (req->bounds [i]))
                return "bucket bounds are finite";
            if (i > 0 && !(req->bounds [i] > req->bounds [i - 1]))
                return "bucket bounds are strictly increasing";
        }
    }
    return NULL;
}

//  Does an existing family match the request? NULL when it does.
static const char *
s_family_matches (const s_family_t *family, const s_request_t *req)
{
    if (family->type != req->type)
        return "registered before with another type";
    if (strcmp (family->help, req->help) != 0)
        return "registered before with another help text";
    if (family->label_count != req->label_count)
        return "registered before with other label names";
    for (size_t i = 0; i < req->label_count; i++)
        if (strcmp (family->label_names [i], req->label_names [i]) != 0)
            return "registered before with other label names";
    if (req->type == S_HISTOGRAM) {
        if (family->bound_count != req->bound_count)
            return "registered before with other buckets";
        for (size_t i = 0; i < req->bound_count; i++)
            if (family->bounds [i] != req->bounds [i])
                return "registered before with other buckets";
    }
    return NULL;
}

static s_family_t *
s_family_new (const s_request_t *req)
{
    s_family_t *family = calloc (1, sizeof *family);
    if (!family)
        return NULL;
    atomic_init (&family->next, NULL);
    atomic_init (&family->series, NULL);
    family->type = req->type;
    family->name = strdup (req->name);
    family->help = strdup (req->help);
    bool ok = family->name && family->help;
    for (size_t i = 0; i < req->label_count; i++) {
        family->label_names [i] = strdup (req->label_names [i]);
        family->label_count++;
        ok = ok && family->label_names [i];
    }
    family->bound_count = req->bound_count;
    for (size_t i = 0; i < req->bound_count; i++) {
        family->bounds [i] = req->bounds [i];
        s_format_double (family->les [i], req->bounds [i]);
    }
    strcpy (family->les [req->bound_count], "+Inf");
    if (!ok) {
        s_family_free (family);
        return NULL;
    }
    return family;
}

static s_series_t *
s_series_new (s_family_t *family, const s_request_t *req)
{
    size_t buckets = family->type == S_HISTOGRAM ? family->bound_count + 1 : 0;
    s_series_t *series = calloc (1, sizeof *series + buckets * sizeof (_Atomic uint64_t));
    if (!series)
        return NULL;
    atomic_init (&series->next, NULL);
    series->family = family;
    atomic_init (&series->value, family->type == S_GAUGE ? s_bits (0.0) : 0);
    atomic_init (&series->sum, s_bits (0.0));
    for (size_t i = 0; i < buckets; i++)
        atomic_init (&series->buckets [i], 0);
    bool ok = true;
    s_buf_t labels = { NULL, 0, 0, false };
    s_buf_reserve (&labels, 0);
    for (size_t i = 0; i < req->label_count; i++) {
        series->label_values [i] = strdup (req->label_values [i]);
        ok = ok && series->label_values [i];
        if (i > 0)
            s_buf_putc (&labels, ',');
        s_buf_puts (&labels, req->label_names [i]);
        s_buf_put (&labels, "=\"", 2);
        s_buf_escaped (&labels, req->label_values [i], true);
        s_buf_putc (&labels, '"');
    }
    series->labels = labels.data;
    if (!ok || labels.failed) {
        s_series_free (series, req->label_count);
        return NULL;
    }
    return series;
}

//  Find or make the series for req. Under the mutex.
static s_series_t *
s_lookup_or_add (mdl_metrics_t *self, const s_request_t *req)
{
    s_family_t *family = atomic_load_explicit (&self->families, memory_order_relaxed);
    while (family && strcmp (family->name, req->name) != 0)
        family = atomic_load_explicit (&family->next, memory_order_relaxed);

    if (family) {
        const char *why = s_family_matches (family, req);
        if (why) {
            mdl_error ("metrics: %s: %s", req->name, why);
            return NULL;
        }
        s_series_t *series = atomic_load_explicit (&family->series, memory_order_relaxed);
        for (; series; series = atomic_load_explicit (&series->next, memory_order_relaxed)) {
            size_t i = 0;
            while (i < req->label_count
                && strcmp (series->label_values [i], req->label_values [i]) == 0)
                i++;
            if (i == req->label_count)
                return series;
        }
        series = s_series_new (family, req);
        if (!series) {
            mdl_error ("metrics: %s: out of memory", req->name);
            return NULL;
        }
        atomic_store_explicit (&family->tail->next, series, memory_order_release);
        family->tail = series;
        return series;
    }
    family = s_family_new (req);
    s_series_t *series = family ? s_series_new (family, req) : NULL;
    if (!series) {
        s_family_free (family);
        mdl_error ("metrics: %s: out of memory", req->name);
        return NULL;
    }
    atomic_init (&family->series, series);
    family->tail = series;
    if (self->tail)
        atomic_store_explicit (&self->tail->next, family, memory_order_release);
    else
        atomic_store_explicit (&self->families, family, memory_order_release);
    self->tail = family;
    return series;
}

static s_series_t *
s_register (mdl_metrics_t *self, s_request_t *req, va_list args)
{
    assert (self);
    const char *why = s_check (req, args);
    if (why) {
        mdl_error ("metrics: %s %s: %s", s_type_name (req->type),
                   req->name ? req->name : "(null)", why);
        return NULL;
    }
    pthread_mutex_lock (&self->mutex);
    s_series_t *series = s_lookup_or_add (self, req);
    pthread_mutex_unlock (&self->mutex);
    return series;
}

mdl_counter_t *
mdl_metrics_counter (mdl_metrics_t *self, const char *name, const char *help, ...)
{
    s_request_t req = { .type = S_COUNTER, .name = name, .help = help };
    va_list args;
    va_start (args, help);
    s_series_t *series = s_register (self, &req, args);
    va_end (args);
    return (mdl_counter_t *) series;
}

mdl_gauge_t *
mdl_metrics_gauge (mdl_metrics_t *self, const char *name, const char *help, ...)
{
    s_request_t req = { .type = S_GAUGE, .name = name, .help = help };
    va_list args;
    va_start (args, help);
    s_series_t *series = s_register (self, &req, args);
    va_end (args);
    return (mdl_gauge_t *) series;
}

mdl_histogram_t *
mdl_metrics_histogram (mdl_metrics_t *self, const char *name, const char *help,
                       const double *bounds, size_t count, ...)
{
    s_request_t req = { .type = S_HISTOGRAM, .name = name, .help = help,
                        .bounds = bounds, .bound_count = count };
    va_list args;
    va_start (args, count);
    s_series_t *series = s_register (self, &req, args);
    va_end (args);
    return (mdl_histogram_t *) series;
}


//  --------------------------------------------------------------------
//  Updates: relaxed atomics only; nothing orders them against each other

void
mdl_counter_add (mdl_counter_t *self, uint64_t amount)
{
    atomic_fetch_add_explicit (&s_series (self)->value, amount, memory_order_relaxed);
}

void
mdl_counter_set (mdl_counter_t *self, uint64_t total)
{
    atomic_store_explicit (&s_series (self)->value, total, memory_order_relaxed);
}

uint64_t
mdl_counter_value (const mdl_counter_t *self)
{
    return atomic_load_explicit (&s_series (self)->value, memory_order_relaxed);
}

void
mdl_gauge_set (mdl_gauge_t *self, double value)
{
    atomic_store_explicit (&s_series (self)->value, s_bits (value), memory_order_relaxed);
}

//  Adds delta to the double in *word; one pass when uncontended.
static void
s_add_double (_Atomic uint64_t *word, double delta)
{
    uint64_t old = atomic_load_explicit (word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit (word, &old, s_bits (s_double (old) + delta),
                                                   memory_order_relaxed, memory_order_relaxed))
        ;
}

void
mdl_gauge_add (mdl_gauge_t *self, double delta)
{
    s_add_double (&s_series (self)->value, delta);
}

double
mdl_gauge_value (const mdl_gauge_t *self)
{
    return s_double (atomic_load_explicit (&s_series (self)->value, memory_order_relaxed));
}

void
mdl_histogram_observe (mdl_histogram_t *self, double value)
{
    s_series_t *series = s_series (self);
    const s_family_t *family = series->family;
    size_t i = 0;
    while (i < family->bound_count && !(value <= family->bounds [i]))
        i++;
    atomic_fetch_add_explicit (&series->buckets [i], 1, memory_order_relaxed);
    s_add_double (&series->sum, value);
}

void
mdl_histogram_observe_ms (mdl_histogram_t *self, int64_t ms)
{
    mdl_histogram_observe (self, (double) ms / 1000.0);
}

uint64_t
mdl_histogram_count (const mdl_histogram_t *self)
{
    s_series_t *series = s_series (self);
    uint64_t total = 0;
    for (size_t i = 0; i <= series->family->bound_count; i++)
        total += atomic_load_explicit (&series->buckets [i], memory_order_relaxed);
    return total;
}

double
mdl_histogram_sum (const mdl_histogram_t *self)
{
    return s_double (atomic_load_explicit (&s_series (self)->sum, memory_order_relaxed));
}


//  --------------------------------------------------------------------
//  Collectors: the owner's thread only

int
mdl_metrics_add_collector (mdl_metrics_t *self, mdl_metrics_collect_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    if (self->collector_count == S_MAX_COLLECTORS)
        return -1;
    self->collectors [self->collector_count++] = (s_collector_t) { fn, arg };
    return 0;
}

void
mdl_metrics_set_collect_interval (mdl_metrics_t *self, int64_t interval_ms)
{
    assert (self);
    self->collect_interval = interval_ms > 0 ? interval_ms : 0;
}

int
mdl_metrics_collect (mdl_metrics_t *self, int64_t now_ms)
{
    assert (self);
    if (self->collected && now_ms - self->collected_at < self->collect_interval)
        return 0;
    for (size_t i = 0; i < self->collector_count; i++)
        self->collectors [i].fn (self, self->collectors [i].arg);
    self->collected = true;
    self->collected_at = now_ms;
    return 1;
}


//  --------------------------------------------------------------------
//  Rendering: any thread

//  name{labels} or name{labels,le="bound"}; braces only when needed
static void
s_buf_sample_name (s_buf_t *buf, const char *name, const char *suffix,
                   const char *labels, const char *le)
{
    s_buf_puts (buf, name);
    s_buf_puts (buf, suffix);
    if (!*labels && !le)
        return;
    s_buf_putc (buf, '{');
    s_buf_puts (buf, labels);
    if (le) {
        if (*labels)
            s_buf_putc (buf, ',');
        s_buf_put (buf, "le=\"", 4);
        s_buf_puts (buf, le);
        s_buf_putc (buf, '"');
    }
    s_buf_putc (buf, '}');
}

static void
s_render_histogram (s_buf_t *buf, const s_family_t *family, const s_series_t *series)
{
    //  Each bucket is read once, so the running total is cumulative and
    //  ends at the count printed for +Inf and _count.
    uint64_t total = 0;
    for (size_t i = 0; i <= family->bound_count; i++) {
        total += atomic_load_explicit (&series->buckets [i], memory_order_relaxed);
        s_buf_sample_name (buf, family->name, "_bucket", series->labels, family->les [i]);
        s_buf_putc (buf, ' ');
        s_buf_u64 (buf, total);
        s_buf_putc (buf, '\n');
    }
    s_buf_sample_name (buf, family->name, "_sum", series->labels, NULL);
    s_buf_putc (buf, ' ');
    s_buf_double (buf, s_double (atomic_load_explicit (&series->sum, memory_order_relaxed)));
    s_buf_putc (buf, '\n');
    s_buf_sample_name (buf, family->name, "_count", series->labels, NULL);
    s_buf_putc (buf, ' ');
    s_buf_u64 (buf, total);
    s_buf_putc (buf, '\n');
}

char *
mdl_metrics_render (mdl_metrics_t *self, size_t *size)
{
    assert (self);
    s_buf_t buf = { NULL, 0, 0, false };
    s_buf_reserve (&buf, 0);
    const s_family_t *family = atomic_load_explicit (&self->families, memory_order_acquire);
    for (; family; family = atomic_load_explicit (&family->next, memory_order_acquire)) {
        s_buf_puts (&buf, "# HELP ");
        s_buf_puts (&buf, family->name);
        s_buf_putc (&buf, ' ');
        s_buf_escaped (&buf, family->help, false);
        s_buf_puts (&buf, "\n# TYPE ");
        s_buf_puts (&buf, family->name);
        s_buf_putc (&buf, ' ');
        s_buf_puts (&buf, s_type_name (family->type));
        s_buf_putc (&buf, '\n');
        const s_series_t *series = atomic_load_explicit (&family->series, memory_order_acquire);
        for (; series; series = atomic_load_explicit (&series->next, memory_order_acquire)) {
            if (family->type == S_HISTOGRAM) {
                s_render_histogram (&buf, family, series);
                continue;
            }
            s_buf_sample_name (&buf, family->name, "", series->labels, NULL);
            s_buf_putc (&buf, ' ');
            uint64_t value = atomic_load_explicit (&series->value, memory_order_relaxed);
            if (family->type == S_COUNTER)
                s_buf_u64 (&buf, value);
            else
                s_buf_double (&buf, s_double (value));
            s_buf_putc (&buf, '\n');
        }
    }
    if (buf.failed) {
        free (buf.data);
        return NULL;
    }
    if (size)
        *size = buf.size;
    return buf.data;
}
