/*  brk_group: see brk_group.h. */
#include "brk_group.h"

#include <assert.h>
#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mdl_map.h"

typedef struct {
    brk_msg_t *head, *tail;     //  READY, target free, FIFO through next/prev
    size_t size;                //  Listed
    size_t parked;              //  READY but parked on a leased target
} s_group_list_t;

struct _brk_room_t {
    brk_policy_t *policy;       //  Not owned
    mdl_strmap_t *targets;      //  Folded name -> brk_target_t
    s_group_list_t *groups;     //  Per policy group
    size_t group_count;         //  Length of groups
    size_t ready;               //  Listed and parked, all groups
};

brk_room_t *
brk_room_new (brk_policy_t *policy)
{
    brk_room_t *self = calloc (1, sizeof (brk_room_t));
    if (!self)
        return NULL;
    self->policy = policy;
    self->group_count = brk_policy_group_count (policy);
    self->targets = mdl_strmap_new ();
    self->groups = calloc (self->group_count, sizeof (s_group_list_t));
    if (!self->targets || !self->groups) {
        brk_room_destroy (&self);
        return NULL;
    }
    return self;
}

void
brk_room_destroy (brk_room_t **self_p)
{
    assert (self_p);
    brk_room_t *self = *self_p;
    if (!self)
        return;
    if (self->targets) {
        size_t cursor = 0;
        brk_target_t *target;
        while ((target = mdl_strmap_next (self->targets, &cursor)))
            free (target);
        mdl_strmap_destroy (&self->targets);
    }
    free (self->groups);
    free (self);
    *self_p = NULL;
}

//  The request's hostname, folded into out.
static void
s_target_name (const brk_msg_t *msg, char *out, size_t size)
{
    snprintf (out, size, "(unknown)");
    cJSON *root = msg->json ? cJSON_ParseWithLength (msg->json, msg->json_len) : NULL;
    const cJSON *host = cJSON_GetObjectItemCaseSensitive (root, "hostname");
    const cJSON *instance = cJSON_GetObjectItemCaseSensitive (root, "instance_name");
    if (cJSON_IsString (host) && host->valuestring [0])
        brk_policy_fold (host->valuestring, out, size);
    else
    if (cJSON_IsString (instance) && instance->valuestring [0]) {
        char name [300];
        snprintf (name, sizeof name, "%s.example.net", instance->valuestring);
        brk_policy_fold (name, out, size);
    }
    cJSON_Delete (root);
}

int
brk_room_attach (brk_room_t *self, brk_msg_t *msg)
{
    char name [256];
    s_target_name (msg, name, sizeof name);
    brk_target_t *target = mdl_strmap_lookup (self->targets, name);
    if (!target) {
        int group = brk_policy_group_of (self->policy, name);
        if (group < 0 || (size_t) group >= self->group_count)
            return -1;
        size_t len = strlen (name);
        target = calloc (1, sizeof (brk_target_t) + len + 1);
        if (!target)
            return -1;
        memcpy (target->name, name, len + 1);
        target->group = group;
        if (mdl_strmap_insert (self->targets, target->name, target) != 0) {
            free (target);
            return -1;
        }
    }
    if (!msg->policy) {
        msg->policy = calloc (1, sizeof (brk_msg_policy_t));
        if (!msg->policy) {
            if (target->messages == 0) {
                mdl_strmap_delete (self->targets, target->name);
                free (target);
            }
            return -1;
        }
    }
    msg->policy->target = target;
    target->messages++;
    return 0;
}

void
brk_room_detach (brk_room_t *self, brk_msg_t *msg)
{
    if (!msg->policy)
        return;
    brk_target_t *target = msg->policy->target;
    if (target) {
        if (target->waiting == msg)
            target->waiting = NULL;
        if (target->leased == msg)
            target->leased = NULL;
        if (--target->messages == 0) {
            mdl_strmap_delete (self->targets, target->name);
            free (target);
        }
    }
    free (msg->policy);
    msg->policy = NULL;
}

static void
s_push (brk_msg_t **head, brk_msg_t **tail, brk_msg_t *msg)
{
    msg->next = NULL;
    msg->prev = *tail;
    if (*tail)
        (*tail)->next = msg;
    else
        *head = msg;
    *tail = msg;
}

