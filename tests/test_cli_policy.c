/*  test_cli_policy: mandrill-ctl's restart-policy tables (cli/ctl_policy):
    each reply prints the rows and states an operator needs, a missing or
    mistyped member prints "-" instead of failing, durations are short. */
#include "ctl_policy.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char s_out [8192];

static const char *
s_print (const char *command, const char *json)
{
    cJSON *body = cJSON_Parse (json);
    cr_assert_not_null (body, "%s", json);
    FILE *out = fmemopen (s_out, sizeof s_out, "w");
    cr_assert_not_null (out);
    ctl_policy_print (out, command, body);
    fclose (out);
    cJSON_Delete (body);
    return s_out;
}

Test (cli_policy, groups_table, .timeout = 10)
{
    const char *out = s_print ("GROUPS",
        "{\"policy\":true,\"killed\":true,\"groups\":["
        "{\"name\":\"zone-a\",\"match\":\"*.a.example.net\",\"in_flight\":2,\"cap\":2,\"max\":4,"
        "\"waiting\":7,\"in_doubt\":3,\"failures\":1,\"paused\":true,\"paused_reason\":\"error stop: 3 failures within 600 s\","
        "\"window_open\":true,\"next_open\":0},"
        "{\"name\":\"default\",\"match\":\"*\",\"in_flight\":0,\"cap\":-1,\"max\":-1,\"waiting\":0,"
        "\"failures\":0,\"paused\":false,\"window_open\":false,\"next_open\":1796040000000}]}");
    cr_expect (strstr (out, "KILL SWITCH ON"), "%s", out);
    cr_expect (strstr (out, "zone-a"), "%s", out);
    cr_expect (strstr (out, "paused: error stop: 3 failures within 600 s"), "%s", out);
    cr_expect (strstr (out, "none"), "%s", out);
    cr_expect (strstr (out, "opens 2026-"), "%s", out);
    cr_expect (strstr (out, "IN_DOUBT"), "%s", out);
    //  zone-a: 7 waiting, 3 in doubt, 1 failure; default (no count sent): -
    cr_expect (strstr (out, "       7        3        1"), "%s", out);
    cr_expect (strstr (out, "       0        -        0"), "%s", out);
    out = s_print ("GROUPS", "{\"policy\":false,\"groups\":[]}");
    cr_expect (strstr (out, "no restart policy"), "%s", out);
}

Test (cli_policy, inflight_and_workers, .timeout = 10)
{
    const char *out = s_print ("INFLIGHT",
        "{\"leases\":[{\"message_id\":\"0b9c8f8e-1f2a-4c3d-9e8f-0a1b2c3d4e5f\",\"target\":\"web-1.example.net\","
        "\"group\":\"web\",\"worker\":\"w1\",\"age_ms\":1500,\"deadline_ms\":8500,\"attempt\":2,"
        "\"steps\":1,\"started\":true},{\"message_id\":7,\"worker\":\"\"}],\"total\":2}");
    cr_expect (strstr (out, "web-1.example.net"), "%s", out);
    cr_expect (strstr (out, "1.5s"), "%s", out);
    cr_expect (strstr (out, "save (restart started)"), "%s", out);
    cr_expect (strstr (out, "(recovered)"), "%s", out);
    cr_expect (strstr (out, "2 shown, 2 open leases"), "%s", out);
    out = s_print ("WORKERS", "{\"workers\":[{\"name\":\"w1\",\"credit\":10,\"leases\":3,"
                              "\"seen_ms_ago\":250,\"peer\":\"00ab\"}]}");
    cr_expect (strstr (out, "w1"), "%s", out);
    cr_expect (strstr (out, "250ms ago"), "%s", out);
    cr_expect (strstr (out, "1 worker\n"), "%s", out);
}

Test (cli_policy, pause_resume_reload_lines, .timeout = 10)
{
    const char *out = s_print ("PAUSE", "{\"group\":\"db\",\"paused\":true,\"reason\":\"freeze\",\"durable\":true}");
    cr_expect (strstr (out, "paused db: freeze"), "%s", out);
    cr_expect_null (strstr (out, "WARNING"), "%s", out);
    out = s_print ("PAUSE", "{\"all\":true,\"paused\":true,\"reason\":\"operator\",\"durable\":false}");
    cr_expect (strstr (out, "every group"), "%s", out);
    cr_expect (strstr (out, "kill switch"), "%s", out);
    cr_expect (strstr (out, "WARNING"), "%s", out);
    out = s_print ("RESUME", "{\"group\":\"db\",\"paused\":false,\"durable\":true}");
    cr_expect (strstr (out, "resumed db"), "%s", out);
    out = s_print ("RELOAD", "{\"ok\":true,\"file\":\"/etc/policy.cfg\"}");
    cr_expect_str_eq (out, "reloaded /etc/policy.cfg\n");
}

Test (cli_policy, durations, .timeout = 10)
{
    char buf [32];
    cr_expect_str_eq (ctl_policy_duration (850, buf, sizeof buf), "850ms");
    cr_expect_str_eq (ctl_policy_duration (12300, buf, sizeof buf), "12.3s");
    cr_expect_str_eq (ctl_policy_duration (245000, buf, sizeof buf), "4m05s");
    cr_expect_str_eq (ctl_policy_duration (7800000, buf, sizeof buf), "2h10m");
    cr_expect_str_eq (ctl_policy_duration (-1, buf, sizeof buf), "-");
}
