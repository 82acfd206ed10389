/*  mdl_http: see mdl_http.h. */
#include "mdl_http.h"
#include "mdl_log.h"

#include <arpa/inet.h>
#include <assert.h>
#include <errno.h>
#include <microhttpd.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define S_CONNECTION_LIMIT 32
#define S_IDLE_TIMEOUT_S 10
#define S_BACKLOG 16

static const char s_content_type [] = "text/plain; version=0.0.4; charset=utf-8";

struct _mdl_http_t {
    struct MHD_Daemon *daemon;          //  libmicrohttpd server and its thread
    mdl_metrics_t *metrics;             //  Registry served, borrowed
    int port;                           //  Port bound
};

int
mdl_http_parse_address (const char *text, mdl_http_address_t *address,
                        char *error, size_t error_size)
{
    assert (address);
    assert (error && error_size);
    memset (address, 0, sizeof *address);
    if (!text || !*text) {
        snprintf (error, error_size, "empty address, expected HOST:PORT");
        return -1;
    }
    char host [256];
    const char *port_text;
    bool ipv6 = text [0] == '[';
    if (ipv6) {
        const char *close = strchr (text, ']');
        if (!close || close [1] != ':') {
            snprintf (error, error_size, "'%s': an IPv6 host is [ADDRESS]:PORT", text);
            return -1;
        }
        size_t len = (size_t) (close - text - 1);
        if (len == 0 || len >= sizeof host) {
            snprintf (error, error_size, "'%s': the IPv6 address is empty or too long", text);
            return -1;
        }
        memcpy (host, text + 1, len);
        host [len] = 0;
        port_text = close + 2;
    }
    else {
        const char *colon = strrchr (text, ':');
        if (!colon) {
            snprintf (error, error_size, "'%s': missing :PORT, expected HOST:PORT", text);
            return -1;
        }
        if (memchr (text, ':', (size_t) (colon - text))) {
            snprintf (error, error_size, "'%s': an IPv6 host goes in brackets, e.g. [::1]:9100", text);
            return -1;
        }
        size_t len = (size_t) (colon - text);
        if (len == 0) {
            snprintf (error, error_size,
                      "'%s': missing host (use * or 0.0.0.0 for every interface)", text);
            return -1;
        }
        if (len >= sizeof host) {
            snprintf (error, error_size, "'%s': host name too long", text);
            return -1;
        }
        memcpy (host, text, len);
        host [len] = 0;
        port_text = colon + 1;
    }
    //  The port: 1 to 5 decimal digits, at most 65535, nothing after
    long port = 0;
    size_t digits = 0;
    for (const char *p = port_text; *p; p++, digits++) {
        if (*p < '0' || *p > '9' || digits == 5) {
            digits = 0;
            break;
        }
        port = port * 10 + (*p - '0');
    }
    if (digits == 0 || port > 65535) {
        snprintf (error, error_size, "'%s': the port is not a number in 0..65535", text);
        return -1;
    }
    if (strcmp (host, "*") == 0) {
        struct sockaddr_in *in = (struct sockaddr_in *) &address->addr;
        in->sin_family = AF_INET;
        in->sin_addr.s_addr = htonl (INADDR_ANY);
        in->sin_port = htons ((uint16_t) port);
        address->len = sizeof *in;
        return 0;
    }
    if (ipv6) {
        struct sockaddr_in6 *in6 = (struct sockaddr_in6 *) &address->addr;
        if (inet_pton (AF_INET6, host, &in6->sin6_addr) != 1) {
            snprintf (error, error_size, "'%s': '%s' is not an IPv6 address", text, host);
            return -1;
        }
        in6->sin6_family = AF_INET6;
        in6->sin6_port = htons ((uint16_t) port);
        address->len = sizeof *in6;
        return 0;
    }
    //  Numeric only, so parsing never waits on DNS
    struct sockaddr_in *in = (struct sockaddr_in *) &address->addr;
    if (strcmp (host, "localhost") == 0)
        in->sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    else
    if (inet_pton (AF_INET, host, &in->sin_addr) != 1) {
        snprintf (error, error_size,
                  "'%s': host '%s' is not an IPv4 address (a.b.c.d), localhost or *",
                  text, host);
        return -1;
    }
    in->sin_family = AF_INET;
    in->sin_port = htons ((uint16_t) port);
    address->len = sizeof *in;
    return 0;
}

