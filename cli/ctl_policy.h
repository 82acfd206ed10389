/*  ctl_policy: mandrill-ctl's restart-policy commands (pause, resume,
    groups, inflight, workers, reload): the readable tables printed from
    the broker's replies (proto/PROTOCOL.md section 4.1). mandrill-ctl
    sends the request and prints --json itself.

    Replies are open-ended objects: a member that is missing or of another
    type prints as "-", never fails. Cost: O(rows) per table.
*/
#ifndef CTL_POLICY_H_INCLUDED
#define CTL_POLICY_H_INCLUDED

#include <cjson/cJSON.h>
#include <stdio.h>

//  Print the reply of command (PAUSE, RESUME, GROUPS, INFLIGHT, WORKERS,
//  RELOAD) to out as a table or a line.
void ctl_policy_print (FILE *out, const char *command, const cJSON *body);

//  The duration in ms as "850ms", "12.3s", "4m05s", "2h10m" into buf.
const char *ctl_policy_duration (double ms, char *buf, size_t size);

#endif
