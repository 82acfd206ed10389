/*  Tests for brk_policy (and the queue under a policy), on manual clocks:
    s_now is the monotonic clock of queue and policy, s_wall the wall clock
    that decides time windows and stamps last restarts. One rule, one test;
    at about 1,000 lines the file is over the house's 800 because each rule
    is tested through the queue that enforces it, with the same helpers. */
#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "brk_policy.h"
#include "brk_queue.h"

static int64_t s_now;
static int64_t s_wall;
static brk_policy_t *s_policy;
static brk_queue_t *s_queue;

typedef struct {
    brk_worker_t *worker;
    uint64_t delivery_id;
    char message_id [37];
    int64_t attempt;
    bool in_doubt;
    bool open;
    char host [64];
} s_delivery_t;

#define S_MAX_DELIVERIES 20000
static s_delivery_t s_deliveries [S_MAX_DELIVERIES];
static size_t s_delivered;
static int s_events [BRK_EVENT_COUNT];
static char s_last_reason [256];    //  Of the last group_paused

static void
s_event (void *arg, const brk_event_info_t *info)
{
    (void) arg;
    s_events [info->event]++;
    if (info->event == BRK_EVENT_GROUP_PAUSED)
        snprintf (s_last_reason, sizeof s_last_reason, "%s", info->reason ? info->reason : "");
}

static void
s_deliver (void *arg, brk_worker_t *worker, uint64_t delivery_id,
           const brk_msg_t *msg, int64_t attempt)
{
    (void) arg;
    cr_assert_lt (s_delivered, S_MAX_DELIVERIES);
    s_delivery_t *delivery = &s_deliveries [s_delivered++];
    delivery->worker = worker;
    delivery->delivery_id = delivery_id;
    snprintf (delivery->message_id, sizeof delivery->message_id, "%s", brk_msg_id (msg));
    delivery->attempt = attempt;
    delivery->in_doubt = brk_queue_msg_in_doubt (msg);
    delivery->open = true;
    const char *json = brk_msg_json (msg, NULL);
    const char *host = strstr (json, "\"hostname\":\"");
    cr_assert_not_null (host);
    host += 12;
    size_t len = strcspn (host, "\"");
    snprintf (delivery->host, sizeof delivery->host, "%.*s", (int) len, host);
}

static int64_t s_utc (int year, int month, int day, int hour, int minute);

//  For requests without a hostname in their JSON.
static void
s_deliver_any (void *arg, brk_worker_t *worker, uint64_t delivery_id,
               const brk_msg_t *msg, int64_t attempt)
{
    (void) arg; (void) worker; (void) delivery_id; (void) msg; (void) attempt;
    s_delivered++;
}

static void
s_make_policy (void)
{
    s_now = 1000000;
    //  Monday 2026-11-30 12:00:00 UTC
    s_wall = INT64_C (1796040000000);
    s_policy = brk_policy_new (mdl_clock_manual (&s_now), mdl_clock_manual (&s_wall));
    cr_assert_not_null (s_policy);
}

static void
s_make_queue (void)
{
    s_delivered = 0;
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    config.ack_deadline_ms = 10000;
    config.max_attempts = 1000;
    config.backoff_base_ms = 0;
    config.backoff_max_ms = 0;
    config.heartbeat_ms = 1000000000;
    s_queue = brk_queue_new (&config, mdl_clock_manual (&s_now));
    cr_assert_not_null (s_queue);
    cr_assert_eq (brk_queue_set_policy (s_queue, s_policy), 0);
    memset (s_events, 0, sizeof s_events);
    brk_queue_set_event_handler (s_queue, s_event, NULL);
    brk_queue_set_events_enabled (s_queue, true);
}

static void
s_teardown (void)
{
    brk_queue_destroy (&s_queue);
    brk_policy_destroy (&s_policy);
}

static void
s_id (int n, char *id)
{
    snprintf (id, 37, "00000000-0000-4000-8000-%012d", n);
}

static void
s_publish (int n, const char *host)
{
    char id [37], json [256];
    s_id (n, id);
    snprintf (json, sizeof json,
              "{\"message_id\":\"%s\",\"instance_name\":\"x\",\"hostname\":\"%s\"}", id, host);
    cr_assert_eq (brk_queue_publish (s_queue, id, json, strlen (json), 0), 0);
}

static size_t
s_dispatch (void)
{
    return brk_queue_dispatch (s_queue, s_deliver, NULL);
}

static void
s_add (const char *spec)
{
    char err [256];
    int rc = brk_policy_add_spec (s_policy, spec, err, sizeof err);
    cr_assert_eq (rc, 0, "%s: %s", spec, err);
}

//  --------------------------------------------------------------------------
//  Parsing

Test (policy, simple_form, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    s_add ("zone-a:*.zone-a.example.net:2");
    s_add ("zone-b:*.zone-b.example.net:25%:10");
    cr_assert_eq (brk_policy_group_count (s_policy), 3);
    cr_assert_str_eq (brk_policy_group_config (s_policy, 2)->name, "default");
    brk_group_stats_t stats;
    brk_policy_group_stats (s_policy, 1, &stats);
    cr_assert_eq (stats.cap, 2, "25 %% of 10 is 2 (floor)");
    brk_policy_group_stats (s_policy, 2, &stats);
    cr_assert_eq (stats.cap, -1);

    const char *bad [] = {
        "", "zone", "zone:*", "zone:*:0", "zone:*:x", "zone:*:2:5", "zone:*:25%",
        "zone:*:150%:10", "zone:*:25%:0", ":*:2", "zone::2", "zone:*:2:3:4",
        "zone-a:*:3", NULL
    };
    for (int i = 0; bad [i]; i++) {
        char err [256] = "";
        cr_expect_eq (brk_policy_add_spec (s_policy, bad [i], err, sizeof err), -1,
                      "'%s' accepted", bad [i]);
        cr_expect_neq (err [0], 0, "'%s' without an error text", bad [i]);
    }
    cr_assert_eq (brk_policy_group_count (s_policy), 3);

    //  A glob longer than a group holds is refused, not cut short (a
    //  shorter glob would match other hosts)
    char spec [400] = "long:";
    memset (spec + 5, 'a', 300);
    snprintf (spec + 305, sizeof spec - 305, "*:2");
    char err [256] = "";
    cr_expect_eq (brk_policy_add_spec (s_policy, spec, err, sizeof err), -1);
    cr_expect (strstr (err, "GLOB at most 255"), "%s", err);
    cr_assert_eq (brk_policy_group_count (s_policy), 3);
}

