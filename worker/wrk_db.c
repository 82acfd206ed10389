/*  wrk_db: see wrk_db.h. The handle is the ops table and the
    implementation's state; every call is one indirect call.
*/
#include "wrk_db.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "wrk_db_sqlite.h"
#if defined (MANDRILL_WITH_PG)
#include "wrk_db_pg.h"
#endif

struct _wrk_db_t {
    const wrk_db_ops_t *ops;    //  The implementation
    void *impl;                 //  Its state, owned
};

//  The stores this worker knows, by URL prefix.
typedef struct {
    const char *prefix;         //  Matched case-sensitively at the start of the URL
    bool whole_url;             //  Target is the whole URL (else what follows prefix)
    wrk_db_open_fn *open;       //  Constructor
    const wrk_db_ops_t *ops;    //  Its operations
} scheme_t;

static const scheme_t s_schemes [] = {
    { "sqlite:", false, wrk_db_sqlite_open, &wrk_db_sqlite_ops },
#if defined (MANDRILL_WITH_PG)
    { "postgresql://", true, wrk_db_pg_open, &wrk_db_pg_ops },
    { "postgres://", true, wrk_db_pg_open, &wrk_db_pg_ops },
#endif
};
#define SCHEME_COUNT (sizeof s_schemes / sizeof s_schemes [0])

static const scheme_t *
s_scheme (const char *url, const char **target, char *error, size_t error_size)
{
    for (size_t i = 0; url && i < SCHEME_COUNT; i++) {
        size_t length = strlen (s_schemes [i].prefix);
        if (strncmp (url, s_schemes [i].prefix, length) == 0) {
            if (!url [length]) {
                snprintf (error, error_size, "database URL '%s' names no database", url);
                return NULL;
            }
            *target = s_schemes [i].whole_url ? url : url + length;
            return &s_schemes [i];
        }
    }
    char safe [256];
    wrk_db_url_redact (url ? url : "", safe, sizeof safe);
    if (url && (strncmp (url, "postgresql://", 13) == 0 || strncmp (url, "postgres://", 11) == 0))
        snprintf (error, error_size, "database '%s': this worker was built without "
                  "PostgreSQL support", safe);
    else
        snprintf (error, error_size, "unsupported database '%s': use sqlite:PATH or "
                  "postgresql://USER@HOST:PORT/DB", safe);
    return NULL;
}

int
wrk_db_check_url (const char *url, char *error, size_t error_size)
{
    const char *target;
    return s_scheme (url, &target, error, error_size) ? 0 : -1;
}

void
wrk_db_url_redact (const char *url, char *out, size_t out_size)
{
    //  scheme://user:password@host -> scheme://user:***@host; a password
    //  in the query (?password=) is cut off with the whole query
    const char *authority = strstr (url, "://");
    const char *at = authority ? strchr (authority + 3, '@') : NULL;
    const char *slash = authority ? strchr (authority + 3, '/') : NULL;
    if (at && slash && slash < at)
        at = NULL;
    const char *colon = at ? memchr (authority + 3, ':', (size_t) (at - authority - 3)) : NULL;
    const char *query = strchr (url, '?');
    int length = query ? (int) (query - url) : (int) strlen (url);
    if (colon)
        snprintf (out, out_size, "%.*s:***%.*s", (int) (colon - url), url,
                  (int) (length - (at - url)), at);
    else
        snprintf (out, out_size, "%.*s", length, url);
    if (query && strlen (out) + 4 < out_size)
        strcat (out, "?...");
}

wrk_db_t *
wrk_db_new (const char *url, const char *worker_name, char *error, size_t error_size)
{
    const char *target;
    const scheme_t *scheme = s_scheme (url, &target, error, error_size);
    if (!scheme)
        return NULL;
    void *impl = scheme->open (target, worker_name, error, error_size);
    if (!impl)
        return NULL;
    wrk_db_t *self = wrk_db_new_with (scheme->ops, impl);
    if (!self)
        snprintf (error, error_size, "out of memory");
    return self;
}

wrk_db_t *
wrk_db_new_with (const wrk_db_ops_t *ops, void *impl)
{
    assert (ops && ops->save && ops->outcome && ops->flush && ops->watch
            && ops->next_wake && ops->service && ops->pending && ops->destroy);
    wrk_db_t *self = calloc (1, sizeof *self);
    if (!self) {
        ops->destroy (&impl);
        return NULL;
    }
    self->ops = ops;
    self->impl = impl;
    return self;
}

void
wrk_db_destroy (wrk_db_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        wrk_db_t *self = *self_p;
        self->ops->destroy (&self->impl);
        free (self);
        *self_p = NULL;
    }
}

int
wrk_db_save (wrk_db_t *self, const wrk_db_row_t *row)
{
    return self->ops->save (self->impl, row);
}

int
wrk_db_outcome (wrk_db_t *self, const char *message_id, const char *outcome,
                int64_t outcome_wall_ms)
{
    return self->ops->outcome (self->impl, message_id, outcome, outcome_wall_ms);
}

int
wrk_db_flush (wrk_db_t *self)
{
    return self->ops->flush (self->impl);
}

void
wrk_db_watch (wrk_db_t *self, wrk_db_watch_t *watch)
{
    watch->sock = NULL;
    watch->fd = -1;
    watch->events = 0;
    self->ops->watch (self->impl, watch);
}

int64_t
wrk_db_next_wake (wrk_db_t *self)
{
    return self->ops->next_wake (self->impl);
}

int
wrk_db_service (wrk_db_t *self, wrk_db_done_fn *done, void *arg)
{
    return self->ops->service (self->impl, done, arg);
}

size_t
wrk_db_pending (wrk_db_t *self)
{
    return self->ops->pending (self->impl);
}

const char *
wrk_db_name (wrk_db_t *self)
{
    return self->ops->name;
}
