/* framing_property: the property test for request framing (issue 8).
 *
 * A generator sends streams of requests — well-formed ones and ones bent in
 * the ways request smuggling is made of — through a real `ten serve` to a
 * backend that records every request it parses. The invariants:
 *
 *   1. The backend parses every byte ten sends with strict rules (llhttp
 *      plus ten's own strict scanners): ten only ever emits well-formed
 *      requests with one framing header.
 *   2. The backend answered exactly as many requests as the clients received
 *      backend responses, each backend response reached exactly one client,
 *      and it answered a request that client sent, in the order it sent
 *      them (a smuggled request would answer a target nobody sent, or land
 *      on the wrong connection).
 *   3. A stream with no bent request is answered whole: every request by
 *      the backend, with the body the client meant.
 *
 * The same binary is the backend: `framing_property --backend` (ten starts
 * it as the instance; it listens on $SOCKET).
 *
 *   framing_property            FRAMING_STREAMS=400 FRAMING_SEED=1
 * Needs TEN_BIN (set by CTest). Deterministic for a seed.
 */
#include <errno.h>
#include <fcntl.h>
#include <llhttp.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "http/strict.h"

/* ------------------------------------------------------------ helpers */

static void die(const char *fmt, ...) __attribute__((format(printf, 1, 2), noreturn));
static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "framing_property: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\n");
  va_end(ap);
  exit(2);
}

typedef struct buf {
  char *data;
  size_t len, cap;
} buf_t;

static void buf_add(buf_t *b, const void *p, size_t n) {
  if (n == 0 && b->data) return;
  if (b->len + n + 1 > b->cap) {
    b->cap = (b->len + n + 1) * 2;
    b->data = realloc(b->data, b->cap);
    if (!b->data) die("out of memory");
  }
  if (n) memcpy(b->data + b->len, p, n);
  b->len += n;
  b->data[b->len] = '\0';
}
static void buf_str(buf_t *b, const char *s) { buf_add(b, s, strlen(s)); }
static void buf_fmt(buf_t *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_fmt(buf_t *b, const char *fmt, ...) {
  char tmp[4096];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  buf_add(b, tmp, (size_t)n);
}

static uint64_t fnv1a(uint64_t h, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)p[i]) * 1099511628211ull;
  return h;
}
#define FNV_START 14695981039346656037ull

static bool strieq(const char *a, size_t alen, const char *b) {
  return alen == strlen(b) && strncasecmp(a, b, alen) == 0;
}

/* ------------------------------------------------------------ the backend */

typedef struct bconn {
  int fd;
  llhttp_t parser;
  ten_strict_head_t head_scan;
  ten_strict_chunked_t body_scan;
  bool in_head, chunked;
  int paused; /* 1 head, 2 message */
  char target[512];
  size_t target_len;
  char field[64];
  size_t field_len;
  int last; /* 1 field, 2 value */
  int cl_count, te_count, host_count;
  bool te_chunked;
  uint64_t body_len, body_hash;
  char value[8192];
  size_t value_len;
  buf_t out;
} bconn_t;

static unsigned long backend_seq;
static int record_fd = -1, error_fd = -1;

static void backend_error(bconn_t *b, const char *what) {
  char line[600];
  int n = snprintf(line, sizeof line, "%s (target %.*s)\n", what, (int)b->target_len, b->target);
  if (write(error_fd, line, (size_t)n) < 0) _exit(3);
}

static void header_done(bconn_t *b, const char *value, size_t len) {
  if (strieq(b->field, b->field_len, "content-length")) b->cl_count++;
  if (strieq(b->field, b->field_len, "host")) b->host_count++;
  if (strieq(b->field, b->field_len, "transfer-encoding")) {
    b->te_count++;
    b->te_chunked = strieq(value, len, "chunked");
  }
}

