/*  mmp: the Mandrill Message Protocol, version 1 (MMP/1) codec.

    The protocol is specified in proto/PROTOCOL.md; this codec is its one
    implementation, used by the broker, the worker and the tools.

    Every message is the frames [ "MMP1" ][ COMMAND ][ JSON object ]; a
    ROUTER sees the peer's routing id as an extra first frame. The decoder
    is strict: it checks the signature, the command, the JSON, every field's
    presence, type and limit, and refuses fields the command does not define.
    It never asserts on input; a bad message yields an mmp_error_t with a
    stable code (see MMP_ERR_*) and a human reason.

    Ownership: mmp_msg_t owns its copy of the body and the arrays it fills;
    strings and attribute spans in it point into that copy and live until
    mmp_msg_reset (). No cJSON tree is built on any hot path: only the
    frontend replies that tools read (PUBACK, STATS, DEADLETTERS,
    REPLAYED) also get one in body.

    Files: mmp_decode.c (commands and their bodies), mmp_scan.c (the RFC
    8259 / UTF-8 pass), mmp_walk.c (reading values in place), mmp_encode.c
    (every body sent), mmp_json.c / mmp_json.h (the JSON writer and
    escaper), mmp_sock.c (recv/send).
*/
#ifndef MMP_H_INCLUDED
#define MMP_H_INCLUDED

#include <cjson/cJSON.h>
#include <czmq.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mmp_json.h"

#define MMP_SIGNATURE       "MMP1"

//  Limits. A message over any of them is refused with the code in brackets.
#define MMP_MAX_BODY        (1024 * 1024)   //  JSON frame bytes [too_large]
#define MMP_MAX_DEPTH       16              //  JSON nesting depth [too_deep]
//  A request's attributes, the object itself counted as 1: a DELIVER
//  carries them at depth 5 (body, deliveries, delivery, message), one
//  deeper than a PUBLISH, and must stay within MMP_MAX_DEPTH [too_deep]
#define MMP_MAX_ATTRIBUTES_DEPTH (MMP_MAX_DEPTH - 4)
#define MMP_MAX_MESSAGES    1000            //  Requests per PUBLISH [too_many]
#define MMP_MAX_DELIVERIES  1000            //  Deliveries per DELIVER [too_many]
#define MMP_MAX_IDS         10000           //  Ids per EXTEND/ACK/NACK/PROGRESS/REPLAY and their replies [too_many]
#define MMP_MAX_INSTANCE    63              //  instance_name, RFC 1123 label [bad_instance_name]
#define MMP_MAX_HOSTNAME    253             //  hostname, DNS name [bad_hostname]
#define MMP_MAX_ATTRIBUTES  4096            //  attributes, JSON bytes as sent [too_large]
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
    MMP_HELLO,          //  worker -> broker   {credit, subscription?, name?, features?}
    MMP_WELCOME,        //  broker -> worker   {ack_deadline_ms, heartbeat_ms, epoch}
    MMP_DELIVER,        //  broker -> worker   {deliveries}
    MMP_CREDIT,         //  worker -> broker   {credit}
    MMP_EXTEND,         //  worker -> broker   {delivery_ids, extension_ms?}
    MMP_EXTENDED,       //  broker -> worker   {ok, stale, unknown, deadline_ms}
    MMP_ACK,            //  worker -> broker   {delivery_ids}
    MMP_ACKED,          //  broker -> worker   {ok, stale, unknown}
    MMP_NACK,           //  worker -> broker   {delivery_ids, delay_ms?, reason?, requeue?}
    MMP_NACKED,         //  broker -> worker   {ok, stale, unknown}
    MMP_PROGRESS,       //  worker -> broker   {delivery_ids, steps}
    MMP_PROGRESSED,     //  broker -> worker   {ok, stale, unknown}
    MMP_HEARTBEAT,      //  both ways          {}
    MMP_BYE,            //  worker -> broker   {}
    //  Restart policy (docs/POLICY.md): requests to the broker, and the
    //  replies of the same names (open-ended objects, like STATS)
    MMP_PAUSE,          //  both ways          request {group | all:true, reason?, req?}
    MMP_RESUME,         //  both ways          request {group | all:true, req?}
    MMP_GROUPS,         //  both ways          request {req?}; reply {groups, killed, req?}
    MMP_INFLIGHT,       //  both ways          request {limit?, req?}; reply {leases, total, req?}
    MMP_WORKERS,        //  both ways          request {req?}; reply {workers, req?}
    MMP_RELOAD,         //  both ways          request {req?}; reply {ok, file, req?}
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
//  PROGRESS only: the restart command is about to run. The broker records
//  it durably before PROGRESSED; a lease that then ends before "restart"
//  puts the request in doubt. Never sent in DELIVER.
#define MMP_STEP_STARTED    4u

