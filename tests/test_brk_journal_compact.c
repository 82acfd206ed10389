/*  Tests for brk_journal's compaction under load: group commit goes on
    while a snapshot is written (issue 8 section 3), and what was committed
    meanwhile survives the snapshot, a failed snapshot, and the next one.

    The io seam makes the snapshot's writes slow (and, in one test, its
    rename fail, in another the directory's fsync after the rename wait
    for the test), so "during the compaction" is a window the test can
    see: a commit made in it must be durable before the snapshot is
    renamed, or before the directory's fsync ends. The fsync interval is
    longer than any of those windows: a commit waits for no timer. */
#include <criterion/criterion.h>

#include "brk_journal.h"
#include "e2e_support.h"

#include <errno.h>
#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static char s_dir [256];

static atomic_int s_snapshot_fd;        //  fd of the snapshot being written, else -1
static atomic_int s_snapshots_opened;   //  Snapshot files opened so far
static atomic_int s_renames;            //  Snapshots renamed into place
static atomic_int s_slow_ms;            //  Each write to a snapshot, and its fsync, takes this long
static atomic_int s_fail_renames;       //  Fail this many renames (EIO)
static atomic_int s_hold_dir;           //  After a rename, a directory's fsync waits while set
static atomic_int s_dir_held;           //  Directory fsyncs waiting on s_hold_dir now
static atomic_int s_hold_unlink;        //  Each unlink waits while set
static atomic_int s_unlink_held;        //  Unlinks waiting on s_hold_unlink now

static void
s_setup (void)
{
    e2e_dir_new (s_dir, sizeof s_dir, "test_brk_journal_compact.");
    atomic_store (&s_snapshot_fd, -1);
    atomic_store (&s_snapshots_opened, 0);
    atomic_store (&s_renames, 0);
    atomic_store (&s_slow_ms, 0);
    atomic_store (&s_fail_renames, 0);
    atomic_store (&s_hold_dir, 0);
    atomic_store (&s_dir_held, 0);
    atomic_store (&s_hold_unlink, 0);
    atomic_store (&s_unlink_held, 0);
}

static void
s_teardown (void)
{
    e2e_dir_remove (s_dir);
}

TestSuite (journal_compact, .init = s_setup, .fini = s_teardown, .timeout = 60);

static int
s_open_file (void *arg, const char *path, int flags, mode_t mode)
{
    (void) arg;
    int fd = brk_journal_io_system ()->open (NULL, path, flags, mode);
    size_t length = strlen (path);
    if (fd >= 0 && length > 9 && strcmp (path + length - 9, ".snap.tmp") == 0) {
        atomic_store (&s_snapshot_fd, fd);
        atomic_fetch_add (&s_snapshots_opened, 1);
    }
    return fd;
}

static ssize_t
s_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    (void) arg;
    int slow = atomic_load (&s_slow_ms);
    if (slow && fd == atomic_load (&s_snapshot_fd))
        usleep ((useconds_t) slow * 1000);
    return brk_journal_io_system ()->pwrite (NULL, fd, data, size, offset);
}

//  The snapshot's fsync is slow too, so the test sees a commit become
//  durable well before the rename, however slow the machine
static int
s_fsync (void *arg, int fd)
{
    (void) arg;
    int slow = atomic_load (&s_slow_ms);
    if (slow && fd == atomic_load (&s_snapshot_fd))
        usleep ((useconds_t) slow * 1000);
    struct stat st;
    if (atomic_load (&s_hold_dir) && atomic_load (&s_renames) > 0
    &&  fstat (fd, &st) == 0 && S_ISDIR (st.st_mode)) {
        atomic_fetch_add (&s_dir_held, 1);
        //  Bounded: a test that never lets go fails, it does not hang
        for (int i = 0; i < 2000 && atomic_load (&s_hold_dir); i++)
            usleep (5000);
        atomic_fetch_sub (&s_dir_held, 1);
    }
    return brk_journal_io_system ()->fsync (NULL, fd);
}

