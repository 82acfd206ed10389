/*  mmp: the Mandrill Message Protocol, version 1 (MMP/1) codec.

    The protocol is specified in proto/PROTOCOL.md; this codec is its one
    implementation, used by the broker, the worker and the tools.

    Every message is the frames [ "MMP1" ][ COMMAND ][ JSON object ]; a
    ROUTER sees the peer's routing id as an extra first frame. The decoder
    is strict: it checks the signature, the command, the JSON, every field's
    presence, type and limit, and refuses fields the command does not define.
    It never asserts on input; a bad message yields an mmp_error_t with a
    stable code (see MMP_ERR_*) and a human reason.

    Ownership: mmp_msg_t owns its parsed body and the arrays it fills;
    strings in it point into the body and live until mmp_msg_reset ().
*/
#ifndef MMP_H_INCLUDED
#define MMP_H_INCLUDED

#include <cjson/cJSON.h>
#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MMP_SIGNATURE       "MMP1"

//  Limits. A message over any of them is refused with the code in brackets.
#define MMP_MAX_BODY        (1024 * 1024)   //  JSON frame bytes [too_large]
#define MMP_MAX_DEPTH       16              //  JSON nesting depth [too_deep]
#define MMP_MAX_MESSAGES    1000            //  Requests per PUBLISH [too_many]
#define MMP_MAX_DELIVERIES  1000            //  Deliveries per DELIVER [too_many]
#define MMP_MAX_IDS         10000           //  Ids per EXTEND/ACK/NACK/PROGRESS/REPLAY and their replies [too_many]
#define MMP_MAX_INSTANCE    63              //  instance_name, RFC 1123 label [bad_instance_name]
#define MMP_MAX_HOSTNAME    253             //  hostname, DNS name [bad_hostname]
#define MMP_MAX_ATTRIBUTES  4096            //  attributes, printed JSON bytes [too_large]
#define MMP_MAX_TEXT        256             //  reason, name, subscription, req, code, durability [too_long]
#define MMP_MAX_CREDIT      1000000         //  HELLO/CREDIT credit [bad_value]
#define MMP_MAX_DELAY_MS    86400000        //  NACK delay_ms, 24 h [bad_value]
#define MMP_MAX_EXTENSION_MS 3600000        //  EXTEND extension_ms, 1 h [bad_value]
#define MMP_MAX_DELIVERY_ID 9007199254740991ULL  //  2^53-1, exact in JSON doubles [bad_value]

typedef enum {
    MMP_PUBLISH,        //  client -> broker   {messages, req?}
    MMP_PUBACK,         //  broker -> client   {message_ids, duplicates, durability, req?}
    MMP_ERROR,          //  broker -> any      {code, reason, req?}
    MMP_STATS,          //  both ways          request {req?}; reply {stats object, req?}
    MMP_DEADLETTERS,    //  both ways          request {req?, limit?}; reply {dead_letters, req?}
    MMP_REPLAY,         //  client -> broker   {message_ids, req?}
    MMP_REPLAYED,       //  broker -> client   {replayed, unknown, req?}
    MMP_HELLO,          //  worker -> broker   {credit, subscription?, name?}
    MMP_WELCOME,        //  broker -> worker   {ack_deadline_ms, heartbeat_ms, epoch}
    MMP_DELIVER,        //  broker -> worker   {deliveries}
    MMP_CREDIT,         //  worker -> broker   {credit}
    MMP_EXTEND,         //  worker -> broker   {delivery_ids, extension_ms?}
    MMP_EXTENDED,       //  broker -> worker   {ok, stale, unknown, deadline_ms}
    MMP_ACK,            //  worker -> broker   {delivery_ids}
    MMP_ACKED,          //  broker -> worker   {ok, stale, unknown}
    MMP_NACK,           //  worker -> broker   {delivery_ids, delay_ms?, reason?}
    MMP_NACKED,         //  broker -> worker   {ok, stale, unknown}
    MMP_PROGRESS,       //  worker -> broker   {delivery_ids, steps}
    MMP_PROGRESSED,     //  broker -> worker   {ok, stale, unknown}
    MMP_HEARTBEAT,      //  both ways          {}
    MMP_BYE,            //  worker -> broker   {}
    MMP_COMMAND_COUNT
} mmp_command_t;

//  Which way a message travels: the same name (STATS, DEADLETTERS,
//  HEARTBEAT) has a different body each way.
typedef enum {
    MMP_TO_BROKER,
    MMP_FROM_BROKER
} mmp_direction_t;

//  Work steps a worker reports done (PROGRESS) and a delivery carries.
#define MMP_STEP_SAVE       1u
#define MMP_STEP_RESTART    2u

