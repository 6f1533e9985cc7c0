/* scale.c: scale to zero. Requests wait for a sleeping instance (one start
 * serves them all), the idle reaper stops instances nobody uses, and
 * services with spawn_on_demand get an instance per new id, guarded by an
 * id pattern, a cap, a rate limit and the admit hook. */
#include <regex.h>
#include <stdlib.h>
#include <string.h>

#include "hv/internal.h"
#include "util/log.h"
#include "util/time.h"

/* ------------------------------------------------------------ waiters */

static void unlink_waiter(ten_hv_waiter_t *w) {
  ten_instance_t *inst = w->inst;
  if (!inst) return;
  if (w->prev) w->prev->next = w->next;
  else inst->_waiters = w->next;
  if (w->next) w->next->prev = w->prev;
  w->next = w->prev = NULL;
  w->inst = NULL;
  inst->_waiter_count--;
}

/* Releases every waiter with `status`. A callback may queue new waiters
 * (a request retried elsewhere): only the ones present now are released. */
static void release_waiters(ten_instance_t *inst, int status) {
  ten_hv_waiter_t *list = inst->_waiters;
  inst->_waiters = NULL;
  unsigned n = inst->_waiter_count;
  inst->_waiter_count = 0;
  while (list && n--) {
    ten_hv_waiter_t *w = list;
    list = w->next;
    if (list) list->prev = NULL;
    w->next = w->prev = NULL;
    w->inst = NULL;
    w->cb(w, status);
  }
}

void ten__hv_fail_waiters(ten_instance_t *inst, int status) { release_waiters(inst, status); }

void ten_hv_unwait(ten_hv_waiter_t *w) { unlink_waiter(w); }

int ten_hv_wake(ten_instance_t *inst, ten_hv_waiter_t *w) {
  ten_hv_t *hv = inst->hv;
  if (hv->shutting_down) return UV_ECANCELED;
  if (inst->_removing) return UV_EPERM; /* its service left the config */
  switch (inst->state) {
  case TEN_INST_READY: return 1;
  case TEN_INST_FAILED: return UV_EPERM;
  case TEN_INST_STOPPED:
  case TEN_INST_DRAINING:
    if (inst->held) return UV_EPERM;
    break;
  case TEN_INST_STARTING:
  case TEN_INST_BACKOFF:
  case TEN_INST_STATE_COUNT: break;
  }
  if (inst->_waiter_count >= (unsigned)inst->conf->wake_queue) return UV_EAGAIN;
  if (inst->state == TEN_INST_STOPPED || inst->state == TEN_INST_DRAINING) {
    ten_log(TEN_LOG_INFO, "hv: %s: waking for a request", inst->key);
    inst->idle_stopped = false;
    inst->cold_starts++;
    inst->_wake_started_ns = ten_now_ns();
    ten__hv_start(inst); /* from draining: starts again once stopped */
    if (inst->state == TEN_INST_READY) return 1; /* socket activation without health */
    if (inst->state == TEN_INST_FAILED) return UV_EPERM;
  }
  w->inst = inst;
  w->prev = NULL;
  w->next = inst->_waiters;
  if (inst->_waiters) inst->_waiters->prev = w;
  inst->_waiters = w;
  inst->_waiter_count++;
  return 0;
}

void ten__hv_scale_transition(ten_instance_t *inst, ten_instance_state_t from,
                              ten_instance_state_t to) {
  switch (to) {
  case TEN_INST_READY:
    if (inst->_wake_started_ns) {
      ten__hv_service_t *svc = ten__hv_service(inst->hv, inst->service, strlen(inst->service));
      ten_histogram_observe(&svc->wake, (double)(ten_now_ns() - inst->_wake_started_ns) / 1e9);
      inst->_wake_started_ns = 0;
    }
    release_waiters(inst, 0);
    break;
  case TEN_INST_FAILED: release_waiters(inst, UV_EPERM); break;
  case TEN_INST_STOPPED:
    /* A stop that is not followed by a start: nobody will serve them. */
    if (!inst->_restart_after_stop) release_waiters(inst, UV_ECONNREFUSED);
    break;
  default: break; /* starting, backoff, draining towards a restart: keep waiting */
  }
  (void)from;
  ten__hv_update_weight(inst);
}

/* ------------------------------------------------------------ the idle reaper */

static bool idle_now(ten_instance_t *inst, double *idle_seconds) {
  const ten_service_conf_t *conf = inst->conf;
  ten_hook_instance_t facts;
  ten__hv_facts(inst, &facts);
  *idle_seconds = facts.idle_seconds;
  bool default_rule = conf->idle_timeout > 0 && facts.idle_seconds >= conf->idle_timeout;
  if (conf->idle_ref == LUA_NOREF) return default_rule;
  bool idle = false;
  ten_err_t err;
  int rc = ten_hook_idle(inst->config, conf->idle_ref, &facts, &idle, &err);
  if (rc) {
    ten__hv_hook_error(inst, "idle", err.msg);
    return default_rule;
  }
  return idle;
}

