/* proxy.c: where a request for an instance goes. Resolves the instance
 * (by Host, the weighted pool, or the route hook; created on demand when
 * the service allows), wakes it if it sleeps (the request waits, bounded),
 * and starts the exchange on an upstream connection (upstream.c).
 */
#include "http/upstream.h"

#include "policy/hooks.h"
#include "util/json.h"
#include "util/log.h"

#include <lauxlib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ start */

static void not_available(ten__conn_t *c, ten_instance_t *inst) {
  bool starting = inst->state == TEN_INST_STARTING || inst->state == TEN_INST_BACKOFF;
  ten__pool_record_inst(c, inst, starting ? 503 : 502);
  c->server->stats.upstream_errors[TEN_UPSTREAM_NOT_RUNNING]++;
  ten_buf_t detail = TEN_BUF_INIT;
  ten__instance_detail(&detail, inst);
  ten_buf_printf(&detail, ",\"state\":\"%s\"", ten_instance_state_name(inst->state));
  if (inst->reason[0]) {
    ten_buf_puts(&detail, ",\"reason\":");
    ten_json_quote(&detail, inst->reason, strlen(inst->reason));
  } else if (inst->last_exit[0]) {
    ten_buf_puts(&detail, ",\"reason\":");
    ten_json_quote(&detail, inst->last_exit, strlen(inst->last_exit));
  }
  c->mode = TEN_MODE_DISCARD;
  if (inst->state == TEN_INST_STARTING || inst->state == TEN_INST_BACKOFF)
    ten__conn_error(c, 503, "instance is not ready", detail.data, "Retry-After: 1\r\n");
  else
    ten__conn_error(c, 502, "instance is not running", detail.data, NULL);
  ten_buf_free(&detail);
}

/* Connects (or reuses a pooled connection) and sends the head. The
 * instance is ready. */
static void proxy_begin(ten__conn_t *c, ten_instance_t *inst) {
  ten_http_server_t *s = c->server;
  ten_iobuf_t *head = ten_iobuf_get_sized(false);
  size_t head_len;
  bool fits = ten__build_request_head(c, head, &head_len);
  if (!fits) { /* a big head: try the large size before giving up */
    ten_iobuf_unref(head);
    head = ten_iobuf_get_sized(true);
    fits = ten__build_request_head(c, head, &head_len);
  }
  if (!fits) {
    ten_iobuf_unref(head);
    c->mode = TEN_MODE_DISCARD;
    c->keep_alive = false;
    ten__conn_error(c, 431, "request head too large", NULL, NULL);
    return;
  }

  pool_t *p = ten__pool_of(s, inst);
  ten__upstream_t *up = p->idle;
  if (up) {
    ten__pool_remove_idle(up);
    up->reused = true;
    uv_timer_stop(&up->timer);
  } else {
    up = ten__up_new(p);
    if (!up) {
      ten_iobuf_unref(head);
      c->mode = TEN_MODE_DISCARD;
      ten__conn_error(c, 502, "cannot create an upstream connection", NULL, NULL);
      return;
    }
  }
  c->inst = inst;
  ten_instance_acquire(inst);
  c->up = up;
  up->client = c;
  up->request_head = head;
  up->request_head_len = head_len;
  up->head_sent = up->resp_done = up->req_sent = up->body_sent = up->got_bytes = false;
  up->dechunk = false;
  up->chunked = c->body_chunked;
  up->resp_chunked = false;
  up->strict_error = NULL;
  up->retried = false;
  up->tunnel = up->up_eof = up->client_eof = false;
  up->resume_pending = false;
  ten__head_reset(&up->head);
  llhttp_init(&up->parser, HTTP_RESPONSE, ten__response_settings());
  up->parser.data = up;

  if (up->connected) {
    ten__up_send_head(up);
    return;
  }
  c->blocked = true; /* the body waits for the connection */
  int rc = ten__up_connect(up);
  if (rc < 0) ten__up_fail(up, 502, "cannot connect to the instance", rc);
}