Test (policy, match_first_wins_case_folded, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    s_add ("web:web-*.example.net:1");
    s_add ("all-example:*.example.net:5");
    char target [64];
    brk_policy_fold ("WEB-1.Example.NET", target, sizeof target);
    cr_assert_str_eq (target, "web-1.example.net");
    cr_assert_eq (brk_policy_group_of (s_policy, target), 0);
    cr_assert_eq (brk_policy_group_of (s_policy, "db-1.example.net"), 1);
    cr_assert_eq (brk_policy_group_of (s_policy, "db-1.example.org"), 2);
}

static const char *s_good_file =
    "#   Two zones and a quiet night\n"
    "policy\n"
    "    coalesce = 0\n"
    "groups\n"
    "    zone-a\n"
    "        match = \"*.zone-a.example.net\"\n"
    "        max = 2\n"
    "        ramp = 1\n"
    "        max_errors = 3\n"
    "        error_window = 10m\n"
    "        min_interval = 1h\n"
    "        max_age = 2h\n"
    "        restart_timeout = 90s\n"
    "    zone-b\n"
    "        match = \"*.zone-b.example.net\"\n"
    "        max = \"20%\"\n"
    "        size = 50\n"
    "        zone = \"Europe/Berlin\"\n"
    "        window = \"mon-fri 22:00-06:00\"\n"
    "        window = \"sat,sun 00:00-24:00\"\n"
    "    default\n"
    "        max = 1\n";

Test (policy, file_good, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    char err [256] = "";
    cr_assert_eq (brk_policy_load_text (s_policy, s_good_file, err, sizeof err), 0, "%s", err);
    cr_assert_not (brk_policy_coalesce (s_policy));
    cr_assert_eq (brk_policy_group_count (s_policy), 3);
    const brk_group_config_t *a = brk_policy_group_config (s_policy, 0);
    cr_assert_str_eq (a->name, "zone-a");
    cr_assert_eq (a->max, 2);
    cr_assert (a->ramp);
    cr_assert_eq (a->max_errors, 3);
    cr_assert_eq (a->error_window_ms, 600000);
    cr_assert_eq (a->min_interval_ms, 3600000);
    cr_assert_eq (a->max_age_ms, 7200000);
    cr_assert_eq (a->restart_timeout_ms, 90000);
    const brk_group_config_t *b = brk_policy_group_config (s_policy, 1);
    cr_assert_eq (b->window_count, 2);
    cr_assert_eq (b->windows [0].days, 0x1f);
    cr_assert_eq (b->windows [0].start_min, 22 * 60);
    cr_assert_eq (b->windows [0].end_min, 6 * 60);
    cr_assert_eq (b->windows [1].days, 0x60);
    cr_assert_str_eq (b->zone, "Europe/Berlin");
    brk_group_stats_t stats;
    brk_policy_group_stats (s_policy, 1, &stats);
    cr_assert_eq (stats.max, 10);
    brk_policy_group_stats (s_policy, 2, &stats);
    cr_assert_eq (stats.max, 1, "settings of default apply");

    //  And from a file on disk
    char path [] = "/tmp/mandrill-policy-XXXXXX";
    int fd = mkstemp (path);
    cr_assert_geq (fd, 0);
    cr_assert_eq (write (fd, s_good_file, strlen (s_good_file)), (ssize_t) strlen (s_good_file));
    close (fd);
    brk_policy_t *other = brk_policy_new (mdl_clock_manual (&s_now), mdl_clock_manual (&s_wall));
    cr_assert_eq (brk_policy_load (other, path, err, sizeof err), 0, "%s", err);
    cr_assert_eq (brk_policy_group_count (other), 3);
    brk_policy_destroy (&other);
    unlink (path);
}

Test (policy, file_bad, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    struct {
        const char *text;
        const char *says;
    } cases [] = {
        { "groups\n    a\n        match = \"*\"\n        maxx = 2\n", "groups/a/maxx" },
        { "groups\n    a\n        match = \"*\"\n        max = two\n", "groups/a/max" },
        { "groups\n    a\n        match = \"*\"\n        max = \"20%\"\n", "size" },
        { "groups\n    a\n        max = 2\n", "groups/a: no 'match'" },
        { "groups\n    a\n        match = \"*\"\n        zone = \"Mars/Olympus\"\n",
          "groups/a/zone" },
        { "groups\n    a\n        match = \"*\"\n        window = \"someday 9-5\"\n",
          "groups/a/window" },
        { "groups\n    a\n        match = \"*\"\n        error_window = 5y\n",
          "groups/a/error_window" },
        { "groups\n    a\n      match = \"*\"\n", "line 3" },
        { "groups\n    a\n            match = \"*\"\n", "line 3" },
        { "policy\n    coalesce = maybe\n", "policy/coalesce" },
        { "rules\n    x = 1\n", "rules" },
        { "groups\n    a\n        match = \"*\n", "ZPL" },
        { "groups\n    a b c\n", "ZPL" },
        { "groups\n    a\n        match = \"*\"\n    a\n        match = \"*\"\n", "twice" },
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases [0]; i++) {
        char err [256] = "";
        cr_expect_eq (brk_policy_load_text (s_policy, cases [i].text, err, sizeof err), -1,
                      "case %zu accepted", i);
        cr_expect (strstr (err, cases [i].says), "case %zu: '%s' does not name '%s'",
                   i, err, cases [i].says);
    }
    cr_assert_eq (brk_policy_group_count (s_policy), 1, "a bad file changes nothing");
    //  A group from the command line and again in the file
    s_add ("b:*.b:1");
    char twice [256] = "";
    cr_assert_eq (brk_policy_load_text (s_policy, "groups\n    a\n        match = \"*.a\"\n"
                                        "    b\n        match = \"*.b\"\n",
                                        twice, sizeof twice), -1);
    cr_assert (strstr (twice, "groups/b: declared twice"), "%s", twice);
    cr_assert_eq (brk_policy_group_count (s_policy), 2, "not even group a was added");
    char err [256] = "";
    cr_assert_eq (brk_policy_load (s_policy, "/nonexistent/policy.cfg", err, sizeof err), -1);
    cr_assert (strstr (err, "/nonexistent/policy.cfg"));
}

