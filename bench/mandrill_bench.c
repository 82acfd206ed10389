/*  mandrill_bench: load tool for a running mandrill-broker.

    About 890 lines, over the house limit: it is one program whose three
    workloads share the producer, the consumers and the shared-memory side
    channel; split, each file would need all of them.

    Implements the workloads of the peer comparison (shared/peers/README.md)
    against Mandrill, so the figures sit beside the peers' in one table:

      w1   one producer publishes N requests (PUBLISH batches of --pbatch,
           two batches in flight); once it is done, --consumers worker
           processes (HELLO credit --credit) lease and ack everything, each
           DELIVER's ids in one ACK. Reports publish/s, drain/s, combined/s,
           the broker's peak RSS and CPU per message in each phase.
           With --n 50000 --credit 1 it is W1-k1.
      w2   consumers start first; the producer runs for --duration s, either
           closed loop (--backlog W: never more than W published but not yet
           confirmed acked) or open loop (--rate R msgs/s). Every message's
           publish time (attributes.ts, CLOCK_MONOTONIC ns) and the time its
           ACKED reply arrived are recorded; percentiles are taken over the
           messages published in [t0 + 1 s, t1] and acked msgs/s over the
           acks that arrived in that window, as the peers' latstat does.

    The driver (this process) never opens a ZeroMQ socket: the producer and
    the consumers are forked children, each with its own context, sharing a
    small anonymous shared mapping for counters (the closed loop's backlog,
    the stop condition) and one for latency samples. This side channel
    never touches the broker.

    Output: human lines on stderr and one machine line on stdout,
      RESULT workload=W1 n=... pub_rate=... drain_rate=... combined=... ...
    which bench/run.sh collects. Exit 0 when every message was published
    and acked, 1 usage, 2 incomplete run (timeouts, errors), 3 setup failure.
*/
#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_parse.h"
#include "mdl_uuid.h"
#include "mmp.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONSUMERS   8
#define LAT_CAP         (16u * 1024 * 1024)     //  Latency pairs per consumer

//  Counters shared by the driver and its children (one MAP_SHARED page).
typedef struct {
    _Atomic int64_t prod_done;      //  1 once the producer has its last PUBACK
    _Atomic int64_t published;      //  Confirmed by PUBACK (valid once prod_done)
    _Atomic int64_t sent;           //  Requests sent so far (closed-loop accounting)
    _Atomic int64_t acked;          //  Confirmed by ACKED, summed over consumers
    _Atomic int64_t stop;           //  Driver asks everyone to stop (signal)
    int64_t prod_t0;                //  Producer start, CLOCK_MONOTONIC ns
    int64_t prod_t1;                //  Producer end (last PUBACK received)
    int64_t prod_duplicates;        //  Ids the broker reported as duplicates
    int64_t prod_errors;            //  ERROR replies to PUBLISH
    int64_t prod_batches;           //  PUBLISH messages sent
    struct {
        int64_t t0;                 //  Consumer start (before HELLO)
        int64_t tlast;              //  Arrival of its last ACKED
        int64_t acked;              //  Ids reported ok by ACKED
        int64_t not_ok;             //  Ids reported stale or unknown
        int64_t delivers;           //  DELIVER messages received
        int64_t errors;             //  ERROR replies
        int64_t lat_count;          //  Pairs written to its latency region
        int64_t timed_out;          //  1 if it hit --max-sec
    } cons [MAX_CONSUMERS];
} shared_t;

//  Options of one run.
typedef struct {
    const char *workload;           //  "w1" or "w2"
    const char *frontend;           //  Broker frontend endpoint
    const char *backend;            //  Broker backend endpoint
    int broker_pid;                 //  For /proc sampling; 0 = none
    int64_t n;                      //  W1: messages to publish
    int64_t pbatch;                 //  Requests per PUBLISH
    int64_t credit;                 //  Consumer HELLO credit
    int64_t consumers;              //  Consumer processes
    double duration;                //  W2: producer seconds
    int64_t backlog;                //  W2 closed loop: max unacked (0 = off)
    double rate;                    //  W2 open loop: msgs/s (0 = off)
    double max_sec;                 //  Hard stop for consumers
    const char *label;              //  Printed as workload= in the RESULT line
} opts_t;

static shared_t *s_shared;
static int64_t *s_lat;              //  consumers * LAT_CAP pairs (pub_ts, ack_ts)

static int64_t
s_now_ns (void)
{
    struct timespec t;
    clock_gettime (CLOCK_MONOTONIC, &t);
    return (int64_t) t.tv_sec * 1000000000LL + t.tv_nsec;
}

static void
s_sleep_ns (int64_t ns)
{
    struct timespec t = { ns / 1000000000LL, ns % 1000000000LL };
    nanosleep (&t, NULL);
}

