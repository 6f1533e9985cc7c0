/* upstream_pool.c: per instance, the idle upstream connections kept for
 * reuse (most recently used first; closed when the instance leaves ready)
 * and the request metrics (by status code, durations), whose series go
 * when the instance goes. Pools live in a per-thread list.
 */
#include "http/upstream.h"

#include "util/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Pools live in a list owned by the server; the head is kept here per
 * thread (each loop thread will own its server). */
static _Thread_local pool_t *all_pools;

/* ------------------------------------------------------------ pools */

void ten__pool_maybe_free(pool_t *p) {
  if (p->inst || p->upstreams > 0) return;
  if (p->prev)
    p->prev->next = p->next;
  else
    all_pools = p->next;
  if (p->next) p->next->prev = p->prev;
  free(p);
}

pool_t *ten__pool_of(ten_http_server_t *s, ten_instance_t *inst) {
  pool_t *p = inst->upstream_pool;
  if (p) return p;
  p = ten_xcalloc(1, sizeof *p);
  p->server = s;
  p->inst = inst;
  p->next = all_pools;
  if (all_pools) all_pools->prev = p;
  all_pools = p;
  inst->upstream_pool = p;
  return p;
}

/* One finished request of the instance: counted by status, timed. */
void ten__pool_record(pool_t *p, ten__conn_t *c, int status) {
  if (!p || c->recorded) return;
  c->recorded = true;
  unsigned i = 0;
  while (i < p->ncodes && p->codes[i].code != status) i++;
  if (i < p->ncodes) {
    p->codes[i].count++;
  } else if (p->ncodes < METRIC_CODES) {
    p->codes[p->ncodes].code = status;
    p->codes[p->ncodes].count = 1;
    p->ncodes++;
  } else {
    p->other_codes++;
  }
  ten_histogram_observe(&p->duration, (double)(ten_now_ns() - c->start_ns) / 1e9);
}

void ten__pool_record_inst(ten__conn_t *c, ten_instance_t *inst, int status) {
  ten__pool_record(ten__pool_of(c->server, inst), c, status);
}

void ten__pool_remove_idle(ten__upstream_t *up) {
  pool_t *p = up->pool;
  if (!up->in_pool) return;
  if (up->prev_idle)
    up->prev_idle->next_idle = up->next_idle;
  else
    p->idle = up->next_idle;
  if (up->next_idle) up->next_idle->prev_idle = up->prev_idle;
  up->next_idle = up->prev_idle = NULL;
  up->in_pool = false;
  p->idle_count--;
}

void ten__pool_put_idle(ten__upstream_t *up) {
  pool_t *p = up->pool;
  up->in_pool = true;
  up->next_idle = p->idle;
  up->prev_idle = NULL;
  if (p->idle) p->idle->prev_idle = up;
  p->idle = up;
  p->idle_count++;
}

static void pool_close_idle(pool_t *p) {
  while (p->idle) {
    ten__upstream_t *up = p->idle;
    ten__pool_remove_idle(up);
    ten__up_close(up);
  }
}

/* The instance left `ready` (its process is going) or is being freed. */
static void on_instance_change(void *ctx, ten_instance_t *inst, ten_instance_state_t from,
                               ten_instance_state_t to) {
  pool_t *p = inst->upstream_pool;
  if (!p) return;
  if (to != TEN_INST_READY) pool_close_idle(p);
  if (to == TEN_INST_STATE_COUNT) {
    inst->upstream_pool = NULL;
    p->inst = NULL;
    ten__pool_maybe_free(p);
  }
}


void ten__proxy_init(ten_http_server_t *s) {
  ten__response_settings(); /* built once */
  ten_hv_observe(s->hv, on_instance_change, s);
}

void ten__proxy_shutdown(ten_http_server_t *s) {
  for (pool_t *p = all_pools; p; p = p->next)
    if (p->server == s) pool_close_idle(p);
}


/* ------------------------------------------------------------ metrics */

static const char *const upstream_error_names[TEN_UPSTREAM_ERROR_KINDS] = {
    "connect", "timeout", "closed", "invalid", "not_running", "wake_timeout", "queue_full"};

void ten_http_metrics(ten_http_server_t *s, ten_buf_t *out) {
  ten_metric_family(out, "tenement_requests_total", "counter",
                    "Requests routed to an instance, by final status code.");
  for (pool_t *p = all_pools; p; p = p->next) {
    if (p->server != s || !p->inst) continue;
    for (unsigned i = 0; i < p->ncodes; i++) {
      char code[8];
      snprintf(code, sizeof code, "%d", p->codes[i].code);
      ten_label_t l[] = {{"service", p->inst->service}, {"instance", p->inst->id}, {"code", code}};
      ten_metric_sample(out, "tenement_requests_total", l, 3, (double)p->codes[i].count);
    }
    if (p->other_codes) {
      ten_label_t l[] = {{"service", p->inst->service}, {"instance", p->inst->id}, {"code", "other"}};
      ten_metric_sample(out, "tenement_requests_total", l, 3, (double)p->other_codes);
    }
  }
  ten_metric_family(out, "tenement_request_duration_seconds", "histogram",
                    "Time from a request's head to the end of its answer, per instance.");
  for (pool_t *p = all_pools; p; p = p->next) {
    if (p->server != s || !p->inst || !p->duration.count) continue;
    ten_label_t l[] = {{"service", p->inst->service}, {"instance", p->inst->id}};
    ten_metric_histogram(out, "tenement_request_duration_seconds", l, 2, &p->duration);
  }
  ten_metric_family(out, "tenement_upstream_errors_total", "counter",
                    "Proxied requests that failed before or while the instance answered, by kind.");
  for (int k = 0; k < TEN_UPSTREAM_ERROR_KINDS; k++) {
    ten_label_t l[] = {{"kind", upstream_error_names[k]}};
    ten_metric_sample(out, "tenement_upstream_errors_total", l, 1, (double)s->stats.upstream_errors[k]);
  }
  static const char *const timeout_names[TEN_CLIENT_TIMEOUT_KINDS] = {"head", "body", "send"};
  ten_metric_family(out, "tenement_client_timeouts_total", "counter",
                    "Client connections cut off for being slow, by what they were slow at.");
  for (int k = 0; k < TEN_CLIENT_TIMEOUT_KINDS; k++) {
    ten_label_t l[] = {{"kind", timeout_names[k]}};
    ten_metric_sample(out, "tenement_client_timeouts_total", l, 1,
                      (double)s->stats.client_timeouts[k]);
  }
  ten_metric_single(out, "tenement_connections", "gauge", "Open client connections.",
                    (double)s->stats.connections_open);
  ten_metric_single(out, "tenement_connections_refused_total", "counter",
                    "Client connections refused over max_connections.",
                    (double)s->stats.connections_refused);
  ten_metric_single(out, "tenement_http_requests_total", "counter",
                    "Requests received on every host, the API included.",
                    (double)s->stats.requests_total);
  ten_metric_single(out, "tenement_route_hook_errors_total", "counter",
                    "Requests the route hook failed on (routed by Host instead).",
                    (double)s->stats.route_hook_errors);
}

