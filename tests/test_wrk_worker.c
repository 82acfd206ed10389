/*  Tests for wrk_worker, the wiring: the real loop in a child process,
    against a scripted broker (a ROUTER on 127.0.0.1 in this process) and a
    store that is not a thread but an fd the loop polls, as PostgreSQL's is.
    It shows that the loop watches what the store says, re-registers when
    the fd changes, and acks only saves the store reported.
*/
#include <criterion/criterion.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "mdl_log.h"
#include "wrk_db.h"
#include "wrk_worker.h"

//  --------------------------------------------------------------------------
//  The fd store: flush writes a byte to a pipe; the loop sees the read end
//  readable and calls service, which reports every flushed save committed
//  and then moves to a new pipe (a new fd, like a PostgreSQL reconnect).

typedef struct {
    int fds [2];                //  The pipe the loop watches (read end)
    char ids [64][37];          //  Saves queued or flushed
    uint64_t tokens [64];       //  Their tokens
    size_t queued;              //  Saved, not flushed
    size_t flushed;             //  Flushed, not reported (the first ones)
} fd_store_t;

static int s_switches;          //  Pipes replaced (the child's exit code says)

static int
s_pipe (int fds [2])
{
    if (pipe (fds) != 0)
        return -1;
    fcntl (fds [0], F_SETFL, O_NONBLOCK);
    fcntl (fds [1], F_SETFL, O_NONBLOCK);
    return 0;
}

static int
s_fd_save (void *self_, const wrk_db_row_t *row)
{
    fd_store_t *self = self_;
    size_t at = self->flushed + self->queued;
    if (at >= 64)
        return -1;
    snprintf (self->ids [at], 37, "%s", row->message_id);
    self->tokens [at] = row->token;
    self->queued++;
    return 0;
}

static int
s_fd_outcome (void *self_, const char *id, const char *outcome, int64_t wall)
{
    (void) self_, (void) id, (void) outcome, (void) wall;
    return 0;
}

static int
s_fd_flush (void *self_)
{
    fd_store_t *self = self_;
    if (self->queued == 0)
        return 0;
    if (write (self->fds [1], "x", 1) != 1)
        return -1;
    self->flushed += self->queued;
    self->queued = 0;
    return 0;
}

static void
s_fd_watch (void *self_, wrk_db_watch_t *watch)
{
    fd_store_t *self = self_;
    watch->fd = self->fds [0];
    watch->events = ZMQ_POLLIN;
}

static int64_t
s_fd_next_wake (void *self_)
{
    (void) self_;
    return -1;
}

static int
s_fd_service (void *self_, wrk_db_done_fn *done, void *arg)
{
    fd_store_t *self = self_;
    char bytes [64];
    if (read (self->fds [0], bytes, sizeof bytes) <= 0)
        return 0;           //  A spurious wake-up
    size_t count = self->flushed;
    for (size_t i = 0; i < count; i++)
        done (arg, self->ids [i], self->tokens [i], true, "");
    //  Queued during the callbacks: move them to the front
    memmove (self->ids, self->ids + count, self->queued * sizeof self->ids [0]);
    memmove (self->tokens, self->tokens + count, self->queued * sizeof self->tokens [0]);
    self->flushed = 0;
    //  A new fd before the old one closes, so its number differs
    int fresh [2];
    if (s_pipe (fresh) == 0) {
        close (self->fds [0]);
        close (self->fds [1]);
        self->fds [0] = fresh [0];
        self->fds [1] = fresh [1];
        s_switches++;
    }
    return (int) count;
}

static size_t
s_fd_pending (void *self_)
{
    return ((fd_store_t *) self_)->flushed;
}

static void
s_fd_destroy (void **self_p)
{
    fd_store_t *self = *self_p;
    if (self) {
        close (self->fds [0]);
        close (self->fds [1]);
        free (self);
        *self_p = NULL;
    }
}

static const wrk_db_ops_t s_fd_ops = {
    "fd-test", s_fd_save, s_fd_outcome, s_fd_flush, s_fd_watch, s_fd_next_wake,
    s_fd_service, s_fd_pending, s_fd_destroy
};

//  --------------------------------------------------------------------------

static int
s_free_port (void)
{
    int fd = socket (AF_INET, SOCK_STREAM, 0);
    cr_assert_geq (fd, 0);
    struct sockaddr_in address = { .sin_family = AF_INET, .sin_addr.s_addr = htonl (INADDR_LOOPBACK) };
    cr_assert_eq (bind (fd, (struct sockaddr *) &address, sizeof address), 0);
    socklen_t size = sizeof address;
    cr_assert_eq (getsockname (fd, (struct sockaddr *) &address, &size), 0);
    close (fd);
    return ntohs (address.sin_port);
}

//  The child: the worker's real loop with the fd store. Exit 0 after a
//  clean shutdown in which the store moved to a new fd at least twice.
static int
s_child (const char *endpoint)
{
    mdl_log_set_level (MDL_LOG_WARN);
    fd_store_t *store = calloc (1, sizeof *store);
    if (!store || s_pipe (store->fds) != 0)
        return 20;
    wrk_options_t options;
    memset (&options, 0, sizeof options);
    options.broker = endpoint;
    options.credit = 10;
    options.name = "wt";
    options.grace_ms = 3000;
    options.heartbeat_ms = 1000;
    wrk_config_defaults (&options.jobs);
    options.jobs.restart_latency_ms = 20;
    options.db = wrk_db_new_with (&s_fd_ops, store);
    if (!options.db)
        return 21;
    int rc = wrk_worker_run (&options);
    if (rc != 0)
        return 22;
    return s_switches >= 2 ? 0 : 23;
}