//  utime + stime of a process in clock ticks, or -1.
static int64_t
s_proc_ticks (int pid)
{
    if (pid <= 0)
        return -1;
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/stat", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    char line [1024];
    size_t got = fread (line, 1, sizeof line - 1, file);
    fclose (file);
    line [got] = 0;
    //  The command name may hold spaces: fields count from the last ')'.
    char *cursor = strrchr (line, ')');
    if (!cursor)
        return -1;
    cursor += 2;
    unsigned long long utime = 0, stime = 0;
    //  After ')' come field 3 (state) .. ; utime is 14, stime 15.
    if (sscanf (cursor, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu",
                &utime, &stime) != 2)
        return -1;
    return (int64_t) (utime + stime);
}

//  A "Vm...:" line of /proc/<pid>/status in kB, or -1.
static int64_t
s_proc_status_kb (int pid, const char *key)
{
    if (pid <= 0)
        return -1;
    char path [64];
    snprintf (path, sizeof path, "/proc/%d/status", pid);
    FILE *file = fopen (path, "r");
    if (!file)
        return -1;
    char line [256];
    int64_t value = -1;
    size_t keylen = strlen (key);
    while (fgets (line, sizeof line, file))
        if (strncmp (line, key, keylen) == 0 && line [keylen] == ':') {
            value = strtoll (line + keylen + 1, NULL, 10);
            break;
        }
    fclose (file);
    return value;
}

static bool
s_stopping (void)
{
    return atomic_load (&s_shared->stop) != 0;
}

//  Wait up to timeout_ms for input on sock. Returns true if readable.
static bool
s_readable (zsock_t *sock, long timeout_ms)
{
    zmq_pollitem_t item = { zsock_resolve (sock), 0, ZMQ_POLLIN, 0 };
    int rc = zmq_poll (&item, 1, timeout_ms);
    return rc > 0 && (item.revents & ZMQ_POLLIN);
}

static const char *s_curve_cert;    //  --curve-cert: own secret certificate, or NULL
static const char *s_broker_cert;   //  --broker-cert: the broker's public one, or NULL

static zsock_t *
s_dealer (const char *endpoint)
{
    zsock_t *sock = zsock_new (ZMQ_DEALER);
    if (!sock)
        return NULL;
    char error [300];
    if (mdl_curve_client_files (sock, s_curve_cert, s_broker_cert, error, sizeof error) != 0) {
        fprintf (stderr, "mandrill_bench: %s\n", error);
        zsock_destroy (&sock);
        return NULL;
    }
    zsock_set_sndhwm (sock, 0);
    zsock_set_rcvhwm (sock, 0);
    zsock_set_linger (sock, 0);
    if (zsock_connect (sock, "%s", endpoint) != 0) {
        zsock_destroy (&sock);
        return NULL;
    }
    return sock;
}

//  ---------------------------------------------------------------- producer

//  Build a PUBLISH body of count requests. ts is taken per request, just
//  before it is written, so latency includes the time spent batching.
//  0, or -1 when out of memory.
//  --hosts N: requests name N hosts in turn (cattle-0 .. cattle-N-1), so a
//  restart policy's one-lease-per-host rule does not serialise the run;
//  0 (the default) names the one host cattle-ab12 as before.
static int64_t s_hosts;
static int64_t s_host_next;

static int
s_build_publish (mmp_buf_t *buf, int64_t count)
{
    mmp_buf_t request;
    mmp_buf_init (&request);
    mmp_encode_publish_begin (buf);
    for (int64_t i = 0; i < count; i++) {
        char uuid [37];
        mdl_uuid4 (uuid);
        char attributes [40];
        int size = snprintf (attributes, sizeof attributes, "{\"ts\":%" PRId64 "}", s_now_ns ());
        char instance [32] = "cattle-ab12", hostname [64] = "cattle-ab12.example.net";
        if (s_hosts > 0) {
            int64_t host = s_host_next++ % s_hosts;
            snprintf (instance, sizeof instance, "cattle-%" PRId64, host);
            snprintf (hostname, sizeof hostname, "cattle-%" PRId64 ".example.net", host);
        }
        mmp_encode_request (&request, uuid, instance, hostname, attributes, (size_t) size);
        mmp_encode_publish_add (buf, mmp_buf_data (&request), mmp_buf_size (&request));
    }
    bool failed = mmp_buf_failed (&request);
    mmp_buf_free (&request);
    return mmp_encode_publish_end (buf, NULL) != 0 || failed ? -1 : 0;
}

