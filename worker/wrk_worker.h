/*  wrk_worker: the mandrill-worker service, one zloop in the calling thread.

    Wiring only. It owns, and glues together:

      wrk_link   the DEALER to the broker (HELLO, heartbeats, reconnect with
                 backoff, every command body); DELIVER feeds the job table,
                 EXTENDED, ACKED, NACKED and PROGRESSED go to it, and every
                 WELCOME resends every unconfirmed ACK, NACK and PROGRESS.
      wrk_jobs   the in-flight table (wrk_job: one message's steps), with
                 one zloop timer re-armed to its earliest deadline.
      wrk_db     the store; the loop polls what it says (the SQLite
                 thread's pipe, or PostgreSQL's socket), re-registered
                 after every handler when it changes, and services its own
                 timers at housekeeping pace (100 ms).
      wrk_exec   the restart children (exec mode).
      metrics    the registry (always; wrk_metrics: the series) and, with
                 options.metrics, its HTTP server (mdl_http, own thread);
                 collected from the housekeeping timer, at most once a
                 second. A port that cannot be had is a start-up failure.
      signalfd   SIGTERM, SIGINT, SIGHUP, SIGQUIT start the shutdown;
                 SIGUSR1 dumps the in-flight table; SIGCHLD reaps restart
                 children. All are blocked before any thread exists.

    After every handler the job table's batched commands are flushed, the
    queued saves go to the store in one hand-over and the buffered log is
    written, so a burst costs one write per kind, not one per message.

    Shutdown: CREDIT 0 (take no more work), let the held messages finish
    and wait for the broker to confirm their ACKs and NACKs, all within the
    grace period; then log how many acks and nacks were left unconfirmed,
    NACK what still works, BYE, close the database (every queued row is
    committed first), return 0.
*/
#ifndef WRK_WORKER_H_INCLUDED
#define WRK_WORKER_H_INCLUDED

#include <stdbool.h>
#include <stdint.h>

#include "wrk_db.h"
#include "wrk_jobs.h"

typedef struct {
    const char *broker;         //  Backend endpoint
    int64_t credit;             //  Most messages in flight
    const char *name;           //  Worker name (HELLO, rows, log)
    const char *db_url;         //  Store URL (wrk_db.h): sqlite:PATH, postgresql://...
    wrk_db_t *db;               //  A store already open (tests), taken over; NULL: open db_url
    const char *restart_cmd;    //  Exec template, or NULL in simulate mode
    const char *verify_cmd;     //  Exec: verify template for in-doubt deliveries, or NULL
    const char *health_cmd;     //  Exec: health template run after a restart, or NULL
    int64_t grace_ms;           //  Shutdown grace period
    int64_t heartbeat_ms;       //  Own heartbeat interval; -1 = broker's
    bool debug;                 //  Log loop handlers slower than 100 ms
    const char *metrics;        //  Serve Prometheus metrics at HOST:PORT (mdl_http), or NULL
    wrk_config_t jobs;          //  Per-message policy
    const char *curve_cert;     //  Own secret certificate (CURVE), or NULL
    const char *broker_cert;    //  The broker's public certificate, or NULL
} wrk_options_t;

//  Run until a shutdown signal. Returns 0 after a clean shutdown, or 1
//  when the service could not start (database, sockets); logged.
int wrk_worker_run (const wrk_options_t *options);

#endif