static int b_url(llhttp_t *p, const char *at, size_t len) {
  bconn_t *b = p->data;
  if (b->target_len + len < sizeof b->target) {
    memcpy(b->target + b->target_len, at, len);
    b->target_len += len;
  }
  return 0;
}
static int b_field(llhttp_t *p, const char *at, size_t len) {
  bconn_t *b = p->data;
  if (b->paused == 1 || !b->in_head) return 0; /* trailers */
  if (b->last == 2) header_done(b, b->value, b->value_len);
  if (b->last != 1) b->field_len = 0;
  if (b->field_len + len < sizeof b->field) {
    memcpy(b->field + b->field_len, at, len);
    b->field_len += len;
  }
  b->last = 1;
  b->value_len = 0;
  return 0;
}
static int b_value(llhttp_t *p, const char *at, size_t len) {
  bconn_t *b = p->data;
  if (!b->in_head) return 0;
  if (b->value_len + len < sizeof b->value) {
    memcpy(b->value + b->value_len, at, len);
    b->value_len += len;
  }
  b->last = 2;
  return 0;
}
static int b_headers_complete(llhttp_t *p) {
  bconn_t *b = p->data;
  if (b->last == 2) header_done(b, b->value, b->value_len);
  b->paused = 1;
  return HPE_PAUSED;
}
static int b_body(llhttp_t *p, const char *at, size_t len) {
  bconn_t *b = p->data;
  b->body_len += len;
  b->body_hash = fnv1a(b->body_hash, at, len);
  return 0;
}
static int b_complete(llhttp_t *p) {
  bconn_t *b = p->data;
  b->paused = 2;
  return HPE_PAUSED;
}

static llhttp_settings_t backend_settings;

static void bconn_reset(bconn_t *b) {
  ten_strict_head_init(&b->head_scan);
  b->in_head = true;
  b->chunked = false;
  b->target_len = b->field_len = 0;
  b->last = 0;
  b->cl_count = b->te_count = b->host_count = 0;
  b->te_chunked = false;
  b->body_len = 0;
  b->body_hash = FNV_START;
  b->value_len = 0;
}

static unsigned seq_parity; /* instance b numbers its requests odd, a even */

/* false: close the connection */
static bool backend_feed(bconn_t *b, const char *data, size_t len) {
  static const char nothing[1];
  const char *p = data, *end = data + len;
  bool resume = false;
  while (p < end || resume) {
    resume = false;
    const char *start = p < end ? p : nothing;
    size_t avail = (size_t)(end - p);
    b->paused = 0;
    llhttp_errno_t e = llhttp_execute(&b->parser, start, avail);
    const char *stop = e == HPE_OK ? start + avail : llhttp_get_error_pos(&b->parser);
    if (e != HPE_OK && e != HPE_PAUSED) {
      char what[256];
      snprintf(what, sizeof what, "ten sent bytes llhttp refuses: %s",
               llhttp_get_error_reason(&b->parser));
      backend_error(b, what);
      return false;
    }
    const char *bad = NULL;
    if (b->in_head) {
      bad = ten_strict_head_scan(&b->head_scan, start, (size_t)(stop - start));
      if (!bad && b->paused == 1 && !b->head_scan.done) bad = "head not ended by CRLF CRLF";
    } else if (b->chunked) {
      bad = ten_strict_chunked_scan(&b->body_scan, start, (size_t)(stop - start));
      if (!bad && b->paused == 2 && !b->body_scan.done) bad = "chunked body not ended";
    }
    if (bad) {
      backend_error(b, bad);
      return false;
    }
    if (avail) p = stop;
    if (e != HPE_PAUSED) continue;
    llhttp_resume(&b->parser);
    if (b->paused == 1) {
      /* One framing header, exactly "chunked" if it is Transfer-Encoding. */
      if (b->cl_count + b->te_count > 1) backend_error(b, "more than one framing header");
      if (b->te_count && !b->te_chunked) backend_error(b, "Transfer-Encoding is not exactly chunked");
      if (b->host_count != 1) backend_error(b, "not exactly one Host header");
      if (b->parser.http_major != 1 || b->parser.http_minor != 1) backend_error(b, "not HTTP/1.1");
      b->in_head = false;
      b->chunked = b->te_count > 0;
      if (b->chunked) ten_strict_chunked_init(&b->body_scan);
      resume = true; /* llhttp finishes a bodiless message on the next call */
    } else if (b->paused == 2) {
      unsigned long seq = ++backend_seq * 2 + seq_parity;
      char line[700];
      int n = snprintf(line, sizeof line, "%lu %.*s %llu %016llx\n", seq, (int)b->target_len,
                       b->target, (unsigned long long)b->body_len,
                       (unsigned long long)b->body_hash);
      if (write(record_fd, line, (size_t)n) < 0) _exit(3);
      buf_fmt(&b->out,
              "HTTP/1.1 200 OK\r\nX-Seq: %lu\r\nX-Target: %.*s\r\nX-Body-Len: %llu\r\n"
              "X-Body-Hash: %016llx\r\nContent-Length: 0\r\n\r\n",
              seq, (int)b->target_len, b->target, (unsigned long long)b->body_len,
              (unsigned long long)b->body_hash);
      bconn_reset(b);
    }
  }
  return true;
}