Test (policy, reload_keeps_state, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    const char *before =
        "groups\n    a\n        match = \"*.a\"\n        max = 1\n"
        "        max_errors = 3\n";
    const char *after =
        "groups\n    a\n        match = \"*.a\"\n        max = 3\n"
        "        max_errors = 2\n";
    char err [256] = "";
    cr_assert_eq (brk_policy_load_text (s_policy, before, err, sizeof err), 0, "%s", err);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    for (int i = 1; i <= 4; i++) {
        char host [32];
        snprintf (host, sizeof host, "h%d.a", i);
        s_publish (i, host);
    }
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 0, "x"), BRK_OK);
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_eq (brk_policy_reload (s_policy, NULL, after, err, sizeof err), 0, "%s", err);
    cr_assert_eq (s_dispatch (), 2, "the new cap counts the open lease");
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_eq (stats.in_flight, 3);
    cr_assert_eq (stats.failures, 1, "failures survive a reload");
    //  One more failure: the new max_errors of 2 trips
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [1].delivery_id, 0, "x"), BRK_OK);
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert (stats.paused);
    //  What a reload may not change
    const char *moved = "groups\n    a\n        match = \"*.b\"\n";
    const char *added = "groups\n    a\n        match = \"*.a\"\n    b\n        match = \"*.b\"\n";
    const char *broken = "groups\n    a\n        match = \"*.a\"\n        max = -1\n";
    cr_assert_eq (brk_policy_reload (s_policy, NULL, moved, err, sizeof err), -1);
    cr_assert (strstr (err, "match"), "%s", err);
    cr_assert_eq (brk_policy_reload (s_policy, NULL, added, err, sizeof err), -1);
    cr_assert_eq (brk_policy_reload (s_policy, NULL, broken, err, sizeof err), -1);
    cr_assert (strstr (err, "groups/a/max"), "%s", err);
    cr_assert_eq (brk_policy_group_config (s_policy, 0)->max, 3, "unchanged by a bad reload");
}

//  --------------------------------------------------------------------------
//  Windows

static int64_t
s_utc (int year, int month, int day, int hour, int minute)
{
    struct tm tm = { .tm_year = year - 1900, .tm_mon = month - 1, .tm_mday = day,
                     .tm_hour = hour, .tm_min = minute };
    return (int64_t) timegm (&tm) * 1000;
}

Test (policy, window_across_midnight, .timeout = 10)
{
    brk_window_t window;
    cr_assert_eq (brk_window_parse_days ("mon-fri", &window.days), 0);
    cr_assert_eq (brk_window_parse_hours ("22:00-02:00", &window.start_min, &window.end_min), 0);
    bool open;
    int64_t until;
    //  Friday 2026-12-04 23:00 UTC: open until Saturday 02:00
    cr_assert_eq (brk_window_state ("UTC", &window, 1, s_utc (2026, 12, 4, 23, 0), &open, &until), 0);
    cr_assert (open);
    cr_assert_eq (until, s_utc (2026, 12, 5, 2, 0));
    //  Saturday 01:00 belongs to Friday's window
    brk_window_state ("", &window, 1, s_utc (2026, 12, 5, 1, 0), &open, &until);
    cr_assert (open);
    //  Saturday 23:00: closed (Saturday not listed) until Monday 22:00
    brk_window_state ("", &window, 1, s_utc (2026, 12, 5, 23, 0), &open, &until);
    cr_assert_not (open);
    cr_assert_eq (until, s_utc (2026, 12, 7, 22, 0));
    //  Monday 01:00: Sunday's night is not listed
    brk_window_state ("", &window, 1, s_utc (2026, 12, 7, 1, 0), &open, &until);
    cr_assert_not (open);
    //  Days wrap: "sat-mon"
    unsigned days;
    cr_assert_eq (brk_window_parse_days ("sat-mon", &days), 0);
    cr_assert_eq (days, 0x61);
    cr_assert_eq (brk_window_parse_days ("funday", &days), -1);
    int a, b;
    cr_assert_eq (brk_window_parse_hours ("25:00-26:00", &a, &b), -1);
    cr_assert_eq (brk_window_parse_hours ("09:00-09:00", &a, &b), -1);
    cr_assert_eq (brk_window_parse_hours ("0900", &a, &b), -1);
}

Test (policy, window_in_another_zone, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "east", "*.east.example.net");
    snprintf (config.zone, sizeof config.zone, "America/New_York");
    config.windows [0].days = 0x1f;
    config.windows [0].start_min = 9 * 60;
    config.windows [0].end_min = 17 * 60;
    config.window_count = 1;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0, "%s", err);
    //  Tuesday 2026-12-01 13:30 UTC is 08:30 EST: closed until 14:00 UTC
    s_wall = s_utc (2026, 12, 1, 13, 30);
    cr_assert_eq (brk_policy_group_check (s_policy, 0), BRK_POLICY_WINDOW);
    brk_group_stats_t stats;
    brk_policy_group_stats (s_policy, 0, &stats);
    cr_assert_not (stats.window_open);
    cr_assert_eq (stats.next_open_wall, s_utc (2026, 12, 1, 14, 0));
    s_wall = s_utc (2026, 12, 1, 14, 0);
    cr_assert_eq (brk_policy_group_check (s_policy, 0), BRK_POLICY_OK);
    //  21:59 UTC = 16:59 EST open; 22:00 UTC closed
    s_wall = s_utc (2026, 12, 1, 21, 59);
    cr_assert_eq (brk_policy_group_check (s_policy, 0), BRK_POLICY_OK);
    s_wall = s_utc (2026, 12, 1, 22, 0);
    cr_assert_eq (brk_policy_group_check (s_policy, 0), BRK_POLICY_WINDOW);
    //  The process's own TZ is left alone
    cr_assert_null (getenv ("TZ"));
}

