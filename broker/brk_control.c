/*  brk_control: the restart-policy commands of the frontend (PAUSE,
    RESUME, GROUPS, INFLIGHT, WORKERS, RELOAD) and STATS' groups; see
    brk_server_internal.h, proto/PROTOCOL.md section 4 and docs/POLICY.md.

    Every request gets one reply of its own name, or ERROR: bad_value for
    a group the policy does not have or a file that does not reload,
    unexpected_command for PAUSE, RESUME and RELOAD without a policy,
    too_large for a listing over one frame (ask with a smaller limit),
    internal when out of memory. Roles (brk_auth.c): PAUSE, RESUME and
    RELOAD are for operators; GROUPS, INFLIGHT and WORKERS also for
    observers.

    PAUSE and RESUME save the policy's state through the store before
    they answer ("durable" says whether that worked and the store keeps
    it across a restart: false with --durability memory), so a pause the
    operator saw acknowledged holds across a broker restart.
    Cost: GROUPS and STATS O(groups); INFLIGHT O(leases) up to its limit;
    WORKERS O(workers); PAUSE and RESUME one state save.
*/
#include "brk_server_internal.h"

#include <string.h>

#include "mdl_log.h"

#define S_INFLIGHT_LIMIT 10000      //  Most leases one INFLIGHT reply lists

static bool
s_need_policy (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    if (self->policy)
        return true;
    mmp_send_error (self->frontend, routing_id, MMP_ERR_UNEXPECTED,
                    "the broker runs without a restart policy (start it with --group or --policy)",
                    msg->req);
    return false;
}

static void
s_send (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    mmp_buf_t *buf = &self->reply;
    if (mmp_encode_close (buf, msg->req) != 0)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_INTERNAL, "out of memory", msg->req);
    else
    if (mmp_buf_size (buf) > MMP_MAX_BODY)
        mmp_send_error (self->frontend, routing_id, MMP_ERR_TOO_LARGE,
                        "the reply does not fit one frame; ask with a smaller limit", msg->req);
    else
        mmp_send (self->frontend, routing_id, msg->command, mmp_buf_data (buf), mmp_buf_size (buf));
}

//  Save now, so that the reply promises what a restart keeps: true when
//  the state is on disk (a memory broker keeps nothing across a restart).
static bool
s_save_now (s_server_t *self)
{
    brk_server_policy_save (self, true);
    brk_store_stats_t stats;
    brk_store_stats (self->store, &stats);
    return !self->policy_save_failed && stats.persistent;
}

static void
s_pause_resume (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    if (!s_need_policy (self, routing_id, msg))
        return;
    bool pause = msg->command == MMP_PAUSE;
    const char *reason = msg->reason && *msg->reason ? msg->reason : "operator";
    if (msg->group && brk_policy_group_find (self->policy, msg->group) < 0) {
        char text [MMP_MAX_TEXT + 40];
        snprintf (text, sizeof text, "no group '%s' (see GROUPS)", msg->group);
        mmp_send_error (self->frontend, routing_id, MMP_ERR_BAD_VALUE, text, msg->req);
        return;
    }
    size_t groups = brk_policy_group_count (self->policy);
    if (pause && msg->group)
        brk_policy_pause (self->policy, msg->group, reason);
    else
    if (pause)
        brk_policy_kill (self->policy, true);
    else
    if (msg->group)
        brk_policy_resume (self->policy, msg->group);
    else {
        //  resume --all: the kill switch off and every group going again
        brk_policy_kill (self->policy, false);
        for (size_t i = 0; i < groups; i++)
            if (brk_policy_paused_reason (self->policy, i))
                brk_policy_resume (self->policy, brk_policy_group_config (self->policy, i)->name);
    }
    bool durable = s_save_now (self);
    const char *group = msg->group ? msg->group : "*";
    if (pause)
        mdl_warn ("policy: %s paused by an operator: %s%s", msg->group ? msg->group : "every group",
                  reason, durable ? "" : " (NOT saved: a broker restart forgets it)");
    else
        mdl_info ("policy: %s resumed by an operator%s", msg->group ? msg->group : "every group",
                  durable ? "" : " (NOT saved)");
    brk_server_group_event (self, pause ? "group_paused" : "group_resumed", group,
                            pause ? reason : NULL);
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    if (msg->group)
        mmp_encode_member_string (buf, "group", msg->group);
    else
        mmp_encode_member_bool (buf, "all", true);
    mmp_encode_member_bool (buf, "paused", pause);
    if (pause)
        mmp_encode_member_string (buf, "reason", reason);
    mmp_encode_member_bool (buf, "durable", durable);
    s_send (self, routing_id, msg);
}