static brk_msg_t *
s_pop (brk_msg_t **head, brk_msg_t **tail)
{
    brk_msg_t *msg = *head;
    if (!msg)
        return NULL;
    *head = msg->next;
    if (*head)
        (*head)->prev = NULL;
    else
        *tail = NULL;
    msg->next = msg->prev = NULL;
    return msg;
}

bool
brk_room_would_coalesce (const brk_room_t *self, const brk_msg_t *msg)
{
    const brk_target_t *target = msg->policy ? msg->policy->target : NULL;
    return target && msg->attempts == 0 && target->waiting && target->waiting != msg
        && brk_policy_coalesce (self->policy) && !msg->policy->followers;
}

static int
s_room_push (brk_room_t *self, brk_msg_t *msg, bool may_coalesce)
{
    brk_target_t *target = msg->policy->target;
    s_group_list_t *list = &self->groups [target->group];
    if (may_coalesce && brk_room_would_coalesce (self, msg)) {
        brk_msg_policy_t *leader = target->waiting->policy;
        msg->state = BRK_MSG_COALESCED;
        msg->policy->fnext = leader->followers;
        msg->policy->leader = target->waiting;
        leader->followers = msg;
        return 1;
    }
    msg->state = BRK_MSG_READY;
    if (!target->waiting)
        target->waiting = msg;
    self->ready++;
    if (target->leased) {
        s_push (&target->parked_head, &target->parked_tail, msg);
        list->parked++;
    }
    else {
        s_push (&list->head, &list->tail, msg);
        list->size++;
    }
    return 0;
}

int
brk_room_push (brk_room_t *self, brk_msg_t *msg)
{
    return s_room_push (self, msg, true);
}

void
brk_room_requeue (brk_room_t *self, brk_msg_t *msg)
{
    s_room_push (self, msg, false);
}

void
brk_room_push_front (brk_room_t *self, brk_msg_t *msg)
{
    s_group_list_t *list = &self->groups [msg->policy->target->group];
    msg->state = BRK_MSG_READY;
    msg->prev = NULL;
    msg->next = list->head;
    if (list->head)
        list->head->prev = msg;
    else
        list->tail = msg;
    list->head = msg;
    list->size++;
    self->ready++;
}

brk_msg_t *
brk_room_pop (brk_room_t *self, size_t group)
{
    s_group_list_t *list = &self->groups [group];
    brk_msg_t *msg = s_pop (&list->head, &list->tail);
    if (msg) {
        list->size--;
        self->ready--;
    }
    return msg;
}

brk_msg_t *
brk_room_peek (const brk_room_t *self, size_t group)
{
    return self->groups [group].head;
}

void
brk_room_leased (brk_room_t *self, brk_msg_t *msg)
{
    (void) self;
    brk_target_t *target = msg->policy->target;
    assert (!target->leased);
    target->leased = msg;
    if (target->waiting == msg)
        target->waiting = NULL;
}

void
brk_room_released (brk_room_t *self, brk_msg_t *msg)
{
    brk_target_t *target = msg->policy->target;
    if (target->leased != msg)
        return;
    target->leased = NULL;
    //  All of them: the first may be held back (interval) without a lease,
    //  and the others must not stay parked on a free target
    s_group_list_t *list = &self->groups [target->group];
    brk_msg_t *next;
    while ((next = s_pop (&target->parked_head, &target->parked_tail))) {
        list->parked--;
        s_push (&list->head, &list->tail, next);
        list->size++;
    }
}

void
brk_room_hold (brk_room_t *self, brk_msg_t *msg)
{
    (void) self;
    brk_target_t *target = msg->policy->target;
    if (!target->waiting)
        target->waiting = msg;
}

void
brk_room_unwait (brk_room_t *self, brk_msg_t *msg)
{
    (void) self;
    if (msg->policy && msg->policy->target && msg->policy->target->waiting == msg)
        msg->policy->target->waiting = NULL;
}

size_t
brk_room_ready (const brk_room_t *self)
{
    return self->ready;
}

size_t
brk_room_group_ready (const brk_room_t *self, size_t group)
{
    return group < self->group_count
         ? self->groups [group].size + self->groups [group].parked : 0;
}

size_t
brk_room_group_count (const brk_room_t *self)
{
    return self->group_count;
}

brk_msg_t *
brk_room_tail (const brk_room_t *self, size_t group)
{
    return group < self->group_count ? self->groups [group].tail : NULL;
}
