/*  brk_policy: the restart-safety policy, as a state machine without I/O.

    The operator (never a publisher) sets groups of targets. A target is a
    request's hostname, case-folded. Each group has a name, a glob on the
    target (fnmatch, first match in declaration order wins; the group named
    "default", made implicitly with no cap, catches the rest) and:
      max             most concurrent leases: a number, or N % of a declared
                      size (floor, at least 1)
      ramp            start at 1 lease, double after each success up to max
      max_errors      error stop: after N failed attempts (nacked, expired,
                      worker lost) within error_window_ms the group pauses
                      itself with the reason; leases already open finish
      windows         when a lease may start: days and hours in a named
                      time zone (brk_policy_window.c), none = always
      min_interval_ms least time between two restarts of one target
      max_age_ms      a request waiting longer is dead-lettered "max_age"
      restart_timeout_ms  how long a started restart may run: a restart in
                      doubt is not delivered again before it has passed
    plus pause/resume per group and a global kill switch (no new leases;
    open ones finish), and one policy-wide setting, coalesce (a request for
    a target that already has one waiting joins it; default on).

    The policy answers "may a lease start for this target in this group
    now?" and is told when leases open and end; brk_queue owns the
    messages and asks it (brk_queue_set_policy). One lease per target is
    the queue's rule (it holds the host lock); every other rule is here.

    Time: two injected clocks. mono (monotonic ms) measures failure
    windows; wall (unix ms) decides time windows and stamps the per-target
    last restart, which must mean the same after a broker restart.

    State that survives a broker restart (pause state and reason, the kill
    switch, failure times, per-target last restart) goes out through
    brk_policy_serialise () as a small versioned text blob and comes back
    through brk_policy_restore (); see docs/POLICY.md for the format.

    Costs: a group look-up for a new target is O(groups) globs, then cached
    per target (a hash map; one entry per target ever seen, about 100 bytes;
    bounded only by the number of distinct hosts). Every check and every
    lease event is O(1), except a group's window state, recomputed only when
    its cached open/closed state expires (O(minutes to the next change),
    at most 8 days of one-minute steps, about 10,000 localtime_r calls).
    Failure: functions return 0 / -1 and fill an error text; nothing from a
    file or the command line is asserted.
*/
#ifndef BRK_POLICY_H_INCLUDED
#define BRK_POLICY_H_INCLUDED

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "mdl_clock.h"

typedef struct _brk_policy_t brk_policy_t;

//  A time window: on days (bit 0 = Monday ... bit 6 = Sunday) from start to
//  end minute of the local day; end <= start crosses midnight (the part
//  after midnight belongs to the day it started on).
typedef struct {
    unsigned days;              //  Bit mask, Monday = bit 0
    int start_min;              //  0..1439
    int end_min;                //  0..1440
} brk_window_t;

#define BRK_POLICY_MAX_WINDOWS 8
#define BRK_POLICY_NAME_MAX 64
#define BRK_POLICY_RESTART_TIMEOUT_DEFAULT 300000

//  What becomes of a request in doubt whose next worker has no verify
//  command (policy key in_doubt).
typedef enum {
    BRK_IN_DOUBT_RESTART = 0,           //  "restart": delivered, restarted again (default)
    BRK_IN_DOUBT_DEAD_LETTER            //  "dead_letter": dead-lettered "in_doubt" for an operator
} brk_in_doubt_t;

typedef struct {
    char name [BRK_POLICY_NAME_MAX];    //  Group name
    char glob [256];                    //  fnmatch pattern on the folded target
    int64_t max;                        //  Cap, or 0 for none; -N: N percent of size
    int64_t size;                       //  Declared group size (for percent caps)
    bool ramp;                          //  Start at 1 and double per success
    int64_t max_errors;                 //  Error stop after this many, 0 = never
    int64_t error_window_ms;            //  Window of the error stop
    int64_t min_interval_ms;            //  Least time between restarts of a target
    int64_t max_age_ms;                 //  Dead-letter requests older, 0 = never
    int64_t restart_timeout_ms;         //  In-doubt hold after a started restart
    brk_in_doubt_t in_doubt;            //  In doubt, to a worker without verify
    char zone [64];                     //  TZ name of the windows ("" = UTC)
    brk_window_t windows [BRK_POLICY_MAX_WINDOWS];
    size_t window_count;                //  0 = always open
} brk_group_config_t;

