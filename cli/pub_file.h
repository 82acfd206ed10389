/*  pub_file: the --file source of mandrill-publish: one JSON request per
    line, from a file or stdin ("-").

    Every line is checked (pub_request_from_json) before anything is sent;
    blank lines and lines starting with '#' are skipped. An invalid line is
    logged with its number and the decoder's code. Cost: the whole input is
    held in memory, O(input size), read once.
*/
#ifndef PUB_FILE_H_INCLUDED
#define PUB_FILE_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>

#include "pub_request.h"

//  Read path ("-" for stdin). On success *list_p (owned by the caller:
//  pub_request_free each, then free the array) holds *count_p requests.
//  With keep_going an invalid line is skipped and reading goes on;
//  without, reading stops and nothing is returned. Returns 0, 1 (some
//  lines skipped) or -1 (cannot read, out of memory, or an invalid line).
int pub_file_read (const char *path, bool keep_going, pub_request_t **list_p, size_t *count_p);

#endif
