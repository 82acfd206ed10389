/*  Tests of brk_metrics: the journal io seam it wraps (every call
    forwarded, fsync timed also when it fails) and a real broker actor in
    this process, registering into a registry and mirroring its queue's
    totals from the loop (read back through mdl_metrics_render, polled
    with a deadline: the mirror lags by up to a second).
*/
#include <criterion/criterion.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "brk_metrics.h"
#include "brk_policy.h"
#include "brk_store_memory.h"
#include "brk_server.h"
#include "mdl_log.h"
#include "mmp.h"

//  A fake inner io: counts calls, fails fsync with EIO when asked.
typedef struct {
    int opens, pwrites, fsyncs, truncates, renames, unlinks, allocs;
    bool fail_fsync;
} s_fake_t;

static int
s_open (void *arg, const char *path, int flags, mode_t mode)
{
    ((s_fake_t *) arg)->opens++;
    return open (path, flags, mode);
}

static ssize_t
s_pwrite (void *arg, int fd, const void *data, size_t size, off_t offset)
{
    ((s_fake_t *) arg)->pwrites++;
    return pwrite (fd, data, size, offset);
}

static int
s_fsync (void *arg, int fd)
{
    s_fake_t *fake = arg;
    fake->fsyncs++;
    if (fake->fail_fsync) {
        errno = EIO;
        return -1;
    }
    return fsync (fd);
}

static int
s_ftruncate (void *arg, int fd, off_t size)
{
    ((s_fake_t *) arg)->truncates++;
    return ftruncate (fd, size);
}

static int
s_rename (void *arg, const char *from, const char *to)
{
    ((s_fake_t *) arg)->renames++;
    return rename (from, to);
}

static int
s_unlink (void *arg, const char *path)
{
    ((s_fake_t *) arg)->unlinks++;
    return unlink (path);
}

static void *
s_alloc (void *arg, size_t size)
{
    ((s_fake_t *) arg)->allocs++;
    return malloc (size);
}

//  The rendered line of series ("name{labels} "), or NULL; caller frees text.
static const char *
s_line (const char *text, const char *series)
{
    size_t length = strlen (series);
    for (const char *line = text; line; line = strchr (line, '\n')) {
        if (*line == '\n')
            line++;
        if (strncmp (line, series, length) == 0 && line [length] == ' ')
            return line + length + 1;
    }
    return NULL;
}

static double
s_rendered (mdl_metrics_t *registry, const char *series)
{
    size_t size;
    char *text = mdl_metrics_render (registry, &size);
    cr_assert_not_null (text);
    const char *value = s_line (text, series);
    double result = value ? strtod (value, NULL) : -1;
    free (text);
    return result;
}

Test (brk_metrics, journal_io_forwards_every_call_and_times_fsync, .timeout = 10)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    mdl_metrics_t *registry = mdl_metrics_new ();
    brk_metrics_t *metrics = brk_metrics_new (registry);
    cr_assert_not_null (metrics);
    s_fake_t fake = { 0 };
    brk_journal_io_t inner = {
        s_open, s_pwrite, s_fsync, s_ftruncate, s_rename, s_unlink, &fake, s_alloc
    };
    const brk_journal_io_t *io = brk_metrics_journal_io (metrics, &inner);
    char path [] = "/tmp/brk_metrics_XXXXXX";
    int tmp = mkstemp (path);
    cr_assert_geq (tmp, 0);
    close (tmp);
    char moved [64];
    snprintf (moved, sizeof moved, "%s.moved", path);

    int fd = io->open (io->arg, path, O_RDWR, 0600);
    cr_assert_geq (fd, 0);
    cr_expect_eq (io->pwrite (io->arg, fd, "abc", 3, 0), 3);
    cr_expect_eq (io->fsync (io->arg, fd), 0);
    fake.fail_fsync = true;
    errno = 0;
    cr_expect_eq (io->fsync (io->arg, fd), -1, "a failing fsync is passed on");
    cr_expect_eq (errno, EIO, "with its errno");
    cr_expect_eq (io->ftruncate (io->arg, fd, 1), 0);
    close (fd);
    cr_expect_eq (io->rename (io->arg, path, moved), 0);
    cr_expect_eq (io->unlink (io->arg, moved), 0);
    void *block = io->alloc (io->arg, 16);
    cr_expect_not_null (block);
    free (block);
    cr_expect_eq (fake.opens + fake.pwrites + fake.truncates + fake.renames + fake.unlinks
                  + fake.allocs, 6);
    cr_expect_eq (fake.fsyncs, 2);
    cr_expect_eq (s_rendered (registry,
                  "mandrill_broker_journal_fsync_duration_seconds_count"), 2,
                  "both fsyncs observed, the failed one too");

    //  Without an inner alloc the journal's own default stays
    inner.alloc = NULL;
    brk_metrics_t *second = brk_metrics_new (registry);
    cr_assert_not_null (second, "registering again gets the same series");
    cr_expect_null (brk_metrics_journal_io (second, &inner)->alloc);
    cr_expect_not_null (brk_metrics_journal_io (second, NULL)->fsync, "NULL: the system's io");
    brk_metrics_destroy (&second);
    brk_metrics_destroy (&metrics);
    brk_metrics_destroy (&metrics);
    cr_expect_null (metrics);
    mdl_metrics_destroy (&registry);
}

