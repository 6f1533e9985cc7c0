/* request.c: what a request asks for and how it is refused.
 *
 * The llhttp callbacks that build the request head, the checks run on a
 * complete head (strictness, client address, Host), the decision where it
 * goes (a local handler on the root domain, an instance through the proxy,
 * or an error answer), and the mapping of parse errors to status codes.
 */
#include "http/conn.h"

#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static llhttp_settings_t request_settings;

/* ------------------------------------------------------------ llhttp callbacks */

static int on_message_begin(llhttp_t *p) {
  ten__conn_t *c = p->data;
  ten__head_reset(&c->head);
  c->head.limit = (uint32_t)TEN__SETTINGS(c)->max_header_size;
  c->obs_fold = false;
  c->body_bytes = 0;
  c->body_too_large = false;
  /* The first byte of a request: from now on the head must arrive in time. */
  ten__conn_arm(c, TEN__HEADER_TIMEOUT_MS);
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  return ten__head_append(&c->head, 0, at, len) ? HPE_USER : 0;
}

static int on_header_field(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (c->mode != TEN_MODE_HEAD) return 0; /* trailers: forwarded with the body */
  return ten__head_append(&c->head, 1, at, len) ? HPE_USER : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (c->mode != TEN_MODE_HEAD) return 0;
  /* llhttp accepts obs-fold (RFC 9112 5.2) and reports the folded line as a
   * second piece of the value from the middle of the buffer; a value split
   * by a read boundary continues at the start of the next buffer instead. */
  if (c->head.last == 2 && at != c->exec_start) {
    c->obs_fold = true;
    return HPE_USER;
  }
  return ten__head_append(&c->head, 2, at, len) ? HPE_USER : 0;
}

static int on_headers_complete(llhttp_t *p) {
  ten__conn_t *c = p->data;
  c->pause = TEN_PAUSE_HEAD;
  return HPE_PAUSED;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  c->body_bytes += (int64_t)len;
  int64_t max = TEN__SETTINGS(c)->max_body_size;
  if (max > 0 && c->body_bytes > max && c->mode != TEN_MODE_DISCARD) {
    c->body_too_large = true;
    return HPE_USER;
  }
  if (c->mode == TEN_MODE_LOCAL) {
    if (c->head.arena.len - c->local_body_off + len > TEN_HTTP_LOCAL_BODY_MAX) return HPE_USER;
    ten_buf_append(&c->head.arena, at, len);
  } else if (c->mode == TEN_MODE_DISCARD) {
    c->discarded += len;
    if (c->discarded > TEN_HTTP_DISCARD_MAX) {
      c->keep_alive = false;
      return HPE_USER;
    }
  }
  return 0;
}

static int on_message_complete(llhttp_t *p) {
  ten__conn_t *c = p->data;
  c->pause = TEN_PAUSE_DONE;
  return HPE_PAUSED;
}

static void init_settings(void) {
  static bool done;
  if (done) return;
  done = true;
  llhttp_settings_init(&request_settings);
  request_settings.on_message_begin = on_message_begin;
  request_settings.on_url = on_url;
  request_settings.on_header_field = on_header_field;
  request_settings.on_header_value = on_header_value;
  request_settings.on_headers_complete = on_headers_complete;
  request_settings.on_body = on_body;
  request_settings.on_message_complete = on_message_complete;
}

const llhttp_settings_t *ten__request_settings(void) {
  init_settings();
  return &request_settings;
}


/* ------------------------------------------------------------ responses */

static void response_head(ten__conn_t *c, ten_buf_t *out, int status, const char *content_type,
                          size_t content_length, const char *extra_headers) {
  ten_buf_printf(out, "HTTP/1.1 %d %s\r\n", status, ten_http_status_text(status));
  if (content_type) ten_buf_printf(out, "Content-Type: %s\r\n", content_type);
  ten_buf_printf(out, "Content-Length: %zu\r\n", content_length);
  if (extra_headers) ten_buf_puts(out, extra_headers);
  if (!c->keep_alive || c->server->shutting_down)
    ten_buf_puts(out, "Connection: close\r\n");
  else if (llhttp_get_http_minor(&c->parser) == 0)
    ten_buf_puts(out, "Connection: keep-alive\r\n");
  ten_buf_puts(out, "\r\n");
}

void ten__respond(ten__conn_t *c, int status, const char *content_type, const char *body,
                    size_t len, const char *extra_headers) {
  ten_buf_t out = TEN_BUF_INIT;
  response_head(c, &out, status, content_type, len, extra_headers);
  bool head_only = llhttp_get_method(&c->parser) == HTTP_HEAD;
  if (!head_only && len <= 16384) {
    ten_buf_append(&out, body, len);
    ten__conn_write_copy(c, out.data, out.len);
  } else {
    ten__conn_write_copy(c, out.data, out.len);
    if (!head_only) ten__conn_write_copy(c, body, len);
  }
  ten_buf_free(&out);
}