//  Fill a group's settings with the defaults: no cap, no ramp, no error
//  stop (window 10 min when set), no interval, no max age, restart timeout
//  5 min, no windows. Returns 0, or -1 if name (BRK_POLICY_NAME_MAX - 1)
//  or glob (255 characters) is too long; they are then cut short.
int brk_group_config_defaults (brk_group_config_t *config, const char *name, const char *glob);

//  A policy with only the default group. NULL when out of memory.
brk_policy_t *brk_policy_new (mdl_clock_t mono, mdl_clock_t wall);
void brk_policy_destroy (brk_policy_t **self_p);

//  Add a group before "default" (or replace "default"'s settings when the
//  name is "default"). Returns 0, or -1 with err filled (duplicate name,
//  bad cap, percent without size, bad window).
int brk_policy_add_group (brk_policy_t *self, const brk_group_config_t *config,
                          char *err, size_t err_size);

//  The simple command-line form 'NAME:GLOB:MAX' where MAX is a number or
//  'N%:SIZE' (a percentage needs the group's size as a fourth field).
int brk_policy_add_spec (brk_policy_t *self, const char *spec, char *err, size_t err_size);

//  Load a ZPL policy file (docs/POLICY.md). Returns 0, or -1 with err naming
//  the file and the key (or the line, for syntax errors) that is wrong;
//  on error the policy is unchanged.
int brk_policy_load (brk_policy_t *self, const char *path, char *err, size_t err_size);
//  The same from text in memory (tests, reload).
int brk_policy_load_text (brk_policy_t *self, const char *text, char *err, size_t err_size);

//  Reload settings from a policy file (or text when path is NULL) without
//  a restart: the same groups with the same globs in the same order (what
//  a queue has sorted its waiting requests by), new caps, ramps, error
//  stops, windows, intervals, ages and timeouts. Open leases, pause state,
//  ramp step and failure times stay (failure times are cut to the new
//  max_errors). Returns 0, or -1 with err and nothing changed.
int brk_policy_reload (brk_policy_t *self, const char *path, const char *text,
                       char *err, size_t err_size);

bool brk_policy_coalesce (const brk_policy_t *self);
void brk_policy_set_coalesce (brk_policy_t *self, bool coalesce);

//  Groups, 0 .. count-1, in match order; the last is "default".
size_t brk_policy_group_count (const brk_policy_t *self);
//  Index of the group named, or -1.
int brk_policy_group_find (const brk_policy_t *self, const char *name);
const brk_group_config_t *brk_policy_group_config (const brk_policy_t *self, size_t group);

//  Fold a hostname to its target (lower case) into out. Returns out.
char *brk_policy_fold (const char *hostname, char *out, size_t out_size);
//  Group of a folded target (cached). Returns the index, or -1 out of memory.
int brk_policy_group_of (brk_policy_t *self, const char *target);

//  Why a lease may not start.
typedef enum {
    BRK_POLICY_OK = 0,
    BRK_POLICY_KILLED,          //  Global kill switch
    BRK_POLICY_PAUSED,          //  Group paused (by operator or error stop)
    BRK_POLICY_FULL,            //  Group at its cap (or ramp)
    BRK_POLICY_WINDOW,          //  Outside the group's windows
    BRK_POLICY_INTERVAL,        //  Target restarted too recently
    BRK_POLICY_TOO_OLD          //  Request older than max_age: dead-letter it
} brk_policy_verdict_t;

const char *brk_policy_verdict_name (brk_policy_verdict_t verdict);

//  May the group start a lease now (kill switch, pause, cap, window)?
brk_policy_verdict_t brk_policy_group_check (brk_policy_t *self, size_t group);

//  May this target, in its group, start a lease now, for a request that
//  has waited age_ms? Group checks first, then age, then interval. When the
//  verdict is INTERVAL, *until_mono (if given) gets the monotonic ms at
//  which it will pass.
brk_policy_verdict_t brk_policy_target_check (brk_policy_t *self, const char *target,
                                              size_t group, int64_t age_ms,
                                              int64_t *until_mono);

//  A lease opened for target in group (counts against the cap and stamps
//  the target's last restart). Returns 0, -1 out of memory.
int brk_policy_leased (brk_policy_t *self, const char *target, size_t group);

