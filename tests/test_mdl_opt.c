/*  Tests for mdl_opt: command line forms, precedence flag > environment >
    file > default, unknown names, missing values, sub-command scope, help.
    Help and errors go to memory streams; the environment is injected.
*/
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "mdl_opt.h"

static const mdl_opt_spec_t s_specs [] = {
    { NULL, 0, NULL, "Sockets", NULL },
    { "frontend", 0, "ENDPOINT", "publishers (default tcp://*:5555)", NULL },
    { "data-dir", 0, "DIR", "journal directory", NULL },
    { "ack-deadline", 0, "DUR", "lease length", NULL },
    { "max-attempts", 0, "N", "deliveries before dead-lettering", NULL },
    { "dedup-window", 0, "N", "acked ids remembered", NULL },
    { "salvage", 0, NULL, "start even if the journal is corrupt", NULL },
    { "verbose", 'v', NULL, "debug log", NULL },
    { "limit", 0, "N", "dead letters to show", "deadletters" },
    { NULL, 0, NULL, NULL, NULL }
};

typedef struct {
    mdl_opt_t *opt;
    char *out;
    size_t out_size;
    FILE *out_stream;
    char *err;
    size_t err_size;
    FILE *err_stream;
    char path [64];
} fixture_t;

static fixture_t s_fix;

static void
s_setup (void)
{
    memset (&s_fix, 0, sizeof s_fix);
    s_fix.opt = mdl_opt_new ("mandrill-broker", s_specs, "Usage: mandrill-broker [OPTIONS]\n",
                             "Exit codes: 0 ok, 2 usage.\n");
    cr_assert_not_null (s_fix.opt);
    s_fix.out_stream = open_memstream (&s_fix.out, &s_fix.out_size);
    s_fix.err_stream = open_memstream (&s_fix.err, &s_fix.err_size);
    mdl_opt_set_output (s_fix.opt, s_fix.out_stream, s_fix.err_stream);
    static char *empty [] = { NULL };
    mdl_opt_set_env (s_fix.opt, empty);
}

static void
s_teardown (void)
{
    mdl_opt_destroy (&s_fix.opt);
    mdl_opt_destroy (&s_fix.opt);
    fclose (s_fix.out_stream);
    fclose (s_fix.err_stream);
    free (s_fix.out);
    free (s_fix.err);
    if (s_fix.path [0])
        unlink (s_fix.path);
}

//  A fresh parser within a test.
static void
s_reset (void)
{
    s_teardown ();
    s_setup ();
}

//  Parse a NULL-terminated list of arguments (the program name added).
static int
s_parse (const char *first, ...)
{
    static char *argv [32];
    int argc = 0;
    argv [argc++] = "mandrill-broker";
    va_list args;
    va_start (args, first);
    for (const char *arg = first; arg && argc < 31; arg = va_arg (args, const char *))
        argv [argc++] = (char *) arg;
    va_end (args);
    argv [argc] = NULL;
    int rc = mdl_opt_parse (s_fix.opt, argc, argv);
    fflush (s_fix.out_stream);
    fflush (s_fix.err_stream);
    return rc;
}

static void
s_config (const char *text)
{
    strcpy (s_fix.path, "/tmp/test_mdl_opt-XXXXXX");
    int fd = mkstemp (s_fix.path);
    cr_assert_geq (fd, 0);
    cr_assert_eq (write (fd, text, strlen (text)), (ssize_t) strlen (text));
    close (fd);
}

TestSuite (mdl_opt, .init = s_setup, .fini = s_teardown, .timeout = 10);

