/*  test_brk_journal_v3: what format version 3 added to the journal, and
    that the older versions still read unchanged: the publisher's name in
    PUBLISH, acked ids kept for duplicate detection (done_window) through
    restarts and snapshots, an EPOCH appended during a run, and version 1
    and 2 files written by hand in the old layouts.
*/
#include <criterion/criterion.h>
#include "brk_journal.h"

#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "mdl_log.h"

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
    mdl_log_set_level (MDL_LOG_ERROR);
    snprintf (s_dir, sizeof (s_dir), "/tmp/test_brk_journal_v3.XXXXXX");
    cr_assert_not_null (mkdtemp (s_dir));
}

static void
s_teardown (void)
{
    nftw (s_dir, s_rm, 16, FTW_DEPTH | FTW_PHYS);
}

TestSuite (journal_v3, .init = s_setup, .fini = s_teardown, .timeout = 60);

//  What replay handed over, in order.
typedef struct {
    int live;                   //  Live messages
    int done;                   //  Acked ids
    int done_after_live;        //  Acked ids handed after a live message (must be 0)
    char live_ids [16][40];     //  The first live ids
    char publishers [16][300];  //  Their publishers ("(null)" when NULL)
    char requests [16][64];     //  Their requests
    char done_ids [16][40];     //  The first acked ids
    char last_done [40];        //  The last acked id
} seen_t;

static int
s_collect (const brk_journal_message_t *m, void *arg)
{
    seen_t *seen = (seen_t *) arg;
    if (m->done) {
        cr_assert_null (m->request, "an acked id has no request");
        if (seen->live)
            seen->done_after_live++;
        if (seen->done < 16)
            snprintf (seen->done_ids [seen->done], 40, "%s", m->message_id);
        snprintf (seen->last_done, 40, "%s", m->message_id);
        seen->done++;
        return 0;
    }
    if (seen->live < 16) {
        snprintf (seen->live_ids [seen->live], 40, "%s", m->message_id);
        snprintf (seen->publishers [seen->live], 300, "%s",
                  m->publisher? m->publisher: "(null)");
        snprintf (seen->requests [seen->live], 64, "%s", m->request);
    }
    seen->live++;
    return 0;
}

static brk_journal_config_t
s_config (size_t done_window)
{
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = s_dir;
    config.mode = BRK_JOURNAL_BATCH;
    config.done_window = done_window;
    return config;
}

static brk_journal_t *
s_open (brk_journal_config_t *config, seen_t *seen, brk_journal_report_t *report)
{
    memset (seen, 0, sizeof (*seen));
    brk_journal_t *journal = brk_journal_new (config, s_collect, seen, report);
    cr_assert_not_null (journal, "open failed: %s", report->message);
    return journal;
}

static const char *
s_id (int n)
{
    static char ids [4][37];
    char *id = ids [n % 4];
    snprintf (id, 37, "00000000-0000-4000-8000-%012d", n);
    return id;
}

//  --------------------------------------------------------------------
//  Publisher

Test (journal_v3, publisher_is_kept_and_read_back)
{
    brk_journal_config_t config = s_config (0);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    char long_name [400];
    memset (long_name, 'n', sizeof (long_name) - 1);
    long_name [sizeof (long_name) - 1] = 0;
    cr_assert_gt (brk_journal_append_publish_from (journal, s_id (1), "{\"a\":1}", 1, "alice"), 0);
    cr_assert_gt (brk_journal_append_publish_from (journal, s_id (2), "{\"a\":2}", 2, NULL), 0);
    cr_assert_gt (brk_journal_append_publish_from (journal, s_id (3), "{\"a\":3}", 3, ""), 0);
    cr_assert_gt (brk_journal_append_publish_from (journal, s_id (4), "{\"a\":4}", 4, long_name), 0);
    cr_assert_gt (brk_journal_append_publish (journal, s_id (5), "{\"a\":5}", 5), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);

    for (int round = 0; round < 2; round++) {
        journal = s_open (&config, &seen, &report);
        cr_assert_eq (seen.live, 5);
        cr_expect_str_eq (seen.publishers [0], "alice");
        cr_expect_str_eq (seen.requests [0], "{\"a\":1}");
        cr_expect_str_eq (seen.publishers [1], "(null)");
        cr_expect_str_eq (seen.publishers [2], "(null)", "an empty name reads as none");
        cr_expect_eq (strlen (seen.publishers [3]), 256, "a long name is cut to 256 bytes");
        cr_expect_str_eq (seen.publishers [4], "(null)");
        cr_expect_str_eq (seen.requests [4], "{\"a\":5}");
        //  The second round reads the snapshot: the names survive compaction
        if (round == 0)
            cr_assert_eq (brk_journal_compact (journal), 0);
        brk_journal_destroy (&journal);
    }
}

