/* pool.c: weights and the weighted pool of each service.
 *
 * {service}.{domain} picks among the service's instances by smooth weighted
 * round robin (nginx's algorithm: every pick adds each candidate's weight to
 * its current value, takes the largest, and subtracts the total from it), so
 * a 90/10 pool interleaves evenly instead of sending bursts. Candidates are
 * instances with weight > 0 that are ready or may be woken. An instance's
 * weight is the one set with `ten weight` (persisted), else the service's
 * weight hook, else the service's weight. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "hv/internal.h"
#include "obs/db.h"
#include "util/log.h"

#define WEIGHT_KEY_PREFIX "weight:"

ten__hv_service_t *ten__hv_service(ten_hv_t *hv, const char *name, size_t len) {
  ten__hv_service_t *svc = ten_map_get(&hv->_services, name, len);
  if (svc) return svc;
  svc = ten_xcalloc(1, sizeof *svc);
  svc->name = ten_xstrndup(name, len);
  ten_map_put(&hv->_services, name, len, svc);
  return svc;
}

void ten__hv_services_free(ten_hv_t *hv) {
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->_services, &it, &e);) {
    ten__hv_service_t *svc = e->value;
    free(svc->members);
    free(svc->name);
    free(svc);
  }
  ten_map_free(&hv->_services);
  ten__hv_regex_cache_free();
}

void ten__hv_pool_add(ten_instance_t *inst) {
  ten__hv_service_t *svc = ten__hv_service(inst->hv, inst->service, strlen(inst->service));
  if (svc->count == svc->cap) {
    svc->cap = svc->cap ? svc->cap * 2 : 8;
    svc->members = ten_xrealloc(svc->members, svc->cap * sizeof *svc->members);
  }
  svc->members[svc->count++] = inst;
  ten__hv_update_weight(inst);
}

void ten__hv_pool_remove(ten_instance_t *inst) {
  ten__hv_service_t *svc = ten_map_get(&inst->hv->_services, inst->service, strlen(inst->service));
  if (!svc) return;
  for (size_t i = 0; i < svc->count; i++) {
    if (svc->members[i] != inst) continue;
    memmove(&svc->members[i], &svc->members[i + 1], (svc->count - i - 1) * sizeof *svc->members);
    svc->count--;
    return;
  }
}

void ten__hv_update_weight(ten_instance_t *inst) {
  const ten_service_conf_t *conf = inst->conf;
  int weight = conf->weight;
  if (inst->weight_override >= 0) {
    weight = inst->weight_override;
  } else if (conf->weight_ref != LUA_NOREF) {
    ten_hook_instance_t facts;
    ten__hv_facts(inst, &facts);
    facts.weight = conf->weight;
    int hooked;
    ten_err_t err;
    if (ten_hook_weight(inst->config, conf->weight_ref, &facts, &hooked, &err) == 0)
      weight = hooked;
    else
      ten__hv_hook_error(inst, "weight", err.msg);
  }
  inst->weight = weight;
}

static bool candidate(const ten_instance_t *inst) {
  if (inst->weight <= 0 || inst->_removing) return false;
  switch (inst->state) {
  case TEN_INST_READY:
  case TEN_INST_STARTING: return true;
  case TEN_INST_STOPPED: return !inst->held; /* woken by the request */
  default: return false;
  }
}

ten_instance_t *ten_hv_pick(ten_hv_t *hv, const char *service, size_t service_len) {
  ten__hv_service_t *svc = ten_map_get(&hv->_services, service, service_len);
  if (!svc) return NULL;
  ten_instance_t *best = NULL;
  int total = 0;
  for (size_t i = 0; i < svc->count; i++) {
    ten_instance_t *inst = svc->members[i];
    if (!candidate(inst)) continue;
    inst->_swrr_current += inst->weight;
    total += inst->weight;
    if (!best || inst->_swrr_current > best->_swrr_current) best = inst;
  }
  if (best) best->_swrr_current -= total;
  return best;
}

int ten_hv_set_weight(ten_hv_t *hv, const char *key, int weight, ten_err_t *err) {
  ten_instance_t *inst = ten_hv_find_key(hv, key);
  if (!inst) return ten_errf(err, UV_ENOENT, "unknown instance '%s'", key);
  if (weight < 0 || weight > 100)
    return ten_errf(err, UV_EINVAL, "weight must be from 0 to 100, got %d", weight);
  inst->weight_override = weight;
  ten__hv_update_weight(inst);
  inst->_swrr_current = 0;
  char db_key[256], value[16];
  snprintf(db_key, sizeof db_key, WEIGHT_KEY_PREFIX "%s", key);
  snprintf(value, sizeof value, "%d", weight);
  ten_db_config_set(hv->db, db_key, value);
  ten_log(TEN_LOG_INFO, "hv: %s weight set to %d", key, weight);
  return 0;
}

