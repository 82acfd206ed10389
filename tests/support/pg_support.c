/*  pg_support: see pg_support.h. */
#include "pg_support.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <glob.h>
#include <libgen.h>
#include <libpq-fe.h>
#include <limits.h>
#include <netinet/in.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define COMMAND_TIMEOUT_MS  60000   //  initdb, pg_ctl: killed after this long
#define STOP_TIMEOUT_MS     10000   //  SIGQUIT, then SIGKILL after this long

static long long
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (long long) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_pause_ms (int ms)
{
    struct timespec ts = { .tv_sec = 0, .tv_nsec = (long) ms * 1000000 };
    nanosleep (&ts, NULL);
}

static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_port = 0 };
    addr.sin_addr.s_addr = htonl (INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    int port = -1;
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr) == 0
    &&  getsockname (fd, (struct sockaddr *) &addr, &len) == 0)
        port = ntohs (addr.sin_port);
    close (fd);
    return port;
}

static bool
s_is_program (const char *path)
{
    return access (path, X_OK) == 0;
}

static int
s_find_bindir (char *bindir, size_t size)
{
    const char *env = getenv ("MANDRILL_PG_BINDIR");
    if (env && *env) {
        snprintf (bindir, size, "%s", env);
        char path [PATH_MAX];
        snprintf (path, sizeof path, "%s/initdb", bindir);
        return s_is_program (path) ? 0 : -1;
    }
    glob_t found;
    if (glob ("/usr/lib/postgresql/*/bin/initdb", 0, NULL, &found) == 0 && found.gl_pathc > 0) {
        snprintf (bindir, size, "%s", dirname (found.gl_pathv [found.gl_pathc - 1]));
        globfree (&found);
        return 0;
    }
    globfree (&found);
    const char *path_env = getenv ("PATH");
    char *paths = strdup (path_env ? path_env : "");
    int rc = -1;
    for (char *save = NULL, *dir = strtok_r (paths, ":", &save); dir && rc != 0;
         dir = strtok_r (NULL, ":", &save)) {
        char path [PATH_MAX], real [PATH_MAX];
        snprintf (path, sizeof path, "%s/initdb", dir);
        if (s_is_program (path) && realpath (path, real)) {
            snprintf (bindir, size, "%s", dirname (real));
            rc = 0;
        }
    }
    free (paths);
    return rc;
}

//  Is pid gone (or a zombie nobody reaps)?
static bool
s_gone (pid_t pid)
{
    if (kill (pid, 0) == -1 && errno == ESRCH)
        return true;
    char path [64], line [512];
    snprintf (path, sizeof path, "/proc/%d/stat", (int) pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return true;
    bool zombie = false;
    if (fgets (line, sizeof line, file)) {
        char *paren = strrchr (line, ')');
        zombie = paren && paren [1] == ' ' && (paren [2] == 'Z' || paren [2] == 'X');
    }
    fclose (file);
    return zombie;
}

//  Run `runuser -u postgres -- argv...` in self->dir, output appended to
//  dir/commands.log, and wait for it. Returns 0 when it exited 0.
static int
s_run (pg_server_t *self, const char *const argv [], char *error, size_t error_size)
{
    const char *full [32] = { "runuser", "-u", "postgres", "--" };
    size_t n = 4;
    for (size_t i = 0; argv [i] && n < 31; i++)
        full [n++] = argv [i];
    full [n] = NULL;
    char log [300];
    snprintf (log, sizeof log, "%s/commands.log", self->dir);
    pid_t pid = fork ();
    if (pid < 0) {
        snprintf (error, error_size, "fork: %s", strerror (errno));
        return -1;
    }
    if (pid == 0) {
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, STDOUT_FILENO);
            dup2 (fd, STDERR_FILENO);
            close (fd);
        }
        if (chdir (self->dir) != 0)
            _exit (126);
        execvp ("runuser", (char *const *) full);
        _exit (127);
    }
    long long deadline = s_mono_ms () + COMMAND_TIMEOUT_MS;
    int status = 0;
    while (waitpid (pid, &status, WNOHANG) == 0) {
        if (s_mono_ms () >= deadline) {
            kill (pid, SIGKILL);
            waitpid (pid, &status, 0);
            snprintf (error, error_size, "%s timed out (see %s)", argv [0], log);
            return -1;
        }
        s_pause_ms (10);
    }
    if (!WIFEXITED (status) || WEXITSTATUS (status) != 0) {
        snprintf (error, error_size, "%s failed with status %d (see %s)", argv [0],
                  WIFEXITED (status) ? WEXITSTATUS (status) : -1, log);
        return -1;
    }
    return 0;
}

