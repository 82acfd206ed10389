/*  brk_auth: the broker's ZAP handler (ZeroMQ RFC 27) and role rules; see
    brk_auth.h.

    The actor thread owns the role directories' key tables; the broker
    thread only calls brk_auth_check, which reads the User-Id libzmq
    attached to a message and shares nothing with the actor but the
    (read-only) configuration. So there is no lock anywhere: each thread
    has its own mdl_rate limiter for its log lines (10 a second each).
*/
#include "brk_auth.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <sys/stat.h>

#include "mdl_curve.h"
#include "mdl_log.h"
#include "mdl_rate.h"

#define S_ZAP_ENDPOINT  "inproc://zeromq.zap.01"
#define S_LOG_PER_SEC   10          //  Refusal lines per second, the rest counted

typedef struct {
    brk_role_t role;            //  Whose keys
    char *path;                 //  Directory, or NULL: no keys
    zhashx_t *keys;             //  Z85 public key -> name (strings, owned)
    uint64_t signature;         //  Of the directory as last loaded
    bool loaded;                //  signature is valid
} s_dir_t;

typedef struct {
    zsock_t *pipe;              //  Actor pipe
    zsock_t *handler;           //  REP on the ZAP endpoint
    s_dir_t dirs [BRK_ROLE_COUNT];  //  Per role
    mdl_rate_t *limit;          //  Refusal log lines
    bool bound;                 //  handler holds the ZAP endpoint
} s_actor_t;

struct _brk_auth_t {
    zactor_t *actor;            //  The handler thread
    mdl_rate_t *limit;          //  Forbidden-command log lines
};

static const char *s_role_names [BRK_ROLE_COUNT] = {
    "none", "publisher", "worker", "operator", "observer"
};

const char *
brk_role_name (brk_role_t role)
{
    return role >= 0 && role < BRK_ROLE_COUNT ? s_role_names [role] : "none";
}

brk_role_t
brk_auth_role (const char *user_id, const char **name)
{
    if (name)
        *name = "";
    const char *colon = user_id ? strchr (user_id, ':') : NULL;
    if (!colon)
        return BRK_ROLE_NONE;
    size_t length = (size_t) (colon - user_id);
    for (int role = BRK_ROLE_PUBLISHER; role < BRK_ROLE_COUNT; role++)
        if (strlen (s_role_names [role]) == length && memcmp (user_id, s_role_names [role], length) == 0) {
            if (name)
                *name = colon + 1;
            return (brk_role_t) role;
        }
    return BRK_ROLE_NONE;
}

static bool
s_worker_command (mmp_command_t command)
{
    return command == MMP_HELLO || command == MMP_CREDIT || command == MMP_EXTEND
        || command == MMP_ACK || command == MMP_NACK || command == MMP_PROGRESS
        || command == MMP_HEARTBEAT || command == MMP_BYE;
}

bool
brk_auth_allows (brk_role_t role, mmp_command_t command)
{
    switch (role) {
        case BRK_ROLE_PUBLISHER:
            return command == MMP_PUBLISH;
        case BRK_ROLE_WORKER:
            return s_worker_command (command);
        case BRK_ROLE_OPERATOR:
            //  Every frontend command, also those added later (pause, ...)
            return command >= 0 && command < MMP_COMMAND_COUNT && !s_worker_command (command);
        case BRK_ROLE_OBSERVER:
            //  Read-only: PAUSE, RESUME and RELOAD are for operators
            return command == MMP_STATS || command == MMP_GROUPS || command == MMP_INFLIGHT
                || command == MMP_WORKERS;
        default:
            return false;
    }
}

//  True if a line may be logged now; rolls the window over, reporting
//  what the last one held back.
static bool
s_limit_allows (mdl_rate_t *limit, const char *what)
{
    mdl_rate_window_t window;
    bool allowed = mdl_rate_allow (limit, &window);
    if (window.closed && window.dropped)
        mdl_warn ("%" PRId64 " more %s suppressed in the last second", window.dropped, what);
    return allowed;
}

//  --------------------------------------------------------------------------
//  Role directories

static uint64_t
s_mix (uint64_t hash, const void *data, size_t size)
{
    const unsigned char *bytes = data;
    for (size_t i = 0; i < size; i++) {
        hash ^= bytes [i];
        hash *= 1099511628211ULL;
    }
    return hash;
}

static bool
s_wanted (const char *name)
{
    size_t length = strlen (name);
    return name [0] != '.' && !(length >= 7 && streq (name + length - 7, "_secret"));
}