//  Error codes, as sent in ERROR {code} and returned by the decoder.
#define MMP_ERR_BAD_FRAMES        "bad_frames"         //  not 3 frames (4 on a ROUTER)
#define MMP_ERR_BAD_SIGNATURE     "bad_signature"      //  first frame is not an MMP signature
#define MMP_ERR_BAD_VERSION       "bad_version"        //  "MMP" with a version this codec does not speak
#define MMP_ERR_UNKNOWN_COMMAND   "unknown_command"    //  no such command (in this direction)
#define MMP_ERR_BAD_JSON          "bad_json"           //  body is not valid JSON
#define MMP_ERR_NOT_OBJECT        "not_object"         //  body (or an array item that must be) is not an object
#define MMP_ERR_MISSING_FIELD     "missing_field"      //  a required field is absent
#define MMP_ERR_BAD_TYPE          "bad_type"           //  a field has the wrong JSON type
#define MMP_ERR_UNKNOWN_FIELD     "unknown_field"      //  a field the command does not define
#define MMP_ERR_BAD_VALUE         "bad_value"          //  a number out of range, an empty list, a bad enum value
#define MMP_ERR_TOO_LONG          "too_long"           //  a string over its limit
#define MMP_ERR_TOO_MANY          "too_many"           //  an array over its limit
#define MMP_ERR_TOO_LARGE         "too_large"          //  body or attributes over their byte limit
#define MMP_ERR_TOO_DEEP          "too_deep"           //  nesting over MMP_MAX_DEPTH
#define MMP_ERR_BAD_MESSAGE_ID    "bad_message_id"     //  message_id is not a canonical uuid
#define MMP_ERR_BAD_INSTANCE_NAME "bad_instance_name"  //  not an RFC 1123 label
#define MMP_ERR_BAD_HOSTNAME      "bad_hostname"       //  not a valid DNS name
//  Codes only the broker sends (not produced by the decoder):
#define MMP_ERR_UNEXPECTED        "unexpected_command" //  valid command, wrong socket or state (e.g. ACK before HELLO)
#define MMP_ERR_UNAVAILABLE       "unavailable"        //  broker cannot take it now (journal write failed, draining)
#define MMP_ERR_INTERNAL          "internal"           //  out of memory or similar; the broker carries on
#define MMP_ERR_FORBIDDEN         "forbidden"          //  the sender's role may not use this command (CURVE roles)

typedef struct {
    const char *code;           //  One of MMP_ERR_*, static
    char reason [200];          //  Human text, names the field
} mmp_error_t;

//  A restart request, as published and as delivered.
typedef struct {
    const char *message_id;     //  Canonical uuid, or NULL when a publisher left it out
    const char *instance_name;  //  RFC 1123 label
    const char *hostname;       //  DNS name, or NULL when left out
    cJSON *attributes;          //  An object, or NULL; points into the body
} mmp_request_t;

//  One lease, as DELIVER carries it.
typedef struct {
    uint64_t delivery_id;       //  Unique, never reused, 1 .. 2^53-1
    int64_t attempt;            //  1 for the first delivery
    int64_t deadline_ms;        //  Lease length from the moment of sending
    unsigned steps;             //  MMP_STEP_* already done by earlier attempts
    mmp_request_t message;      //  The request; message_id and hostname always set
} mmp_delivery_t;

//  A decoded message. Which fields are set depends on the command (see the
//  table in PROTOCOL.md); unset ones are NULL / 0 / -1.
typedef struct {
    mmp_command_t command;      //  What it is
    mmp_direction_t direction;  //  Which way it was decoded
    cJSON *body;                //  Owned: the parsed JSON object
    const char *req;            //  Client correlation string, or NULL

    mmp_request_t *messages;    //  PUBLISH: the requests
    size_t message_count;
    mmp_delivery_t *deliveries; //  DELIVER: the leases
    size_t delivery_count;

    uint64_t *ids;              //  EXTEND/ACK/NACK/PROGRESS: delivery_ids; EXTENDED/ACKED/NACKED/PROGRESSED: ok
    size_t id_count;
    uint64_t *stale;            //  Replies: ids that were leased once but are no longer
    size_t stale_count;
    uint64_t *unknown;          //  Replies: ids never issued by this broker
    size_t unknown_count;

    const char **message_ids;   //  PUBACK: accepted ids; REPLAY: ids to replay; REPLAYED: replayed
    size_t message_id_count;
    const char **other_ids;     //  PUBACK: duplicates; REPLAYED: unknown
    size_t other_id_count;

    int64_t credit;             //  HELLO, CREDIT
    int64_t extension_ms;       //  EXTEND (-1 = broker's ack deadline)
    int64_t delay_ms;           //  NACK (-1 = broker's backoff)
    int64_t deadline_ms;        //  EXTENDED: new lease length
    int64_t ack_deadline_ms;    //  WELCOME
    int64_t heartbeat_ms;       //  WELCOME
    int64_t epoch;              //  WELCOME
    int64_t limit;              //  DEADLETTERS request (-1 = all)
    unsigned steps;             //  PROGRESS
    const char *name;           //  HELLO: worker name
    const char *subscription;   //  HELLO
    const char *reason;         //  NACK, ERROR
    const char *code;           //  ERROR
    const char *durability;     //  PUBACK: "none", "batch" or "sync"
} mmp_msg_t;