static int
s_read_pid (pg_server_t *self)
{
    char path [400];
    snprintf (path, sizeof path, "%s/postmaster.pid", self->data);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    int pid = 0;
    int rc = fscanf (file, "%d", &pid) == 1 && pid > 0 ? 0 : -1;
    fclose (file);
    self->pid = rc == 0 ? (pid_t) pid : 0;
    return rc;
}

static int
s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) flag;
    (void) ftw;
    (void) st;
    return remove (path);
}

pg_server_t *
pg_server_new (char *error, size_t error_size)
{
    if (geteuid () != 0) {
        snprintf (error, error_size, "must run as root to start PostgreSQL as the postgres user");
        return NULL;
    }
    struct passwd *postgres = getpwnam ("postgres");
    if (!postgres) {
        snprintf (error, error_size, "no postgres user: install the postgresql package");
        return NULL;
    }
    pg_server_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    if (s_find_bindir (self->bindir, sizeof self->bindir) != 0) {
        snprintf (error, error_size, "PostgreSQL binaries (initdb, pg_ctl) not found: install "
                  "the postgresql package or set MANDRILL_PG_BINDIR");
        free (self);
        return NULL;
    }
    snprintf (self->dir, sizeof self->dir, "/tmp/mandrill_pg_XXXXXX");
    if (!mkdtemp (self->dir)
    ||  chown (self->dir, postgres->pw_uid, postgres->pw_gid) != 0) {
        snprintf (error, error_size, "cannot make %s: %s", self->dir, strerror (errno));
        free (self);
        return NULL;
    }
    snprintf (self->data, sizeof self->data, "%s/data", self->dir);
    self->port = s_free_port ();
    snprintf (self->url, sizeof self->url,
              "postgresql://mandrill:secret@127.0.0.1:%d/postgres", self->port);

    char pwfile [300], initdb [300], option [320];
    snprintf (pwfile, sizeof pwfile, "%s/pw", self->dir);
    snprintf (initdb, sizeof initdb, "%s/initdb", self->bindir);
    snprintf (option, sizeof option, "--pwfile=%s", pwfile);
    FILE *file = fopen (pwfile, "w");
    bool written = file && fputs ("secret\n", file) >= 0;
    if (file && fclose (file) != 0)
        written = false;
    if (!written || chown (pwfile, postgres->pw_uid, postgres->pw_gid) != 0) {
        snprintf (error, error_size, "cannot write %s", pwfile);
        pg_server_destroy (&self);
        return NULL;
    }
    const char *argv [] = { initdb, "-D", self->data, "-U", "mandrill", option,
                            "--auth-local=trust", "--auth-host=scram-sha-256",
                            "-E", "UTF8", "--locale=C", "-N", NULL };
    if (self->port <= 0 || s_run (self, argv, error, error_size) != 0) {
        if (self->port <= 0)
            snprintf (error, error_size, "no free port");
        pg_server_destroy (&self);
        return NULL;
    }
    char conf [400];
    snprintf (conf, sizeof conf, "%s/postgresql.conf", self->data);
    file = fopen (conf, "a");
    written = file && fprintf (file, "\nport = %d\nlisten_addresses = '127.0.0.1'\n"
                               "unix_socket_directories = '%s'\nfsync = off\n"
                               "max_connections = 50\n", self->port, self->dir) > 0;
    if (file && fclose (file) != 0)
        written = false;
    if (!written) {
        snprintf (error, error_size, "cannot write %s", conf);
        pg_server_destroy (&self);
        return NULL;
    }
    if (pg_server_start (self, error, error_size) != 0) {
        pg_server_destroy (&self);
        return NULL;
    }
    return self;
}