//  A fingerprint of the directory's listing: entries combined by sum, so
//  the order readdir returns them in does not matter. -1 with errno when
//  the directory cannot be read.
static int
s_signature (const char *path, uint64_t *signature)
{
    DIR *dir = opendir (path);
    if (!dir)
        return -1;
    uint64_t sum = 0, count = 0;
    struct dirent *entry;
    char file [PATH_MAX];
    while ((entry = readdir (dir))) {
        if (!s_wanted (entry->d_name))
            continue;
        struct stat info;
        if (snprintf (file, sizeof file, "%s/%s", path, entry->d_name) >= (int) sizeof file
        ||  stat (file, &info) != 0 || !S_ISREG (info.st_mode))
            continue;
        uint64_t hash = 14695981039346656037ULL;
        hash = s_mix (hash, entry->d_name, strlen (entry->d_name));
        hash = s_mix (hash, &info.st_size, sizeof info.st_size);
        hash = s_mix (hash, &info.st_mtim.tv_sec, sizeof info.st_mtim.tv_sec);
        hash = s_mix (hash, &info.st_mtim.tv_nsec, sizeof info.st_mtim.tv_nsec);
        hash = s_mix (hash, &info.st_ino, sizeof info.st_ino);
        sum += hash;
        count++;
    }
    closedir (dir);
    *signature = s_mix (sum, &count, sizeof count);
    return 0;
}

static void
s_string_destructor (void **item)
{
    free (*item);
    *item = NULL;
}

static void
s_dir_load (s_dir_t *self)
{
    zhashx_purge (self->keys);
    DIR *dir = opendir (self->path);
    if (!dir) {
        mdl_warn ("auth: %s directory %s: %s; no %s keys allowed",
                  brk_role_name (self->role), self->path, strerror (errno), brk_role_name (self->role));
        return;
    }
    struct dirent *entry;
    char file [PATH_MAX];
    while ((entry = readdir (dir))) {
        if (!s_wanted (entry->d_name))
            continue;
        if (snprintf (file, sizeof file, "%s/%s", self->path, entry->d_name) >= (int) sizeof file)
            continue;
        struct stat info;
        if (stat (file, &info) != 0 || !S_ISREG (info.st_mode))
            continue;
        mdl_curve_cert_t cert;
        char error [256];
        if (mdl_curve_load (file, false, &cert, error, sizeof error) != 0) {
            mdl_warn ("auth: skipping %s", error);
            continue;
        }
        if (!*cert.name) {
            //  The file name without ".key", cleaned as a metadata name is
            size_t length = strlen (entry->d_name);
            if (length > 4 && streq (entry->d_name + length - 4, ".key"))
                length -= 4;
            size_t used = 0;
            for (size_t i = 0; i < length && used < 64; i++) {
                char c = entry->d_name [i];
                cert.name [used++] = (c == ':' || c < 33 || c > 126) ? '_' : c;
            }
            cert.name [used] = 0;
        }
        char *name = strdup (cert.name);
        if (name && zhashx_insert (self->keys, cert.public_txt, name) != 0) {
            mdl_warn ("auth: %s: the same key is in %s already; keeping the first",
                      file, self->path);
            free (name);
        }
    }
    closedir (dir);
    mdl_info ("auth: %zu %s key(s) loaded from %s", zhashx_size (self->keys),
              brk_role_name (self->role), self->path);
}

//  Reload when the listing changed. An unreadable directory is loaded
//  (emptied) once per change of its readability, so it is logged once.
static void
s_dir_refresh (s_dir_t *self)
{
    if (!self->path)
        return;
    uint64_t signature = 0;
    if (s_signature (self->path, &signature) != 0)
        signature = 0;
    if (!self->loaded || signature != self->signature) {
        s_dir_load (self);
        self->signature = signature;
        self->loaded = true;
    }
}

static const char *
s_dir_lookup (s_dir_t *self, const char *key)
{
    if (!self->path)
        return NULL;
    s_dir_refresh (self);
    return zhashx_lookup (self->keys, key);
}

//  --------------------------------------------------------------------------
//  The ZAP handler

//  Takes *request_id_p (NULL afterwards).
static void
s_reply (s_actor_t *self, zframe_t **request_id_p, const char *status, const char *text,
         const char *user_id, const char *key)
{
    zmsg_t *reply = zmsg_new ();
    zmsg_addstr (reply, "1.0");
    if (*request_id_p)
        zmsg_append (reply, request_id_p);
    else
        zmsg_addstr (reply, "");
    zmsg_addstr (reply, status);
    zmsg_addstr (reply, text);
    zmsg_addstr (reply, user_id ? user_id : "");
    //  ZMTP metadata: name length (1 byte), name, value length (4 bytes, network order), value
    byte metadata [1 + 9 + 4 + 40];
    size_t size = 0;
    if (key && strlen (key) == 40) {
        metadata [0] = 9;
        memcpy (metadata + 1, "Curve-Key", 9);
        metadata [10] = metadata [11] = metadata [12] = 0;
        metadata [13] = 40;
        memcpy (metadata + 14, key, 40);
        size = sizeof metadata;
    }
    zmsg_addmem (reply, metadata, size);
    if (zmsg_send (&reply, self->handler) != 0)
        zmsg_destroy (&reply);
}