//  --------------------------------------------------------------------------
//  The queue under a policy

Test (policy, cap_holds, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    s_add ("zone-a:*.zone-a.example.net:2");
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w1", 10, NULL);
    brk_queue_worker_add (s_queue, "w2", 10, NULL);
    for (int i = 0; i < 5; i++) {
        char host [64];
        snprintf (host, sizeof host, "h%d.zone-a.example.net", i);
        s_publish (i + 1, host);
    }
    s_publish (10, "other.example.org");
    cr_assert_eq (s_dispatch (), 3, "two of zone-a and the default group's one");
    cr_assert_eq (s_dispatch (), 0);
    brk_group_stats_t stats;
    cr_assert_eq (brk_queue_group_stats (s_queue, 0, &stats), 0);
    cr_assert_eq (stats.in_flight, 2);
    cr_assert_eq (stats.cap, 2);
    cr_assert_eq (stats.waiting, 3);
    size_t first = s_deliveries [0].host [0] == 'h' ? 0 : 1;
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [first].delivery_id), BRK_OK);
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_eq (s_dispatch (), 0);
}

Test (policy, ramp_doubles, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "r", "*");
    config.max = 5;
    config.ramp = true;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 100, NULL);
    for (int i = 0; i < 20; i++) {
        char host [64];
        snprintf (host, sizeof host, "h%d", i);
        s_publish (i + 1, host);
    }
    size_t expect [] = { 1, 2, 5, 5, 5 };   //  Doubles after each success
    for (size_t round = 0; round < 5; round++) {
        size_t from = s_delivered;
        cr_assert_eq (s_dispatch (), expect [round], "round %zu", round);
        for (size_t i = from; i < s_delivered; i++)
            cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [i].delivery_id), BRK_OK);
    }
}

Test (policy, error_stop_and_resume, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*");
    config.max = 3;
    config.max_errors = 2;
    config.error_window_ms = 60000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 100, NULL);
    for (int i = 0; i < 6; i++) {
        char host [64];
        snprintf (host, sizeof host, "h%d", i);
        s_publish (i + 1, host);
    }
    cr_assert_eq (s_dispatch (), 3);
    //  One failure, then one 61 s later: not within the window
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [0].delivery_id, 0, "boom"), BRK_OK);
    s_now += 61000;
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [1].delivery_id, 0, "boom"), BRK_OK);
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_not (stats.paused);
    cr_assert_eq (stats.failures, 1);
    cr_assert_eq (s_dispatch (), 2);
    //  A second failure within the window: the group stops itself
    cr_assert_eq (brk_queue_nack (s_queue, s_deliveries [3].delivery_id, 0, "boom"), BRK_OK);
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert (stats.paused);
    cr_assert (strstr (stats.paused_reason, "error stop"), "%s", stats.paused_reason);
    cr_assert_eq (s_events [BRK_EVENT_GROUP_PAUSED], 1);
    cr_assert (strstr (s_last_reason, "g: error stop"), "%s", s_last_reason);
    cr_assert_eq (s_dispatch (), 0, "paused: nothing new");
    //  Running leases finish
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [2].delivery_id), BRK_OK);
    cr_assert_eq (s_dispatch (), 0);
    cr_assert_eq (brk_policy_resume (s_policy, "g"), 0);
    cr_assert_eq (s_dispatch (), 2);
    cr_assert_eq (brk_policy_resume (s_policy, "nope"), -1);
}

Test (policy, kill_switch, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "a");
    cr_assert_eq (s_dispatch (), 1);
    brk_policy_kill (s_policy, true);
    s_publish (2, "b");
    cr_assert_eq (s_dispatch (), 0);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK,
                  "a running lease finishes");
    cr_assert_eq (s_dispatch (), 0);
    cr_assert_eq (brk_policy_pause (s_policy, "default", "maintenance"), 0);
    brk_policy_kill (s_policy, false);
    cr_assert_eq (s_dispatch (), 0, "still paused by group");
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_str_eq (stats.paused_reason, "maintenance");
    brk_policy_resume (s_policy, "default");
    cr_assert_eq (s_dispatch (), 1);
}

Test (policy, window_holds_leases, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    const char *text =
        "groups\n    night\n        match = \"*\"\n        zone = \"Europe/Berlin\"\n"
        "        window = \"* 22:00-06:00\"\n";
    char err [256] = "";
    cr_assert_eq (brk_policy_load_text (s_policy, text, err, sizeof err), 0, "%s", err);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    //  Monday 2026-11-30 20:59 UTC is 21:59 in Berlin: closed
    s_wall = s_utc (2026, 11, 30, 20, 59);
    s_publish (1, "h");
    cr_assert_eq (s_dispatch (), 0);
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_not (stats.window_open);
    cr_assert_eq (stats.next_open_wall, s_utc (2026, 11, 30, 21, 0));
    cr_assert_eq (stats.waiting, 1);
    s_wall = s_utc (2026, 11, 30, 21, 0);
    cr_assert_eq (s_dispatch (), 1);
    //  05:00 UTC is 06:00 in Berlin: closed again; the open lease runs on
    s_wall = s_utc (2026, 12, 1, 5, 0);
    s_publish (2, "g");
    cr_assert_eq (s_dispatch (), 0);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
}

