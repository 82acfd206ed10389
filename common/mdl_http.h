/*  mdl_http: the Prometheus scrape endpoint, GET /metrics over HTTP.

    mdl_http_new binds HOST:PORT (the value of --metrics) itself, so a
    port in use or a host that is not ours fails at once with errno set,
    then hands the socket to libmicrohttpd, which serves it from its own
    thread (MHD_USE_INTERNAL_POLLING_THREAD). The owner's loop is never
    involved: a scrape renders the registry on that thread
    (mdl_metrics_render, lock-free against updates), so a slow or stuck
    client costs the loop nothing. At most 32 connections at once, each
    closed after 10 s idle. The server thread blocks every signal, so a
    process's signal handling (signalfd or self-pipe, STYLE.md 6) is the
    same with or without --metrics, whenever mdl_http_new is called.

    Answers: GET or HEAD /metrics -> 200 with the text exposition format
    0.0.4 (Content-Type: text/plain; version=0.0.4; charset=utf-8); any
    other path -> 404; another method on /metrics -> 405 with Allow; a
    render without memory -> 500. A query string is ignored. A scrape
    keeps an HTTP/1.1 connection open (as Prometheus expects); an error
    answer closes it without reading the request's body.

    Addresses: "HOST:PORT" where HOST is an IPv4 literal, "localhost"
    (127.0.0.1), "*" for every IPv4 interface (as 0.0.0.0), or an IPv6
    literal in brackets ("[::1]:9100"); names are not looked up, so a
    parse never waits on DNS (a bind address is this machine's anyway).
    PORT is 0..65535, and 0 picks a free port (mdl_http_port tells which).

    Ownership: the server borrows the registry, which must outlive it.
*/
#ifndef MDL_HTTP_H_INCLUDED
#define MDL_HTTP_H_INCLUDED

#include <netinet/in.h>
#include <stddef.h>
#include <sys/socket.h>

#include "mdl_metrics.h"

typedef struct _mdl_http_t mdl_http_t;

typedef struct {
    struct sockaddr_storage addr;       //  Where to bind
    socklen_t len;                      //  Bytes of addr in use
} mdl_http_address_t;

//  Parse "HOST:PORT" (see above). Returns 0, or -1 and writes why into
//  error (a sentence naming the part that is wrong), so a program can
//  refuse a bad --metrics while it parses its flags.
int mdl_http_parse_address (const char *text, mdl_http_address_t *address,
                            char *error, size_t error_size);

//  Serve metrics at address. Returns NULL with errno set and the reason
//  logged: EINVAL for an address that does not parse, bind(2)'s errno
//  (EADDRINUSE, EADDRNOTAVAIL, EACCES ...) when the port cannot be had,
//  or another errno when libmicrohttpd cannot start.
mdl_http_t *mdl_http_new (const char *address, mdl_metrics_t *metrics);

//  Stop serving: closes the socket, waits for the server thread (a
//  scrape in progress finishes first). Safe twice; nulls *self_p.
void mdl_http_destroy (mdl_http_t **self_p);

//  The port bound, useful after asking for port 0.
int mdl_http_port (const mdl_http_t *self);

#endif
