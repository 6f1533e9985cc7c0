/* hello: the example app for tenement.
 *
 * A small single-threaded HTTP/1.1 server (libuv + llhttp) used by the tests,
 * the README demo and the benchmarks, where it is the shared backend behind
 * nginx, haproxy and `ten`.  It must never be the bottleneck, so the hot path
 * does no allocation after warm-up: responses are assembled in pooled write
 * blocks and flushed once per read, large bodies come from a shared static
 * pattern, and request bodies are streamed, never buffered.
 *
 * See README.md next to this file for the endpoints and the environment.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>

#include <uv.h>
#include "llhttp.h"

#define RBUF_SIZE     (64 * 1024)   /* per-connection read buffer */
#define HDR_LIMIT     (64 * 1024)   /* url + header bytes; beyond -> 431 */
#define MAX_HEADERS   128
#define SMALL_CAP     4000          /* write block sizes (two pools) */
#define BIG_CAP       (64 * 1024)
#define POOL_KEEP_SMALL 1024
#define POOL_KEEP_BIG   128
#define HIGH_WATER    (256 * 1024)  /* stop reading / producing above this */
#define LOW_WATER     (128 * 1024)  /* resume below this */
#define ZERO_COPY_MIN 4096          /* static data this large is not copied */
#define PATTERN_LEN   (64 * 1024)
#define LINGER_MS     2000
#define MAX_STREAM_CHUNK (16u << 20)
#define WS_GUID "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

#define MIN_OF(a, b) ((a) < (b) ? (a) : (b))
#define CONTAINER_OF(p, type, field) ((type *)((char *)(p) - offsetof(type, field)))

/* ------------------------------------------------------------------------ */
/* Types                                                                      */

/* A write request together with the bytes it sends; pooled by size class. */
struct wreq {
  uv_write_t req;
  struct wreq *next;      /* free list */
  struct conn *c;
  const char *ext;        /* optional zero-copy tail (static data) */
  size_t ext_len, len, cap;
  char data[];
};

struct buf { char *p; size_t len, cap; };

enum route {
  R_NONE, R_ROOT, R_HEALTH, R_HEALTH_FAIL, R_HEALTH_OK, R_ECHO, R_HEADERS,
  R_SLEEP, R_STREAM, R_BYTES, R_CRASH, R_LOG, R_EXIT, R_WS, R_NOT_FOUND
};

enum conn_state { C_OPEN, C_SHUTDOWN, C_CLOSED };

struct hdr { uint32_t name, name_len, val, val_len; };

/* Body generator for /bytes and /stream. */
struct gen {
  bool active, bytes, waiting;
  uint64_t left, sent;        /* /bytes */
  uint64_t n_left, index;     /* /stream */
  uint64_t size, interval_ms;
};

/* WebSocket frame parser state (server side: client frames are masked). */
struct ws {
  bool active, ok;
  uint8_t hdr[14], hlen;
  bool in_payload;
  uint8_t opcode, mask[4];
  uint64_t left, pos;
  uint8_t ctrl[125];
  uint8_t ctrl_len;
};

struct conn {
  union { uv_handle_t h; uv_stream_t s; uv_tcp_t tcp; uv_pipe_t pipe; } io;
  uv_timer_t timer;           /* /sleep, /stream intervals, lingering close */
  uv_shutdown_t sreq;
  llhttp_t parser;
  struct conn *prev, *next;
  int open_handles;
  enum conn_state state;
  bool reading, paused, busy, keep_alive, eof, lingering, in_msg, head;
  bool chunked, resp_started, exit_after, in_field, in_value;
  int exit_code, err_status;
  enum route route;
  size_t queued;              /* bytes handed to uv_write, not yet done */
  struct wreq *out;           /* block being filled, not yet submitted */
  char *hbuf;                 /* url, then header names and values */
  size_t hlen, hcap, url_len;
  struct hdr hdrs[MAX_HEADERS];
  unsigned nh;
  struct gen gen;
  struct ws ws;
  size_t rlen, roff;          /* unparsed bytes are rbuf[roff, rlen) */
  char rbuf[RBUF_SIZE];
};

/* The only global: loop, configuration, listener and shared buffers. */
static struct {
  uv_loop_t loop;
  union { uv_handle_t h; uv_stream_t s; uv_tcp_t tcp; uv_pipe_t pipe; } listener;
  bool listener_is_pipe, listener_open;
  uv_signal_t sigterm, sigint;
  uv_timer_t drain_timer;
  const char *service, *id;
  const char *unlink_path;    /* unix socket we created */
  char where[160];            /* "listening on ..." */
  char *root_body;            /* JSON for GET / */
  size_t root_len;
  bool healthy, stopping;
  int exit_code;
  uint64_t drain_ms;
  struct conn *conns;
  struct wreq *pool[2];
  unsigned pool_n[2];
  struct buf scratch;
  llhttp_settings_t settings;
  char pattern[PATTERN_LEN + 26];
} g;

/* ------------------------------------------------------------------------ */
/* Small helpers                                                              */

static void *xrealloc(void *p, size_t n) {
  void *q = realloc(p, n);
  if (!q) { fputs("hello: out of memory\n", stderr); abort(); }
  return q;
}

static void buf_reserve(struct buf *b, size_t extra) {
  if (b->len + extra <= b->cap) return;
  size_t cap = b->cap ? b->cap : 1024;
  while (cap < b->len + extra) cap *= 2;
  b->p = xrealloc(b->p, cap);
  b->cap = cap;
}

static void buf_put(struct buf *b, const char *s, size_t n) {
  buf_reserve(b, n);
  memcpy(b->p + b->len, s, n);
  b->len += n;
}

static void buf_puts(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* Appends JSON-escaped text (no quotes); bytes >= 0x80 pass through. */
static void buf_esc(struct buf *b, const char *s, size_t n, bool lower) {
  buf_reserve(b, n * 6 + 1);   /* +1: sprintf's terminator */
  char *o = b->p + b->len;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (ch == '"' || ch == '\\') { *o++ = '\\'; *o++ = (char)ch; }
    else if (ch < 0x20 || ch == 0x7f) o += sprintf(o, "\\u%04x", ch);
    else *o++ = (char)(lower && ch >= 'A' && ch <= 'Z' ? ch + 32 : ch);
  }
  b->len = (size_t)(o - b->p);
}

static void buf_json(struct buf *b, const char *s, size_t n, bool lower) {
  buf_put(b, "\"", 1);
  buf_esc(b, s, n, lower);
  buf_put(b, "\"", 1);
}

/* Parses a decimal number from a non-terminated span; false if invalid. */
static bool parse_u64(const char *s, size_t n, uint64_t *out) {
  uint64_t v = 0;
  if (n == 0 || n > 19) return false;
  for (size_t i = 0; i < n; i++) {
    if (s[i] < '0' || s[i] > '9') return false;
    v = v * 10 + (uint64_t)(s[i] - '0');
  }
  *out = v;
  return true;
}

static bool env_u64(const char *name, uint64_t *out) {
  const char *v = getenv(name);
  return v && *v && parse_u64(v, strlen(v), out);
}