void ten__error_body(ten_buf_t *out, const char *message, const char *detail_json) {
  ten_buf_puts(out, "{\"error\":");
  ten_json_quote(out, message, strlen(message));
  if (detail_json && *detail_json) {
    ten_buf_putc(out, ',');
    ten_buf_puts(out, detail_json);
  }
  ten_buf_puts(out, "}\n");
}

/* An error answer for a request whose body may still be arriving: the rest
 * of the body is read and dropped (up to a limit) to keep the connection. */
static void send_error_and_discard(ten__conn_t *c, int status, const char *message,
                                   const char *detail_json, const char *extra_headers) {
  if (c->closing) return;
  ten_buf_t body = TEN_BUF_INIT;
  ten__error_body(&body, message, detail_json);
  if (!c->req_done) {
    c->mode = TEN_MODE_DISCARD;
    c->discarded = 0;
  }
  ten__respond(c, status, "application/json", body.data, body.len, extra_headers);
  ten_buf_free(&body);
  c->resp_done = true;
  ten__conn_exchange_maybe_done(c);
}

void ten__conn_error(ten__conn_t *c, int status, const char *message, const char *detail_json,
                     const char *extra_headers) {
  send_error_and_discard(c, status, message, detail_json, extra_headers);
}


/* The client's address for ten's own purposes: the peer, unless the peer is
 * a trusted proxy; then the rightmost X-Forwarded-For entry that is not one
 * (a client can prepend anything, but not what its proxies appended). */
static void resolve_client_ip(ten__conn_t *c) {
  const ten_settings_t *set = TEN__SETTINGS(c);
  snprintf(c->real_ip, sizeof c->real_ip, "%s", c->client_ip);
  c->peer_trusted = ten_cidr_match_any(set->trusted_proxies, set->trusted_proxy_count, c->client_ip);
  if (!c->peer_trusted) return;
  const ten__head_t *h = &c->head;
  for (int i = (int)h->count - 1; i >= 0; i--) {
    const ten__header_t *hd = &h->headers[i];
    if (!ten_strieq(h->arena.data + hd->name_off, hd->name_len, "x-forwarded-for")) continue;
    const char *v = h->arena.data + hd->value_off;
    size_t end = hd->value_len;
    while (end > 0) {
      size_t start = end;
      while (start > 0 && v[start - 1] != ',') start--;
      size_t a = start, z = end;
      while (a < z && (v[a] == ' ' || v[a] == '\t')) a++;
      while (z > a && (v[z - 1] == ' ' || v[z - 1] == '\t')) z--;
      char ip[48];
      if (z > a && z - a < sizeof ip) {
        memcpy(ip, v + a, z - a);
        ip[z - a] = '\0';
        snprintf(c->real_ip, sizeof c->real_ip, "%s", ip);
        if (!ten_cidr_match_any(set->trusted_proxies, set->trusted_proxy_count, ip)) return;
      }
      end = start ? start - 1 : 0;
    }
  }
}


/* ------------------------------------------------------------ routing */

static void host_detail(ten_buf_t *out, const ten__conn_t *c) {
  ten_buf_puts(out, "\"host\":");
  ten_json_quote(out, c->route.host, c->route.host_len);
}

static int count_headers(const ten__head_t *h, const char *name) {
  int n = 0;
  for (unsigned i = 0; i < h->count; i++)
    if (ten_strieq(h->arena.data + h->headers[i].name_off, h->headers[i].name_len, name)) n++;
  return n;
}

/* What llhttp lets through but we do not: whitespace inside a field name
 * ("Host : x" is a smuggling vector, RFC 9112 5.1). Trailing whitespace of
 * values is trimmed (it is not part of the value). */
static const char *check_and_trim_headers(ten__head_t *h) {
  for (unsigned i = 0; i < h->count; i++) {
    ten__header_t *hd = &h->headers[i];
    const char *name = h->arena.data + hd->name_off;
    for (uint32_t k = 0; k < hd->name_len; k++)
      if (name[k] == ' ' || name[k] == '\t') return "whitespace in a header field name";
    const char *value = h->arena.data + hd->value_off;
    while (hd->value_len && (value[hd->value_len - 1] == ' ' || value[hd->value_len - 1] == '\t'))
      hd->value_len--;
  }
  return NULL;
}

const char *ten__request_head_check(ten__conn_t *c) {
  const char *bad = check_and_trim_headers(&c->head);
  resolve_client_ip(c);
  size_t host_len = 0;
  const char *host = ten__head_get(&c->head, "host", &host_len);
  const char *domain = TEN__SETTINGS(c)->domain;
  if (host) ten_route_host(host, host_len, domain, strlen(domain), &c->route);
  return bad;
}

