/*  brk_frontend: publishers and control clients; see
    brk_server_internal.h.

    Frontend peers need no state: every request gets exactly one reply.
    PUBLISH is all or nothing per batch, idempotent on message_id, and its
    PUBACK waits until the store is durable up to the batch's last record
    (brk_durable); STATS, DEADLETTERS and REPLAY are answered at once.
    Failure: bad input, a command for the other socket, a store that
    cannot write (ERROR unavailable) or no memory (ERROR internal; what
    was queued of a batch stays, and a retry finds it as duplicates) are
    all answered; the loop carries on.
    Cost: PUBLISH is O(requests) with one store append each; DEADLETTERS
    O(limit); STATS O(1).
*/
#include "brk_server_internal.h"

#include <ctype.h>
#include <float.h>
#include <math.h>
#include <string.h>

#include "mdl_log.h"
#include "mdl_util.h"

//  --------------------------------------------------------------------------
//  Attributes, printed as cJSON_PrintUnformatted prints them (the text a
//  worker receives must not depend on how the broker got it), straight
//  into the request being built: no intermediate allocation, and no
//  printf for the common number, an integral one. cJSON prints a number
//  that is not a small int with "%1.15g", reads it back, and uses
//  "%1.17g" when that does not come back close enough; for an integer of
//  16 to 19 digits (a nanosecond timestamp) both texts are worked out
//  here in integer arithmetic with the same rounding. Anything else, and
//  the rare exact tie where rounding direction would matter, is left to
//  cJSON itself.

static const uint64_t s_pow10 [20] = {
    UINT64_C (1), UINT64_C (10), UINT64_C (100), UINT64_C (1000), UINT64_C (10000),
    UINT64_C (100000), UINT64_C (1000000), UINT64_C (10000000), UINT64_C (100000000),
    UINT64_C (1000000000), UINT64_C (10000000000), UINT64_C (100000000000),
    UINT64_C (1000000000000), UINT64_C (10000000000000), UINT64_C (100000000000000),
    UINT64_C (1000000000000000), UINT64_C (10000000000000000),
    UINT64_C (100000000000000000), UINT64_C (1000000000000000000),
    UINT64_C (10000000000000000000)
};

//  value (of digits digits) rounded to keep significant digits, to the
//  nearest: *mantissa has keep digits, *exponent is the decimal exponent
//  of its first digit. Returns -1 on an exact tie.
static int
s_round_digits (uint64_t value, int digits, int keep, uint64_t *mantissa, int *exponent)
{
    *exponent = digits - 1;
    if (digits <= keep) {
        *mantissa = value * s_pow10 [keep - digits];
        return 0;
    }
    uint64_t unit = s_pow10 [digits - keep];
    uint64_t rest = value % unit;
    uint64_t kept = value / unit;
    if (rest == unit / 2)
        return -1;
    if (rest > unit / 2 && ++kept == s_pow10 [keep]) {
        kept /= 10;
        (*exponent)++;
    }
    *mantissa = kept;
    return 0;
}

//  Writes "%1.<keep>g" of the rounded integer: exponent notation when the
//  exponent reaches the precision, trailing zeros dropped as %g drops them.
static size_t
s_format_g (char *text, bool negative, uint64_t mantissa, int keep, int exponent)
{
    char digits [20] = "";      //  Zeroed only to calm the sanitizer build's flow analysis
    for (int i = keep - 1; i >= 0; i--) {
        digits [i] = (char) ('0' + mantissa % 10);
        mantissa /= 10;
    }
    size_t size = 0;
    if (negative)
        text [size++] = '-';
    if (exponent < keep) {
        //  Fixed notation; an integer has no fraction to print
        memcpy (text + size, digits, (size_t) exponent + 1);
        return size + (size_t) exponent + 1;
    }
    int last = keep - 1;
    while (last > 0 && digits [last] == '0')
        last--;
    text [size++] = digits [0];
    if (last > 0) {
        text [size++] = '.';
        memcpy (text + size, digits + 1, (size_t) last);
        size += (size_t) last;
    }
    text [size++] = 'e';
    text [size++] = '+';
    text [size++] = (char) ('0' + exponent / 10);
    text [size++] = (char) ('0' + exponent % 10);
    return size;
}

