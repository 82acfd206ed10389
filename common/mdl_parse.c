/*  mdl_parse: see mdl_parse.h. */
#include "mdl_parse.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

int
mdl_parse_duration_ms (const char *text, int64_t *ms)
{
    if (!text || !*text)
        return -1;
    if (strcmp (text, "0") == 0) {
        *ms = 0;
        return 0;
    }
    if (!isdigit ((unsigned char) *text) && *text != '.')
        return -1;
    errno = 0;
    char *end;
    double value = strtod (text, &end);
    if (errno || end == text || !isfinite (value) || value < 0)
        return -1;
    double scale;
    if (strcmp (end, "ms") == 0)
        scale = 1;
    else
    if (strcmp (end, "s") == 0)
        scale = 1000;
    else
    if (strcmp (end, "m") == 0)
        scale = 60000;
    else
    if (strcmp (end, "h") == 0)
        scale = 3600000;
    else
        return -1;
    double result = value * scale;
    if (result > 9.0e15)
        return -1;
    *ms = (int64_t) llround (result);
    return 0;
}

int
mdl_parse_int (const char *text, int64_t min, int64_t max, int64_t *value)
{
    if (!text || !*text)
        return -1;
    errno = 0;
    char *end;
    long long parsed = strtoll (text, &end, 10);
    if (errno || *end || end == text || parsed < min || parsed > max)
        return -1;
    *value = parsed;
    return 0;
}

int
mdl_parse_double (const char *text, double min, double max, double *value)
{
    if (!text || !*text)
        return -1;
    errno = 0;
    char *end;
    double parsed = strtod (text, &end);
    if (errno || *end || end == text || !isfinite (parsed) || parsed < min || parsed > max)
        return -1;
    *value = parsed;
    return 0;
}

int
mdl_parse_bool (const char *text, bool *value)
{
    static const char *yes [] = { "true", "yes", "on", "1", NULL };
    static const char *no [] = { "false", "no", "off", "0", NULL };
    if (!text)
        return -1;
    for (int i = 0; yes [i]; i++)
        if (strcasecmp (text, yes [i]) == 0) {
            *value = true;
            return 0;
        }
    for (int i = 0; no [i]; i++)
        if (strcasecmp (text, no [i]) == 0) {
            *value = false;
            return 0;
        }
    return -1;
}
