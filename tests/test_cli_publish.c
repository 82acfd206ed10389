/*  Tests for the modules of mandrill-publish and mandrill-ctl: reply
    matching by req (cli_reply), request checking (pub_request), the mock
    source's pacing on a hand-driven clock and random source (pub_mock).
*/
#include <criterion/criterion.h>
#include <string.h>

#include "cli_reply.h"
#include "mdl_uuid.h"
#include "pub_mock.h"
#include "pub_request.h"

Test (cli_reply, matches_by_req, .timeout = 10)
{
    mmp_msg_t reply;
    memset (&reply, 0, sizeof reply);
    reply.command = MMP_PUBACK;
    const char *reqs [4] = { "p0-1", NULL, "p0-3", "p0-4" };
    reply.req = "p0-3";
    cr_assert_eq (cli_reply_match (&reply, reqs, 4), 2);
    reply.req = "p0-2";
    cr_assert_eq (cli_reply_match (&reply, reqs, 4), CLI_REPLY_STALE, "a late answer");
    reply.req = NULL;
    cr_assert_eq (cli_reply_match (&reply, reqs, 4), CLI_REPLY_STALE, "PUBACK without req");
    reply.command = MMP_ERROR;
    cr_assert_eq (cli_reply_match (&reply, reqs, 4), CLI_REPLY_ANONYMOUS);
    reply.req = "p0-4";
    cr_assert_eq (cli_reply_match (&reply, reqs, 4), 3, "an ERROR with req is that request's");
}

Test (cli_reply, makes_reqs, .timeout = 10)
{
    char req [32];
    cli_req_make (req, sizeof req, "p3", 18446744073709551615ULL);
    cr_assert_str_eq (req, "p3-18446744073709551615");
    char small [6];
    cli_req_make (small, sizeof small, "ctl-1", 42);
    cr_assert_str_eq (small, "ctl-1", "truncated to fit");
}

Test (pub_request, checks_like_the_broker, .timeout = 10)
{
    pub_request_t request;
    char error [320];
    const char *good = "{\"instance_name\":\"cattle-ab12\",\"attributes\":{\"zone\":\"a\"}}";
    cr_assert_eq (pub_request_from_json (good, strlen (good), 0, &request, error, sizeof error), 0,
                  "%s", error);
    cr_assert_str_eq (request.name, "cattle-ab12");
    cr_assert (mdl_uuid_valid (request.id, strlen (request.id)), "an id is added: %s", request.id);
    cr_assert (strstr (request.json, request.id), "%s", request.json);
    pub_request_free (&request);
    pub_request_free (&request);
    cr_assert_null (request.json);

    const char *upper = "{\"instance_name\":\"x\",\"message_id\":\"123E4567-E89B-12D3-A456-426614174000\"}";
    cr_assert_eq (pub_request_from_json (upper, strlen (upper), 0, &request, error, sizeof error), 0,
                  "%s", error);
    cr_assert_str_eq (request.id, "123e4567-e89b-12d3-a456-426614174000", "ids are lower-cased");
    pub_request_free (&request);

    const char *bad [] = {
        "{\"instance_name\":\"-bad\"}", "{\"instance_name\":\"ok\",\"colour\":1}",
        "{\"instance_name\":\"a\"},{\"instance_name\":\"b\"}", "not json", "{}", NULL
    };
    for (int i = 0; bad [i]; i++) {
        error [0] = 0;
        cr_assert_eq (pub_request_from_json (bad [i], strlen (bad [i]), 4, &request, error,
                                             sizeof error), -1, "accepted %s", bad [i]);
        cr_assert (error [0], "no reason for %s", bad [i]);
        cr_assert_null (request.json);
    }
}

Test (pub_request, instance_source, .timeout = 10)
{
    pub_request_t request;
    char error [320];
    cr_assert_eq (pub_request_instance ("cattle-1", "h.example.org", NULL, &request, error,
                                        sizeof error), 0, "%s", error);
    cr_assert (strstr (request.json, "\"hostname\":\"h.example.org\""), "%s", request.json);
    pub_request_free (&request);
    cr_assert_eq (pub_request_instance ("cattle-1", NULL, "not-a-uuid", &request, error,
                                        sizeof error), -1);
    cr_assert (strstr (error, "message_id"), "%s", error);
}

//  A random source that returns the values of an array, in turn.
typedef struct {
    const double *values;
    size_t count;
    size_t next;
} script_t;

static double
s_scripted (void *arg)
{
    script_t *script = (script_t *) arg;
    return script->values [script->next++ % script->count];
}

Test (pub_mock, tutorial_pacing, .timeout = 10)
{
    static const double values [] = { 0.25, 0.5, 0.75, 0.5, 0.1, 0.9 };
    script_t script = { values, 6, 0 };
    mdl_random_t random = { s_scripted, &script };
    pub_mock_t *mock = pub_mock_new (2, 0, random, 1000);
    cr_assert_not_null (mock);
    pub_request_t request;
    cr_assert_eq (pub_mock_next (mock, 1000, &request), 1, "the first is due at the start");
    cr_assert (strncmp (request.name, "cattle-", 7) == 0 && strlen (request.name) == 11, "%s",
               request.name);
    cr_assert (mdl_uuid_valid (request.id, strlen (request.id)));
    cr_assert (strstr (request.json, request.name));
    pub_request_free (&request);
    //  Four draws named it; the fifth (0.1) is the gap: 100 ms
    cr_assert_eq (pub_mock_due (mock), 1100);
    cr_assert_eq (pub_mock_next (mock, 1099, &request), 0);
    cr_assert_eq (pub_mock_next (mock, 1100, &request), 1);
    pub_request_free (&request);
    cr_assert_eq (pub_mock_left (mock), 0);
    cr_assert_eq (pub_mock_next (mock, 99999, &request), -1, "count reached");
    pub_mock_destroy (&mock);
    pub_mock_destroy (&mock);
    cr_assert_null (mock);
}

Test (pub_mock, fixed_rate_is_open_loop, .timeout = 10)
{
    static const double values [] = { 0.5 };
    script_t script = { values, 1, 0 };
    mdl_random_t random = { s_scripted, &script };
    pub_mock_t *mock = pub_mock_new (-1, 100, random, 0);      //  100/s: every 10 ms
    pub_request_t request;
    cr_assert_eq (pub_mock_next (mock, 0, &request), 1);
    pub_request_free (&request);
    cr_assert_eq (pub_mock_due (mock), 10);
    //  A stall of 50 ms: the due times follow the start, so five are due at once
    int made = 0;
    while (pub_mock_next (mock, 50, &request) == 1) {
        pub_request_free (&request);
        made++;
    }
    cr_assert_eq (made, 5);
    cr_assert_eq (pub_mock_due (mock), 60);
    cr_assert_eq (pub_mock_left (mock), -1, "forever");
    pub_mock_destroy (&mock);
}
