/*  mdl_opt: see mdl_opt.h.

    The table is borrowed; per option the parser keeps one owned value and
    its source. The command line is read first (it wins), then the
    environment and the file fill only what is still unset.
*/
#include "mdl_opt.h"
#include "mdl_parse.h"

#include <assert.h>
#include <ctype.h>
#include <czmq.h>
#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

extern char **environ;

//  The short names of every Mandrill program: their file sections.
static const char *s_programs [] = { "broker", "worker", "publish", "ctl", NULL };

#define S_HELP_COLUMN 25        //  Where help text starts in --help
#define S_HELP_WIDTH 79         //  Lines of --help fit this
#define S_CONFIG_MAX (1 << 20)  //  Largest configuration file read

struct _mdl_opt_t {
    char *program;              //  "mandrill-broker"
    char *section;              //  "broker": the file section
    char *prefix;               //  "MANDRILL_BROKER_": the variables
    const mdl_opt_spec_t *specs;    //  The table (borrowed)
    size_t count;               //  Entries in it, headings included
    const char *usage;          //  Start of --help (borrowed)
    const char *epilogue;       //  End of --help (borrowed)
    char **env;                 //  Environment to read (borrowed)
    FILE *out;                  //  Help and version
    FILE *err;                  //  Errors
    char **values;              //  Per entry: its final value (owned), or NULL
    mdl_opt_source_t *sources;  //  Per entry: where the value came from
    char **args;                //  Arguments that are not options (owned copies)
    size_t argc;                //  How many
    char *config;               //  The configuration file, or NULL
    mdl_opt_source_t config_source; //  Who named it
};

mdl_opt_t *
mdl_opt_new (const char *program, const mdl_opt_spec_t *specs, const char *usage,
             const char *epilogue)
{
    assert (program && specs);
    mdl_opt_t *self = calloc (1, sizeof (mdl_opt_t));
    if (!self)
        return NULL;
    while (specs [self->count].name || specs [self->count].help)
        self->count++;
    const char *section = strncmp (program, "mandrill-", 9) == 0 ? program + 9 : program;
    self->program = strdup (program);
    self->section = strdup (section);
    self->prefix = malloc (strlen (section) + 11);
    self->values = calloc (self->count + 1, sizeof (char *));
    self->sources = calloc (self->count + 1, sizeof (mdl_opt_source_t));
    if (!self->program || !self->section || !self->prefix || !self->values || !self->sources) {
        mdl_opt_destroy (&self);
        return NULL;
    }
    char *cursor = self->prefix + sprintf (self->prefix, "MANDRILL_");
    for (const char *c = section; *c; c++)
        *cursor++ = *c == '-' ? '_' : (char) toupper ((unsigned char) *c);
    strcpy (cursor, "_");
    self->specs = specs;
    self->usage = usage;
    self->epilogue = epilogue;
    self->env = environ;
    self->out = stdout;
    self->err = stderr;
    return self;
}

void
mdl_opt_destroy (mdl_opt_t **self_p)
{
    assert (self_p);
    mdl_opt_t *self = *self_p;
    if (!self)
        return;
    for (size_t i = 0; self->values && i < self->count; i++)
        free (self->values [i]);
    for (size_t i = 0; i < self->argc; i++)
        free (self->args [i]);
    free (self->args);
    free (self->values);
    free (self->sources);
    free (self->config);
    free (self->prefix);
    free (self->section);
    free (self->program);
    free (self);
    *self_p = NULL;
}

void
mdl_opt_set_env (mdl_opt_t *self, char **env)
{
    assert (self);
    self->env = env;
}

void
mdl_opt_set_output (mdl_opt_t *self, FILE *out, FILE *err)
{
    assert (self && out && err);
    self->out = out;
    self->err = err;
}

//  --------------------------------------------------------------------------
//  Errors

static int s_vfail (const mdl_opt_t *self, const char *format, va_list args)
    __attribute__ ((format (printf, 2, 0)));

static int
s_vfail (const mdl_opt_t *self, const char *format, va_list args)
{
    fprintf (self->err, "%s: ", self->program);
    vfprintf (self->err, format, args);
    fprintf (self->err, "\nTry '%s --help'.\n", self->program);
    fflush (self->err);
    return -1;
}