Test (policy, least_interval, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*");
    config.min_interval_ms = 3600000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "Host-1");
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    s_publish (2, "host-1");
    s_publish (3, "host-2");
    cr_assert_eq (s_dispatch (), 1, "host-1 waits out its interval, host-2 goes");
    cr_assert_str_eq (s_deliveries [1].host, "host-2");
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    s_now += 3599000;
    s_wall += 3599000;
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 0);
    s_now += 1000;
    s_wall += 1000;
    int64_t next = brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_geq (next, s_now);
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_str_eq (s_deliveries [2].host, "host-1");
}

Test (policy, stale_targets_are_forgotten, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    //  The longest least interval of any group decides
    char err [256] = "";
    cr_assert_eq (brk_policy_load_text (s_policy,
                                        "groups\n"
                                        "    g\n"
                                        "        match = \"*.g\"\n"
                                        "        min_interval = 1h\n"
                                        "    short\n"
                                        "        match = \"*.short\"\n"
                                        "        min_interval = 1m\n",
                                        err, sizeof err), 0, "%s", err);
    //  Looked up only, never leased: forgotten at once, found again after
    cr_assert_eq (brk_policy_group_of (s_policy, "seen.g"), 0);
    cr_assert_eq (brk_policy_group_of (s_policy, "other.example.net"), 2);
    cr_assert_eq (brk_policy_leased (s_policy, "h1.g", 0), 0);
    brk_policy_released (s_policy, 0, BRK_POLICY_SUCCESS);
    cr_assert_eq (brk_policy_leased (s_policy, "h2.short", 1), 0);
    brk_policy_released (s_policy, 1, BRK_POLICY_SUCCESS);
    cr_assert_eq (brk_policy_target_count (s_policy), 4);
    cr_assert_eq (brk_policy_forget_stale (s_policy), 2, "the two never leased");
    cr_assert_eq (brk_policy_target_count (s_policy), 2);
    cr_assert_eq (brk_policy_group_of (s_policy, "seen.g"), 0, "looked up again");
    cr_assert_eq (brk_policy_group_of (s_policy, "other.example.net"), 2);
    //  Within its least interval h1.g is kept, still waits, and is saved
    s_wall += 3599000;
    cr_assert_eq (brk_policy_forget_stale (s_policy), 2, "h2.short is kept as long as h1.g");
    cr_assert_eq (brk_policy_target_count (s_policy), 2);
    cr_assert_eq (brk_policy_target_check (s_policy, "h1.g", 0, 0, NULL), BRK_POLICY_INTERVAL);
    char *blob = brk_policy_serialise (s_policy);
    cr_assert_not_null (blob);
    cr_assert (strstr (blob, "target h1.g "), "%s", blob);
    free (blob);
    //  Once it passed, the stamp changes nothing: not saved even before
    //  the sweep, then forgotten
    s_wall += 1000;
    blob = brk_policy_serialise (s_policy);
    cr_assert_not_null (blob);
    cr_assert_null (strstr (blob, "target "), "%s", blob);
    free (blob);
    cr_assert_eq (brk_policy_forget_stale (s_policy), 2);
    cr_assert_eq (brk_policy_target_count (s_policy), 0);
    cr_assert_eq (brk_policy_target_check (s_policy, "h1.g", 0, 0, NULL), BRK_POLICY_OK);
}

Test (policy, without_a_least_interval_no_stamp_is_kept, .init = s_make_policy,
      .fini = s_teardown, .timeout = 10)
{
    for (int i = 0; i < 1000; i++) {
        char host [32];
        snprintf (host, sizeof host, "host-%d.example.net", i);
        cr_assert_eq (brk_policy_leased (s_policy, host, 0), 0);
        brk_policy_released (s_policy, 0, BRK_POLICY_SUCCESS);
    }
    //  Nothing to save even before the sweep forgets them
    char *blob = brk_policy_serialise (s_policy);
    cr_assert_not_null (blob);
    cr_assert_null (strstr (blob, "target "), "%s", blob);
    free (blob);
    cr_assert_eq (brk_policy_target_count (s_policy), 1000);
    cr_assert_eq (brk_policy_forget_stale (s_policy), 1000);
    cr_assert_eq (brk_policy_target_count (s_policy), 0);
}

Test (policy, max_age, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*");
    config.max_age_ms = 60000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    brk_policy_pause (s_policy, "g", NULL);
    s_publish (1, "a");
    s_now += 59000;
    s_publish (2, "b");
    s_now += 2000;
    brk_policy_resume (s_policy, "g");
    cr_assert_eq (s_dispatch (), 1, "b is young enough");
    cr_assert_str_eq (s_deliveries [0].host, "b");
    char id [37];
    s_id (1, id);
    brk_msg_t *msg = brk_queue_lookup (s_queue, id);
    cr_assert_not_null (msg);
    cr_assert_str_eq (brk_msg_dead_reason (msg), "max_age");
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 1);
    //  A paused group still dead-letters what turns too old
    brk_policy_pause (s_policy, "g", NULL);
    s_publish (3, "c");
    s_now += 60001;
    cr_assert_eq (s_dispatch (), 0);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.dead, 2);
}

Test (policy, one_lease_per_host_and_coalescing, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    s_add ("a:*.a:10");
    s_add ("b:*.b:10");
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "x.a");
    cr_assert_eq (s_dispatch (), 1);
    s_publish (2, "X.A");           //  Same target, folded: waits
    s_publish (3, "x.a");           //  Coalesced into 2
    cr_assert_eq (s_dispatch (), 0);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.coalesced, 1);
    cr_assert_eq (stats.ready, 1);
    cr_assert_eq (s_events [BRK_EVENT_COALESCED], 1);
    char leader [37], follower [37];
    s_id (2, leader);
    s_id (3, follower);
    cr_assert_str_eq (brk_queue_msg_coalesced_with (brk_queue_lookup (s_queue, follower)), leader);
    cr_assert_null (brk_queue_msg_coalesced_with (brk_queue_lookup (s_queue, leader)));
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    cr_assert_eq (s_dispatch (), 1);
    char id [37];
    s_id (2, id);
    cr_assert_str_eq (s_deliveries [1].message_id, id);
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.acked, 3, "the coalesced id completes with it");
    cr_assert_eq (stats.ready + stats.in_flight + stats.delayed, 0);
    cr_assert_eq (s_dispatch (), 0);
}

