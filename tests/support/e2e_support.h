/*  e2e_support: process and socket helpers shared by the end-to-end tests
    (tests/test_e2e_*.c), which run the built Mandrill programs as child
    processes against each other on 127.0.0.1.

    It covers what every such test needs and nothing test-specific: a free
    port, a temp directory, a program started with its output in a log
    file, waiting for and killing a child by its PID, looking for a line
    in a log, a DEALER with timeouts and one request/reply over the MMP
    codec. Each test keeps its own table of children and kills them in its
    own teardown; these functions only act on the PID they are given.

    Functions documented as "fails the test" report with cr_assert, so
    they may only be called from a Criterion test or its init/fini; the
    others return a value and leave the verdict to the caller.
*/
#ifndef E2E_SUPPORT_H_INCLUDED
#define E2E_SUPPORT_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "mmp.h"

//  Path of a built program from the environment variable var (for example
//  MANDRILL_BROKER, set by ctest). Fails the test when var is not set.
const char *e2e_program (const char *var);

//  A TCP port on 127.0.0.1 that was free a moment ago (the kernel's pick
//  for port 0). Another process may take it before the test binds it;
//  the tests accept that small race. Fails the test if no socket can be
//  bound.
int e2e_free_port (void);

//  Make a fresh directory "/tmp/<prefix>XXXXXX" and write its path into
//  dir (size bytes). Fails the test if it cannot be made.
void e2e_dir_new (char *dir, size_t size, const char *prefix);

//  Remove dir and everything below it, unless dir is empty ("") or
//  MANDRILL_KEEP_TMP is set (to look at the logs of a failed run).
//  Returns 0, or -1 after printing on stderr what could not be removed.
int e2e_dir_remove (const char *dir);

//  Start argv (argv [0] a path, NULL-terminated) as a child process in
//  dir, its stdout and stderr appended to dir/log_name. The child exits
//  126 if it cannot enter dir and 127 if it cannot run argv [0]. Returns
//  the child's PID; fails the test if it cannot fork.
pid_t e2e_spawn (const char *dir, const char *log_name, char *const argv []);

//  Reap pid if it has exited, without waiting. Returns true and stores
//  its wait status in *status if it had, false if it is still running.
bool e2e_reaped (pid_t pid, int *status);

//  Wait up to timeout_ms for pid to exit, and reap it. Returns its wait
//  status, or -1 if it was still running at the deadline.
int e2e_wait_exit (pid_t pid, int timeout_ms);

//  Kill pid with SIGKILL and reap it. SIGKILL cannot be caught, so the
//  wait ends as soon as the kernel has taken the process down.
void e2e_kill (pid_t pid);

//  True if the file dir/log_name exists and one of its lines (up to 4 KiB
//  each) contains text.
bool e2e_log_has (const char *dir, const char *log_name, const char *text);

//  A DEALER connected to endpoint, linger 0, with these receive and send
//  timeouts in milliseconds (-1: wait for ever). Caller destroys it. Fails
//  the test if the socket cannot be made or connected.
zsock_t *e2e_dealer (const char *endpoint, int rcvtimeo, int sndtimeo);

//  Send command with the JSON text body over sock (a DEALER to a broker's
//  frontend) and receive one reply, waiting as long as the socket's
//  receive timeout. Returns 0 with the reply decoded into *reply (caller
//  calls mmp_msg_reset), -1 if no reply came, -2 if the reply was
//  malformed, -3 if the request could not be sent. On every return other
//  than 0, *reply is empty.
int e2e_request (zsock_t *sock, mmp_command_t command, const char *body, mmp_msg_t *reply);

#endif
