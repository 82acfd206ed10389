/*  test_brk_journal: the broker journal on its own: write and read back,
    the durability modes, torn and corrupt records, salvage, compaction,
    disk faults through the io seam (and a tiny tmpfs when mount is
    permitted), epochs.
*/
#include <criterion/criterion.h>
#include "brk_journal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

//  Bytes of the SYNCED record written after each fsync (format version 2)
#define SYNCED_SIZE 17

static char s_dir [256];

static int
s_rm (const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void) flag;
    (void) ftw;
    (void) st;
    return remove (path);
}

static void
s_setup (void)
{
    snprintf (s_dir, sizeof (s_dir), "/tmp/test_brk_journal.XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    umount2 (s_dir, MNT_DETACH);    //  Only mounted by the tmpfs test
    nftw (s_dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite (brk_journal, .init = s_setup, .fini = s_teardown, .timeout = 60);

//  Replay collector
typedef struct {
    int count;
    char ids [64][64];
    char requests [64][256];
    uint32_t attempts [64];
    uint64_t delivery_ids [64];
    uint32_t steps [64];
    bool dead [64];
    char reasons [64][64];
    char history [64][128];
    uint64_t published_ms [64];
} seen_t;

static int
s_collect (const brk_journal_message_t *m, void *arg)
{
    seen_t *seen = (seen_t *) arg;
    if (seen->count < 64) {
        int i = seen->count;
        snprintf (seen->ids [i], 64, "%s", m->message_id);
        snprintf (seen->requests [i], 256, "%s", m->request);
        seen->attempts [i] = m->attempts;
        seen->delivery_ids [i] = m->delivery_id;
        seen->steps [i] = m->steps;
        seen->dead [i] = m->dead;
        seen->published_ms [i] = m->published_ms;
        if (m->dead) {
            snprintf (seen->reasons [i], 64, "%s", m->dead_reason);
            snprintf (seen->history [i], 128, "%s", m->dead_history);
        }
    }
    seen->count++;
    return 0;
}

static int
s_count (const brk_journal_message_t *m, void *arg)
{
    (void) m;
    (*(int *) arg)++;
    return 0;
}

static brk_journal_config_t
s_config (brk_journal_mode_t mode)
{
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = s_dir;
    config.mode = mode;
    return config;
}

static brk_journal_t *
s_open (brk_journal_config_t *config, seen_t *seen, brk_journal_report_t *report)
{
    if (seen)
        memset (seen, 0, sizeof (*seen));
    brk_journal_t *journal = brk_journal_new (config, seen? s_collect: NULL, seen, report);
    cr_assert_not_null (journal, "open failed: %s", report->message);
    return journal;
}

//  Wait (up to 5 s) until durable >= seq, using the fd as the broker would.
static bool
s_wait_durable (brk_journal_t *journal, uint64_t seq)
{
    for (int i = 0; i < 500; i++) {
        if (brk_journal_durable (journal) >= seq)
            return true;
        struct pollfd item = { brk_journal_fd (journal), POLLIN, 0 };
        poll (&item, 1, 10);
    }
    return false;
}

//  Wait (up to 5 s) until the status equals want.
static bool
s_wait_status (brk_journal_t *journal, int want)
{
    for (int i = 0; i < 500; i++) {
        brk_journal_durable (journal);     //  Clears the fd
        if ((brk_journal_status (journal) != 0) == (want != 0))
            return true;
        brk_journal_commit (journal);
        struct pollfd item = { brk_journal_fd (journal), POLLIN, 0 };
        poll (&item, 1, 10);
    }
    return false;
}

static void
s_id (char *out, int n)
{
    snprintf (out, 37, "00000000-0000-4000-8000-%012d", n);
}

//  Path of the newest segment, or of the n-th oldest when n >= 0.
static void
s_segment (char *path, size_t size, int n)
{
    DIR *dir = opendir (s_dir);
    cr_assert_not_null (dir);
    char names [64][256];
    int count = 0;
    struct dirent *de;
    while ((de = readdir (dir)) && count < 64)
        if (strstr (de->d_name, ".seg"))
            snprintf (names [count++], 256, "%s", de->d_name);
    closedir (dir);
    cr_assert_gt (count, 0);
    qsort (names, (size_t) count, 256, (int (*) (const void *, const void *)) strcmp);
    snprintf (path, size, "%s/%s", s_dir, names [n < 0? count - 1: n]);
}

static off_t
s_size (const char *path)
{
    struct stat st;
    cr_assert_eq (stat (path, &st), 0);
    return st.st_size;
}

static uint64_t
s_dir_bytes (void)
{
    DIR *dir = opendir (s_dir);
    uint64_t total = 0;
    struct dirent *de;
    while ((de = readdir (dir))) {
        char path [512];
        struct stat st;
        snprintf (path, sizeof (path), "%s/%s", s_dir, de->d_name);
        if (de->d_name [0] != '.' && stat (path, &st) == 0)
            total += (uint64_t) st.st_size;
    }
    closedir (dir);
    return total;
}

static void
s_flip (const char *path, off_t offset)
{
    int fd = open (path, O_RDWR);
    cr_assert_geq (fd, 0);
    unsigned char byte;
    cr_assert_eq (pread (fd, &byte, 1, offset), 1);
    byte ^= 0x5a;
    cr_assert_eq (pwrite (fd, &byte, 1, offset), 1);
    close (fd);
}

Test (brk_journal, write_and_read_back)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 0);
    char id [5][37];
    for (int i = 0; i < 5; i++) {
        s_id (id [i], i);
        char request [128];
        snprintf (request, sizeof (request), "{\"instance_name\":\"cattle-%d\"}", i);
        cr_assert_gt (brk_journal_append_publish (journal, id [i], request, 1000 + i), 0);
    }
    cr_assert_gt (brk_journal_append_ack (journal, id [1]), 0);
    cr_assert_gt (brk_journal_append_attempt (journal, id [2], 3, 77), 0);
    cr_assert_gt (brk_journal_append_progress (journal, id [2], 1), 0);
    cr_assert_gt (brk_journal_append_progress (journal, id [2], 2), 0);
    cr_assert_gt (brk_journal_append_attempt (journal, id [3], 5, 78), 0);
    cr_assert_gt (brk_journal_append_dead (journal, id [3], "too many attempts",
                                           "[{\"attempt\":5}]", 777), 0);
    cr_assert_gt (brk_journal_append_dead (journal, id [4], "x", "[]", 1), 0);
    cr_assert_gt (brk_journal_append_replay (journal, id [4]), 0);
    //  Records for unknown ids are harmless
    cr_assert_gt (brk_journal_append_ack (journal, "never-published"), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    cr_assert_null (journal);
    brk_journal_destroy (&journal);     //  Safe twice

    journal = s_open (&config, &seen, &report);
    cr_assert_eq (seen.count, 4);
    cr_expect_eq (report.live, 4);
    cr_expect_eq (report.dead, 1);
    cr_expect_eq (report.torn_bytes, 0);
    //  Publish order is kept
    cr_expect_str_eq (seen.ids [0], id [0]);
    cr_expect_str_eq (seen.ids [1], id [2]);
    cr_expect_str_eq (seen.ids [2], id [3]);
    cr_expect_str_eq (seen.ids [3], id [4]);
    cr_expect_str_eq (seen.requests [0], "{\"instance_name\":\"cattle-0\"}");
    cr_expect_eq (seen.published_ms [0], 1000);
    cr_expect_eq (seen.attempts [1], 3);
    cr_expect_eq (seen.delivery_ids [1], 77);
    cr_expect_eq (seen.steps [1], 3);
    cr_expect (seen.dead [2]);
    cr_expect_str_eq (seen.reasons [2], "too many attempts");
    cr_expect_str_eq (seen.history [2], "[{\"attempt\":5}]");
    cr_expect (!seen.dead [3], "replayed dead letter is pending again");
    cr_expect_eq (seen.attempts [3], 0);
    cr_expect (!seen.dead [0]);
    brk_journal_destroy (&journal);
}

static void
s_mode_test (brk_journal_mode_t mode)
{
    brk_journal_config_t config = s_config (mode);
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    uint64_t last = 0;
    for (int i = 0; i < 1000; i++) {
        char id [37];
        s_id (id, i);
        last = brk_journal_append_publish (journal, id, "{}", 1);
        cr_assert_eq (last, (uint64_t) i + 1);
    }
    if (mode == BRK_JOURNAL_NONE)
        cr_expect_eq (brk_journal_durable (journal), last, "none: durable at once");
    brk_journal_commit (journal);
    cr_assert (s_wait_durable (journal, last));
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    if (mode != BRK_JOURNAL_NONE)
        cr_expect_gt (stats.fsyncs, 1);
    cr_expect_eq (stats.appended, last);
    cr_expect_eq (brk_journal_status (journal), 0);
    brk_journal_destroy (&journal);
    int count = 0;
    journal = brk_journal_new (&config, s_count, &count, &report);
    cr_assert_not_null (journal);
    cr_expect_eq (count, 1000);
    brk_journal_destroy (&journal);
}

Test (brk_journal, mode_none)  { s_mode_test (BRK_JOURNAL_NONE); }
Test (brk_journal, mode_batch) { s_mode_test (BRK_JOURNAL_BATCH); }
Test (brk_journal, mode_sync)  { s_mode_test (BRK_JOURNAL_SYNC); }

Test (brk_journal, parse_mode)
{
    brk_journal_mode_t mode;
    cr_expect_eq (brk_journal_parse_mode ("sync", &mode), 0);
    cr_expect_eq (mode, BRK_JOURNAL_SYNC);
    cr_expect_eq (brk_journal_parse_mode ("none", &mode), 0);
    cr_expect_eq (mode, BRK_JOURNAL_NONE);
    cr_expect_eq (brk_journal_parse_mode ("Batch", &mode), -1);
    cr_expect_eq (brk_journal_parse_mode (NULL, &mode), -1);
    cr_expect_str_eq (brk_journal_mode_name (BRK_JOURNAL_BATCH), "batch");
    //  Known CRC-32C check value
    cr_expect_eq (brk_journal_crc32c (0, "123456789", 9), 0xE3069283u);
}

//  Write n publishes in one run and close; returns the segment path.
static void
s_write_run (int n, char *path, size_t size)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    for (int i = 0; i < n; i++) {
        char id [37];
        s_id (id, i);
        cr_assert_gt (brk_journal_append_publish (journal, id, "{\"instance_name\":\"a\"}", 1), 0);
    }
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    s_segment (path, size, -1);
}

Test (brk_journal, torn_tail_is_truncated)
{
    char path [512];
    s_write_run (10, path, sizeof (path));
    //  The crash state: the last record half written, and no SYNCED
    //  record after it (that one follows a completed fsync)
    off_t size = s_size (path) - SYNCED_SIZE;
    cr_assert_eq (truncate (path, size - 7), 0);

    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 9, "records before the torn one survive");
    cr_expect_gt (report.torn_bytes, 0);
    cr_expect_lt (s_size (path), size - 7, "the torn record is cut off");
    cr_expect_neq (strstr (report.message, "torn"), NULL, "%s", report.message);
    brk_journal_destroy (&journal);

    //  Opens cleanly afterwards
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 9);
    cr_expect_eq (report.torn_bytes, 0);
    brk_journal_destroy (&journal);
}

