/*  brk_server: the broker, as a CZMQ actor.

    zactor_t *broker = zactor_new (brk_server, &config);   // config is copied
    zstr_send (broker, "STATUS");
    int status;  zsock_recv (broker, "i", &status);         // BRK_SERVER_*
    zstr_sendx (broker, "BIND", "frontend", "tcp://127.0.0.1:*", NULL);
    int port;  zsock_recv (broker, "i", &port);             // -1 on failure
    ...
    zactor_destroy (&broker);                               // $TERM: clean stop

    Pipe commands:
      STATUS                                  -> "i" BRK_SERVER_* (start-up outcome)
      BIND frontend|backend|events ENDPOINT  -> "i" port (or -1)
      PORT frontend|backend|events            -> "i" port bound last (or -1)
      RELOAD                                  -> "is" 0 and "reloaded FILE", or -1 and
                                                 why (the old policy stays)
      TICK                                    -> "i" 0 once what is due at the
                                                 clock's time now has fired
                                                 (for an injected clock)
      $TERM                                   -> stops after flushing
    An actor that could not start answers STATUS with its reason and every
    BIND with -1, and waits for $TERM.

    Security (docs/SECURITY.md): with curve_cert, every socket is a CURVE
    server and brk_auth admits only keys in the role directories; each
    command is checked against the sender's role (ERROR forbidden). A
    certificate that cannot be loaded fails the start (BRK_SERVER_FAILED).
    Without curve_cert, BIND refuses (-1) any endpoint but loopback, ipc
    and inproc unless insecure is set.

    Sockets: frontend ROUTER (publishers, control), backend ROUTER
    (workers), events XPUB. Both ROUTERs have ROUTER_MANDATORY, per peer a
    send high-water mark of BRK_PEER_SNDHWM messages and a receive one of
    BRK_PEER_RCVHWM, and a send timeout of 0, so a reply never blocks the
    loop and is never dropped silently: a send to a vanished peer, or to
    one that has not read its last BRK_PEER_SNDHWM messages, fails loudly
    (a worker is then lost; a frontend client loses that reply and retries
    on its timeout). A peer that sends faster than the broker reads is held
    back by its own socket once BRK_PEER_RCVHWM of its messages wait: at
    most that many bodies of 1 MiB per peer are queued inside the broker. The events XPUB drops events for
    a subscriber BRK_EVENTS_HWM behind: the feed is lossy under a slow
    reader, and never grows the broker.

    Memory bounds: with config.max_pending (messages held, ready, delayed
    or leased) or config.max_memory (bytes of request bodies held,
    dead letters included) reached, PUBLISH is answered ERROR unavailable
    ("max_pending" / "max_memory" in the reason) and nothing of the batch
    is queued; the check is made before each batch, so one batch accepted
    below a limit may pass it by at most its own size (1000 requests,
    1 MiB). Replies waiting for the journal are bounded with them: each
    answers one PUBLISH batch or one ACK/PROGRESS message that arrived
    since the store's last durable point, so they wait at most one commit
    and number at most what the ROUTERs let in meanwhile (BRK_PEER_RCVHWM
    per peer); a PUBLISH reply that waits holds at least one message that
    counts toward max_pending (its own, or the held original of a
    duplicate), and an ACK/PROGRESS reply names leases its worker holds
    (at most its credit).

    Durability: every change that matters goes to a store (brk_store.h):
    the journal with a data_dir, memory without one, or the one
    config.store_open makes. A published message is delivered, and its
    PUBACK sent, only once its record is as durable as the store promises:
    a request the broker could forget in a crash is never acted on, and a
    PUBACK is never a promise the disk has not kept. At start the store
    hands back what it kept.

    Time: config.clock, the system's monotonic clock unless set. With an
    injected clock, leases, backoffs and heartbeat losses fire exactly when
    the clock says; send TICK after moving it and wait for its answer:
    every lease expiry, redelivery and worker loss due by then has been
    acted on, and its DELIVER sent (otherwise the loop looks within a
    second). Wall-clock timestamps in events
    and dead letters are not injected.

    Restart policy: with config.policy_file or config.group_specs the
    actor owns a brk_policy_t (a spec or file that does not load fails the
    start, BRK_SERVER_FAILED, logged with the reason; mandrill-broker
    checks them first to exit 2). Its durable state is saved through the
    store (brk_store_save_state): at once after pause, resume, kill and an
    error stop, and at most every 100 ms after lease events; it is
    restored at start after recovery, before the first dispatch.

    Metrics: with config.metrics, the actor registers the broker's series
    there (brk_metrics.h), times the journal's fsyncs, and refreshes the
    mirrored totals from its loop at most once a second; serving them
    (mdl_http) is the owner's business.
*/
#ifndef BRK_SERVER_H_INCLUDED
#define BRK_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "brk_auth.h"
#include "brk_journal.h"
#include "brk_queue.h"
#include "brk_store.h"
#include "mdl_clock.h"
#include "mdl_metrics.h"