//  cJSON's text of an integral number, or 0 when it is one left to cJSON.
static size_t
s_format_integral (double number, char *text)
{
    double magnitude = fabs (number);
    if (!(magnitude >= 1 && magnitude < 1e19) || magnitude != floor (magnitude))
        return 0;
    uint64_t value = (uint64_t) magnitude;
    int digits = 1;
    while (digits < 20 && value >= s_pow10 [digits])
        digits++;
    bool negative = number < 0;
    if (digits <= 15)
        //  Both "%d" and "%1.15g" print its plain digits
        return s_format_g (text, negative, value, digits, digits - 1);
    uint64_t mantissa;
    int exponent;
    if (s_round_digits (value, digits, 15, &mantissa, &exponent))
        return 0;
    //  What reading the 15-digit text back gives, compared as cJSON does
    double back = (double) (mantissa * s_pow10 [exponent - 14]);
    double larger = back > magnitude ? back : magnitude;
    if (fabs (back - magnitude) <= larger * DBL_EPSILON)
        return s_format_g (text, negative, mantissa, 15, exponent);
    if (s_round_digits (value, digits, 17, &mantissa, &exponent))
        return 0;
    return s_format_g (text, negative, mantissa, 17, exponent);
}


//  Recursion is bounded by the codec's nesting limit (MMP_MAX_DEPTH).
static void
s_print_attributes (mmp_buf_t *buf, const cJSON *item)
{
    if (cJSON_IsNumber (item)) {
        char text [32];
        size_t size = s_format_integral (item->valuedouble, text);
        if (size) {
            mmp_buf_append (buf, text, size);
            return;
        }
    }
    else
    if (cJSON_IsString (item)) {
        mmp_buf_json_string_valid (buf, item->valuestring);
        return;
    }
    else
    if (cJSON_IsTrue (item)) {
        mmp_buf_append (buf, "true", 4);
        return;
    }
    else
    if (cJSON_IsFalse (item)) {
        mmp_buf_append (buf, "false", 5);
        return;
    }
    else
    if (cJSON_IsNull (item)) {
        mmp_buf_append (buf, "null", 4);
        return;
    }
    else
    if (cJSON_IsArray (item) || cJSON_IsObject (item)) {
        bool object = cJSON_IsObject (item);
        mmp_buf_append (buf, object ? "{" : "[", 1);
        for (const cJSON *child = item->child; child; child = child->next) {
            if (child != item->child)
                mmp_buf_append (buf, ",", 1);
            if (object) {
                mmp_buf_json_string_valid (buf, child->string);
                mmp_buf_append (buf, ":", 1);
            }
            s_print_attributes (buf, child);
        }
        mmp_buf_append (buf, object ? "}" : "]", 1);
        return;
    }
    //  Other numbers (and anything unexpected): cJSON's own printer
    char *text = cJSON_PrintUnformatted (item);
    if (!text) {
        buf->failed = true;
        return;
    }
    mmp_buf_puts (buf, text);
    cJSON_free (text);
}