Test (mdl_opt, both_value_forms)
{
    cr_assert_eq (s_parse ("--frontend=tcp://*:1", "--data-dir", "/tmp/d", "-v", NULL), 0,
                  "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "frontend"), "tcp://*:1");
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "/tmp/d");
    cr_assert (mdl_opt_flag (s_fix.opt, "verbose"));
    cr_assert_not (mdl_opt_flag (s_fix.opt, "salvage"));
    cr_assert_null (mdl_opt_value (s_fix.opt, "ack-deadline"));
    cr_assert_eq (mdl_opt_source (s_fix.opt, "frontend"), MDL_OPT_FLAG);
    cr_assert_eq (mdl_opt_source (s_fix.opt, "ack-deadline"), MDL_OPT_UNSET);
    cr_assert_eq (mdl_opt_argc (s_fix.opt), 0);
}

Test (mdl_opt, option_is_never_a_value)
{
    cr_assert_eq (s_parse ("--data-dir", "--salvage", NULL), -1);
    cr_assert (strstr (s_fix.err, "option --data-dir needs a value"), "%s", s_fix.err);
    cr_assert (strstr (s_fix.err, "Try 'mandrill-broker --help'"), "%s", s_fix.err);
}

Test (mdl_opt, dash_value_with_equals)
{
    cr_assert_eq (s_parse ("--data-dir=--odd", NULL), 0, "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "--odd");
}

Test (mdl_opt, missing_value_at_the_end)
{
    cr_assert_eq (s_parse ("--salvage", "--data-dir", NULL), -1);
    cr_assert (strstr (s_fix.err, "option --data-dir needs a value"), "%s", s_fix.err);
}

Test (mdl_opt, unknown_option_and_flag_with_value)
{
    cr_assert_eq (s_parse ("--no-such=1", NULL), -1);
    cr_assert (strstr (s_fix.err, "unknown option '--no-such'"), "%s", s_fix.err);
    s_reset ();
    cr_assert_eq (s_parse ("--d", "x", NULL), -1);
    cr_assert (strstr (s_fix.err, "ambiguous option '--d' (--data-dir, --dedup"), "%s", s_fix.err);
    s_reset ();
    cr_assert_eq (s_parse ("--data", "x", NULL), 0, "a unique prefix is fine: %s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "x");
    s_reset ();
    cr_assert_eq (s_parse ("--salvage=yes", NULL), -1);
    cr_assert (strstr (s_fix.err, "option --salvage takes no value"), "%s", s_fix.err);
    s_reset ();
    cr_assert_eq (s_parse ("-x", NULL), -1);
    cr_assert (strstr (s_fix.err, "unknown option '-x'"), "%s", s_fix.err);
}

Test (mdl_opt, arguments_in_any_order)
{
    cr_assert_eq (s_parse ("one", "--salvage", "two", "--", "--three", NULL), 0, "%s", s_fix.err);
    cr_assert_eq (mdl_opt_argc (s_fix.opt), 3);
    cr_assert_str_eq (mdl_opt_arg (s_fix.opt, 0), "one");
    cr_assert_str_eq (mdl_opt_arg (s_fix.opt, 1), "two");
    cr_assert_str_eq (mdl_opt_arg (s_fix.opt, 2), "--three");
    cr_assert_null (mdl_opt_arg (s_fix.opt, 3));
}

Test (mdl_opt, precedence_flag_env_file_default)
{
    s_config ("broker\n"
              "    frontend = \"tcp://file:1\"\n"
              "    data-dir = /from/file\n"
              "    ack_deadline = 3s\n"
              "    salvage = true\n"
              "worker\n"
              "    db = sqlite:skipped.db\n");
    char config [128];
    snprintf (config, sizeof config, "MANDRILL_BROKER_CONFIG=%s", s_fix.path);
    char *env [] = {
        config, "MANDRILL_BROKER_FRONTEND=tcp://env:1", "MANDRILL_BROKER_DATA_DIR=/from/env",
        "MANDRILL_BROKER=/usr/bin/not-a-variable-of-ours", "OTHER=1", NULL
    };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse ("--frontend", "tcp://flag:1", NULL), 0, "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "frontend"), "tcp://flag:1");
    cr_assert_eq (mdl_opt_source (s_fix.opt, "frontend"), MDL_OPT_FLAG);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "/from/env");
    cr_assert_eq (mdl_opt_source (s_fix.opt, "data-dir"), MDL_OPT_ENV);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "ack-deadline"), "3s");
    cr_assert_eq (mdl_opt_source (s_fix.opt, "ack-deadline"), MDL_OPT_FILE);
    cr_assert (mdl_opt_flag (s_fix.opt, "salvage"));
    cr_assert_null (mdl_opt_value (s_fix.opt, "max-attempts"));
    cr_assert_str_eq (mdl_opt_config_file (s_fix.opt), s_fix.path);
    int64_t ms = 10000;
    cr_assert_eq (mdl_opt_duration (s_fix.opt, "ack-deadline", 1, 86400000, &ms, "a duration"), 0);
    cr_assert_eq (ms, 3000);
    int64_t attempts = 5;
    cr_assert_eq (mdl_opt_int (s_fix.opt, "max-attempts", 1, 1000, &attempts, "1..1000"), 0);
    cr_assert_eq (attempts, 5, "an unset option keeps the default");
}

