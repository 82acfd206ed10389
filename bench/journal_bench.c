/*  journal_bench: micro-benchmark of the broker journal (broker/brk_journal).

    Measures, in a scratch directory:
    1. append + commit rate of PUBLISH records per durability mode, and the
       time until the last one is durable;
    2. publish+ack pairs in batch mode, and the disk left afterwards
       (automatic compaction must keep it at a few MB);
    3. recovery time of N pending messages (default 1,000,000);
    4. latency from append to durable at a paced rate (--rate, default
       10,000/s, for 2 s) per durability mode, one commit per append as
       the broker's loop does at light load: p50, p99, max.

    Usage: journal_bench [--dir DIR] [--count N] [--size BYTES] [--rate N]
                         [--only append|latency] [--drop-caches]
    --drop-caches also times recovery with the page cache dropped (root
    only; it slows everything else on the machine for a while).
    The directory is created and emptied; default /tmp/journal_bench.<pid>.
*/
#include "brk_journal.h"
#include "mdl_log.h"

#include <dirent.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <ftw.h>

//  Append, waiting for the writer when the buffer is full (the broker
//  would answer ERROR and the publisher retry).
#define APPEND(journal, call, refusals) ({ \
    uint64_t seq_; \
    while ((seq_ = (call)) == 0) { \
        (refusals)++; \
        brk_journal_sync (journal); \
    } \
    seq_; })
#include <poll.h>
#include <sys/time.h>

static int
s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) flag;
    (void) ftw;
    (void) st;
    return remove (path);
}