//  --------------------------------------------------------------------
//  Acked ids

Test (journal_v3, acked_ids_survive_restarts_and_snapshots)
{
    brk_journal_config_t config = s_config (100);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    for (int i = 0; i < 6; i++)
        cr_assert_gt (brk_journal_append_publish (journal, s_id (i), "{}", 1), 0);
    //  Acked out of publish order: the done list keeps ack order
    cr_assert_gt (brk_journal_append_ack (journal, s_id (3)), 0);
    cr_assert_gt (brk_journal_append_ack (journal, s_id (1)), 0);
    cr_assert_gt (brk_journal_append_ack (journal, s_id (4)), 0);
    //  Records for an acked id change nothing
    cr_assert_gt (brk_journal_append_attempt (journal, s_id (1), 2, 7), 0);
    cr_assert_gt (brk_journal_append_ack (journal, s_id (1)), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    cr_expect_eq (stats.live_messages, 3, "acked ids are not live");
    brk_journal_destroy (&journal);

    for (int round = 0; round < 3; round++) {
        journal = s_open (&config, &seen, &report);
        cr_assert_eq (seen.live, 3, "round %d", round);
        cr_assert_eq (seen.done, 3, "round %d", round);
        cr_expect_eq (report.done, 3);
        cr_expect_eq (report.live, 3);
        cr_expect_eq (seen.done_after_live, 0, "acked ids come before the live messages");
        //  Round 2: id 3 was published and acked again in round 1
        int order [2][3] = { { 3, 1, 4 }, { 1, 4, 3 } };
        for (int i = 0; i < 3; i++)
            cr_expect_str_eq (seen.done_ids [i], s_id (order [round == 2][i]), "round %d", round);
        cr_expect_str_eq (seen.live_ids [0], s_id (0));
        cr_expect_str_eq (seen.live_ids [1], s_id (2));
        cr_expect_str_eq (seen.live_ids [2], s_id (5));
        if (round == 0)
            cr_assert_eq (brk_journal_compact (journal), 0);
        if (round == 1) {
            //  An id published again after it left the broker's window is
            //  a new message, no longer done
            cr_assert_gt (brk_journal_append_publish (journal, s_id (3), "{\"again\":1}", 9), 0);
            cr_assert_eq (brk_journal_sync (journal), 0);
            brk_journal_destroy (&journal);
            journal = s_open (&config, &seen, &report);
            cr_expect_eq (seen.live, 4);
            cr_expect_eq (seen.done, 2);
            cr_expect_str_eq (seen.live_ids [3], s_id (3));
            cr_assert_gt (brk_journal_append_ack (journal, s_id (3)), 0);
            cr_assert_eq (brk_journal_sync (journal), 0);
            //  Now at the end of the done list
            brk_journal_destroy (&journal);
            journal = s_open (&config, &seen, &report);
            cr_expect_str_eq (seen.last_done, s_id (3));
            cr_assert_eq (brk_journal_compact (journal), 0);
        }
        brk_journal_destroy (&journal);
    }
}

Test (journal_v3, acked_ids_are_bounded_by_the_window)
{
    brk_journal_config_t config = s_config (50);
    config.segment_size = 64 * 1024;
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    char id [37];
    for (int i = 0; i < 5000; i++) {
        snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012d", i);
        cr_assert_gt (brk_journal_append_publish (journal, id, "{}", 1), 0);
        cr_assert_gt (brk_journal_append_ack (journal, id), 0);
    }
    cr_assert_eq (brk_journal_sync (journal), 0);
    cr_assert_eq (brk_journal_compact (journal), 0);
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    //  50 ACK records of 50 bytes, the EPOCH and the headers
    cr_expect_lt (stats.disk_bytes, 50 * 50 + 512, "%llu bytes", (unsigned long long) stats.disk_bytes);
    cr_expect_eq (stats.live_bytes, 50 * 50, "the live set counts the done records");
    brk_journal_destroy (&journal);
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.done, 50);
    cr_expect_eq (seen.live, 0);
    cr_expect_str_eq (seen.done_ids [0], "00000000-0000-4000-8000-000000004950", "the oldest are forgotten");
    cr_expect_str_eq (seen.last_done, "00000000-0000-4000-8000-000000004999");
    brk_journal_destroy (&journal);

    //  Without a window nothing is kept (the default)
    config.done_window = 0;
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.done, 0);
    brk_journal_destroy (&journal);
}

