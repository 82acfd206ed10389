/*  wrk_exec: the worker's "exec" restart mode.

    A restart command is an argv template given once (--restart-cmd),
    split on blanks; single or double quotes group words (no escapes, no
    shell). The placeholders {hostname}, {instance_name} and {message_id}
    are replaced inside any word; any other {name} is refused when the
    template is parsed, so a typo fails at start, not per message.

    Each restart runs as a child process, started with posix_spawnp, no
    shell, in its own process group (so a kill reaches what it spawned),
    with stdin from /dev/null and the default signal mask and dispositions.
    The owner learns of exits by calling wrk_exec_reap () when SIGCHLD
    arrives (the worker watches it through its signalfd). Exit 0 means
    success; anything else, or a signal, is a failure with a reason.
    Children are tracked by the job token the core gave them, so a kill or
    an exit of an older job never lands on a newer one.

    Process groups and pid reuse: a child's group id is its pid, which the
    kernel may give to a new process once the child is reaped. So the
    group is only ever signalled while the leader is unreaped: reaping
    first looks at an exited child without reaping it (waitid WNOWAIT),
    kills its group (what it left running in the background), and only
    then reaps it. A child that cannot be tracked (an index insert fails)
    is killed and reaped at once and its start reported failed, so no job
    waits for its timeout on a child nobody watches.
*/
#ifndef WRK_EXEC_H_INCLUDED
#define WRK_EXEC_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

typedef struct _wrk_exec_t wrk_exec_t;

//  Parse the template. Returns NULL and writes a reason into error on a
//  bad template (empty, unbalanced quote, unknown placeholder).
wrk_exec_t *wrk_exec_new (const char *template, char *error, size_t error_size);
void wrk_exec_destroy (wrk_exec_t **self_p);

//  The argv for one message: a NULL-terminated array the caller frees with
//  wrk_exec_argv_free (). NULL when out of memory.
char **wrk_exec_expand (wrk_exec_t *self, const char *hostname,
                        const char *instance_name, const char *message_id);
void wrk_exec_argv_free (char ***argv_p);

//  Start the command for one message. Returns 0, or -1 (logged) when it
//  could not be started (e.g. program not found).
int wrk_exec_start (wrk_exec_t *self, uint64_t token, const char *hostname,
                    const char *instance_name, const char *message_id);

//  The same with the template of command (another wrk_exec_t, e.g. the
//  verify or health command), tracked, killed and reaped by self: one
//  table per process, since reaping takes any exited child.
int wrk_exec_start_as (wrk_exec_t *self, wrk_exec_t *command, uint64_t token,
                       const char *hostname, const char *instance_name, const char *message_id);

//  SIGKILL the process group of the child started for token, if it still
//  runs. Its exit is still reaped, but not reported.
void wrk_exec_kill (wrk_exec_t *self, uint64_t token);

//  Report every child that has exited: done (arg, message_id, token, ok,
//  reason). reason lives only during the call.
typedef void (wrk_exec_done_fn) (void *arg, const char *message_id, uint64_t token,
                                 bool ok, const char *reason);
void wrk_exec_reap (wrk_exec_t *self, wrk_exec_done_fn *done, void *arg);

//  The signal call (kill (2) by default); tests pass a stand-in that also
//  records whether the target was still unreaped. NULL restores kill.
typedef int (wrk_exec_kill_fn) (pid_t pid, int signal);
void wrk_exec_set_kill (wrk_exec_t *self, wrk_exec_kill_fn *kill_fn);

//  Children started and not yet reaped.
size_t wrk_exec_running (wrk_exec_t *self);

#endif
