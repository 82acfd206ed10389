/*  pub_request: one restart request of mandrill-publish, checked exactly
    as the broker would check it, and the --instance source.

    A request is validated by the protocol's own decoder (mmp_decode on the
    one-request PUBLISH it would make), never by a second set of rules, so
    whatever passes here passes at the broker. The printed form is what
    goes on the wire, and it is decoded again before it is accepted.

    Ownership: a pub_request_t owns its json text; pub_request_free frees
    it (safe twice). Cost: two decodes of the request per call.
*/
#ifndef PUB_REQUEST_H_INCLUDED
#define PUB_REQUEST_H_INCLUDED

#include <stddef.h>

//  One request ready to send: its printed JSON and what the logs name.
typedef struct {
    char *json;                 //  Printed request object, message_id included
    char id [37];               //  Its message_id
    char name [64];             //  Its instance_name
} pub_request_t;

//  Check one input request (size bytes of JSON text) exactly as the broker
//  would, and fill *request with its printed form (a message_id added when
//  absent, lower-cased when present). column_base is the column of the
//  text's first byte in its line, for error positions. Returns 0, or -1
//  with the decoder's code and reason in error.
int pub_request_from_json (const char *text, size_t size, size_t column_base,
                           pub_request_t *request, char *error, size_t error_size);

//  The --instance source: one request from an instance name and an
//  optional hostname and message id (NULL when not given). Returns 0, or
//  -1 with the reason in error.
int pub_request_instance (const char *instance, const char *hostname, const char *message_id,
                          pub_request_t *request, char *error, size_t error_size);

void pub_request_free (pub_request_t *request);

#endif
