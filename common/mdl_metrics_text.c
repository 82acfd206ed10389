/*  mdl_metrics_text: the text exposition format 0.0.4 of a registry,
    i.e. mdl_metrics_render (see mdl_metrics.h), and the text buffer and
    number formatting that the registry shares (mdl_metrics_int.h).

    Any thread may render while others update and register: the lists
    are read with acquire loads, the values with relaxed ones, and each
    histogram bucket once, so the buckets printed are cumulative by
    construction.
*/
#include "mdl_metrics_int.h"

#include <assert.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  --------------------------------------------------------------------
//  The text buffer and number formatting

bool
mdl_metrics_buf_reserve (mdl_metrics_buf_t *buf, size_t more)
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

void
mdl_metrics_buf_put (mdl_metrics_buf_t *buf, const char *text, size_t len)
{
    if (!mdl_metrics_buf_reserve (buf, len))
        return;
    memcpy (buf->data + buf->size, text, len);
    buf->size += len;
    buf->data [buf->size] = 0;
}

void
mdl_metrics_buf_puts (mdl_metrics_buf_t *buf, const char *text)
{
    mdl_metrics_buf_put (buf, text, strlen (text));
}

void
mdl_metrics_buf_putc (mdl_metrics_buf_t *buf, char c)
{
    mdl_metrics_buf_put (buf, &c, 1);
}

//  Escape backslash and newline (help text), and double quote too when
//  quote is set (label values), as the text format requires.
void
mdl_metrics_buf_escaped (mdl_metrics_buf_t *buf, const char *text, bool quote)
{
    for (const char *p = text; *p; p++) {
        if (*p == '\\')
            mdl_metrics_buf_put (buf, "\\\\", 2);
        else
        if (*p == '\n')
            mdl_metrics_buf_put (buf, "\\n", 2);
        else
        if (*p == '"' && quote)
            mdl_metrics_buf_put (buf, "\\\"", 2);
        else
            mdl_metrics_buf_putc (buf, *p);
    }
}

static void
s_buf_u64 (mdl_metrics_buf_t *buf, uint64_t value)
{
    char text [24];
    int len = snprintf (text, sizeof text, "%" PRIu64, value);
    mdl_metrics_buf_put (buf, text, (size_t) len);
}

//  The shortest of %.15g and %.17g that reads back as the same double,
//  so 0.1 prints as "0.1"; NaN and infinities as Prometheus spells them.
void
mdl_metrics_format_double (char text [32], double value)
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
s_buf_double (mdl_metrics_buf_t *buf, double value)
{
    char text [32];
    mdl_metrics_format_double (text, value);
    mdl_metrics_buf_puts (buf, text);
}

const char *
mdl_metrics_type_name (mdl_metrics_type_t type)
{
    return type == MDL_METRICS_COUNTER ? "counter" : type == MDL_METRICS_GAUGE ? "gauge" : "histogram";
}


//  --------------------------------------------------------------------
//  Rendering: any thread

//  name{labels} or name{labels,le="bound"}; braces only when needed
static void
s_buf_sample_name (mdl_metrics_buf_t *buf, const char *name, const char *suffix,
                   const char *labels, const char *le)
{
    mdl_metrics_buf_puts (buf, name);
    mdl_metrics_buf_puts (buf, suffix);
    if (!*labels && !le)
        return;
    mdl_metrics_buf_putc (buf, '{');
    mdl_metrics_buf_puts (buf, labels);
    if (le) {
        if (*labels)
            mdl_metrics_buf_putc (buf, ',');
        mdl_metrics_buf_put (buf, "le=\"", 4);
        mdl_metrics_buf_puts (buf, le);
        mdl_metrics_buf_putc (buf, '"');
    }
    mdl_metrics_buf_putc (buf, '}');
}

static void
s_render_histogram (mdl_metrics_buf_t *buf, const mdl_metrics_family_t *family, const mdl_metrics_series_t *series)
{
    //  Each bucket is read once, so the running total is cumulative and
    //  ends at the count printed for +Inf and _count.
    uint64_t total = 0;
    for (size_t i = 0; i <= family->bound_count; i++) {
        total += atomic_load_explicit (&series->buckets [i], memory_order_relaxed);
        s_buf_sample_name (buf, family->name, "_bucket", series->labels, family->les [i]);
        mdl_metrics_buf_putc (buf, ' ');
        s_buf_u64 (buf, total);
        mdl_metrics_buf_putc (buf, '\n');
    }
    s_buf_sample_name (buf, family->name, "_sum", series->labels, NULL);
    mdl_metrics_buf_putc (buf, ' ');
    s_buf_double (buf, mdl_metrics_double (atomic_load_explicit (&series->sum, memory_order_relaxed)));
    mdl_metrics_buf_putc (buf, '\n');
    s_buf_sample_name (buf, family->name, "_count", series->labels, NULL);
    mdl_metrics_buf_putc (buf, ' ');
    s_buf_u64 (buf, total);
    mdl_metrics_buf_putc (buf, '\n');
}

char *
mdl_metrics_render (mdl_metrics_t *self, size_t *size)
{
    assert (self);
    mdl_metrics_buf_t buf = { NULL, 0, 0, false };
    mdl_metrics_buf_reserve (&buf, 0);
    const mdl_metrics_family_t *family = atomic_load_explicit (&self->families, memory_order_acquire);
    for (; family; family = atomic_load_explicit (&family->next, memory_order_acquire)) {
        mdl_metrics_buf_puts (&buf, "# HELP ");
        mdl_metrics_buf_puts (&buf, family->name);
        mdl_metrics_buf_putc (&buf, ' ');
        mdl_metrics_buf_escaped (&buf, family->help, false);
        mdl_metrics_buf_puts (&buf, "\n# TYPE ");
        mdl_metrics_buf_puts (&buf, family->name);
        mdl_metrics_buf_putc (&buf, ' ');
        mdl_metrics_buf_puts (&buf, mdl_metrics_type_name (family->type));
        mdl_metrics_buf_putc (&buf, '\n');
        const mdl_metrics_series_t *series = atomic_load_explicit (&family->series, memory_order_acquire);
        for (; series; series = atomic_load_explicit (&series->next, memory_order_acquire)) {
            if (family->type == MDL_METRICS_HISTOGRAM) {
                s_render_histogram (&buf, family, series);
                continue;
            }
            s_buf_sample_name (&buf, family->name, "", series->labels, NULL);
            mdl_metrics_buf_putc (&buf, ' ');
            uint64_t value = atomic_load_explicit (&series->value, memory_order_relaxed);
            if (family->type == MDL_METRICS_COUNTER)
                s_buf_u64 (&buf, value);
            else
                s_buf_double (&buf, mdl_metrics_double (value));
            mdl_metrics_buf_putc (&buf, '\n');
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