int
mdl_opt_fail (const mdl_opt_t *self, const char *format, ...)
{
    va_list args;
    va_start (args, format);
    s_vfail (self, format, args);
    va_end (args);
    return -1;
}

//  The variable name of an entry, into out.
static void
s_env_name (const mdl_opt_t *self, const char *name, char *out, size_t size)
{
    size_t used = (size_t) snprintf (out, size, "%s", self->prefix);
    for (const char *c = name; *c && used + 1 < size; c++)
        out [used++] = *c == '-' ? '_' : (char) toupper ((unsigned char) *c);
    out [used < size ? used : size - 1] = 0;
}

//  Where the value of entry index came from, for error messages.
static void
s_describe (const mdl_opt_t *self, size_t index, char *out, size_t size)
{
    const char *name = self->specs [index].name;
    char env [128];
    switch (self->sources [index]) {
        case MDL_OPT_ENV:
            s_env_name (self, name, env, sizeof env);
            snprintf (out, size, "%s (--%s)", env, name);
            break;
        case MDL_OPT_FILE:
            snprintf (out, size, "key %s in %s (--%s)", name, self->config, name);
            break;
        default:
            snprintf (out, size, "--%s", name);
    }
}

//  --------------------------------------------------------------------------
//  Table look-ups

static size_t
s_find (const mdl_opt_t *self, const char *name)
{
    for (size_t i = 0; i < self->count; i++)
        if (self->specs [i].name && streq (self->specs [i].name, name))
            return i;
    return SIZE_MAX;
}

static size_t
s_index (const mdl_opt_t *self, const char *name)
{
    size_t index = s_find (self, name);
    assert (index != SIZE_MAX);         //  A name not in the table is a programmer error
    return index;
}

//  Does scope (space-separated words) hold word?
static bool
s_in_scope (const char *scope, const char *word)
{
    size_t len = strlen (word);
    for (const char *at = scope; (at = strstr (at, word)); at += len)
        if ((at == scope || at [-1] == ' ') && (at [len] == ' ' || at [len] == 0))
            return true;
    return false;
}

//  Store a value for entry index unless a stronger source set one. A flag
//  takes a boolean text; it is kept as "true" or "false". Returns 0 or -1
//  (an invalid boolean).
static int
s_set (mdl_opt_t *self, size_t index, const char *value, mdl_opt_source_t source)
{
    if (self->sources [index] > source)
        return 0;
    const mdl_opt_spec_t *spec = &self->specs [index];
    if (!spec->arg) {
        bool on;
        if (mdl_parse_bool (value, &on) != 0) {
            self->sources [index] = source;     //  For the message
            char where [256];
            s_describe (self, index, where, sizeof where);
            return mdl_opt_fail (self, "invalid value '%s' for %s: expected true or false",
                                 value ? value : "", where);
        }
        value = on ? "true" : "false";
    }
    char *copy = strdup (value);
    if (!copy)
        return mdl_opt_fail (self, "out of memory");
    free (self->values [index]);
    self->values [index] = copy;
    self->sources [index] = source;
    return 0;
}

//  --------------------------------------------------------------------------
//  Command line

//  An unknown long option, or a prefix of several (getopt tells them apart
//  only in its own messages, which are off).
static int
s_unknown (const mdl_opt_t *self, const char *given, const struct option *longopts)
{
    int len = (int) strcspn (given, "=");
    const char *name = given + (strncmp (given, "--", 2) == 0 ? 2 : 1);
    size_t name_len = (size_t) (given + len - name);
    char matches [256] = "";
    size_t used = 0;
    int count = 0;
    for (const struct option *o = longopts; o->name; o++)
        if (name_len && strncmp (o->name, name, name_len) == 0) {
            count++;
            used += (size_t) snprintf (matches + used, used < sizeof matches ? sizeof matches - used : 0,
                                       "%s--%s", count > 1 ? ", " : "", o->name);
            if (used >= sizeof matches)
                used = sizeof matches - 1;
        }
    if (count > 1)
        return mdl_opt_fail (self, "ambiguous option '%.*s' (%s)", len, given, matches);
    return mdl_opt_fail (self, "unknown option '%.*s'", len, given);
}

