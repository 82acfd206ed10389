/*  pg_save_bench: saves per second through the worker's store interface
    (wrk_db.h), SQLite and PostgreSQL in the same sitting.

    For each store it opens the URL, then keeps a window of saves in
    flight as the worker's loop does under load: queue a burst, flush,
    poll what the store says to watch (the SQLite actor's pipe, or the
    PostgreSQL socket) up to its next wake, service, and queue more as
    results come back. It reports saves/s for the whole run, counts
    failures (the target is none) and checks every token came back once.
    The ids are fresh uuids, so the rows are inserts, not upserts.

    Usage: pg_save_bench --pg URL [--sqlite PATH] [--count N] [--window N]
                         [--burst N]
    (defaults: a fresh SQLite file in /tmp, 50000 saves, window 5000,
    bursts of 100). A throwaway PostgreSQL server for it, as root:
      d=$(mktemp -d); chown postgres $d
      runuser -u postgres -- /usr/lib/postgresql/15/bin/initdb -D $d/data -U mandrill -A trust
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D $d/data -l $d/log \
          -o "-p 55432 -k $d -c listen_addresses=127.0.0.1" -w start
      build/bench/pg_save_bench --pg postgresql://mandrill@127.0.0.1:55432/postgres
      runuser -u postgres -- /usr/lib/postgresql/15/bin/pg_ctl -D $d/data stop
    The server's defaults apply (fsync on, synchronous_commit on). Not a
    timed test: run by hand.
*/
#include <czmq.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined (MANDRILL_WITH_PG)

#include "mdl_log.h"
#include "wrk_db.h"

typedef struct {
    size_t ok;                  //  Saves reported ok
    size_t failed;              //  Saves reported failed
    char error [256];           //  Last failure
    unsigned char *seen;        //  Reports per token
    size_t twice;               //  Tokens reported more than once
} tally_t;

static void
s_done (void *arg, const char *message_id, uint64_t token, bool ok, const char *error)
{
    (void) message_id;
    tally_t *tally = arg;
    if (tally->seen [token]++)
        tally->twice++;
    if (ok)
        tally->ok++;
    else {
        tally->failed++;
        snprintf (tally->error, sizeof tally->error, "%s", error);
    }
}

//  Wait for what the store watches, at most until its next wake or 100 ms.
static void
s_wait (wrk_db_t *db)
{
    wrk_db_watch_t watch;
    wrk_db_watch (db, &watch);
    int64_t wake = wrk_db_next_wake (db);
    long timeout = 100;
    if (wake >= 0) {
        int64_t delay = wake - zclock_mono ();
        timeout = delay < 0 ? 0 : delay < 100 ? (long) delay : 100;
    }
    zmq_pollitem_t item = { .socket = watch.sock ? zsock_resolve (watch.sock) : NULL,
                            .fd = watch.fd, .events = watch.sock ? ZMQ_POLLIN : watch.events };
    bool any = watch.sock || watch.fd >= 0;
    zmq_poll (&item, any ? 1 : 0, timeout);
}

//  Run count saves through url. Returns saves/s, or -1 when it failed.
static double
s_run (const char *url, size_t count, size_t window, size_t burst)
{
    char error [512];
    wrk_db_t *db = wrk_db_new (url, "bench", error, sizeof error);
    if (!db) {
        fprintf (stderr, "pg_save_bench: %s\n", error);
        return -1;
    }
    tally_t tally = { .seen = calloc (count, 1) };
    if (!tally.seen) {
        wrk_db_destroy (&db);
        return -1;
    }
    const char *attributes = "{\"zone\":\"eu-west-1\",\"ts\":1700000000000}";
    size_t next = 0;
    int64_t started = zclock_usecs ();
    int64_t deadline = zclock_mono () + 600000;
    while (tally.ok + tally.failed < count && zclock_mono () < deadline) {
        size_t queued = 0;
        while (next < count && next - (tally.ok + tally.failed) < window && queued < burst) {
            zuuid_t *uuid = zuuid_new ();
            char id [37];
            snprintf (id, sizeof id, "%s", zuuid_str_canonical (uuid));
            zuuid_destroy (&uuid);
            wrk_db_row_t row = { .message_id = id, .token = next, .instance_name = "cattle-ab12",
                                 .hostname = "cattle-ab12.example.net", .attributes = attributes,
                                 .attributes_size = strlen (attributes), .attempt = 1,
                                 .received_wall_ms = zclock_time () };
            if (wrk_db_save (db, &row) != 0)
                break;
            next++;
            queued++;
        }
        wrk_db_flush (db);
        s_wait (db);
        wrk_db_service (db, s_done, &tally);
    }
    double seconds = (double) (zclock_usecs () - started) / 1e6;
    printf ("%-10s %zu saves in %.2f s: %.0f saves/s, %zu failed%s%s, %zu reported twice\n",
            wrk_db_name (db), tally.ok, seconds, (double) tally.ok / seconds, tally.failed,
            tally.failed ? " (last: " : "", tally.failed ? tally.error : "", tally.twice);
    if (tally.failed)
        printf (")\n");
    wrk_db_destroy (&db);
    bool good = tally.ok == count && tally.twice == 0;
    free (tally.seen);
    return good ? (double) count / seconds : -1;
}

int
main (int argc, char *argv [])
{
    const char *pg = NULL, *sqlite = NULL;
    size_t count = 50000, window = 5000, burst = 100;
    for (int i = 1; i < argc; i++) {
        if (streq (argv [i], "--pg") && i + 1 < argc)
            pg = argv [++i];
        else if (streq (argv [i], "--sqlite") && i + 1 < argc)
            sqlite = argv [++i];
        else if (streq (argv [i], "--count") && i + 1 < argc)
            count = strtoul (argv [++i], NULL, 10);
        else if (streq (argv [i], "--window") && i + 1 < argc)
            window = strtoul (argv [++i], NULL, 10);
        else if (streq (argv [i], "--burst") && i + 1 < argc)
            burst = strtoul (argv [++i], NULL, 10);
        else {
            fprintf (stderr, "usage: pg_save_bench --pg URL [--sqlite PATH] [--count N] "
                     "[--window N] [--burst N]\n");
            return 2;
        }
    }
    if (!pg || count == 0 || window == 0 || burst == 0) {
        fprintf (stderr, "pg_save_bench: --pg URL is required (and counts above 0)\n");
        return 2;
    }
    zsys_init ();
    mdl_log_set_level (MDL_LOG_WARN);
    char dir [] = "/tmp/pg_save_bench_XXXXXX", url [128];
    if (!sqlite) {
        if (!mkdtemp (dir)) {
            perror ("pg_save_bench: mkdtemp");
            return 1;
        }
        snprintf (url, sizeof url, "sqlite:%s/bench.db", dir);
    }
    else
        snprintf (url, sizeof url, "sqlite:%s", sqlite);
    printf ("%zu saves per store, window %zu, bursts of %zu\n", count, window, burst);
    double sqlite_rate = s_run (url, count, window, burst);
    double pg_rate = s_run (pg, count, window, burst);
    if (!sqlite) {
        char path [160];
        const char *suffixes [] = { "", "-wal", "-shm" };
        for (int i = 0; i < 3; i++) {
            snprintf (path, sizeof path, "%s/bench.db%s", dir, suffixes [i]);
            remove (path);
        }
        rmdir (dir);
    }
    return sqlite_rate > 0 && pg_rate > 0 ? 0 : 1;
}

#else

int
main (void)
{
    fprintf (stderr, "pg_save_bench: built without the store interface (MANDRILL_WITH_PG)\n");
    return 2;
}

#endif
