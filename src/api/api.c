#include "api/api.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "api/internal.h"
#include "obs/metrics.h"
#include "util/json.h"
#include "util/time.h"

/* ------------------------------------------------------------ calls */

void ten__call_free(ten__call_t *call) {
  if (call->req) ten_http_req_on_close(call->req, NULL, NULL);
  free(call);
}

void ten__call_json(ten__call_t *call, int status, const ten_buf_t *json) {
  if (call->req) {
    ten_http_req_on_close(call->req, NULL, NULL);
    ten_http_respond_json(call->req, status, json);
  }
  free(call);
}

void ten__call_error(ten__call_t *call, int status, const char *message, const char *detail) {
  if (call->req) {
    ten_http_req_on_close(call->req, NULL, NULL);
    ten_http_respond_error(call->req, status, message, detail);
  }
  free(call);
}

bool ten__call_may_see(const ten__call_t *call, const char *instance_id) {
  return call->id.admin || strcmp(call->id.tenant, instance_id) == 0;
}

/* The connection went away while the call was being answered. */
static void on_call_gone(void *ctx) {
  ten__call_t *call = ctx;
  call->req = NULL;
  if (call->check) {
    ten_auth_cancel(call->check);
    call->check = NULL;
    free(call);
    return;
  }
  if (call->on_gone) call->on_gone(call); /* the handler owns the call now */
}

static int from_hex(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

/* Percent-decodes in (also '+' as space); false on a bad escape. */
static bool url_decode(const char *in, size_t len, char *out, size_t out_len) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (o + 1 >= out_len) return false;
    char c = in[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (i + 2 >= len) return false;
      int hi = from_hex(in[i + 1]), lo = from_hex(in[i + 2]);
      if (hi < 0 || lo < 0) return false;
      c = (char)(hi * 16 + lo);
      if (c == '\0') return false;
      i += 2;
    }
    out[o++] = c;
  }
  out[o] = '\0';
  return true;
}

bool ten__query_get(ten_http_request_t *req, const char *name, char *out, size_t out_len) {
  size_t qlen;
  const char *q = ten_http_req_query(req, &qlen);
  size_t nlen = strlen(name);
  const char *p = q, *end = q + qlen;
  while (p < end) {
    const char *amp = memchr(p, '&', (size_t)(end - p));
    const char *stop = amp ? amp : end;
    const char *eq = memchr(p, '=', (size_t)(stop - p));
    const char *key_end = eq ? eq : stop;
    if ((size_t)(key_end - p) == nlen && memcmp(p, name, nlen) == 0) {
      const char *v = eq ? eq + 1 : stop;
      return url_decode(v, (size_t)(stop - v), out, out_len);
    }
    p = stop + 1;
  }
  return false;
}

/* ------------------------------------------------------------ auth */

static void on_authed(void *ctx, ten_auth_outcome_t outcome, const ten_auth_identity_t *id,
                      int retry_after) {
  ten__call_t *call = ctx;
  call->check = NULL;
  if (!call->req) { /* already gone: on_call_gone freed nothing while the check ran */
    free(call);
    return;
  }
  char headers[96];
  static const char missing[] = "{\"error\":\"this route needs Authorization: Bearer <token>\"}\n";
  static const char invalid[] = "{\"error\":\"invalid or revoked token\"}\n";
  static const char throttled[] = "{\"error\":\"too many failed attempts from this address\"}\n";
  switch (outcome) {
  case TEN_AUTH_OK:
    call->id = *id;
    call->handler(call);
    return;
  case TEN_AUTH_MISSING:
  case TEN_AUTH_INVALID:
    ten_http_req_on_close(call->req, NULL, NULL);
    ten_http_respond(call->req, 401, "application/json",
                     outcome == TEN_AUTH_MISSING ? missing : invalid,
                     outcome == TEN_AUTH_MISSING ? sizeof missing - 1 : sizeof invalid - 1,
                     "WWW-Authenticate: Bearer realm=\"tenement\"\r\n");
    free(call);
    return;
  case TEN_AUTH_THROTTLED:
    snprintf(headers, sizeof headers, "Retry-After: %d\r\n", retry_after);
    ten_http_req_on_close(call->req, NULL, NULL);
    ten_http_respond(call->req, 429, "application/json", throttled, sizeof throttled - 1, headers);
    free(call);
    return;
  case TEN_AUTH_LOOPBACK:
    ten__call_error(call, 403, "no API token exists yet, so the API answers only on loopback",
                    "\"hint\":\"create one with: ten token-gen --name NAME\"");
    return;
  }
}