static bool span_eq(const char *s, size_t n, const char *lit) {
  return strlen(lit) == n && memcmp(s, lit, n) == 0;
}

/* True if a comma-separated header value contains `tok` (case-insensitive). */
static bool has_token(const char *v, size_t n, const char *tok) {
  size_t tl = strlen(tok), i = 0;
  while (i < n) {
    while (i < n && (v[i] == ' ' || v[i] == '\t' || v[i] == ',')) i++;
    size_t s = i;
    while (i < n && v[i] != ',') i++;
    size_t e = i;
    while (e > s && (v[e - 1] == ' ' || v[e - 1] == '\t')) e--;
    if (e - s == tl && strncasecmp(v + s, tok, tl) == 0) return true;
  }
  return false;
}

/* ------------------------------------------------------------------------ */
/* SHA-1 and base64, only for the WebSocket handshake                         */

static uint32_t rol32(uint32_t x, int n) { return (x << n) | (x >> (32 - n)); }

static void sha1_block(uint32_t h[5], const uint8_t *p) {
  uint32_t w[80], a = h[0], b = h[1], c = h[2], d = h[3], e = h[4];
  for (int i = 0; i < 16; i++)
    w[i] = (uint32_t)p[4 * i] << 24 | (uint32_t)p[4 * i + 1] << 16 |
           (uint32_t)p[4 * i + 2] << 8 | p[4 * i + 3];
  for (int i = 16; i < 80; i++) w[i] = rol32(w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16], 1);
  for (int i = 0; i < 80; i++) {
    uint32_t f, k;
    if (i < 20) { f = (b & c) | (~b & d); k = 0x5A827999; }
    else if (i < 40) { f = b ^ c ^ d; k = 0x6ED9EBA1; }
    else if (i < 60) { f = (b & c) | (b & d) | (c & d); k = 0x8F1BBCDC; }
    else { f = b ^ c ^ d; k = 0xCA62C1D6; }
    uint32_t t = rol32(a, 5) + f + e + k + w[i];
    e = d; d = c; c = rol32(b, 30); b = a; a = t;
  }
  h[0] += a; h[1] += b; h[2] += c; h[3] += d; h[4] += e;
}

static void sha1(const void *data, size_t n, uint8_t out[20]) {
  uint32_t h[5] = {0x67452301, 0xEFCDAB89, 0x98BADCFE, 0x10325476, 0xC3D2E1F0};
  const uint8_t *p = data;
  uint8_t blk[128] = {0};
  size_t full = n & ~(size_t)63, rest = n - full;
  for (size_t i = 0; i < full; i += 64) sha1_block(h, p + i);
  memcpy(blk, p + full, rest);
  blk[rest] = 0x80;
  size_t tail = rest < 56 ? 64 : 128;
  uint64_t bits = (uint64_t)n * 8;
  for (int i = 0; i < 8; i++) blk[tail - 1 - i] = (uint8_t)(bits >> (8 * i));
  sha1_block(h, blk);
  if (tail == 128) sha1_block(h, blk + 64);
  for (int i = 0; i < 20; i++) out[i] = (uint8_t)(h[i / 4] >> (24 - 8 * (i % 4)));
}

static size_t base64(const uint8_t *in, size_t n, char *out) {
  static const char tab[] =
      "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  size_t o = 0;
  for (size_t i = 0; i < n; i += 3) {
    uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) |
                 (i + 2 < n ? in[i + 2] : 0);
    out[o++] = tab[v >> 18];
    out[o++] = tab[(v >> 12) & 63];
    out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
    out[o++] = i + 2 < n ? tab[v & 63] : '=';
  }
  out[o] = 0;
  return o;
}

/* ------------------------------------------------------------------------ */
/* Output: pooled write blocks, flushed once per batch of work                */

static struct wreq *wreq_get(bool big) {
  struct wreq *w = g.pool[big];
  if (w) {
    g.pool[big] = w->next;
    g.pool_n[big]--;
  } else {
    size_t cap = big ? BIG_CAP : SMALL_CAP;
    w = xrealloc(NULL, sizeof *w + cap);
    w->cap = cap;
  }
  w->len = w->ext_len = 0;
  w->ext = NULL;
  return w;
}

static void wreq_put(struct wreq *w) {
  bool big = w->cap == BIG_CAP;
  if (g.pool_n[big] >= (big ? POOL_KEEP_BIG : POOL_KEEP_SMALL)) { free(w); return; }
  w->next = g.pool[big];
  g.pool[big] = w;
  g.pool_n[big]++;
}

static size_t pending(const struct conn *c) {
  return c->queued + (c->out ? c->out->len : 0);
}

static void conn_abort(struct conn *c);
static void on_write(uv_write_t *req, int status);

static void flush(struct conn *c) {
  struct wreq *w = c->out;
  if (!w) return;
  c->out = NULL;
  if (c->state == C_CLOSED || (w->len == 0 && w->ext_len == 0)) { wreq_put(w); return; }
  uv_buf_t bufs[2] = {uv_buf_init(w->data, (unsigned)w->len),
                      uv_buf_init((char *)w->ext, (unsigned)w->ext_len)};
  w->c = c;
  int nb = w->ext_len ? (w->len ? 2 : 1) : 1;
  int r = uv_write(&w->req, &c->io.s, w->len ? bufs : bufs + 1, (unsigned)nb, on_write);
  if (r < 0) { wreq_put(w); conn_abort(c); return; }
  c->queued += w->len + w->ext_len;
}

/* Returns room for at least `min` bytes in the pending block; `hint` says
 * how much is coming, to pick the block size. */
static char *out_space(struct conn *c, size_t min, size_t hint, size_t *avail) {
  if (c->out && c->out->cap - c->out->len < min) flush(c);
  if (!c->out) c->out = wreq_get(hint > SMALL_CAP / 2 || min > SMALL_CAP);
  *avail = c->out->cap - c->out->len;
  return c->out->data + c->out->len;
}

static void out_write(struct conn *c, const void *p, size_t n) {
  const char *s = p;
  while (n > 0 && c->state != C_CLOSED) {
    size_t avail, k;
    char *d = out_space(c, 1, n, &avail);
    k = MIN_OF(avail, n);
    memcpy(d, s, k);
    c->out->len += k;
    s += k;
    n -= k;
  }
}

static void out_str(struct conn *c, const char *s) { out_write(c, s, strlen(s)); }

__attribute__((format(printf, 2, 3)))
static void out_printf(struct conn *c, const char *fmt, ...) {
  size_t avail;
  char *d = out_space(c, 256, 256, &avail);
  va_list ap;
  va_start(ap, fmt);
  int r = vsnprintf(d, avail, fmt, ap);
  va_end(ap);
  if (r >= 0 && (size_t)r >= avail) {     /* did not fit: new block, retry */
    d = out_space(c, (size_t)r + 1, (size_t)r + 1, &avail);
    va_start(ap, fmt);
    r = vsnprintf(d, avail, fmt, ap);
    va_end(ap);
  }
  if (r > 0) c->out->len += (size_t)r;
}

