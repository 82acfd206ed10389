/*  brk_state_file: see brk_state_file.h. */
#include "brk_state_file.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int
brk_state_file_write (const char *dir, const char *name, const char *text, size_t len)
{
    char path [PATH_MAX], tmp [PATH_MAX];
    if (snprintf (path, sizeof path, "%s/%s", dir, name) >= (int) sizeof path
    ||  snprintf (tmp, sizeof tmp, "%s/%s.tmp", dir, name) >= (int) sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open (tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd == -1)
        return -1;
    size_t done = 0;
    while (done < len) {
        ssize_t n = write (fd, text + done, len - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            int saved = n < 0 ? errno : ENOSPC;
            close (fd);
            unlink (tmp);
            errno = saved;
            return -1;
        }
        done += (size_t) n;
    }
    if (fsync (fd) != 0) {
        int saved = errno;
        close (fd);
        unlink (tmp);
        errno = saved;
        return -1;
    }
    close (fd);
    if (rename (tmp, path) != 0) {
        int saved = errno;
        unlink (tmp);
        errno = saved;
        return -1;
    }
    int dfd = open (dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd == -1)
        return -1;
    int rc = fsync (dfd);
    close (dfd);
    return rc == 0 ? 0 : -1;
}

char *
brk_state_file_read (const char *dir, const char *name)
{
    char path [PATH_MAX];
    if (snprintf (path, sizeof path, "%s/%s", dir, name) >= (int) sizeof path) {
        errno = ENAMETOOLONG;
        return NULL;
    }
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd == -1) {
        if (errno == ENOENT)
            errno = 0;
        return NULL;
    }
    struct stat st;
    if (fstat (fd, &st) != 0 || st.st_size > BRK_STATE_FILE_MAX) {
        int saved = st.st_size > BRK_STATE_FILE_MAX ? EFBIG : errno;
        close (fd);
        errno = saved;
        return NULL;
    }
    size_t size = (size_t) st.st_size;
    char *text = malloc (size + 1);
    size_t done = 0;
    while (text && done < size) {
        ssize_t n = read (fd, text + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        done += (size_t) n;
    }
    int saved = errno;
    close (fd);
    if (!text || done < size) {
        free (text);
        errno = text ? (saved ? saved : EIO) : ENOMEM;
        return NULL;
    }
    text [size] = 0;
    return text;
}
