/*  mdl_curve: certificates and CURVE socket options; see mdl_curve.h. */
#include "mdl_curve.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static int
s_fail (char *error, size_t size, const char *format, ...) CHECK_PRINTF (3);

static int
s_fail (char *error, size_t size, const char *format, ...)
{
    if (error && size) {
        va_list args;
        va_start (args, format);
        vsnprintf (error, size, format, args);
        va_end (args);
    }
    return -1;
}

bool
mdl_curve_key_valid (const char *text)
{
    if (!text || strlen (text) != 40)
        return false;
    uint8_t key [32];
    return zmq_z85_decode (key, text) != NULL;
}

//  Certificate names end up in ZAP User-Ids ("ROLE:NAME") and log lines:
//  keep them short and plain, whatever the file says.
static void
s_clean_name (const char *raw, char *name)
{
    size_t used = 0;
    for (; raw && *raw && used < 64; raw++) {
        char c = *raw;
        bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
                  || c == '.' || c == '_' || c == '-' || c == '@';
        name [used++] = plain ? c : '_';
    }
    name [used] = 0;
}

int
mdl_curve_load (const char *path, bool need_secret, mdl_curve_cert_t *cert,
                char *error, size_t error_size)
{
    memset (cert, 0, sizeof *cert);
    if (!path || !*path)
        return s_fail (error, error_size, "no certificate file given");
    struct stat info;
    if (stat (path, &info) != 0)
        return s_fail (error, error_size, "%s: %s", path, strerror (errno));
    if (!S_ISREG (info.st_mode))
        return s_fail (error, error_size, "%s: not a regular file", path);
    if (info.st_size > MDL_CURVE_FILE_MAX)
        return s_fail (error, error_size, "%s: %lld bytes, a certificate has at most %d",
                       path, (long long) info.st_size, MDL_CURVE_FILE_MAX);
    //  Read here rather than with zconfig_load, which leaks its file
    //  handle on text it cannot parse (CZMQ 4.2), and re-check the size
    //  in case the file grew since the stat
    char *text = malloc (MDL_CURVE_FILE_MAX + 1);
    if (!text)
        return s_fail (error, error_size, "%s: out of memory", path);
    FILE *file = fopen (path, "rb");
    size_t size = file ? fread (text, 1, MDL_CURVE_FILE_MAX + 1, file) : 0;
    bool failed = !file || ferror (file);
    if (file)
        fclose (file);
    if (failed || size > MDL_CURVE_FILE_MAX) {
        free (text);
        return s_fail (error, error_size, "%s: cannot read it, or too large", path);
    }
    text [size] = 0;
    zconfig_t *root = zconfig_str_load (text);
    free (text);
    if (!root)
        return s_fail (error, error_size, "%s: not a certificate (unreadable or not ZPL)", path);
    const char *public_txt = zconfig_get (root, "/curve/public-key", NULL);
    const char *secret_txt = zconfig_get (root, "/curve/secret-key", NULL);
    const char *name = zconfig_get (root, "/metadata/name", NULL);
    int rc = 0;
    if (!public_txt)
        rc = s_fail (error, error_size, "%s: no curve/public-key", path);
    else
    if (!mdl_curve_key_valid (public_txt))
        rc = s_fail (error, error_size, "%s: curve/public-key is not 40 Z85 characters", path);
    else
    if (secret_txt && *secret_txt && !mdl_curve_key_valid (secret_txt))
        rc = s_fail (error, error_size, "%s: curve/secret-key is not 40 Z85 characters", path);
    else
    if (need_secret && !(secret_txt && *secret_txt))
        rc = s_fail (error, error_size, "%s: no curve/secret-key (give the _secret file)", path);
    if (rc == 0) {
        memcpy (cert->public_txt, public_txt, 41);
        if (secret_txt && *secret_txt) {
            memcpy (cert->secret_txt, secret_txt, 41);
            cert->has_secret = true;
        }
        s_clean_name (name, cert->name);
    }
    zconfig_destroy (&root);
    if (rc != 0)
        memset (cert, 0, sizeof *cert);
    return rc;
}

