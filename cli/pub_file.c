/*  pub_file: see pub_file.h. */
#include "pub_file.h"
#include "mdl_array.h"
#include "mdl_log.h"

#include <czmq.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

//  Read requests from a file, one JSON object per line; blank lines and
//  lines starting with '#' are skipped. An invalid line is reported with
//  its number; with keep_going it is skipped, otherwise reading stops and
//  -1 is returned (so nothing is sent). Returns 0, 1 (some skipped) or -1.
int
pub_file_read (const char *path, bool keep_going, pub_request_t **list_p, size_t *count_p)
{
    FILE *file = streq (path, "-") ? stdin : fopen (path, "r");
    if (!file) {
        mdl_error ("cannot open %s: %s", path, strerror (errno));
        return -1;
    }
    pub_request_t *list = NULL;
    size_t count = 0, capacity = 0;
    char *line = NULL;
    size_t line_capacity = 0;
    ssize_t length;
    int64_t number = 0;
    int rc = 0;
    while ((length = getline (&line, &line_capacity, file)) >= 0) {
        number++;
        while (length > 0 && (line [length - 1] == '\n' || line [length - 1] == '\r'))
            line [--length] = 0;
        const char *start = line + strspn (line, " \t");
        if (*start == 0 || *start == '#')
            continue;
        if (mdl_array_reserve (&list, &capacity, count + 1, sizeof *list)) {
            mdl_error ("out of memory reading %s", path);
            rc = -1;
            break;
        }
        char error [320];
        size_t column_base = (size_t) (start - line);
        if (pub_request_from_json (start, (size_t) length - column_base, column_base,
                                 &list [count], error, sizeof error) == 0)
            count++;
        else {
            mdl_error ("%s:%" PRId64 ": invalid request: %s%s", streq (path, "-") ? "stdin" : path,
                       number, error, keep_going ? " (skipped)" : "");
            rc = keep_going ? 1 : -1;
            if (!keep_going)
                break;
        }
    }
    free (line);
    if (file != stdin)
        fclose (file);
    if (rc < 0) {
        for (size_t i = 0; i < count; i++)
            pub_request_free (&list [i]);
        free (list);
        return -1;
    }
    *list_p = list;
    *count_p = count;
    return rc;
}