//  Read one reply to a PUBLISH. Returns the number of ids confirmed, or -1.
static int64_t
s_read_puback (zsock_t *sock, int64_t expected)
{
    while (!s_stopping ()) {
        if (!s_readable (sock, 1000))
            continue;
        mmp_msg_t msg;
        mmp_error_t err;
        mmp_msg_init (&msg);
        int rc = mmp_recv (sock, false, NULL, MMP_FROM_BROKER, &msg, &err);
        if (rc == -1)
            continue;
        if (rc == -2) {
            fprintf (stderr, "producer: malformed reply: %s: %s\n", err.code, err.reason);
            return -1;
        }
        int64_t confirmed = -1;
        if (msg.command == MMP_PUBACK) {
            confirmed = (int64_t) msg.message_id_count;
            s_shared->prod_duplicates += (int64_t) msg.other_id_count;
            if (confirmed != expected)
                fprintf (stderr, "producer: PUBACK has %" PRId64 " ids for %" PRId64 "\n",
                         confirmed, expected);
        }
        else
        if (msg.command == MMP_ERROR) {
            s_shared->prod_errors++;
            fprintf (stderr, "producer: ERROR %s: %s\n", msg.code, msg.reason);
        }
        else
            fprintf (stderr, "producer: unexpected %s\n", mmp_command_name (msg.command));
        mmp_msg_reset (&msg);
        return confirmed;
    }
    return -1;
}

//  How many requests may go now, as the peers' producers decide it.
static int64_t
s_quota (const opts_t *opts, int64_t t0, int64_t now, int64_t sent)
{
    int64_t cap = opts->pbatch;
    if (opts->backlog > 0) {
        int64_t room = opts->backlog - (sent - atomic_load (&s_shared->acked));
        if (room < cap)
            cap = room;
    }
    if (opts->n > 0 && sent + cap > opts->n)
        cap = opts->n - sent;
    if (opts->rate > 0) {
        int64_t target = (int64_t) (opts->rate * (double) (now - t0) / 1e9) + 1;
        if (target - sent < cap)
            cap = target - sent;
    }
    return cap < 0 ? 0 : cap;
}

static bool
s_producer_finished (const opts_t *opts, int64_t t0, int64_t now, int64_t sent)
{
    if (opts->n > 0)
        return sent >= opts->n;
    return (double) (now - t0) / 1e9 >= opts->duration;
}

//  Runs in a child. Two batches in flight: send batch i+1, then read the
//  PUBACK of batch i. Returns the child's exit code.
static int
s_producer (const opts_t *opts)
{
    zsock_t *sock = s_dealer (opts->frontend);
    if (!sock) {
        fprintf (stderr, "producer: cannot connect to %s\n", opts->frontend);
        return 3;
    }
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    int64_t inflight [2] = { 0, 0 };    //  Sizes of the batches awaiting PUBACK, oldest first
    int depth = 0;
    int64_t sent = 0, confirmed = 0;
    int code = 0;
    int64_t t0 = s_now_ns (), now;
    s_shared->prod_t0 = t0;
    while (!s_stopping () && !s_producer_finished (opts, t0, now = s_now_ns (), sent)) {
        int64_t quota = s_quota (opts, t0, now, sent);
        if (quota == 0) {
            if (depth > 0) {
                int64_t got = s_read_puback (sock, inflight [0]);
                if (got < 0) { code = 2; break; }
                confirmed += got;
                inflight [0] = inflight [1];
                depth--;
            }
            else
                s_sleep_ns (100000);
            continue;
        }
        if (s_build_publish (&buf, quota) != 0
        ||  mmp_send (sock, NULL, MMP_PUBLISH, mmp_buf_data (&buf), mmp_buf_size (&buf)) != 0) {
            fprintf (stderr, "producer: send failed\n");
            code = 2;
            break;
        }
        sent += quota;
        atomic_store (&s_shared->sent, sent);
        s_shared->prod_batches++;
        inflight [depth++] = quota;
        if (depth == 2) {
            int64_t got = s_read_puback (sock, inflight [0]);
            if (got < 0) { code = 2; break; }
            confirmed += got;
            inflight [0] = inflight [1];
            depth--;
        }
    }
    while (code == 0 && depth > 0) {
        int64_t got = s_read_puback (sock, inflight [0]);
        if (got < 0) { code = 2; break; }
        confirmed += got;
        inflight [0] = inflight [1];
        depth--;
    }
    s_shared->prod_t1 = s_now_ns ();
    atomic_store (&s_shared->published, confirmed);
    atomic_store (&s_shared->prod_done, 1);
    mmp_buf_free (&buf);
    zsock_destroy (&sock);
    return code;
}

//  ---------------------------------------------------------------- consumer

//  One ACK awaiting its ACKED: the publish timestamps of its messages.
typedef struct {
    int64_t *ts;                    //  Publish ts per message
    size_t count;                   //  Messages in the ACK
} pending_t;

static bool
s_consumer_done (int64_t inflight_acks)
{
    if (inflight_acks > 0 || !atomic_load (&s_shared->prod_done))
        return false;
    return atomic_load (&s_shared->acked) >= atomic_load (&s_shared->published);
}

