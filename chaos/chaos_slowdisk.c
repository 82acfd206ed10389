/*  chaos_slowdisk: a slow disk for one process, by LD_PRELOAD.

    mandrill-chaos preloads this library into the broker for its
    `slow_disk` fault. Every fsync and fdatasync of the process first
    sleeps for the number of milliseconds written in the file named by
    MANDRILL_CHAOS_SLOWDISK_CTL (a decimal number, 0 to 60000; anything
    else, a missing variable or a missing file mean no delay), then runs
    the real call. The delay comes before the call, as a device that is
    slow to flush makes the call return late; the data reaches the disk
    all the same.

    Cost: one open/read/close of the control file per call, so a test
    tool, never a production one. The sleep ends early on a signal, and
    the call then runs: it is a delay, not a failure.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

//  The delay now, in ms; 0 when no valid one is set.
static long
s_delay_ms (void)
{
    const char *path = getenv ("MANDRILL_CHAOS_SLOWDISK_CTL");
    if (!path)
        return 0;
    int fd = open (path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    char text [24];
    ssize_t n = read (fd, text, sizeof text - 1);
    close (fd);
    if (n <= 0)
        return 0;
    text [n] = 0;
    char *end = NULL;
    long ms = strtol (text, &end, 10);
    if (end == text || (*end && *end != '\n') || ms < 0 || ms > 60000)
        return 0;
    return ms;
}

static void
s_delay (void)
{
    int saved = errno;
    long ms = s_delay_ms ();
    if (ms > 0) {
        struct timespec ts = { ms / 1000, (ms % 1000) * 1000000L };
        nanosleep (&ts, NULL);
    }
    errno = saved;
}

int
fsync (int fd)
{
    s_delay ();
    return (int) syscall (SYS_fsync, fd);
}

int
fdatasync (int fd)
{
    s_delay ();
    return (int) syscall (SYS_fdatasync, fd);
}