//  --------------------------------------------------------------------
//  Epoch

Test (journal_v3, an_epoch_raised_in_a_run_is_passed_at_the_next_start)
{
    brk_journal_config_t config = s_config (0);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_assert_eq (brk_journal_epoch (journal), 1);
    //  The queue ran out of 2^32 delivery ids and moved to epoch 2
    cr_assert_gt (brk_journal_append_epoch (journal, 2), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    cr_assert_eq (brk_journal_epoch (journal), 1, "the run's own epoch does not change");
    brk_journal_destroy (&journal);
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (brk_journal_epoch (journal), 3, "largest journaled + 1, not 2 again");
    cr_expect_eq (report.epoch, 3);
    cr_assert_gt (brk_journal_append_epoch (journal, 4), 0);
    cr_assert_gt (brk_journal_append_epoch (journal, 5), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    //  A snapshot carries the largest epoch, not the run's
    cr_assert_eq (brk_journal_compact (journal), 0);
    brk_journal_destroy (&journal);
    journal = s_open (&config, &seen, &report);
    cr_expect_eq (brk_journal_epoch (journal), 6);
    brk_journal_destroy (&journal);
}

//  --------------------------------------------------------------------
//  Older versions, written by hand in their layouts

static void
s_le32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) v; p [1] = (uint8_t) (v >> 8);
    p [2] = (uint8_t) (v >> 16); p [3] = (uint8_t) (v >> 24);
}

static void
s_le64 (uint8_t *p, uint64_t v)
{
    s_le32 (p, (uint32_t) v);
    s_le32 (p + 4, (uint32_t) (v >> 32));
}

static size_t
s_str (uint8_t *p, const char *text)
{
    size_t n = strlen (text);
    s_le32 (p, (uint32_t) n);
    memcpy (p + 4, text, n + 1);
    return 5 + n;
}

//  Seal the body at out + 8 (n bytes); returns the record's size.
static size_t
s_seal (uint8_t *out, size_t n)
{
    s_le32 (out, (uint32_t) n);
    uint32_t crc = brk_journal_crc32c (0, out, 4);
    s_le32 (out + 4, brk_journal_crc32c (crc, out + 8, n));
    return 8 + n;
}

static size_t
s_old_publish (uint8_t *out, const char *id, const char *request, uint64_t ms)
{
    uint8_t *body = out + 8;
    size_t n = 0;
    body [n++] = 1;
    s_le64 (body + n, ms);
    n += 8;
    n += s_str (body + n, id);
    n += s_str (body + n, request);
    return s_seal (out, n);
}

