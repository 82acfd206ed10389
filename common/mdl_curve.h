/*  mdl_curve: CurveZMQ certificates and socket options, shared by the
    broker, the worker and the tools.

    A certificate is a file in CZMQ's zcert format (ZPL text):
        metadata
            name = "alice"
        curve
            public-key = "<40 Z85 characters>"
            secret-key = "<40 Z85 characters>"      (secret files only)
    `mandrill-ctl keygen NAME` writes NAME.key (public) and NAME.key_secret
    (both keys, mode 0600). The broker's role directories hold public files;
    every program's --curve-cert takes its own secret file.

    Loading never asserts on a file: a missing, oversized or malformed file,
    or a key that is not 40 valid Z85 characters, is refused with a reason
    in the caller's buffer. Cost: one small file read per load.

    Socket options must be applied before bind / connect. A server socket
    gets CURVE_SERVER, its secret key and a ZAP domain (the broker's ZAP
    handler, brk_auth, decides per domain which roles may connect), and
    refuses frames over MDL_CURVE_MAX_FRAME (ZMQ_MAXMSGSIZE: the peer is
    disconnected). Without that limit a peer that never authenticates
    could announce a frame of any size during the handshake and make
    libzmq allocate it; 4 MiB is far above the protocol's 1 MiB body
    limit, so an oversized body still gets its ERROR too_large. A
    client gets its own key pair and the server's public key; a client
    whose key the server refuses is never told: its messages are simply
    never delivered (libzmq retries the handshake in the background).
*/
#ifndef MDL_CURVE_H_INCLUDED
#define MDL_CURVE_H_INCLUDED

#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>

#define MDL_CURVE_KEY_TXT   41      //  40 Z85 characters and a NUL
#define MDL_CURVE_NAME_MAX  128     //  Longest certificate name kept
#define MDL_CURVE_FILE_MAX  65536   //  Largest certificate file read
#define MDL_CURVE_MAX_FRAME (4 * 1024 * 1024)   //  Largest frame a CURVE server takes

typedef struct {
    char public_txt [MDL_CURVE_KEY_TXT];    //  Z85 public key
    char secret_txt [MDL_CURVE_KEY_TXT];    //  Z85 secret key, "" in a public file
    bool has_secret;                        //  The file held a secret key
    char name [MDL_CURVE_NAME_MAX];         //  metadata "name", or "" when absent
} mdl_curve_cert_t;

//  Load the certificate at path into *cert. With need_secret the file must
//  hold a secret key (a program's own certificate). Returns 0, or -1 with
//  a reason in error (error_size bytes; error may be NULL).
int mdl_curve_load (const char *path, bool need_secret, mdl_curve_cert_t *cert,
                    char *error, size_t error_size);

//  The name a program's own certificate authenticates as, as the broker
//  records it (the NAME of the ZAP User-Id "ROLE:NAME"): the file's
//  metadata name, else its file name without directory and ".key_secret"
//  or ".key" (the broker names a key without metadata name by its public
//  file, so keep both files' names alike). Into name (size bytes, cut).
//  Returns 0, or -1 with a reason in error when the file cannot be loaded.
int mdl_curve_identity (const char *path, char *name, size_t size, char *error, size_t error_size);

//  True if text is exactly 40 valid Z85 characters.
bool mdl_curve_key_valid (const char *text);

//  Make sock a CURVE server with own's secret key, asking ZAP domain
//  zap_domain. own must hold a secret key. Returns 0 or -1 (errno set by
//  libzmq, e.g. when CURVE is not built in). Where libzmq can (it has
//  ZAP domain enforcement, as Debian's does), the socket fails closed: with
//  no ZAP handler bound in the process, every client is refused.
int mdl_curve_server (zsock_t *sock, const mdl_curve_cert_t *own, const char *zap_domain);

//  True if sock refuses clients when no ZAP handler answers (see above).
bool mdl_curve_zap_enforced (zsock_t *sock);

//  Make sock a CURVE client with own's key pair, talking to the server
//  whose public key is server's. Returns 0 or -1.
int mdl_curve_client (zsock_t *sock, const mdl_curve_cert_t *own, const mdl_curve_cert_t *server);

//  Client options from two files, as every client's --curve-cert and
//  --broker-cert give them: both NULL is no CURVE (returns 0, nothing
//  set); one without the other is an error. Returns 0, or -1 with a
//  reason in error.
int mdl_curve_client_files (zsock_t *sock, const char *own_path, const char *server_path,
                            char *error, size_t error_size);

//  Make a new key pair named name and write dir/name.key (public, mode
//  0644) and dir/name.key_secret (mode 0600), metadata name = name. Never
//  overwrites: if either file exists, nothing is written and -1 returned.
//  name must be 1..64 characters of [A-Za-z0-9._-], not starting with '.'.
//  On success returns 0 and, when public_txt is not NULL, the public key.
//  Returns -1 with a reason in error on any failure (partial files removed).
int mdl_curve_keygen (const char *dir, const char *name, char public_txt [MDL_CURVE_KEY_TXT],
                      char *error, size_t error_size);

#endif