enum { S_OPT_CONFIG = 1, S_OPT_HELP, S_OPT_VERSION, S_OPT_BASE = 256 };

static int
s_parse_argv (mdl_opt_t *self, int argc, char **argv, bool *answered)
{
    size_t slots = self->count + 4;
    struct option *longopts = calloc (slots, sizeof (struct option));
    char *shortopts = calloc (2 * self->count + 8, 1);
    if (!longopts || !shortopts) {
        free (longopts);
        free (shortopts);
        return mdl_opt_fail (self, "out of memory");
    }
    size_t n = 0, s = 0;
    shortopts [s++] = ':';      //  First: a missing value is told apart from an unknown option
    shortopts [s++] = 'h';
    for (size_t i = 0; i < self->count; i++) {
        const mdl_opt_spec_t *spec = &self->specs [i];
        if (!spec->name)
            continue;
        longopts [n++] = (struct option) {
            spec->name, spec->arg ? required_argument : no_argument, NULL, S_OPT_BASE + (int) i
        };
        if (spec->short_name) {
            shortopts [s++] = spec->short_name;
            if (spec->arg)
                shortopts [s++] = ':';
        }
    }
    longopts [n++] = (struct option) { "config", required_argument, NULL, S_OPT_CONFIG };
    longopts [n++] = (struct option) { "help", no_argument, NULL, S_OPT_HELP };
    longopts [n++] = (struct option) { "version", no_argument, NULL, S_OPT_VERSION };

    int rc = 0;
    optind = 0;                 //  glibc: start over, also after an earlier parse
    opterr = 0;
    int opt;
    while (rc == 0 && (opt = getopt_long (argc, argv, shortopts, longopts, NULL)) != -1) {
        //  Short aliases map onto their entries
        if (opt > 0 && opt < S_OPT_BASE && opt != S_OPT_CONFIG && opt != S_OPT_HELP
        &&  opt != S_OPT_VERSION && opt != '?' && opt != ':') {
            if (opt == 'h')
                opt = S_OPT_HELP;
            else
                for (size_t i = 0; i < self->count; i++)
                    if (self->specs [i].name && self->specs [i].short_name == opt)
                        opt = S_OPT_BASE + (int) i;
        }
        const char *given = argv [optind - 1];
        if (opt == '?') {
            if (optopt >= S_OPT_BASE)
                rc = mdl_opt_fail (self, "option --%s takes no value",
                                   self->specs [optopt - S_OPT_BASE].name);
            else
            if (optopt == S_OPT_HELP || optopt == S_OPT_VERSION)
                rc = mdl_opt_fail (self, "option %.*s takes no value",
                                   (int) strcspn (given, "="), given);
            else
            if (optopt > 0)
                rc = mdl_opt_fail (self, "unknown option '-%c'", optopt);
            else
                rc = s_unknown (self, given, longopts);
            break;
        }
        if (opt == ':') {
            const char *name = optopt >= S_OPT_BASE ? self->specs [optopt - S_OPT_BASE].name
                             : optopt == S_OPT_CONFIG ? "config" : NULL;
            if (name)
                rc = mdl_opt_fail (self, "option --%s needs a value", name);
            else
                rc = mdl_opt_fail (self, "option -%c needs a value", optopt);
            break;
        }
        //  `--x --y`: getopt would take "--y" as the value of --x
        if (optarg && optarg == given && optarg [0] == '-' && optarg [1]) {
            const char *name = opt >= S_OPT_BASE ? self->specs [opt - S_OPT_BASE].name : "config";
            rc = mdl_opt_fail (self, "option --%s needs a value (got the option '%s'; "
                               "write --%s=%s if that is the value)", name, optarg, name, optarg);
            break;
        }
        if (opt == S_OPT_HELP) {
            mdl_opt_usage (self, self->out);
            *answered = true;
            break;
        }
        if (opt == S_OPT_VERSION) {
            fprintf (self->out, "%s %s\n", self->program, MANDRILL_VERSION);
            fflush (self->out);
            *answered = true;
            break;
        }
        if (opt == S_OPT_CONFIG) {
            free (self->config);
            self->config = strdup (optarg);
            self->config_source = MDL_OPT_FLAG;
            continue;
        }
        size_t index = (size_t) (opt - S_OPT_BASE);
        rc = s_set (self, index, optarg ? optarg : "true", MDL_OPT_FLAG);
    }
    if (rc == 0 && !*answered) {
        self->argc = (size_t) (argc - optind);
        self->args = calloc (self->argc + 1, sizeof (char *));
        for (size_t i = 0; self->args && i < self->argc; i++)
            self->args [i] = strdup (argv [optind + (int) i]);
    }
    free (longopts);
    free (shortopts);
    return rc;
}

