/*  mdl_metrics: see mdl_metrics.h. The registry: validation,
    registration, updates and collectors. The layout and its thread rules
    are in mdl_metrics_int.h, the rendering is in mdl_metrics_text.c. The
    public series types are opaque names for mdl_metrics_series_t, cast
    at the boundary.
*/
#include "mdl_metrics_int.h"
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

const double mdl_metrics_seconds_buckets [] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10
};
const size_t mdl_metrics_seconds_buckets_count =
    sizeof mdl_metrics_seconds_buckets / sizeof mdl_metrics_seconds_buckets [0];

static inline mdl_metrics_series_t *
s_series (const void *opaque)
{
    assert (opaque);
    return (mdl_metrics_series_t *) opaque;
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
s_series_free (mdl_metrics_series_t *series, size_t label_count)
{
    if (!series)
        return;
    for (size_t i = 0; i < label_count; i++)
        free (series->label_values [i]);
    free (series->labels);
    free (series);
}

static void
s_family_free (mdl_metrics_family_t *family)
{
    if (!family)
        return;
    mdl_metrics_series_t *series = atomic_load_explicit (&family->series, memory_order_relaxed);
    while (series) {
        mdl_metrics_series_t *next = atomic_load_explicit (&series->next, memory_order_relaxed);
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
    mdl_metrics_family_t *family = atomic_load_explicit (&self->families, memory_order_relaxed);
    while (family) {
        mdl_metrics_family_t *next = atomic_load_explicit (&family->next, memory_order_relaxed);
        s_family_free (family);
        family = next;
    }
    pthread_mutex_destroy (&self->mutex);
    free (self);
    *self_p = NULL;
}

//  What one registration asks for, checked before the registry is touched
typedef struct {
    mdl_metrics_type_t type;                      //  Kind of series
    const char *name;                   //  Metric name
    const char *help;                   //  Help text
    size_t label_count;                 //  Pairs given
    const char *label_names [MDL_METRICS_MAX_LABELS];   //  Borrowed
    const char *label_values [MDL_METRICS_MAX_LABELS];  //  Borrowed
    const double *bounds;               //  Histogram bounds, borrowed
    size_t bound_count;                 //  Number of bounds
} s_request_t;

//  Returns NULL when the request is sound, else why not.
static const char *
s_check (s_request_t *req, va_list args)
{
    if (!s_valid_name (req->name, true))
        return "metric name is not [a-zA-Z_:][a-zA-Z0-9_:]*";
    if (req->type == MDL_METRICS_COUNTER && !s_ends_with (req->name, "_total"))
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
        if (req->type == MDL_METRICS_HISTOGRAM && strcmp (label, "le") == 0)
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
    if (req->type == MDL_METRICS_HISTOGRAM) {
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
s_family_matches (const mdl_metrics_family_t *family, const s_request_t *req)
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
    if (req->type == MDL_METRICS_HISTOGRAM) {
        if (family->bound_count != req->bound_count)
            return "registered before with other buckets";
        for (size_t i = 0; i < req->bound_count; i++)
            if (family->bounds [i] != req->bounds [i])
                return "registered before with other buckets";
    }
    return NULL;
}

static mdl_metrics_family_t *
s_family_new (const s_request_t *req)
{
    mdl_metrics_family_t *family = calloc (1, sizeof *family);
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
        mdl_metrics_format_double (family->les [i], req->bounds [i]);
    }
    strcpy (family->les [req->bound_count], "+Inf");
    if (!ok) {
        s_family_free (family);
        return NULL;
    }
    return family;
}

static mdl_metrics_series_t *
s_series_new (mdl_metrics_family_t *family, const s_request_t *req)
{
    size_t buckets = family->type == MDL_METRICS_HISTOGRAM ? family->bound_count + 1 : 0;
    mdl_metrics_series_t *series = calloc (1, sizeof *series + buckets * sizeof (_Atomic uint64_t));
    if (!series)
        return NULL;
    atomic_init (&series->next, NULL);
    series->family = family;
    atomic_init (&series->value, family->type == MDL_METRICS_GAUGE ? mdl_metrics_bits (0.0) : 0);
    atomic_init (&series->sum, mdl_metrics_bits (0.0));
    for (size_t i = 0; i < buckets; i++)
        atomic_init (&series->buckets [i], 0);
    bool ok = true;
    mdl_metrics_buf_t labels = { NULL, 0, 0, false };
    mdl_metrics_buf_reserve (&labels, 0);
    for (size_t i = 0; i < req->label_count; i++) {
        series->label_values [i] = strdup (req->label_values [i]);
        ok = ok && series->label_values [i];
        if (i > 0)
            mdl_metrics_buf_putc (&labels, ',');
        mdl_metrics_buf_puts (&labels, req->label_names [i]);
        mdl_metrics_buf_put (&labels, "=\"", 2);
        mdl_metrics_buf_escaped (&labels, req->label_values [i], true);
        mdl_metrics_buf_putc (&labels, '"');
    }
    series->labels = labels.data;
    if (!ok || labels.failed) {
        s_series_free (series, req->label_count);
        return NULL;
    }
    return series;
}

//  Find or make the series for req. Under the mutex.
static mdl_metrics_series_t *
s_lookup_or_add (mdl_metrics_t *self, const s_request_t *req)
{
    mdl_metrics_family_t *family = atomic_load_explicit (&self->families, memory_order_relaxed);
    while (family && strcmp (family->name, req->name) != 0)
        family = atomic_load_explicit (&family->next, memory_order_relaxed);

    if (family) {
        const char *why = s_family_matches (family, req);
        if (why) {
            mdl_error ("metrics: %s: %s", req->name, why);
            return NULL;
        }
        mdl_metrics_series_t *series = atomic_load_explicit (&family->series, memory_order_relaxed);
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
    mdl_metrics_series_t *series = family ? s_series_new (family, req) : NULL;
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

static mdl_metrics_series_t *
s_register (mdl_metrics_t *self, s_request_t *req, va_list args)
{
    assert (self);
    const char *why = s_check (req, args);
    if (why) {
        mdl_error ("metrics: %s %s: %s", mdl_metrics_type_name (req->type),
                   req->name ? req->name : "(null)", why);
        return NULL;
    }
    pthread_mutex_lock (&self->mutex);
    mdl_metrics_series_t *series = s_lookup_or_add (self, req);
    pthread_mutex_unlock (&self->mutex);
    return series;
}

mdl_counter_t *
mdl_metrics_counter (mdl_metrics_t *self, const char *name, const char *help, ...)
{
    s_request_t req = { .type = MDL_METRICS_COUNTER, .name = name, .help = help };
    va_list args;
    va_start (args, help);
    mdl_metrics_series_t *series = s_register (self, &req, args);
    va_end (args);
    return (mdl_counter_t *) series;
}

mdl_gauge_t *
mdl_metrics_gauge (mdl_metrics_t *self, const char *name, const char *help, ...)
{
    s_request_t req = { .type = MDL_METRICS_GAUGE, .name = name, .help = help };
    va_list args;
    va_start (args, help);
    mdl_metrics_series_t *series = s_register (self, &req, args);
    va_end (args);
    return (mdl_gauge_t *) series;
}

mdl_histogram_t *
mdl_metrics_histogram (mdl_metrics_t *self, const char *name, const char *help,
                       const double *bounds, size_t count, ...)
{
    s_request_t req = { .type = MDL_METRICS_HISTOGRAM, .name = name, .help = help,
                        .bounds = bounds, .bound_count = count };
    va_list args;
    va_start (args, count);
    mdl_metrics_series_t *series = s_register (self, &req, args);
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
    atomic_store_explicit (&s_series (self)->value, mdl_metrics_bits (value), memory_order_relaxed);
}

//  Adds delta to the double in *word; one pass when uncontended.
static void
s_add_double (_Atomic uint64_t *word, double delta)
{
    uint64_t old = atomic_load_explicit (word, memory_order_relaxed);
    while (!atomic_compare_exchange_weak_explicit (word, &old, mdl_metrics_bits (mdl_metrics_double (old) + delta),
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
    return mdl_metrics_double (atomic_load_explicit (&s_series (self)->value, memory_order_relaxed));
}

void
mdl_histogram_observe (mdl_histogram_t *self, double value)
{
    mdl_metrics_series_t *series = s_series (self);
    const mdl_metrics_family_t *family = series->family;
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
    mdl_metrics_series_t *series = s_series (self);
    uint64_t total = 0;
    for (size_t i = 0; i <= series->family->bound_count; i++)
        total += atomic_load_explicit (&series->buckets [i], memory_order_relaxed);
    return total;
}

double
mdl_histogram_sum (const mdl_histogram_t *self)
{
    return mdl_metrics_double (atomic_load_explicit (&s_series (self)->sum, memory_order_relaxed));
}


//  --------------------------------------------------------------------
//  Collectors: the owner's thread only

int
mdl_metrics_add_collector (mdl_metrics_t *self, mdl_metrics_collect_fn *fn, void *arg)
{
    assert (self);
    assert (fn);
    if (self->collector_count == MDL_METRICS_MAX_COLLECTORS)
        return -1;
    self->collectors [self->collector_count++] = (mdl_metrics_collector_t) { fn, arg };
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

