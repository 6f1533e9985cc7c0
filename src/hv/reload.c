/* reload.c: applying a new config snapshot to running instances as a diff.
 *
 * Unchanged instances just move to the new snapshot (their process is not
 * touched). A service whose restart-relevant options changed (command, env,
 * socket, ...: TEN_OPT_RESTARTS in the schema) has its running instances
 * restarted one at a time: the next goes only when the previous is ready
 * again, and requests for the one restarting wait for it. A removed
 * service's instances drain and are then forgotten. */
#include <stdlib.h>
#include <string.h>

#include "hv/internal.h"
#include "policy/schema.h"
#include "util/log.h"

/* The rolling restart queue lives with the hypervisor. */
typedef struct rolling {
  ten_instance_t **queue;
  size_t count, cap;
  ten_instance_t *current;
} rolling_t;

static _Thread_local rolling_t rolling;

static void roll_next(void) {
  while (!rolling.current && rolling.count > 0) {
    ten_instance_t *inst = rolling.queue[0];
    memmove(rolling.queue, rolling.queue + 1, (rolling.count - 1) * sizeof *rolling.queue);
    rolling.count--;
    if (!ten__hv_running(inst) || inst->_removing) continue;
    rolling.current = inst;
    ten__hv_restart(inst, "restarting for the new config");
  }
}

/* Called on every transition (by hv.c's transition()). */
void ten__hv_reload_transition(ten_instance_t *inst, ten_instance_state_t to) {
  if (inst == rolling.current &&
      (to == TEN_INST_READY || to == TEN_INST_FAILED || to == TEN_INST_BACKOFF ||
       (to == TEN_INST_STOPPED && !inst->_restart_after_stop))) {
    rolling.current = NULL;
    roll_next();
  }
}

/* An instance is going away: take it out of the rolling queue. */
void ten__hv_reload_forget(ten_instance_t *inst) {
  if (rolling.current == inst) rolling.current = NULL;
  for (size_t i = 0; i < rolling.count;) {
    if (rolling.queue[i] == inst) {
      memmove(&rolling.queue[i], &rolling.queue[i + 1], (rolling.count - i - 1) * sizeof *rolling.queue);
      rolling.count--;
    } else {
      i++;
    }
  }
  if (rolling.count == 0 && !rolling.current) {
    free(rolling.queue);
    rolling.queue = NULL;
    rolling.cap = 0;
  }
}

static bool declared(const ten_config_t *config, const ten_instance_t *inst) {
  for (size_t i = 0; i < config->instance_count; i++)
    if (!strcmp(config->instances[i].service, inst->service) &&
        !strcmp(config->instances[i].id, inst->id))
      return true;
  return false;
}

static void queue_restart(ten_instance_t *inst) {
  for (size_t i = 0; i < rolling.count; i++)
    if (rolling.queue[i] == inst) return;
  if (rolling.count == rolling.cap) {
    rolling.cap = rolling.cap ? rolling.cap * 2 : 8;
    rolling.queue = ten_xrealloc(rolling.queue, rolling.cap * sizeof *rolling.queue);
  }
  rolling.queue[rolling.count++] = inst;
}

/* Names of the options that differ, for the summary; true if any of them
 * needs a restart. */
static bool describe_changes(const ten_option_t *opts, const void *a, const void *b,
                             ten_buf_t *names, bool *startup_only) {
  bool restart = false;
  for (const ten_option_t *o = opts; o->name; o++) {
    if (!ten_schema_differs(o, a, b)) continue;
    ten_buf_printf(names, "%s%s", names->len ? ", " : "", o->name);
    if (o->flags & TEN_OPT_RESTARTS) restart = true;
    if ((o->flags & TEN_OPT_STARTUP) && startup_only) *startup_only = true;
  }
  return restart;
}

void ten_hv_apply_config(ten_hv_t *hv, ten_config_t *config, ten_buf_t *summary) {
  ten_config_t *old = hv->config;
  hv->config = ten_config_ref(config);
  size_t lines_before = summary->len;

  /* settings */
  ten_buf_t names = TEN_BUF_INIT;
  bool startup = false;
  describe_changes(ten_settings_options, &old->settings, &config->settings, &names, &startup);
  if (names.len)
    ten_buf_printf(summary, "settings changed: %s%s\n", names.data,
                   startup ? " (listen, port and data_dir take effect when ten restarts)" : "");
  ten_buf_reset(&names);

  /* services added, removed, changed */
  for (size_t i = 0; i < config->service_count; i++)
    if (!ten_config_service(old, config->services[i].name, strlen(config->services[i].name)))
      ten_buf_printf(summary, "service %s added\n", config->services[i].name);
  bool *restart_service = ten_xcalloc(config->service_count + 1, sizeof *restart_service);
  for (size_t i = 0; i < old->service_count; i++) {
    const ten_service_conf_t *was = &old->services[i];
    const ten_service_conf_t *now = ten_config_service(config, was->name, strlen(was->name));
    if (!now) {
      ten_buf_printf(summary, "service %s removed: its instances drain and stop\n", was->name);
      continue;
    }
    ten_buf_reset(&names);
    bool restart = describe_changes(ten_service_options, was, now, &names, NULL);
    if (!names.len) continue;
    restart_service[now - config->services] = restart;
    ten_buf_printf(summary, "service %s: %s changed%s\n", now->name, names.data,
                   restart ? ": running instances restart one at a time" : " (applied live)");
  }
  ten_buf_free(&names);

  /* instances: move to the new snapshot, restart, or let go */
  ten_map_entry_t *e;
  size_t n = 0;
  ten_instance_t **list = ten_xcalloc(hv->instances.count + 1, sizeof *list);
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) list[n++] = e->value;
  for (size_t i = 0; i < n; i++) {
    ten_instance_t *inst = list[i];
    const ten_service_conf_t *conf = ten_config_service(config, inst->service, strlen(inst->service));
    if (!conf) {
      ten__hv_reload_forget(inst);
      ten__hv_instance_remove(inst);
      continue;
    }
    ten_config_t *was = inst->config;
    inst->config = ten_config_ref(config);
    inst->conf = conf;
    ten_config_unref(was);
    if (inst->_removing) {
      /* Its service came back while it was stopping: it stays, and runs
       * again (once stopped) if the config declares it. */
      inst->_removing = false;
      if (declared(config, inst)) {
        inst->held = false;
        ten__hv_start(inst);
        ten_buf_printf(summary, "%s stays: it starts again once stopped\n", inst->key);
      }
    }
    ten__hv_update_weight(inst);
    if (restart_service[conf - config->services] && ten__hv_running(inst)) queue_restart(inst);
  }
  free(list);
  free(restart_service);

  /* declared instances that are new */
  for (size_t i = 0; i < config->instance_count; i++) {
    const ten_instance_decl_t *d = &config->instances[i];
    if (ten_hv_find(hv, d->service, strlen(d->service), d->id, strlen(d->id))) continue;
    ten_err_t err;
    if (ten_hv_spawn(hv, d->service, d->id, &err))
      ten_buf_printf(summary, "cannot start %s:%s: %s\n", d->service, d->id, err.msg);
    else
      ten_buf_printf(summary, "started %s:%s\n", d->service, d->id);
  }

  if (summary->len == lines_before) ten_buf_puts(summary, "no changes\n");
  ten_config_unref(old);
  roll_next();
}