static void
s_deliver (zsock_t *router, zframe_t *peer, uint64_t id)
{
    char body [512];
    int size = snprintf (body, sizeof body,
        "{\"deliveries\":[{\"delivery_id\":%" PRIu64 ",\"attempt\":1,\"deadline_ms\":10000,"
        "\"steps\":[],\"message\":{\"message_id\":\"00000000-0000-4000-8000-%012" PRIu64 "\","
        "\"instance_name\":\"cattle-%" PRIu64 "\",\"hostname\":\"cattle-%" PRIu64 ".example.net\"}}]}",
        id, id, id, id);
    cr_assert_eq (mmp_send (router, peer, MMP_DELIVER, body, (size_t) size), 0);
}

//  Answer the worker like a broker until it ACKs id (every command
//  confirmed ok). Returns true when the ACK came within timeout_ms.
static bool
s_until_acked (zsock_t *router, uint64_t id, int timeout_ms)
{
    int64_t deadline = zclock_mono () + timeout_ms;
    while (zclock_mono () < deadline) {
        mmp_msg_t msg;
        mmp_error_t err;
        zframe_t *peer = NULL;
        mmp_msg_init (&msg);
        int rc = mmp_recv (router, true, &peer, MMP_TO_BROKER, &msg, &err);
        bool acked = false;
        if (rc == 0) {
            char ids [64] = "";
            if (msg.id_count)
                snprintf (ids, sizeof ids, "%" PRIu64, msg.ids [0]);
            char reply [128];
            int size = snprintf (reply, sizeof reply,
                                 "{\"ok\":[%s],\"stale\":[],\"unknown\":[]}", ids);
            if (msg.command == MMP_ACK) {
                mmp_send (router, peer, MMP_ACKED, reply, (size_t) size);
                acked = msg.id_count == 1 && msg.ids [0] == id;
            }
            else
            if (msg.command == MMP_PROGRESS)
                mmp_send (router, peer, MMP_PROGRESSED, reply, (size_t) size);
            else
            if (msg.command == MMP_HEARTBEAT)
                mmp_send (router, peer, MMP_HEARTBEAT, "{}", 2);
        }
        mmp_msg_reset (&msg);
        zframe_destroy (&peer);
        if (acked)
            return true;
    }
    return false;
}

static pid_t s_child_pid;        //  The worker process, killed by PID at the end

//  Also after a failed assertion: never leave the worker running
static void
s_kill_child (void)
{
    if (s_child_pid > 0) {
        kill (s_child_pid, SIGKILL);
        waitpid (s_child_pid, NULL, 0);
        s_child_pid = 0;
    }
}

Test (wrk_worker, loop_polls_an_fd_store_and_follows_its_new_fds, .timeout = 60,
      .fini = s_kill_child)
{
    int port = s_free_port ();
    char endpoint [64];
    snprintf (endpoint, sizeof endpoint, "tcp://127.0.0.1:%d", port);
    //  Fork before any socket: the child's CZMQ must start from nothing
    pid_t child = fork ();
    cr_assert_geq (child, 0);
    if (child == 0)
        _exit (s_child (endpoint));
    s_child_pid = child;

    zsock_t *router = zsock_new (ZMQ_ROUTER);
    cr_assert_not_null (router);
    zsock_set_rcvtimeo (router, 200);
    cr_assert_eq (zsock_bind (router, "%s", endpoint), port);

    //  HELLO, then WELCOME
    zframe_t *peer = NULL;
    mmp_msg_t msg;
    mmp_error_t err;
    int64_t deadline = zclock_mono () + 10000;
    bool hello = false;
    while (!hello && zclock_mono () < deadline) {
        mmp_msg_init (&msg);
        zframe_destroy (&peer);
        if (mmp_recv (router, true, &peer, MMP_TO_BROKER, &msg, &err) == 0)
            hello = msg.command == MMP_HELLO;
        mmp_msg_reset (&msg);
    }
    cr_assert (hello, "no HELLO from the worker");
    const char *welcome = "{\"ack_deadline_ms\":10000,\"heartbeat_ms\":1000,\"epoch\":1}";
    cr_assert_eq (mmp_send (router, peer, MMP_WELCOME, welcome, strlen (welcome)), 0);

    //  Three messages one after the other: each save goes through a
    //  different fd, so each ACK shows the loop re-registered
    bool all_acked = true;
    for (uint64_t id = 1; id <= 3 && all_acked; id++) {
        s_deliver (router, peer, id);
        all_acked = s_until_acked (router, id, 10000);
        cr_assert (all_acked, "no ACK for delivery %" PRIu64, id);
    }
    zframe_destroy (&peer);

    cr_assert_eq (kill (child, SIGTERM), 0);
    int status = 0;
    deadline = zclock_mono () + 15000;
    while (waitpid (child, &status, WNOHANG) == 0) {
        if (zclock_mono () > deadline)
            cr_assert_fail ("the worker did not shut down");
        //  Answer what the shutdown sends (CREDIT, BYE) by draining it
        mmp_msg_init (&msg);
        mmp_recv (router, true, &peer, MMP_TO_BROKER, &msg, &err);
        mmp_msg_reset (&msg);
        zframe_destroy (&peer);
    }
    s_child_pid = 0;                //  Reaped
    zsock_destroy (&router);
    cr_assert (WIFEXITED (status), "status %d", status);
    cr_assert_eq (WEXITSTATUS (status), 0, "worker child exit %d (23: the store's fd never "
                  "changed twice)", WEXITSTATUS (status));
}