Test (brk_journal, bad_checksum_at_tail_is_truncated)
{
    char path [512];
    s_write_run (10, path, sizeof (path));
    cr_assert_eq (truncate (path, s_size (path) - SYNCED_SIZE), 0);
    s_flip (path, s_size (path) - 3);

    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 9);
    cr_expect_gt (report.torn_bytes, 0);
    brk_journal_destroy (&journal);
}

Test (brk_journal, bad_checksum_in_middle_stops_then_salvage)
{
    char path [512];
    s_write_run (10, path, sizeof (path));
    //  Header 40, the epoch record (17) and the SYNCED record after its
    //  fsync (17), then the publishes, then a SYNCED record; flip a byte
    //  in the 2nd publish
    off_t record = 40 + 17 + SYNCED_SIZE;
    off_t size = s_size (path);
    off_t each = (size - record - SYNCED_SIZE) / 10;
    s_flip (path, record + each + each / 2);

    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    seen_t seen;
    memset (&seen, 0, sizeof (seen));
    brk_journal_t *journal = brk_journal_new (&config, s_collect, &seen, &report);
    cr_assert_null (journal);
    cr_expect_eq (report.code, EILSEQ);
    cr_expect_neq (strstr (report.message, "salvage"), NULL, "%s", report.message);
    cr_expect_eq (s_size (path), size, "nothing is truncated without salvage");

    config.salvage = true;
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 9, "every other record is recovered");
    cr_expect_eq (report.salvaged_regions, 1);
    cr_expect_eq (report.salvaged_bytes, (uint64_t) each);
    brk_journal_destroy (&journal);

    //  Salvage compacted the damage away: a normal open works
    config.salvage = false;
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 9);
    cr_expect_eq (report.salvaged_regions, 0);
    brk_journal_destroy (&journal);
}

