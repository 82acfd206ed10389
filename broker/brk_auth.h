/*  brk_auth: the broker's ZAP handler and its role rules.

    brk_auth_t *auth = brk_auth_new (&config);      //  before any CURVE bind
    ...
    brk_auth_destroy (&auth);

    An actor of its own (one thread) binds a REP socket on
    inproc://zeromq.zap.01 and answers every ZAP request libzmq makes for
    the broker's CURVE sockets. Each socket names its side as ZAP domain
    (mdl_curve_server): the side decides which role directories are asked.
        domain      roles, in the order asked (the first holding the key wins)
        frontend    operators, publishers, observers
        backend     workers
        events      operators, observers
    A key found in none of them, another mechanism than CURVE, or an unknown
    domain, is refused (status 400): libzmq then drops the connection and
    the peer gets no service at all. A refusal is logged (rate limited, at
    most 10 lines a second) with the side, the address and the key.

    An accepted connection gets the ZAP User-Id "ROLE:NAME" (NAME is the
    certificate's metadata name, else the file name without ".key") and
    the metadata property "Curve-Key" (the Z85 public key). libzmq attaches
    both to every message of the connection: the broker reads them per
    message (mmp_recv_meta) and asks brk_auth_check what the role may send.

    Directories are read again when they changed: before each lookup the
    directory and its files are stat()ed, and any change in the names,
    sizes or modification times (nanoseconds) reloads the whole directory.
    Cost: O(files) stat calls per handshake, O(files) loads per change;
    nothing per message. A directory that is missing or unreadable holds
    no keys (logged once per change). Files ending "_secret" and files
    starting with "." are ignored; a file that is not a certificate is
    logged and skipped. Open connections keep the role they had at their
    handshake: removing a key refuses its next connection, not its current
    one (restart the broker to cut every connection at once).

    Only one ZAP handler can exist per ZeroMQ context: a second brk_auth_new
    in the same process fails (NULL) while the first lives.
*/
#ifndef BRK_AUTH_H_INCLUDED
#define BRK_AUTH_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>

#include "mdl_clock.h"
#include "mmp.h"

typedef enum {
    BRK_ROLE_NONE,              //  Not authenticated (no CURVE, or no User-Id)
    BRK_ROLE_PUBLISHER,         //  PUBLISH
    BRK_ROLE_WORKER,            //  The backend's commands
    BRK_ROLE_OPERATOR,          //  Every frontend command, the event feed
    BRK_ROLE_OBSERVER,          //  STATS, GROUPS, INFLIGHT, WORKERS and the event feed
    BRK_ROLE_COUNT
} brk_role_t;

typedef struct {
    const char *dirs [BRK_ROLE_COUNT];  //  Per role, a directory of public certificates, or NULL (none allowed)
    mdl_clock_t clock;                  //  For the log rate limit; NULL now () = system clock
} brk_auth_config_t;

typedef struct _brk_auth_t brk_auth_t;

//  Start the ZAP handler. The directories are copied; they need not exist
//  yet. Returns NULL if the handler cannot bind (another one runs in this
//  process) or on lack of memory; logged.
brk_auth_t *brk_auth_new (const brk_auth_config_t *config);

//  Stop the handler; safe twice. After this, CURVE handshakes on the
//  process's sockets are no longer checked: destroy the sockets first.
void brk_auth_destroy (brk_auth_t **self_p);

//  The role's name as in User-Ids and directories' flags: "publisher", ...
const char *brk_role_name (brk_role_t role);

//  Read a User-Id "ROLE:NAME": returns the role (BRK_ROLE_NONE when user_id
//  is NULL, empty or not of that form) and points *name at NAME.
brk_role_t brk_auth_role (const char *user_id, const char **name);

//  May role send command (to the broker)? A pure table lookup.
bool brk_auth_allows (brk_role_t role, mmp_command_t command);

//  The broker's per-message check: 0 if the connection with user_id may
//  send command, -1 if not, logging (at most 10 lines a second, the rest
//  counted) the role, name and key. Called in the broker's thread only.
int brk_auth_check (brk_auth_t *self, const char *user_id, const char *key,
                    mmp_command_t command);

//  True if a bind to endpoint reaches only this machine: tcp on 127.x.x.x,
//  localhost or [::1], ipc or inproc. Anything else (tcp://*, a host's
//  address or interface) is not, and the broker binds it without CURVE
//  only when told --insecure.
bool brk_auth_local (const char *endpoint);

#endif
