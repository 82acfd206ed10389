/*  wrk_exec: see wrk_exec.h. Children live in two zhashx indexes, by pid
    (for reaping) and by token (for kills); both keys point into the entry.
*/
#include "wrk_exec.h"

#include <assert.h>
#include <czmq.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>

#include "mdl_log.h"
#include "mdl_map.h"

extern char **environ;

//  One running child.
typedef struct {
    uint64_t token;             //  Job token; key of by_token
    uint64_t pid_key;           //  pid as a 64-bit key of by_pid
    pid_t pid;                  //  The child, also its process group
    bool killed;                //  We killed it: do not report its exit
    char message_id [37];       //  For the report
} child_t;

struct _wrk_exec_t {
    char **words;               //  Template words, placeholders unexpanded
    size_t word_count;          //  Number of words
    zhashx_t *by_pid;           //  pid -> child_t, owns the entries
    zhashx_t *by_token;         //  token -> child_t
    wrk_exec_kill_fn *kill_fn;  //  kill (2), or a test's stand-in
};

static const char *s_placeholders [] = { "{hostname}", "{instance_name}", "{message_id}" };

static void
s_child_free (void **item)
{
    free (*item);
    *item = NULL;
}

//  Every "{...}" in word must be a known placeholder.
static int
s_check_word (const char *word, char *error, size_t error_size)
{
    for (const char *open = strchr (word, '{'); open; open = strchr (open + 1, '{')) {
        bool known = false;
        for (size_t i = 0; i < 3; i++)
            if (strncmp (open, s_placeholders [i], strlen (s_placeholders [i])) == 0)
                known = true;
        if (!known) {
            const char *close = strchr (open, '}');
            snprintf (error, error_size, "unknown placeholder %.*s in restart command "
                      "(known: {hostname} {instance_name} {message_id})",
                      close ? (int) (close - open + 1) : (int) strlen (open), open);
            return -1;
        }
    }
    return 0;
}

wrk_exec_t *
wrk_exec_new (const char *template, char *error, size_t error_size)
{
    wrk_exec_t *self = calloc (1, sizeof *self);
    if (!self) {
        snprintf (error, error_size, "out of memory");
        return NULL;
    }
    size_t length = template ? strlen (template) : 0;
    char *word = malloc (length + 1);
    self->words = calloc (length / 2 + 2, sizeof (char *));
    self->by_pid = zhashx_new ();
    self->by_token = zhashx_new ();
    self->kill_fn = kill;
    if (!word || !self->words || !self->by_pid || !self->by_token) {
        snprintf (error, error_size, "out of memory");
        free (word);
        wrk_exec_destroy (&self);
        return NULL;
    }
    for (zhashx_t *hash = self->by_pid; hash; hash = hash == self->by_pid ? self->by_token : NULL) {
        zhashx_set_key_duplicator (hash, NULL);
        zhashx_set_key_destructor (hash, NULL);
        zhashx_set_key_hasher (hash, mdl_hash_u64);
        zhashx_set_key_comparator (hash, mdl_compare_u64);
    }
    zhashx_set_destructor (self->by_pid, s_child_free);

    //  Split: blanks separate words; quotes group, and may sit inside a word
    const char *p = template ? template : "";
    while (*p) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p)
            break;
        size_t used = 0;
        while (*p && *p != ' ' && *p != '\t') {
            if (*p == '\'' || *p == '"') {
                char quote = *p++;
                while (*p && *p != quote)
                    word [used++] = *p++;
                if (*p != quote) {
                    snprintf (error, error_size, "unbalanced %c quote in restart command", quote);
                    free (word);
                    wrk_exec_destroy (&self);
                    return NULL;
                }
                p++;
            }
            else
                word [used++] = *p++;
        }
        word [used] = 0;
        if (s_check_word (word, error, error_size) != 0) {
            free (word);
            wrk_exec_destroy (&self);
            return NULL;
        }
        self->words [self->word_count] = strdup (word);
        if (!self->words [self->word_count++]) {
            snprintf (error, error_size, "out of memory");
            free (word);
            wrk_exec_destroy (&self);
            return NULL;
        }
    }
    free (word);
    if (self->word_count == 0) {
        snprintf (error, error_size, "restart command is empty");
        wrk_exec_destroy (&self);
        return NULL;
    }
    return self;
}