Test (brk_journal, missing_segment_is_corruption)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.compact_slack_bytes = 0;
    brk_journal_report_t report;
    for (int run = 0; run < 3; run++) {
        brk_journal_t *journal = s_open (&config, NULL, &report);
        char id [37];
        s_id (id, run);
        brk_journal_append_publish (journal, id, "{}", 1);
        brk_journal_destroy (&journal);
    }
    char path [512];
    s_segment (path, sizeof (path), 1);
    cr_assert_eq (unlink (path), 0);
    cr_assert_null (brk_journal_new (&config, NULL, NULL, &report));
    cr_expect_eq (report.code, EILSEQ);
    config.salvage = true;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.count, 2);
    brk_journal_destroy (&journal);
}

Test (brk_journal, newer_format_version_is_refused)
{
    char path [512];
    s_write_run (1, path, sizeof (path));
    int fd = open (path, O_RDWR);
    unsigned char v4 [4] = { 4, 0, 0, 0 };
    cr_assert_eq (pwrite (fd, v4, 4, 8), 4);
    close (fd);
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    cr_assert_null (brk_journal_new (&config, NULL, NULL, &report));
    cr_expect_eq (report.code, EILSEQ);
}

Test (brk_journal, compaction_keeps_live_set_and_shrinks)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.compact_slack_bytes = 0;     //  Only when asked
    config.segment_size = 64 * 1024;
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    char request [200];
    memset (request, 'x', sizeof (request) - 1);
    request [sizeof (request) - 1] = 0;
    for (int i = 0; i < 5000; i++) {
        char id [37];
        s_id (id, i);
        cr_assert_gt (brk_journal_append_publish (journal, id, request, (uint64_t) i), 0);
        if (i % 100 == 7)
            brk_journal_append_attempt (journal, id, 2, 99);
        if (i % 100 == 9)
            brk_journal_append_dead (journal, id, "expired", "[]", 5);
        if (i % 100 >= 10)
            brk_journal_append_ack (journal, id);
        if (i % 500 == 499)
            cr_assert_eq (brk_journal_sync (journal), 0);
    }
    cr_assert_eq (brk_journal_sync (journal), 0);
    uint64_t before = s_dir_bytes ();
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    cr_expect_gt (stats.files, 5);
    cr_expect_eq (stats.live_messages, 500);
    cr_assert_eq (brk_journal_compact (journal), 0);
    //  Appends after a compaction land in a new segment
    cr_assert_gt (brk_journal_append_publish (journal, "after", "{}", 9), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_stats (journal, &stats);
    cr_expect_eq (stats.compactions, 1);
    cr_expect_eq (stats.files, 2);
    uint64_t after = s_dir_bytes ();
    cr_expect_lt (after * 5, before, "disk %lu -> %lu", (unsigned long) before, (unsigned long) after);
    //  Compacting twice in a row is fine
    cr_assert_eq (brk_journal_compact (journal), 0);
    brk_journal_destroy (&journal);

    int count = 0;
    journal = brk_journal_new (&config, s_count, &count, &report);
    cr_assert_not_null (journal, "%s", report.message);
    cr_expect_eq (count, 501);
    cr_expect_eq (report.dead, 50);
    brk_journal_destroy (&journal);

    seen_t seen;
    memset (&seen, 0, sizeof (seen));
    journal = brk_journal_new (&config, s_collect, &seen, &report);
    cr_assert_not_null (journal);
    //  The first live ones in order: 0..9 of block 0
    for (int i = 0; i < 10; i++) {
        char id [37];
        s_id (id, i);
        cr_expect_str_eq (seen.ids [i], id);
        cr_expect_str_eq (seen.requests [i], request);
        cr_expect_eq (seen.published_ms [i], (uint64_t) i);
    }
    cr_expect_eq (seen.attempts [7], 2);
    cr_expect_eq (seen.delivery_ids [7], 99, "compaction keeps the delivery id");
    cr_expect (seen.dead [9]);
    cr_expect_str_eq (seen.reasons [9], "expired");
    brk_journal_destroy (&journal);
}