int
mdl_curve_identity (const char *path, char *name, size_t size, char *error, size_t error_size)
{
    assert (name && size > 0);
    name [0] = 0;
    mdl_curve_cert_t cert;
    if (mdl_curve_load (path, false, &cert, error, error_size) != 0)
        return -1;
    if (cert.name [0]) {
        snprintf (name, size, "%s", cert.name);
        return 0;
    }
    //  As brk_auth names a file without metadata name: cleaned the same way
    const char *base = strrchr (path, '/');
    base = base ? base + 1 : path;
    size_t length = strlen (base);
    if (length > 11 && strcmp (base + length - 11, ".key_secret") == 0)
        length -= 11;
    else
    if (length > 4 && strcmp (base + length - 4, ".key") == 0)
        length -= 4;
    size_t used = 0;
    for (size_t i = 0; i < length && used < 64 && used + 1 < size; i++) {
        char c = base [i];
        name [used++] = (c == ':' || c < 33 || c > 126) ? '_' : c;
    }
    name [used] = 0;
    return 0;
}

//  libzmq's ZMQ_ZAP_ENFORCE_DOMAIN (since 4.2.3; its header lists it with
//  the draft options, so it is named here): with it a CURVE server whose
//  ZAP handler is gone refuses every client instead of letting every key
//  in. A libzmq without it answers EINVAL; the handler's own lifetime
//  (brk_auth) is then the only guard.
#define S_ZAP_ENFORCE_DOMAIN 93

bool
mdl_curve_zap_enforced (zsock_t *sock)
{
    assert (sock);
    int value = 0;
    size_t size = sizeof value;
    return zmq_getsockopt (zsock_resolve (sock), S_ZAP_ENFORCE_DOMAIN, &value, &size) == 0 && value;
}

int
mdl_curve_server (zsock_t *sock, const mdl_curve_cert_t *own, const char *zap_domain)
{
    assert (sock && own);
    if (!own->has_secret || !zsys_has_curve ()) {
        errno = ENOTSUP;
        return -1;
    }
    void *handle = zsock_resolve (sock);
    int one = 1;
    int64_t max_frame = MDL_CURVE_MAX_FRAME;
    if (zmq_setsockopt (handle, ZMQ_MAXMSGSIZE, &max_frame, sizeof max_frame) != 0
    ||  zmq_setsockopt (handle, ZMQ_CURVE_SERVER, &one, sizeof one) != 0
    ||  zmq_setsockopt (handle, ZMQ_CURVE_SECRETKEY, own->secret_txt, 40) != 0
    ||  zmq_setsockopt (handle, ZMQ_ZAP_DOMAIN, zap_domain ? zap_domain : "",
                        zap_domain ? strlen (zap_domain) : 0) != 0)
        return -1;
    if (zmq_setsockopt (handle, S_ZAP_ENFORCE_DOMAIN, &one, sizeof one) != 0)
        errno = 0;              //  Not in this libzmq: see above
    return 0;
}

int
mdl_curve_client (zsock_t *sock, const mdl_curve_cert_t *own, const mdl_curve_cert_t *server)
{
    assert (sock && own && server);
    if (!own->has_secret || !zsys_has_curve ()) {
        errno = ENOTSUP;
        return -1;
    }
    void *handle = zsock_resolve (sock);
    if (zmq_setsockopt (handle, ZMQ_CURVE_SERVERKEY, server->public_txt, 40) != 0
    ||  zmq_setsockopt (handle, ZMQ_CURVE_PUBLICKEY, own->public_txt, 40) != 0
    ||  zmq_setsockopt (handle, ZMQ_CURVE_SECRETKEY, own->secret_txt, 40) != 0)
        return -1;
    return 0;
}

int
mdl_curve_client_files (zsock_t *sock, const char *own_path, const char *server_path,
                        char *error, size_t error_size)
{
    if (!own_path && !server_path)
        return 0;
    if (!own_path || !server_path)
        return s_fail (error, error_size, "CURVE needs both --curve-cert and --broker-cert");
    mdl_curve_cert_t own, server;
    if (mdl_curve_load (own_path, true, &own, error, error_size) != 0
    ||  mdl_curve_load (server_path, false, &server, error, error_size) != 0)
        return -1;
    if (mdl_curve_client (sock, &own, &server) != 0)
        return s_fail (error, error_size, "cannot set CURVE options: %s", zmq_strerror (zmq_errno ()));
    return 0;
}