/* Static data is sent without copying when it is large enough to matter. */
static void out_static(struct conn *c, const char *p, size_t n) {
  if (n < ZERO_COPY_MIN) { out_write(c, p, n); return; }
  size_t avail;
  out_space(c, 0, 0, &avail);
  c->out->ext = p;
  c->out->ext_len = n;
  flush(c);
}

/* ------------------------------------------------------------------------ */
/* Connection lifecycle                                                       */

static void update_reading(struct conn *c);
static void conn_process(struct conn *c);
static void begin_shutdown(int code);

static void on_close(uv_handle_t *h) {
  struct conn *c = h->data;
  if (--c->open_handles > 0) return;
  if (c->prev) c->prev->next = c->next; else g.conns = c->next;
  if (c->next) c->next->prev = c->prev;
  if (c->out) wreq_put(c->out);
  bool exit_after = c->exit_after;     /* /exit whose client vanished early */
  int code = c->exit_code;
  free(c->hbuf);
  free(c);
  if (exit_after) begin_shutdown(code);
}

/* Immediate close; pending writes are cancelled. */
static void conn_abort(struct conn *c) {
  if (c->state == C_CLOSED) return;
  c->state = C_CLOSED;
  uv_close(&c->io.h, on_close);
  uv_close((uv_handle_t *)&c->timer, on_close);
}

static void on_linger_timeout(uv_timer_t *t) { conn_abort(t->data); }

static void on_shutdown(uv_shutdown_t *req, int status) {
  struct conn *c = req->data;
  if (c->state == C_CLOSED) return;
  if (c->exit_after) begin_shutdown(c->exit_code);
  if (status < 0 || c->eof || g.stopping) { conn_abort(c); return; }
  /* Lingering close: keep draining what the client still sends so that its
   * TCP stack does not get a RST that could destroy our last response. */
  c->lingering = true;
  c->reading = false;
  update_reading(c);
  uv_timer_start(&c->timer, on_linger_timeout, LINGER_MS, 0);
}

/* Graceful close: everything queued is sent first. */
static void conn_finish(struct conn *c) {
  if (c->state != C_OPEN) return;
  flush(c);
  if (c->state != C_OPEN) return;
  c->state = C_SHUTDOWN;
  uv_timer_stop(&c->timer);
  if (c->reading) uv_read_stop(&c->io.s);
  c->reading = false;
  c->sreq.data = c;
  if (uv_shutdown(&c->sreq, &c->io.s, on_shutdown) < 0) conn_abort(c);
}

static void on_alloc(uv_handle_t *h, size_t hint, uv_buf_t *b) {
  struct conn *c = h->data;
  *b = uv_buf_init(c->rbuf, RBUF_SIZE);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *b) {
  struct conn *c = s->data;
  if (nread == 0) return;
  if (c->lingering) { if (nread < 0) conn_abort(c); return; }
  if (c->state != C_OPEN) return;
  if (nread < 0) {
    if (nread != UV_EOF || c->in_msg || c->ws.active) { conn_abort(c); return; }
    /* Half-close after a complete request: answer it, then close. */
    c->eof = true;
    c->keep_alive = false;
    if (!c->busy) conn_finish(c);
    else update_reading(c);
    return;
  }
  c->roff = 0;
  c->rlen = (size_t)nread;
  conn_process(c);
}

/* Reading stops while a response is in progress (pipelined requests wait in
 * rbuf) or while too much output is queued (backpressure). */
static void update_reading(struct conn *c) {
  bool want;
  if (c->lingering) want = true;
  else if (c->state != C_OPEN || c->paused || c->eof || c->rlen) want = false;
  else want = pending(c) < (c->reading ? HIGH_WATER : LOW_WATER);
  if (want == c->reading) return;
  c->reading = want;
  if (want) uv_read_start(&c->io.s, on_alloc, on_read);
  else uv_read_stop(&c->io.s);
}

/* The current response is complete: close or go on with pipelined input. */
static void resp_done(struct conn *c) {
  c->busy = false;
  if (c->state != C_OPEN) return;
  if (!c->keep_alive) { conn_finish(c); return; }
  if (c->paused) { c->paused = false; llhttp_resume(&c->parser); }
  conn_process(c);
}

/* ------------------------------------------------------------------------ */
/* Responses                                                                  */

static const char *reason(int status) {
  switch (status) {
  case 200: return "OK";
  case 400: return "Bad Request";
  case 404: return "Not Found";
  case 405: return "Method Not Allowed";
  case 426: return "Upgrade Required";
  case 431: return "Request Header Fields Too Large";
  case 503: return "Service Unavailable";
  default: return "Unknown";
  }
}