Test (brk_journal, automatic_compaction_bounds_disk)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_NONE);
    config.segment_size = 256 * 1024;
    config.compact_slack_bytes = 512 * 1024;
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    for (int i = 0; i < 100000; i++) {
        char id [37];
        s_id (id, i);
        cr_assert_gt (brk_journal_append_publish (journal, id, "{\"instance_name\":\"cattle-1234\"}", 1), 0);
        cr_assert_gt (brk_journal_append_ack (journal, id), 0);
        if (i % 1000 == 0)
            brk_journal_commit (journal);
    }
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    cr_expect_gt (stats.compactions, 0);
    cr_expect_eq (stats.live_messages, 0);
    brk_journal_destroy (&journal);
    //  ~13 MB written; what stays is under one compaction threshold + a segment
    cr_expect_lt (s_dir_bytes (), 1024 * 1024, "dir is %lu bytes", (unsigned long) s_dir_bytes ());
    int count = 0;
    journal = brk_journal_new (&config, s_count, &count, &report);
    cr_assert_not_null (journal);
    cr_expect_eq (count, 0);
    brk_journal_destroy (&journal);
}

//  With a steady live set (here the acked ids kept: each ack adds one and
//  pushes the oldest out), a compaction waits until the files hold twice
//  the live bytes plus the slack, so it does not rewrite the live set
//  after every live set's worth of new records; and the files never pass
//  that bound by more than a batch.
Test (brk_journal, compaction_waits_for_the_slack_past_twice_the_live_bytes)
{
    const uint64_t slack = 1u << 20;
    const uint64_t batch = 64u << 10;   //  More than 100 PUBLISH and ACK records
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.compact_slack_bytes = slack;
    config.done_window = 20000;         //  1 MB of acked ids once full
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    brk_journal_stats_t before, after;
    brk_journal_stats (journal, &after);
    uint64_t compactions = 0;
    for (int i = 0; i < 60000; i += 100) {
        before = after;
        for (int j = i; j < i + 100; j++) {
            char id [37];
            s_id (id, j);
            cr_assert_gt (brk_journal_append_publish (journal, id, "{\"instance_name\":\"cattle-1234\"}", 1), 0);
            cr_assert_gt (brk_journal_append_ack (journal, id), 0);
        }
        cr_assert_eq (brk_journal_sync (journal), 0);
        brk_journal_stats (journal, &after);
        cr_assert_leq (after.disk_bytes, 2 * after.live_bytes + slack + batch,
                       "after %d acks the files hold %llu bytes, the live set %llu", i + 100,
                       (unsigned long long) after.disk_bytes, (unsigned long long) after.live_bytes);
        if (after.compactions > before.compactions && i >= 20000) {
            compactions++;
            cr_assert_geq (before.disk_bytes + batch, 2 * before.live_bytes + slack,
                           "compacted at %llu bytes with %llu live", (unsigned long long) before.disk_bytes,
                           (unsigned long long) before.live_bytes);
        }
    }
    //  40,000 acks of about 170 bytes each with a live set of 1 MB: a
    //  compaction every 2 MB appended, not every 1 MB
    cr_expect_geq (compactions, 2);
    cr_expect_leq (compactions, 4);
    brk_journal_destroy (&journal);
}