typedef struct {
    brk_queue_config_t queue;   //  Lease and retry rules
    bool verbose;               //  Log every command at debug level
    const char *data_dir;       //  Journal directory; NULL keeps messages in memory only
    brk_journal_config_t journal;   //  Journal settings; its dir is taken from data_dir
    mdl_clock_t clock;          //  Monotonic time; { NULL } is the system clock
    brk_store_open_fn *store_open;  //  Opens the store; NULL: journal in data_dir, or memory
    void *store_arg;            //  Passed to store_open
    const char *curve_cert;     //  Broker's own (secret) certificate: CURVE on all three sockets; NULL = none
    const char *role_dirs [BRK_ROLE_COUNT];     //  Per brk_role_t, a directory of allowed public certificates
    bool insecure;              //  Without curve_cert, allow binding other than loopback (loudly logged)
    mdl_metrics_t *metrics;     //  Registry the broker's series go into (brk_metrics.h),
                                //  borrowed: must outlive the actor; NULL: none
    //  Restart policy (docs/POLICY.md): the actor builds and owns it from
    //  these. Neither set: no policy, the broker leases as without one.
    const char *policy_file;    //  --policy FILE (copied; RELOAD and SIGHUP read it again)
    const char *const *group_specs; //  --group 'NAME:GLOB:MAX' specs in match order (read at start)
    size_t group_spec_count;    //  Entries in group_specs; not together with policy_file
    mdl_clock_t wall_clock;     //  Unix ms for windows and intervals; { NULL } is the system's
    int64_t max_pending;        //  PUBLISH refused at this many pending messages; 0 = no limit
    int64_t max_memory;         //  PUBLISH refused at this many bytes of bodies held; 0 = no limit
} brk_server_config_t;

#define BRK_MAX_PENDING_DEFAULT 1000000                 //  max_pending
#define BRK_MAX_MEMORY_DEFAULT  (INT64_C (1) << 30)     //  max_memory, 1 GiB
#define BRK_PEER_SNDHWM         10000   //  Messages queued to one ROUTER peer
#define BRK_PEER_RCVHWM         1000    //  Messages queued from one ROUTER peer
#define BRK_EVENTS_HWM          10000   //  Events queued per subscriber before it loses some

//  Start-up outcome, the answer to STATUS.
#define BRK_SERVER_OK           0   //  Running
#define BRK_SERVER_FAILED       1   //  Could not start (memory, sockets, store I/O)
#define BRK_SERVER_CORRUPT      2   //  Journal corrupt before its tail (see salvage)
#define BRK_SERVER_LOCKED       3   //  Another broker holds the data directory

void brk_server_config_defaults (brk_server_config_t *config);

//  The actor function, for zactor_new (). args is a brk_server_config_t *.
void brk_server (zsock_t *pipe, void *args);

#endif