/* Every /api route enters here: authenticate, then run the handler. */
static void guarded(ten_api_t *api, ten_http_request_t *req, ten__call_fn handler) {
  ten__call_t *call = ten_xcalloc(1, sizeof *call);
  call->api = api;
  call->req = req;
  call->handler = handler;
  ten_http_req_on_close(req, on_call_gone, call);
  if (!api->auth) {
    ten_auth_identity_t everyone = {.admin = true};
    on_authed(call, TEN_AUTH_OK, &everyone, 0);
    return;
  }
  size_t len = 0;
  const char *header = ten_http_req_header(req, "authorization", &len);
  /* When the answer is known at once the callback has run (and may have
   * freed the call) by the time this returns NULL. */
  ten_auth_check_t *check =
      ten_auth_check(api->auth, header, len, ten_http_req_client_ip(req), on_authed, call);
  if (check) call->check = check;
}

/* ------------------------------------------------------------ instances */

static void list_instances(ten__call_t *call) {
  ten_hv_t *hv = call->api->hv;
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  if (call->id.admin) {
    ten_hv_to_json(hv, &w);
  } else {
    /* The tenant's own instances, in key order like the full list. */
    ten_buf_t all = TEN_BUF_INIT;
    ten_jw_t aw;
    ten_jw_init(&aw, &all);
    ten_hv_to_json(hv, &aw);
    ten_json_t *doc;
    ten_jw_arr(&w);
    if (ten_json_parse(all.data, all.len, &doc, NULL) == 0) {
      for (size_t i = 0; i < doc->count; i++) {
        const char *id = ten_json_get_str(&doc->items[i], "id");
        const char *svc = ten_json_get_str(&doc->items[i], "service");
        if (!id || !svc || !ten__call_may_see(call, id)) continue;
        ten_instance_t *inst = ten_hv_find(hv, svc, strlen(svc), id, strlen(id));
        if (inst) ten_instance_to_json(inst, &w);
      }
      ten_json_free(doc);
    }
    ten_jw_arr_end(&w);
    ten_buf_free(&all);
  }
  ten_buf_putc(&out, '\n');
  ten__call_json(call, 200, &out);
  ten_buf_free(&out);
}

/* /api/instances/{svc}:{id}[/{action}] -> the instance (or an answer sent). */
static ten_instance_t *instance_of(ten__call_t *call, char *action, size_t action_len) {
  static const char prefix[] = "/api/instances/";
  size_t len;
  const char *path = ten_http_req_path(call->req, &len);
  const char *rest = path + sizeof prefix - 1;
  size_t rest_len = len - (sizeof prefix - 1);
  const char *slash = memchr(rest, '/', rest_len);
  size_t key_len = slash ? (size_t)(slash - rest) : rest_len;
  action[0] = '\0';
  if (slash) {
    size_t alen = rest_len - key_len - 1;
    if (alen >= action_len) alen = action_len - 1;
    memcpy(action, slash + 1, alen);
    action[alen] = '\0';
  }
  char key[256];
  if (!url_decode(rest, key_len, key, sizeof key) || !strchr(key, ':')) {
    ten__call_error(call, 400, "address an instance as /api/instances/{service}:{id}", NULL);
    return NULL;
  }
  ten_instance_t *inst = ten_hv_find_key(call->api->hv, key);
  /* A tenant learns nothing about instances that are not its own. */
  if (!inst || !ten__call_may_see(call, inst->id)) {
    ten_buf_t detail = TEN_BUF_INIT;
    ten_buf_puts(&detail, "\"instance\":");
    ten_json_quote(&detail, key, strlen(key));
    ten__call_error(call, 404, "no such instance", detail.data);
    ten_buf_free(&detail);
    return NULL;
  }
  return inst;
}

static void answer_instance(ten__call_t *call, int status, const ten_instance_t *inst) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_instance_to_json(inst, &w);
  ten_buf_putc(&out, '\n');
  ten__call_json(call, status, &out);
  ten_buf_free(&out);
}

static void set_weight(ten__call_t *call, ten_instance_t *inst) {
  if (!call->id.admin) {
    ten__call_error(call, 403, "weights are an admin's to set", NULL);
    return;
  }
  size_t len;
  const char *body = ten_http_req_body(call->req, &len);
  ten_json_t *doc;
  double weight;
  if (ten_json_parse(body, len, &doc, NULL) != 0) {
    ten__call_error(call, 400, "the body must be JSON like {\"weight\": 50}", NULL);
    return;
  }
  bool ok = ten_json_get_num(doc, "weight", &weight) && weight == (double)(int)weight;
  ten_json_free(doc);
  ten_err_t err;
  if (!ok || ten_hv_set_weight(call->api->hv, inst->key, (int)weight, &err)) {
    ten__call_error(call, 400, ok ? err.msg : "\"weight\" must be an integer from 0 to 100", NULL);
    return;
  }
  answer_instance(call, 200, inst);
}