Test (brk_journal, epoch_increments_across_opens)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_SYNC);
    brk_journal_report_t report;
    for (uint64_t expect = 1; expect <= 3; expect++) {
        brk_journal_t *journal = s_open (&config, NULL, &report);
        cr_expect_eq (brk_journal_epoch (journal), expect);
        cr_expect_eq (report.epoch, expect);
        brk_journal_destroy (&journal);
    }
    //  Compaction keeps the epoch
    brk_journal_t *journal = s_open (&config, NULL, &report);
    cr_assert_eq (brk_journal_compact (journal), 0);
    brk_journal_destroy (&journal);
    journal = s_open (&config, NULL, &report);
    cr_expect_eq (brk_journal_epoch (journal), 5);
    brk_journal_destroy (&journal);
}

Test (brk_journal, second_open_of_a_dir_is_refused)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    cr_expect_null (brk_journal_new (&config, NULL, NULL, &report));
    cr_expect_eq (report.code, EBUSY);
    brk_journal_destroy (&journal);
}

//  Fault-injection io: fails pwrite and/or fsync with a chosen errno.
static atomic_int s_fail_write;
static atomic_int s_fail_fsync;
static atomic_int s_writes;

static int
s_f_open (void *arg, const char *path, int flags, mode_t mode)
{
    (void) arg;
    return brk_journal_io_system ()->open (NULL, path, flags, mode);
}