/* The instance a request waited for is ready (status 0), or did not start. */
static void on_woken(ten_hv_waiter_t *w, int status) {
  ten__conn_t *c = ten_container_of(w, ten__conn_t, waiter);
  ten_instance_t *inst = c->waiting_for;
  c->waiting_for = NULL;
  if (c->closing) return;
  ten__conn_disarm(c);
  if (status == 0) {
    proxy_begin(c, inst);
    if (!c->closing && !c->blocked) ten__conn_unblock(c);
    return;
  }
  c->blocked = false;
  if (status == UV_ECANCELED || !inst) {
    c->mode = TEN_MODE_DISCARD;
    ten__conn_error(c, 503, "the instance is going away", NULL, "Retry-After: 1\r\n");
  } else {
    not_available(c, inst);
  }
  ten__conn_unblock(c);
}

void ten__proxy_wake_timeout(ten__conn_t *c) {
  ten_instance_t *inst = c->waiting_for;
  if (inst) ten__pool_record_inst(c, inst, 503);
  c->server->stats.upstream_errors[TEN_UPSTREAM_WAKE_TIMEOUT]++;
  ten_hv_unwait(&c->waiter);
  c->waiting_for = NULL;
  c->blocked = false;
  c->mode = TEN_MODE_DISCARD;
  ten_buf_t detail = TEN_BUF_INIT;
  if (inst) {
    ten__instance_detail(&detail, inst);
    ten_buf_printf(&detail, ",\"state\":\"%s\",\"wake_timeout\":%g",
                   ten_instance_state_name(inst->state), inst->conf->wake_timeout);
  }
  ten__conn_error(c, 503, "the instance did not start in time", detail.data, "Retry-After: 1\r\n");
  ten_buf_free(&detail);
  ten__conn_unblock(c);
}

void ten__proxy_unwait(ten__conn_t *c) {
  if (!c->waiting_for) return;
  ten_hv_unwait(&c->waiter);
  c->waiting_for = NULL;
}

/* Wakes the instance if it sleeps; the request proceeds once it is ready. */
static void proxy_to(ten__conn_t *c, ten_instance_t *inst) {
  int rc = ten_hv_wake(inst, &c->waiter);
  if (rc == 1) {
    proxy_begin(c, inst);
    return;
  }
  if (rc == 0) {
    c->waiter.cb = on_woken;
    c->waiting_for = inst;
    c->blocked = true;
    ten__conn_arm_wake_timeout(c, inst->conf->wake_timeout);
    return;
  }
  c->mode = TEN_MODE_DISCARD;
  if (rc == UV_EAGAIN) {
    ten__pool_record_inst(c, inst, 503);
    c->server->stats.upstream_errors[TEN_UPSTREAM_QUEUE_FULL]++;
    ten_buf_t detail = TEN_BUF_INIT;
    ten__instance_detail(&detail, inst);
    ten_buf_printf(&detail, ",\"wake_queue\":%d", inst->conf->wake_queue);
    ten__conn_error(c, 503, "too many requests are waiting for this instance", detail.data,
                    "Retry-After: 1\r\n");
    ten_buf_free(&detail);
  } else if (rc == UV_ECANCELED) {
    ten__conn_error(c, 503, "the server is shutting down", NULL, "Retry-After: 1\r\n");
  } else {
    not_available(c, inst);
  }
}

static void not_found(ten__conn_t *c, const char *message, const char *service, size_t service_len,
                      const char *id, size_t id_len, const char *why) {
  const ten_route_t *r = &c->route;
  ten_buf_t detail = TEN_BUF_INIT;
  ten_buf_puts(&detail, "\"host\":");
  ten_json_quote(&detail, r->host, r->host_len);
  ten_buf_puts(&detail, ",\"service\":");
  ten_json_quote(&detail, service, service_len);
  if (id) {
    ten_buf_puts(&detail, ",\"id\":");
    ten_json_quote(&detail, id, id_len);
  }
  if (why) {
    ten_buf_puts(&detail, ",\"reason\":");
    ten_json_quote(&detail, why, strlen(why));
  }
  c->mode = TEN_MODE_DISCARD;
  ten__conn_error(c, 404, message, detail.data, NULL);
  ten_buf_free(&detail);
}