/* clen >= 0: Content-Length; -1: chunked (or close-delimited for HTTP/1.0). */
static void resp_head(struct conn *c, int status, const char *ctype, int64_t clen,
                      const char *extra) {
  bool http11 = c->parser.http_major == 1 && c->parser.http_minor >= 1;
  c->resp_started = true;
  c->chunked = clen < 0 && http11;
  if (clen < 0 && !http11) c->keep_alive = false;
  out_printf(c, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\n", status, reason(status), ctype);
  if (clen >= 0) out_printf(c, "Content-Length: %lld\r\n", (long long)clen);
  else if (c->chunked) out_str(c, "Transfer-Encoding: chunked\r\n");
  out_printf(c, "X-Hello-Id: %s\r\n%s%s\r\n", g.id, extra ? extra : "",
             !c->keep_alive ? "Connection: close\r\n"
             : !http11      ? "Connection: keep-alive\r\n" : "");
}

static void respond(struct conn *c, int status, const char *ctype, const char *body,
                    size_t len, const char *extra) {
  resp_head(c, status, ctype, (int64_t)len, extra);
  if (!c->head) out_write(c, body, len);
}

static void respond_lit(struct conn *c, int status, const char *json, const char *extra) {
  respond(c, status, "application/json", json, strlen(json), extra);
}

__attribute__((format(printf, 3, 4)))
static void respond_json(struct conn *c, int status, const char *fmt, ...) {
  char body[512];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(body, sizeof body - 1, fmt, ap);
  va_end(ap);
  if (n < 0) n = 0;
  if ((size_t)n > sizeof body - 2) n = sizeof body - 2;
  body[n++] = '\n';
  respond(c, status, "application/json", body, (size_t)n, NULL);
}

static void chunk_head(struct conn *c, uint64_t n) {
  if (c->chunked) out_printf(c, "%llx\r\n", (unsigned long long)n);
}

static void chunk_tail(struct conn *c) {
  if (c->chunked) out_write(c, "\r\n", 2);
}

/* ------------------------------------------------------------------------ */
/* Request data                                                               */

static const char *hdr_get(struct conn *c, const char *name, size_t *len) {
  size_t nl = strlen(name);
  for (unsigned i = 0; i < c->nh; i++) {
    struct hdr *h = &c->hdrs[i];
    if (h->name_len == nl && strncasecmp(c->hbuf + h->name, name, nl) == 0) {
      *len = h->val_len;
      return c->hbuf + h->val;
    }
  }
  return NULL;
}

/* Splits the request target into path and query (absolute-form tolerated). */
static void url_parts(struct conn *c, const char **path, size_t *plen,
                      const char **query, size_t *qlen) {
  const char *u = c->hbuf, *end = c->hbuf + c->url_len;
  if (u < end && *u != '/') {
    const char *s = memmem(u, c->url_len, "://", 3);
    if (s) {
      s = memchr(s + 3, '/', (size_t)(end - s - 3));
      u = s ? s : end;
    }
  }
  const char *p = u;
  while (p < end && *p != '?' && *p != '#') p++;
  *path = u;
  *plen = (size_t)(p - u);
  *query = p < end && *p == '?' ? p + 1 : end;
  const char *q = *query;
  while (q < end && *q != '#') q++;
  *qlen = (size_t)(q - *query);
}

static bool query_get(struct conn *c, const char *key, const char **v, size_t *vlen) {
  const char *path, *q;
  size_t plen, qlen, kl = strlen(key);
  url_parts(c, &path, &plen, &q, &qlen);
  const char *end = q + qlen;
  while (q < end) {
    const char *amp = memchr(q, '&', (size_t)(end - q));
    const char *e = amp ? amp : end;
    if ((size_t)(e - q) > kl && memcmp(q, key, kl) == 0 && q[kl] == '=') {
      *v = q + kl + 1;
      *vlen = (size_t)(e - *v);
      return true;
    }
    q = e + 1;
  }
  return false;
}

static uint64_t query_u64(struct conn *c, const char *key, uint64_t def, uint64_t max) {
  const char *v;
  size_t vl = 0;
  uint64_t n;
  if (!query_get(c, key, &v, &vl) || !parse_u64(v, vl, &n)) return def;
  return n > max ? max : n;
}

/* Appends to the header store, enforcing the size limit. */
static int hstore(struct conn *c, const char *at, size_t n) {
  if (c->hlen + n > HDR_LIMIT) { c->err_status = 431; return -1; }
  if (c->hlen + n > c->hcap) {
    size_t cap = c->hcap ? c->hcap : 2048;
    while (cap < c->hlen + n) cap *= 2;
    c->hbuf = xrealloc(c->hbuf, cap);
    c->hcap = cap;
  }
  memcpy(c->hbuf + c->hlen, at, n);
  c->hlen += n;
  return 0;
}

/* ------------------------------------------------------------------------ */
/* Endpoints                                                                  */

/* The JSON view of the request, used by /headers to show what a proxy sent. */
static void respond_headers(struct conn *c) {
  struct buf *b = &g.scratch;
  char ver[16];
  b->len = 0;
  buf_puts(b, "{\"method\":");
  const char *m = llhttp_method_name(c->parser.method);
  buf_json(b, m, strlen(m), false);
  buf_puts(b, ",\"url\":");
  buf_json(b, c->hbuf, c->url_len, false);
  snprintf(ver, sizeof ver, "%u.%u", c->parser.http_major, c->parser.http_minor);
  buf_puts(b, ",\"http_version\":");
  buf_json(b, ver, strlen(ver), false);
  for (unsigned i = 0; i < c->nh; i++) {
    struct hdr *h = &c->hdrs[i];
    const char *name = c->hbuf + h->name;
    bool seen = false;
    for (unsigned j = 0; j < i && !seen; j++)
      seen = c->hdrs[j].name_len == h->name_len &&
             strncasecmp(c->hbuf + c->hdrs[j].name, name, h->name_len) == 0;
    if (seen) continue;
    buf_put(b, ",", 1);
    buf_json(b, name, h->name_len, true);
    buf_put(b, ":", 1);
    /* Join repeated headers with ", " into one JSON string. */
    buf_put(b, "\"", 1);
    bool first = true;
    for (unsigned j = i; j < c->nh; j++) {
      struct hdr *o = &c->hdrs[j];
      if (o->name_len != h->name_len || strncasecmp(c->hbuf + o->name, name, h->name_len))
        continue;
      if (!first) buf_put(b, ", ", 2);
      buf_esc(b, c->hbuf + o->val, o->val_len, false);
      first = false;
    }
    buf_put(b, "\"", 1);
  }
  buf_puts(b, "}\n");
  respond(c, 200, "application/json", b->p, b->len, NULL);
}

static bool gen_pump(struct conn *c);

static void on_gen_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  c->gen.waiting = false;
  if (gen_pump(c)) resp_done(c);
  else flush(c);
}

/* One /stream chunk: the label "chunk i\n" repeated to exactly `size` bytes. */
static void stream_chunk(struct conn *c) {
  struct gen *gn = &c->gen;
  char label[32];
  size_t ll = (size_t)snprintf(label, sizeof label, "chunk %llu\n",
                               (unsigned long long)gn->index);
  gn->index++;
  gn->n_left--;
  if (gn->size == 0) return;      /* an empty chunk would end the body */
  chunk_head(c, gn->size);
  for (uint64_t done = 0; done < gn->size && c->state == C_OPEN;) {
    size_t avail;
    char *d = out_space(c, 1, (size_t)MIN_OF(gn->size - done, (uint64_t)BIG_CAP), &avail);
    size_t k = (size_t)MIN_OF((uint64_t)avail, gn->size - done);
    for (size_t i = 0; i < k; i++) d[i] = label[(done + i) % ll];
    c->out->len += k;
    done += k;
  }
  chunk_tail(c);
}

/* Produces /bytes and /stream bodies until the write queue is full; returns
 * true once the whole body (with the chunked terminator) is queued.  Called
 * again from on_write as the queue drains, and from the interval timer. */
static bool gen_pump(struct conn *c) {
  struct gen *gn = &c->gen;
  if (gn->bytes) {
    while (gn->left > 0 && pending(c) < HIGH_WATER && c->state == C_OPEN) {
      size_t n = (size_t)MIN_OF(gn->left, (uint64_t)PATTERN_LEN);
      out_static(c, g.pattern + gn->sent % 26, n);
      gn->left -= n;
      gn->sent += n;
    }
    gn->active = gn->left > 0;
    return !gn->active;
  }
  while (gn->n_left > 0) {
    if (gn->waiting || pending(c) >= HIGH_WATER || c->state != C_OPEN) return false;
    stream_chunk(c);
    if (gn->interval_ms && gn->n_left) {
      gn->waiting = true;
      uv_timer_start(&c->timer, on_gen_timer, gn->interval_ms, 0);
    }
  }
  if (c->chunked) out_str(c, "0\r\n\r\n");
  gn->active = false;
  return true;
}

static void on_write(uv_write_t *req, int status) {
  struct wreq *w = CONTAINER_OF(req, struct wreq, req);
  struct conn *c = w->c;
  c->queued -= w->len + w->ext_len;
  wreq_put(w);
  if (status < 0) { conn_abort(c); return; }   /* peer went away: quietly */
  if (c->state != C_OPEN) return;
  if (c->gen.active && !c->gen.waiting && c->queued < LOW_WATER) {
    if (gen_pump(c)) { resp_done(c); return; }
    flush(c);
  }
  update_reading(c);
}

static void on_sleep_timer(uv_timer_t *t) {
  struct conn *c = t->data;
  respond_json(c, 200, "{\"slept_ms\":%llu}", (unsigned long long)c->gen.interval_ms);
  resp_done(c);
}