//  Features a worker declares in HELLO {features} (names on the wire in
//  brackets); names the codec does not know are ignored.
//  The broker sends a newer optional field only to a worker that declared it.
#define MMP_FEATURE_IN_DOUBT  1u    //  ["in_doubt"] DELIVER may mark a delivery in_doubt
#define MMP_FEATURE_VERIFY    2u    //  ["verify"] it runs a verify command for such a delivery
#define MMP_FEATURE_PUBLISHER 4u    //  ["publisher"] DELIVER names each message's publisher
#define MMP_MAX_FEATURES      32    //  Items in HELLO features [too_many]

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
    char req [MMP_MAX_TEXT + 1];//  The body's top-level "req" when it could be read, else ""
} mmp_error_t;

//  A restart request, as published and as delivered.
typedef struct {
    const char *message_id;     //  Canonical uuid, or NULL when a publisher left it out
    const char *instance_name;  //  RFC 1123 label
    const char *hostname;       //  DNS name, or NULL when left out
    const char *attributes;     //  The attributes object exactly as sent (not null-terminated), or NULL
    size_t attributes_size;     //  Bytes of attributes, at most MMP_MAX_ATTRIBUTES
} mmp_request_t;

//  One lease, as DELIVER carries it.
typedef struct {
    uint64_t delivery_id;       //  Unique, never reused, 1 .. 2^53-1
    int64_t attempt;            //  1 for the first delivery
    int64_t deadline_ms;        //  Lease length from the moment of sending
    unsigned steps;             //  MMP_STEP_* already done by earlier attempts
    bool in_doubt;              //  "in_doubt": true: an earlier attempt's restart may have run
    const char *publisher;      //  Authenticated name of the publisher's key, or NULL
    mmp_request_t message;      //  The request; message_id and hostname always set
} mmp_delivery_t;

