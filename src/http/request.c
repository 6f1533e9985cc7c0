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
  c->strict_error = NULL;
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
  if (c->mode != TEN_MODE_HEAD) return 0; /* trailers: not forwarded (see forward.c) */
  return ten__head_append(&c->head, 1, at, len) ? HPE_USER : 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (c->mode != TEN_MODE_HEAD) return 0; /* trailers: not forwarded (see forward.c) */
  return ten__head_append(&c->head, 2, at, len) ? HPE_USER : 0;
}

static int on_headers_complete(llhttp_t *p) {
  ten__conn_t *c = p->data;
  c->pause = TEN_PAUSE_HEAD;
  return HPE_PAUSED;
}

/* The framing before these body bytes is checked before the bytes go
 * anywhere, so an instance never gets data that followed bad framing. */
static int check_body_framing(ten__conn_t *c, const char *end) {
  if (!c->body_chunked) return 0;
  const char *bad = ten_strict_chunked_scan(&c->body_scan, c->body_scan_pos,
                                            (size_t)(end - c->body_scan_pos));
  c->body_scan_pos = end;
  if (!bad) return 0;
  c->strict_error = bad;
  return HPE_USER;
}

static int on_body(llhttp_t *p, const char *at, size_t len) {
  ten__conn_t *c = p->data;
  if (check_body_framing(c, at + len)) return HPE_USER;
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
  } else if (c->mode == TEN_MODE_PROXY) {
    ten__proxy_body(c, c->rbuf, at, len);
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

void ten__request_reset_scan(ten__conn_t *c) {
  ten_strict_head_init(&c->head_scan);
  c->body_chunked = false;
}

llhttp_errno_t ten__request_execute(ten__conn_t *c, const char *start, size_t avail,
                                    const char **stop) {
  bool in_head = c->mode == TEN_MODE_HEAD;
  bool in_chunked_body = !in_head && !c->req_done && c->body_chunked;
  c->pause = TEN_PAUSE_NONE;
  c->body_scan_pos = start;
  llhttp_errno_t err = llhttp_execute(&c->parser, start, avail);
  *stop = ten__parse_stop(&c->parser, err, start, avail);
  if (c->strict_error) return HPE_USER; /* refused by on_body's check */
  bool failed = err != HPE_OK && err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE;
  const char *bad = NULL;
  if (in_head) {
    bad = ten_strict_head_scan(&c->head_scan, start, (size_t)(*stop - start));
    if (!bad && c->pause == TEN_PAUSE_HEAD && !c->head_scan.done)
      bad = "the head does not end with an empty line (CRLF CRLF)";
  } else if (in_chunked_body) {
    bad = ten_strict_chunked_scan(&c->body_scan, c->body_scan_pos,
                                  (size_t)(*stop - c->body_scan_pos));
    if (!bad && c->pause == TEN_PAUSE_DONE && !c->body_scan.done)
      bad = "the chunked body does not end with an empty line";
  }
  /* llhttp's own complaint, when it has one, points at the first bad byte. */
  if (bad && !failed) {
    c->strict_error = bad;
    return HPE_USER;
  }
  return err;
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

/* A request refused for its form: the status and what was wrong. */
typedef struct refusal {
  int status;
  const char *message;
} refusal_t;

static bool refuse(refusal_t *out, int status, const char *message) {
  out->status = status;
  out->message = message;
  return true;
}

/* Does the comma-separated list contain tok (case-insensitive)? */
static bool value_lists(const char *v, size_t len, const char *tok) {
  size_t i = 0;
  while (i < len) {
    while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t start = i;
    while (i < len && v[i] != ',') i++;
    size_t end = i;
    while (end > start && (v[end - 1] == ' ' || v[end - 1] == '\t')) end--;
    if (ten_strieq(v + start, end - start, tok)) return true;
  }
  return false;
}

/* The rules on a complete head that llhttp does not apply: whitespace in a
 * field name ("Host : x", RFC 9112 5.1), versions other than HTTP/1.0 and
 * 1.1, a Connection header naming a framing header or Host (those are never
 * dropped as hop-by-hop: the request is refused instead), Transfer-Encoding
 * other than exactly "chunked", or in HTTP/1.0. Trailing whitespace of
 * values is trimmed (it is not part of the value). Fills the body framing
 * ten will re-serialize (forward.c). */
static bool refused_head(ten__conn_t *c, refusal_t *why) {
  ten__head_t *h = &c->head;
  unsigned major = llhttp_get_http_major(&c->parser), minor = llhttp_get_http_minor(&c->parser);
  if (major != 1 || minor > 1) return refuse(why, 505, "HTTP version not supported");
  unsigned te_count = 0;
  const ten__header_t *te = NULL;
  for (unsigned i = 0; i < h->count; i++) {
    ten__header_t *hd = &h->headers[i];
    const char *name = h->arena.data + hd->name_off;
    for (uint32_t k = 0; k < hd->name_len; k++)
      if (name[k] == ' ' || name[k] == '\t')
        return refuse(why, 400, "whitespace in a header field name");
    const char *value = h->arena.data + hd->value_off;
    while (hd->value_len && (value[hd->value_len - 1] == ' ' || value[hd->value_len - 1] == '\t'))
      hd->value_len--;
    if (ten_strieq(name, hd->name_len, "connection")) {
      static const char *const framing[] = {"content-length", "transfer-encoding", "host"};
      for (size_t k = 0; k < TEN_ARRAY_SIZE(framing); k++)
        if (value_lists(value, hd->value_len, framing[k]))
          return refuse(why, 400, "the Connection header names a header that frames the request "
                                  "(Content-Length, Transfer-Encoding or Host)");
    } else if (ten_strieq(name, hd->name_len, "transfer-encoding")) {
      te_count++;
      te = hd;
    }
  }
  c->body_chunked = false;
  c->body_length = 0;
  if (te) {
    if (minor == 0) return refuse(why, 400, "Transfer-Encoding in an HTTP/1.0 request");
    if (te_count > 1) return refuse(why, 400, "more than one Transfer-Encoding header");
    if (!ten_strieq(h->arena.data + te->value_off, te->value_len, "chunked"))
      return refuse(why, 501, "only Transfer-Encoding: chunked is supported");
    c->body_chunked = true;
    ten_strict_chunked_init(&c->body_scan);
  } else if (c->parser.flags & F_CONTENT_LENGTH) {
    c->body_length = c->parser.content_length;
  }
  return false;
}

/* An absolute-form target (http://host/path) names the host itself: RFC
 * 9112 3.2.2 says to use it and ignore Host, so the request is routed by
 * the target's authority and forwarded in origin form (/path) with that
 * authority as its Host. Userinfo (user@host) is refused. */
static bool refused_absolute_form(ten__conn_t *c, refusal_t *why) {
  ten__head_t *h = &c->head;
  size_t len = h->target_len, skip;
  /* Room for a Host header's name and a leading '/' up front: t (and the
   * path copied below) must not move while they are read. */
  ten_buf_reserve(&h->arena, len + 8);
  const char *t = h->arena.data + h->target_off;
  if (len >= 7 && ten_strieq(t, 7, "http://")) skip = 7;
  else if (len >= 8 && ten_strieq(t, 8, "https://")) skip = 8;
  else return false;
  size_t auth_end = skip;
  while (auth_end < len && t[auth_end] != '/' && t[auth_end] != '?' && t[auth_end] != '#') auth_end++;
  if (auth_end == skip) return refuse(why, 400, "an absolute-form target without a host");
  if (memchr(t + skip, '@', auth_end - skip))
    return refuse(why, 400, "user information in the request target");
  uint32_t auth_off = h->target_off + (uint32_t)skip, auth_len = (uint32_t)(auth_end - skip);
  uint32_t path_off = h->target_off + (uint32_t)auth_end;
  uint32_t path_len = (uint32_t)(len - auth_end);
  bool needs_slash = path_len == 0 || t[auth_end] != '/';
  /* The Host ten forwards is the target's authority. */
  for (unsigned i = 0; i < h->count; i++) {
    ten__header_t *hd = &h->headers[i];
    if (!ten_strieq(h->arena.data + hd->name_off, hd->name_len, "host")) continue;
    hd->value_off = auth_off;
    hd->value_len = auth_len;
    auth_len = 0; /* done */
  }
  if (auth_len) {
    if (h->count == TEN_HTTP_MAX_HEADERS) return refuse(why, 431, "too many header fields");
    ten__header_t *hd = &h->headers[h->count++];
    hd->name_off = (uint32_t)h->arena.len;
    hd->name_len = 4;
    ten_buf_append(&h->arena, "Host", 4);
    hd->value_off = auth_off;
    hd->value_len = auth_len;
  }
  if (needs_slash) {
    /* "http://host" or "http://host?q": origin form starts with '/'. */
    uint32_t off = (uint32_t)h->arena.len;
    ten_buf_putc(&h->arena, '/');
    ten_buf_append(&h->arena, h->arena.data + path_off, path_len);
    path_off = off;
    path_len++;
  }
  h->target_off = path_off;
  h->target_len = path_len;
  return false;
}

const char *ten__request_head_check(ten__conn_t *c) {
  refusal_t why = {0, NULL};
  bool refused = refused_head(c, &why) || refused_absolute_form(c, &why);
  resolve_client_ip(c);
  size_t host_len = 0;
  const char *host = ten__head_get(&c->head, "host", &host_len);
  const char *domain = TEN__SETTINGS(c)->domain;
  if (host) ten_route_host(host, host_len, domain, strlen(domain), &c->route);
  return refused ? why.message : NULL;
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

  refusal_t why = {0, NULL};
  bool refused = refused_head(c, &why) || refused_absolute_form(c, &why);
  resolve_client_ip(c);
  if (refused) {
    c->keep_alive = false;
    c->req_done = true; /* the framing cannot be trusted: read nothing more */
    ten_buf_t detail = TEN_BUF_INIT;
    if (why.status == 400) {
      ten_buf_puts(&detail, "\"detail\":");
      ten_json_quote(&detail, why.message, strlen(why.message));
    }
    send_error_and_discard(c, why.status, why.status == 400 ? "malformed request" : why.message,
                           detail.data, NULL);
    ten_buf_free(&detail);
    return;
  }
  if (c->body_chunked || c->body_length > 0) ten__conn_arm_body_deadline(c);
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
  const char *detail_text = NULL;
  const char *reason = llhttp_get_error_reason(&c->parser);
  if (err == HPE_USER && c->strict_error) {
    detail_text = c->strict_error;
  } else if (err == HPE_INVALID_VERSION && reason &&
             (!strcmp(reason, "Invalid HTTP version") ||
              !strcmp(reason, "Expected HTTP/2 Connection Preface"))) {
    status = 505;
    message = "HTTP version not supported";
  } else if (err == HPE_USER && c->body_too_large) {
    status = 413;
    message = "request body too large";
  } else if (err == HPE_USER && c->head.target_too_large) {
    status = 414;
    message = "request target too long";
  } else if (err == HPE_USER && (c->head.too_large || c->head.too_many)) {
    status = 431;
    message = c->head.too_many ? "too many header fields" : "request head too large";
  } else if (err == HPE_USER && c->mode == TEN_MODE_LOCAL) {
    status = 413;
    message = "request body too large";
  }
  ten_buf_t detail = TEN_BUF_INIT;
  if (status == 400) {
    if (!detail_text) detail_text = reason ? reason : "";
    ten_buf_puts(&detail, "\"detail\":");
    ten_json_quote(&detail, detail_text, strlen(detail_text));
  }
  c->mode = TEN_MODE_DISCARD;
  send_error_and_discard(c, status, message, detail.data, NULL);
  ten_buf_free(&detail);
}