static void start_stream(struct conn *c, bool bytes) {
  struct gen *gn = &c->gen;
  memset(gn, 0, sizeof *gn);
  gn->bytes = bytes;
  if (bytes) {
    gn->left = query_u64(c, "n", 0, (uint64_t)1 << 50);
    resp_head(c, 200, "application/octet-stream", (int64_t)gn->left, NULL);
  } else {
    gn->n_left = query_u64(c, "n", 5, 1000000000);
    gn->size = query_u64(c, "size", 16, MAX_STREAM_CHUNK);
    gn->interval_ms = query_u64(c, "interval_ms", 0, 3600 * 1000);
    resp_head(c, 200, "text/plain", -1, NULL);
  }
  if (c->head) return;
  gn->active = true;
  c->busy = !gen_pump(c);
}

/* /log: lines are written synchronously; a slow reader may block us. */
static void do_log(struct conn *c) {
  uint64_t n = query_u64(c, "n", 1, 100000000), size = query_u64(c, "size", 0, 1 << 20);
  const char *v;
  size_t vl = 0;
  FILE *f = query_get(c, "stream", &v, &vl) && span_eq(v, vl, "stderr") ? stderr : stdout;
  struct buf *b = &g.scratch;
  b->len = 0;
  buf_reserve(b, size + strlen(g.service) + strlen(g.id) + 64);
  for (uint64_t i = 1; i <= n; i++) {
    int r = snprintf(b->p, b->cap, "hello log line %llu service=%s id=%s",
                     (unsigned long long)i, g.service, g.id);
    size_t len = r < 0 ? 0 : MIN_OF((size_t)r, b->cap - 1);
    if (size) {               /* exactly `size` bytes including the newline */
      if (len > size - 1) len = size - 1;
      memset(b->p + len, '.', size - 1 - len);
      len = size - 1;
    }
    b->p[len++] = '\n';
    fwrite(b->p, 1, len, f);
  }
  fflush(f);
  respond_json(c, 200, "{\"lines\":%llu}", (unsigned long long)n);
}

static void respond_not_found(struct conn *c) {
  const char *path, *q;
  size_t plen, qlen;
  struct buf *b = &g.scratch;
  url_parts(c, &path, &plen, &q, &qlen);
  b->len = 0;
  buf_puts(b, "{\"error\":\"not found\",\"path\":");
  buf_json(b, path, plen, false);
  buf_puts(b, "}\n");
  respond(c, 404, "application/json", b->p, b->len, NULL);
}

/* ------------------------------------------------------------------------ */
/* WebSocket echo (RFC 6455)                                                  */

static void ws_handshake(struct conn *c) {
  size_t kl = 0, ul = 0;
  const char *key = hdr_get(c, "sec-websocket-key", &kl);
  const char *up = hdr_get(c, "upgrade", &ul);
  if (!key || kl == 0 || kl > 64 || !up || !has_token(up, ul, "websocket") ||
      !llhttp_get_upgrade(&c->parser) || c->parser.method != HTTP_GET ||
      c->parser.http_minor < 1)
    return;                   /* not a valid upgrade: dispatch answers 426 */
  char in[64 + sizeof WS_GUID], acc[32];
  uint8_t dig[20];
  memcpy(in, key, kl);
  memcpy(in + kl, WS_GUID, sizeof WS_GUID - 1);
  sha1(in, kl + sizeof WS_GUID - 1, dig);
  base64(dig, sizeof dig, acc);
  out_printf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nX-Hello-Id: %s\r\n\r\n",
             acc, g.id);
  c->ws.ok = true;
  c->resp_started = true;
}

static void ws_frame_head(struct conn *c, uint8_t b0, uint64_t n) {
  uint8_t h[10];
  size_t hl = 2;
  h[0] = b0;
  if (n < 126) {
    h[1] = (uint8_t)n;
  } else if (n < 65536) {
    h[1] = 126;
    h[2] = (uint8_t)(n >> 8);
    h[3] = (uint8_t)n;
    hl = 4;
  } else {
    h[1] = 127;
    for (int i = 0; i < 8; i++) h[2 + i] = (uint8_t)(n >> (56 - 8 * i));
    hl = 10;
  }
  out_write(c, h, hl);
}

/* Sends a close frame with `code` and closes once it is written. */
static void ws_close(struct conn *c, uint16_t code) {
  uint8_t p[2] = {(uint8_t)(code >> 8), (uint8_t)code};
  ws_frame_head(c, 0x88, 2);
  out_write(c, p, 2);
  conn_finish(c);
}

static void ws_control(struct conn *c) {
  struct ws *w = &c->ws;
  if (w->opcode == 0x8) {     /* close: echo the status code, then close */
    size_t n = MIN_OF(w->ctrl_len, (uint8_t)2);
    ws_frame_head(c, 0x88, n);
    out_write(c, w->ctrl, n);
    conn_finish(c);
  } else if (w->opcode == 0x9) {
    ws_frame_head(c, 0x8A, w->ctrl_len);
    out_write(c, w->ctrl, w->ctrl_len);
  }                           /* pong: nothing to do */
}

/* Parses client frames incrementally.  Data frames are echoed as they
 * arrive (header first, then payload pieces), so frames of any size and
 * fragmented messages pass through with constant memory. */
static void ws_feed(struct conn *c, uint8_t *p, size_t n) {
  struct ws *w = &c->ws;
  while (n > 0 && c->state == C_OPEN) {
    if (!w->in_payload) {
      w->hdr[w->hlen++] = *p++;
      n--;
      if (w->hlen < 2) continue;
      if (!(w->hdr[1] & 0x80)) { ws_close(c, 1002); return; }  /* must be masked */
      uint8_t len7 = w->hdr[1] & 0x7f;
      size_t need = 2 + (len7 == 126 ? 2 : len7 == 127 ? 8 : 0) + 4;
      if (w->hlen < need) continue;
      uint64_t len = len7;
      if (len7 == 126) len = (uint64_t)w->hdr[2] << 8 | w->hdr[3];
      if (len7 == 127) {
        len = 0;
        for (int i = 0; i < 8; i++) len = len << 8 | w->hdr[2 + i];
      }
      memcpy(w->mask, w->hdr + need - 4, 4);
      w->opcode = w->hdr[0] & 0x0f;
      bool fin = w->hdr[0] & 0x80, control = w->opcode & 0x8;
      if ((w->hdr[0] & 0x70) || (len >> 63) || (w->opcode > 2 && w->opcode < 8) ||
          w->opcode > 10 || (control && (!fin || len > 125))) {
        ws_close(c, 1002);
        return;
      }
      w->hlen = 0;
      w->left = len;
      w->pos = 0;
      w->ctrl_len = 0;
      w->in_payload = true;
      if (!control) ws_frame_head(c, w->hdr[0], len);  /* same FIN + opcode */
    } else {
      size_t k = (size_t)MIN_OF((uint64_t)n, w->left);
      for (size_t i = 0; i < k; i++) p[i] ^= w->mask[(w->pos + i) & 3];
      if (w->opcode & 0x8) {
        memcpy(w->ctrl + w->ctrl_len, p, k);
        w->ctrl_len = (uint8_t)(w->ctrl_len + k);
      } else {
        out_write(c, p, k);
      }
      p += k;
      n -= k;
      w->pos += k;
      w->left -= k;
    }
    if (w->in_payload && w->left == 0) {
      w->in_payload = false;
      if (w->opcode & 0x8) ws_control(c);
    }
  }
}