/* The facts a Lua hook sees about this request. */
static void request_facts(ten__conn_t *c, ten_hook_request_t *req, ten_hook_header_t *headers) {
  const ten__head_t *h = &c->head;
  size_t path_len;
  req->method = llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser));
  req->host = c->route.host;
  req->host_len = c->route.host_len;
  req->path = h->arena.data + h->target_off;
  const char *q = memchr(req->path, '?', h->target_len);
  path_len = q ? (size_t)(q - req->path) : h->target_len;
  req->path_len = path_len;
  req->client = c->real_ip;
  for (unsigned i = 0; i < h->count; i++) {
    headers[i].name = h->arena.data + h->headers[i].name_off;
    headers[i].name_len = h->headers[i].name_len;
    headers[i].value = h->arena.data + h->headers[i].value_off;
    headers[i].value_len = h->headers[i].value_len;
  }
  req->headers = headers;
  req->header_count = h->count;
}

static void route_instance(ten__conn_t *c, const char *service, size_t service_len, const char *id,
                           size_t id_len) {
  ten_http_server_t *s = c->server;
  ten_instance_t *inst = ten_hv_find(s->hv, service, service_len, id, id_len);
  if (!inst) {
    const ten_service_conf_t *conf = ten_config_service(s->config, service, service_len);
    if (!conf) {
      not_found(c, "no such service", service, service_len, id, id_len, NULL);
      return;
    }
    if (!conf->spawn_on_demand) {
      not_found(c, "no such instance", service, service_len, id, id_len, NULL);
      return;
    }
    ten_hook_header_t headers[TEN_HTTP_MAX_HEADERS];
    ten_hook_request_t req;
    request_facts(c, &req, headers);
    ten_err_t err;
    if (ten_hv_demand(s->hv, service, service_len, id, id_len, &req, &inst, &err)) {
      not_found(c, "no such instance", service, service_len, id, id_len, err.msg);
      return;
    }
  }
  proxy_to(c, inst);
}

void ten__proxy_start(ten__conn_t *c) {
  ten_http_server_t *s = c->server;
  const ten_route_t *r = &c->route;
  if (r->kind == TEN_ROUTE_SERVICE) {
    ten_instance_t *inst = ten_hv_pick(s->hv, r->service, r->service_len);
    if (inst) {
      proxy_to(c, inst);
    } else if (!ten_config_service(s->config, r->service, r->service_len)) {
      not_found(c, "no such service", r->service, r->service_len, NULL, 0, NULL);
    } else {
      ten_buf_t detail = TEN_BUF_INIT;
      ten_buf_puts(&detail, "\"service\":");
      ten_json_quote(&detail, r->service, r->service_len);
      ten_buf_puts(&detail, ",\"hint\":\"no instance has weight > 0 and can run\"");
      c->mode = TEN_MODE_DISCARD;
      ten__conn_error(c, 503, "no instance of this service is available", detail.data,
                      "Retry-After: 1\r\n");
      ten_buf_free(&detail);
    }
    return;
  }
  route_instance(c, r->service, r->service_len, r->id, r->id_len);
}

/* The per-request route hook decided: "service:id". */
void ten__proxy_start_key(ten__conn_t *c, const char *key) {
  const char *colon = strchr(key, ':');
  route_instance(c, key, (size_t)(colon - key), colon + 1, strlen(colon + 1));
}

bool ten__proxy_route_hook(ten__conn_t *c, char *key, size_t key_len) {
  ten_http_server_t *s = c->server;
  if (s->config->settings.route_ref == LUA_NOREF) return false;
  ten_hook_header_t headers[TEN_HTTP_MAX_HEADERS];
  ten_hook_request_t req;
  request_facts(c, &req, headers);
  bool routed = false;
  ten_err_t err;
  if (ten_hook_route(s->config, &req, key, key_len, &routed, &err)) {
    s->stats.route_hook_errors++;
    snprintf(s->route_hook_error, sizeof s->route_hook_error, "%.*s",
             (int)sizeof s->route_hook_error - 1, err.msg);
    return false;
  }
  return routed;
}