static bool
s_name_valid (const char *name)
{
    size_t length = name ? strlen (name) : 0;
    if (length == 0 || length > 64 || name [0] == '.')
        return false;
    for (size_t i = 0; i < length; i++) {
        char c = name [i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
        ||    c == '.' || c == '_' || c == '-'))
            return false;
    }
    return true;
}

//  Create path exclusively with mode and write text into it. Returns 0,
//  -1 with errno (EEXIST when it was there already).
static int
s_write_new (const char *path, mode_t mode, const char *text)
{
    int fd = open (path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd == -1)
        return -1;
    //  The umask may have narrowed mode; a secret must not be wider anyway
    if (fchmod (fd, mode) != 0) {
        int saved = errno;
        close (fd);
        unlink (path);
        errno = saved;
        return -1;
    }
    size_t size = strlen (text);
    size_t done = 0;
    while (done < size) {
        ssize_t wrote = write (fd, text + done, size - done);
        if (wrote < 0 && errno == EINTR)
            continue;
        if (wrote <= 0) {
            int saved = wrote < 0 ? errno : EIO;
            close (fd);
            unlink (path);
            errno = saved;
            return -1;
        }
        done += (size_t) wrote;
    }
    if (fsync (fd) != 0 || close (fd) != 0) {
        int saved = errno;
        unlink (path);
        errno = saved;
        return -1;
    }
    return 0;
}

static void
s_cert_text (char *text, size_t size, const char *kind, const char *advice,
             const char *name, const char *date, const char *public_txt)
{
    snprintf (text, size,
        "#   ZeroMQ CURVE %s Certificate (zcert format), made by mandrill-ctl keygen\n"
        "#   %s\n"
        "\n"
        "metadata\n"
        "    name = \"%s\"\n"
        "    created = \"%s\"\n"
        "curve\n"
        "    public-key = \"%s\"\n",
        kind, advice, name, date, public_txt);
}

int
mdl_curve_keygen (const char *dir, const char *name, char public_txt [MDL_CURVE_KEY_TXT],
                  char *error, size_t error_size)
{
    if (!s_name_valid (name))
        return s_fail (error, error_size,
                       "bad name '%s': 1 to 64 of A-Z a-z 0-9 . _ -, not starting with '.'",
                       name ? name : "");
    if (!zsys_has_curve ())
        return s_fail (error, error_size, "this libzmq has no CURVE support");
    if (!dir || !*dir)
        dir = ".";
    char public_path [PATH_MAX], secret_path [PATH_MAX];
    if (snprintf (public_path, sizeof public_path, "%s/%s.key", dir, name) >= (int) sizeof public_path
    ||  snprintf (secret_path, sizeof secret_path, "%s/%s.key_secret", dir, name) >= (int) sizeof secret_path)
        return s_fail (error, error_size, "path too long");
    char pub [MDL_CURVE_KEY_TXT], sec [MDL_CURVE_KEY_TXT];
    if (zmq_curve_keypair (pub, sec) != 0)
        return s_fail (error, error_size, "cannot make a key pair: %s", zmq_strerror (zmq_errno ()));

    char date [32] = "";
    time_t now = time (NULL);
    struct tm tm;
    if (gmtime_r (&now, &tm))
        strftime (date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", &tm);
    char text [1024];
    //  The secret file first: if it cannot be made, no public file exists
    //  that would suggest a usable pair
    s_cert_text (text, sizeof text, "**Secret**",
                 "Keep this file private (mode 0600); give out only the public file.",
                 name, date, pub);
    size_t used = strlen (text);
    snprintf (text + used, sizeof text - used, "    secret-key = \"%s\"\n", sec);
    if (s_write_new (secret_path, 0600, text) != 0) {
        int saved = errno;
        return s_fail (error, error_size, "%s: %s%s", secret_path, strerror (saved),
                       saved == EEXIST ? " (refusing to overwrite)" : "");
    }
    s_cert_text (text, sizeof text, "Public",
                 "Copy this file to the broker's role directory (or to the clients, for the broker's).",
                 name, date, pub);
    if (s_write_new (public_path, 0644, text) != 0) {
        int saved = errno;
        unlink (secret_path);
        return s_fail (error, error_size, "%s: %s%s", public_path, strerror (saved),
                       saved == EEXIST ? " (refusing to overwrite)" : "");
    }
    if (public_txt)
        memcpy (public_txt, pub, MDL_CURVE_KEY_TXT);
    return 0;
}