/* ------------------------------------------------------------------------ */
/* HTTP parsing and dispatch                                                  */

static enum route route_of(const char *p, size_t n) {
  static const struct { const char *path; enum route r; } tab[] = {
    {"/", R_ROOT}, {"/health", R_HEALTH}, {"/health/fail", R_HEALTH_FAIL},
    {"/health/ok", R_HEALTH_OK}, {"/echo", R_ECHO}, {"/headers", R_HEADERS},
    {"/sleep", R_SLEEP}, {"/stream", R_STREAM}, {"/bytes", R_BYTES},
    {"/crash", R_CRASH}, {"/log", R_LOG}, {"/exit", R_EXIT}, {"/ws", R_WS},
  };
  for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
    if (span_eq(p, n, tab[i].path)) return tab[i].r;
  return R_NOT_FOUND;
}

static void dispatch(struct conn *c) {
  bool post = c->parser.method == HTTP_POST;
  switch (c->route) {
  case R_ROOT:
    respond(c, 200, "application/json", g.root_body, g.root_len, NULL);
    break;
  case R_HEALTH:
    if (g.healthy) respond_json(c, 200, "{\"status\":\"ok\"}");
    else respond_json(c, 503, "{\"status\":\"unhealthy\"}");
    break;
  case R_HEALTH_FAIL:
  case R_HEALTH_OK:
    if (!post) {
      respond_lit(c, 405, "{\"error\":\"method not allowed\"}\n", "Allow: POST\r\n");
      break;
    }
    g.healthy = c->route == R_HEALTH_OK;
    respond_json(c, 200, "{\"healthy\":%s}", g.healthy ? "true" : "false");
    break;
  case R_ECHO:                /* body was streamed by on_body */
    if (c->chunked && !c->head) out_str(c, "0\r\n\r\n");
    break;
  case R_HEADERS:
    respond_headers(c);
    break;
  case R_SLEEP:
    c->gen.interval_ms = query_u64(c, "ms", 0, 24 * 3600 * 1000);
    c->busy = uv_timer_start(&c->timer, on_sleep_timer, c->gen.interval_ms, 0) == 0;
    break;
  case R_STREAM:
  case R_BYTES:
    start_stream(c, c->route == R_BYTES);
    break;
  case R_CRASH:
    fflush(stdout);
    fflush(stderr);
    _exit(3);
  case R_LOG:
    do_log(c);
    break;
  case R_EXIT:                /* keep_alive is off: we exit once it is sent */
    c->exit_code = (int)query_u64(c, "code", 0, 255);
    c->exit_after = true;
    respond_json(c, 200, "{\"exit\":%d}", c->exit_code);
    break;
  case R_WS:
    if (!c->ws.ok) {
      respond_lit(c, 426, "{\"error\":\"websocket upgrade required\"}\n",
                  "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n");
    }
    break;
  case R_NONE:
  case R_NOT_FOUND:
    respond_not_found(c);
    break;
  }
}

#define CONN(p) ((struct conn *)(p)->data)

static int on_message_begin(llhttp_t *p) {
  struct conn *c = CONN(p);
  c->in_msg = true;
  c->hlen = c->url_len = 0;
  c->nh = 0;
  c->in_field = c->in_value = false;
  c->route = R_NONE;
  c->err_status = 0;
  c->resp_started = c->chunked = c->head = false;
  return 0;
}

static int on_url(llhttp_t *p, const char *at, size_t n) {
  CONN(p)->url_len += n;
  return hstore(CONN(p), at, n);
}

static int on_header_field(llhttp_t *p, const char *at, size_t n) {
  struct conn *c = CONN(p);
  if (!c->in_field) {
    if (c->nh == MAX_HEADERS) { c->err_status = 431; return -1; }
    struct hdr *h = &c->hdrs[c->nh++];
    h->name = h->val = (uint32_t)c->hlen;
    h->name_len = h->val_len = 0;
    c->in_field = true;
  }
  c->hdrs[c->nh - 1].name_len += (uint32_t)n;
  return hstore(c, at, n);
}

static int on_header_field_complete(llhttp_t *p) {
  CONN(p)->in_field = false;
  return 0;
}

static int on_header_value(llhttp_t *p, const char *at, size_t n) {
  struct conn *c = CONN(p);
  struct hdr *h = &c->hdrs[c->nh - 1];
  if (!c->in_value) {
    h->val = (uint32_t)c->hlen;
    h->val_len = 0;
    c->in_value = true;
  }
  h->val_len += (uint32_t)n;
  return hstore(c, at, n);
}

static int on_header_value_complete(llhttp_t *p) {
  struct conn *c = CONN(p);
  struct hdr *h = &c->hdrs[c->nh - 1];
  while (h->val_len && (c->hbuf[h->val + h->val_len - 1] == ' ' ||
                        c->hbuf[h->val + h->val_len - 1] == '\t'))
    h->val_len--;
  c->in_value = false;
  return 0;
}

static int on_headers_complete(llhttp_t *p) {
  struct conn *c = CONN(p);
  const char *path, *q, *v;
  size_t plen = 0, qlen = 0, vl = 0;
  if (c->state != C_OPEN) return 0;
  url_parts(c, &path, &plen, &q, &qlen);
  c->route = route_of(path, plen);
  c->head = p->method == HTTP_HEAD;
  c->keep_alive = llhttp_should_keep_alive(p) && !g.stopping && c->route != R_EXIT;
  if (c->route == R_ECHO && (v = hdr_get(c, "x-echo-headers", &vl)) && span_eq(v, vl, "1"))
    c->route = R_HEADERS;
  /* We always read the body, so a client waiting for 100 may proceed. */
  bool has_body = (p->flags & F_CHUNKED) || p->content_length > 0;
  if (has_body && p->http_minor >= 1 && (v = hdr_get(c, "expect", &vl)) &&
      vl == 12 && strncasecmp(v, "100-continue", 12) == 0)
    out_str(c, "HTTP/1.1 100 Continue\r\n\r\n");
  if (c->route == R_ECHO)
    resp_head(c, 200, "application/octet-stream",
              (p->flags & F_CHUNKED) ? -1 : (int64_t)p->content_length, NULL);
  else if (c->route == R_WS)
    ws_handshake(c);
  return 0;
}

static int on_body(llhttp_t *p, const char *at, size_t n) {
  struct conn *c = CONN(p);
  if (c->route != R_ECHO || c->head) return 0;
  chunk_head(c, n);
  out_write(c, at, n);
  chunk_tail(c);
  return 0;
}

/* Pipelining: parsing pauses while a response is still being produced (or
 * before closing), so responses go out in request order. */