static void
s_clean (const char *dir)
{
    nftw (dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

static double
s_now (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

static uint64_t
s_dir_bytes (const char *path)
{
    DIR *dir = opendir (path);
    uint64_t total = 0;
    struct dirent *de;
    while (dir && (de = readdir (dir))) {
        char file [4096];
        struct stat st;
        snprintf (file, sizeof (file), "%s/%s", path, de->d_name);
        if (de->d_name [0] != '.' && stat (file, &st) == 0)
            total += (uint64_t) st.st_size;
    }
    if (dir)
        closedir (dir);
    return total;
}

static int
s_count (const brk_journal_message_t *message, void *arg)
{
    (void) message;
    (*(uint64_t *) arg)++;
    return 0;
}

static void
s_make_request (char *request, size_t size)
{
    //  A typical restart request as the broker stores it
    snprintf (request, size, "{\"message_id\":\"00000000-0000-4000-8000-000000000000\","
              "\"instance_name\":\"cattle-ab12\",\"hostname\":\"cattle-ab12.example.net\","
              "\"attributes\":{\"pad\":\"");
    size_t len = strlen (request);
    while (len + 3 < size)
        request [len++] = 'x';
    request [len++] = '"';
    request [len++] = '}';
    request [len] = 0;
    if (len < size - 1)
        request [len++] = '}', request [len] = 0;
}

static brk_journal_t *
s_open (const char *dir, brk_journal_mode_t mode, uint64_t *live, double *elapsed)
{
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = dir;
    config.mode = mode;
    brk_journal_report_t report;
    uint64_t count = 0;
    double start = s_now ();
    brk_journal_t *journal = brk_journal_new (&config, s_count, &count, &report);
    if (elapsed)
        *elapsed = s_now () - start;
    if (!journal) {
        fprintf (stderr, "journal_bench: %s\n", report.message);
        exit (1);
    }
    if (live)
        *live = count;
    return journal;
}

static int
s_cmp_double (const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;
    return x < y? -1: x > y;
}

//  Paced appends, one commit each; waits on the fd like the broker loop and
//  records, per append, the time until it was reported durable.
static void
s_latency (const char *dir, brk_journal_mode_t mode, const char *request, long rate)
{
    s_clean (dir);
    brk_journal_t *journal = s_open (dir, mode, NULL, NULL);
    long n = rate * 2;
    double *sent = calloc ((size_t) n, sizeof (double));
    double *lat = calloc ((size_t) n, sizeof (double));
    uint64_t *seqs = calloc ((size_t) n, sizeof (uint64_t));
    if (!sent || !lat || !seqs) {
        fprintf (stderr, "journal_bench: out of memory\n");
        exit (1);
    }
    double start = s_now ();
    long next = 0, done = 0;
    while (done < n) {
        double now = s_now ();
        while (next < n && start + (double) next / (double) rate <= now) {
            char id [48];
            snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012ld", next);
            sent [next] = s_now ();
            seqs [next] = brk_journal_append_publish (journal, id, request, 1);
            brk_journal_commit (journal);
            next++;
        }
        uint64_t durable = brk_journal_durable (journal);
        double at = s_now ();
        while (done < next && seqs [done] && seqs [done] <= durable) {
            lat [done] = at - sent [done];
            done++;
        }
        if (done < next && seqs [done] == 0) {
            lat [done++] = 0;       //  Refused: not counted as fast, reported below
            continue;
        }
        double wait_ms = next < n? (start + (double) next / (double) rate - s_now ()) * 1e3: 100;
        struct pollfd item = { brk_journal_fd (journal), POLLIN, 0 };
        poll (&item, 1, wait_ms < 0? 0: (int) wait_ms + (wait_ms > 0));
    }
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    double elapsed = s_now () - start;
    brk_journal_destroy (&journal);
    qsort (lat, (size_t) n, sizeof (double), s_cmp_double);
    printf ("latency %-5s: %ld appends at %ld/s, append to durable p50 %.2f ms, p99 %.2f ms,"
            " max %.2f ms; %.0f fsyncs/s\n", brk_journal_mode_name (mode), n, rate,
            lat [n / 2] * 1e3, lat [n * 99 / 100] * 1e3, lat [n - 1] * 1e3,
            stats.fsyncs / elapsed);
    free (sent);
    free (lat);
    free (seqs);
}

int
main (int argc, char *argv [])
{
    char dir [1024];
    snprintf (dir, sizeof (dir), "/tmp/journal_bench.%d", (int) getpid ());
    long count = 1000000;
    long size = 200;
    long rate = 10000;
    bool only_latency = false;
    bool only_append = false;
    bool drop_caches = false;
    for (int i = 1; i < argc; i++)
        if (strcmp (argv [i], "--drop-caches") == 0) {
            drop_caches = true;
            for (int j = i; j + 1 < argc; j++)
                argv [j] = argv [j + 1];
            argc--;
            break;
        }
    for (int i = 1; i < argc; i += 2) {
        if (i + 1 == argc) {
            fprintf (stderr, "journal_bench: %s needs a value\n", argv [i]);
            return 2;
        }
        if (strcmp (argv [i], "--dir") == 0)
            snprintf (dir, sizeof (dir), "%s", argv [i + 1]);
        else
        if (strcmp (argv [i], "--count") == 0)
            count = atol (argv [i + 1]);
        else
        if (strcmp (argv [i], "--size") == 0)
            size = atol (argv [i + 1]);
        else
        if (strcmp (argv [i], "--rate") == 0)
            rate = atol (argv [i + 1]);
        else
        if (strcmp (argv [i], "--only") == 0 && strcmp (argv [i + 1], "latency") == 0)
            only_latency = true;
        else
        if (strcmp (argv [i], "--only") == 0 && strcmp (argv [i + 1], "append") == 0)
            only_append = true;
        else {
            fprintf (stderr, "usage: journal_bench [--dir DIR] [--count N] [--size BYTES]"
                     " [--rate N] [--only append|latency] [--drop-caches]\n");
            return 2;
        }
    }
    if (count < 1 || size < 64 || size > 100000 || rate < 1 || rate > 1000000) {
        fprintf (stderr, "journal_bench: bad --count, --size or --rate\n");
        return 2;
    }
    mdl_log_set_level (MDL_LOG_WARN);
    long refusals = 0;
    char *request = malloc ((size_t) size + 1);
    s_make_request (request, (size_t) size + 1);
    printf ("journal_bench: %ld messages, request %zu bytes, dir %s\n",
            count, strlen (request), dir);

    brk_journal_mode_t modes [] = { BRK_JOURNAL_NONE, BRK_JOURNAL_BATCH, BRK_JOURNAL_SYNC };
    if (only_latency) {
        for (int m = 1; m < 3; m++)
            s_latency (dir, modes [m], request, rate);
        s_clean (dir);
        free (request);
        return 0;
    }

    //  1. Append rate per mode; commit every 100 appends as the loop would
    for (int m = 0; m < 3; m++) {
        s_clean (dir);
        brk_journal_t *journal = s_open (dir, modes [m], NULL, NULL);
        long n = modes [m] == BRK_JOURNAL_SYNC? count / 4: count;
        double start = s_now ();
        uint64_t last = 0;
        for (long i = 0; i < n; i++) {
            char id [48];
            snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012ld", i);
            last = APPEND (journal, brk_journal_append_publish (journal, id, request, 1), refusals);
            if (i % 100 == 99)
                brk_journal_commit (journal);
        }
        brk_journal_commit (journal);
        double appended = s_now () - start;
        while (brk_journal_durable (journal) < last) {
            struct pollfd item = { brk_journal_fd (journal), POLLIN, 0 };
            poll (&item, 1, 100);
            brk_journal_commit (journal);
        }
        double durable = s_now () - start;
        brk_journal_stats_t stats;
        brk_journal_stats (journal, &stats);
        printf ("append %-5s: %ld publishes, %.0f appends/s, all durable after %.3f s"
                " (%.0f msgs/s durable), %" PRIu64 " fsyncs (%.0f/s)\n",
                brk_journal_mode_name (modes [m]), n, n / appended, durable, n / durable,
                stats.fsyncs, stats.fsyncs / durable);
        brk_journal_destroy (&journal);
    }
    if (only_append) {
        s_clean (dir);
        free (request);
        return 0;
    }

    //  2. Publish + ack, batch mode: rate and disk left
    s_clean (dir);
    {
        brk_journal_t *journal = s_open (dir, BRK_JOURNAL_BATCH, NULL, NULL);
        double start = s_now ();
        uint64_t last = 0;
        for (long i = 0; i < count; i++) {
            char id [48];
            snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012ld", i);
            APPEND (journal, brk_journal_append_publish (journal, id, request, 1), refusals);
            last = APPEND (journal, brk_journal_append_ack (journal, id), refusals);
            if (i % 100 == 99)
                brk_journal_commit (journal);
        }
        brk_journal_sync (journal);
        double elapsed = s_now () - start;
        brk_journal_stats_t stats;
        brk_journal_stats (journal, &stats);
        brk_journal_destroy (&journal);
        printf ("publish+ack batch: %ld pairs in %.3f s (%.0f pairs/s), %" PRIu64
                " compactions; data dir after: %.1f KB (%" PRIu64 " records)\n",
                count, elapsed, count / elapsed, stats.compactions,
                s_dir_bytes (dir) / 1e3, last);
    }

    //  3. Recovery of count pending messages
    s_clean (dir);
    {
        brk_journal_t *journal = s_open (dir, BRK_JOURNAL_NONE, NULL, NULL);
        for (long i = 0; i < count; i++) {
            char id [48];
            snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012ld", i);
            APPEND (journal, brk_journal_append_publish (journal, id, request, 1), refusals);
            if (i % 3 == 0)
                APPEND (journal, brk_journal_append_attempt (journal, id, 1, 1), refusals);
        }
        brk_journal_sync (journal);
        brk_journal_destroy (&journal);
        uint64_t bytes = s_dir_bytes (dir);
        uint64_t live = 0;
        double elapsed;
        journal = s_open (dir, BRK_JOURNAL_BATCH, &live, &elapsed);
        printf ("recovery: %" PRIu64 " pending from %.1f MB in %.3f s (page cache warm)\n",
                live, bytes / 1e6, elapsed);
        double start = s_now ();
        brk_journal_compact (journal);
        printf ("compaction of %" PRIu64 " live: %.3f s, dir %.1f MB\n",
                live, s_now () - start, s_dir_bytes (dir) / 1e6);
        brk_journal_destroy (&journal);
        //  Cold cache: drop the page cache if we may (root)
        int fd = drop_caches? open ("/proc/sys/vm/drop_caches", O_WRONLY): -1;
        if (fd >= 0) {
            sync ();
            if (write (fd, "3", 1) == 1) {
                journal = s_open (dir, BRK_JOURNAL_BATCH, &live, &elapsed);
                printf ("recovery: %" PRIu64 " pending in %.3f s (page cache dropped)\n",
                        live, elapsed);
                brk_journal_destroy (&journal);
            }
            close (fd);
        }
    }
    //  4. Latency at a paced rate
    for (int m = 1; m < 3; m++)
        s_latency (dir, modes [m], request, rate);
    printf ("appends refused (buffer full) and retried: %ld\n", refusals);
    s_clean (dir);
    free (request);
    return 0;
}