static void
s_refuse (s_actor_t *self, zframe_t **request_id_p, const char *domain, const char *address,
          const char *key, const char *why)
{
    if (s_limit_allows (self->limit, "refused connections"))
        mdl_warn ("auth: refused %s connection from %s (key %s): %s",
                  domain, address, key ? key : "-", why);
    s_reply (self, request_id_p, "400", why, NULL, NULL);
}

static void
s_handle_request (s_actor_t *self)
{
    zmsg_t *request = zmsg_recv (self->handler);
    if (!request)
        return;
    //  version, request id, domain, address, identity, mechanism, credentials...
    char *version = zmsg_popstr (request);
    zframe_t *request_id = zmsg_pop (request);
    char *domain = zmsg_popstr (request);
    char *address = zmsg_popstr (request);
    zframe_t *identity = zmsg_pop (request);
    char *mechanism = zmsg_popstr (request);
    zframe_t *credential = zmsg_pop (request);
    if (!version || !streq (version, "1.0") || !request_id || !domain || !address || !mechanism)
        s_reply (self, &request_id, "500", "malformed ZAP request", NULL, NULL);
    else
    if (!streq (mechanism, "CURVE") || !credential || zframe_size (credential) != 32)
        s_refuse (self, &request_id, domain ? domain : "?", address ? address : "?", NULL, "CURVE required");
    else {
        char key [41];
        zmq_z85_encode (key, zframe_data (credential), 32);
        static const brk_role_t frontend [] = { BRK_ROLE_OPERATOR, BRK_ROLE_PUBLISHER, BRK_ROLE_OBSERVER, BRK_ROLE_NONE };
        static const brk_role_t backend [] = { BRK_ROLE_WORKER, BRK_ROLE_NONE };
        static const brk_role_t events [] = { BRK_ROLE_OPERATOR, BRK_ROLE_OBSERVER, BRK_ROLE_NONE };
        const brk_role_t *roles = streq (domain, "frontend") ? frontend
                                : streq (domain, "backend") ? backend
                                : streq (domain, "events") ? events : NULL;
        const char *name = NULL;
        brk_role_t role = BRK_ROLE_NONE;
        for (int i = 0; roles && roles [i] != BRK_ROLE_NONE && !name; i++) {
            name = s_dir_lookup (&self->dirs [roles [i]], key);
            role = roles [i];
        }
        if (!roles)
            s_refuse (self, &request_id, domain, address, key, "unknown ZAP domain");
        else
        if (!name)
            s_refuse (self, &request_id, domain, address, key, "key not allowed on this socket");
        else {
            char user_id [MDL_CURVE_NAME_MAX + 16];
            snprintf (user_id, sizeof user_id, "%s:%s", brk_role_name (role), name);
            mdl_debug ("auth: %s connection from %s is %s", domain, address, user_id);
            s_reply (self, &request_id, "200", "OK", user_id, key);
        }
    }
    zstr_free (&version);
    zframe_destroy (&request_id);
    zstr_free (&domain);
    zstr_free (&address);
    zframe_destroy (&identity);
    zstr_free (&mechanism);
    zframe_destroy (&credential);
    zmsg_destroy (&request);
}

static void
s_actor_free (s_actor_t *self)
{
    for (int role = 0; role < BRK_ROLE_COUNT; role++) {
        free (self->dirs [role].path);
        zhashx_destroy (&self->dirs [role].keys);
    }
    //  Unbind first: closing alone frees the inproc name only when
    //  libzmq's reaper gets to the socket, so a new handler could not bind yet
    if (self->handler && self->bound)
        zsock_unbind (self->handler, S_ZAP_ENDPOINT);
    zsock_destroy (&self->handler);
    mdl_rate_destroy (&self->limit);
    free (self);
}