static int on_message_complete(llhttp_t *p) {
  struct conn *c = CONN(p);
  c->in_msg = false;
  if (c->state != C_OPEN) return 0;
  dispatch(c);
  c->resp_started = false;
  if (c->route == R_WS && c->ws.ok) return 0;   /* llhttp pauses for upgrade */
  if (c->busy || !c->keep_alive) {
    c->paused = true;
    return HPE_PAUSED;
  }
  return 0;
}

static void bad_request(struct conn *c) {
  if (c->resp_started) { conn_abort(c); return; }
  int status = c->err_status ? c->err_status : 400;
  c->keep_alive = false;
  c->head = false;
  respond_json(c, status, "{\"error\":\"%s\"}",
               status == 431 ? "request header fields too large" : "bad request");
  conn_finish(c);
}

/* Feeds rbuf[roff, rlen) to llhttp or, after an upgrade, to the WebSocket
 * parser; then flushes the output produced and decides about reading. */
static void conn_process(struct conn *c) {
  while (c->state == C_OPEN && !c->paused && c->roff < c->rlen) {
    char *p = c->rbuf + c->roff;
    size_t n = c->rlen - c->roff;
    if (c->ws.active) {
      ws_feed(c, (uint8_t *)p, n);
      c->roff = c->rlen;
      break;
    }
    llhttp_errno_t err = llhttp_execute(&c->parser, p, n);
    if (err == HPE_OK) { c->roff = c->rlen; break; }
    if (err != HPE_PAUSED && err != HPE_PAUSED_UPGRADE) {
      if (c->state == C_OPEN) bad_request(c);
      return;
    }
    c->roff = (size_t)(llhttp_get_error_pos(&c->parser) - c->rbuf);
    if (err == HPE_PAUSED_UPGRADE) {
      if (c->ws.ok) c->ws.active = true;
      else llhttp_resume_after_upgrade(&c->parser);   /* upgrade declined */
    }
  }
  if (c->roff >= c->rlen) c->roff = c->rlen = 0;
  if (c->state != C_OPEN) return;
  if (c->paused && !c->busy) { conn_finish(c); return; }  /* paused to close */
  flush(c);
  update_reading(c);
}

/* ------------------------------------------------------------------------ */
/* Listener, signals, shutdown                                                */

static void on_connection(uv_stream_t *srv, int status) {
  if (status < 0) {
    fprintf(stderr, "hello: accept: %s\n", uv_strerror(status));
    return;
  }
  struct conn *c = xrealloc(NULL, sizeof *c);
  memset(c, 0, offsetof(struct conn, rbuf));
  if (g.listener_is_pipe) uv_pipe_init(&g.loop, &c->io.pipe, 0);
  else uv_tcp_init(&g.loop, &c->io.tcp);
  uv_timer_init(&g.loop, &c->timer);
  c->io.h.data = c->timer.data = c;
  c->open_handles = 2;
  c->next = g.conns;
  if (g.conns) g.conns->prev = c;
  g.conns = c;
  llhttp_init(&c->parser, HTTP_REQUEST, &g.settings);
  c->parser.data = c;
  c->keep_alive = true;
  if (uv_accept(srv, &c->io.s) < 0) { conn_abort(c); return; }
  if (!g.listener_is_pipe) uv_tcp_nodelay(&c->io.tcp, 1);
  update_reading(c);
}

static void on_drain_timeout(uv_timer_t *t) {
  for (struct conn *c = g.conns; c; c = c->next) conn_abort(c);
}

/* Stop accepting; close idle connections now, busy ones after their current
 * response; whatever is left when the drain timer fires is cut off. */
static void begin_shutdown(int code) {
  if (g.stopping) return;
  g.stopping = true;
  g.exit_code = code;
  if (g.listener_open) uv_close(&g.listener.h, NULL);
  g.listener_open = false;
  for (struct conn *c = g.conns; c; c = c->next) {
    if (c->state == C_SHUTDOWN && c->lingering) conn_abort(c);
    else if (c->state != C_OPEN) continue;
    else if (c->ws.active) ws_close(c, 1001);
    else if (!c->in_msg && !c->busy) conn_finish(c);
    else c->keep_alive = false;
  }
  uv_timer_start(&g.drain_timer, on_drain_timeout, g.drain_ms, 0);
}

static void on_signal(uv_signal_t *s, int signum) {
  if (g.stopping) on_drain_timeout(NULL);     /* second signal: no waiting */
  else begin_shutdown(0);
}

static void describe_addr(const struct sockaddr *sa) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (sa->sa_family == AF_UNIX) {
    snprintf(g.where, sizeof g.where, "%s", ((const struct sockaddr_un *)sa)->sun_path);
  } else if (sa->sa_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const void *)sa;
    uv_ip6_name(a, host, sizeof host);
    snprintf(g.where, sizeof g.where, "[%s]:%u", host, ntohs(a->sin6_port));
  } else {
    const struct sockaddr_in *a = (const void *)sa;
    uv_ip4_name(a, host, sizeof host);
    snprintf(g.where, sizeof g.where, "%s:%u", host, ntohs(a->sin_port));
  }
}

/* systemd-style socket activation: an already listening socket on fd 3. */
static bool use_activation(void) {
  uint64_t nfds, pid;
  if (!env_u64("LISTEN_FDS", &nfds) || nfds < 1) return false;
  if (getenv("LISTEN_PID") && (!env_u64("LISTEN_PID", &pid) || pid != (uint64_t)getpid()))
    return false;
  unsetenv("LISTEN_FDS");
  unsetenv("LISTEN_PID");
  unsetenv("LISTEN_FDNAMES");
  struct sockaddr_storage ss;
  socklen_t sl = sizeof ss;
  memset(&ss, 0, sizeof ss);
  if (getsockname(3, (struct sockaddr *)&ss, &sl) < 0) {
    fprintf(stderr, "hello: LISTEN_FDS set but fd 3 is not a socket: %s\n", strerror(errno));
    exit(1);
  }
  int r;
  g.listener_is_pipe = ss.ss_family == AF_UNIX;
  if (g.listener_is_pipe) {
    uv_pipe_init(&g.loop, &g.listener.pipe, 0);
    r = uv_pipe_open(&g.listener.pipe, 3);
  } else {
    uv_tcp_init(&g.loop, &g.listener.tcp);
    r = uv_tcp_open(&g.listener.tcp, 3);
  }
  g.listener_open = true;
  if (r < 0) {
    fprintf(stderr, "hello: fd 3: %s\n", uv_strerror(r));
    exit(1);
  }
  describe_addr((struct sockaddr *)&ss);
  return true;
}