//  --------------------------------------------------------------------------
//  Environment

static int
s_parse_env (mdl_opt_t *self)
{
    size_t prefix_len = strlen (self->prefix);
    for (char **entry = self->env; entry && *entry; entry++) {
        if (strncmp (*entry, self->prefix, prefix_len) != 0)
            continue;
        const char *key = *entry + prefix_len;
        const char *equals = strchr (key, '=');
        if (!equals)
            continue;
        size_t key_len = (size_t) (equals - key);
        const char *value = equals + 1;
        if (key_len == 6 && strncmp (key, "CONFIG", 6) == 0) {
            if (self->config_source != MDL_OPT_FLAG) {
                free (self->config);
                self->config = strdup (value);
                self->config_source = MDL_OPT_ENV;
            }
            continue;
        }
        size_t found = SIZE_MAX;
        char name [128];
        for (size_t i = 0; i < self->count && found == SIZE_MAX; i++) {
            if (!self->specs [i].name)
                continue;
            s_env_name (self, self->specs [i].name, name, sizeof name);
            if (strlen (name) == prefix_len + key_len && strncmp (name + prefix_len, key, key_len) == 0)
                found = i;
        }
        if (found == SIZE_MAX)
            return mdl_opt_fail (self, "unknown environment variable %.*s (--help lists them)",
                                 (int) (prefix_len + key_len), *entry);
        if (s_set (self, found, value, MDL_OPT_ENV))
            return -1;
    }
    return 0;
}

//  --------------------------------------------------------------------------
//  Configuration file

static int
s_file_key (mdl_opt_t *self, zconfig_t *item, const char *path)
{
    char name [128];
    snprintf (name, sizeof name, "%s", zconfig_name (item));
    for (char *c = name; *c; c++)
        if (*c == '_')
            *c = '-';
    size_t index = s_find (self, name);
    if (index == SIZE_MAX || zconfig_child (item))
        return mdl_opt_fail (self, "%s: unknown key '%s%s%s'", self->config, path,
                             *path ? "/" : "", zconfig_name (item));
    const char *value = zconfig_value (item);
    if (!value)
        return mdl_opt_fail (self, "%s: key '%s' has no value", self->config, zconfig_name (item));
    return s_set (self, index, value, MDL_OPT_FILE);
}

static int
s_parse_file (mdl_opt_t *self)
{
    if (!self->config)
        return 0;
    //  Read here rather than with zconfig_load, which leaks when the text
    //  is not ZPL, and cannot tell a missing file from a bad one
    FILE *file = fopen (self->config, "r");
    if (!file)
        return mdl_opt_fail (self, "cannot read the configuration file %s: %s", self->config,
                             strerror (errno));
    char *text = malloc (S_CONFIG_MAX + 1);
    size_t size = text ? fread (text, 1, S_CONFIG_MAX + 1, file) : 0;
    bool failed = !text || ferror (file);
    fclose (file);
    if (failed) {
        free (text);
        return mdl_opt_fail (self, "cannot read the configuration file %s", self->config);
    }
    if (size > S_CONFIG_MAX) {
        free (text);
        return mdl_opt_fail (self, "%s: larger than %d bytes", self->config, S_CONFIG_MAX);
    }
    text [size] = 0;
    zconfig_t *root = strlen (text) == size ? zconfig_str_load (text) : NULL;
    free (text);
    if (!root)
        return mdl_opt_fail (self, "%s: not a valid ZPL file", self->config);
    int rc = 0;
    for (zconfig_t *item = zconfig_child (root); item && rc == 0; item = zconfig_next (item)) {
        const char *name = zconfig_name (item);
        bool section = zconfig_child (item) != NULL;
        if (section && streq (name, self->section)) {
            for (zconfig_t *key = zconfig_child (item); key && rc == 0; key = zconfig_next (key))
                rc = s_file_key (self, key, self->section);
            continue;
        }
        bool other = false;
        for (int i = 0; s_programs [i] && !other; i++)
            other = streq (name, s_programs [i]) && !streq (name, self->section);
        if (other)
            continue;
        if (section)
            rc = mdl_opt_fail (self, "%s: unknown section '%s' (sections: broker, worker, "
                               "publish, ctl)", self->config, name);
        else
            rc = s_file_key (self, item, "");
    }
    zconfig_destroy (&root);
    return rc;
}

