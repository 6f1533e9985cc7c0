/* proxy.c: forwarding an exchange to an instance, and the per-instance pool
 * of idle upstream connections.
 *
 * The request head is rebuilt (hop-by-hop headers dropped, X-Forwarded-*
 * set); bodies in both directions are forwarded as the bytes that framed
 * them, from the iobuf they were read into. Each side stops reading while
 * the other has more than TEN_HTTP_HIGH_WATER queued. An upstream goes back
 * to its instance's pool only after a complete, keep-alive exchange.
 */
#include "http/conn.h"
#include "obs/metrics.h"
#include "policy/hooks.h"
#include "util/time.h"

#include <lauxlib.h>
#include "util/json.h"
#include "util/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define POOL_IDLE_TIMEOUT_MS 60000
/* Beyond upstream_keepalive, an idle connection lingers this long instead
 * of closing at once: under a burst wider than the pool (1000 clients, 32
 * kept) every request would otherwise pay a connect and a close. After the
 * burst the surplus goes quietly. Never more than POOL_SURPLUS_MAX idle. */
#define POOL_SURPLUS_LINGER_MS 2000
#define POOL_SURPLUS_MAX 1024

typedef struct ten__pool pool_t;

#define METRIC_CODES 24

struct ten__pool {
  ten_http_server_t *server;
  ten_instance_t *inst;  /* NULL once the instance is gone */
  /* Request metrics of the instance: its series go when it goes. */
  struct {
    int code;
    uint64_t count;
  } codes[METRIC_CODES];
  unsigned ncodes;
  uint64_t other_codes;
  ten_histogram_t duration;
  ten__upstream_t *idle; /* most recently used first */
  unsigned idle_count;
  unsigned upstreams;  /* upstreams that point here */
  pool_t *next, *prev; /* the proxy's list */
};

struct ten__upstream {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } h;
  uv_timer_t timer;
  uv_connect_t connect_req;
  int open_handles;
  pool_t *pool;
  ten__conn_t *client;
  ten__upstream_t *next_idle, *prev_idle;

  llhttp_t parser;
  ten__head_t head; /* the response head being parsed */
  ten__pause_t pause;
  bool resume_pending;
  ten_iobuf_t *rbuf;
  size_t rpos, rlen;

  ten_iobuf_t *request_head; /* kept until the response starts, for a retry */
  size_t request_head_len;

  size_t write_pending;
  uint64_t deadline_ms; /* loop time the timer's phase ends (see up_arm) */
  size_t last_read;     /* picks the next read buffer's size */
  bool connected;
  bool reused; /* came from the pool: may have been closed under us */
  bool reading;
  bool closing;
  bool in_pool;
  bool head_sent; /* the final response head went to the client */
  bool resp_done;
  bool req_sent;  /* every request byte was queued */
  bool body_sent; /* some request body bytes were queued */
  bool got_bytes; /* the upstream sent something for this exchange */
  bool dechunk;   /* HTTP/1.0 client: forward the de-chunked body */
  bool retried;
  bool tunnel;     /* after a 101: raw bytes both ways */
  bool up_eof;     /* tunnel: the instance closed its side */
  bool client_eof; /* tunnel: the client closed its side */
};

static llhttp_settings_t response_settings;

/* Pools live in a list owned by the server; the head is kept here per
 * thread (each loop thread will own its server). */
static _Thread_local pool_t *all_pools;

static void up_close(ten__upstream_t *up);
static void up_process(ten__upstream_t *up);
static void up_update_reading(ten__upstream_t *up);
static void exchange_end(ten__upstream_t *up, bool reusable);
static int up_connect(ten__upstream_t *up);

/* ------------------------------------------------------------ pools */

static void pool_maybe_free(pool_t *p) {
  if (p->inst || p->upstreams > 0) return;
  if (p->prev)
    p->prev->next = p->next;
  else
    all_pools = p->next;
  if (p->next) p->next->prev = p->prev;
  free(p);
}

