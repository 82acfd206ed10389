/*  fsync_floor: the latency a disk allows a durable broker, before any
    broker code runs.

    A writer appends --bytes to a file and fsyncs it, back to back, for
    --seconds (the pace of the journal's writer in batch mode under load).
    Each fsync's start and end are recorded. Then requests are placed
    every 1/--rate s over the run, and for each one the script a broker
    must follow is replayed against the recorded fsyncs: its record can
    only be covered by an fsync that starts after it arrives, so it is
    durable when that fsync ends. `--waits 2` chains two such waits, as
    a restart request does in Mandrill: its PUBLISH must be durable
    before it is leased (DELIVER), its ACK before ACKED.

    The figures are a floor: no CPU, no sockets, no scheduling. A broker
    that answers only after these records are on disk cannot have a
    lower latency on this disk, whatever its design. Printed: the fsync
    distribution, the share of wall time spent in fsyncs slower than
    2.5 ms, and the floor's p50/p99/p99.9/max for 1 and for --waits.

    Usage: fsync_floor [--dir DIR] [--seconds 10] [--bytes 2500]
                       [--rate 10000] [--waits 2] [--prezero MIB]
    DIR (default /tmp) must be on the disk to judge: a tmpfs measures
    nothing. The scratch file is removed at the end. --prezero writes MIB
    of zeros (and fsyncs them) first, then overwrites them with fdatasync:
    what a journal that preallocated its segments would pay (no metadata
    to commit per call), against plain appends and fsync.
    Exit: 0 done, 1 usage, 3 I/O failure.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef struct {
    int64_t start;                  //  ns, CLOCK_MONOTONIC
    int64_t end;
} span_t;

static int64_t
s_now_ns (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

static double
s_pct_ms (const int64_t *sorted, size_t n, double p)
{
    size_t i = (size_t) (p * (double) (n - 1));
    return (double) sorted [i] / 1e6;
}

static void
s_print (const char *what, int64_t *values, size_t n)
{
    qsort (values, n, sizeof values [0], s_cmp_i64);
    printf ("%-22s n=%zu p50=%.3f p99=%.3f p99.9=%.3f max=%.3f ms\n", what, n,
            s_pct_ms (values, n, 0.50), s_pct_ms (values, n, 0.99),
            s_pct_ms (values, n, 0.999), (double) values [n - 1] / 1e6);
}

//  Index of the first span that starts at or after t, or n.
static size_t
s_first_from (const span_t *spans, size_t n, size_t from, int64_t t)
{
    while (from < n && spans [from].start < t)
        from++;
    return from;
}

static int
s_usage (void)
{
    fprintf (stderr, "usage: fsync_floor [--dir DIR] [--seconds S] [--bytes B]"
                     " [--rate R] [--waits W] [--prezero MIB]\n");
    return 1;
}

int
main (int argc, char **argv)
{
    const char *dir = "/tmp";
    double seconds = 10, rate = 10000;
    long bytes = 2500, waits = 2, prezero = 0;
    for (int i = 1; i < argc; i++) {
        if (i + 1 >= argc)
            return s_usage ();
        const char *key = argv [i], *value = argv [++i];
        char *end = NULL;
        errno = 0;
        if (strcmp (key, "--dir") == 0)
            dir = value;
        else if (strcmp (key, "--seconds") == 0)
            seconds = strtod (value, &end);
        else if (strcmp (key, "--rate") == 0)
            rate = strtod (value, &end);
        else if (strcmp (key, "--bytes") == 0)
            bytes = strtol (value, &end, 10);
        else if (strcmp (key, "--prezero") == 0)
            prezero = strtol (value, &end, 10);
        else if (strcmp (key, "--waits") == 0)
            waits = strtol (value, &end, 10);
        else
            return s_usage ();
        if (end && (*end || errno))
            return s_usage ();
    }
    if (seconds <= 0 || seconds > 3600 || rate <= 0 || rate > 1e6
    ||  bytes < 1 || bytes > (1 << 20) || waits < 1 || waits > 8
    ||  prezero < 0 || prezero > 65536)
        return s_usage ();

    char path [4096];
    snprintf (path, sizeof path, "%s/fsync_floor.%ld", dir, (long) getpid ());
    int fd = open (path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) {
        fprintf (stderr, "fsync_floor: %s: %s\n", path, strerror (errno));
        return 3;
    }
    char *block = malloc ((size_t) bytes);
    size_t cap = 1 << 16, n = 0;
    span_t *spans = malloc (cap * sizeof *spans);
    if (!block || !spans) {
        fprintf (stderr, "fsync_floor: out of memory\n");
        return 3;
    }
    memset (block, 'j', (size_t) bytes);
    int rc = 0;
    if (prezero > 0) {
        char zero [65536] = { 0 };
        for (long mb = 0; mb < prezero * 16; mb++)
            if (write (fd, zero, sizeof zero) != (ssize_t) sizeof zero) { rc = 3; break; }
        if (rc || fsync (fd) != 0 || lseek (fd, 0, SEEK_SET) != 0) {
            fprintf (stderr, "fsync_floor: prezero: %s\n", strerror (errno));
            return 3;
        }
    }
    int64_t t0 = s_now_ns (), stop = t0 + (int64_t) (seconds * 1e9);
    while (s_now_ns () < stop) {
        if (n == cap) {
            span_t *grown = realloc (spans, 2 * cap * sizeof *spans);
            if (!grown) { fprintf (stderr, "fsync_floor: out of memory\n"); rc = 3; break; }
            spans = grown;
            cap *= 2;
        }
        int64_t start = s_now_ns ();
        if (write (fd, block, (size_t) bytes) != (ssize_t) bytes
        ||  (prezero ? fdatasync (fd) : fsync (fd)) != 0) {
            fprintf (stderr, "fsync_floor: %s: %s\n", path, strerror (errno));
            rc = 3;
            break;
        }
        spans [n].start = start;
        spans [n].end = s_now_ns ();
        n++;
    }
    close (fd);
    unlink (path);
    if (rc != 0 || n < 2) {
        free (spans);
        free (block);
        return rc ? rc : 3;
    }
    int64_t slow_ns = 0, total_ns = spans [n - 1].end - spans [0].start;
    int64_t *values = malloc (n * sizeof *values);
    size_t requests_cap = (size_t) (seconds * rate) + 1;
    int64_t *floor1 = malloc (requests_cap * sizeof *floor1);
    int64_t *floorw = malloc (requests_cap * sizeof *floorw);
    if (!values || !floor1 || !floorw) {
        fprintf (stderr, "fsync_floor: out of memory\n");
        return 3;
    }
    for (size_t i = 0; i < n; i++) {
        values [i] = spans [i].end - spans [i].start;
        if (values [i] > 2500000)
            slow_ns += values [i];
    }
    printf ("dir=%s bytes=%ld fsyncs=%zu (%.0f/s)\n", dir, bytes, n,
            (double) n / ((double) total_ns / 1e9));
    s_print ("fsync", values, n);
    printf ("wall time in fsyncs > 2.5 ms: %.2f %%\n", 100.0 * (double) slow_ns / (double) total_ns);

    //  Requests over the run but the last 100 ms, so each finds its fsyncs.
    int64_t step = (int64_t) (1e9 / rate);
    size_t count = 0, first = 0;
    for (int64_t t = spans [0].start; count < requests_cap; t += step) {
        first = s_first_from (spans, n, first, t);
        if (first == n || spans [n - 1].start - t < 100000000)
            break;
        floor1 [count] = spans [first].end - t;
        int64_t done = spans [first].end;
        size_t at = first;
        for (long w = 1; w < waits && at < n; w++) {
            at = s_first_from (spans, n, at, done);
            if (at < n)
                done = spans [at].end;
        }
        if (at == n)
            break;
        floorw [count] = done - t;
        count++;
    }
    if (count > 0) {
        s_print ("floor, 1 wait", floor1, count);
        char label [32];
        snprintf (label, sizeof label, "floor, %ld waits", waits);
        s_print (label, floorw, count);
    }
    free (floorw);
    free (floor1);
    free (values);
    free (spans);
    free (block);
    return 0;
}
