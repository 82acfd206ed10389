/*  mdl_opt: the one option parser of every Mandrill program, and its
    configuration by command line, environment and configuration file.

    A program describes its options in a table (mdl_opt_spec_t) and gets,
    for each, one final text value and where it came from. Precedence:
    command line > environment > configuration file > the program's own
    default (an option nobody set has no value, and the program keeps its
    default). Values are checked by the program with the typed getters
    below, which print an error that names the option and its source.

    Command line: getopt_long, so `--x=y` and `--x y` both work, options
    and arguments may come in any order, `--` ends the options, and an
    unambiguous prefix of a long name is accepted. An option that takes a
    value never takes the next option as its value: `--data-dir --salvage`
    is the error "option --data-dir needs a value" (write `--x=-y` for a
    value that really starts with a dash). A flag given a value
    (`--salvage=1`) is an error.

    Environment: option `data-dir` of mandrill-broker is
    MANDRILL_BROKER_DATA_DIR (the program's short name and the option in
    upper case, dashes as underscores). A flag takes true/false (also
    yes/no, on/off, 1/0). MANDRILL_<PROGRAM>_CONFIG names the file when
    --config is not given. Any other MANDRILL_<PROGRAM>_* variable is an
    error naming it, so a typo is never silently ignored.

    Configuration file (--config FILE): CZMQ's ZPL, read with zconfig. A
    key is an option's long name (underscores are taken as dashes), at the
    top level or inside a section named for the program (broker, worker,
    publish, ctl); sections of the other Mandrill programs are skipped, so
    one file can serve all of them. An unknown key or section is an error,
    and so are a file that cannot be read, is not ZPL (zconfig refuses
    it), holds a NUL byte or is larger than 1 MiB.

    Built in: --config FILE, -h/--help (the generated help: every option
    with its variable name, then the program's epilogue) and --version.

    Exit codes shared by every program (MDL_EXIT_*); codes from 4 up are
    the program's own and its --help lists them.

    Ownership and cost: values are copied into the parser and stay valid
    until mdl_opt_destroy. Parsing is O(options x (arguments + variables +
    keys)); it runs once at start. Not thread-safe (getopt's state is
    global): parse before starting threads.
*/
#ifndef MDL_OPT_H_INCLUDED
#define MDL_OPT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MDL_EXIT_OK         0   //  Done
#define MDL_EXIT_FAILURE    1   //  A runtime failure (cannot start, bind, reach the broker, ...)
#define MDL_EXIT_USAGE      2   //  Bad command line, environment or configuration file
#define MDL_EXIT_DATA       3   //  Bad data: a corrupt journal, an invalid request in the input

typedef struct {
    const char *name;           //  Long name without dashes; NULL for a heading in --help
    char short_name;            //  One-letter alias, or 0
    const char *arg;            //  Name of its value in --help ("DIR"); NULL for a flag
    const char *help;           //  Help text; lines separated by '\n' (a heading's title)
    const char *scope;          //  Sub-commands (space-separated) it goes with; NULL: all
} mdl_opt_spec_t;

typedef enum {
    MDL_OPT_UNSET = 0,          //  Nobody gave it: the program's default
    MDL_OPT_FILE,               //  From the configuration file
    MDL_OPT_ENV,                //  From the environment
    MDL_OPT_FLAG                //  From the command line
} mdl_opt_source_t;

typedef struct _mdl_opt_t mdl_opt_t;

//  Create a parser for program (e.g. "mandrill-broker"; the part after
//  "mandrill-" names its variables and its file section). specs ends with
//  an entry whose name and help are both NULL; it is borrowed and must
//  outlive the parser. usage is printed first by --help ("Usage: ..." and
//  a description), epilogue last (signals, exit codes); either may be NULL.
mdl_opt_t *mdl_opt_new (const char *program, const mdl_opt_spec_t *specs,
                        const char *usage, const char *epilogue);
void mdl_opt_destroy (mdl_opt_t **self_p);

//  For tests: read this environment instead of environ (borrowed), and
//  write help and errors to these streams instead of stdout and stderr.
void mdl_opt_set_env (mdl_opt_t *self, char **env);
void mdl_opt_set_output (mdl_opt_t *self, FILE *out, FILE *err);

//  Parse the command line, then the environment, then the file. Returns
//  0 to go on, 1 when --help or --version was answered (exit
//  MDL_EXIT_OK), -1 after printing a usage error (exit MDL_EXIT_USAGE).
//  May permute argv (GNU getopt does).
int mdl_opt_parse (mdl_opt_t *self, int argc, char **argv);

//  The final value of an option, or NULL when unset. A flag's value is
//  "true" or "false". name must be in the table (asserted).
const char *mdl_opt_value (const mdl_opt_t *self, const char *name);
mdl_opt_source_t mdl_opt_source (const mdl_opt_t *self, const char *name);

//  Is the flag set to true (by whichever source wins)?
bool mdl_opt_flag (const mdl_opt_t *self, const char *name);

//  Arguments that are not options, in order.
size_t mdl_opt_argc (const mdl_opt_t *self);
const char *mdl_opt_arg (const mdl_opt_t *self, size_t index);

//  The configuration file read, or NULL.
const char *mdl_opt_config_file (const mdl_opt_t *self);

//  Typed getters: when the option has a value, check and convert it into
//  *value and return 0; when it has none, leave *value alone and return 0;
//  when the value is bad, print "invalid value 'V' for SOURCE: expected
//  EXPECTED" and return -1. Ranges are inclusive; durations take a unit.
int mdl_opt_string (const mdl_opt_t *self, const char *name, const char **value);
int mdl_opt_int (const mdl_opt_t *self, const char *name, int64_t min, int64_t max,
                 int64_t *value, const char *expected);
int mdl_opt_double (const mdl_opt_t *self, const char *name, double min, double max,
                    double *value, const char *expected);
int mdl_opt_duration (const mdl_opt_t *self, const char *name, int64_t min_ms,
                      int64_t max_ms, int64_t *value, const char *expected);

//  Report a bad value of name found by the program's own check. Returns -1.
int mdl_opt_bad (const mdl_opt_t *self, const char *name, const char *expected);

//  Report any other usage error ("PROGRAM: text" and a pointer to
//  --help) on the error stream. Returns -1.
int mdl_opt_fail (const mdl_opt_t *self, const char *format, ...)
    __attribute__ ((format (printf, 2, 3)));

//  Print the generated help to out.
void mdl_opt_usage (const mdl_opt_t *self, FILE *out);

#endif