void ten__request_head(ten__conn_t *c) {
  ten_http_server_t *s = c->server;
  c->start_ns = ten_now_ns();
  c->resp_status = 0;
  c->recorded = false;
  s->stats.requests_total++;
  s->stats.requests_in_flight++;
  c->in_flight = true;
  c->keep_alive = llhttp_should_keep_alive(&c->parser) && !s->shutting_down &&
                  TEN__SETTINGS(c)->keepalive_timeout > 0;
  ten__conn_arm(c, TEN__BODY_TIMEOUT_MS);

  const char *bad = check_and_trim_headers(&c->head);
  resolve_client_ip(c);
  if (bad) {
    c->keep_alive = false;
    c->req_done = true; /* the framing cannot be trusted: read nothing more */
    char detail[128];
    snprintf(detail, sizeof detail, "\"detail\":\"%s\"", bad);
    send_error_and_discard(c, 400, "malformed request", detail, NULL);
    return;
  }
  int64_t max_body = TEN__SETTINGS(c)->max_body_size;
  if (max_body > 0 && (c->parser.flags & F_CONTENT_LENGTH) &&
      c->parser.content_length > (uint64_t)max_body) {
    /* Refused before a byte of it is read; the connection ends with the answer. */
    c->keep_alive = false;
    c->req_done = true;
    char detail[96];
    snprintf(detail, sizeof detail, "\"max_body_size\":%lld", (long long)max_body);
    send_error_and_discard(c, 413, "request body too large", detail, NULL);
    return;
  }

  if (llhttp_get_method(&c->parser) == HTTP_CONNECT) {
    c->keep_alive = false;
    send_error_and_discard(c, 405, "CONNECT is not supported", NULL, NULL);
    return;
  }
  /* An upgrade either becomes a tunnel (101) or ends with its response:
   * llhttp does not parse past an upgrade request. */
  c->upgrade = llhttp_get_upgrade(&c->parser) != 0;
  if (c->upgrade) c->keep_alive = false;

  size_t host_len = 0;
  const char *host = ten__head_get(&c->head, "host", &host_len);
  if (count_headers(&c->head, "host") > 1) {
    c->keep_alive = false;
    send_error_and_discard(c, 400, "more than one Host header", NULL, NULL);
    return;
  }
  if (!host) {
    c->keep_alive = false;
    send_error_and_discard(c, 400, "missing Host header", NULL, NULL);
    return;
  }
  const char *domain = s->config->settings.domain;
  ten_route_host(host, host_len, domain, strlen(domain), &c->route);

  /* The operator's per-request hook, if there is one, may pick the
   * instance itself; otherwise the Host decides. */
  char key[160];
  if (c->route.kind != TEN_ROUTE_BAD && c->route.kind != TEN_ROUTE_ROOT &&
      ten__proxy_route_hook(c, key, sizeof key)) {
    c->mode = TEN_MODE_PROXY;
    ten__proxy_start_key(c, key);
    return;
  }

  ten_buf_t detail = TEN_BUF_INIT;
  switch (c->route.kind) {
  case TEN_ROUTE_BAD:
    c->keep_alive = false;
    send_error_and_discard(c, 400, "invalid Host header", NULL, NULL);
    break;
  case TEN_ROUTE_ROOT:
    c->mode = TEN_MODE_LOCAL;
    c->local_body_off = c->head.arena.len;
    break; /* the handler runs once the body is in */
  case TEN_ROUTE_UNKNOWN:
    host_detail(&detail, c);
    ten_buf_printf(&detail, ",\"domain\":\"%s\"", domain);
    send_error_and_discard(c, 404, "unknown host", detail.data, NULL);
    break;
  case TEN_ROUTE_SERVICE:
  case TEN_ROUTE_INSTANCE:
    c->mode = TEN_MODE_PROXY;
    ten__proxy_start(c);
    break;
  }
  ten_buf_free(&detail);
}

/* ------------------------------------------------------------ the parse loop */

void ten__request_parse_error(ten__conn_t *c, llhttp_errno_t err) {
  c->keep_alive = false;
  c->req_done = true; /* nothing more will be parsed */
  if (c->mode == TEN_MODE_PROXY) {
    /* The body went bad halfway: the upstream got a partial request. */
    bool started = c->resp_started;
    ten__proxy_detach(c);
    c->mode = TEN_MODE_DISCARD;
    if (started) {
      ten__conn_abort(c);
      return;
    }
  }
  if (c->resp_done) {
    ten__conn_finish(c); /* already answered (e.g. a body too long to skip) */
    return;
  }
  int status = 400;
  const char *message = "malformed request";
  if (err == HPE_USER && c->obs_fold) {
    message = "obsolete line folding in a header (RFC 9112 5.2)";
  } else if (err == HPE_USER && c->body_too_large) {
    status = 413;
    message = "request body too large";
  } else if (err == HPE_USER && (c->head.too_large || c->head.too_many)) {
    status = 431;
    message = c->head.too_many ? "too many header fields" : "request head too large";
  } else if (err == HPE_USER && c->mode == TEN_MODE_LOCAL) {
    status = 413;
    message = "request body too large";
  }
  ten_buf_t detail = TEN_BUF_INIT;
  if (status == 400) {
    const char *reason = llhttp_get_error_reason(&c->parser);
    ten_buf_puts(&detail, "\"detail\":");
    ten_json_quote(&detail, reason ? reason : "", reason ? strlen(reason) : 0);
  }
  c->mode = TEN_MODE_DISCARD;
  send_error_and_discard(c, status, message, detail.data, NULL);
  ten_buf_free(&detail);
}

