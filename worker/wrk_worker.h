/*  wrk_worker: the mandrill-worker service, one zloop in the calling thread.

    Owns the DEALER to the broker's backend, the signalfd, the database
    thread (wrk_db), the restart children (wrk_exec) and the job table
    (wrk_job), and glues them together:

      DEALER     HELLO at start and after every reconnect; DELIVER feeds the
                 job table; EXTENDED, ACKED, NACKED and PROGRESSED go to the
                 job table (stale/unknown leases stop being extended; acks,
                 nacks and progress count as done only when answered);
                 ERROR unexpected_command (the broker forgot us, e.g. it
                 restarted, and refused what we sent) sends HELLO again,
                 and every WELCOME resends every unconfirmed ACK, NACK and
                 PROGRESS; without a reply they are also resent after one
                 heartbeat interval. A heartbeat goes out every heartbeat
                 interval; a broker silent for three intervals is presumed
                 gone: the DEALER is destroyed and recreated with
                 exponential backoff (0.5 s doubling to 10 s between
                 attempts). Held leases keep being worked and are acked
                 when done; the broker answers stale for those it no longer
                 knows, which is logged.
      signalfd   SIGTERM, SIGINT, SIGHUP, SIGQUIT start the shutdown;
                 SIGUSR1 dumps the in-flight table; SIGCHLD reaps restart
                 children. All are blocked before any thread exists.
      timers     one timer re-armed to the job table's earliest deadline,
                 one housekeeping timer (heartbeat, liveness, grace, log).

    After every handler the job table's batched commands are flushed, the
    queued saves go to the database thread in one message and the buffered
    log is written, so a burst costs one write per kind, not one per message.

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

#include "wrk_job.h"

typedef struct {
    const char *broker;         //  Backend endpoint
    int64_t credit;             //  Most messages in flight
    const char *name;           //  Worker name (HELLO, rows, log)
    const char *db_path;        //  SQLite file
    const char *restart_cmd;    //  Exec template, or NULL in simulate mode
    int64_t grace_ms;           //  Shutdown grace period
    int64_t heartbeat_ms;       //  Own heartbeat interval; -1 = broker's
    bool debug;                 //  Log loop handlers slower than 100 ms
    wrk_config_t jobs;          //  Per-message policy
    const char *curve_cert;     //  Own secret certificate (CURVE), or NULL
    const char *broker_cert;    //  The broker's public certificate, or NULL
} wrk_options_t;

//  Run until a shutdown signal. Returns 0 after a clean shutdown, or 1
//  when the service could not start (database, sockets); logged.
int wrk_worker_run (const wrk_options_t *options);

#endif
