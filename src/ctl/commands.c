#include "ctl/commands.h"

#include "util/time.h"

#include <stdlib.h>
#include <string.h>

typedef enum wait_goal {
  GOAL_READY,   /* spawn, restart */
  GOAL_STOPPED, /* stop */
} wait_goal_t;

typedef struct wait {
  struct wait *next;
  ten_ctl_commands_t *cmds;
  ten_ctl_req_t *req;
  ten_instance_t *inst;
  wait_goal_t goal;
  bool restarting; /* a restart passes through draining and stopped first */
  uint64_t started_ms;
} wait_t;

struct ten_ctl_commands {
  ten_ctl_t *ctl;
  ten_hv_t *hv;
  wait_t *waits;
};

static void remove_wait(ten_ctl_commands_t *cmds, wait_t *w) {
  for (wait_t **p = &cmds->waits; *p; p = &(*p)->next) {
    if (*p == w) {
      *p = w->next;
      return;
    }
  }
}

static void reply_instance(ten_ctl_req_t *req, const ten_instance_t *inst, uint64_t waited_ms) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_jw_obj(&w);
  ten_jw_key(&w, "instance");
  ten_instance_to_json(inst, &w);
  ten_jw_kint(&w, "waited_ms", (int64_t)waited_ms);
  ten_jw_obj_end(&w);
  ten_ctl_reply_ok(req, out.data, out.len);
  ten_buf_free(&out);
}

/* Decides whether a transition answers the wait; returns true when done. */
static bool settle(wait_t *w, ten_instance_state_t to) {
  ten_instance_t *inst = w->inst;
  uint64_t waited = ten_now_ms() - w->started_ms;
  if (to == TEN_INST_STATE_COUNT) {
    ten_ctl_reply_error(w->req, "%s was removed", inst->key);
    return true;
  }
  if (w->goal == GOAL_STOPPED) {
    if (to == TEN_INST_STOPPED || to == TEN_INST_FAILED) {
      reply_instance(w->req, inst, waited);
      return true;
    }
    return false;
  }
  if (w->restarting) {
    if (to == TEN_INST_STARTING)
      w->restarting = false;
    else if (to != TEN_INST_FAILED)
      return false;
  }
  switch (to) {
  case TEN_INST_READY: reply_instance(w->req, inst, waited); return true;
  case TEN_INST_FAILED:
    ten_ctl_reply_error(w->req, "%s failed: %s", inst->key, inst->reason);
    return true;
  case TEN_INST_BACKOFF:
    ten_ctl_reply_error(w->req, "%s did not become ready: %s (it will be restarted)", inst->key,
                        inst->last_exit[0] ? inst->last_exit : "crashed");
    return true;
  case TEN_INST_STOPPED:
    ten_ctl_reply_error(w->req, "%s stopped before it was ready: %s", inst->key,
                        inst->last_exit[0] ? inst->last_exit : "stopped");
    return true;
  default: return false;
  }
}

static void on_change(void *ctx, ten_instance_t *inst, ten_instance_state_t from,
                      ten_instance_state_t to) {
  ten_ctl_commands_t *cmds = ctx;
  for (wait_t *w = cmds->waits, *next; w; w = next) {
    next = w->next;
    if (w->inst != inst || !settle(w, to)) continue;
    remove_wait(cmds, w);
    free(w);
  }
}

static void on_cancel(void *ctx) {
  wait_t *w = ctx;
  remove_wait(w->cmds, w);
  ten_ctl_reply_error(w->req, "cancelled"); /* frees req; nobody reads it */
  free(w);
}

static void wait_for(ten_ctl_commands_t *cmds, ten_ctl_req_t *req, ten_instance_t *inst,
                     wait_goal_t goal, bool restarting) {
  wait_t *w = ten_xcalloc(1, sizeof *w);
  w->cmds = cmds;
  w->req = req;
  w->inst = inst;
  w->goal = goal;
  w->restarting = restarting;
  w->started_ms = ten_now_ms();
  w->next = cmds->waits;
  cmds->waits = w;
  ten_ctl_req_on_cancel(req, on_cancel, w);
}

static bool wants_wait(const ten_json_t *args) {
  bool wait = true;
  ten_json_get_bool(args, "wait", &wait);
  return wait;
}

/* ------------------------------------------------------------ commands */

static void cmd_ps(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_hv_to_json(cmds->hv, &w);
  ten_ctl_reply_ok(req, out.data, out.len);
  ten_buf_free(&out);
}

