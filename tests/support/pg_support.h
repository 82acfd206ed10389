/*  pg_support: a real, private PostgreSQL server for a test.

    pg_server_new makes a temporary directory owned by the postgres user,
    runs initdb there (superuser "mandrill" with password "secret",
    password authentication on TCP, no fsync) and starts the server with
    pg_ctl on 127.0.0.1 and a free port, its Unix socket in the same
    directory. Every program runs as postgres through `runuser -u postgres
    --`, so the test must run as root. The binaries are taken from
    $MANDRILL_PG_BINDIR, else the newest /usr/lib/postgresql/N/bin, else
    the PATH.

    The server is stopped by its postmaster PID (read from postmaster.pid),
    never by name: SIGQUIT (immediate shutdown), then SIGKILL if it is
    still there after 10 s. Every external command has a time limit and is
    killed by PID when it runs over.

    These functions return 0 / -1 or a pointer / NULL with a reason in
    error; they never end the test themselves. Costs: initdb takes about a
    second or two, a start or stop well under a second on an idle machine.
*/
#ifndef PG_SUPPORT_H_INCLUDED
#define PG_SUPPORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

typedef struct {
    char dir [256];             //  Temporary directory (socket, log)
    char data [300];            //  Data directory
    char bindir [256];          //  PostgreSQL programs
    int port;                   //  TCP port on 127.0.0.1
    pid_t pid;                  //  Postmaster, or 0 when stopped
    char url [256];             //  postgresql://mandrill:secret@127.0.0.1:PORT/postgres
} pg_server_t;

//  Make, initialise and start a server. Returns NULL with a reason (for
//  example "PostgreSQL binaries not found", "must run as root").
pg_server_t *pg_server_new (char *error, size_t error_size);

//  Start the server again on the same port and data (after a stop).
int pg_server_start (pg_server_t *self, char *error, size_t error_size);

//  `pg_ctl -m immediate stop`: the server dies without a checkpoint and
//  drops every connection, as in a crash.
int pg_server_stop_immediate (pg_server_t *self, char *error, size_t error_size);

//  Stop the server by PID and remove the directory (kept when
//  MANDRILL_KEEP_TMP is set). Safe on NULL; nulls *self_p.
void pg_server_destroy (pg_server_t **self_p);

//  Run sql on the server (synchronous libpq) and return the first column
//  of the first row as a number; -1 on error or no row (reason in error).
long long pg_server_query_int (pg_server_t *self, const char *sql, char *error, size_t error_size);

//  The same, copying the text of the first column into out ("" for NULL).
int pg_server_query_text (pg_server_t *self, const char *sql, char *out, size_t out_size,
                          char *error, size_t error_size);

#endif