//  Forget the targets whose record can no longer change a verdict: never
//  leased (only their group was looked up: it is looked up again on the
//  next use), or leased longer ago than the longest least interval of any
//  group. Without this, every hostname a request ever named would stay in
//  memory. A forgotten stamp is gone: a reload or a restart with a longer
//  least interval (or one where there was none), or a wall clock that
//  jumps forward and back, lets such a target be restarted sooner than
//  the new rule would. Returns how many were forgotten. Cost: O(targets
//  known); out of memory it forgets fewer.
size_t brk_policy_forget_stale (brk_policy_t *self);

//  How many targets the policy knows (for tests and statistics).
size_t brk_policy_target_count (const brk_policy_t *self);

//  Keep a slot of group's budget taken without a lease (a restart in doubt
//  may still be running); give it back with released (NEUTRAL).
void brk_policy_hold (brk_policy_t *self, size_t group);

//  How a lease ended.
typedef enum {
    BRK_POLICY_SUCCESS,         //  Acked
    BRK_POLICY_FAILURE,         //  Nacked, expired, worker lost
    BRK_POLICY_NEUTRAL          //  Given back without counting (e.g. shutdown)
} brk_policy_outcome_t;

//  A lease in group ended. A failure may trip the error stop.
void brk_policy_released (brk_policy_t *self, size_t group, brk_policy_outcome_t outcome);

//  Operator pause/resume of one group; resume also clears an error stop
//  and its failure count. -1 when the group does not exist.
int brk_policy_pause (brk_policy_t *self, const char *group, const char *reason);
int brk_policy_resume (brk_policy_t *self, const char *group);
//  Why group is paused, or NULL when it is not. O(1).
const char *brk_policy_paused_reason (const brk_policy_t *self, size_t group);
//  Global kill switch (pause --all / resume --all).
void brk_policy_kill (brk_policy_t *self, bool killed);
bool brk_policy_killed (const brk_policy_t *self);

//  How often the durable state changed (a lease stamped a target, a
//  failure counted, pause, resume, kill), and in *urgent (if given) how
//  often by pause, resume, kill or an error stop: counters the owner
//  compares to decide when to save brk_policy_serialise () again.
uint64_t brk_policy_changes (const brk_policy_t *self, uint64_t *urgent);

//  Per group, for STATS and metrics.
typedef struct {
    const char *name;           //  Group name (valid while the policy is)
    int64_t in_flight;          //  Open leases
    int64_t cap;                //  Cap now (ramp included), -1 for none
    int64_t max;                //  Configured cap, -1 for none
    int64_t waiting;            //  Requests waiting (the queue fills this in)
    int64_t in_doubt;           //  Pending requests in doubt (the queue fills this in)
    int64_t failures;           //  Failures within the error window
    bool paused;                //  Paused (operator or error stop)
    const char *paused_reason;  //  Why, or NULL
    bool window_open;           //  Inside a window now
    int64_t next_open_wall;     //  Unix ms of the next opening when closed, 0 otherwise
                                //  (-1: no opening within 8 days)
} brk_group_stats_t;

void brk_policy_group_stats (brk_policy_t *self, size_t group, brk_group_stats_t *stats);

//  Durable state as a versioned text blob (freed by the caller), or NULL
//  when out of memory. restore () takes such a blob back; groups and
//  targets it names that the policy does not know are skipped (the policy
//  file may have changed). Returns 0, or -1 with err for a bad blob
//  (nothing is restored then).
char *brk_policy_serialise (brk_policy_t *self);
int brk_policy_restore (brk_policy_t *self, const char *blob, char *err, size_t err_size);

//  Window engine (brk_policy_window.c): is wall time open in zone for these
//  windows, and until when does that answer hold (unix ms; INT64_MAX when
//  it never changes within 8 days)? zone "" is UTC. Returns 0, or -1 when
//  the zone is unknown.
int brk_window_state (const char *zone, const brk_window_t *windows, size_t count,
                      int64_t wall_ms, bool *open, int64_t *until_ms);
//  Parse "mon-fri" / "sat,sun" / "*" into a day mask; "09:00-17:00" into
//  minutes. 0 or -1.
int brk_window_parse_days (const char *text, unsigned *days);
int brk_window_parse_hours (const char *text, int *start_min, int *end_min);
//  Is zone a time zone the TZ database knows?
bool brk_window_zone_valid (const char *zone);

#endif