//  Runs in a child: HELLO with the credit, then ACK every DELIVER at once
//  (one ACK per DELIVER) and match each ACKED to its ACK in order (a DEALER
//  and the broker keep order). Returns the child's exit code.
static int
s_consumer (const opts_t *opts, int index)
{
    s_shared->cons [index].t0 = s_now_ns ();
    zsock_t *sock = s_dealer (opts->backend);
    if (!sock) {
        fprintf (stderr, "consumer %d: cannot connect to %s\n", index, opts->backend);
        return 3;
    }
    int64_t *lat = s_lat + (size_t) index * LAT_CAP * 2;
    int64_t lat_count = 0;
    char name [24];
    snprintf (name, sizeof name, "bench-%d", index);
    mmp_buf_t hello;
    mmp_buf_init (&hello);
    int sent = mmp_encode_hello (&hello, opts->credit, name, NULL, 0) == 0
            && mmp_send (sock, NULL, MMP_HELLO, mmp_buf_data (&hello), mmp_buf_size (&hello)) == 0;
    if (!sent) {
        mmp_buf_free (&hello);
        zsock_destroy (&sock);
        return 3;
    }
    //  A ring of ACKs awaiting ACKED. Credit bounds the leases held, not the
    //  ACKs in flight: a broker that confirms acks once they are durable
    //  frees credit before it answers, so the ring grows when it must.
    size_t ring_cap = (size_t) opts->credit * 2 + 16;
    pending_t *ring = calloc (ring_cap, sizeof *ring);
    size_t head = 0, tail = 0;
    uint64_t *ids = malloc (sizeof *ids * MMP_MAX_DELIVERIES);
    mmp_buf_t buf;
    mmp_buf_init (&buf);
    int64_t heartbeat_ms = 1000;
    int64_t last_send = s_now_ns ();
    int64_t deadline = s_shared->cons [index].t0 + (int64_t) (opts->max_sec * 1e9);
    int code = 0;
    assert (ring && ids);

    while (!s_stopping () && !s_consumer_done ((int64_t) (tail - head))) {
        int64_t now = s_now_ns ();
        if (now > deadline) {
            fprintf (stderr, "consumer %d: hit --max-sec\n", index);
            s_shared->cons [index].timed_out = 1;
            code = 2;
            break;
        }
        //  Any message counts as a sign of life; only idle spells need this.
        if ((now - last_send) / 1000000 >= heartbeat_ms) {
            if (mmp_encode_empty (&buf) == 0
            &&  mmp_send (sock, NULL, MMP_HEARTBEAT, mmp_buf_data (&buf), mmp_buf_size (&buf)) == 0)
                last_send = now;
        }
        if (!s_readable (sock, 50))
            continue;
        while (true) {
            mmp_msg_t msg;
            mmp_error_t err;
            mmp_msg_init (&msg);
            int rc = mmp_recv (sock, false, NULL, MMP_FROM_BROKER, &msg, &err);
            if (rc == -1)
                break;
            if (rc == -2) {
                fprintf (stderr, "consumer %d: malformed: %s: %s\n", index, err.code, err.reason);
                s_shared->cons [index].errors++;
                continue;
            }
            if (msg.command == MMP_DELIVER) {
                s_shared->cons [index].delivers++;
                if (tail - head == ring_cap) {
                    pending_t *grown = calloc (ring_cap * 2, sizeof *grown);
                    assert (grown);
                    for (size_t i = 0; i < ring_cap; i++)
                        grown [i] = ring [(head + i) % ring_cap];
                    free (ring);
                    ring = grown;
                    tail -= head;
                    head = 0;
                    ring_cap *= 2;
                }
                pending_t *slot = &ring [tail % ring_cap];
                slot->ts = realloc (slot->ts, sizeof (int64_t) * msg.delivery_count);
                slot->count = msg.delivery_count;
                assert (slot->ts);
                for (size_t i = 0; i < msg.delivery_count; i++) {
                    mmp_delivery_t *delivery = &msg.deliveries [i];
                    ids [i] = delivery->delivery_id;
                    //  Attributes arrive as published: {"ts":N}
                    const char *attributes = delivery->message.attributes;
                    slot->ts [i] = attributes && delivery->message.attributes_size > 6
                                && strncmp (attributes, "{\"ts\":", 6) == 0
                                 ? (int64_t) strtoll (attributes + 6, NULL, 10) : -1;
                }
                if (mmp_encode_ack (&buf, ids, msg.delivery_count) != 0
                ||  mmp_send (sock, NULL, MMP_ACK, mmp_buf_data (&buf), mmp_buf_size (&buf)) != 0) {
                    fprintf (stderr, "consumer %d: ACK send failed\n", index);
                    code = 2;
                }
                else {
                    tail++;
                    last_send = s_now_ns ();
                }
            }
            else
            if (msg.command == MMP_ACKED) {
                int64_t arrived = s_now_ns ();
                if (head == tail) {
                    fprintf (stderr, "consumer %d: ACKED without an ACK\n", index);
                    s_shared->cons [index].errors++;
                }
                else {
                    pending_t *slot = &ring [head % ring_cap];
                    head++;
                    //  Ok ids are the ones whose lease this ACK closed; latency
                    //  is recorded for the whole batch (they share one reply).
                    for (size_t i = 0; i < slot->count && lat_count < (int64_t) LAT_CAP; i++) {
                        lat [2 * lat_count] = slot->ts [i];
                        lat [2 * lat_count + 1] = arrived;
                        lat_count++;
                    }
                    s_shared->cons [index].acked += (int64_t) msg.id_count;
                    s_shared->cons [index].not_ok += (int64_t) (msg.stale_count + msg.unknown_count);
                    s_shared->cons [index].tlast = arrived;
                    s_shared->cons [index].lat_count = lat_count;
                    atomic_fetch_add (&s_shared->acked, (int64_t) msg.id_count);
                }
            }
            else
            if (msg.command == MMP_WELCOME) {
                if (msg.heartbeat_ms > 0)
                    heartbeat_ms = msg.heartbeat_ms;
            }
            else
            if (msg.command == MMP_ERROR) {
                s_shared->cons [index].errors++;
                fprintf (stderr, "consumer %d: ERROR %s: %s\n", index, msg.code, msg.reason);
                //  The broker forgot us (restart): say HELLO again.
                if (msg.code && streq (msg.code, MMP_ERR_UNEXPECTED))
                    mmp_send (sock, NULL, MMP_HELLO, mmp_buf_data (&hello), mmp_buf_size (&hello));
            }
            //  HEARTBEAT and anything else: a sign of life, nothing to do.
            mmp_msg_reset (&msg);
        }
        if (code)
            break;
    }
    mmp_buf_free (&hello);
    if (mmp_encode_empty (&buf) == 0)
        mmp_send (sock, NULL, MMP_BYE, mmp_buf_data (&buf), mmp_buf_size (&buf));
    for (size_t i = 0; i < ring_cap; i++)
        free (ring [i].ts);
    free (ring);
    free (ids);
    mmp_buf_free (&buf);
    zsock_destroy (&sock);
    return code;
}