static void cmd_spawn(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  const char *service = ten_json_get_str(args, "service");
  const char *id = ten_json_get_str(args, "id");
  if (!service || !id) {
    ten_ctl_reply_error(req, "spawn needs \"service\" and \"id\"");
    return;
  }
  ten_err_t err;
  if (ten_hv_spawn(cmds->hv, service, id, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
    return;
  }
  ten_instance_t *inst = ten_hv_find(cmds->hv, service, strlen(service), id, strlen(id));
  if (!wants_wait(args) || inst->state == TEN_INST_READY)
    reply_instance(req, inst, 0);
  else
    wait_for(cmds, req, inst, GOAL_READY, false);
}

static const char *instance_key(ten_ctl_req_t *req, const ten_json_t *args, const char *cmd) {
  const char *key = ten_json_get_str(args, "instance");
  if (!key) ten_ctl_reply_error(req, "%s needs \"instance\": \"service:id\"", cmd);
  return key;
}

static void cmd_stop(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  const char *key = instance_key(req, args, "stop");
  if (!key) return;
  ten_err_t err;
  if (ten_hv_stop(cmds->hv, key, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
    return;
  }
  ten_instance_t *inst = ten_hv_find_key(cmds->hv, key);
  if (!wants_wait(args) || inst->state == TEN_INST_STOPPED)
    reply_instance(req, inst, 0);
  else
    wait_for(cmds, req, inst, GOAL_STOPPED, false);
}

static void cmd_restart(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  const char *key = instance_key(req, args, "restart");
  if (!key) return;
  ten_instance_t *inst = ten_hv_find_key(cmds->hv, key);
  bool was_running = inst && (inst->state == TEN_INST_READY || inst->state == TEN_INST_STARTING ||
                              inst->state == TEN_INST_DRAINING);
  ten_err_t err;
  if (ten_hv_restart(cmds->hv, key, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
    return;
  }
  if (!wants_wait(args))
    reply_instance(req, inst, 0);
  else
    wait_for(cmds, req, inst, GOAL_READY, was_running);
}

static void cmd_config(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  ten_buf_t out = TEN_BUF_INIT;
  ten_config_to_json(cmds->hv->config, &out);
  ten_ctl_reply_ok(req, out.data, out.len);
  ten_buf_free(&out);
}

static void cmd_weight(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_commands_t *cmds = ctx;
  const char *key = instance_key(req, args, "weight");
  if (!key) return;
  double weight;
  if (!ten_json_get_num(args, "weight", &weight) || weight != (double)(int)weight) {
    ten_ctl_reply_error(req, "weight needs \"weight\": an integer from 0 to 100");
    return;
  }
  ten_err_t err;
  if (ten_hv_set_weight(cmds->hv, key, (int)weight, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
    return;
  }
  reply_instance(req, ten_hv_find_key(cmds->hv, key), 0);
}

static void cmd_ping(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_ctl_reply_ok(req, "\"pong\"", 6);
}

ten_ctl_commands_t *ten_ctl_commands_new(ten_ctl_t *ctl, ten_hv_t *hv) {
  ten_ctl_commands_t *cmds = ten_xcalloc(1, sizeof *cmds);
  cmds->ctl = ctl;
  cmds->hv = hv;
  ten_hv_observe(hv, on_change, cmds);
  ten_ctl_register(ctl, "ping", cmd_ping, cmds);
  ten_ctl_register(ctl, "ps", cmd_ps, cmds);
  ten_ctl_register(ctl, "spawn", cmd_spawn, cmds);
  ten_ctl_register(ctl, "stop", cmd_stop, cmds);
  ten_ctl_register(ctl, "restart", cmd_restart, cmds);
  ten_ctl_register(ctl, "config", cmd_config, cmds);
  ten_ctl_register(ctl, "weight", cmd_weight, cmds);
  return cmds;
}

void ten_ctl_commands_cancel(ten_ctl_commands_t *cmds) {
  while (cmds->waits) {
    wait_t *w = cmds->waits;
    cmds->waits = w->next;
    ten_ctl_req_on_cancel(w->req, NULL, NULL);
    ten_ctl_reply_error(w->req, "the server is shutting down");
    free(w);
  }
}

void ten_ctl_commands_free(ten_ctl_commands_t *cmds) {
  if (!cmds) return;
  ten_ctl_commands_cancel(cmds);
  free(cmds);
}