static void
s_handle_publish (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    if (self->store_error) {
        s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                  "the broker cannot write its journal now; retry later", msg->req);
        return;
    }
    uint64_t wait_for = 0;      //  Journal sequence this PUBACK waits for
    //  Normalise every request first: the batch is all or nothing
    char (*ids) [37] = malloc (msg->message_count * sizeof *ids);
    bool *duplicate = calloc (msg->message_count, sizeof (bool));
    mmp_buf_t json;
    mmp_buf_init (&json);
    if (!ids || !duplicate) {
        free (ids);
        free (duplicate);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        if (request->message_id) {
            //  The codec checked it is a uuid: only hex digits change case
            for (size_t c = 0; c < 36; c++) {
                char digit = request->message_id [c];
                ids [i][c] = digit >= 'A' && digit <= 'F' ? (char) (digit + 'a' - 'A') : digit;
            }
            ids [i][36] = 0;
        }
        else
            mdl_uuid4 (ids [i]);
    }
    size_t accepted = 0;
    for (size_t i = 0; i < msg->message_count; i++) {
        const mmp_request_t *request = &msg->messages [i];
        mmp_buf_clear (&json);
        mmp_buf_append (&json, "{\"message_id\":\"", 15);
        mmp_buf_append (&json, ids [i], 36);
        mmp_buf_append (&json, "\",\"instance_name\":", 18);
        mmp_buf_json_string (&json, request->instance_name);
        mmp_buf_puts (&json, ",\"hostname\":");
        if (request->hostname)
            mmp_buf_json_string (&json, request->hostname);
        else {
            mmp_buf_puts (&json, "\"");
            mmp_buf_puts (&json, request->instance_name);
            mmp_buf_puts (&json, ".example.net\"");
        }
        if (request->attributes) {
            mmp_buf_puts (&json, ",\"attributes\":");
            s_print_attributes (&json, request->attributes);
        }
        mmp_buf_puts (&json, "}");
        int rc = json.failed ? -1 : 0;
        brk_msg_t *known = brk_queue_lookup (self->queue, ids [i]);
        if (known) {
            rc = 1;
            self->duplicates++;
            //  A duplicate still waiting for the disk: its PUBACK waits too
            if (brk_msg_held (known) && brk_msg_seq (known) > wait_for)
                wait_for = brk_msg_seq (known);
        }
        else
        if (rc == 0) {
            brk_store_record_t record = {
                .kind = BRK_STORE_PUBLISH, .message_id = ids [i], .request = json.data,
                .published_ms = (uint64_t) mdl_clock_wall ()
            };
            uint64_t seq = brk_store_append (self->store, &record);
            if (seq == 0) {
                //  Those before it are stored and queued: a retry of
                //  the batch finds them as duplicates
                mmp_buf_free (&json);
                free (ids);
                free (duplicate);
                self->store_dirty = true;
                s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNAVAILABLE,
                          "the broker cannot write its journal now; retry later", msg->req);
                return;
            }
            self->store_dirty = true;
            if (brk_store_deferred (self->store))
                wait_for = seq;
            else
                seq = 0;        //  No promise to wait for: deliver at once
            rc = brk_queue_publish (self->queue, ids [i], json.data, json.size, seq);
        }
        if (rc < 0) {
            //  Out of memory part-way: what was queued stays queued (the
            //  publisher retries the batch and those are duplicates)
            mmp_buf_free (&json);
            free (ids);
            free (duplicate);
            mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                            "out of memory; retry the batch", msg->req);
            return;
        }
        duplicate [i] = rc == 1;
        if (!duplicate [i])
            accepted++;
    }
    mmp_buf_free (&json);

    mmp_buf_t *buf = &self->reply;
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"message_ids\":[");
    for (size_t i = 0; i < msg->message_count; i++) {
        mmp_buf_puts (buf, i ? ",\"" : "\"");
        mmp_buf_append (buf, ids [i], 36);
        mmp_buf_puts (buf, "\"");
    }
    mmp_buf_puts (buf, "],\"duplicates\":[");
    bool first = true;
    for (size_t i = 0; i < msg->message_count; i++)
        if (duplicate [i]) {
            mmp_buf_puts (buf, first ? "\"" : ",\"");
            mmp_buf_append (buf, ids [i], 36);
            mmp_buf_puts (buf, "\"");
            first = false;
        }
    mmp_buf_printf (buf, "],\"durability\":\"%s\"", self->durability);
    if (msg->req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string (buf, msg->req);
    }
    mmp_buf_puts (buf, "}");
    if (msg->message_count - accepted)
        mdl_debug ("PUBLISH: %zu accepted, %zu duplicates", accepted, msg->message_count - accepted);
    free (ids);
    free (duplicate);
    if (buf->failed) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory building PUBACK; retry the batch", msg->req);
        return;
    }
    if (s_reply_when_durable (self, self->frontend, routing_id, MMP_PUBACK, buf, wait_for) != 0)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL,
                        "out of memory holding the PUBACK; retry the batch", msg->req);
}

static void
s_add_req (cJSON *reply, const char *req)
{
    if (req)
        cJSON_AddStringToObject (reply, "req", req);
}