//  ---------------------------------------------------------------- driver

typedef int (child_fn) (const opts_t *opts, int index);

static int
s_run_producer (const opts_t *opts, int index)
{
    (void) index;
    return s_producer (opts);
}

//  Fork a child that runs fn. A forked child must not return into the
//  driver, so it ends with _exit once its sockets are closed.
static pid_t
s_spawn (child_fn *fn, const opts_t *opts, int index)
{
    pid_t pid = fork ();
    if (pid == 0) {
        signal (SIGINT, SIG_IGN);       //  The driver relays stops via s_shared->stop
        signal (SIGTERM, SIG_DFL);
        int code = fn (opts, index);
        zsys_shutdown ();
        fflush (NULL);
        _exit (code);
    }
    return pid;
}

static volatile sig_atomic_t s_interrupted;
static void
s_on_signal (int signo)
{
    (void) signo;
    s_interrupted = 1;
    if (s_shared)
        atomic_store (&s_shared->stop, 1);
}

//  Wait for a child; returns its exit code, or 2 if it died otherwise.
static int
s_reap (pid_t pid)
{
    int status;
    while (waitpid (pid, &status, 0) < 0)
        if (errno != EINTR)
            return 2;
    return WIFEXITED (status) ? WEXITSTATUS (status) : 2;
}

static int
s_cmp_i64 (const void *a, const void *b)
{
    int64_t x = *(const int64_t *) a, y = *(const int64_t *) b;
    return (x > y) - (x < y);
}