Test (policy, coalescing_off, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_policy_set_coalesce (s_policy, false);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "h");
    s_publish (2, "h");
    s_publish (3, "h");
    for (int i = 0; i < 3; i++) {
        cr_assert_eq (s_dispatch (), 1, "one at a time, round %d", i);
        cr_assert_eq (s_dispatch (), 0);
        cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [i].delivery_id), BRK_OK);
    }
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.coalesced, 0);
    cr_assert_eq (stats.acked, 3);
}

Test (policy, in_doubt_hold, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*");
    config.restart_timeout_ms = 60000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "h");
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_not (s_deliveries [0].in_doubt);
    s_now += 5000;
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    int64_t started = s_now;
    //  The lease runs out mid-restart
    s_now += 10000;
    brk_queue_tick (s_queue, NULL, NULL);
    s_publish (2, "h");             //  Same host: must not run beside the orphan
    s_publish (3, "other");
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_str_eq (s_deliveries [1].host, "other");
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_eq (stats.in_flight, 2, "the held restart keeps its slot");
    cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [1].delivery_id), BRK_OK);
    s_now = started + 59999;
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 0, "held until the restart's time limit");
    s_now = started + 60000;
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 1);
    char id [37];
    s_id (1, id);
    cr_assert_str_eq (s_deliveries [2].message_id, id);
    cr_assert (s_deliveries [2].in_doubt, "the next delivery says so");
    cr_assert_eq (s_events [BRK_EVENT_IN_DOUBT], 1);
    cr_assert_str_eq (brk_event_name (BRK_EVENT_IN_DOUBT), "in_doubt");
    cr_assert_eq (s_deliveries [2].attempt, 2);
    //  A finished restart is not in doubt
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [2].delivery_id), BRK_OK);
    cr_assert_eq (brk_queue_progress (s_queue, s_deliveries [2].delivery_id, BRK_STEP_RESTART),
                  BRK_OK);
    s_now += 10000;
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 1, "redelivered at once (no backoff here)");
    cr_assert_eq (brk_queue_started (s_queue, 12345), BRK_UNKNOWN);
}

Test (policy, in_doubt_worker_lost, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    s_make_queue ();
    brk_worker_t *worker = brk_queue_worker_add (s_queue, "w", 10, NULL);
    s_publish (1, "h");
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_eq (brk_queue_started (s_queue, s_deliveries [0].delivery_id), BRK_OK);
    brk_queue_worker_remove (s_queue, &worker, "killed");
    brk_queue_worker_add (s_queue, "w2", 10, NULL);
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 0);
    s_now += BRK_POLICY_RESTART_TIMEOUT_DEFAULT;
    brk_queue_tick (s_queue, NULL, NULL);
    cr_assert_eq (s_dispatch (), 1);
    cr_assert (s_deliveries [1].in_doubt);
}

Test (policy, coalesced_die_together, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*");
    config.max_age_ms = 1000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    brk_policy_kill (s_policy, true);
    s_publish (1, "h");
    s_publish (2, "h");
    s_now += 2000;
    brk_policy_kill (s_policy, false);
    cr_assert_eq (s_dispatch (), 0);
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.coalesced, 1);
    cr_assert_eq (stats.dead, 2, "the coalesced request goes with its leader");
    char id [37];
    s_id (2, id);
    cr_assert_str_eq (brk_msg_dead_reason (brk_queue_lookup (s_queue, id)), "max_age");
    //  A replayed follower stands on its own
    cr_assert_eq (brk_queue_replay (s_queue, id), 0);
    cr_assert_eq (s_dispatch (), 1);
    cr_assert_str_eq (s_deliveries [0].message_id, id);
}

Test (policy, held_until_durable, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    char id [37], json [200];
    s_id (1, id);
    snprintf (json, sizeof json, "{\"message_id\":\"%s\",\"instance_name\":\"cattle-1\"}", id);
    cr_assert_eq (brk_queue_publish (s_queue, id, json, strlen (json), 5), 0);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver_any, NULL), 0);
    brk_queue_release (s_queue, 5);
    cr_assert_eq (brk_queue_dispatch (s_queue, s_deliver_any, NULL), 1);
    //  No hostname: instance_name + ".example.net" is the target
    cr_assert_eq (brk_policy_target_check (s_policy, "cattle-1.example.net", 0, 0, NULL),
                  BRK_POLICY_OK);
    brk_group_stats_t stats;
    brk_queue_group_stats (s_queue, 0, &stats);
    cr_assert_eq (stats.in_flight, 1);
}

Test (policy, restore_keeps_one_lease_per_target, .init = s_make_policy, .fini = s_teardown,
      .timeout = 10)
{
    s_make_queue ();
    char json [200];
    for (int i = 1; i <= 2; i++) {
        char id [37];
        s_id (i, id);
        snprintf (json, sizeof json,
                  "{\"message_id\":\"%s\",\"instance_name\":\"x\",\"hostname\":\"h\"}", id);
        brk_restore_t restore = {
            .message_id = id, .json = json, .json_len = strlen (json),
            .published_ms = mdl_clock_wall (), .attempts = 1,
            .delivery_id = (UINT64_C (1) << 32) | (uint64_t) i
        };
        cr_assert_eq (brk_queue_restore (s_queue, &restore), 0);
    }
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.in_flight, 1, "the second recovered lease on h waits");
    cr_assert_eq (stats.ready, 1);
    brk_queue_worker_add (s_queue, "w", 10, NULL);
    cr_assert_eq (s_dispatch (), 0);
}

//  --------------------------------------------------------------------------
//  Durable state