static void on_reaper(uv_timer_t *t) {
  ten_hv_t *hv = t->data;
  if (hv->shutting_down) return;
  ten__proc_sweep(hv);
  uint64_t now = ten_now_ms();
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) {
    ten_instance_t *inst = e->value;
    const ten_service_conf_t *conf = inst->conf;
    /* Anything open on it (a request, a stream, a tunnel) is activity. */
    if (inst->state != TEN_INST_READY || inst->active > 0) continue;
    if (conf->idle_timeout <= 0 && conf->idle_ref == LUA_NOREF) continue;
    if (!inst->last_active_ms) inst->last_active_ms = inst->ready_ms ? inst->ready_ms : now;
    double idle_seconds;
    if (!idle_now(inst, &idle_seconds)) continue;
    ten_log(TEN_LOG_INFO, "hv: %s idle for %.0f s: stopping it (the next request wakes it)",
            inst->key, idle_seconds);
    inst->idle_stopped = true;
    inst->held = false;
    ten__hv_stop(inst);
  }
}

void ten__hv_reaper_start(ten_hv_t *hv) {
  uv_timer_init(hv->loop, &hv->_reaper);
  hv->_reaper.data = hv;
  hv->_reaper_open = true;
  uv_timer_start(&hv->_reaper, on_reaper, 1000, 1000);
  uv_unref((uv_handle_t *)&hv->_reaper); /* it alone must not keep the loop alive */
}

/* ------------------------------------------------------------ on demand */

typedef struct id_regex {
  char *pattern;
  regex_t re;
} id_regex_t;

static _Thread_local ten_map_t compiled; /* pattern -> id_regex_t, loop thread */

static bool id_matches(const char *pattern, const char *id) {
  id_regex_t *r = ten_map_get(&compiled, pattern, strlen(pattern));
  if (!r) {
    r = ten_xcalloc(1, sizeof *r);
    if (regcomp(&r->re, pattern, REG_EXTENDED | REG_NOSUB) != 0) {
      free(r);
      return false; /* the schema checked it compiles: cannot happen */
    }
    r->pattern = ten_xstrdup(pattern);
    ten_map_put(&compiled, pattern, strlen(pattern), r);
  }
  return regexec(&r->re, id, 0, NULL, 0) == 0;
}

void ten__hv_regex_cache_free(void) {
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&compiled, &it, &e);) {
    id_regex_t *r = e->value;
    regfree(&r->re);
    free(r->pattern);
    free(r);
  }
  ten_map_free(&compiled);
}

int ten_hv_demand(ten_hv_t *hv, const char *service, size_t service_len, const char *id,
                  size_t id_len, const ten_hook_request_t *req, ten_instance_t **out,
                  ten_err_t *err) {
  *out = NULL;
  if (hv->shutting_down) return ten_errf(err, UV_ECANCELED, "shutting down");
  const ten_service_conf_t *conf = ten_config_service(hv->config, service, service_len);
  if (!conf || !conf->spawn_on_demand) return ten_errf(err, UV_ENOENT, "no such instance");
  char idbuf[64];
  if (id_len == 0 || id_len >= sizeof idbuf)
    return ten_errf(err, UV_ENOENT, "id does not match id_pattern");
  memcpy(idbuf, id, id_len);
  idbuf[id_len] = '\0';
  if (!id_matches(conf->id_pattern, idbuf))
    return ten_errf(err, UV_ENOENT, "id '%s' does not match id_pattern", idbuf);

  ten__hv_service_t *svc = ten__hv_service(hv, service, service_len);
  if (svc->count >= (size_t)conf->max_instances)
    return ten_errf(err, UV_ENOENT, "service %s has max_instances (%d)", conf->name,
                    conf->max_instances);
  /* Token bucket: spawn_rate creations a minute, at most a minute's worth
   * saved up. */
  uint64_t now = ten_now_ms();
  double rate = conf->spawn_rate;
  if (!svc->refill_ms) svc->tokens = rate;
  svc->tokens += (double)(now - svc->refill_ms) * rate / 60000.0;
  if (svc->tokens > rate) svc->tokens = rate;
  svc->refill_ms = now;
  if (svc->tokens < 1.0)
    return ten_errf(err, UV_ENOENT, "service %s is over its spawn_rate (%d a minute)", conf->name,
                    conf->spawn_rate);
  if (conf->admit_ref != LUA_NOREF) {
    bool admit = false;
    ten_err_t why;
    int rc = ten_hook_admit(hv->config, conf->admit_ref, idbuf, req, &admit, &why);
    if (rc) {
      return ten_errf(err, UV_ENOENT, "admit hook failed: %s", why.msg);
    }
    if (!admit) return ten_errf(err, UV_ENOENT, "refused by the admit hook");
  }
  svc->tokens -= 1.0;
  ten_instance_t *inst = ten__hv_instance_new(hv, conf, idbuf);
  inst->on_demand = true;
  ten_log(TEN_LOG_INFO, "hv: %s created on demand", inst->key);
  *out = inst;
  return 0;
}