static int
s_run_w1 (const opts_t *opts)
{
    long tick = sysconf (_SC_CLK_TCK);
    int64_t cpu0 = s_proc_ticks (opts->broker_pid);
    int code = s_reap (s_spawn (s_run_producer, opts, 0));
    int64_t cpu1 = s_proc_ticks (opts->broker_pid);
    int64_t published = atomic_load (&s_shared->published);
    if (s_interrupted || code != 0)
        fprintf (stderr, "w1: producer failed (exit %d), draining what was published\n", code);

    pid_t pids [MAX_CONSUMERS];
    for (int i = 0; i < opts->consumers; i++)
        pids [i] = s_spawn (s_consumer, opts, i);
    for (int i = 0; i < opts->consumers; i++) {
        int rc = s_reap (pids [i]);
        if (rc && !code)
            code = rc;
    }
    int64_t cpu2 = s_proc_ticks (opts->broker_pid);

    int64_t acked = 0, first = INT64_MAX, last = 0, not_ok = 0, errors = 0;
    for (int i = 0; i < opts->consumers; i++) {
        acked += s_shared->cons [i].acked;
        not_ok += s_shared->cons [i].not_ok;
        errors += s_shared->cons [i].errors;
        if (s_shared->cons [i].t0 < first)
            first = s_shared->cons [i].t0;
        if (s_shared->cons [i].tlast > last)
            last = s_shared->cons [i].tlast;
    }
    double t_pub = (double) (s_shared->prod_t1 - s_shared->prod_t0) / 1e9;
    double t_drain = last > first ? (double) (last - first) / 1e9 : NAN;
    double pub_rate = published / t_pub;
    double drain_rate = acked / t_drain;
    double combined = published / (t_pub + t_drain);
    double cpu_pub = cpu0 >= 0 && cpu1 >= 0 && published
                   ? (double) (cpu1 - cpu0) / tick / published * 1e6 : NAN;
    double cpu_drain = cpu1 >= 0 && cpu2 >= 0 && acked
                     ? (double) (cpu2 - cpu1) / tick / acked * 1e6 : NAN;
    double cpu_all = cpu0 >= 0 && cpu2 >= 0 && acked
                   ? (double) (cpu2 - cpu0) / tick / acked * 1e6 : NAN;
    int64_t hwm = s_proc_status_kb (opts->broker_pid, "VmHWM");
    int64_t rss = s_proc_status_kb (opts->broker_pid, "VmRSS");
    bool ok = code == 0 && published == opts->n && acked == published && not_ok == 0
           && s_shared->prod_duplicates == 0 && s_shared->prod_errors == 0;

    fprintf (stderr, "%s: published %" PRId64 " in %.3f s (%.0f/s), %" PRId64 " duplicates, %" PRId64 " errors\n",
             opts->label, published, t_pub, pub_rate, s_shared->prod_duplicates, s_shared->prod_errors);
    fprintf (stderr, "%s: drained %" PRId64 " in %.3f s (%.0f/s) with %" PRId64 " consumers at credit %" PRId64
             ", %" PRId64 " stale/unknown, %" PRId64 " errors\n",
             opts->label, acked, t_drain, drain_rate, opts->consumers, opts->credit, not_ok, errors);
    fprintf (stderr, "%s: combined %.0f msgs/s; broker CPU %.2f / %.2f us/msg (pub / drain), peak RSS %.1f MB\n",
             opts->label, combined, cpu_pub, cpu_drain, hwm / 1024.0);
    printf ("RESULT workload=%s n=%" PRId64 " published=%" PRId64 " acked=%" PRId64
            " pub_s=%.4f drain_s=%.4f pub_rate=%.0f drain_rate=%.0f combined=%.0f"
            " cpu_us_pub=%.3f cpu_us_drain=%.3f cpu_us=%.3f hwm_kb=%" PRId64 " rss_kb=%" PRId64
            " duplicates=%" PRId64 " errors=%" PRId64 " ok=%d\n",
            opts->label, opts->n, published, acked, t_pub, t_drain, pub_rate, drain_rate, combined,
            cpu_pub, cpu_drain, cpu_all, hwm, rss, s_shared->prod_duplicates,
            s_shared->prod_errors + errors + not_ok, ok);
    fflush (stdout);
    return ok ? 0 : 2;
}