Test (policy, serialise_restore, .init = s_make_policy, .fini = s_teardown, .timeout = 10)
{
    brk_group_config_t config;
    brk_group_config_defaults (&config, "g", "*.g");
    config.max_errors = 3;
    config.error_window_ms = 600000;
    config.min_interval_ms = 3600000;
    char err [256];
    cr_assert_eq (brk_policy_add_group (s_policy, &config, err, sizeof err), 0);
    cr_assert_eq (brk_policy_group_of (s_policy, "h1.g"), 0);
    cr_assert_eq (brk_policy_leased (s_policy, "h1.g", 0), 0);
    brk_policy_released (s_policy, 0, BRK_POLICY_FAILURE);
    s_now += 1000;
    cr_assert_eq (brk_policy_leased (s_policy, "h2.g", 0), 0);
    brk_policy_released (s_policy, 0, BRK_POLICY_FAILURE);
    brk_policy_pause (s_policy, "default", "night shift is off");
    brk_policy_kill (s_policy, true);
    char *blob = brk_policy_serialise (s_policy);
    cr_assert_not_null (blob);

    //  A new broker: other monotonic origin, 10 minutes later... minus a bit
    int64_t now2 = 5;
    int64_t wall2 = s_wall + 1000;
    brk_policy_t *other = brk_policy_new (mdl_clock_manual (&now2), mdl_clock_manual (&wall2));
    cr_assert_eq (brk_policy_add_group (other, &config, err, sizeof err), 0);
    cr_assert_eq (brk_policy_restore (other, blob, err, sizeof err), 0, "%s", err);
    cr_assert (brk_policy_killed (other));
    brk_group_stats_t stats;
    brk_policy_group_stats (other, 1, &stats);
    cr_assert (stats.paused);
    cr_assert_str_eq (stats.paused_reason, "night shift is off");
    brk_policy_group_stats (other, 0, &stats);
    cr_assert_eq (stats.failures, 2);
    cr_assert_not (stats.paused);
    //  One more failure trips the stop: the count survived
    brk_policy_kill (other, false);
    brk_policy_released (other, 0, BRK_POLICY_FAILURE);
    brk_policy_group_stats (other, 0, &stats);
    cr_assert (stats.paused);
    //  The last restart survived: the interval still holds
    brk_policy_resume (other, "g");
    cr_assert_eq (brk_policy_target_check (other, "h1.g", 0, 0, NULL), BRK_POLICY_INTERVAL);
    cr_assert_eq (brk_policy_target_check (other, "h3.g", 0, 0, NULL), BRK_POLICY_OK);
    //  Round trip is stable
    char *again = brk_policy_serialise (other);
    cr_assert_not_null (again);
    cr_assert (strstr (again, "target h1.g "));
    free (again);
    brk_policy_destroy (&other);
    free (blob);

    const char *bad [] = {
        "", "mandrill-policy 2\n", "hello\n", "mandrill-policy 1\nkill 3\n",
        "mandrill-policy 1\ngroup g 1\n", "mandrill-policy 1\ngroup g 0 2 5\n",
        "mandrill-policy 1\ntarget h\n", "mandrill-policy 1\nwhat 1\n", NULL
    };
    for (int i = 0; bad [i]; i++) {
        cr_expect_eq (brk_policy_restore (s_policy, bad [i], err, sizeof err), -1,
                      "blob %d accepted", i);
    }
    cr_assert (brk_policy_killed (s_policy), "a bad blob changes nothing");
}

//  --------------------------------------------------------------------------
//  Invariants under random traffic

static int64_t
s_group_cap (size_t group)
{
    brk_group_stats_t stats;
    brk_policy_group_stats (s_policy, group, &stats);
    return stats.max;
}