static void
s_handle_stats (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    cJSON *reply = cJSON_CreateObject ();
    if (!reply) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    cJSON_AddNumberToObject (reply, "published", (double) stats.published);
    cJSON_AddNumberToObject (reply, "duplicates", (double) (stats.duplicates + self->duplicates));
    cJSON_AddNumberToObject (reply, "delivered", (double) stats.delivered);
    cJSON_AddNumberToObject (reply, "redelivered", (double) stats.redelivered);
    cJSON_AddNumberToObject (reply, "acked", (double) stats.acked);
    cJSON_AddNumberToObject (reply, "nacked", (double) stats.nacked);
    cJSON_AddNumberToObject (reply, "expired", (double) stats.expired);
    cJSON_AddNumberToObject (reply, "dead_lettered", (double) stats.dead_lettered);
    cJSON_AddNumberToObject (reply, "replayed", (double) stats.replayed);
    cJSON_AddNumberToObject (reply, "workers_lost", (double) stats.workers_lost);
    cJSON_AddNumberToObject (reply, "workers_left", (double) stats.workers_left);
    cJSON_AddNumberToObject (reply, "ready", (double) stats.ready);
    cJSON_AddNumberToObject (reply, "delayed", (double) stats.delayed);
    cJSON_AddNumberToObject (reply, "in_flight", (double) stats.in_flight);
    cJSON_AddNumberToObject (reply, "dead_letters", (double) stats.dead);
    cJSON_AddNumberToObject (reply, "workers", (double) stats.workers);
    cJSON_AddNumberToObject (reply, "oldest_unacked_ms", (double) stats.oldest_unacked_ms);
    cJSON_AddNumberToObject (reply, "uptime_ms", (double) (mdl_clock_now (&self->clock) - self->started));
    cJSON_AddNumberToObject (reply, "epoch", (double) brk_queue_epoch (self->queue));
    cJSON_AddNumberToObject (reply, "held", (double) stats.held);
    cJSON_AddStringToObject (reply, "durability", self->durability);
    cJSON_AddNumberToObject (reply, "replies_waiting", (double) self->reply_count);
    brk_store_stats_t journal;
    brk_store_stats (self->store, &journal);
    if (journal.persistent) {
        cJSON *object = cJSON_AddObjectToObject (reply, "journal");
        if (object) {
            cJSON_AddStringToObject (object, "dir", self->data_dir);
            cJSON_AddNumberToObject (object, "disk_bytes", (double) journal.disk_bytes);
            cJSON_AddNumberToObject (object, "files", (double) journal.files);
            cJSON_AddNumberToObject (object, "live_messages", (double) journal.live_messages);
            cJSON_AddNumberToObject (object, "fsyncs", (double) journal.fsyncs);
            cJSON_AddNumberToObject (object, "compactions", (double) journal.compactions);
            cJSON_AddStringToObject (object, "status", journal.error ? strerror (journal.error) : "ok");
        }
    }
    cJSON_AddStringToObject (reply, "version", MANDRILL_VERSION);
    s_add_req (reply, msg->req);
    mmp_send_json (self->frontend, routing_id, MMP_STATS, reply);
    cJSON_Delete (reply);
}

typedef struct {
    mmp_buf_t *buf;             //  Where the list goes
    size_t count;               //  Written so far
} s_dead_ctx_t;

static void
s_dead_letter_json (void *arg, const brk_msg_t *msg)
{
    s_dead_ctx_t *ctx = (s_dead_ctx_t *) arg;
    mmp_buf_t *buf = ctx->buf;
    size_t len;
    const char *json = brk_msg_json (msg, &len);
    mmp_buf_puts (buf, ctx->count++ ? ",{\"message\":" : "{\"message\":");
    mmp_buf_append (buf, json, len);
    mmp_buf_puts (buf, ",\"reason\":");
    mmp_buf_json_string (buf, brk_msg_dead_reason (msg) ? brk_msg_dead_reason (msg) : "");
    mmp_buf_printf (buf, ",\"attempts\":%" PRId64 ",\"dead_at_ms\":%" PRId64 ",\"history\":",
                    brk_msg_attempts (msg), brk_msg_dead_at (msg));
    s_history_json (buf, msg);
    mmp_buf_puts (buf, "}");
}

//  The attempt history of a message as a JSON array: the live one, or the
//  text recovered from the journal.
void
s_history_json (mmp_buf_t *buf, const brk_msg_t *msg)
{
    const brk_attempt_t *history;
    size_t entries = brk_msg_history (msg, &history);
    if (entries == 0 && brk_msg_history_json (msg)) {
        mmp_buf_puts (buf, brk_msg_history_json (msg));
        return;
    }
    mmp_buf_puts (buf, "[");
    for (size_t i = 0; i < entries; i++) {
        mmp_buf_printf (buf, "%s{\"attempt\":%" PRId64 ",\"delivery_id\":", i ? "," : "", history [i].attempt);
        mmp_buf_u64 (buf, history [i].delivery_id);
        mmp_buf_puts (buf, ",\"worker\":");
        mmp_buf_json_string (buf, history [i].worker);
        mmp_buf_printf (buf, ",\"outcome\":\"%s\"", history [i].outcome);
        if (history [i].reason [0]) {
            mmp_buf_puts (buf, ",\"reason\":");
            mmp_buf_json_string (buf, history [i].reason);
        }
        mmp_buf_printf (buf, ",\"at_ms\":%" PRId64 "}", history [i].at_ms);
    }
    mmp_buf_puts (buf, "]");
}

