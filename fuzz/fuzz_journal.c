/*  fuzz_journal: libFuzzer target for the journal's reader (recovery).

    Each input becomes one or two journal files in a scratch directory,
    which brk_journal_new then opens, as the broker would at start:

      byte 0    flags: 1 recompute record checksums (so mutations reach the
                decoder and the replay rules, not only the CRC check),
                2 the (first) file is a snapshot, 4 open with salvage,
                8 split the rest in two files at byte 1 * 64, 16 write a
                version 1 header, 32 a version 3 one (else version 2),
                64 keep acked ids (done_window 100)
      byte 1    split point (with flag 8)
      rest      the records, after a valid 40-byte header written here

    Properties checked (abort on failure, so libFuzzer keeps the input):
    - every string the replay callback gets is as long as it says;
    - an open that succeeded leaves a journal that opens again, strictly,
      with the same number of live messages, also after a compaction.
    AddressSanitizer and UBSan catch the rest.

    FUZZ_JOURNAL_SEEDS=DIR (read at start) writes a few real journals'
    bytes there in this input format, as a seed corpus (fuzz/run.sh).
*/
#include "brk_journal.h"
#include "mdl_log.h"

#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char s_dir [256];
volatile size_t fuzz_journal_sink;

static void
s_put32 (uint8_t *p, uint32_t v)
{
    p [0] = (uint8_t) v;
    p [1] = (uint8_t) (v >> 8);
    p [2] = (uint8_t) (v >> 16);
    p [3] = (uint8_t) (v >> 24);
}

static uint32_t
s_get32 (const uint8_t *p)
{
    return (uint32_t) p [0] | (uint32_t) p [1] << 8 | (uint32_t) p [2] << 16
         | (uint32_t) p [3] << 24;
}

static void
s_clear (void)
{
    DIR *dir = opendir (s_dir);
    if (!dir)
        abort ();
    struct dirent *de;
    while ((de = readdir (dir))) {
        if (de->d_name [0] == '.')
            continue;
        char path [600];
        snprintf (path, sizeof (path), "%s/%s", s_dir, de->d_name);
        unlink (path);
    }
    closedir (dir);
}

static int
s_check (const brk_journal_message_t *m, void *arg)
{
    size_t sum = strlen (m->message_id);
    if (m->done) {
        //  An acked id: nothing but the id
        if (m->request || m->dead)
            abort ();
        fuzz_journal_sink += sum;
        return 0;
    }
    if (strlen (m->request) != m->request_size)
        abort ();
    if (m->publisher && strlen (m->publisher) > 256)
        abort ();
    sum += m->request_size;
    if (m->dead) {
        if (!m->dead_reason || !m->dead_history)
            abort ();
        sum += strlen (m->dead_reason) + strlen (m->dead_history);
    }
    fuzz_journal_sink += sum;
    (*(uint64_t *) arg)++;
    return 0;
}

//  One file: header, then data with its records' checksums fixed if asked.
static void
s_write (uint32_t number, uint32_t kind, uint32_t prev, uint32_t version,
         const uint8_t *data, size_t size, int fix)
{
    uint8_t *bytes = malloc (40 + size + 1);
    if (!bytes)
        abort ();
    memset (bytes, 0, 40);
    memcpy (bytes, "MANDRILJ", 8);
    s_put32 (bytes + 8, version);
    s_put32 (bytes + 12, kind);
    s_put32 (bytes + 16, number);
    s_put32 (bytes + 20, prev);
    s_put32 (bytes + 36, brk_journal_crc32c (0, bytes, 36));
    if (size)
        memcpy (bytes + 40, data, size);
    size_t total = 40 + size;
    for (size_t p = 40; fix && p + 8 <= total; ) {
        uint32_t len = s_get32 (bytes + p);
        if (len == 0 || len > total - p - 8)
            break;
        uint32_t crc = brk_journal_crc32c (0, bytes + p, 4);
        s_put32 (bytes + p + 4, brk_journal_crc32c (crc, bytes + p + 8, len));
        p += 8 + len;
    }
    char path [600];
    snprintf (path, sizeof (path), "%s/journal-%010u.%s", s_dir, number,
              kind == 2? "snap": "seg");
    FILE *file = fopen (path, "wb");
    if (!file || fwrite (bytes, 1, total, file) != total)
        abort ();
    fclose (file);
    free (bytes);
}

static brk_journal_config_t
s_config (bool salvage)
{
    brk_journal_config_t config;
    brk_journal_config_defaults (&config);
    config.dir = s_dir;
    config.mode = BRK_JOURNAL_NONE;
    config.compact_slack_bytes = 0;
    config.salvage = salvage;
    return config;
}