static int
s_rename (void *arg, const char *from, const char *to)
{
    (void) arg;
    atomic_store (&s_snapshot_fd, -1);
    int left = atomic_load (&s_fail_renames);
    if (left > 0 && atomic_compare_exchange_strong (&s_fail_renames, &left, left - 1)) {
        errno = EIO;
        return -1;
    }
    int rc = brk_journal_io_system ()->rename (NULL, from, to);
    if (rc == 0)
        atomic_fetch_add (&s_renames, 1);
    return rc;
}

static int
s_unlink (void *arg, const char *path)
{
    (void) arg;
    if (atomic_load (&s_hold_unlink)) {
        atomic_fetch_add (&s_unlink_held, 1);
        for (int i = 0; i < 2000 && atomic_load (&s_hold_unlink); i++)
            usleep (5000);
        atomic_fetch_sub (&s_unlink_held, 1);
    }
    return brk_journal_io_system ()->unlink (NULL, path);
}

static brk_journal_io_t s_io;

static brk_journal_config_t
s_config (void)
{
    s_io = *brk_journal_io_system ();
    s_io.open = s_open_file;
    s_io.pwrite = s_pwrite;
    s_io.fsync = s_fsync;
    s_io.rename = s_rename;
    s_io.unlink = s_unlink;
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = s_dir;
    config.mode = BRK_JOURNAL_BATCH;
    config.fsync_interval_ms = 60000;   //  Longer than any test: no commit waits for it
    config.compact_slack_bytes = 512u << 10;
    config.done_window = 100000;
    config.io = &s_io;
    return config;
}