static void one_instance(ten__call_t *call) {
  char action[32];
  ten_instance_t *inst = instance_of(call, action, sizeof action);
  if (!inst) return;
  const char *method = ten_http_req_method(call->req);
  bool get = !strcmp(method, "GET") || !strcmp(method, "HEAD");
  ten_err_t err;
  int rc = 0;
  if (!action[0]) {
    if (!get) ten__call_error(call, 405, "use GET here, or POST .../spawn|restart|stop", NULL);
    else answer_instance(call, 200, inst);
    return;
  }
  if (!strcmp(action, "weight")) {
    if (strcmp(method, "PUT") && strcmp(method, "POST"))
      ten__call_error(call, 405, "set a weight with PUT", NULL);
    else
      set_weight(call, inst);
    return;
  }
  if (strcmp(method, "POST")) {
    ten__call_error(call, 405, "actions are POST", NULL);
    return;
  }
  if (!strcmp(action, "spawn")) rc = ten_hv_spawn(call->api->hv, inst->service, inst->id, &err);
  else if (!strcmp(action, "restart")) rc = ten_hv_restart(call->api->hv, inst->key, &err);
  else if (!strcmp(action, "stop")) rc = ten_hv_stop(call->api->hv, inst->key, &err);
  else {
    ten__call_error(call, 404, "unknown action (spawn, restart, stop, weight)", NULL);
    return;
  }
  if (rc) {
    ten__call_error(call, rc == UV_EEXIST || rc == UV_EALREADY || rc == UV_EBUSY ? 409 : 400,
                    err.msg, NULL);
    return;
  }
  answer_instance(call, 202, inst);
}

/* ------------------------------------------------------------ open routes */

static void get_health(void *ctx, ten_http_request_t *req) {
  ten_api_t *api = ctx;
  unsigned counts[TEN_INST_STATE_COUNT];
  ten_hv_count(api->hv, counts);
  unsigned total = 0;
  for (int i = 0; i < TEN_INST_STATE_COUNT; i++) total += counts[i];

  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "status", "ok");
  ten_jw_kstr(&w, "version", TEN_VERSION);
  ten_jw_knum(&w, "uptime", (double)(ten_now_ms() - api->started_ms) / 1000.0);
  ten_jw_key(&w, "instances");
  ten_jw_obj(&w);
  ten_jw_kint(&w, "total", total);
  for (int i = 0; i < TEN_INST_STATE_COUNT; i++)
    ten_jw_kint(&w, ten_instance_state_name((ten_instance_state_t)i), counts[i]);
  ten_jw_obj_end(&w);
  const ten_http_stats_t *st = ten_http_stats(api->http);
  ten_jw_key(&w, "http");
  ten_jw_obj(&w);
  ten_jw_kint(&w, "connections_open", (int64_t)st->connections_open);
  ten_jw_kint(&w, "requests_total", (int64_t)st->requests_total);
  ten_jw_kint(&w, "requests_in_flight", (int64_t)st->requests_in_flight);
  ten_jw_obj_end(&w);
  ten_jw_kbool(&w, "api_loopback_only", api->auth && ten_auth_token_count(api->auth) == 0);
  ten_jw_obj_end(&w);
  ten_buf_putc(&out, '\n');
  ten_http_respond_json(req, 200, &out);
  ten_buf_free(&out);
}

/* process_* from /proc/self: what any Prometheus exporter reports. */
static void process_metrics(ten_buf_t *out) {
  FILE *f = fopen("/proc/self/stat", "r");
  unsigned long utime = 0, stime = 0;
  long rss_pages = 0;
  if (f) {
    char buf[1024];
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    const char *p = strrchr(buf, ')');
    if (p) {
      /* fields after comm: 3 state ... 14 utime 15 stime ... 24 rss */
      int field = 2;
      for (const char *q = p + 1; *q; q++) {
        if (*q != ' ') continue;
        field++;
        if (field == 14) utime = strtoul(q + 1, NULL, 10);
        else if (field == 15) stime = strtoul(q + 1, NULL, 10);
        else if (field == 24) rss_pages = strtol(q + 1, NULL, 10);
      }
    }
  }
  double ticks = (double)sysconf(_SC_CLK_TCK);
  ten_metric_single(out, "process_cpu_seconds_total", "counter",
                    "User and system CPU time of the ten process.",
                    (double)(utime + stime) / ticks);
  ten_metric_single(out, "process_resident_memory_bytes", "gauge",
                    "Resident memory of the ten process.",
                    (double)rss_pages * (double)sysconf(_SC_PAGESIZE));
}

