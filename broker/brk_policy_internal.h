/*  brk_policy_internal: the policy's structs, shared by brk_policy.c and
    brk_policy_state.c only. Everyone else uses brk_policy.h. */
#ifndef BRK_POLICY_INTERNAL_H_INCLUDED
#define BRK_POLICY_INTERNAL_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "brk_policy.h"
#include "mdl_map.h"

typedef struct {
    brk_group_config_t config;  //  Settings
    int64_t cap;                //  Effective cap from max and size, 0 = none
    int64_t in_flight;          //  Open leases
    int64_t ramp_limit;         //  Current ramp step (when ramp)
    int64_t *failures;          //  Ring of the latest max_errors failure times (mono)
    size_t failure_head;        //  Next slot to write
    size_t failure_count;       //  Slots used
    bool paused;                //  Paused?
    char reason [160];          //  Why paused
    bool window_open;           //  Cached window answer
    int64_t window_until;       //  Wall ms until which it holds; 0 = not computed
} brk_policy_group_t;

typedef struct {
    int group;                  //  Index in groups
    int64_t last_wall;          //  Unix ms of its last lease, 0 = never
    char name [];               //  Folded target, key in the map
} brk_policy_target_t;

struct _brk_policy_t {
    mdl_clock_t mono;           //  Failure windows
    mdl_clock_t wall;           //  Time windows and last restarts
    brk_policy_group_t *groups;          //  In match order, "default" last
    size_t group_count;         //  Length of groups
    mdl_strmap_t *targets;      //  Folded target -> brk_policy_target_t
    bool killed;                //  Global kill switch
    bool coalesce;              //  Coalesce waiting requests per target
    uint64_t changes;           //  Durable state changes (brk_policy_changes)
    uint64_t urgent;            //  Of them pause, resume, kill, error stop
};

//  The record of a folded target, made on first use. NULL out of memory.
brk_policy_target_t *brk_policy_target (brk_policy_t *self, const char *name);
//  The longest least interval of any group (0 when none has one).
int64_t brk_policy_longest_interval (const brk_policy_t *self);
//  Can target's last-restart stamp still change a verdict, at wall ms
//  wall, with longest from brk_policy_longest_interval? Never when it was
//  never leased, or leased longer ago than longest.
static inline bool
brk_policy_stamp_matters (const brk_policy_target_t *target, int64_t longest, int64_t wall)
{
    return target->last_wall && target->last_wall + longest > wall;
}
//  Fill err (if given) with a formatted message.
void brk_policy_err (char *err, size_t size, const char *format, ...)
    __attribute__ ((format (printf, 3, 4)));

#endif