static int
s_run_w2 (const opts_t *opts)
{
    long tick = sysconf (_SC_CLK_TCK);
    int64_t cpu0 = s_proc_ticks (opts->broker_pid);
    int64_t wall0 = s_now_ns ();
    pid_t pids [MAX_CONSUMERS];
    for (int i = 0; i < opts->consumers; i++)
        pids [i] = s_spawn (s_consumer, opts, i);
    //  As the peers' driver: let the consumers connect and HELLO first.
    s_sleep_ns (500000000);
    int code = s_reap (s_spawn (s_run_producer, opts, 0));
    for (int i = 0; i < opts->consumers; i++) {
        int rc = s_reap (pids [i]);
        if (rc && !code)
            code = rc;
    }
    int64_t cpu1 = s_proc_ticks (opts->broker_pid);
    int64_t wall1 = s_now_ns ();

    int64_t from = s_shared->prod_t0 + 1000000000LL, to = s_shared->prod_t1;
    int64_t sent = atomic_load (&s_shared->sent);
    int64_t published = atomic_load (&s_shared->published);
    int64_t acked = 0, not_ok = 0, errors = 0, total = 0, in_window = 0, by_to = 0;
    size_t cap = 0;
    for (int i = 0; i < opts->consumers; i++) {
        acked += s_shared->cons [i].acked;
        not_ok += s_shared->cons [i].not_ok;
        errors += s_shared->cons [i].errors;
        cap += (size_t) s_shared->cons [i].lat_count;
    }
    int64_t *lat = malloc (sizeof (int64_t) * (cap ? cap : 1));
    size_t count = 0;
    assert (lat);
    for (int i = 0; i < opts->consumers; i++) {
        const int64_t *pairs = s_lat + (size_t) i * LAT_CAP * 2;
        for (int64_t j = 0; j < s_shared->cons [i].lat_count; j++) {
            int64_t pub = pairs [2 * j], ack = pairs [2 * j + 1];
            total++;
            if (ack >= from && ack <= to)
                in_window++;
            if (ack <= to)
                by_to++;
            if (pub >= from && pub <= to)
                lat [count++] = ack - pub;
        }
    }
    qsort (lat, count, sizeof *lat, s_cmp_i64);
    double window_s = (double) (to - from) / 1e9;
    double acked_rate = window_s > 0 ? in_window / window_s : NAN;
    double pub_rate = sent / ((double) (to - s_shared->prod_t0) / 1e9);
#define PCT_MS(q) (count ? lat [(size_t) ((q) * (double) (count - 1))] / 1e6 : NAN)
    double p50 = PCT_MS (0.50), p90 = PCT_MS (0.90), p99 = PCT_MS (0.99), p999 = PCT_MS (0.999);
    double max = count ? lat [count - 1] / 1e6 : NAN;
    free (lat);
    double cpu_us = cpu0 >= 0 && cpu1 >= 0 && acked ? (double) (cpu1 - cpu0) / tick / acked * 1e6 : NAN;
    double cores = cpu0 >= 0 && cpu1 >= 0 ? (double) (cpu1 - cpu0) / tick / ((wall1 - wall0) / 1e9) : NAN;
    int64_t hwm = s_proc_status_kb (opts->broker_pid, "VmHWM");
    bool ok = code == 0 && count > 0 && acked == published && published == sent && not_ok == 0
           && s_shared->prod_errors == 0 && s_shared->prod_duplicates == 0;

    fprintf (stderr, "%s: published %" PRId64 " (%.0f/s), acked %" PRId64 "; in window: %.0f acked msgs/s\n",
             opts->label, sent, pub_rate, acked, acked_rate);
    fprintf (stderr, "%s: publish->acked latency over %zu msgs: p50 %.3f ms, p90 %.3f, p99 %.3f, p99.9 %.3f, max %.3f\n",
             opts->label, count, p50, p90, p99, p999, max);
    fprintf (stderr, "%s: broker CPU %.2f us/msg, %.2f cores; peak RSS %.1f MB; unacked at end %" PRId64 "\n",
             opts->label, cpu_us, cores, hwm / 1024.0, sent - by_to);
    printf ("RESULT workload=%s sent=%" PRId64 " published=%" PRId64 " acked=%" PRId64
            " pub_rate=%.0f acked_rate=%.0f lat_n=%zu p50_ms=%.4f p90_ms=%.4f p99_ms=%.4f"
            " p999_ms=%.4f max_ms=%.4f cpu_us=%.3f cores=%.3f hwm_kb=%" PRId64
            " unacked_end=%" PRId64 " duplicates=%" PRId64 " errors=%" PRId64 " ok=%d\n",
            opts->label, sent, published, acked, pub_rate, acked_rate, count, p50, p90, p99,
            p999, max, cpu_us, cores, hwm, sent - by_to, s_shared->prod_duplicates,
            s_shared->prod_errors + errors + not_ok, ok);
    fflush (stdout);
    return ok ? 0 : 2;
}

static void
s_usage (FILE *out)
{
    fprintf (out,
        "usage: mandrill_bench w1|w2 [options]\n"
        "  Load tool for a running mandrill-broker (workloads of shared/peers/README.md).\n"
        "  w1: publish --n (pipelined, 2 PUBLISH batches in flight), then drain with\n"
        "      --consumers processes at HELLO credit --credit. W1-k1: --n 50000 --credit 1.\n"
        "  w2: consumers first, then a producer for --duration s, closed loop\n"
        "      (--backlog, W2-max) or open loop (--rate, W2-paced).\n"
        "options:\n"
        "  --frontend EP     broker frontend (default tcp://127.0.0.1:5555)\n"
        "  --backend EP      broker backend (default tcp://127.0.0.1:5556)\n"
        "  --broker-pid PID  sample the broker's CPU and peak RSS from /proc\n"
        "  --n N             w1 messages (default 200000)\n"
        "  --pbatch B        requests per PUBLISH (default 500)\n"
        "  --credit C        consumer HELLO credit, the lease batch (default 100)\n"
        "  --consumers K     consumer processes, 1..%d (default 2)\n"
        "  --duration S      w2 producer seconds (default 10)\n"
        "  --hosts N         requests name N hosts in turn (default: one host)\n"
        "  --backlog W       w2 closed loop: max published-but-unacked (default 2000 unless --rate)\n"
        "  --rate R          w2 open loop: msgs/s\n"
        "  --max-sec S       hard stop for consumers (default 120)\n"
        "  --label NAME      workload name in the RESULT line\n"
        "  --curve-cert F    CURVE: own secret certificate, for producer and consumers\n"
        "                    (its public key in the broker's publishers and workers dirs)\n"
        "  --broker-cert F   CURVE: the broker's public certificate\n"
        "exit: 0 every message published and acked, 1 usage, 2 incomplete run, 3 setup failure\n",
        MAX_CONSUMERS);
}