static ssize_t
s_f_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    (void) arg;
    atomic_fetch_add (&s_writes, 1);
    int err = atomic_load (&s_fail_write);
    if (err) {
        //  Write part of it first, as a filling disk does
        if (size > 4)
            brk_journal_io_system ()->pwrite (NULL, fd, data, size / 2, offset);
        errno = err;
        return -1;
    }
    return brk_journal_io_system ()->pwrite (NULL, fd, data, size, offset);
}

static int
s_f_fsync (void *arg, int fd)
{
    (void) arg;
    int err = atomic_load (&s_fail_fsync);
    if (err) {
        errno = err;
        return -1;
    }
    return brk_journal_io_system ()->fsync (NULL, fd);
}

static int
s_f_ftruncate (void *arg, int fd, off_t size)
{
    (void) arg;
    return brk_journal_io_system ()->ftruncate (NULL, fd, size);
}

static int
s_f_rename (void *arg, const char *from, const char *to)
{
    (void) arg;
    return brk_journal_io_system ()->rename (NULL, from, to);
}

static int
s_f_unlink (void *arg, const char *path)
{
    (void) arg;
    return brk_journal_io_system ()->unlink (NULL, path);
}

static const brk_journal_io_t s_faulty = {
    .open = s_f_open, .pwrite = s_f_pwrite, .fsync = s_f_fsync, .ftruncate = s_f_ftruncate,
    .rename = s_f_rename, .unlink = s_f_unlink
};