/* Persisted weights name instances that may not exist yet (spawned on
 * demand, or not started): they are created, stopped, so the weight is
 * there when traffic comes. Unknown services are skipped. */
static void restore_weight(void *ctx, const char *key, const char *value) {
  ten_hv_t *hv = ctx;
  const char *inst_key = key + strlen(WEIGHT_KEY_PREFIX);
  const char *colon = strchr(inst_key, ':');
  int weight = atoi(value);
  if (!colon || weight < 0 || weight > 100) return;
  ten_instance_t *inst = ten_hv_find_key(hv, inst_key);
  if (!inst) {
    const ten_service_conf_t *conf =
        ten_config_service(hv->config, inst_key, (size_t)(colon - inst_key));
    if (!conf) return;
    inst = ten__hv_instance_new(hv, conf, colon + 1);
  }
  inst->weight_override = weight;
  ten__hv_update_weight(inst);
}

void ten_hv_set_db(ten_hv_t *hv, struct ten_db *db) {
  hv->db = db;
  if (!db) return;
  ten_err_t err;
  if (ten_db_config_scan(db, WEIGHT_KEY_PREFIX, restore_weight, hv, &err))
    ten_log(TEN_LOG_ERROR, "hv: cannot read persisted weights: %s", err.msg);
}

/* ------------------------------------------------------------ metrics */

void ten_hv_metrics(ten_hv_t *hv, ten_buf_t *out) {
  ten_map_entry_t *e;
  ten_metric_family(out, "tenement_instance_up", "gauge", "1 while the instance is ready.");
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) {
    ten_instance_t *i = e->value;
    ten_label_t l[] = {{"service", i->service}, {"instance", i->id}};
    ten_metric_sample(out, "tenement_instance_up", l, 2, i->state == TEN_INST_READY ? 1 : 0);
  }
  ten_metric_family(out, "tenement_instance_restarts_total", "counter",
                    "Times the instance was started again after its first start.");
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) {
    ten_instance_t *i = e->value;
    ten_label_t l[] = {{"service", i->service}, {"instance", i->id}};
    ten_metric_sample(out, "tenement_instance_restarts_total", l, 2, i->restarts);
  }
  ten_metric_family(out, "tenement_instance_cold_starts_total", "counter",
                    "Starts caused by a request for a sleeping instance.");
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) {
    ten_instance_t *i = e->value;
    ten_label_t l[] = {{"service", i->service}, {"instance", i->id}};
    ten_metric_sample(out, "tenement_instance_cold_starts_total", l, 2, (double)i->cold_starts);
  }
  ten_metric_family(out, "tenement_instance_wake_duration_seconds", "histogram",
                    "Time from a request finding an instance asleep to the instance being ready.");
  for (size_t it = 0; ten_map_next(&hv->_services, &it, &e);) {
    ten__hv_service_t *svc = e->value;
    if (!svc->wake.count || !ten_config_service(hv->config, svc->name, strlen(svc->name))) continue;
    ten_label_t l[] = {{"service", svc->name}};
    ten_metric_histogram(out, "tenement_instance_wake_duration_seconds", l, 1, &svc->wake);
  }
  unsigned counts[TEN_INST_STATE_COUNT];
  ten_hv_count(hv, counts);
  ten_metric_family(out, "tenement_instances", "gauge", "Instances by state.");
  for (int s = 0; s < TEN_INST_STATE_COUNT; s++) {
    ten_label_t l[] = {{"state", ten_instance_state_name((ten_instance_state_t)s)}};
    ten_metric_sample(out, "tenement_instances", l, 1, counts[s]);
  }
  ten_metric_family(out, "tenement_instance_transitions_total", "counter",
                    "State changes of all instances, by the state entered.");
  for (int s = 0; s < TEN_INST_STATE_COUNT; s++) {
    ten_label_t l[] = {{"state", ten_instance_state_name((ten_instance_state_t)s)}};
    ten_metric_sample(out, "tenement_instance_transitions_total", l, 1, (double)hv->transitions[s]);
  }
}
