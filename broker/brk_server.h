/*  brk_server: the broker, as a CZMQ actor.

    zactor_t *broker = zactor_new (brk_server, &config);   // config is copied
    zstr_sendx (broker, "BIND", "frontend", "tcp://127.0.0.1:*", NULL);
    int port;  zsock_recv (broker, "i", &port);             // -1 on failure
    ...
    zactor_destroy (&broker);                               // $TERM: clean stop

    Pipe commands:
      BIND frontend|backend|events ENDPOINT  -> "i" port (or -1)
      PORT frontend|backend|events            -> "i" port bound last (or -1)
      $TERM                                   -> stops after flushing
    The actor signals the pipe once it is ready (zactor_new returns then),
    or with failure if it could not start; zactor_new then still returns an
    actor whose first BIND answers -1.

    Sockets: frontend ROUTER (publishers, control), backend ROUTER
    (workers), events XPUB. Both ROUTERs have ROUTER_MANDATORY and no send
    high-water mark, so a reply to a live peer is never dropped silently
    and a reply to a vanished peer fails loudly (the worker is then lost).
*/
#ifndef BRK_SERVER_H_INCLUDED
#define BRK_SERVER_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "brk_queue.h"

typedef struct {
    brk_queue_config_t queue;   //  Lease and retry rules
    bool verbose;               //  Log every message at debug level
} brk_server_config_t;

void brk_server_config_defaults (brk_server_config_t *config);

//  The actor function, for zactor_new (). args is a brk_server_config_t *.
void brk_server (zsock_t *pipe, void *args);

#endif
