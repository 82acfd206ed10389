/*  e2e_support: process and socket helpers shared by the end-to-end tests.
    See e2e_support.h for what each function promises.
*/
#include "e2e_support.h"

#include <criterion/criterion.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

const char *
e2e_program (const char *var)
{
    const char *path = getenv (var);
    cr_assert_not_null (path, "%s is not set (run through ctest)", var);
    return path;
}

int
e2e_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct sockaddr_in addr = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    if (bind (fd, (struct sockaddr *) &addr, sizeof addr) != 0) {
        close (fd);
        cr_assert_fail ("cannot bind a socket on 127.0.0.1");
    }
    socklen_t len = sizeof addr;
    int rc = getsockname (fd, (struct sockaddr *) &addr, &len);
    close (fd);
    cr_assert_eq (rc, 0);
    return ntohs (addr.sin_port);
}

void
e2e_dir_new (char *dir, size_t size, const char *prefix)
{
    int length = snprintf (dir, size, "/tmp/%sXXXXXX", prefix);
    cr_assert (length > 0 && (size_t) length < size, "temp dir name too long: %s", prefix);
    cr_assert_not_null (mkdtemp (dir));
}

static int
s_remove_entry (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) flag;
    (void) ftw;
    (void) st;
    return remove (path);
}

int
e2e_dir_remove (const char *dir)
{
    if (!dir [0] || getenv ("MANDRILL_KEEP_TMP"))
        return 0;
    //  Depth first, so a directory is empty by the time it is removed;
    //  FTW_PHYS so a symbolic link is removed, not followed
    if (nftw (dir, s_remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0) {
        fprintf (stderr, "could not remove %s\n", dir);
        return -1;
    }
    return 0;
}

pid_t
e2e_spawn (const char *dir, const char *log_name, char *const argv [])
{
    //  The path is made before the fork: the child only makes system calls
    char log [512];
    int length = snprintf (log, sizeof log, "%s/%s", dir, log_name);
    cr_assert (length > 0 && (size_t) length < sizeof log, "log path too long: %s", log_name);
    pid_t pid = fork ();
    cr_assert_geq (pid, 0);
    if (pid == 0) {
        int fd = open (log, O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            dup2 (fd, 1);
            dup2 (fd, 2);
        }
        if (chdir (dir) != 0)
            _exit (126);
        execv (argv [0], argv);
        _exit (127);
    }
    return pid;
}

bool
e2e_reaped (pid_t pid, int *status)
{
    return waitpid (pid, status, WNOHANG) == pid;
}

int
e2e_wait_exit (pid_t pid, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    int status;
    do {
        if (e2e_reaped (pid, &status))
            return status;
        zclock_sleep (5);
    } while (zclock_mono () < deadline);
    return -1;
}

void
e2e_kill (pid_t pid)
{
    kill (pid, SIGKILL);
    waitpid (pid, NULL, 0);
}

bool
e2e_log_has (const char *dir, const char *log_name, const char *text)
{
    char path [512];
    snprintf (path, sizeof path, "%s/%s", dir, log_name);
    FILE *file = fopen (path, "r");
    if (!file)
        return false;
    char line [4096];
    bool found = false;
    while (!found && fgets (line, sizeof line, file))
        found = strstr (line, text) != NULL;
    fclose (file);
    return found;
}

zsock_t *
e2e_dealer (const char *endpoint, int rcvtimeo, int sndtimeo)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    cr_assert_not_null (sock);
    zsock_set_linger (sock, 0);
    zsock_set_rcvtimeo (sock, rcvtimeo);
    zsock_set_sndtimeo (sock, sndtimeo);
    int rc = zsock_connect (sock, "%s", endpoint);
    if (rc != 0)
        zsock_destroy (&sock);
    cr_assert_eq (rc, 0, "cannot connect to %s", endpoint);
    return sock;
}

int
e2e_request (zsock_t *sock, mmp_command_t command, const char *body, mmp_msg_t *reply)
{
    mmp_msg_init (reply);
    if (mmp_send (sock, NULL, command, body, strlen (body)) != 0)
        return -3;
    mmp_error_t err;
    int rc = mmp_recv (sock, true, NULL, MMP_FROM_BROKER, reply, &err);
    if (rc != 0)
        mmp_msg_reset (reply);
    return rc;
}