Test (brk_metrics, actor_registers_and_mirrors_the_queue, .timeout = 30)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    char dir [] = "/tmp/brk_metrics_actor_XXXXXX";
    cr_assert_not_null (mkdtemp (dir));
    mdl_metrics_t *registry = mdl_metrics_new ();
    cr_assert_not_null (registry);
    brk_server_config_t config;
    brk_server_config_defaults (&config);
    config.data_dir = dir;
    config.metrics = registry;
    zactor_t *broker = zactor_new (brk_server, &config);
    cr_assert_not_null (broker);
    zstr_send (broker, "STATUS");
    int status = -1;
    cr_assert_eq (zsock_recv (broker, "i", &status), 0);
    cr_assert_eq (status, BRK_SERVER_OK);
    //  Registered and collected once at start
    cr_expect_eq (s_rendered (registry, "mandrill_broker_published_total"), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_journal_healthy"), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_build_info{program=\"broker\",version=\""
                              MANDRILL_VERSION "\"}"), 1);

    zstr_sendx (broker, "BIND", "frontend", "tcp://127.0.0.1:*", NULL);
    int port = -1;
    cr_assert_eq (zsock_recv (broker, "i", &port), 0);
    cr_assert_gt (port, 0);
    zsock_t *client = zsock_new (ZMQ_DEALER);
    zsock_set_rcvtimeo (client, 5000);
    zsock_set_linger (client, 0);
    cr_assert_eq (zsock_connect (client, "tcp://127.0.0.1:%d", port), 0);
    const char *body = "{\"messages\":["
        "{\"message_id\":\"00000000-0000-4000-8000-000000000001\",\"instance_name\":\"cattle-1\"},"
        "{\"message_id\":\"00000000-0000-4000-8000-000000000002\",\"instance_name\":\"cattle-2\"},"
        "{\"message_id\":\"00000000-0000-4000-8000-000000000003\",\"instance_name\":\"cattle-3\"}]}";
    cr_assert_eq (mmp_send (client, NULL, MMP_PUBLISH, body, strlen (body)), 0);
    mmp_msg_t reply;
    mmp_msg_init (&reply);
    cr_assert_eq (mmp_recv (client, true, NULL, MMP_FROM_BROKER, &reply, NULL), 0);
    cr_expect_eq (reply.command, MMP_PUBACK);
    mmp_msg_reset (&reply);

    int64_t start = zclock_mono ();
    //  The age is 0 when the collect ran in the publish's millisecond
    while ((s_rendered (registry, "mandrill_broker_published_total") < 3
            || s_rendered (registry, "mandrill_broker_oldest_unacked_age_seconds") <= 0)
    &&     zclock_mono () - start < 10000)
        zclock_sleep (50);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_published_total"), 3);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_messages{state=\"ready\"}"), 3);
    cr_expect_gt (s_rendered (registry, "mandrill_broker_oldest_unacked_age_seconds"), 0);
    cr_expect_gt (s_rendered (registry, "mandrill_broker_journal_disk_bytes"), 0);
    cr_expect_gt (s_rendered (registry, "mandrill_broker_journal_fsync_duration_seconds_count"), 0,
                  "the PUBACK waited for a timed fsync");

    zsock_destroy (&client);
    zactor_destroy (&broker);
    mdl_metrics_destroy (&registry);
    char command [128];
    snprintf (command, sizeof command, "rm -rf '%s'", dir);
    cr_expect_eq (system (command), 0);
}

static uint64_t s_leased;      //  The last delivery id s_lease saw

static void
s_lease (void *arg, brk_worker_t *worker, uint64_t delivery_id, const brk_msg_t *msg,
         int64_t attempt)
{
    (void) arg; (void) worker; (void) msg; (void) attempt;
    s_leased = delivery_id;
}