static int64_t
s_mono_ms (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void
s_id (char *out, int n)
{
    snprintf (out, 37, "00000000-0000-4000-8000-%012d", n);
}

//  Publish and ack count messages with 200-byte requests in one batch:
//  about 1.9 MiB on disk against 50 bytes a kept id (0.4 MB), over twice
//  that plus the slack, so the writer compacts as soon as it has written
//  them.
static uint64_t s_batch_seq;            //  The last record s_publish_and_ack appended

static void
s_publish_and_ack (brk_journal_t *journal, int count)
{
    char request [256];
    memset (request, 'x', 200);
    request [200] = 0;
    for (int i = 0; i < count; i++) {
        char id [37];
        s_id (id, i);
        cr_assert_gt (brk_journal_append_publish (journal, id, request, 1), 0);
        s_batch_seq = brk_journal_append_ack (journal, id);
        cr_assert_gt (s_batch_seq, 0);
    }
    brk_journal_commit (journal);
}

static bool
s_wait (bool (*done) (brk_journal_t *, uint64_t), brk_journal_t *journal, uint64_t arg,
        int64_t within_ms)
{
    int64_t until = s_mono_ms () + within_ms;
    while (!done (journal, arg) && s_mono_ms () < until) {
        struct pollfd item = { brk_journal_fd (journal), POLLIN, 0 };
        poll (&item, 1, 5);
    }
    return done (journal, arg);
}

static bool
s_snapshot_started (brk_journal_t *journal, uint64_t opened_before)
{
    (void) journal;
    return (uint64_t) atomic_load (&s_snapshots_opened) > opened_before
        && atomic_load (&s_snapshot_fd) >= 0;
}

static bool
s_durable (brk_journal_t *journal, uint64_t seq)
{
    return brk_journal_durable (journal) >= seq;
}

typedef struct {
    int live;
    int done;
    bool during_live;
} s_found_t;

static int
s_count (const brk_journal_message_t *message, void *arg)
{
    s_found_t *found = arg;
    if (message->done)
        found->done++;
    else {
        found->live++;
        if (strcmp (message->message_id, "during") == 0)
            found->during_live = true;
    }
    return 0;
}

//  Open the journal in dir (NULL: the test's) and count what it holds.
//  Through the real system calls, so that its own compactions are not
//  counted among the test's.
static s_found_t
s_reopen (const char *dir)
{
    brk_journal_config_t config = s_config ();
    config.io = NULL;
    if (dir)
        config.dir = dir;
    s_found_t found = { 0, 0, false };
    brk_journal_report_t report;
    brk_journal_t *journal = brk_journal_new (&config, s_count, &found, &report);
    cr_assert_not_null (journal, "reopen failed: %s", report.message);
    brk_journal_destroy (&journal);
    return found;
}

//  A fresh journal whose first snapshot has begun, with its writes and
//  fsync slowed to 300 ms each and the next fail_renames renames failing.
static brk_journal_t *
s_open_compacting (int fail_renames)
{
    brk_journal_config_t config = s_config ();
    brk_journal_report_t report;
    brk_journal_t *journal = brk_journal_new (&config, NULL, NULL, &report);
    cr_assert_not_null (journal, "%s", report.message);
    atomic_store (&s_slow_ms, 300);
    atomic_store (&s_fail_renames, fail_renames);
    s_publish_and_ack (journal, 8000);
    cr_assert (s_wait (s_snapshot_started, journal, 0, 10000), "no compaction started");
    return journal;
}

//  The batch whose writing made the compaction due is on disk before the
//  compaction starts: it is durable then, not when the compaction ends
//  (its PUBACKs and ACKEDs would wait for all of it, and the broker's
//  peers with them).
Test (journal_compact, the_batch_before_a_snapshot_is_durable_before_it_ends)
{
    brk_journal_t *journal = s_open_compacting (0);
    cr_assert (s_wait (s_durable, journal, s_batch_seq, 10000), "the batch never became durable");
    cr_expect_eq (atomic_load (&s_renames), 0, "the batch waited for the end of the compaction");
    atomic_store (&s_slow_ms, 0);
    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    s_found_t found = s_reopen (NULL);
    cr_expect_eq (found.done, 8000);
}

//  A commit made while a snapshot is being written is durable before the
//  snapshot is renamed into place, not after the whole compaction.
Test (journal_compact, a_commit_during_a_snapshot_is_durable_before_it_ends)
{
    brk_journal_t *journal = s_open_compacting (0);

    uint64_t during = brk_journal_append_publish (journal, "during", "{\"host\":\"a\"}", 1);
    cr_assert_gt (during, 0);
    brk_journal_commit (journal);
    cr_assert (s_wait (s_durable, journal, during, 10000), "the commit never became durable");
    cr_expect_eq (atomic_load (&s_renames), 0,
                  "the commit waited for the end of the compaction");
    atomic_store (&s_slow_ms, 0);

    //  The next snapshot is made from an index that has "during"
    cr_assert_eq (brk_journal_compact (journal), 0);
    cr_expect_geq (atomic_load (&s_renames), 2);
    brk_journal_destroy (&journal);
    s_found_t found = s_reopen (NULL);
    cr_expect (found.during_live, "the message committed during the compaction is gone");
    cr_expect_eq (found.live, 1);
    cr_expect_eq (found.done, 8000);
}

//  Start a compaction with the step that hold guards held once it is
//  reached (held counts the calls waiting), commit during the snapshot
//  (that creates the segment after it, whose own directory fsync comes
//  before the rename, so is not held), then commit while the step is
//  held: that commit must be durable before the step is let go.
static void
s_commit_while_held (atomic_int *hold, atomic_int *held, const char *step)
{
    atomic_store (hold, 1);
    brk_journal_t *journal = s_open_compacting (0);
    uint64_t during = brk_journal_append_publish (journal, "during", "{\"host\":\"a\"}", 1);
    cr_assert_gt (during, 0);
    brk_journal_commit (journal);
    cr_assert (s_wait (s_durable, journal, during, 10000), "the commit never became durable");
    atomic_store (&s_slow_ms, 0);
    int64_t until = s_mono_ms () + 10000;
    while (atomic_load (held) == 0 && s_mono_ms () < until)
        poll (NULL, 0, 5);
    cr_assert_eq (atomic_load (held), 1, "the compaction never reached %s", step);

    uint64_t after = brk_journal_append_publish (journal, "after", "{\"host\":\"b\"}", 1);
    cr_assert_gt (after, during);
    brk_journal_commit (journal);
    bool durable = s_wait (s_durable, journal, after, 3000);
    int still = atomic_load (held);
    atomic_store (hold, 0);
    cr_expect (durable, "a commit waited for %s", step);
    cr_expect_eq (still, 1, "%s ended before the commit was durable", step);

    cr_assert_eq (brk_journal_sync (journal), 0);
    brk_journal_destroy (&journal);
    s_found_t found = s_reopen (NULL);
    cr_expect_eq (found.live, 2);
    cr_expect_eq (found.done, 8000);
}

//  The directory's fsync that makes the snapshot's name durable is
//  slow too, on some disks: commits go on during it, as during the
//  snapshot's own fsync.
Test (journal_compact, a_commit_during_the_directory_fsync_is_durable_before_it_ends)
{
    s_commit_while_held (&s_hold_dir, &s_dir_held, "the directory's fsync");
}

//  Deleting the files a snapshot replaced can be slow too (a disk that
//  discards freed blocks): commits go on meanwhile.
Test (journal_compact, a_commit_during_the_deletes_is_durable_before_they_end)
{
    s_commit_while_held (&s_hold_unlink, &s_unlink_held, "the deletes");
}

//  A snapshot that fails at its rename leaves what was committed during
//  it in place and indexed: acking it afterwards, then compacting, and a
//  restart, all see it.
Test (journal_compact, a_failed_snapshot_keeps_what_was_committed_during_it)
{
    brk_journal_t *journal = s_open_compacting (1);
    uint64_t during = brk_journal_append_publish (journal, "during", "{\"host\":\"a\"}", 1);
    uint64_t other = brk_journal_append_publish (journal, "other", "{\"host\":\"b\"}", 1);
    cr_assert_gt (other, during);
    brk_journal_commit (journal);
    cr_assert (s_wait (s_durable, journal, other, 10000), "the commit never became durable");
    atomic_store (&s_slow_ms, 0);

    //  Wait until the failed snapshot is over, then change what it kept
    int64_t until = s_mono_ms () + 10000;
    while (atomic_load (&s_fail_renames) > 0 && s_mono_ms () < until)
        poll (NULL, 0, 5);
    cr_assert_eq (atomic_load (&s_fail_renames), 0, "the rename was never tried");
    //  ... and over: the writer publishes its counters when the batch
    //  that ran the compaction ends, and then lists the segment written
    //  during it. Nothing is appended meanwhile, so the writer is idle
    //  from then on and the copy below is stable.
    brk_journal_stats_t stats;
    brk_journal_stats (journal, &stats);
    while (stats.files < 2 && s_mono_ms () < until) {
        poll (NULL, 0, 5);
        brk_journal_stats (journal, &stats);
    }
    cr_assert_geq (stats.files, 2, "the failed compaction never ended");
    //  The files as a crash would leave them now (the snapshot's tmp file
    //  perhaps still there): a start finds both messages and every acked id
    char crashed [300], command [700];
    snprintf (crashed, sizeof crashed, "%s.crashed", s_dir);
    snprintf (command, sizeof command, "cp -a '%s' '%s'", s_dir, crashed);
    cr_assert_eq (system (command), 0);
    s_found_t found = s_reopen (crashed);
    e2e_dir_remove (crashed);
    cr_expect_eq (found.live, 2, "a start after the failed snapshot finds %d live messages", found.live);
    cr_expect_eq (found.done, 8000);
    cr_assert_gt (brk_journal_append_ack (journal, "other"), 0);
    brk_journal_commit (journal);
    cr_assert_eq (brk_journal_sync (journal), 0);
    //  Asked for, and so made from the index as it is now (an automatic
    //  one may have run before it, after the failure's 1 s backoff)
    cr_assert_eq (brk_journal_compact (journal), 0);
    cr_expect_geq (atomic_load (&s_renames), 1);
    brk_journal_stats (journal, &stats);
    cr_expect_eq (stats.live_messages, 1, "the index holds %llu live messages",
                  (unsigned long long) stats.live_messages);
    brk_journal_destroy (&journal);
    found = s_reopen (NULL);
    cr_expect (found.during_live, "the message committed during the failed compaction is gone");
    cr_expect_eq (found.live, 1);
    cr_expect_eq (found.done, 8001);
}