static int bind_unix(const char *path) {
  if (strlen(path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) return UV_ENAMETOOLONG;
  if (unlink(path) < 0 && errno != ENOENT) return uv_translate_sys_error(errno);
  g.listener_is_pipe = true;
  uv_pipe_init(&g.loop, &g.listener.pipe, 0);
  g.listener_open = true;
  int r = uv_pipe_bind(&g.listener.pipe, path);
  if (r == 0) g.unlink_path = path;
  snprintf(g.where, sizeof g.where, "%s", path);
  return r;
}

static int bind_tcp(const char *host, uint64_t port) {
  struct sockaddr_storage ss;
  int r = strchr(host, ':') ? uv_ip6_addr(host, (int)port, (struct sockaddr_in6 *)&ss)
                            : uv_ip4_addr(host, (int)port, (struct sockaddr_in *)&ss);
  if (r < 0) return r;
  uv_tcp_init(&g.loop, &g.listener.tcp);
  g.listener_open = true;
  if ((r = uv_tcp_bind(&g.listener.tcp, (struct sockaddr *)&ss, 0)) < 0) return r;
  int sl = sizeof ss;
  if ((r = uv_tcp_getsockname(&g.listener.tcp, (struct sockaddr *)&ss, &sl)) < 0) return r;
  describe_addr((struct sockaddr *)&ss);
  return 0;
}

static void usage(void) {
  fputs("usage: hello [--socket PATH | --port N] [--host ADDR]\n"
        "Listens on the first of: --socket/--port, socket activation (LISTEN_FDS,\n"
        "fd 3), $SOCKET (unix socket path), $PORT (TCP on $HOST or 127.0.0.1).\n"
        "Env: TENEMENT_SERVICE, TENEMENT_ID, HELLO_START_DELAY_MS, HELLO_FAIL_START,\n"
        "HELLO_UNHEALTHY, HELLO_DRAIN_MS.\n", stderr);
  exit(2);
}

static void build_root_body(void) {
  struct buf b = {0};
  char pid[32];
  buf_puts(&b, "{\"service\":");
  buf_json(&b, g.service, strlen(g.service), false);
  buf_puts(&b, ",\"id\":");
  buf_json(&b, g.id, strlen(g.id), false);
  snprintf(pid, sizeof pid, ",\"pid\":%ld}\n", (long)getpid());
  buf_puts(&b, pid);
  g.root_body = b.p;
  g.root_len = b.len;
}

static void init_settings(void) {
  llhttp_settings_init(&g.settings);
  g.settings.on_message_begin = on_message_begin;
  g.settings.on_url = on_url;
  g.settings.on_header_field = on_header_field;
  g.settings.on_header_field_complete = on_header_field_complete;
  g.settings.on_header_value = on_header_value;
  g.settings.on_header_value_complete = on_header_value_complete;
  g.settings.on_headers_complete = on_headers_complete;
  g.settings.on_body = on_body;
  g.settings.on_message_complete = on_message_complete;
}

int main(int argc, char **argv) {
  const char *opt_socket = NULL, *opt_port = NULL, *opt_host = NULL;
  for (int i = 1; i < argc; i++) {
    if (i + 1 < argc && strcmp(argv[i], "--socket") == 0) opt_socket = argv[++i];
    else if (i + 1 < argc && strcmp(argv[i], "--port") == 0) opt_port = argv[++i];
    else if (i + 1 < argc && strcmp(argv[i], "--host") == 0) opt_host = argv[++i];
    else usage();
  }
  signal(SIGPIPE, SIG_IGN);
  g.service = getenv("TENEMENT_SERVICE") && *getenv("TENEMENT_SERVICE")
                  ? getenv("TENEMENT_SERVICE") : "hello";
  g.id = getenv("TENEMENT_ID") && *getenv("TENEMENT_ID") ? getenv("TENEMENT_ID") : "default";
  for (const char *s = g.id; *s; s++)     /* it goes into a response header */
    if ((unsigned char)*s < 0x20 || *s == 0x7f) {
      fputs("hello: TENEMENT_ID contains control characters\n", stderr);
      return 2;
    }
  const char *fail = getenv("HELLO_FAIL_START");
  if (fail && strcmp(fail, "1") == 0) {
    fprintf(stderr, "hello: service=%s id=%s failing to start (HELLO_FAIL_START=1)\n",
            g.service, g.id);
    return 1;
  }
  uint64_t delay;
  if (env_u64("HELLO_START_DELAY_MS", &delay) && delay > 0) {
    struct timespec ts = {(time_t)(delay / 1000), (long)(delay % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
  }
  const char *unhealthy = getenv("HELLO_UNHEALTHY");
  g.healthy = !(unhealthy && strcmp(unhealthy, "1") == 0);
  if (!env_u64("HELLO_DRAIN_MS", &g.drain_ms)) g.drain_ms = 5000;
  for (size_t i = 0; i < sizeof g.pattern; i++) g.pattern[i] = (char)('a' + i % 26);
  init_settings();
  build_root_body();
  uv_loop_init(&g.loop);

  const char *sock = opt_socket, *host = opt_host ? opt_host : getenv("HOST");
  const char *port_s = opt_port;
  bool activated = false;
  if (!sock && !port_s && !(activated = use_activation())) {
    sock = getenv("SOCKET") && *getenv("SOCKET") ? getenv("SOCKET") : NULL;
    port_s = sock ? NULL : getenv("PORT");
  }
  int r = 0;
  uint64_t port;
  if (activated) {
    r = 0;
  } else if (sock) {
    r = bind_unix(sock);
  } else if (port_s && *port_s) {
    if (!parse_u64(port_s, strlen(port_s), &port) || port > 65535) usage();
    r = bind_tcp(host && *host ? host : "127.0.0.1", port);
  } else {
    usage();
  }
  if (r == 0) r = uv_listen(&g.listener.s, 4096, on_connection);
  if (r < 0) {
    fprintf(stderr, "hello: cannot listen on %s: %s\n",
            sock ? sock : g.where[0] ? g.where : port_s, uv_strerror(r));
    if (g.unlink_path) unlink(g.unlink_path);
    return 1;
  }

  uv_signal_init(&g.loop, &g.sigterm);
  uv_signal_init(&g.loop, &g.sigint);
  uv_signal_start(&g.sigterm, on_signal, SIGTERM);
  uv_signal_start(&g.sigint, on_signal, SIGINT);
  uv_timer_init(&g.loop, &g.drain_timer);
  /* None of these keep the loop alive: it ends when the listener and all
   * connections are closed. */
  uv_unref((uv_handle_t *)&g.sigterm);
  uv_unref((uv_handle_t *)&g.sigint);
  uv_unref((uv_handle_t *)&g.drain_timer);

  printf("hello: service=%s id=%s pid=%ld listening on %s\n", g.service, g.id,
         (long)getpid(), g.where);
  fflush(stdout);

  uv_run(&g.loop, UV_RUN_DEFAULT);

  uv_close((uv_handle_t *)&g.sigterm, NULL);
  uv_close((uv_handle_t *)&g.sigint, NULL);
  uv_close((uv_handle_t *)&g.drain_timer, NULL);
  uv_run(&g.loop, UV_RUN_DEFAULT);
  if ((r = uv_loop_close(&g.loop)) != 0)
    fprintf(stderr, "hello: uv_loop_close: %s\n", uv_strerror(r));
  for (int i = 0; i < 2; i++)
    while (g.pool[i]) {
      struct wreq *w = g.pool[i];
      g.pool[i] = w->next;
      free(w);
    }
  free(g.scratch.p);
  free(g.root_body);
  if (g.unlink_path) unlink(g.unlink_path);
  fflush(stdout);
  return g.exit_code;
}