int
pg_server_start (pg_server_t *self, char *error, size_t error_size)
{
    char pg_ctl [300], log [300];
    snprintf (pg_ctl, sizeof pg_ctl, "%s/pg_ctl", self->bindir);
    snprintf (log, sizeof log, "%s/server.log", self->dir);
    const char *argv [] = { pg_ctl, "-D", self->data, "-l", log, "-w", "-t", "60", "start", NULL };
    if (s_run (self, argv, error, error_size) != 0)
        return -1;
    if (s_read_pid (self) != 0) {
        snprintf (error, error_size, "started, but no PID in %s/postmaster.pid", self->data);
        return -1;
    }
    return 0;
}

int
pg_server_stop_immediate (pg_server_t *self, char *error, size_t error_size)
{
    char pg_ctl [300];
    snprintf (pg_ctl, sizeof pg_ctl, "%s/pg_ctl", self->bindir);
    const char *argv [] = { pg_ctl, "-D", self->data, "-m", "immediate", "-w", "stop", NULL };
    if (s_run (self, argv, error, error_size) != 0)
        return -1;
    long long deadline = s_mono_ms () + STOP_TIMEOUT_MS;
    while (self->pid > 0 && !s_gone (self->pid) && s_mono_ms () < deadline)
        s_pause_ms (10);
    if (self->pid > 0 && !s_gone (self->pid)) {
        snprintf (error, error_size, "postmaster %d still running after pg_ctl stop", (int) self->pid);
        return -1;
    }
    self->pid = 0;
    return 0;
}

void
pg_server_destroy (pg_server_t **self_p)
{
    pg_server_t *self = *self_p;
    if (!self)
        return;
    if (self->pid > 0 && !s_gone (self->pid)) {
        kill (self->pid, SIGQUIT);
        long long deadline = s_mono_ms () + STOP_TIMEOUT_MS;
        while (!s_gone (self->pid) && s_mono_ms () < deadline)
            s_pause_ms (10);
        if (!s_gone (self->pid))
            kill (self->pid, SIGKILL);
    }
    const char *keep = getenv ("MANDRILL_KEEP_TMP");
    if (self->dir [0] && !(keep && *keep))
        nftw (self->dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    free (self);
    *self_p = NULL;
}

int
pg_server_query_text (pg_server_t *self, const char *sql, char *out, size_t out_size,
                      char *error, size_t error_size)
{
    PGconn *conn = PQconnectdb (self->url);
    int rc = -1;
    if (PQstatus (conn) != CONNECTION_OK)
        snprintf (error, error_size, "%s", PQerrorMessage (conn));
    else {
        PGresult *result = PQexec (conn, sql);
        if (PQresultStatus (result) != PGRES_TUPLES_OK)
            snprintf (error, error_size, "%s: %s", sql, PQresultErrorMessage (result));
        else
        if (PQntuples (result) < 1)
            snprintf (error, error_size, "%s: no row", sql);
        else {
            snprintf (out, out_size, "%s", PQgetvalue (result, 0, 0));
            rc = 0;
        }
        PQclear (result);
    }
    PQfinish (conn);
    return rc;
}

long long
pg_server_query_int (pg_server_t *self, const char *sql, char *error, size_t error_size)
{
    char text [64];
    if (pg_server_query_text (self, sql, text, sizeof text, error, error_size) != 0)
        return -1;
    return strtoll (text, NULL, 10);
}