//  Command name as on the wire, e.g. "PUBLISH"; NULL for an invalid value.
const char *mmp_command_name (mmp_command_t command);

//  Initialise an empty message.
void mmp_msg_init (mmp_msg_t *msg);

//  Free what a decoded message owns and make it empty again. Safe twice.
void mmp_msg_reset (mmp_msg_t *msg);

//  Decode the three MMP frames (signature, command, body). On success fills
//  *msg (which must be empty) and returns 0. On bad input returns -2, fills
//  *err, leaves *msg empty. Never asserts on the frames' contents.
int mmp_decode (const void *signature, size_t signature_size,
                const void *command, size_t command_size,
                const void *body, size_t body_size,
                mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err);

//  Receive one message from sock and decode it. With routing_id non-NULL
//  the socket is a ROUTER: the first frame is the peer's id, returned in
//  *routing_id (caller owns it) even when the rest is malformed, so the
//  caller can answer with ERROR. With wait false, returns -1 at once when
//  nothing is queued.
//  Returns 0 decoded, -1 nothing / interrupted, -2 malformed (*err set).
int mmp_recv (zsock_t *sock, bool wait, zframe_t **routing_id,
              mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err);

//  Who sent a message, as the ZAP handler (brk_auth) authenticated its
//  connection; both "" on a socket without ZAP (no CURVE).
typedef struct {
    char user_id [MMP_MAX_TEXT + 1];    //  ZAP User-Id, "ROLE:NAME"
    char key [41];                      //  Property "Curve-Key": the Z85 public key
} mmp_meta_t;

//  mmp_recv, also filling *meta (when not NULL) from the message's
//  connection metadata, whatever the return.
int mmp_recv_meta (zsock_t *sock, bool wait, zframe_t **routing_id,
                   mmp_direction_t direction, mmp_msg_t *msg, mmp_error_t *err, mmp_meta_t *meta);

//  Send [routing_id][MMP1][command][json] (routing_id NULL on a DEALER).
//  routing_id is not consumed. Returns 0, or -1 if the send failed
//  (peer unreachable on a mandatory ROUTER, interrupted): nothing leaks.
int mmp_send (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
              const char *json, size_t json_size);

//  Print body (not consumed) and send it as above. Returns 0 or -1.
int mmp_send_json (zsock_t *sock, zframe_t *routing_id, mmp_command_t command,
                   const cJSON *body);

//  Send ERROR {code, reason, req?}. Returns 0 or -1.
int mmp_send_error (zsock_t *sock, zframe_t *routing_id, const char *code,
                    const char *reason, const char *req);

//  Validators shared with the tools.
bool mmp_valid_instance_name (const char *text, size_t len);   //  RFC 1123 label, 1..63
bool mmp_valid_hostname (const char *text, size_t len);        //  dot-separated labels, 1..253

//  A reusable growing text buffer for building JSON bodies by hand on hot
//  paths (DELIVER, ACKED) where a cJSON tree per message would cost too much.
typedef struct {
    char *data;                 //  Null-terminated text
    size_t size;                //  Bytes used, excluding the null
    size_t capacity;            //  Bytes allocated
    bool failed;                //  An allocation failed; text is incomplete
} mmp_buf_t;

void mmp_buf_init (mmp_buf_t *buf);
void mmp_buf_free (mmp_buf_t *buf);
void mmp_buf_clear (mmp_buf_t *buf);
void mmp_buf_append (mmp_buf_t *buf, const char *text, size_t len);
void mmp_buf_puts (mmp_buf_t *buf, const char *text);
void mmp_buf_printf (mmp_buf_t *buf, const char *format, ...) __attribute__ ((format (printf, 2, 3)));
void mmp_buf_u64 (mmp_buf_t *buf, uint64_t value);
//  Append text as a JSON string literal, quotes and escapes included.
//  Invalid UTF-8 becomes U+FFFD.
void mmp_buf_json_string (mmp_buf_t *buf, const char *text);
//  The same for text already known to be valid UTF-8 (a decoded string),
//  without the check, giving the text cJSON prints for it.
void mmp_buf_json_string_valid (mmp_buf_t *buf, const char *text);
//  Append [a,b,c] of ids.
void mmp_buf_id_array (mmp_buf_t *buf, const uint64_t *ids, size_t count);

#endif