//  --------------------------------------------------------------------------

int
mdl_opt_parse (mdl_opt_t *self, int argc, char **argv)
{
    assert (self && argv);
    bool answered = false;
    if (s_parse_argv (self, argc, argv, &answered))
        return -1;
    if (answered)
        return 1;
    if (!self->args)
        return mdl_opt_fail (self, "out of memory");
    //  An option that goes with some sub-commands only: the command is the
    //  first argument. From the environment or a file it simply does not
    //  apply; on the command line it is a mistake.
    for (size_t i = 0; i < self->count; i++) {
        const mdl_opt_spec_t *spec = &self->specs [i];
        if (!spec->name || !spec->scope || self->sources [i] != MDL_OPT_FLAG)
            continue;
        if (self->argc == 0 || !s_in_scope (spec->scope, self->args [0]))
            return mdl_opt_fail (self, "option --%s goes with: %s", spec->name, spec->scope);
    }
    if (s_parse_env (self) || s_parse_file (self))
        return -1;
    for (size_t i = 0; i < self->count; i++) {
        const mdl_opt_spec_t *spec = &self->specs [i];
        if (spec->name && spec->scope && self->sources [i] != MDL_OPT_FLAG
        &&  (self->argc == 0 || !s_in_scope (spec->scope, self->args [0]))) {
            free (self->values [i]);
            self->values [i] = NULL;
            self->sources [i] = MDL_OPT_UNSET;
        }
    }
    return 0;
}

const char *
mdl_opt_value (const mdl_opt_t *self, const char *name)
{
    assert (self && name);
    return self->values [s_index (self, name)];
}

mdl_opt_source_t
mdl_opt_source (const mdl_opt_t *self, const char *name)
{
    assert (self && name);
    return self->sources [s_index (self, name)];
}

bool
mdl_opt_flag (const mdl_opt_t *self, const char *name)
{
    const char *value = mdl_opt_value (self, name);
    return value && streq (value, "true");
}

size_t
mdl_opt_argc (const mdl_opt_t *self)
{
    assert (self);
    return self->argc;
}

const char *
mdl_opt_arg (const mdl_opt_t *self, size_t index)
{
    assert (self);
    return index < self->argc ? self->args [index] : NULL;
}

const char *
mdl_opt_config_file (const mdl_opt_t *self)
{
    assert (self);
    return self->config;
}

int
mdl_opt_bad (const mdl_opt_t *self, const char *name, const char *expected)
{
    size_t index = s_index (self, name);
    char where [256];
    s_describe (self, index, where, sizeof where);
    const char *value = self->values [index];
    return mdl_opt_fail (self, "invalid value '%s' for %s: expected %s", value ? value : "",
                         where, expected);
}

int
mdl_opt_string (const mdl_opt_t *self, const char *name, const char **value)
{
    const char *text = mdl_opt_value (self, name);
    if (!text)
        return 0;
    if (!*text)
        return mdl_opt_bad (self, name, "a value that is not empty");
    *value = text;
    return 0;
}

int
mdl_opt_int (const mdl_opt_t *self, const char *name, int64_t min, int64_t max,
             int64_t *value, const char *expected)
{
    const char *text = mdl_opt_value (self, name);
    if (text && mdl_parse_int (text, min, max, value) != 0)
        return mdl_opt_bad (self, name, expected);
    return 0;
}