static void
s_handle_dead_letters (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    //  A reply must fit one frame the client accepts: stop well before 1 MiB
    size_t limit = msg->limit > 0 ? (size_t) msg->limit : 1000;
    if (limit > 1000)
        limit = 1000;
    mmp_buf_t *buf = &self->reply;
    mmp_buf_clear (buf);
    mmp_buf_puts (buf, "{\"dead_letters\":[");
    s_dead_ctx_t ctx = { buf, 0 };
    brk_queue_dead_letters (self->queue, limit, s_dead_letter_json, &ctx);
    mmp_buf_printf (buf, "],\"total\":%" PRIu64, stats.dead);
    if (msg->req) {
        mmp_buf_puts (buf, ",\"req\":");
        mmp_buf_json_string (buf, msg->req);
    }
    mmp_buf_puts (buf, "}");
    if (buf->failed || buf->size > MMP_MAX_BODY)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_TOO_LARGE,
                        "dead letters do not fit one reply; ask with a smaller limit", msg->req);
    else
        mmp_send (self->frontend, routing_id, MMP_DEADLETTERS, buf->data, buf->size);
}

static void
s_handle_replay (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    cJSON *reply = cJSON_CreateObject ();
    cJSON *replayed = cJSON_AddArrayToObject (reply, "replayed");
    cJSON *unknown = cJSON_AddArrayToObject (reply, "unknown");
    if (!reply || !replayed || !unknown) {
        cJSON_Delete (reply);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
        return;
    }
    for (size_t i = 0; i < msg->message_id_count; i++) {
        char id [37];
        for (size_t c = 0; c < 36; c++)
            id [c] = (char) tolower ((unsigned char) msg->message_ids [i][c]);
        id [36] = 0;
        bool done = brk_queue_replay (self->queue, id) == 0;
        cJSON_AddItemToArray (done ? replayed : unknown, cJSON_CreateString (id));
        if (done)
            mdl_info ("replayed dead letter %s", id);
    }
    s_add_req (reply, msg->req);
    mmp_send_json (self->frontend, routing_id, MMP_REPLAYED, reply);
    cJSON_Delete (reply);
}

void
brk_frontend_handle (s_server_t *self)
{
    for (int i = 0; i < BRK_DRAIN_BATCH; i++) {
        zframe_t *routing_id = NULL;
        mmp_msg_t msg;
        mmp_msg_init (&msg);
        mmp_error_t err;
        mmp_meta_t meta;
        int rc = mmp_recv_meta (self->frontend, false, &routing_id, MMP_TO_BROKER, &msg, &err, &meta);
        if (rc == -1) {
            zframe_destroy (&routing_id);
            break;
        }
        if (rc == -2) {
            if (routing_id)
                s_reject (self, self->frontend, "frontend", routing_id, err.code, err.reason, NULL);
            zframe_destroy (&routing_id);
            continue;
        }
        if (self->config.verbose)
            mdl_debug ("frontend: %s", mmp_command_name (msg.command));
        if (self->auth && brk_auth_check (self->auth, meta.user_id, meta.key, msg.command) != 0) {
            mmp_send_error (self->frontend, routing_id, MMP_ERR_FORBIDDEN,
                            "your role may not use this command", msg.req);
            mmp_msg_reset (&msg);
            zframe_destroy (&routing_id);
            continue;
        }
        switch (msg.command) {
            case MMP_PUBLISH:
                s_handle_publish (self, routing_id, &msg);
                break;
            case MMP_STATS:
                s_handle_stats (self, routing_id, &msg);
                break;
            case MMP_DEADLETTERS:
                s_handle_dead_letters (self, routing_id, &msg);
                break;
            case MMP_REPLAY:
                s_handle_replay (self, routing_id, &msg);
                break;
            default:
                s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNEXPECTED,
                          "command not accepted on the frontend socket", msg.req);
                break;
        }
        mmp_msg_reset (&msg);
        zframe_destroy (&routing_id);
    }
}