Test (policy, random_invariants, .init = s_make_policy, .fini = s_teardown, .timeout = 60)
{
    unsigned seed = (unsigned) time (NULL) ^ (unsigned) getpid ();
    const char *env = getenv ("MANDRILL_SEED");
    if (env)
        seed = (unsigned) strtoul (env, NULL, 10);
    printf ("random_invariants: seed %u (MANDRILL_SEED=%u to repeat)\n", seed, seed);
    fflush (stdout);
    srand (seed);
    s_add ("a:*.a:2");
    s_add ("b:*.b:3");
    s_add ("c:*.c:30%:10");
    s_make_queue ();
    brk_worker_t *workers [4];
    for (int i = 0; i < 4; i++) {
        char name [16];
        snprintf (name, sizeof name, "w%d", i);
        workers [i] = brk_queue_worker_add (s_queue, name, 3, NULL);
    }
    const char *zones [] = { "a", "b", "c", "d" };
    int published = 0;
    for (int step = 0; step < 3000; step++) {
        int op = rand () % 10;
        if (op < 4 && published < 2000) {
            char host [32];
            snprintf (host, sizeof host, "H%d.%s", rand () % 12, zones [rand () % 4]);
            s_publish (++published, host);
        }
        else if (op < 8 || op == 9) {
            //  End a random open lease: ack, nack, expire (by time) or start + expire
            size_t open = 0, pick = SIZE_MAX;
            for (size_t i = 0; i < s_delivered; i++)
                if (s_deliveries [i].open && rand () % (int) (++open) == 0)
                    pick = i;
            if (pick != SIZE_MAX) {
                s_delivery_t *d = &s_deliveries [pick];
                int how = rand () % 4;
                if (how == 0 || how == 1)
                    cr_assert_eq (brk_queue_ack (s_queue, d->delivery_id), BRK_OK);
                else if (how == 2)
                    cr_assert_eq (brk_queue_nack (s_queue, d->delivery_id, 0, "x"), BRK_OK);
                else
                    cr_assert_eq (brk_queue_started (s_queue, d->delivery_id), BRK_OK);
                if (how != 3)
                    d->open = false;
            }
        }
        else if (rand () % 8 == 0) {
            //  A worker dies: its leases end at once (some in doubt)
            int w = rand () % 4;
            brk_queue_worker_remove (s_queue, &workers [w], "killed");
            char name [16];
            snprintf (name, sizeof name, "w%d'", w);
            workers [w] = brk_queue_worker_add (s_queue, name, 3, NULL);
            cr_assert_not_null (workers [w]);
        }
        else {
            s_now += rand () % 20000;
            s_wall = s_wall + rand () % 20000;
            brk_queue_tick (s_queue, NULL, NULL);
        }
        s_dispatch ();
        //  Leases that ran out in a tick are closed: ask the queue which
        for (size_t i = 0; i < s_delivered; i++)
            if (s_deliveries [i].open
            &&  !brk_queue_lease_open (s_queue, s_deliveries [i].delivery_id))
                s_deliveries [i].open = false;
        //  Invariants: per-group in flight <= cap, one lease per host
        int64_t per_group [4] = { 0 };
        for (size_t i = 0; i < s_delivered; i++) {
            if (!s_deliveries [i].open)
                continue;
            char folded [64];
            brk_policy_fold (s_deliveries [i].host, folded, sizeof folded);
            int group = brk_policy_group_of (s_policy, folded);
            per_group [group]++;
            for (size_t j = i + 1; j < s_delivered; j++) {
                char other [64];
                brk_policy_fold (s_deliveries [j].host, other, sizeof other);
                cr_assert (!s_deliveries [j].open || strcmp (folded, other) != 0,
                           "seed %u step %d: two leases on %s", seed, step, folded);
            }
        }
        for (size_t g = 0; g < 3; g++) {
            cr_assert_leq (per_group [g], s_group_cap (g), "seed %u step %d: group %zu over cap",
                           seed, step, g);
            brk_group_stats_t group;
            brk_queue_group_stats (s_queue, g, &group);
            cr_assert_geq (group.in_flight, per_group [g],
                           "seed %u step %d: group %zu counts fewer leases than are open",
                           seed, step, g);
            cr_assert_leq (group.in_flight, s_group_cap (g));
        }
    }
    //  Drain: nothing accepted is lost, every request ends acked or dead
    brk_queue_stats_t stats;
    for (int round = 0; round < 10000; round++) {
        for (size_t i = 0; i < s_delivered; i++)
            if (s_deliveries [i].open) {
                cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [i].delivery_id), BRK_OK);
                s_deliveries [i].open = false;
            }
        brk_queue_stats (s_queue, &stats);
        if (stats.ready + stats.delayed + stats.in_flight == 0)
            break;
        s_now += 400000;
        s_wall += 400000;
        brk_queue_tick (s_queue, NULL, NULL);
        for (int w = 0; w < 4; w++)
            brk_queue_worker_seen (s_queue, workers [w]);
        s_dispatch ();
    }
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.ready + stats.delayed + stats.in_flight, 0, "seed %u: not drained", seed);
    cr_assert_eq (stats.acked + stats.dead, stats.published,
                  "seed %u: %" PRIu64 " acked + %" PRIu64 " dead of %" PRIu64, seed,
                  stats.acked, stats.dead, stats.published);
    cr_assert_gt (stats.acked, 0);
    cr_assert_gt (stats.coalesced, 0);
}

//  --------------------------------------------------------------------------
//  Cost: 1,000 groups and 100,000 waiting requests. Checks the leases made;
//  prints the time per dispatch (not asserted: the machine may be busy).

static double
s_seconds (void)
{
    struct timespec ts;
    clock_gettime (CLOCK_MONOTONIC, &ts);
    return (double) ts.tv_sec + (double) ts.tv_nsec / 1e9;
}

Test (policy, cost_many_groups, .init = s_make_policy, .fini = s_teardown, .timeout = 120)
{
    for (int g = 0; g < 1000; g++) {
        char spec [64];
        snprintf (spec, sizeof spec, "g%d:*.g%d:1", g, g);
        s_add (spec);
    }
    brk_policy_set_coalesce (s_policy, false);
    s_make_queue ();
    brk_queue_worker_add (s_queue, "w", 100000, NULL);
    double start = s_seconds ();
    for (int i = 0; i < 100000; i++) {
        char host [64];
        snprintf (host, sizeof host, "h%d.g%d", (i / 1000) % 10, i % 1000);
        s_publish (i + 1, host);
    }
    double published = s_seconds ();
    cr_assert_eq (s_dispatch (), 1000, "one per group");
    double first = s_seconds ();
    for (int i = 0; i < 1000; i++)
        cr_assert_eq (s_dispatch (), 0);
    double idle = s_seconds ();
    //  Ack and refill, one group at a time
    for (size_t i = 0; i < 1000; i++) {
        cr_assert_eq (brk_queue_ack (s_queue, s_deliveries [i].delivery_id), BRK_OK);
        cr_assert_eq (s_dispatch (), 1);
    }
    double refill = s_seconds ();
    brk_queue_stats_t stats;
    brk_queue_stats (s_queue, &stats);
    cr_assert_eq (stats.in_flight, 1000);
    cr_assert_eq (stats.ready, 100000 - 2000);
    //  The same publishes without a policy, for comparison
    brk_queue_config_t config;
    brk_queue_config_defaults (&config);
    brk_queue_t *plain = brk_queue_new (&config, mdl_clock_manual (&s_now));
    cr_assert_not_null (plain);
    double plain_start = s_seconds ();
    for (int i = 0; i < 100000; i++) {
        char id [37], json [256];
        s_id (i + 1, id);
        snprintf (json, sizeof json,
                  "{\"message_id\":\"%s\",\"instance_name\":\"x\",\"hostname\":\"h%d.g%d\"}",
                  id, (i / 1000) % 10, i % 1000);
        cr_assert_eq (brk_queue_publish (plain, id, json, strlen (json), 0), 0);
    }
    double plain_end = s_seconds ();
    brk_queue_destroy (&plain);
    printf ("cost_many_groups: publish %.2f us/msg (%.2f without a policy), first dispatch "
            "%.2f ms, idle dispatch %.2f us, ack+dispatch %.2f us\n",
            (published - start) / 100000 * 1e6, (plain_end - plain_start) / 100000 * 1e6,
            (first - published) * 1e3,
            (idle - first) / 1000 * 1e6, (refill - idle) / 1000 * 1e6);
}