__attribute__ ((format (printf, 2, 0)))
static void
s_log (void *arg, const char *format, va_list args)
{
    (void) arg;
    char line [512];
    vsnprintf (line, sizeof line, format, args);
    size_t len = strlen (line);
    while (len && line [len - 1] == '\n')
        line [--len] = 0;
    mdl_warn ("metrics http: %s", line);
}

static enum MHD_Result
s_reply (struct MHD_Connection *connection, unsigned int status, const char *text)
{
    struct MHD_Response *response = MHD_create_response_from_buffer (
        strlen (text), (void *) text, MHD_RESPMEM_PERSISTENT);
    if (!response)
        return MHD_NO;
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, "text/plain; charset=utf-8");
    if (status == MHD_HTTP_METHOD_NOT_ALLOWED)
        MHD_add_response_header (response, MHD_HTTP_HEADER_ALLOW, "GET, HEAD");
    enum MHD_Result rc = MHD_queue_response (connection, status, response);
    MHD_destroy_response (response);
    return rc;
}

//  Runs on libmicrohttpd's thread, at least twice per request: first when
//  the head is in, then once per piece of body, then with no data. An
//  error is answered at the first call, which makes libmicrohttpd close
//  the connection without reading a body; a scrape is answered at the
//  second, which keeps an HTTP/1.1 connection open for the next one.
static enum MHD_Result
s_handle (void *cls, struct MHD_Connection *connection, const char *url,
          const char *method, const char *version, const char *upload_data,
          size_t *upload_data_size, void **con_cls)
{
    (void) upload_data;
    (void) version;
    static int s_head_seen;
    mdl_http_t *self = (mdl_http_t *) cls;
    if (strcmp (url, "/metrics") != 0)
        return s_reply (connection, MHD_HTTP_NOT_FOUND, "Not found: metrics are at /metrics\n");
    if (strcmp (method, MHD_HTTP_METHOD_GET) != 0 && strcmp (method, MHD_HTTP_METHOD_HEAD) != 0)
        return s_reply (connection, MHD_HTTP_METHOD_NOT_ALLOWED, "Method not allowed: use GET\n");
    if (*con_cls == NULL) {
        *con_cls = &s_head_seen;
        return MHD_YES;
    }
    if (*upload_data_size) {
        *upload_data_size = 0;          //  A GET with a body: ignored
        return MHD_YES;
    }
    size_t size;
    char *text = mdl_metrics_render (self->metrics, &size);
    if (!text)
        return s_reply (connection, MHD_HTTP_INTERNAL_SERVER_ERROR, "Out of memory\n");
    struct MHD_Response *response =
        MHD_create_response_from_buffer (size, text, MHD_RESPMEM_MUST_FREE);
    if (!response) {
        free (text);
        return MHD_NO;
    }
    MHD_add_response_header (response, MHD_HTTP_HEADER_CONTENT_TYPE, s_content_type);
    enum MHD_Result rc = MHD_queue_response (connection, MHD_HTTP_OK, response);
    MHD_destroy_response (response);
    return rc;
}

