/* forward.c: what ten sends onward.
 *
 * The request an instance gets is always re-serialized from what ten
 * parsed, never the client's framing: method, target (origin form), the
 * headers ten kept (hop-by-hop ones, and those the Connection header names,
 * dropped; X-Forwarded-* set), and ten's own framing — Content-Length with
 * the length ten read, or Transfer-Encoding: chunked with each piece of
 * body re-chunked by ten (upstream.c). Request trailers are not forwarded
 * (nginx does not forward them either). So whatever a client sends, the
 * instance parses exactly the requests ten parsed.
 *
 * The response head is rewritten for the client. Heads are written
 * straight into an iobuf, without allocating.
 */
#include "http/upstream.h"

#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ the request head */


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
bool ten__build_request_head(ten__conn_t *c, ten_iobuf_t *b, size_t *out_len) {
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
    /* ten frames the body itself (below), from what it parsed. */
    if (ten_strieq(name, hd->name_len, "content-length") ||
        ten_strieq(name, hd->name_len, "transfer-encoding"))
      continue;
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
  if (c->body_chunked) {
    HW_LIT(&w, "Transfer-Encoding: chunked\r\n");
  } else if (c->parser.flags & F_CONTENT_LENGTH) {
    char len[32];
    snprintf(len, sizeof len, "Content-Length: %llu\r\n", (unsigned long long)c->body_length);
    hw_str(&w, len);
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

/* The head the client gets: status line, end-to-end headers (a 101 keeps
 * its Upgrade), and our Connection header. */
void ten__write_response_head(head_writer_t *w, ten__upstream_t *up, int status, bool switching,
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
