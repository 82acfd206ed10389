/*  Tests for the worker's --allow-hosts rule (wrk_jobs_deliver): a delivery for a
    host outside every glob is never saved nor restarted, only NACKed with
    the reason host_not_allowed. Recording effects, a manual clock. */
#include <criterion/criterion.h>
#include <string.h>

#include "mdl_log.h"
#include "wrk_jobs.h"

static int s_saves, s_restarts, s_acks;
static int s_nacks;
static uint64_t s_nacked [8];
static char s_reason [64];

static void s_extend (void *arg, const uint64_t *ids, size_t count) { (void) arg; (void) ids; (void) count; }
static void s_ack (void *arg, const uint64_t *ids, size_t count) { (void) arg; (void) ids; (void) count; s_acks++; }
static void
s_nack (void *arg, const uint64_t *ids, size_t count, const char *reason)
{
    (void) arg;
    for (size_t i = 0; i < count && s_nacks < 8; i++)
        s_nacked [s_nacks++] = ids [i];
    snprintf (s_reason, sizeof s_reason, "%s", reason);
}
//  PROGRESS [started] ids, answered ok by s_flush as a broker would
static uint64_t s_started [8];
static size_t s_started_count;
static void
s_progress (void *arg, const uint64_t *ids, size_t count, unsigned steps)
{
    (void) arg;
    for (size_t i = 0; i < count && steps == MMP_STEP_STARTED && s_started_count < 8; i++)
        s_started [s_started_count++] = ids [i];
}
static int s_save (void *arg, const wrk_job_t *job) { (void) arg; (void) job; s_saves++; return 0; }
static int s_restart (void *arg, const wrk_job_t *job) { (void) arg; (void) job; s_restarts++; return 0; }
static void s_kill (void *arg, const wrk_job_t *job) { (void) arg; (void) job; }
static double s_random (void *arg) { (void) arg; return 0.5; }

//  Flush, then answer the starts (the restarts run on PROGRESSED ok)
static void
s_flush (wrk_jobs_t *jobs)
{
    wrk_jobs_flush (jobs);
    mmp_msg_t reply;
    memset (&reply, 0, sizeof reply);
    reply.command = MMP_PROGRESSED;
    reply.ids = s_started;
    reply.id_count = s_started_count;
    wrk_jobs_reply (jobs, &reply);
    s_started_count = 0;
    wrk_jobs_flush (jobs);
}

static mmp_delivery_t
s_delivery (uint64_t id, const char *message_id, const char *hostname)
{
    mmp_delivery_t delivery;
    memset (&delivery, 0, sizeof delivery);
    delivery.delivery_id = id;
    delivery.attempt = 1;
    delivery.deadline_ms = 10000;
    delivery.message.message_id = message_id;
    delivery.message.instance_name = "cattle-ab12";
    delivery.message.hostname = hostname;
    return delivery;
}

Test (wrk_allow, hosts_outside_every_glob_are_nacked_never_run, .timeout = 10)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    int64_t now = 1000;
    wrk_config_t config;
    wrk_config_defaults (&config);
    config.restart_mode = WRK_RESTART_EXTERNAL;
    static const char *globs [] = { "*.prod.example.net", "db-?.example.net" };
    config.allow_hosts = globs;
    config.allow_host_count = 2;
    wrk_effects_t effects = { NULL, s_extend, s_ack, s_nack, s_progress, s_save, s_restart, s_kill, NULL, NULL, NULL, NULL };
    mdl_random_t random = { s_random, NULL };
    wrk_jobs_t *jobs = wrk_jobs_new (&config, &effects, mdl_clock_manual (&now), random);
    cr_assert_not_null (jobs);

    mmp_delivery_t allowed = s_delivery (1, "00000000-0000-4000-8000-000000000001", "web-1.PROD.example.net");
    mmp_delivery_t also = s_delivery (2, "00000000-0000-4000-8000-000000000002", "db-3.example.net");
    mmp_delivery_t denied = s_delivery (3, "00000000-0000-4000-8000-000000000003", "evil.example.net");
    mmp_delivery_t near = s_delivery (4, "00000000-0000-4000-8000-000000000004", "db-33.example.net");
    cr_assert_eq (wrk_jobs_deliver (jobs, &allowed), 0);
    cr_assert_eq (wrk_jobs_deliver (jobs, &also), 0);
    cr_assert_eq (wrk_jobs_deliver (jobs, &denied), 0);
    cr_assert_eq (wrk_jobs_deliver (jobs, &near), 0);
    s_flush (jobs);
    cr_expect_eq (s_saves, 2, "only allowed hosts are saved");
    cr_expect_eq (s_restarts, 2, "only allowed hosts are restarted");
    cr_assert_eq (s_nacks, 2);
    cr_expect_eq (s_nacked [0] + s_nacked [1], 3 + 4);
    cr_expect_str_eq (s_reason, "host_not_allowed");
    cr_expect_eq (wrk_jobs_size (jobs), 2);
    wrk_jobs_destroy (&jobs);
}

Test (wrk_allow, no_globs_allow_every_host, .timeout = 10)
{
    mdl_log_set_level (MDL_LOG_ERROR);
    int64_t now = 1000;
    s_saves = s_restarts = s_nacks = 0;
    wrk_config_t config;
    wrk_config_defaults (&config);
    config.restart_mode = WRK_RESTART_EXTERNAL;
    wrk_effects_t effects = { NULL, s_extend, s_ack, s_nack, s_progress, s_save, s_restart, s_kill, NULL, NULL, NULL, NULL };
    mdl_random_t random = { s_random, NULL };
    wrk_jobs_t *jobs = wrk_jobs_new (&config, &effects, mdl_clock_manual (&now), random);
    cr_assert_not_null (jobs);
    mmp_delivery_t any = s_delivery (1, "00000000-0000-4000-8000-000000000001", "anything.example.org");
    cr_assert_eq (wrk_jobs_deliver (jobs, &any), 0);
    s_flush (jobs);
    cr_expect_eq (s_restarts, 1);
    cr_expect_eq (s_nacks, 0);
    wrk_jobs_destroy (&jobs);
}