//  A listening socket on address, or -1 with errno set.
static int
s_listen (const mdl_http_address_t *address, int *port)
{
    int fd = socket (address->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    //  Reuse lets a restarted process bind past TIME_WAIT; on Linux it
    //  does not let two processes listen on one port
    int on = 1;
    setsockopt (fd, SOL_SOCKET, SO_REUSEADDR, &on, sizeof on);
    if (address->addr.ss_family == AF_INET6)
        setsockopt (fd, IPPROTO_IPV6, IPV6_V6ONLY, &on, sizeof on);
    struct sockaddr_storage bound;
    socklen_t bound_len = sizeof bound;
    if (bind (fd, (const struct sockaddr *) &address->addr, address->len) != 0
    ||  listen (fd, S_BACKLOG) != 0
    ||  getsockname (fd, (struct sockaddr *) &bound, &bound_len) != 0) {
        int error = errno;
        close (fd);
        errno = error;
        return -1;
    }
    *port = bound.ss_family == AF_INET6
          ? ntohs (((struct sockaddr_in6 *) &bound)->sin6_port)
          : ntohs (((struct sockaddr_in *) &bound)->sin_port);
    return fd;
}

mdl_http_t *
mdl_http_new (const char *address, mdl_metrics_t *metrics)
{
    assert (metrics);
    mdl_http_address_t parsed;
    char error [300];
    if (mdl_http_parse_address (address, &parsed, error, sizeof error) != 0) {
        mdl_error ("metrics: %s", error);
        errno = EINVAL;
        return NULL;
    }
    mdl_http_t *self = calloc (1, sizeof *self);
    if (!self)
        return NULL;
    self->metrics = metrics;
    int fd = s_listen (&parsed, &self->port);
    if (fd < 0) {
        int saved = errno;
        mdl_error ("metrics: cannot listen on %s: %s", address, strerror (saved));
        free (self);
        errno = saved;
        return NULL;
    }
    unsigned int flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
    if (parsed.addr.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    //  The server thread inherits a mask that blocks every signal, so
    //  SIGTERM and friends reach the owner's signalfd or handler thread
    //  instead of killing the process from libmicrohttpd's thread
    sigset_t all, previous;
    sigfillset (&all);
    pthread_sigmask (SIG_BLOCK, &all, &previous);
    errno = 0;
    self->daemon = MHD_start_daemon (
        flags, 0, NULL, NULL, s_handle, self,
        //  The logger first, so libmicrohttpd's own messages use it too
        MHD_OPTION_EXTERNAL_LOGGER, s_log, NULL,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket) fd,
        MHD_OPTION_CONNECTION_LIMIT, (unsigned int) S_CONNECTION_LIMIT,
        MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int) S_IDLE_TIMEOUT_S,
        MHD_OPTION_END);
    int start_errno = errno;
    pthread_sigmask (SIG_SETMASK, &previous, NULL);
    errno = start_errno;
    if (!self->daemon) {
        int saved = errno ? errno : EIO;
        mdl_error ("metrics: cannot start the HTTP server on %s", address);
        close (fd);
        free (self);
        errno = saved;
        return NULL;
    }
    char host [INET6_ADDRSTRLEN] = "?";
    if (parsed.addr.ss_family == AF_INET6)
        inet_ntop (AF_INET6, &((struct sockaddr_in6 *) &parsed.addr)->sin6_addr, host, sizeof host);
    else
        inet_ntop (AF_INET, &((struct sockaddr_in *) &parsed.addr)->sin_addr, host, sizeof host);
    mdl_info ("metrics: serving http://%s%s%s:%d/metrics",
              parsed.addr.ss_family == AF_INET6 ? "[" : "", host,
              parsed.addr.ss_family == AF_INET6 ? "]" : "", self->port);
    return self;
}

void
mdl_http_destroy (mdl_http_t **self_p)
{
    assert (self_p);
    mdl_http_t *self = *self_p;
    if (!self)
        return;
    //  Stops the thread and closes the listening socket it was given
    MHD_stop_daemon (self->daemon);
    free (self);
    *self_p = NULL;
}

int
mdl_http_port (const mdl_http_t *self)
{
    assert (self);
    return self->port;
}