static void
s_fault_test (atomic_int *fault, int err, brk_journal_mode_t mode)
{
    atomic_store (&s_fail_write, 0);
    atomic_store (&s_fail_fsync, 0);
    brk_journal_config_t config = s_config (mode);
    config.io = &s_faulty;
    config.retry_interval_ms = 20;
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    uint64_t seq = brk_journal_append_publish (journal, "before", "{}", 1);
    brk_journal_commit (journal);
    cr_assert (s_wait_durable (journal, seq));

    atomic_store (fault, err);
    uint64_t caught = brk_journal_append_publish (journal, "caught", "{}", 1);
    cr_assert_gt (caught, 0, "accepted before the failure is known");
    brk_journal_commit (journal);
    cr_assert (s_wait_status (journal, err), "the failure is reported");
    cr_expect_eq (brk_journal_status (journal), err);
    if (mode != BRK_JOURNAL_NONE)
        cr_expect_lt (brk_journal_durable (journal), caught, "not durable, so no PUBACK");
    cr_expect_eq (brk_journal_append_publish (journal, "refused", "{}", 1), 0,
                  "PUBLISH is refused while failing");
    uint64_t ack = brk_journal_append_ack (journal, "before");
    cr_expect_gt (ack, 0, "acks are still taken");
    cr_expect_eq (brk_journal_sync (journal), -1);
    cr_expect_eq (errno, err);
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    cr_expect_eq (stats.refused, 1);

    atomic_store (fault, 0);            //  Space returns
    brk_journal_commit (journal);
    cr_assert (s_wait_status (journal, 0), "recovers when the fault clears");
    cr_assert (s_wait_durable (journal, ack));
    uint64_t after = brk_journal_append_publish (journal, "after", "{}", 1);
    cr_expect_gt (after, 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    //  The snapshot is made from the live index: the batch that was
    //  retried after the fault must be in it, or compaction drops it
    cr_assert_eq (brk_journal_compact (journal), 0);
    brk_journal_destroy (&journal);

    seen_t seen;
    config.io = NULL;
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (report.torn_bytes, 0, "failed writes left nothing half-written");
    cr_assert_eq (seen.count, 2);
    cr_expect_str_eq (seen.ids [0], "caught");
    cr_expect_str_eq (seen.ids [1], "after");
    brk_journal_destroy (&journal);
}

Test (brk_journal, enospc_on_write_then_recovery)
{
    s_fault_test (&s_fail_write, ENOSPC, BRK_JOURNAL_BATCH);
}

Test (brk_journal, eio_on_fsync_then_recovery)
{
    s_fault_test (&s_fail_fsync, EIO, BRK_JOURNAL_SYNC);
}

Test (brk_journal, enospc_in_none_mode)
{
    s_fault_test (&s_fail_write, ENOSPC, BRK_JOURNAL_NONE);
}

Test (brk_journal, open_fails_cleanly_when_it_cannot_write)
{
    atomic_store (&s_fail_write, ENOSPC);
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.io = &s_faulty;
    brk_journal_report_t report;
    cr_expect_null (brk_journal_new (&config, NULL, NULL, &report));
    cr_expect_eq (report.code, ENOSPC);
    atomic_store (&s_fail_write, 0);
}

Test (brk_journal, compaction_failure_loses_nothing)
{
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.io = &s_faulty;
    config.compact_slack_bytes = 0;
    brk_journal_report_t report;
    atomic_store (&s_fail_write, 0);
    atomic_store (&s_fail_fsync, 0);
    brk_journal_t *journal = s_open (&config, NULL, &report);
    for (int i = 0; i < 100; i++) {
        char id [37];
        s_id (id, i);
        brk_journal_append_publish (journal, id, "{}", 1);
        if (i % 2)
            brk_journal_append_ack (journal, id);
    }
    cr_assert_eq (brk_journal_sync (journal), 0);
    atomic_store (&s_fail_fsync, EIO);
    cr_expect_eq (brk_journal_compact (journal), -1);
    atomic_store (&s_fail_fsync, 0);
    brk_journal_destroy (&journal);
    int count = 0;
    config.io = NULL;
    journal = brk_journal_new (&config, s_count, &count, &report);
    cr_assert_not_null (journal, "%s", report.message);
    cr_expect_eq (count, 50);
    brk_journal_destroy (&journal);
}

//  A real full disk: a 256 KiB tmpfs. Skipped when mount is not permitted.
Test (brk_journal, real_full_tmpfs)
{
    if (mount ("tmpfs", s_dir, "tmpfs", 0, "size=256k") != 0) {
        cr_skip_test ("cannot mount a tmpfs here: %s", strerror (errno));
    }
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.compact_slack_bytes = 0;
    config.retry_interval_ms = 20;
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    char request [1024];
    memset (request, 'r', sizeof (request) - 1);
    request [sizeof (request) - 1] = 0;
    int accepted = 0;
    uint64_t last_ok = 0;
    for (int i = 0; i < 1000 && brk_journal_status (journal) == 0; i++) {
        char id [37];
        s_id (id, i);
        uint64_t seq = brk_journal_append_publish (journal, id, request, 1);
        if (seq == 0)
            break;
        accepted++;
        brk_journal_commit (journal);
        if (brk_journal_sync (journal) == 0)
            last_ok = seq;
    }
    cr_assert_eq (brk_journal_status (journal), ENOSPC, "the disk filled up");
    cr_expect_gt (last_ok, 0);
    cr_expect_eq (brk_journal_append_publish (journal, "refused", "{}", 1), 0);
    //  Space returns: grow the filesystem
    cr_assert_eq (mount ("tmpfs", s_dir, "tmpfs", MS_REMOUNT, "size=4m"), 0);
    brk_journal_commit (journal);
    cr_assert (s_wait_status (journal, 0), "writes resume when space returns");
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    int count = 0;
    journal = brk_journal_new (&config, s_count, &count, &report);
    cr_assert_not_null (journal, "%s", report.message);
    cr_expect_eq (count, accepted, "every accepted publish is on disk");
    cr_expect_eq (report.torn_bytes, 0);
    brk_journal_destroy (&journal);
}

//  The index work comes after a batch's durability is published (so
//  replies do not wait for it), but a sync returns only with stats that
//  count the batch: the index work of this one takes 300 ms.
static atomic_int s_slow_index;

static void *
s_slow_alloc (void *arg, size_t size)
{
    (void) arg;
    if (atomic_load (&s_slow_index))
        usleep (300 * 1000);
    return malloc (size);
}

Test (brk_journal, sync_returns_with_stats_that_count_the_batch)
{
    brk_journal_io_t io = *brk_journal_io_system ();
    io.alloc = s_slow_alloc;
    brk_journal_config_t config = s_config (BRK_JOURNAL_BATCH);
    config.io = &io;
    brk_journal_report_t report;
    brk_journal_t *journal = s_open (&config, NULL, &report);
    atomic_store (&s_slow_index, 1);
    uint64_t seq = brk_journal_append_publish (journal, "m1", "{}", 1);
    brk_journal_commit (journal);
    cr_assert (s_wait_durable (journal, seq));
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    atomic_store (&s_slow_index, 0);
    cr_expect_eq (stats.live_messages, 1, "the stats lag the sync");
    brk_journal_destroy (&journal);
}