static _Noreturn void backend_main(void) {
  const char *path = getenv("SOCKET");
  const char *dir = getenv("FRAMING_DIR");
  if (!path || !dir) die("backend: SOCKET and FRAMING_DIR must be set");
  char file[4096];
  snprintf(file, sizeof file, "%s/record", dir);
  record_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  snprintf(file, sizeof file, "%s/errors", dir);
  error_fd = open(file, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
  if (record_fd < 0 || error_fd < 0) die("backend: cannot open record files");
  const char *id = getenv("TENEMENT_ID");
  seq_parity = id && !strcmp(id, "b");
  llhttp_settings_init(&backend_settings);
  backend_settings.on_url = b_url;
  backend_settings.on_header_field = b_field;
  backend_settings.on_header_value = b_value;
  backend_settings.on_headers_complete = b_headers_complete;
  backend_settings.on_body = b_body;
  backend_settings.on_message_complete = b_complete;

  int lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  unlink(path);
  if (lfd < 0 || bind(lfd, (struct sockaddr *)&a, sizeof a) < 0 || listen(lfd, 128) < 0)
    die("backend: cannot listen on %s: %s", path, strerror(errno));
  signal(SIGPIPE, SIG_IGN);
  enum { MAXC = 512 };
  static bconn_t *conns[MAXC];
  size_t nconns = 0;
  for (;;) {
    struct pollfd pfd[MAXC + 1];
    pfd[0] = (struct pollfd){.fd = lfd, .events = POLLIN};
    for (size_t i = 0; i < nconns; i++)
      pfd[i + 1] = (struct pollfd){.fd = conns[i]->fd,
                                   .events = (short)(POLLIN | (conns[i]->out.len ? POLLOUT : 0))};
    if (poll(pfd, nconns + 1, -1) < 0) {
      if (errno == EINTR) continue;
      die("backend: poll: %s", strerror(errno));
    }
    if (pfd[0].revents & POLLIN) {
      int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
      if (fd >= 0 && nconns < MAXC) {
        bconn_t *b = calloc(1, sizeof *b);
        b->fd = fd;
        llhttp_init(&b->parser, HTTP_REQUEST, &backend_settings);
        b->parser.data = b;
        bconn_reset(b);
        conns[nconns++] = b;
      } else if (fd >= 0) {
        close(fd);
      }
    }
    for (size_t i = nconns; i-- > 0;) {
      bconn_t *b = conns[i];
      short re = pfd[i + 1].revents;
      bool keep = true;
      if (re & (POLLIN | POLLHUP | POLLERR)) {
        char tmp[65536];
        ssize_t n = read(b->fd, tmp, sizeof tmp);
        if (n <= 0) keep = false;
        else keep = backend_feed(b, tmp, (size_t)n);
      }
      if (keep && b->out.len) {
        ssize_t n = write(b->fd, b->out.data, b->out.len);
        if (n > 0) {
          memmove(b->out.data, b->out.data + n, b->out.len - (size_t)n);
          b->out.len -= (size_t)n;
        } else if (n < 0 && errno != EAGAIN) {
          keep = false;
        }
      }
      if (!keep) {
        close(b->fd);
        free(b->out.data);
        free(b);
        conns[i] = conns[--nconns];
      }
    }
  }
}

/* ------------------------------------------------------------ the generator */

static uint64_t rng_state;
static uint32_t rnd(void) {
  rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
  return (uint32_t)(rng_state >> 33);
}
static uint32_t below(uint32_t n) { return n ? rnd() % n : 0; }
static bool chance(uint32_t percent) { return below(100) < percent; }

#define MAX_REQ 8

typedef struct planned {
  char target[96];
  uint64_t body_len, body_hash;
} planned_t;

typedef struct stream {
  buf_t bytes;
  size_t cuts[32]; /* where to split the sends */
  unsigned ncuts;
  planned_t req[MAX_REQ];
  unsigned nreq;
  bool bent; /* some request was bent: only the safety invariants apply */
  const char *bend; /* which */
} stream_t;

static const char *const methods[] = {"GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"};

static void random_body(buf_t *body, unsigned max) {
  unsigned n = below(max + 1);
  for (unsigned i = 0; i < n; i++) {
    char ch = (char)(chance(5) ? below(256) : 'a' + below(26));
    buf_add(body, &ch, 1);
  }
  if (chance(10)) buf_str(body, "GET /smuggled HTTP/1.1\r\nHost: a.rec.localhost\r\n\r\n");
}

/* Bends of a request: each names a way request smuggling has worked. */
static const char *const bends[] = {
    "connection-names-cl", "connection-names-te", "connection-names-host", "duplicate-cl",
    "cl-and-te",           "te-http10",           "obs-fold",             "bare-cr",
    "empty-name",          "chunk-no-crlf",       "bad-chunk-size",       "http2-version",
    "absolute-other",      "space-before-colon",  "lf-only",              "cl-too-long",
    "cl-too-short",        "te-twice",            "te-gzip",              "two-hosts",
    "nul-in-value",        "trailer-fold",        "huge-chunk",           "cl-list",
    "te-space-colon",      "expect-continue",     "te-uppercase",         "chunk-ext-ctl",
    "fold-split",          "cr-at-end",
};
#define NBENDS (sizeof bends / sizeof bends[0])

static void gen_request(stream_t *s, unsigned stream_no, unsigned k, const char *bend, bool last,
                        char inst) {
  planned_t *pl = &s->req[s->nreq++];
  snprintf(pl->target, sizeof pl->target, "/t/%u/%u", stream_no, k);
  const char *method = methods[below(6)];
  bool is = bend != NULL;
#define BEND(name) (is && !strcmp(bend, name))
  buf_t body = {0};
  bool has_body = strcmp(method, "GET") && strcmp(method, "DELETE") ? chance(80) : chance(10);
  if (BEND("chunk-no-crlf") || BEND("bad-chunk-size") || BEND("te-http10") || BEND("cl-and-te") ||
      BEND("trailer-fold") || BEND("huge-chunk") || BEND("te-twice") || BEND("te-gzip") ||
      BEND("chunk-ext-ctl") || BEND("te-uppercase"))
    has_body = true;
  if (has_body) random_body(&body, chance(20) ? 3000 : 40);
  bool chunked = has_body && (chance(50) || BEND("te-http10") || BEND("cl-and-te") ||
                              BEND("chunk-no-crlf") || BEND("bad-chunk-size") ||
                              BEND("trailer-fold") || BEND("huge-chunk") || BEND("te-twice") ||
                              BEND("te-gzip") || BEND("chunk-ext-ctl") || BEND("te-uppercase"));
  pl->body_len = body.len;
  pl->body_hash = fnv1a(FNV_START, body.data ? body.data : "", body.len);

  buf_t *o = &s->bytes;
  const char *eol = BEND("lf-only") ? "\n" : "\r\n";
  if (BEND("absolute-other"))
    buf_fmt(o, "%s http://%c.rec.localhost%s HTTP/1.1%s", method, inst == 'a' ? 'b' : 'a',
            pl->target, eol);
  else
    buf_fmt(o, "%s %s %s%s", method, pl->target,
            BEND("http2-version") ? "HTTP/2.0" : BEND("te-http10") ? "HTTP/1.0" : "HTTP/1.1", eol);
  buf_fmt(o, "Host: %c.rec.localhost%s", inst, eol);
  if (BEND("two-hosts")) buf_fmt(o, "Host: %c.rec.localhost%s", inst == 'a' ? 'b' : 'a', eol);
  if (chance(30)) buf_fmt(o, "X-Random: %u%s", rnd(), eol);
  if (BEND("obs-fold")) buf_fmt(o, "X-Folded: a%s  b%s", eol, eol);
  if (BEND("fold-split")) {
    buf_fmt(o, "X-Folded: a%s", eol);
    if (s->ncuts < 32) s->cuts[s->ncuts++] = o->len; /* the fold arrives in a later segment */
    buf_fmt(o, "\tb%s", eol);
  }
  if (BEND("bare-cr")) buf_str(o, "X-A: 1\r\rX-B: 2\r\n");
  if (BEND("empty-name")) buf_fmt(o, ": nameless%s", eol);
  if (BEND("space-before-colon")) buf_fmt(o, "X-Space : 1%s", eol);
  if (BEND("nul-in-value")) buf_add(o, "X-Nul: a\0b\r\n", 12);
  if (BEND("connection-names-cl")) buf_fmt(o, "Connection: keep-alive, Content-Length%s", eol);
  if (BEND("connection-names-te")) buf_fmt(o, "Connection: transfer-encoding%s", eol);
  if (BEND("connection-names-host")) buf_fmt(o, "Connection: Host%s", eol);
  if (BEND("expect-continue")) buf_fmt(o, "Expect: 100-continue%s", eol);
  if (BEND("te-space-colon")) buf_fmt(o, "Transfer-Encoding : chunked%s", eol);
  if (last) buf_fmt(o, "Connection: close%s", eol);
  if (chunked) {
    const char *te = BEND("te-gzip") ? "gzip, chunked" : BEND("te-uppercase") ? "Chunked" : "chunked";
    buf_fmt(o, "Transfer-Encoding: %s%s", te, eol);
    if (BEND("te-twice")) buf_fmt(o, "Transfer-Encoding: chunked%s", eol);
    if (BEND("cl-and-te")) buf_fmt(o, "Content-Length: %zu%s", body.len, eol);
  } else if (has_body || chance(10)) {
    size_t cl = body.len;
    if (BEND("cl-too-long")) cl += 1 + below(20);
    if (BEND("cl-too-short") && cl) cl -= 1 + below((uint32_t)cl);
    if (BEND("cl-list")) buf_fmt(o, "Content-Length: %zu, %zu%s", cl, cl, eol);
    else buf_fmt(o, "Content-Length: %zu%s", cl, eol);
    if (BEND("duplicate-cl")) buf_fmt(o, "Content-Length: %zu%s", cl + below(2), eol);
  }
  buf_str(o, BEND("cr-at-end") ? "\r" : eol);
  if (chunked) {
    size_t off = 0;
    while (off < body.len) {
      size_t n = 1 + below((uint32_t)(body.len - off));
      if (BEND("chunk-ext-ctl") && off == 0) buf_fmt(o, "%zx;x=\x01\r\n", n);
      else if (chance(10)) buf_fmt(o, "%zx;ext=1\r\n", n);
      else buf_fmt(o, "%zx\r\n", n);
      buf_add(o, body.data + off, n);
      if (s->ncuts < 32 && chance(20)) s->cuts[s->ncuts++] = o->len;
      buf_str(o, BEND("chunk-no-crlf") && off + n == body.len ? "XX" : "\r\n");
      off += n;
    }
    if (BEND("bad-chunk-size")) buf_str(o, "zz\r\n");
    if (BEND("huge-chunk")) buf_str(o, "ffffffffffffffffff\r\n");
    buf_str(o, "0\r\n");
    if (BEND("trailer-fold")) buf_str(o, "X-T: 1\r\n 2\r\n");
    else if (chance(10)) buf_str(o, "X-Trailer: 1\r\n");
    buf_str(o, "\r\n");
  } else if (has_body) {
    buf_add(o, body.data, body.len);
  }
  if (s->ncuts < 32 && chance(30)) s->cuts[s->ncuts++] = below((uint32_t)o->len + 1);
  free(body.data);
#undef BEND
}

static void gen_stream(stream_t *s, unsigned stream_no) {
  memset(s, 0, sizeof *s);
  unsigned n = 1 + below(MAX_REQ);
  char inst = below(2) ? 'a' : 'b'; /* two instances: two backends, two pools */
  int bent_at = chance(60) ? (int)below(n) : -1;
  for (unsigned k = 0; k < n; k++) {
    const char *bend = (int)k == bent_at ? bends[below(NBENDS)] : NULL;
    if (bend) {
      s->bent = true;
      s->bend = bend;
    }
    gen_request(s, stream_no, k, bend, k == n - 1, inst);
  }
}

/* ------------------------------------------------------------ the client */

typedef struct got {
  unsigned long seqs[64];
  char targets[64][96];
  uint64_t lens[64], hashes[64];
  unsigned backend, ours;
  int statuses[64];
  bool bad_response;
  char hdr_field[32];
  size_t hdr_field_len;
  char hdr_value[128];
  size_t hdr_value_len;
  int last;
  unsigned long seq;
  char target[96];
  uint64_t len, hash;
} got_t;

static void got_header(got_t *g) {
  g->hdr_value[g->hdr_value_len] = '\0';
  if (strieq(g->hdr_field, g->hdr_field_len, "x-seq")) g->seq = strtoul(g->hdr_value, NULL, 10);
  if (strieq(g->hdr_field, g->hdr_field_len, "x-target"))
    snprintf(g->target, sizeof g->target, "%.95s", g->hdr_value);
  if (strieq(g->hdr_field, g->hdr_field_len, "x-body-len")) g->len = strtoull(g->hdr_value, NULL, 10);
  if (strieq(g->hdr_field, g->hdr_field_len, "x-body-hash")) g->hash = strtoull(g->hdr_value, NULL, 16);
}
static int r_field(llhttp_t *p, const char *at, size_t len) {
  got_t *g = p->data;
  if (g->last == 2) got_header(g);
  if (g->last != 1) g->hdr_field_len = g->hdr_value_len = 0;
  if (g->hdr_field_len + len < sizeof g->hdr_field) {
    memcpy(g->hdr_field + g->hdr_field_len, at, len);
    g->hdr_field_len += len;
  }
  g->last = 1;
  return 0;
}
static int r_value(llhttp_t *p, const char *at, size_t len) {
  got_t *g = p->data;
  if (g->hdr_value_len + len < sizeof g->hdr_value - 1) {
    memcpy(g->hdr_value + g->hdr_value_len, at, len);
    g->hdr_value_len += len;
  }
  g->last = 2;
  return 0;
}
static int r_headers_complete(llhttp_t *p) {
  got_t *g = p->data;
  if (g->last == 2) got_header(g);
  return 0;
}
static int r_begin(llhttp_t *p) {
  got_t *g = p->data;
  g->last = 0;
  g->seq = 0;
  g->target[0] = '\0';
  g->len = g->hash = 0;
  return 0;
}
static int r_complete(llhttp_t *p) {
  got_t *g = p->data;
  unsigned i = g->backend + g->ours;
  if (i < 64) g->statuses[i] = p->status_code;
  if (g->seq) {
    if (g->backend < 64) {
      g->seqs[g->backend] = g->seq;
      snprintf(g->targets[g->backend], sizeof g->targets[0], "%s", g->target);
      g->lens[g->backend] = g->len;
      g->hashes[g->backend] = g->hash;
    }
    g->backend++;
  } else {
    g->ours++;
  }
  return 0;
}

static int connect_to(int port) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                          .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
    die("cannot connect to ten on port %d: %s", port, strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

static int cmp_size(const void *a, const void *b) {
  size_t x = *(const size_t *)a, y = *(const size_t *)b;
  return x < y ? -1 : x > y;
}

/* Sends the stream in pieces and reads every response until ten closes. */
static void run_stream(int port, stream_t *s, got_t *g) {
  int fd = connect_to(port);
  llhttp_settings_t st;
  llhttp_settings_init(&st);
  st.on_message_begin = r_begin;
  st.on_header_field = r_field;
  st.on_header_value = r_value;
  st.on_headers_complete = r_headers_complete;
  st.on_message_complete = r_complete;
  llhttp_t parser;
  llhttp_init(&parser, HTTP_RESPONSE, &st);
  memset(g, 0, sizeof *g);
  parser.data = g;
  qsort(s->cuts, s->ncuts, sizeof s->cuts[0], cmp_size);
  size_t sent = 0;
  unsigned cut = 0;
  bool writing = true;
  fcntl(fd, F_SETFL, O_NONBLOCK);
  for (;;) {
    size_t until = s->bytes.len;
    while (cut < s->ncuts && s->cuts[cut] <= sent) cut++;
    if (cut < s->ncuts) until = s->cuts[cut];
    struct pollfd pfd = {.fd = fd, .events = (short)(POLLIN | (writing && sent < s->bytes.len ? POLLOUT : 0))};
    int pr = poll(&pfd, 1, 20000);
    if (pr == 0) die("ten neither answered nor closed within 20 s (stream %s)", s->bend ? s->bend : "plain");
    if (pr < 0 && errno == EINTR) continue;
    if (pfd.revents & POLLOUT) {
      ssize_t n = write(fd, s->bytes.data + sent, until - sent);
      if (n > 0) {
        sent += (size_t)n;
        if (sent < s->bytes.len && sent == until) usleep(200); /* let the segment go alone */
      } else if (n < 0 && errno != EAGAIN) {
        writing = false; /* ten closed its side: what it answered is still to be read */
      }
    }
    if (pfd.revents & (POLLIN | POLLHUP | POLLERR)) {
      char tmp[65536];
      ssize_t n = read(fd, tmp, sizeof tmp);
      if (n == 0 || (n < 0 && errno != EAGAIN)) break;
      if (n > 0) {
        llhttp_errno_t e = llhttp_execute(&parser, tmp, (size_t)n);
        if (e != HPE_OK) {
          g->bad_response = true;
          break;
        }
      }
    }
  }
  close(fd);
}

/* ------------------------------------------------------------ ten */

static pid_t ten_pid;
static char workdir[256];

static int ten_status = -1;

static void stop_ten(void) {
  if (ten_pid > 0) {
    kill(ten_pid, SIGTERM);
    while (waitpid(ten_pid, &ten_status, 0) < 0 && errno == EINTR) {
    }
    ten_pid = 0;
  }
}

static bool file_has(const char *file, const char *needle) {
  FILE *f = fopen(file, "r");
  if (!f) return false;
  char line[4096];
  bool found = false;
  while (!found && fgets(line, sizeof line, f)) found = strstr(line, needle) != NULL;
  fclose(f);
  return found;
}

static int start_ten(const char *self) {
  const char *bin = getenv("TEN_BIN");
  if (!bin) die("TEN_BIN is not set (run through ctest)");
  snprintf(workdir, sizeof workdir, "/tmp/ten-framing-XXXXXX");
  if (!mkdtemp(workdir)) die("mkdtemp: %s", strerror(errno));
  char path[512], data[512], out[512];
  snprintf(path, sizeof path, "%s/tenement.lua", workdir);
  snprintf(data, sizeof data, "%s/data", workdir);
  snprintf(out, sizeof out, "%s/stdout", workdir);
  FILE *f = fopen(path, "w");
  if (!f) die("cannot write %s", path);
  fprintf(f,
          "settings { header_timeout = 2, client_timeout = 2, upstream_keepalive = 4 }\n"
          "service \"rec\" { command = \"%s --backend\", env = { FRAMING_DIR = \"%s\" } }\n"
          "instances { rec = { \"a\", \"b\" } }\n",
          self, workdir);
  fclose(f);
  ten_pid = fork();
  if (ten_pid == 0) {
    char err[600];
    snprintf(err, sizeof err, "%s/stderr", workdir);
    int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int efd = open(err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || efd < 0 || dup2(fd, 1) < 0 || dup2(efd, 2) < 0) _exit(126);
    execl(bin, bin, "serve", "--port", "0", "--listen", "127.0.0.1", "--data-dir", data,
          "--config", path, (char *)NULL);
    _exit(127);
  }
  for (int i = 0; i < 3000; i++) {
    usleep(10000);
    FILE *o = fopen(out, "r");
    char line[512];
    int port = 0;
    while (o && fgets(line, sizeof line, o)) {
      char *at = strstr(line, "listening on http://127.0.0.1:");
      if (at) port = atoi(at + strlen("listening on http://127.0.0.1:"));
    }
    if (o) fclose(o);
    if (port > 0) return port;
    int status;
    if (waitpid(ten_pid, &status, WNOHANG) == ten_pid) die("ten serve exited at start");
  }
  die("ten serve did not start");
  return 0;
}

static bool wait_ready(int port) {
  /* A plain request to each instance answers once it is up. */
  for (int i = 0; i < 1000; i++) {
    int ok = 0;
    for (int k = 0; k < 2; k++) {
      int fd = connect_to(port);
      char req[128];
      int n = snprintf(req, sizeof req, "GET /ready HTTP/1.1\r\nHost: %s.rec.localhost\r\nConnection: close\r\n\r\n", k ? "b" : "a");
      if (write(fd, req, (size_t)n) != n) die("write");
      char resp[1024];
      ssize_t r = read(fd, resp, sizeof resp - 1);
      if (r > 12 && !strncmp(resp, "HTTP/1.1 200", 12)) ok++;
      close(fd);
    }
    if (ok == 2) return true;
    usleep(10000);
  }
  return false;
}

static size_t count_lines(const char *file) {
  FILE *f = fopen(file, "r");
  if (!f) return 0;
  size_t n = 0;
  int ch;
  while ((ch = fgetc(f)) != EOF) n += ch == '\n';
  fclose(f);
  return n;
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--backend")) backend_main();
  char self[1024];
  ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
  if (sl < 0) die("readlink /proc/self/exe");
  self[sl] = '\0';
  unsigned streams = getenv("FRAMING_STREAMS") ? (unsigned)atoi(getenv("FRAMING_STREAMS")) : 400;
  uint64_t seed = getenv("FRAMING_SEED") ? strtoull(getenv("FRAMING_SEED"), NULL, 10) : 1;
  signal(SIGPIPE, SIG_IGN);
  int port = start_ten(self);
  atexit(stop_ten);
  if (!wait_ready(port)) die("the backend instances did not become ready");
  char file[512];
  snprintf(file, sizeof file, "%s/record", workdir);
  size_t warmup = count_lines(file); /* the readiness requests */

  unsigned failures = 0, backend_answers = 0, ours = 0, bent_streams = 0;
  unsigned long max_seq_seen = 0;
  size_t seen_size = (size_t)streams * MAX_REQ * 2 + 64 + warmup * 2;
  char *seen = calloc(seen_size, 1);
  rng_state = seed;
  for (unsigned i = 0; i < streams; i++) {
    stream_t s;
    gen_stream(&s, i);
    got_t g;
    run_stream(port, &s, &g);
    bent_streams += s.bent;
    backend_answers += g.backend;
    ours += g.ours;
    const char *why = NULL;
    if (g.bad_response) why = "ten's response did not parse";
    /* Backend answers are for targets this stream sent, in order, once. */
    unsigned next_req = 0;
    for (unsigned k = 0; k < g.backend && k < 64 && !why; k++) {
      unsigned long seq = g.seqs[k];
      if (seq >= seen_size || seen[seq]) why = "a backend response reached a client twice";
      else seen[seq] = 1;
      if (seq > max_seq_seen) max_seq_seen = seq;
      while (next_req < s.nreq && strcmp(s.req[next_req].target, g.targets[k])) next_req++;
      if (!why && next_req == s.nreq) why = "a backend response answered a target this client did not send (in this order)";
      else if (!why && !s.bent &&
               (g.lens[k] != s.req[next_req].body_len || g.hashes[k] != s.req[next_req].body_hash))
        why = "the backend got a body other than the client's";
      next_req++;
    }
    if (!why && !s.bent && g.backend != s.nreq) why = "a plain stream was not answered whole by the backend";
    if (why) {
      failures++;
      fprintf(stderr, "stream %u (%s): %s; backend answered %u, ten %u, of %u requests\n", i,
              s.bent ? s.bend : "plain", why, g.backend, g.ours, s.nreq);
      if (failures < 4) fwrite(s.bytes.data, 1, s.bytes.len, stderr), fputc('\n', stderr);
    }
    free(s.bytes.data);
  }
  stop_ten(); /* the backend's records are complete once ten has stopped it */
  if (!WIFEXITED(ten_status) || WEXITSTATUS(ten_status) != 0) {
    failures++;
    fprintf(stderr, "ten serve did not exit 0 after SIGTERM (wait status %d)\n", ten_status);
  }
  snprintf(file, sizeof file, "%s/stderr", workdir);
  if (file_has(file, "ERROR: AddressSanitizer") || file_has(file, "ERROR: LeakSanitizer") ||
      file_has(file, "runtime error:")) {
    failures++;
    fprintf(stderr, "a sanitizer reported in ten's stderr (%s)\n", file);
  }
  snprintf(file, sizeof file, "%s/record", workdir);
  size_t recorded = count_lines(file) - warmup;
  snprintf(file, sizeof file, "%s/errors", workdir);
  size_t errors = count_lines(file);
  if (errors) {
    failures++;
    fprintf(stderr, "the backend refused %zu requests ten sent it:\n", errors);
    FILE *f = fopen(file, "r");
    char line[700];
    for (int k = 0; f && k < 10 && fgets(line, sizeof line, f); k++) fputs(line, stderr);
    if (f) fclose(f);
  }
  if (recorded != backend_answers) {
    failures++;
    fprintf(stderr, "the backend parsed %zu requests but clients got %u backend responses\n",
            recorded, backend_answers);
  }
  printf("framing_property: %u streams (%u bent), %u backend answers, %u answered by ten, "
         "%zu requests recorded: %s\n",
         streams, bent_streams, backend_answers, ours, recorded, failures ? "FAILED" : "ok");
  free(seen);
  if (failures) fprintf(stderr, "ten's output and the records are in %s\n", workdir);
  if (!failures) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", workdir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", workdir);
  }
  return failures ? 1 : 0;
}