static pool_t *pool_of(ten_http_server_t *s, ten_instance_t *inst) {
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
static void record(pool_t *p, ten__conn_t *c, int status) {
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

static void record_inst(ten__conn_t *c, ten_instance_t *inst, int status) {
  record(pool_of(c->server, inst), c, status);
}

static void pool_remove_idle(ten__upstream_t *up) {
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

static void pool_close_idle(pool_t *p) {
  while (p->idle) {
    ten__upstream_t *up = p->idle;
    pool_remove_idle(up);
    up_close(up);
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
    pool_maybe_free(p);
  }
}

static void init_response_settings(void);

void ten__proxy_init(ten_http_server_t *s) {
  init_response_settings();
  ten_hv_observe(s->hv, on_instance_change, s);
}

void ten__proxy_shutdown(ten_http_server_t *s) {
  for (pool_t *p = all_pools; p; p = p->next)
    if (p->server == s) pool_close_idle(p);
}

/* ------------------------------------------------------------ upstream lifetime */

static void on_up_closed(uv_handle_t *h) {
  ten__upstream_t *up = h->data;
  if (--up->open_handles > 0) return;
  pool_t *p = up->pool;
  ten_iobuf_unref(up->rbuf);
  ten_iobuf_unref(up->request_head);
  ten_buf_free(&up->head.arena);
  free(up);
  p->upstreams--;
  pool_maybe_free(p);
}

static void up_close(ten__upstream_t *up) {
  if (up->closing) return;
  up->closing = true;
  pool_remove_idle(up);
  up->client = NULL;
  uv_close(&up->h.handle, on_up_closed);
  uv_close((uv_handle_t *)&up->timer, on_up_closed);
}

static void on_up_timeout(uv_timer_t *t);

static ten__upstream_t *up_new(pool_t *p) {
  ten_http_server_t *s = p->server;
  ten__upstream_t *up = ten_xcalloc(1, sizeof *up);
  up->pool = p;
  p->upstreams++;
  int rc = p->inst->socket_path ? uv_pipe_init(s->loop, &up->h.pipe, 0)
                                : uv_tcp_init(s->loop, &up->h.tcp);
  if (rc < 0) {
    free(up);
    p->upstreams--;
    return NULL;
  }
  uv_timer_init(s->loop, &up->timer);
  up->h.handle.data = up->timer.data = up;
  up->open_handles = 2;
  llhttp_init(&up->parser, HTTP_RESPONSE, &response_settings);
  up->parser.data = up;
  return up;
}

/* ------------------------------------------------------------ errors */

static void instance_detail(ten_buf_t *out, const ten_instance_t *inst) {
  ten_buf_puts(out, "\"instance\":");
  ten_json_quote(out, inst->key, strlen(inst->key));
}

/* Fails the exchange: an error response if nothing was sent yet, else the
 * client connection is cut so it cannot mistake a partial response. */
static void fail_exchange(ten__upstream_t *up, int status, const char *message, int uv_err) {
  ten__conn_t *c = up->client;
  if (c) record(up->pool, c, c->resp_status ? c->resp_status : status);
  up_close(up);
  if (!c) return;
  c->up = NULL;
  ten_instance_t *inst = c->inst;
  if (c->resp_started) {
    if (inst) ten_instance_release(inst);
    c->inst = NULL;
    ten__conn_abort(c);
    return;
  }
  ten_buf_t detail = TEN_BUF_INIT;
  if (inst) {
    instance_detail(&detail, inst);
    if (uv_err) ten_buf_printf(&detail, ",\"detail\":\"%s\"", uv_strerror(uv_err));
    ten_log(TEN_LOG_WARN, "proxy: %s: %s%s%s", inst->key, message, uv_err ? ": " : "",
            uv_err ? uv_strerror(uv_err) : "");
    ten_instance_release(inst);
    c->inst = NULL;
  }
  c->mode = TEN_MODE_DISCARD;
  c->keep_alive = false;
  ten__conn_error(c, status, message, detail.data, NULL);
  ten_buf_free(&detail);
}

/* The upstream went away before answering. A reused keep-alive connection
 * may have been closed by the app just as we sent: retry once on a fresh
 * connection when no body went out (so the request can be sent again). */
static void upstream_lost(ten__upstream_t *up, int uv_err) {
  ten__conn_t *c = up->client;
  if (c && up->reused && !up->got_bytes && !up->body_sent && !up->retried && up->request_head &&
      !up->closing) {
    pool_t *p = up->pool;
    ten__upstream_t *fresh = p->inst ? up_new(p) : NULL;
    if (fresh) {
      fresh->retried = true;
      fresh->client = c;
      fresh->req_sent = up->req_sent;
      fresh->request_head = up->request_head;
      fresh->request_head_len = up->request_head_len;
      up->request_head = NULL;
      c->up = fresh;
      up_close(up);
      if (up_connect(fresh) == 0) return;
      fail_exchange(fresh, 502, "cannot connect to the instance", UV_ECONNREFUSED);
      return;
    }
  }
  up->pool->server->stats.upstream_errors[TEN_UPSTREAM_CLOSED]++;
  if (up->got_bytes)
    fail_exchange(up, 502, "the instance closed the connection mid-response", uv_err);
  else
    fail_exchange(up, 502, "the instance closed the connection without answering", uv_err);
}

static void on_up_timeout(uv_timer_t *t);

/* Same lazy deadline as the client side (server.c arm): a busy upstream
 * moves its deadline on every read without touching the timer heap. */
static void up_arm(ten__upstream_t *up, uint64_t ms) {
  up->deadline_ms = uv_now(up->timer.loop) + ms;
  if (uv_is_active((uv_handle_t *)&up->timer) && uv_timer_get_due_in(&up->timer) <= ms) return;
  uv_timer_start(&up->timer, on_up_timeout, ms, 0);
}

static void on_up_timeout(uv_timer_t *t) {
  ten__upstream_t *up = t->data;
  uint64_t now = uv_now(t->loop);
  if (now < up->deadline_ms) {
    uv_timer_start(&up->timer, on_up_timeout, up->deadline_ms - now, 0);
    return;
  }
  if (up->in_pool) {
    up_close(up); /* idle too long */
    return;
  }
  if (!up->connected)
    fail_exchange(up, 502, "timed out connecting to the instance", UV_ETIMEDOUT);
  else
    fail_exchange(up, 504, "the instance did not answer in time", 0);
}

static void arm_response_timeout(ten__upstream_t *up) {
  ten_http_server_t *s = up->pool->server;
  uint64_t ms = (uint64_t)(s->config->settings.upstream_timeout * 1000.0);
  up_arm(up, ms ? ms : 1);
}

/* ------------------------------------------------------------ writing upstream */

static void on_up_write(void *owner, int status, size_t len) {
  ten__upstream_t *up = owner;
  bool was_high = up->write_pending >= TEN_HTTP_LOW_WATER;
  up->write_pending -= len;
  if (up->closing) return;
  if (status < 0) {
    upstream_lost(up, status);
    return;
  }
  if (was_high && up->write_pending < TEN_HTTP_LOW_WATER && up->client)
    ten__conn_update_reading(up->client);
}

static void up_write(ten__upstream_t *up, ten_iobuf_t *buf, const char *data, size_t len) {
  if (up->closing || len == 0) return;
  int rc = ten__write(&up->h.stream, buf, data, len, on_up_write, up);
  if (rc < 0) {
    upstream_lost(up, rc);
    return;
  }
  if (rc == 0) up->write_pending += len; /* else written at once */
}

bool ten__proxy_backpressure(const ten__conn_t *c) {
  return c->up && (!c->up->connected || c->up->write_pending >= TEN_HTTP_HIGH_WATER);
}

/* ------------------------------------------------------------ the request head */

/* Appends to a fixed buffer; remembers if anything did not fit. */
typedef struct head_writer {
  char *p, *end;
  bool overflow;
} head_writer_t;

static void hw_put(head_writer_t *w, const char *s, size_t n) {
  if ((size_t)(w->end - w->p) < n) {
    w->overflow = true;
    return;
  }
  memcpy(w->p, s, n);
  w->p += n;
}
#define HW_LIT(w, lit) hw_put((w), (lit), sizeof(lit) - 1)
static void hw_str(head_writer_t *w, const char *s) { hw_put(w, s, strlen(s)); }

static void hw_header(head_writer_t *w, const ten__head_t *h, const ten__header_t *hd) {
  hw_put(w, h->arena.data + hd->name_off, hd->name_len);
  HW_LIT(w, ": ");
  hw_put(w, h->arena.data + hd->value_off, hd->value_len);
  HW_LIT(w, "\r\n");
}

static bool is_forwarding_header(const char *name, size_t len) {
  return ten_strieq(name, len, "x-forwarded-for") || ten_strieq(name, len, "x-forwarded-proto") ||
         ten_strieq(name, len, "x-forwarded-host") || ten_strieq(name, len, "x-real-ip");
}

/* Builds the head sent upstream straight into an iobuf (no allocation);
 * false if it does not fit. Hop-by-hop headers are dropped, except the
 * Upgrade pair of an upgrade request. X-Forwarded-For is appended to; the
 * -Proto and -Host a client sent are kept only from a trusted proxy;
 * X-Real-IP is the client address as ten determined it. */
static bool build_request_head(ten__conn_t *c, ten_iobuf_t *b, size_t *out_len) {
  const ten__head_t *h = &c->head;
  head_writer_t w = {b->data, b->data + b->size, false};
  bool trusted = c->peer_trusted;
  hw_str(&w, llhttp_method_name((llhttp_method_t)llhttp_get_method(&c->parser)));
  HW_LIT(&w, " ");
  hw_put(&w, h->arena.data + h->target_off, h->target_len);
  HW_LIT(&w, " HTTP/1.1\r\n");
  bool have_xff = false, have_proto = false, have_fhost = false;
  const ten__header_t *upgrade = NULL;
  for (unsigned i = 0; i < h->count; i++) {
    const ten__header_t *hd = &h->headers[i];
    const char *name = h->arena.data + hd->name_off;
    if (c->upgrade && ten_strieq(name, hd->name_len, "upgrade")) upgrade = hd;
    if (ten__is_hop_by_hop(h, name, hd->name_len)) continue;
    if (is_forwarding_header(name, hd->name_len)) {
      if (trusted && ten_strieq(name, hd->name_len, "x-forwarded-proto")) {
        hw_header(&w, h, hd);
        have_proto = true;
      } else if (trusted && ten_strieq(name, hd->name_len, "x-forwarded-host")) {
        hw_header(&w, h, hd);
        have_fhost = true;
      }
      continue;
    }
    hw_header(&w, h, hd);
  }
  if (upgrade) {
    HW_LIT(&w, "Connection: upgrade\r\n");
    hw_header(&w, h, upgrade);
  }
  /* X-Forwarded-For: what earlier proxies said, then the peer we saw. */
  HW_LIT(&w, "X-Forwarded-For: ");
  for (unsigned i = 0; i < h->count; i++) {
    const ten__header_t *hd = &h->headers[i];
    if (!ten_strieq(h->arena.data + hd->name_off, hd->name_len, "x-forwarded-for")) continue;
    if (have_xff) HW_LIT(&w, ", ");
    hw_put(&w, h->arena.data + hd->value_off, hd->value_len);
    have_xff = true;
  }
  if (have_xff) HW_LIT(&w, ", ");
  hw_str(&w, c->client_ip[0] ? c->client_ip : "unknown");
  HW_LIT(&w, "\r\nX-Real-IP: ");
  hw_str(&w, c->real_ip[0] ? c->real_ip : "unknown");
  HW_LIT(&w, "\r\n");
  if (!have_proto) HW_LIT(&w, "X-Forwarded-Proto: http\r\n");
  if (!have_fhost) {
    size_t host_len;
    const char *host = ten__head_get(h, "host", &host_len);
    HW_LIT(&w, "X-Forwarded-Host: ");
    hw_put(&w, host, host_len);
    HW_LIT(&w, "\r\n");
  }
  HW_LIT(&w, "\r\n");
  *out_len = (size_t)(w.p - b->data);
  return !w.overflow;
}

/* ------------------------------------------------------------ connecting */

static void send_request_head(ten__upstream_t *up) {
  ten__conn_t *c = up->client;
  up_write(up, up->request_head, up->request_head->data, up->request_head_len);
  if (up->closing || !c) return;
  arm_response_timeout(up);
  up_update_reading(up);
  if (up->req_sent) return; /* a retry: the request had no body */
  ten__conn_unblock(c);     /* body bytes may flow now */
}

static void on_up_connect(uv_connect_t *req, int status) {
  ten__upstream_t *up = req->data;
  if (up->closing) return;
  if (status < 0) {
    up->pool->server->stats.upstream_errors[TEN_UPSTREAM_CONNECT]++;
    fail_exchange(up, 502, "cannot connect to the instance", status);
    return;
  }
  up->connected = true;
  if (up->client)
    send_request_head(up);
  else
    up_close(up);
}

static int up_connect(ten__upstream_t *up) {
  ten_instance_t *inst = up->pool->inst;
  up->connect_req.data = up;
  uint64_t connect_ms =
      (uint64_t)(up->pool->server->config->settings.upstream_connect_timeout * 1000.0);
  up_arm(up, connect_ms ? connect_ms : 1);
  if (inst->socket_path) {
    uv_pipe_connect(&up->connect_req, &up->h.pipe, inst->socket_path, on_up_connect);
    return 0;
  }
  struct sockaddr_in addr;
  uv_ip4_addr("127.0.0.1", inst->port, &addr);
  return uv_tcp_connect(&up->connect_req, &up->h.tcp, (const struct sockaddr *)&addr,
                        on_up_connect);
}

/* ------------------------------------------------------------ start */

static void not_available(ten__conn_t *c, ten_instance_t *inst) {
  bool starting = inst->state == TEN_INST_STARTING || inst->state == TEN_INST_BACKOFF;
  record_inst(c, inst, starting ? 503 : 502);
  c->server->stats.upstream_errors[TEN_UPSTREAM_NOT_RUNNING]++;
  ten_buf_t detail = TEN_BUF_INIT;
  instance_detail(&detail, inst);
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
  bool fits = build_request_head(c, head, &head_len);
  if (!fits) { /* a big head: try the large size before giving up */
    ten_iobuf_unref(head);
    head = ten_iobuf_get_sized(true);
    fits = build_request_head(c, head, &head_len);
  }
  if (!fits) {
    ten_iobuf_unref(head);
    c->mode = TEN_MODE_DISCARD;
    c->keep_alive = false;
    ten__conn_error(c, 431, "request head too large", NULL, NULL);
    return;
  }

  pool_t *p = pool_of(s, inst);
  ten__upstream_t *up = p->idle;
  if (up) {
    pool_remove_idle(up);
    up->reused = true;
    uv_timer_stop(&up->timer);
  } else {
    up = up_new(p);
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
  up->retried = false;
  up->tunnel = up->up_eof = up->client_eof = false;
  up->resume_pending = false;
  ten__head_reset(&up->head);
  llhttp_init(&up->parser, HTTP_RESPONSE, &response_settings);
  up->parser.data = up;

  if (up->connected) {
    send_request_head(up);
    return;
  }
  c->blocked = true; /* the body waits for the connection */
  int rc = up_connect(up);
  if (rc < 0) fail_exchange(up, 502, "cannot connect to the instance", rc);
}

/* The instance a request waited for is ready (status 0), or did not start. */
static void on_woken(ten_hv_waiter_t *w, int status) {
  ten__conn_t *c = ten_container_of(w, ten__conn_t, waiter);
  ten_instance_t *inst = c->waiting_for;
  c->waiting_for = NULL;
  if (c->closing) return;
  uv_timer_stop(&c->timer);
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
  if (inst) record_inst(c, inst, 503);
  c->server->stats.upstream_errors[TEN_UPSTREAM_WAKE_TIMEOUT]++;
  ten_hv_unwait(&c->waiter);
  c->waiting_for = NULL;
  c->blocked = false;
  c->mode = TEN_MODE_DISCARD;
  ten_buf_t detail = TEN_BUF_INIT;
  if (inst) {
    instance_detail(&detail, inst);
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
    record_inst(c, inst, 503);
    c->server->stats.upstream_errors[TEN_UPSTREAM_QUEUE_FULL]++;
    ten_buf_t detail = TEN_BUF_INIT;
    instance_detail(&detail, inst);
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

void ten__proxy_body(ten__conn_t *c, ten_iobuf_t *buf, const char *data, size_t len) {
  ten__upstream_t *up = c->up;
  if (!up || up->closing) return;
  up->body_sent = true;
  up_write(up, buf, data, len);
}

void ten__proxy_request_done(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  if (!up) return;
  up->req_sent = true;
  if (up->resp_done) exchange_end(up, true);
}

void ten__proxy_detach(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  /* The client left first: 499, as nginx counts it. */
  if (up) record(up->pool, c, c->resp_status ? c->resp_status : 499);
  if (c->inst) {
    ten_instance_release(c->inst);
    c->inst = NULL;
  }
  c->up = NULL;
  if (!up) return;
  up->client = NULL;
  up_close(up);
}

void ten__proxy_client_drained(ten__conn_t *c) {
  if (c->up) up_update_reading(c->up);
}

/* ------------------------------------------------------------ the response */

static int on_resp_header_field(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (up->head_sent) return 0; /* trailers: forwarded with the body */
  return ten__head_append(&up->head, 1, at, len) ? HPE_USER : 0;
}

static int on_resp_header_value(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (up->head_sent) return 0;
  return ten__head_append(&up->head, 2, at, len) ? HPE_USER : 0;
}

static int on_resp_status(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  return ten__head_append(&up->head, 0, at, len) ? HPE_USER : 0;
}

static int on_resp_headers_complete(llhttp_t *p) {
  ten__upstream_t *up = p->data;
  up->pause = TEN_PAUSE_HEAD;
  return HPE_PAUSED;
}

static int on_resp_body(llhttp_t *p, const char *at, size_t len) {
  ten__upstream_t *up = p->data;
  if (up->dechunk && up->client) ten__conn_write(up->client, up->rbuf, at, len);
  return 0;
}

static int on_resp_message_complete(llhttp_t *p) {
  ten__upstream_t *up = p->data;
  up->pause = TEN_PAUSE_DONE;
  return HPE_PAUSED;
}

static void init_response_settings(void) {
  static bool done;
  if (done) return;
  done = true;
  llhttp_settings_init(&response_settings);
  response_settings.on_status = on_resp_status;
  response_settings.on_header_field = on_resp_header_field;
  response_settings.on_header_value = on_resp_header_value;
  response_settings.on_headers_complete = on_resp_headers_complete;
  response_settings.on_body = on_resp_body;
  response_settings.on_message_complete = on_resp_message_complete;
}

/* The head the client gets: status line, end-to-end headers (a 101 keeps
 * its Upgrade), and our Connection header. */
static void write_response_head(head_writer_t *w, ten__upstream_t *up, int status, bool switching,
                                bool interim, bool client_http10) {
  const ten__conn_t *c = up->client;
  const ten__head_t *h = &up->head;
  char status_line[] = "HTTP/1.1 000 ";
  status_line[9] = (char)('0' + status / 100 % 10);
  status_line[10] = (char)('0' + status / 10 % 10);
  status_line[11] = (char)('0' + status % 10);
  hw_put(w, status_line, sizeof status_line - 1);
  if (h->target_len) hw_put(w, h->arena.data + h->target_off, h->target_len);
  else hw_str(w, ten_http_status_text(status));
  HW_LIT(w, "\r\n");
  for (unsigned i = 0; i < h->count; i++) {
    const ten__header_t *hd = &h->headers[i];
    const char *name = h->arena.data + hd->name_off;
    bool keep_upgrade = switching && ten_strieq(name, hd->name_len, "upgrade");
    if (!keep_upgrade && ten__is_hop_by_hop(h, name, hd->name_len)) continue;
    if (up->dechunk && ten_strieq(name, hd->name_len, "transfer-encoding")) continue;
    hw_header(w, h, hd);
  }
  if (switching)
    HW_LIT(w, "Connection: upgrade\r\n");
  else if (!interim && (!c->keep_alive || c->server->shutting_down))
    HW_LIT(w, "Connection: close\r\n");
  else if (!interim && client_http10)
    HW_LIT(w, "Connection: keep-alive\r\n");
  HW_LIT(w, "\r\n");
}

/* Rewrites the response head for the client and queues it, written
 * straight into an iobuf. A 101 keeps its Upgrade header and turns the
 * exchange into a tunnel. */
static void on_response_head(ten__upstream_t *up) {
  ten__conn_t *c = up->client;
  int status = llhttp_get_status_code(&up->parser);
  bool switching = status == 101;
  bool interim = status >= 100 && status < 200 && !switching;
  bool head_request = llhttp_get_method(&c->parser) == HTTP_HEAD;
  if (head_request && !interim) up->parser.flags |= F_SKIPBODY;

  bool client_http10 =
      llhttp_get_http_major(&c->parser) == 1 && llhttp_get_http_minor(&c->parser) == 0;
  bool chunked = (up->parser.flags & F_CHUNKED) != 0;
  bool has_length = (up->parser.flags & F_CONTENT_LENGTH) != 0;
  bool bodyless = head_request || status == 204 || status == 304 || interim || switching;
  if (!interim && !switching) {
    if (!bodyless && !chunked && !has_length) c->keep_alive = false; /* ends at close */
    if (client_http10 && chunked && !head_request) {
      up->dechunk = true; /* HTTP/1.0 has no chunked: the close ends the body */
      c->keep_alive = false;
    }
  }

  /* Heads are small: a small buffer, and the large one only if needed. */
  ten_iobuf_t *b = NULL;
  head_writer_t w;
  for (int attempt = 0; attempt < 2; attempt++) {
    ten_iobuf_unref(b);
    b = ten_iobuf_get_sized(attempt == 1);
    w = (head_writer_t){b->data, b->data + b->size, false};
    write_response_head(&w, up, status, switching, interim, client_http10);
    if (!w.overflow) break;
  }

  /* HTTP/1.0 clients get no interim responses (RFC 9110 15.2). */
  if (!(interim && client_http10) && !w.overflow) {
    ten__conn_write(c, b, b->data, (size_t)(w.p - b->data));
    c->resp_started = true;
  }
  ten_iobuf_unref(b);
  if (w.overflow) {
    fail_exchange(up, 502, "the instance's response head is too large", 0);
    return;
  }
  if (switching) up->tunnel = true;
  if (!interim) {
    c->resp_status = status;
    up->head_sent = true;
    /* Past this point a retry is impossible: drop the saved head. */
    ten_iobuf_unref(up->request_head);
    up->request_head = NULL;
  }
  ten__head_reset(&up->head);
}

static void up_process(ten__upstream_t *up) {
  static const char nothing[1];
  if (up->tunnel && up->client && up->rbuf && up->rpos < up->rlen) {
    ten__conn_write(up->client, up->rbuf, up->rbuf->data + up->rpos, up->rlen - up->rpos);
    up->rpos = up->rlen;
  }
  while (!up->closing && up->client && !up->tunnel) {
    const char *start;
    size_t avail;
    bool from_buffer = up->rbuf && up->rpos < up->rlen;
    if (from_buffer) {
      start = up->rbuf->data + up->rpos;
      avail = up->rlen - up->rpos;
    } else if (up->resume_pending) {
      start = nothing; /* finish a bodiless response (see conn_process) */
      avail = 0;
    } else {
      break;
    }
    up->resume_pending = false;
    bool in_body = up->head_sent && !up->resp_done;
    up->pause = TEN_PAUSE_NONE;
    llhttp_errno_t err = llhttp_execute(&up->parser, start, avail);
    const char *stop = err == HPE_OK ? start + avail : llhttp_get_error_pos(&up->parser);
    if (err != HPE_OK && err != HPE_PAUSED) {
      ten_log(TEN_LOG_WARN, "proxy: invalid response from %s: %s",
              up->pool->inst ? up->pool->inst->key : "?", llhttp_get_error_reason(&up->parser));
      up->pool->server->stats.upstream_errors[TEN_UPSTREAM_INVALID]++;
      fail_exchange(up, 502, "invalid response from the instance", 0);
      return;
    }
    if (in_body && !up->dechunk && stop > start)
      ten__conn_write(up->client, up->rbuf, start, (size_t)(stop - start));
    if (!up->client) return; /* the write failed and the client is gone */
    if (from_buffer) up->rpos = (size_t)(stop - up->rbuf->data);
    if (err != HPE_PAUSED) continue;
    llhttp_resume(&up->parser);
    if (up->pause == TEN_PAUSE_HEAD) {
      up->resume_pending = true;
      if (llhttp_get_status_code(&up->parser) == 101 && !up->client->upgrade) {
        fail_exchange(up, 502, "the instance switched protocols unasked", 0);
        return;
      }
      on_response_head(up);
      if (up->closing || !up->client) return;
      if (up->tunnel) {
        /* Everything after the 101 head belongs to the new protocol. */
        if (up->rbuf && up->rpos < up->rlen)
          ten__conn_write(up->client, up->rbuf, up->rbuf->data + up->rpos, up->rlen - up->rpos);
        up->rpos = up->rlen;
        uv_timer_stop(&up->timer);
        ten__conn_tunnel(up->client);
        break;
      }
    } else if (up->pause == TEN_PAUSE_DONE) {
      int status = llhttp_get_status_code(&up->parser);
      if (status >= 100 && status < 200) continue; /* the final response follows */
      up->resp_done = true;
      bool clean = !up->rbuf || up->rpos == up->rlen; /* nothing after the response */
      exchange_end(up, clean);
      return;
    }
  }
  if (up->rbuf && up->rpos >= up->rlen) {
    ten_iobuf_unref(up->rbuf);
    up->rbuf = NULL;
  }
  up_update_reading(up);
}

static void on_up_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ten__upstream_t *up = h->data;
  ten_iobuf_t *b = ten_iobuf_get_sized(ten_iobuf_want_large(up->last_read));
  buf->base = b->data;
  buf->len = b->size;
}

/* ------------------------------------------------------------ tunnels */

/* Ends a tunnel once both sides have closed, or at once if one failed. */
static void tunnel_maybe_end(ten__upstream_t *up, bool failed) {
  ten__conn_t *c = up->client;
  if (!failed && !(up->up_eof && up->client_eof)) return;
  if (c) record(up->pool, c, 101);
  up->client = NULL;
  if (c) {
    c->up = NULL;
    if (c->inst) {
      ten_instance_release(c->inst);
      c->inst = NULL;
    }
    if (failed) ten__conn_abort(c);
    else ten__conn_response_done(c); /* both said goodbye: close after the last write */
  }
  up_close(up);
}

static void on_up_shutdown(uv_shutdown_t *req, int status) { free(req); }

static void tunnel_up_eof(ten__upstream_t *up, int status) {
  up->up_eof = true;
  if (status != UV_EOF) {
    tunnel_maybe_end(up, true);
    return;
  }
  if (up->client) ten__conn_shutdown_write(up->client);
  up_update_reading(up);
  tunnel_maybe_end(up, false);
}

void ten__proxy_tunnel_client_eof(ten__conn_t *c) {
  ten__upstream_t *up = c->up;
  if (!up) return;
  up->client_eof = true;
  uv_shutdown_t *req = ten_xmalloc(sizeof *req);
  if (uv_shutdown(req, &up->h.stream, on_up_shutdown) < 0) free(req);
  tunnel_maybe_end(up, false);
}

static void on_up_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf) {
  ten__upstream_t *up = stream->data;
  ten_iobuf_t *b =
      buf->base ? (ten_iobuf_t *)(void *)(buf->base - offsetof(ten_iobuf_t, data)) : NULL;
  if (nread == 0) {
    ten_iobuf_unref(b);
    return;
  }
  if (up->in_pool || !up->client) {
    /* An idle pooled connection spoke or closed: it cannot be reused. */
    ten_iobuf_unref(b);
    up_close(up);
    return;
  }
  if (nread < 0) {
    ten_iobuf_unref(b);
    if (up->tunnel) {
      tunnel_up_eof(up, (int)nread);
      return;
    }
    if (nread == UV_EOF && up->head_sent && llhttp_message_needs_eof(&up->parser)) {
      /* A body delimited by the close is complete now. */
      llhttp_finish(&up->parser);
      up->resp_done = true;
      exchange_end(up, false);
      return;
    }
    upstream_lost(up, (int)nread);
    return;
  }
  up->got_bytes = true;
  up->last_read = (size_t)nread;
  up->rbuf = b;
  up->rpos = 0;
  up->rlen = (size_t)nread;
  if (!up->tunnel) arm_response_timeout(up); /* the instance is answering: restart the clock */
  ten__conn_t *client = up->client;
  up_process(up);
  /* Everything this read brought is queued (head and body together):
   * send it now rather than after every other callback of the turn. */
  if (client) ten__conn_flush(client);
}

static void up_update_reading(ten__upstream_t *up) {
  if (up->closing || !up->connected) return;
  bool want;
  if (up->in_pool)
    want = true; /* to notice when the app closes it */
  else
    want = up->client && !up->rbuf && !up->up_eof &&
           up->client->write_pending < TEN_HTTP_HIGH_WATER;
  if (want && !up->reading) {
    if (uv_read_start(&up->h.stream, on_up_alloc, on_up_read) == 0) up->reading = true;
    if (!up->in_pool && up->client && !up->tunnel) arm_response_timeout(up);
  } else if (!want && up->reading) {
    uv_read_stop(&up->h.stream);
    up->reading = false;
    /* Waiting on a slow client is not the instance being slow. */
    if (!up->in_pool) uv_timer_stop(&up->timer);
  }
}

/* ------------------------------------------------------------ ending */

static void exchange_end(ten__upstream_t *up, bool reusable) {
  ten__conn_t *c = up->client;
  pool_t *p = up->pool;
  if (c) record(p, c, c->resp_status);
  ten_http_server_t *s = p->server;
  if (!up->req_sent && c) {
    /* Response complete before the request: wait for ten__proxy_request_done
     * only if the body is still arriving normally; the connection closes. */
    reusable = false;
  }
  unsigned keepalive = (unsigned)s->config->settings.upstream_keepalive;
  bool surplus = p->idle_count >= keepalive;
  reusable = reusable && up->req_sent && llhttp_should_keep_alive(&up->parser) && p->inst &&
             p->inst->state == TEN_INST_READY && !s->shutting_down && keepalive > 0 &&
             p->idle_count < POOL_SURPLUS_MAX;
  up->client = NULL;
  if (c) {
    c->up = NULL;
    if (c->inst) {
      ten_instance_release(c->inst);
      c->inst = NULL;
    }
  }
  if (reusable) {
    ten_iobuf_unref(up->rbuf);
    up->rbuf = NULL;
    up->in_pool = true;
    up->next_idle = p->idle;
    up->prev_idle = NULL;
    if (p->idle) p->idle->prev_idle = up;
    p->idle = up;
    p->idle_count++;
    up_arm(up, surplus ? POOL_SURPLUS_LINGER_MS : POOL_IDLE_TIMEOUT_MS);
    up_update_reading(up);
  } else {
    up_close(up);
  }
  if (c) ten__conn_response_done(c);
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