int
mdl_opt_double (const mdl_opt_t *self, const char *name, double min, double max,
                double *value, const char *expected)
{
    const char *text = mdl_opt_value (self, name);
    if (text && mdl_parse_double (text, min, max, value) != 0)
        return mdl_opt_bad (self, name, expected);
    return 0;
}

int
mdl_opt_duration (const mdl_opt_t *self, const char *name, int64_t min_ms, int64_t max_ms,
                  int64_t *value, const char *expected)
{
    const char *text = mdl_opt_value (self, name);
    int64_t ms;
    if (!text)
        return 0;
    if (mdl_parse_duration_ms (text, &ms) != 0 || ms < min_ms || ms > max_ms)
        return mdl_opt_bad (self, name, expected);
    *value = ms;
    return 0;
}

//  --------------------------------------------------------------------------
//  Help

//  One option's lines: the name and value, its help, its variable.
static void
s_usage_entry (const mdl_opt_t *self, FILE *out, const char *shortname, const char *name,
               const char *arg, const char *help, const char *variable)
{
    char head [96];
    if (shortname)
        snprintf (head, sizeof head, "  %s, --%s%s%s", shortname, name, arg ? " " : "", arg ? arg : "");
    else
        snprintf (head, sizeof head, "  --%s%s%s", name, arg ? " " : "", arg ? arg : "");
    int column = fprintf (out, "%s", head);
    if (column >= S_HELP_COLUMN) {
        fprintf (out, "\n");
        column = 0;
    }
    const char *line = help ? help : "";
    size_t last_len = 0;
    do {
        size_t len = strcspn (line, "\n");
        fprintf (out, "%*s%.*s", S_HELP_COLUMN - column, "", (int) len, line);
        last_len = len;
        line += len;
        if (*line == '\n') {
            fprintf (out, "\n");
            line++;
        }
        column = 0;
    } while (*line);
    if (variable) {
        size_t need = S_HELP_COLUMN + last_len + 3 + strlen (variable) + 1;
        if (need <= S_HELP_WIDTH)
            fprintf (out, "  [%s]\n", variable);
        else
            fprintf (out, "\n%*s[%s]\n", S_HELP_COLUMN, "", variable);
    }
    else
        fprintf (out, "\n");
    (void) self;
}

void
mdl_opt_usage (const mdl_opt_t *self, FILE *out)
{
    assert (self && out);
    if (self->usage)
        fprintf (out, "%s", self->usage);
    char variable [128], shortname [4];
    for (size_t i = 0; i < self->count; i++) {
        const mdl_opt_spec_t *spec = &self->specs [i];
        if (!spec->name) {
            fprintf (out, "\n%s:\n", spec->help);
            continue;
        }
        s_env_name (self, spec->name, variable, sizeof variable);
        snprintf (shortname, sizeof shortname, "-%c", spec->short_name);
        s_usage_entry (self, out, spec->short_name ? shortname : NULL, spec->name, spec->arg,
                       spec->help, variable);
    }
    fprintf (out, "\nConfiguration:\n");
    snprintf (variable, sizeof variable, "%sCONFIG", self->prefix);
    s_usage_entry (self, out, NULL, "config", "FILE", "read options from FILE (ZPL, see below)",
                   variable);
    s_usage_entry (self, out, "-h", "help", NULL, "this text", NULL);
    s_usage_entry (self, out, NULL, "version", NULL, "print the version", NULL);
    fprintf (out,
        "\n"
        "Every option is also an environment variable (in brackets above) and a key of\n"
        "the --config file: its long name, at the top level or in a section '%s'\n"
        "(sections of the other Mandrill programs are skipped, so one file can serve\n"
        "all of them), e.g.\n"
        "    %s\n"
        "        %s = %s\n"
        "Precedence: command line > environment > file > default. Flags take true or\n"
        "false there (also yes/no, on/off, 1/0). An unknown key, or an unknown\n"
        "%s* variable, is an error. A value that starts with a dash is\n"
        "written --option=-value.\n",
        self->section, self->section,
        self->count && self->specs [0].name ? self->specs [0].name
            : self->count > 1 && self->specs [1].name ? self->specs [1].name : "option",
        "VALUE", self->prefix);
    if (self->epilogue)
        fprintf (out, "\n%s", self->epilogue);
    fflush (out);
}