//  One group's object (STATS groups, GROUPS).
static void
s_group_json (s_server_t *self, mmp_buf_t *buf, size_t index, bool detail)
{
    brk_group_stats_t stats;
    if (brk_queue_group_stats (self->queue, index, &stats) != 0)
        return;
    mmp_encode_item_object (buf);
    mmp_encode_member_string (buf, "name", stats.name);
    mmp_encode_member_int (buf, "in_flight", stats.in_flight);
    mmp_encode_member_int (buf, "cap", stats.cap);
    mmp_encode_member_int (buf, "max", stats.max);
    mmp_encode_member_int (buf, "waiting", stats.waiting);
    mmp_encode_member_int (buf, "in_doubt", stats.in_doubt);
    mmp_encode_member_int (buf, "failures", stats.failures);
    mmp_encode_member_bool (buf, "paused", stats.paused);
    if (stats.paused_reason)
        mmp_encode_member_string (buf, "paused_reason", stats.paused_reason);
    mmp_encode_member_bool (buf, "window_open", stats.window_open);
    mmp_encode_member_int (buf, "next_open", stats.next_open_wall);
    if (detail) {
        const brk_group_config_t *config = brk_policy_group_config (self->policy, index);
        mmp_encode_member_string (buf, "match", config->glob);
        mmp_encode_member_bool (buf, "ramp", config->ramp);
        mmp_encode_member_int (buf, "max_errors", config->max_errors);
        mmp_encode_member_int (buf, "error_window_ms", config->error_window_ms);
        mmp_encode_member_int (buf, "min_interval_ms", config->min_interval_ms);
        mmp_encode_member_int (buf, "max_age_ms", config->max_age_ms);
        mmp_encode_member_int (buf, "restart_timeout_ms", config->restart_timeout_ms);
        mmp_encode_member_int (buf, "windows", (int64_t) config->window_count);
        mmp_encode_member_string (buf, "zone", config->zone [0] ? config->zone : "UTC");
    }
    mmp_encode_close_object (buf);
}

void
brk_control_stats_groups (s_server_t *self, mmp_buf_t *buf)
{
    if (!self->policy)
        return;
    mmp_encode_member_bool (buf, "killed", brk_policy_killed (self->policy));
    mmp_encode_member_array (buf, "groups");
    size_t groups = brk_policy_group_count (self->policy);
    for (size_t i = 0; i < groups; i++)
        s_group_json (self, buf, i, false);
    mmp_encode_close_array (buf);
}

static void
s_groups (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_bool (buf, "policy", self->policy != NULL);
    mmp_encode_member_bool (buf, "killed", self->policy && brk_policy_killed (self->policy));
    mmp_encode_member_array (buf, "groups");
    size_t groups = self->policy ? brk_policy_group_count (self->policy) : 0;
    for (size_t i = 0; i < groups; i++)
        s_group_json (self, buf, i, true);
    mmp_encode_close_array (buf);
    s_send (self, routing_id, msg);
}

typedef struct {
    s_server_t *server;
    mmp_buf_t *buf;
} s_list_ctx_t;