//  A decoded message. Which fields are set depends on the command (see the
//  table in PROTOCOL.md); unset ones are NULL / 0 / -1.
typedef struct {
    mmp_command_t command;      //  What it is
    mmp_direction_t direction;  //  Which way it was decoded
    char *raw;                  //  Owned: the decoder's copy of the body; strings point into it
    size_t raw_size;            //  Bytes of the body
    cJSON *body;                //  Owned: a tree of the body, only for PUBACK, STATS, DEADLETTERS, REPLAYED
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
    unsigned features;          //  HELLO: MMP_FEATURE_* declared (unknown names ignored)
    bool requeue;               //  NACK: the lease was given back unused (false if left out)
    const char *name;           //  HELLO: worker name
    const char *subscription;   //  HELLO
    const char *reason;         //  NACK, ERROR
    const char *code;           //  ERROR
    const char *durability;     //  PUBACK: "none", "batch" or "sync"
    const char *group;          //  PAUSE, RESUME: the group, or NULL with all
    bool all;                   //  PAUSE, RESUME: every group (the kill switch)
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

//  --------------------------------------------------------------------------
//  Encoders (mmp_encode.c): every body Mandrill sends. Each clears buf,
//  writes one JSON object and returns 0, or -1 when an allocation failed
//  (buf must then not be sent).

//  Strings from outside are escaped and cut to the peer's limits; a req
//  of NULL is left out. Request objects and attributes are bytes a decoder
//  already validated, carried as they are.

//  ERROR {code, reason, req?}; each string cut to MMP_MAX_TEXT bytes.
int mmp_encode_error (mmp_buf_t *buf, const char *code, const char *reason, const char *req);

//  A request object {message_id?, instance_name, hostname?, attributes?}:
//  message_id or hostname NULL is left out; attributes (NULL for none)
//  are attributes_size bytes of a JSON object, copied as they are.
int mmp_encode_request (mmp_buf_t *buf, const char *message_id, const char *instance_name,
                        const char *hostname, const char *attributes, size_t attributes_size);
//  PUBLISH {messages, req?} of count request objects (sizes NULL: strlen).
int mmp_encode_publish (mmp_buf_t *buf, const char *req, const char *const *requests,
                        const size_t *sizes, size_t count);
//  The same, request by request: begin, add each (size bytes of a request
//  object), end (returns 0 or -1).
void mmp_encode_publish_begin (mmp_buf_t *buf);
void mmp_encode_publish_add (mmp_buf_t *buf, const char *request, size_t size);
int mmp_encode_publish_end (mmp_buf_t *buf, const char *req);
//  PUBACK {message_ids, duplicates, durability, req?}: id i is the 36
//  bytes at ids + i * stride; duplicates [i] (or NULL: none) marks those
//  also listed in duplicates.
int mmp_encode_puback (mmp_buf_t *buf, const char *ids, size_t stride, const bool *duplicates,
                       size_t count, const char *durability, const char *req);
//  PUBACK as above plus, when coalesced is not NULL and names at least
//  one id, "coalesced_with": {ID: LEADER_ID, ...}: coalesced [i] (NULL
//  for none) is the id of the waiting request that id i joined.
int mmp_encode_puback_coalesced (mmp_buf_t *buf, const char *ids, size_t stride,
                                 const bool *duplicates, const char *const *coalesced,
                                 size_t count, const char *durability, const char *req);
//  PAUSE {group | all:true, reason?, req?} or RESUME {group | all:true,
//  req?} (command MMP_PAUSE or MMP_RESUME; reason is left out for RESUME
//  and when NULL; group NULL means all).
int mmp_encode_group_command (mmp_buf_t *buf, mmp_command_t command, const char *group,
                              const char *reason, const char *req);
//  STATS, DEADLETTERS, GROUPS, INFLIGHT, WORKERS or RELOAD request
//  {req?, limit?} (limit <= 0: left out; only DEADLETTERS and INFLIGHT
//  define it).
int mmp_encode_request_only (mmp_buf_t *buf, const char *req, int64_t limit);
//  REPLAY {message_ids, req?}.
int mmp_encode_replay (mmp_buf_t *buf, const char *const *ids, size_t count, const char *req);
//  REPLAYED {replayed, unknown, req?}.
int mmp_encode_replayed (mmp_buf_t *buf, const char *const *replayed, size_t replayed_count,
                         const char *const *unknown, size_t unknown_count, const char *req);

//  Open-ended objects (the STATS and DEADLETTERS replies), member by
//  member: mmp_encode_open, then members, nested objects and arrays
//  (closed with close_object / close_array), then mmp_encode_close, which
//  adds req and the final brace and returns 0 or -1. Commas are placed
//  by the writer. Names are literals of the protocol.
void mmp_encode_open (mmp_buf_t *buf);
void mmp_encode_member_int (mmp_buf_t *buf, const char *name, int64_t value);
void mmp_encode_member_string (mmp_buf_t *buf, const char *name, const char *value);
void mmp_encode_member_bool (mmp_buf_t *buf, const char *name, bool value);
void mmp_encode_member_object (mmp_buf_t *buf, const char *name);
void mmp_encode_member_array (mmp_buf_t *buf, const char *name);
//  A member whose value is JSON text already validated (a stored request).
void mmp_encode_member_raw (mmp_buf_t *buf, const char *name, const char *json, size_t size);
//  An object as the next item of the array being written.
void mmp_encode_item_object (mmp_buf_t *buf);
void mmp_encode_close_object (mmp_buf_t *buf);
void mmp_encode_close_array (mmp_buf_t *buf);
int mmp_encode_close (mmp_buf_t *buf, const char *req);
//  One attempt of a dead letter's history, as the next item of an array:
//  {attempt, delivery_id, worker, publisher?, outcome, reason?, at_ms}
//  (publisher NULL, reason NULL or "": left out).
void mmp_encode_history_entry (mmp_buf_t *buf, int64_t attempt, uint64_t delivery_id,
                               const char *worker, const char *publisher, const char *outcome,
                               const char *reason, int64_t at_ms);

//  An event frame's body: {event, at_ms, message_id?, attempt?,
//  delivery_id?, worker?, publisher?, reason?} in that order. Each optional
//  member is left out when NULL or 0; attempt only appears with a message_id.
//  Strings are escaped (ids and names the broker made print as they are).
int mmp_encode_event (mmp_buf_t *buf, const char *event, int64_t at_ms, const char *message_id,
                      int64_t attempt, uint64_t delivery_id, const char *worker,
                      const char *publisher, const char *reason);

//  A group event's body: {event, at_ms, group, reason?} (group_paused,
//  group_resumed); reason left out when NULL.
int mmp_encode_group_event (mmp_buf_t *buf, const char *event, int64_t at_ms, const char *group,
                            const char *reason);

//  HELLO {credit, name?, subscription?, features?} (features, MMP_FEATURE_*
//  bits, left out when 0), WELCOME, CREDIT, and the empty body {} of
//  HEARTBEAT and BYE.
int mmp_encode_hello (mmp_buf_t *buf, int64_t credit, const char *name, const char *subscription,
                      unsigned features);
int mmp_encode_welcome (mmp_buf_t *buf, int64_t ack_deadline_ms, int64_t heartbeat_ms, int64_t epoch);
int mmp_encode_credit (mmp_buf_t *buf, int64_t credit);
int mmp_encode_empty (mmp_buf_t *buf);
//  ACK, EXTEND (extension_ms < 0: left out), NACK (delay_ms < 0 and
//  reason NULL: left out), PROGRESS.
int mmp_encode_ack (mmp_buf_t *buf, const uint64_t *ids, size_t count);
int mmp_encode_extend (mmp_buf_t *buf, const uint64_t *ids, size_t count, int64_t extension_ms);
int mmp_encode_nack (mmp_buf_t *buf, const uint64_t *ids, size_t count, int64_t delay_ms,
                     const char *reason);
//  NACK with "requeue": true: the leases are given back unused (a worker
//  shutting down); the broker counts no attempt and waits no backoff.
int mmp_encode_nack_requeue (mmp_buf_t *buf, const uint64_t *ids, size_t count,
                             const char *reason);
int mmp_encode_progress (mmp_buf_t *buf, const uint64_t *ids, size_t count, unsigned steps);
//  EXTENDED (deadline_ms >= 0), ACKED, NACKED, PROGRESSED (deadline_ms < 0).
int mmp_encode_id_reply (mmp_buf_t *buf, const uint64_t *ok, size_t ok_count,
                         const uint64_t *stale, size_t stale_count,
                         const uint64_t *unknown, size_t unknown_count, int64_t deadline_ms);

//  DELIVER, built lease by lease with a byte budget. count is the number
//  of leases already in buf (0 starts a new frame: buf is cleared).
//  Returns 0 added; 1 the frame is full (MMP_MAX_DELIVERIES leases, or
//  this lease would take the closed frame over MMP_MAX_BODY bytes):
//  nothing was added, so close and send the frame and add the lease again
//  with count 0; -1 out of memory, or one lease alone is over the limit.
//  mmp_encode_deliver_end closes the frame ("]}"): the body never exceeds
//  MMP_MAX_BODY.
//  "in_doubt": true is written when in_doubt (send it only to a worker that
//  declared MMP_FEATURE_IN_DOUBT); steps never carries STARTED. publisher
//  (NULL: left out) is sent only to workers that declared
//  MMP_FEATURE_PUBLISHER; it is escaped and cut to MMP_MAX_TEXT bytes.
int mmp_encode_deliver_add (mmp_buf_t *buf, size_t count, uint64_t delivery_id, int64_t attempt,
                            int64_t deadline_ms, unsigned steps, bool in_doubt,
                            const char *publisher, const char *request, size_t request_size);
int mmp_encode_deliver_end (mmp_buf_t *buf);

//  Validators shared with the tools.
bool mmp_valid_instance_name (const char *text, size_t len);   //  RFC 1123 label, 1..63
bool mmp_valid_hostname (const char *text, size_t len);        //  dot-separated labels, 1..253

#endif