static size_t
s_ack_record (uint8_t *out, const char *id)
{
    uint8_t *body = out + 8;
    size_t n = 0;
    body [n++] = 2;
    n += s_str (body + n, id);
    return s_seal (out, n);
}

static size_t
s_number_record (uint8_t *out, int type, uint64_t number)
{
    uint8_t *body = out + 8;
    body [0] = (uint8_t) type;
    s_le64 (body + 1, number);
    return s_seal (out, 9);
}

//  Segment 1 in format version: EPOCH 4, five PUBLISHes (the third
//  acked), and in version 2 the SYNCED records a version 2 writer puts
//  after each fsync.
static void
s_write_old (uint32_t version)
{
    uint8_t data [8192];
    memset (data, 0, 40);
    memcpy (data, "MANDRILJ", 8);
    s_le32 (data + 8, version);
    s_le32 (data + 12, 1);              //  segment
    s_le32 (data + 16, 1);              //  number 1
    s_le32 (data + 36, brk_journal_crc32c (0, data, 36));
    size_t size = 40;
    size += s_number_record (data + size, 7, 4);
    if (version >= 2)
        size += s_number_record (data + size, 8, size);
    for (int i = 0; i < 5; i++) {
        char request [64];
        snprintf (request, sizeof (request), "{\"instance_name\":\"v%u-%d\"}", version, i);
        size += s_old_publish (data + size, s_id (i), request, 100 + (uint64_t) i);
    }
    size += s_ack_record (data + size, s_id (2));
    if (version >= 2)
        size += s_number_record (data + size, 8, size);
    char path [512];
    snprintf (path, sizeof (path), "%s/journal-0000000001.seg", s_dir);
    FILE *file = fopen (path, "wb");
    cr_assert_not_null (file);
    cr_assert_eq (fwrite (data, 1, size, file), size);
    fclose (file);
}

static void
s_check_old (uint32_t version)
{
    s_write_old (version);
    brk_journal_config_t config = s_config (0);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_assert_eq (seen.live, 4, "version %u", version);
    cr_expect_eq (report.torn_bytes, 0);
    cr_expect_eq (brk_journal_epoch (journal), 5);
    char request [64];
    snprintf (request, sizeof (request), "{\"instance_name\":\"v%u-%d\"}", version, 3);
    cr_expect_str_eq (seen.requests [2], request);
    cr_expect_str_eq (seen.publishers [0], "(null)", "older files have no publisher");
    //  New records go on in version 3; compaction rewrites the old
    //  PUBLISH records into the new layout; both read back
    cr_assert_gt (brk_journal_append_publish_from (journal, s_id (9), "{}", 1, "bob"), 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    for (int round = 0; round < 2; round++) {
        journal = s_open (&config, &seen, &report);
        cr_assert_eq (seen.live, 5, "version %u, round %d", version, round);
        cr_expect_str_eq (seen.requests [2], request);
        cr_expect_str_eq (seen.publishers [0], "(null)");
        cr_expect_str_eq (seen.publishers [4], "bob");
        if (round == 0)
            cr_assert_eq (brk_journal_compact (journal), 0);
        brk_journal_destroy (&journal);
    }
}

Test (journal_v3, version_1_files_recover_unchanged)
{
    s_check_old (1);
}

Test (journal_v3, version_2_files_recover_unchanged)
{
    s_check_old (2);
}

Test (journal_v3, version_2_acks_fill_the_done_list)
{
    s_write_old (2);
    brk_journal_config_t config = s_config (10);
    brk_journal_report_t report;
    seen_t seen;
    brk_journal_t *journal = s_open (&config, &seen, &report);
    cr_expect_eq (seen.live, 4);
    cr_expect_eq (seen.done, 1);
    cr_expect_str_eq (seen.done_ids [0], s_id (2));
    brk_journal_destroy (&journal);
}