void
wrk_exec_destroy (wrk_exec_t **self_p)
{
    assert (self_p);
    if (*self_p) {
        wrk_exec_t *self = *self_p;
        if (self->words)
            for (size_t i = 0; i < self->word_count; i++)
                free (self->words [i]);
        free (self->words);
        zhashx_destroy (&self->by_token);
        zhashx_destroy (&self->by_pid);
        free (self);
        *self_p = NULL;
    }
}

void
wrk_exec_argv_free (char ***argv_p)
{
    if (argv_p && *argv_p) {
        for (char **arg = *argv_p; *arg; arg++)
            free (*arg);
        free (*argv_p);
        *argv_p = NULL;
    }
}

char **
wrk_exec_expand (wrk_exec_t *self, const char *hostname,
                 const char *instance_name, const char *message_id)
{
    const char *values [3] = { hostname, instance_name, message_id };
    char **argv = calloc (self->word_count + 1, sizeof (char *));
    if (!argv)
        return NULL;
    for (size_t i = 0; i < self->word_count; i++) {
        const char *word = self->words [i];
        size_t size = strlen (word) + 1;
        for (size_t k = 0; k < 3; k++)
            size += strlen (values [k]) * (strlen (word) / strlen (s_placeholders [k]) + 1);
        char *out = malloc (size);
        if (!out) {
            wrk_exec_argv_free (&argv);
            return NULL;
        }
        size_t used = 0;
        for (const char *p = word; *p;) {
            bool replaced = false;
            for (size_t k = 0; k < 3 && !replaced; k++) {
                size_t len = strlen (s_placeholders [k]);
                if (strncmp (p, s_placeholders [k], len) == 0) {
                    size_t vlen = strlen (values [k]);
                    memcpy (out + used, values [k], vlen);
                    used += vlen;
                    p += len;
                    replaced = true;
                }
            }
            if (!replaced)
                out [used++] = *p++;
        }
        out [used] = 0;
        argv [i] = out;
    }
    return argv;
}

//  Kill and reap a child that is not in the indexes (blocking, but brief:
//  SIGKILL cannot be caught).
static void
s_stop_untracked (wrk_exec_t *self, pid_t pid)
{
    self->kill_fn (-pid, SIGKILL);
    int status;
    while (waitpid (pid, &status, 0) < 0 && errno == EINTR)
        ;
}

int
wrk_exec_start (wrk_exec_t *self, uint64_t token, const char *hostname,
                const char *instance_name, const char *message_id)
{
    return wrk_exec_start_as (self, self, token, hostname, instance_name, message_id);
}