//  Seeds: the bytes after the header of real journals, with flags 1.
static void
s_make_seeds (const char *out)
{
    for (int variant = 0; variant < 3; variant++) {
        s_clear ();
        brk_journal_config_t config = s_config (false);
        config.mode = BRK_JOURNAL_SYNC;
        brk_journal_report_t report;
        brk_journal_t *journal = brk_journal_new (&config, NULL, NULL, &report);
        if (!journal)
            abort ();
        for (int i = 0; i < 6; i++) {
            char id [48];
            snprintf (id, sizeof (id), "00000000-0000-4000-8000-%012d", i);
            brk_journal_append_publish (journal, id, "{\"instance_name\":\"cattle-ab12\"}",
                                        1000 + (uint64_t) i);
            if (i % 2)
                brk_journal_append_attempt (journal, id, 2, 77);
            if (i == 2)
                brk_journal_append_progress (journal, id, 3);
            if (i == 3)
                brk_journal_append_dead (journal, id, "expired", "[{\"attempt\":2}]", 9);
            if (i == 4 && variant > 0)
                brk_journal_append_replay (journal, id);
            if (i == 5)
                brk_journal_append_ack (journal, id);
            if (variant == 2)
                brk_journal_sync (journal);
        }
        if (variant == 1)
            brk_journal_compact (journal);
        brk_journal_sync (journal);
        brk_journal_destroy (&journal);
        //  The newest file of each kind becomes one seed
        DIR *dir = opendir (s_dir);
        struct dirent *de;
        while (dir && (de = readdir (dir))) {
            if (strncmp (de->d_name, "journal-", 8))
                continue;
            bool snap = strstr (de->d_name, ".snap") != NULL;
            char path [600], seed [600];
            snprintf (path, sizeof (path), "%s/%s", s_dir, de->d_name);
            snprintf (seed, sizeof (seed), "%s/seed-%d-%s", out, variant, de->d_name);
            FILE *in = fopen (path, "rb");
            FILE *to = fopen (seed, "wb");
            if (!in || !to)
                abort ();
            uint8_t head [2] = { (uint8_t) (1 | (snap? 2: 0)), 0 };
            fwrite (head, 1, 2, to);
            uint8_t buf [65536];
            size_t n = fread (buf, 1, sizeof (buf), in);
            if (n > 40)
                fwrite (buf + 40, 1, n - 40, to);
            fclose (in);
            fclose (to);
        }
        if (dir)
            closedir (dir);
    }
    s_clear ();
}

static void
s_remove_dir (void)
{
    s_clear ();
    rmdir (s_dir);
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
    (void) argc;
    (void) argv;
    mdl_log_set_level (MDL_LOG_ERROR);
    const char *base = access ("/dev/shm", W_OK) == 0? "/dev/shm": "/tmp";
    snprintf (s_dir, sizeof (s_dir), "%s/fuzz_journal.XXXXXX", base);
    if (!mkdtemp (s_dir))
        abort ();
    atexit (s_remove_dir);
    const char *seeds = getenv ("FUZZ_JOURNAL_SEEDS");
    if (seeds)
        s_make_seeds (seeds);
    return 0;
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
    if (size < 2)
        return 0;
    uint8_t flags = data [0];
    size_t split = (size_t) data [1] * 64;
    data += 2;
    size -= 2;
    int fix = flags & 1;
    uint32_t kind = flags & 2? 2: 1;
    uint32_t version = flags & 16? 1: flags & 32? 3: 2;
    s_clear ();
    if ((flags & 8) && split < size) {
        s_write (1, kind, 0, version, data, split, fix);
        //  A segment after a snapshot follows what the snapshot covers
        s_write (2, 1, kind == 2? 0: 1, version, data + split, size - split, fix);
    }
    else
        s_write (1, kind, 0, version, data, size, fix);

    brk_journal_config_t config = s_config (flags & 4);
    config.done_window = flags & 64? 100: 0;
    brk_journal_report_t report;
    uint64_t live = 0;
    brk_journal_t *journal = brk_journal_new (&config, s_check, &live, &report);
    if (!journal)
        return 0;
    if (report.live != live)
        abort ();
    brk_journal_destroy (&journal);

    //  What one open accepted (and repaired) must open again, strictly
    config.salvage = false;
    uint64_t again = 0;
    journal = brk_journal_new (&config, s_check, &again, &report);
    if (!journal || again != live) {
        fprintf (stderr, "fuzz_journal: reopen: %s (live %lu, then %lu)\n",
                 journal? "changed": report.message, (unsigned long) live,
                 (unsigned long) again);
        abort ();
    }
    if (brk_journal_compact (journal))
        abort ();
    brk_journal_destroy (&journal);
    again = 0;
    journal = brk_journal_new (&config, s_check, &again, &report);
    if (!journal || again != live) {
        fprintf (stderr, "fuzz_journal: after compaction: %s (live %lu, then %lu)\n",
                 journal? "changed": report.message, (unsigned long) live,
                 (unsigned long) again);
        abort ();
    }
    brk_journal_destroy (&journal);
    return 0;
}