void ten_api_metrics(ten_api_t *api, ten_buf_t *out) {
  ten_http_metrics(api->http, out);
  ten_hv_metrics(api->hv, out);
  ten_db_stats_t ds = {0};
  if (api->db) ten_db_stats(api->db, &ds);
  if (api->logs) {
    ten_logs_stats_t ls;
    ten_logs_stats(api->logs, &ls);
    ten_metric_single(out, "tenement_log_lines_total", "counter",
                      "Lines captured from instances' stdout and stderr.",
                      (double)ls.lines);
    ten_metric_single(out, "tenement_log_lines_dropped_total", "counter",
                      "Captured lines lost because the database failed to store them.",
                      (double)ds.lines_failed);
    ten_metric_single(out, "tenement_log_read_pauses_total", "counter",
                      "Times reading instances' output paused for the database writer.",
                      (double)ls.pauses);
    ten_metric_single(out, "tenement_log_read_paused_seconds_total", "counter",
                      "Time reading instances' output was paused for the database writer.",
                      (double)ls.paused_ms / 1000.0);
  }
  if (api->db) {
    ten_metric_single(out, "tenement_log_lines_stored_total", "counter",
                      "Lines committed to tenement.db.",
                      (double)ds.lines_stored);
    ten_metric_single(out, "tenement_log_lines_pending", "gauge",
                      "Lines handed to the database writer and not committed yet.",
                      (double)ds.lines_pending);
    ten_metric_single(out, "tenement_log_rows_rotated_total", "counter",
                      "Log rows deleted by retention and the row cap.",
                      (double)ds.rows_rotated);
  }
  if (api->auth) ten_auth_metrics(api->auth, out);
  process_metrics(out);
}

static void metrics_answer(ten_api_t *api, ten_http_request_t *req) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_api_metrics(api, &out);
  ten_http_respond(req, 200, "text/plain; version=0.0.4; charset=utf-8", out.data, out.len, NULL);
  ten_buf_free(&out);
}

static void metrics_authed(ten__call_t *call) {
  ten_http_request_t *req = call->req;
  ten_api_t *api = call->api;
  ten__call_free(call);
  metrics_answer(api, req);
}

static void get_metrics(void *ctx, ten_http_request_t *req) {
  ten_api_t *api = ctx;
  if (api->auth && api->hv->config->settings.metrics_auth) {
    guarded(api, req, metrics_authed);
    return;
  }
  metrics_answer(api, req);
}

/* ------------------------------------------------------------ routes */

static void route_instances(void *ctx, ten_http_request_t *req) { guarded(ctx, req, list_instances); }
static void route_instance(void *ctx, ten_http_request_t *req) { guarded(ctx, req, one_instance); }
static void route_logs(void *ctx, ten_http_request_t *req) { guarded(ctx, req, ten__api_logs); }
static void route_stream(void *ctx, ten_http_request_t *req) {
  guarded(ctx, req, ten__api_logs_stream);
}
static void route_events(void *ctx, ten_http_request_t *req) { guarded(ctx, req, ten__api_events); }

/* Behind auth like the rest: an anonymous caller learns nothing about
 * which routes exist. */
static void unknown_route(ten__call_t *call) {
  size_t len;
  const char *path = ten_http_req_path(call->req, &len);
  ten_buf_t detail = TEN_BUF_INIT;
  ten_buf_puts(&detail, "\"path\":");
  ten_json_quote(&detail, path, len);
  ten__call_error(call, 404, "no such API route", detail.data);
  ten_buf_free(&detail);
}

static void route_unknown(void *ctx, ten_http_request_t *req) { guarded(ctx, req, unknown_route); }

ten_api_t *ten_api_new(const ten_api_deps_t *deps) {
  ten_api_t *api = ten_xcalloc(1, sizeof *api);
  api->http = deps->http;
  api->hv = deps->hv;
  api->logs = deps->logs;
  api->db = deps->db;
  api->auth = deps->auth;
  api->started_ms = ten_now_ms();
  ten_http_server_t *http = api->http;
  ten_http_handle(http, "GET", "/health", false, get_health, api);
  ten_http_handle(http, "GET", "/metrics", false, get_metrics, api);
  ten_http_handle(http, "GET", "/api/instances", false, route_instances, api);
  ten_http_handle(http, NULL, "/api/instances/", true, route_instance, api);
  if (api->logs) {
    ten_http_handle(http, "GET", "/api/logs", false, route_logs, api);
    ten_http_handle(http, "GET", "/api/logs/stream", false, route_stream, api);
  }
  ten_http_handle(http, "GET", "/api/events", false, route_events, api);
  ten_http_handle(http, NULL, "/api/", true, route_unknown, api);
  ten__streams_init(api);
  return api;
}

void ten_api_close(ten_api_t *api) {
  if (!api) return;
  api->closing = true;
  ten__streams_close(api);
}

void ten_api_free(ten_api_t *api) {
  if (!api) return;
  ten__streams_close(api);
  free(api);
}