int
wrk_exec_start_as (wrk_exec_t *self, wrk_exec_t *command, uint64_t token,
                   const char *hostname, const char *instance_name, const char *message_id)
{
    char **argv = wrk_exec_expand (command, hostname, instance_name, message_id);
    child_t *child = calloc (1, sizeof *child);
    if (!argv || !child) {
        mdl_error ("out of memory starting restart of %s", hostname);
        wrk_exec_argv_free (&argv);
        free (child);
        return -1;
    }
    posix_spawnattr_t attr;
    posix_spawn_file_actions_t actions;
    posix_spawnattr_init (&attr);
    posix_spawn_file_actions_init (&actions);
    //  The worker blocks its signals for the signalfd; a child must not
    //  inherit that, or it could not be stopped with SIGTERM.
    sigset_t empty, all;
    sigemptyset (&empty);
    sigfillset (&all);
    posix_spawnattr_setsigmask (&attr, &empty);
    posix_spawnattr_setsigdefault (&attr, &all);
    posix_spawnattr_setpgroup (&attr, 0);
    posix_spawnattr_setflags (&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF
                                   | POSIX_SPAWN_SETPGROUP);
    posix_spawn_file_actions_addopen (&actions, 0, "/dev/null", O_RDONLY, 0);
    pid_t pid;
    int rc = posix_spawnp (&pid, argv [0], &actions, &attr, argv, environ);
    posix_spawn_file_actions_destroy (&actions);
    posix_spawnattr_destroy (&attr);
    if (rc != 0) {
        mdl_error ("cannot run restart command %s for %s: %s", argv [0], hostname, strerror (rc));
        wrk_exec_argv_free (&argv);
        free (child);
        return -1;
    }
    mdl_debug ("started %s (pid %d) for %s", argv [0], (int) pid, hostname);
    wrk_exec_argv_free (&argv);
    child->token = token;
    child->pid = pid;
    child->pid_key = (uint64_t) pid;
    snprintf (child->message_id, sizeof child->message_id, "%s", message_id);
    //  A child we cannot track would run unwatched and its job would wait
    //  for the timeout: stop it now and report the start as failed
    if (zhashx_insert (self->by_pid, &child->pid_key, child) != 0) {
        mdl_error ("cannot track restart of %s (pid %d); killed", hostname, (int) pid);
        s_stop_untracked (self, pid);
        free (child);
        return -1;
    }
    if (zhashx_insert (self->by_token, &child->token, child) != 0) {
        mdl_error ("restart of %s: token %" PRIu64 " already running; killed", hostname, token);
        s_stop_untracked (self, pid);
        zhashx_delete (self->by_pid, &child->pid_key);      //  Frees child
        return -1;
    }
    return 0;
}

void
wrk_exec_kill (wrk_exec_t *self, uint64_t token)
{
    child_t *child = zhashx_lookup (self->by_token, &token);
    if (child && !child->killed) {
        //  Not reaped yet (wrk_exec_reap kills the group before it reaps),
        //  so the group id is still ours even if the leader exited
        self->kill_fn (-child->pid, SIGKILL);
        child->killed = true;
    }
}

void
wrk_exec_set_kill (wrk_exec_t *self, wrk_exec_kill_fn *kill_fn)
{
    self->kill_fn = kill_fn ? kill_fn : kill;
}

void
wrk_exec_reap (wrk_exec_t *self, wrk_exec_done_fn *done, void *arg)
{
    while (true) {
        //  Look at an exited child without reaping it: while the leader is
        //  a zombie its pid, and so its process group id, cannot be reused,
        //  so the group kill below can only reach what it left behind
        siginfo_t info;
        memset (&info, 0, sizeof info);
        if (waitid (P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) != 0 || info.si_pid == 0)
            break;
        pid_t pid = info.si_pid;
        uint64_t key = (uint64_t) pid;
        child_t *child = zhashx_lookup (self->by_pid, &key);
        if (child)
            //  Whatever the child left behind in its group goes with it
            self->kill_fn (-pid, SIGKILL);
        int status;
        if (waitpid (pid, &status, WNOHANG) != pid)
            break;          //  Not reapable after all (cannot happen): next SIGCHLD
        if (!child)
            continue;       //  Not one of ours (reaped all the same)
        char reason [64];
        bool ok = WIFEXITED (status) && WEXITSTATUS (status) == 0;
        if (WIFEXITED (status))
            snprintf (reason, sizeof reason, "restart command exited with status %d",
                      WEXITSTATUS (status));
        else
            snprintf (reason, sizeof reason, "restart command killed by signal %d",
                      WIFSIGNALED (status) ? WTERMSIG (status) : 0);
        bool report = !child->killed;
        uint64_t token = child->token;
        char message_id [37];
        memcpy (message_id, child->message_id, sizeof message_id);
        zhashx_delete (self->by_token, &child->token);
        zhashx_delete (self->by_pid, &key);     //  Frees child
        if (report)
            done (arg, message_id, token, ok, reason);
    }
}

size_t
wrk_exec_running (wrk_exec_t *self)
{
    return zhashx_size (self->by_pid);
}