static void
s_lease_json (void *arg, const brk_lease_info_t *info)
{
    s_list_ctx_t *ctx = (s_list_ctx_t *) arg;
    mmp_buf_t *buf = ctx->buf;
    mmp_encode_item_object (buf);
    mmp_encode_member_string (buf, "message_id", brk_msg_id (info->msg));
    mmp_encode_member_int (buf, "delivery_id", (int64_t) info->delivery_id);
    if (info->target)
        mmp_encode_member_string (buf, "target", info->target);
    if (info->group >= 0)
        mmp_encode_member_string (buf, "group",
                                  brk_policy_group_config (ctx->server->policy, (size_t) info->group)->name);
    mmp_encode_member_string (buf, "worker", info->worker ? brk_worker_name (info->worker) : "");
    mmp_encode_member_int (buf, "age_ms", info->age_ms);
    mmp_encode_member_int (buf, "deadline_ms", info->deadline_ms);
    mmp_encode_member_int (buf, "attempt", info->attempt);
    mmp_encode_member_int (buf, "steps", (int64_t) info->steps);
    mmp_encode_member_bool (buf, "started", info->started);
    mmp_encode_close_object (buf);
}

static void
s_inflight (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    brk_queue_stats_t stats;
    brk_queue_stats (self->queue, &stats);
    size_t limit = msg->limit > 0 && msg->limit < S_INFLIGHT_LIMIT ? (size_t) msg->limit : S_INFLIGHT_LIMIT;
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_array (buf, "leases");
    s_list_ctx_t ctx = { self, buf };
    brk_queue_leases (self->queue, limit, s_lease_json, &ctx);
    mmp_encode_close_array (buf);
    mmp_encode_member_int (buf, "total", (int64_t) stats.in_flight);
    s_send (self, routing_id, msg);
}

static void
s_worker_json (void *arg, const brk_worker_info_t *info)
{
    s_list_ctx_t *ctx = (s_list_ctx_t *) arg;
    mmp_buf_t *buf = ctx->buf;
    const s_peer_t *peer = (const s_peer_t *) brk_worker_handle (info->worker);
    mmp_encode_item_object (buf);
    mmp_encode_member_string (buf, "name", brk_worker_name (info->worker));
    mmp_encode_member_int (buf, "credit", brk_worker_credit (info->worker));
    mmp_encode_member_int (buf, "leases", brk_worker_in_flight (info->worker));
    mmp_encode_member_int (buf, "seen_ms_ago", info->seen_ms_ago);
    if (peer)
        mmp_encode_member_string (buf, "peer", peer->key);
    mmp_encode_close_object (buf);
}

static void
s_workers (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_array (buf, "workers");
    s_list_ctx_t ctx = { self, buf };
    brk_queue_workers (self->queue, s_worker_json, &ctx);
    mmp_encode_close_array (buf);
    s_send (self, routing_id, msg);
}

static void
s_reload (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    if (!s_need_policy (self, routing_id, msg))
        return;
    char err [512];
    if (brk_server_policy_reload (self, err, sizeof err) != 0) {
        mmp_send_error (self->frontend, routing_id, MMP_ERR_BAD_VALUE, err, msg->req);
        return;
    }
    mmp_buf_t *buf = &self->reply;
    mmp_encode_open (buf);
    mmp_encode_member_bool (buf, "ok", true);
    mmp_encode_member_string (buf, "file", self->policy_file);
    s_send (self, routing_id, msg);
}

void
brk_control_handle (s_server_t *self, zframe_t *routing_id, const mmp_msg_t *msg)
{
    switch (msg->command) {
        case MMP_PAUSE:
        case MMP_RESUME:
            s_pause_resume (self, routing_id, msg);
            break;
        case MMP_GROUPS:
            s_groups (self, routing_id, msg);
            break;
        case MMP_INFLIGHT:
            s_inflight (self, routing_id, msg);
            break;
        case MMP_WORKERS:
            s_workers (self, routing_id, msg);
            break;
        case MMP_RELOAD:
            s_reload (self, routing_id, msg);
            break;
        default:
            s_reject (self, self->frontend, "frontend", routing_id, MMP_ERR_UNEXPECTED,
                      "command not accepted on the frontend socket", msg->req);
            break;
    }
}
