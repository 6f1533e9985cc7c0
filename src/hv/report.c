/* report.c: what the hypervisor tells about its instances: JSON for
 * `ten ps` and the API, counts per state, and the facts Lua hooks see. */
#include "hv/internal.h"
#include "util/json.h"
#include "util/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static double rss_mb(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  int n = fscanf(f, "%ld %ld", &pages, &resident);
  fclose(f);
  return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0) : 0;
}

void ten__hv_facts(const ten_instance_t *inst, ten_hook_instance_t *out) {
  uint64_t now = ten_now_ms();
  out->service = inst->service;
  out->id = inst->id;
  out->state = ten_instance_state_name(inst->state);
  out->idle_seconds = inst->active ? 0 : (double)(now - inst->last_active_ms) / 1000.0;
  out->uptime = inst->pid ? (double)(now - inst->started_ms) / 1000.0 : 0;
  out->requests = inst->requests;
  out->memory_mb = inst->pid ? rss_mb(inst->pid) : 0;
  out->weight = inst->weight;
}

void ten_instance_to_json(const ten_instance_t *inst, ten_jw_t *w) {
  uint64_t now = ten_now_ms();
  ten_jw_obj(w);
  ten_jw_kstr(w, "service", inst->service);
  ten_jw_kstr(w, "id", inst->id);
  ten_jw_kstr(w, "state", ten_instance_state_name(inst->state));
  ten_jw_key(w, "pid");
  if (inst->pid)
    ten_jw_int(w, inst->pid);
  else
    ten_jw_null(w);
  ten_jw_kstr(w, "socket", inst->socket_path);
  ten_jw_key(w, "port");
  if (inst->port)
    ten_jw_int(w, inst->port);
  else
    ten_jw_null(w);
  ten_jw_key(w, "uptime");
  if (inst->pid)
    ten_jw_num(w, (double)(now - inst->started_ms) / 1000.0);
  else
    ten_jw_null(w);
  static const char *const health_names[] = {"unknown", "ok", "failing"};
  ten_jw_kint(w, "restarts", inst->restarts);
  ten_jw_kint(w, "crashes", inst->crashes);
  ten_jw_kstr(w, "health", inst->conf->health ? health_names[inst->health] : NULL);
  ten_jw_kint(w, "weight", inst->weight);
  ten_jw_kint(w, "active", inst->active);
  ten_jw_kint(w, "requests", (int64_t)inst->requests);
  ten_jw_key(w, "idle_seconds");
  if (inst->active || !inst->last_active_ms)
    ten_jw_num(w, 0);
  else
    ten_jw_num(w, (double)(now - inst->last_active_ms) / 1000.0);
  ten_jw_kbool(w, "held", inst->held);
  ten_jw_kbool(w, "idle_stopped", inst->idle_stopped);
  ten_jw_kbool(w, "on_demand", inst->on_demand);
  ten_jw_kstr(w, "last_exit", inst->last_exit[0] ? inst->last_exit : NULL);
  ten_jw_kstr(w, "reason", inst->reason[0] ? inst->reason : NULL);
  ten_jw_kstr(w, "hook_error", inst->hook_error[0] ? inst->hook_error : NULL);
  ten_jw_key(w, "hook_errors");
  ten_jw_obj(w);
  if (inst->weight_hook_error[0]) ten_jw_kstr(w, "weight", inst->weight_hook_error);
  if (inst->idle_hook_error[0]) ten_jw_kstr(w, "idle", inst->idle_hook_error);
  ten_jw_obj_end(w);
  ten_jw_obj_end(w);
}

static int cmp_instances(const void *a, const void *b) {
  return strcmp((*(ten_instance_t *const *)a)->key, (*(ten_instance_t *const *)b)->key);
}

ten_instance_t **ten__hv_sorted_instances(ten_hv_t *hv, size_t *count) {
  ten_instance_t **list = ten_xcalloc(hv->instances.count + 1, sizeof *list);
  size_t n = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) list[n++] = e->value;
  qsort(list, n, sizeof *list, cmp_instances);
  *count = n;
  return list;
}

void ten_hv_to_json(ten_hv_t *hv, ten_jw_t *w) {
  size_t n;
  ten_instance_t **list = ten__hv_sorted_instances(hv, &n);
  ten_jw_arr(w);
  for (size_t i = 0; i < n; i++) ten_instance_to_json(list[i], w);
  ten_jw_arr_end(w);
  free(list);
}

void ten_hv_count(ten_hv_t *hv, unsigned counts[TEN_INST_STATE_COUNT]) {
  memset(counts, 0, sizeof(unsigned) * TEN_INST_STATE_COUNT);
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);)
    counts[((ten_instance_t *)e->value)->state]++;
}