static void
s_actor (zsock_t *pipe, void *args)
{
    s_actor_t *self = args;
    self->pipe = pipe;
    //  Signals belong to the threads that wait for them, never to this one
    sigset_t all;
    sigfillset (&all);
    pthread_sigmask (SIG_BLOCK, &all, NULL);
    self->handler = zsock_new (ZMQ_REP);
    int rc = -1;
    if (self->handler) {
        zsock_set_linger (self->handler, 0);
        rc = zsock_bind (self->handler, S_ZAP_ENDPOINT) == 0 ? 0 : -1;
        self->bound = rc == 0;
        if (rc != 0)
            mdl_error ("auth: cannot bind %s: %s (another ZAP handler in this process?)",
                       S_ZAP_ENDPOINT, zmq_strerror (zmq_errno ()));
    }
    if (rc == 0)
        for (int role = 0; role < BRK_ROLE_COUNT; role++)
            s_dir_refresh (&self->dirs [role]);   //  Log what is allowed at start
    zsock_signal (pipe, 0);
    zsock_send (pipe, "i", rc);
    zpoller_t *poller = rc == 0 ? zpoller_new (pipe, self->handler, NULL) : zpoller_new (pipe, NULL);
    //  The handler must outlive every CURVE socket: without it libzmq lets
    //  any key in. So neither a signal (EINTR) nor CZMQ's interrupted flag
    //  ends the loop; only $TERM from the owner, or the context's end.
    if (poller)
        zpoller_set_nonstop (poller, true);
    while (poller) {
        void *which = zpoller_wait (poller, -1);
        if (which == self->handler)
            s_handle_request (self);
        else
        if (which == pipe) {
            char *command = zstr_recv (pipe);
            bool term = !command || streq (command, "$TERM");
            zstr_free (&command);
            if (term)
                break;
        }
        else
        if (zpoller_terminated (poller) && zmq_errno () == ETERM)
            break;
    }
    zpoller_destroy (&poller);
    s_actor_free (self);
}

//  --------------------------------------------------------------------------
//  Public API

brk_auth_t *
brk_auth_new (const brk_auth_config_t *config)
{
    assert (config);
    brk_auth_t *self = calloc (1, sizeof *self);
    s_actor_t *state = calloc (1, sizeof *state);
    if (!self || !state) {
        free (self);
        free (state);
        return NULL;
    }
    mdl_clock_t clock = config->clock.now ? config->clock : mdl_clock_system ();
    self->limit = mdl_rate_new (clock, S_LOG_PER_SEC, 1000);
    state->limit = mdl_rate_new (clock, S_LOG_PER_SEC, 1000);
    bool failed = !self->limit || !state->limit;
    for (int role = 0; role < BRK_ROLE_COUNT; role++) {
        s_dir_t *dir = &state->dirs [role];
        dir->role = (brk_role_t) role;
        dir->keys = zhashx_new ();
        if (dir->keys)
            zhashx_set_destructor (dir->keys, s_string_destructor);
        if (role != BRK_ROLE_NONE && config->dirs [role])
            dir->path = strdup (config->dirs [role]);
        if (!dir->keys || (role != BRK_ROLE_NONE && config->dirs [role] && !dir->path))
            failed = true;
    }
    if (failed) {
        s_actor_free (state);
        mdl_rate_destroy (&self->limit);
        free (self);
        return NULL;
    }
    //  The actor frees its state when it ends
    self->actor = zactor_new (s_actor, state);
    int rc = -1;
    if (!self->actor)
        s_actor_free (state);
    else
    if (zsock_recv (self->actor, "i", &rc) != 0)
        rc = -1;
    if (rc != 0) {
        brk_auth_destroy (&self);
        return NULL;
    }
    return self;
}

void
brk_auth_destroy (brk_auth_t **self_p)
{
    assert (self_p);
    brk_auth_t *self = *self_p;
    if (!self)
        return;
    zactor_destroy (&self->actor);
    mdl_rate_destroy (&self->limit);
    free (self);
    *self_p = NULL;
}

int
brk_auth_check (brk_auth_t *self, const char *user_id, const char *key, mmp_command_t command)
{
    assert (self);
    const char *name = NULL;
    brk_role_t role = brk_auth_role (user_id, &name);
    if (brk_auth_allows (role, command))
        return 0;
    if (s_limit_allows (self->limit, "forbidden-command warnings"))
        mdl_warn ("auth: forbidden: %s %s (key %s) sent %s", brk_role_name (role),
                  name && *name ? name : "-", key && *key ? key : "-", mmp_command_name (command));
    return -1;
}

bool
brk_auth_local (const char *endpoint)
{
    if (!endpoint)
        return false;
    if (strncmp (endpoint, "ipc://", 6) == 0 || strncmp (endpoint, "inproc://", 9) == 0)
        return true;
    if (strncmp (endpoint, "tcp://", 6) != 0 || strchr (endpoint, ';'))
        return false;
    const char *host = endpoint + 6;
    if (strncmp (host, "localhost:", 10) == 0 || strncmp (host, "[::1]:", 6) == 0)
        return true;
    //  127.0.0.0/8: four dotted numbers, the first 127, then the port
    unsigned parts [4];
    int used = 0;
    if (sscanf (host, "%3u.%3u.%3u.%3u:%n", &parts [0], &parts [1], &parts [2], &parts [3], &used) != 4
    ||  used == 0)
        return false;
    return parts [0] == 127 && parts [1] < 256 && parts [2] < 256 && parts [3] < 256;
}