Test (mdl_opt, env_flag_false_beats_file_true)
{
    s_config ("salvage = true\n");
    char config [128];
    snprintf (config, sizeof config, "MANDRILL_BROKER_CONFIG=%s", s_fix.path);
    char *env [] = { config, "MANDRILL_BROKER_SALVAGE=off", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse (NULL), 0, "%s", s_fix.err);
    cr_assert_not (mdl_opt_flag (s_fix.opt, "salvage"));
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "salvage"), "false");
}

Test (mdl_opt, flag_config_beats_env_config)
{
    s_config ("data-dir = /chosen\n");
    char *env [] = { "MANDRILL_BROKER_CONFIG=/no/such/file", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse ("--config", s_fix.path, NULL), 0, "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "/chosen");
}

Test (mdl_opt, unknown_variable_is_an_error)
{
    char *env [] = { "MANDRILL_BROKER_FRONTEDN=tcp://*:1", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse (NULL), -1);
    cr_assert (strstr (s_fix.err, "unknown environment variable MANDRILL_BROKER_FRONTEDN"),
               "%s", s_fix.err);
}

Test (mdl_opt, bad_boolean_in_env)
{
    char *env [] = { "MANDRILL_BROKER_SALVAGE=perhaps", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse (NULL), -1);
    cr_assert (strstr (s_fix.err, "invalid value 'perhaps' for MANDRILL_BROKER_SALVAGE"),
               "%s", s_fix.err);
}

Test (mdl_opt, unknown_key_in_file)
{
    s_config ("broker\n    frontend = x\n    fronted = y\n");
    cr_assert_eq (s_parse ("--config", s_fix.path, NULL), -1);
    cr_assert (strstr (s_fix.err, "unknown key 'broker/fronted'"), "%s", s_fix.err);
}

Test (mdl_opt, unknown_section_in_file)
{
    s_config ("brokr\n    frontend = x\n");
    cr_assert_eq (s_parse ("--config", s_fix.path, NULL), -1);
    cr_assert (strstr (s_fix.err, "unknown section 'brokr'"), "%s", s_fix.err);
}

Test (mdl_opt, missing_or_broken_file)
{
    cr_assert_eq (s_parse ("--config", "/no/such/mandrill.cfg", NULL), -1);
    cr_assert (strstr (s_fix.err, "cannot read the configuration file /no/such/mandrill.cfg"),
               "%s", s_fix.err);
    s_reset ();
    s_config ("broker\n  frontend = \"unterminated\n");
    cr_assert_eq (s_parse ("--config", s_fix.path, NULL), -1);
    cr_assert (strstr (s_fix.err, "not a valid ZPL file"), "%s", s_fix.err);
    //  A NUL byte would hide the rest of the file from zconfig
    s_reset ();
    s_config ("frontend = x\n");
    FILE *file = fopen (s_fix.path, "a");
    cr_assert_not_null (file);
    fwrite ("\0bogus = 1\n", 1, 11, file);
    fclose (file);
    cr_assert_eq (s_parse ("--config", s_fix.path, NULL), -1);
    cr_assert (strstr (s_fix.err, "not a valid ZPL file"), "%s", s_fix.err);
}

Test (mdl_opt, bad_values_name_their_source)
{
    s_config ("max-attempts = lots\n");
    char *env [] = { "MANDRILL_BROKER_ACK_DEADLINE=10", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse ("--config", s_fix.path, "--data-dir=", NULL), 0, "%s", s_fix.err);
    int64_t value = 0;
    cr_assert_eq (mdl_opt_duration (s_fix.opt, "ack-deadline", 1, 1000, &value, "a duration"), -1);
    cr_assert_eq (mdl_opt_int (s_fix.opt, "max-attempts", 1, 10, &value, "1..10"), -1);
    const char *dir = "kept";
    cr_assert_eq (mdl_opt_string (s_fix.opt, "data-dir", &dir), -1);
    cr_assert_str_eq (dir, "kept");
    fflush (s_fix.err_stream);
    cr_assert (strstr (s_fix.err, "invalid value '10' for MANDRILL_BROKER_ACK_DEADLINE (--ack-deadline)"),
               "%s", s_fix.err);
    cr_assert (strstr (s_fix.err, "invalid value 'lots' for key max-attempts in"), "%s", s_fix.err);
    cr_assert (strstr (s_fix.err, "invalid value '' for --data-dir"), "%s", s_fix.err);
    cr_assert_eq (value, 0);
}

Test (mdl_opt, scope_of_sub_command_options)
{
    cr_assert_eq (s_parse ("deadletters", "--limit", "5", NULL), 0, "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "limit"), "5");
    s_reset ();
    cr_assert_eq (s_parse ("stats", "--limit=5", NULL), -1);
    cr_assert (strstr (s_fix.err, "option --limit goes with: deadletters"), "%s", s_fix.err);
    //  From the environment it applies only where it can
    s_reset ();
    char *env [] = { "MANDRILL_BROKER_LIMIT=7", NULL };
    mdl_opt_set_env (s_fix.opt, env);
    cr_assert_eq (s_parse ("stats", NULL), 0, "%s", s_fix.err);
    cr_assert_null (mdl_opt_value (s_fix.opt, "limit"));
}

Test (mdl_opt, help_shows_variables_and_precedence)
{
    cr_assert_eq (s_parse ("--frontend", "x", "--help", NULL), 1);
    cr_assert (strstr (s_fix.out, "Usage: mandrill-broker [OPTIONS]"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "--ack-deadline DUR"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "[MANDRILL_BROKER_ACK_DEADLINE]"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "-v, --verbose"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "[MANDRILL_BROKER_CONFIG]"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "command line > environment > file > default"), "%s", s_fix.out);
    cr_assert (strstr (s_fix.out, "Exit codes: 0 ok, 2 usage."), "%s", s_fix.out);
    for (char *line = s_fix.out; *line; ) {
        size_t len = strcspn (line, "\n");
        cr_assert_leq (len, 79, "line too long: %.*s", (int) len, line);
        line += len + (line [len] == '\n');
    }
}

Test (mdl_opt, version)
{
    cr_assert_eq (s_parse ("--version", NULL), 1);
    cr_assert (strstr (s_fix.out, "mandrill-broker " MANDRILL_VERSION), "%s", s_fix.out);
}

Test (mdl_opt, parses_twice)
{
    cr_assert_eq (s_parse ("--salvage", NULL), 0);
    s_reset ();
    cr_assert_eq (s_parse ("--data-dir", "x", NULL), 0, "%s", s_fix.err);
    cr_assert_str_eq (mdl_opt_value (s_fix.opt, "data-dir"), "x");
    cr_assert_null (mdl_opt_value (s_fix.opt, "salvage"));
}