Test (brk_metrics, restart_groups_get_their_series, .timeout = 10)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    int64_t now = 1000000, wall = INT64_C (1796040000000);
    brk_policy_t *policy = brk_policy_new (mdl_clock_manual (&now), mdl_clock_manual (&wall));
    cr_assert_not_null (policy);
    char err [256];
    cr_assert_eq (brk_policy_add_spec (policy, "web:web-*:2", err, sizeof err), 0, "%s", err);
    //  Weekdays 14:00-16:00 UTC; the wall clock says Monday 2026-11-30 12:00 UTC
    brk_group_config_t night;
    brk_group_config_defaults (&night, "db", "db-*");
    snprintf (night.zone, sizeof night.zone, "UTC");
    night.windows [0].days = 0x1f;
    night.windows [0].start_min = 14 * 60;
    night.windows [0].end_min = 16 * 60;
    night.window_count = 1;
    cr_assert_eq (brk_policy_add_group (policy, &night, err, sizeof err), 0, "%s", err);
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    brk_queue_t *queue = brk_queue_new (&config, mdl_clock_manual (&now));
    cr_assert_not_null (queue);
    cr_assert_eq (brk_queue_set_policy (queue, policy), 0);
    brk_store_t *store = brk_store_memory_new (1);
    cr_assert_not_null (store);
    mdl_metrics_t *registry = mdl_metrics_new ();
    mdl_metrics_set_collect_interval (registry, 0);
    brk_metrics_t *metrics = brk_metrics_new (registry);
    cr_assert_not_null (metrics);
    cr_assert_eq (brk_metrics_attach (metrics, queue, store, NULL, now), 0);

    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_limit{group=\"web\"}"), 2);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_limit{group=\"default\"}"), -1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_paused{group=\"web\"}"), 0);
    cr_expect_eq (s_rendered (registry,
                  "mandrill_broker_group_restarts_in_progress{group=\"web\"}"), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_waiting{group=\"web\"}"), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_journal_healthy"), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_requests_in_doubt"), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_requests_in_doubt{group=\"web\"}"), 0);

    //  A started restart whose worker is lost: in doubt, in web
    const char *id = "00000000-0000-4000-8000-000000000001";
    const char *json = "{\"message_id\":\"00000000-0000-4000-8000-000000000001\","
                       "\"instance_name\":\"x\",\"hostname\":\"web-1.example.net\"}";
    cr_assert_eq (brk_queue_publish (queue, id, json, strlen (json), 0), 0);
    brk_worker_t *worker = brk_queue_worker_add (queue, "w", 1, NULL);
    s_leased = 0;
    cr_assert_eq (brk_queue_dispatch (queue, s_lease, NULL), 1);
    cr_assert_eq (brk_queue_started (queue, s_leased), BRK_OK);
    brk_queue_worker_remove (queue, &worker, "lost");
    cr_expect_eq (mdl_metrics_collect (registry, now), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_requests_in_doubt"), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_requests_in_doubt{group=\"web\"}"), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_requests_in_doubt{group=\"db\"}"), 0);

    cr_assert_eq (brk_policy_pause (policy, "web", "test"), 0);
    cr_expect_eq (mdl_metrics_collect (registry, now), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_paused{group=\"web\"}"), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_paused{group=\"default\"}"), 0);

    //  Windows: web has none (always open); db opens at 14:00 UTC
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_window_open{group=\"web\"}"), 1);
    cr_expect_eq (s_rendered (registry,
                  "mandrill_broker_group_next_open_timestamp_seconds{group=\"web\"}"), 0);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_window_open{group=\"db\"}"), 0);
    cr_expect_eq (s_rendered (registry,
                  "mandrill_broker_group_next_open_timestamp_seconds{group=\"db\"}"),
                  1796040000 + 2 * 3600);
    wall += (int64_t) 2 * 3600 * 1000;
    cr_expect_eq (mdl_metrics_collect (registry, now), 1);
    cr_expect_eq (s_rendered (registry, "mandrill_broker_group_window_open{group=\"db\"}"), 1);
    cr_expect_eq (s_rendered (registry,
                  "mandrill_broker_group_next_open_timestamp_seconds{group=\"db\"}"), 0);

    brk_metrics_destroy (&metrics);
    mdl_metrics_destroy (&registry);
    brk_store_destroy (&store);
    brk_queue_destroy (&queue);
    brk_policy_destroy (&policy);
}