int
main (int argc, char *argv [])
{
    opts_t opts = {
        .frontend = "tcp://127.0.0.1:5555", .backend = "tcp://127.0.0.1:5556",
        .n = 200000, .pbatch = 500, .credit = 100, .consumers = 2,
        .duration = 10, .backlog = -1, .rate = 0, .max_sec = 120
    };
    if (argc >= 2 && (streq (argv [1], "--help") || streq (argv [1], "-h"))) {
        s_usage (stdout);
        return 0;
    }
    if (argc < 2 || (!streq (argv [1], "w1") && !streq (argv [1], "w2"))) {
        s_usage (stderr);
        return 1;
    }
    opts.workload = argv [1];
    for (int i = 2; i < argc; i++) {
        const char *key = argv [i];
        const char *value = i + 1 < argc ? argv [i + 1] : NULL;
        int64_t number;
        bool bad = value == NULL;
        if (bad)
            ;
        else
        if (streq (key, "--frontend"))
            opts.frontend = value;
        else
        if (streq (key, "--backend"))
            opts.backend = value;
        else
        if (streq (key, "--label"))
            opts.label = value;
        else
        if (streq (key, "--curve-cert"))
            s_curve_cert = value;
        else
        if (streq (key, "--broker-cert"))
            s_broker_cert = value;
        else
        if (streq (key, "--broker-pid"))
            bad = mdl_parse_int (value, 1, INT32_MAX, &number) || !(opts.broker_pid = (int) number);
        else
        if (streq (key, "--n"))
            bad = mdl_parse_int (value, 1, INT64_C (1) << 40, &opts.n) != 0;
        else
        if (streq (key, "--hosts"))
            bad = mdl_parse_int (value, 0, INT64_C (1) << 40, &s_hosts) != 0;
        else
        if (streq (key, "--pbatch"))
            bad = mdl_parse_int (value, 1, MMP_MAX_MESSAGES, &opts.pbatch) != 0;
        else
        if (streq (key, "--credit"))
            bad = mdl_parse_int (value, 1, MMP_MAX_CREDIT, &opts.credit) != 0;
        else
        if (streq (key, "--consumers"))
            bad = mdl_parse_int (value, 1, MAX_CONSUMERS, &opts.consumers) != 0;
        else
        if (streq (key, "--backlog"))
            bad = mdl_parse_int (value, 0, INT64_C (1) << 40, &opts.backlog) != 0;
        else
        if (streq (key, "--duration"))
            bad = mdl_parse_double (value, 0.1, 3600, &opts.duration) != 0;
        else
        if (streq (key, "--rate"))
            bad = mdl_parse_double (value, 0, 1e8, &opts.rate) != 0;
        else
        if (streq (key, "--max-sec"))
            bad = mdl_parse_double (value, 1, 86400, &opts.max_sec) != 0;
        else {
            fprintf (stderr, "mandrill_bench: unknown option %s\n", key);
            return 1;
        }
        if (bad) {
            fprintf (stderr, "mandrill_bench: bad or missing value for %s\n", key);
            return 1;
        }
        i++;
    }
    bool w1 = streq (opts.workload, "w1");
    if (w1)
        opts.backlog = 0;
    else {
        opts.n = 0;
        if (opts.backlog < 0)
            opts.backlog = opts.rate > 0 ? 0 : 2000;
    }
    if (!opts.label)
        opts.label = w1 ? (opts.credit == 1 ? "W1-k1" : "W1")
                        : (opts.rate > 0 ? "W2-paced" : "W2-max");

    s_shared = mmap (NULL, sizeof (shared_t), PROT_READ | PROT_WRITE,
                     MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    //  Pages are only backed when touched, so the generous cap costs nothing.
    s_lat = mmap (NULL, (size_t) opts.consumers * LAT_CAP * 2 * sizeof (int64_t),
                  PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (s_shared == MAP_FAILED || s_lat == MAP_FAILED) {
        fprintf (stderr, "mandrill_bench: mmap failed: %s\n", strerror (errno));
        return 3;
    }
    memset (s_shared, 0, sizeof *s_shared);
    if (opts.broker_pid && s_proc_ticks (opts.broker_pid) < 0) {
        fprintf (stderr, "mandrill_bench: cannot read /proc/%d/stat\n", opts.broker_pid);
        return 3;
    }
    //  No CZMQ handler: the driver relays SIGINT/SIGTERM to the children
    //  through s_shared->stop so they close their sockets and report.
    zsys_handler_set (NULL);
    struct sigaction action = { .sa_handler = s_on_signal };
    sigaction (SIGINT, &action, NULL);
    sigaction (SIGTERM, &action, NULL);
    return w1 ? s_run_w1 (&opts) : s_run_w2 (&opts);
}
