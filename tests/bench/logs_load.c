/* logs_load.c: the HTTP driver of tests/bench/logs (built by that script).
 *
 *   logs_load load  PORT SECONDS N SIZE STREAM HOST...
 *       One thread and one keep-alive connection per HOST, each sending
 *       `GET /log?n=N&stream=STREAM[&size=SIZE]` back to back for SECONDS.
 *       /metrics (Host: localhost) is sampled just before the threads start
 *       and again when the window closes; then every request still in flight
 *       is finished and counted. LOGS_RATE=R (environment) paces each
 *       connection to R lines/s instead of as fast as possible. Prints key=value lines (see the end of
 *       cmd_load); the script parses them.
 *
 *   logs_load query PORT COUNT PATH...
 *       For each PATH, COUNT sequential `GET PATH` (Host: localhost) on one
 *       keep-alive connection (fewer once LOGS_QUERY_BUDGET seconds, default
 *       15, are spent on one path); prints one line per path:
 *         q <path> <runs> <median_ms> <p90_ms> <min_ms> <max_ms> <rows>
 *       (rows: "message" fields in the last answer).
 *
 *   logs_load get PORT HOST PATH      one request, the body on stdout.
 *
 * Exit status 0, or 1 when a connection or a request failed (any non-2xx
 * answer counts as a failure).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int g_port;

static double wall_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ------------------------------------------------------------ HTTP client */

typedef struct conn {
  int fd;
  char *buf;          /* unread bytes are buf[off, len) */
  size_t off, len, cap;
  char *body;         /* the last body, NUL-terminated */
  size_t body_len, body_cap;
  int status;
} conn_t;

static int conn_open(conn_t *c) {
  memset(c, 0, sizeof *c);
  c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (c->fd < 0) return -1;
  int one = 1;
  setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(c->fd, (struct sockaddr *)&a, sizeof a) < 0) {
    close(c->fd);
    c->fd = -1;
    return -1;
  }
  c->cap = 256 * 1024;
  c->buf = malloc(c->cap);
  c->body_cap = 64 * 1024;
  c->body = malloc(c->body_cap);
  return 0;
}

static void conn_close(conn_t *c) {
  if (c->fd >= 0) close(c->fd);
  free(c->buf);
  free(c->body);
  c->fd = -1;
}

static int fill(conn_t *c) {
  if (c->off == c->len) c->off = c->len = 0;
  if (c->len == c->cap) {
    if (c->off) {
      memmove(c->buf, c->buf + c->off, c->len - c->off);
      c->len -= c->off;
      c->off = 0;
    } else {
      c->cap *= 2;
      c->buf = realloc(c->buf, c->cap);
    }
  }
  ssize_t n;
  do n = read(c->fd, c->buf + c->len, c->cap - c->len);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  c->len += (size_t)n;
  return 0;
}

static void body_add(conn_t *c, const char *p, size_t n) {
  if (c->body_len + n + 1 > c->body_cap) {
    while (c->body_len + n + 1 > c->body_cap) c->body_cap *= 2;
    c->body = realloc(c->body, c->body_cap);
  }
  memcpy(c->body + c->body_len, p, n);
  c->body_len += n;
  c->body[c->body_len] = '\0';
}

/* A line ending in CRLF starting at buf[off]: returns its length without
 * the CRLF, reading more if needed; -1 on EOF. */
static long read_line(conn_t *c, char **line) {
  for (;;) {
    char *start = c->buf + c->off;
    char *nl = memmem(start, c->len - c->off, "\r\n", 2);
    if (nl) {
      *line = start;
      c->off += (size_t)(nl - start) + 2;
      return nl - start;
    }
    if (fill(c) < 0) return -1;
  }
}

static int read_exact(conn_t *c, size_t n) {
  while (n) {
    if (c->off == c->len && fill(c) < 0) return -1;
    size_t k = c->len - c->off;
    if (k > n) k = n;
    body_add(c, c->buf + c->off, k);
    c->off += k;
    n -= k;
  }
  return 0;
}

/* Sends a GET and reads the whole answer into c->body. 0 ok (any status). */
static int request(conn_t *c, const char *host, const char *path, const char *extra_hdr) {
  char req[8192];
  int n = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: %s\r\n%s%sUser-Agent: logs_load\r\n\r\n",
                   path, host, extra_hdr ? extra_hdr : "", extra_hdr ? "\r\n" : "");
  if (n <= 0 || (size_t)n >= sizeof req) return -1;
  for (size_t done = 0; done < (size_t)n;) {
    ssize_t w = write(c->fd, req + done, (size_t)n - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  char *line;
  long ll;
  c->body_len = 0;
  c->body[0] = '\0';
  for (;;) {  /* status line; skip 1xx answers */
    if ((ll = read_line(c, &line)) < 0) return -1;
    if (ll < 12 || strncmp(line, "HTTP/1.", 7)) return -1;
    c->status = atoi(line + 9);
    long clen = -1;
    int chunked = 0;
    while ((ll = read_line(c, &line)) > 0) {
      if (ll > 15 && !strncasecmp(line, "content-length:", 15)) clen = strtol(line + 15, NULL, 10);
      else if (ll > 18 && !strncasecmp(line, "transfer-encoding:", 18) &&
               memmem(line, (size_t)ll, "chunked", 7))
        chunked = 1;
    }
    if (ll < 0) return -1;
    if (c->status >= 100 && c->status < 200) continue;
    if (chunked) {
      for (;;) {
        if ((ll = read_line(c, &line)) < 0) return -1;
        size_t sz = strtoul(line, NULL, 16);
        if (sz == 0) {
          while ((ll = read_line(c, &line)) > 0) {}  /* trailers */
          return ll < 0 ? -1 : 0;
        }
        if (read_exact(c, sz) < 0) return -1;
        if ((ll = read_line(c, &line)) != 0) return -1;
      }
    }
    if (clen < 0) return -1;  /* read-to-close bodies are not used here */
    return read_exact(c, (size_t)clen);
  }
}

/* ------------------------------------------------------------ metrics */

typedef struct sample {
  double t;
  double stored, pending, total, dropped, cpu, rss;
  long long max_id, indexed_through;
} sample_t;

static double metric(const char *text, const char *name) {
  size_t nl = strlen(name);
  for (const char *p = text; (p = strstr(p, name)); p += nl) {
    if ((p == text || p[-1] == '\n') && p[nl] == ' ') return strtod(p + nl + 1, NULL);
  }
  return -1;
}

static long long json_int(const char *text, const char *key) {
  char k[64];
  snprintf(k, sizeof k, "\"%s\":", key);
  const char *p = strstr(text, k);
  return p ? strtoll(p + strlen(k), NULL, 10) : -1;
}

static int take_sample(conn_t *c, sample_t *s) {
  s->t = now_s();
  if (request(c, "localhost", "/metrics", NULL) < 0 || c->status != 200) return -1;
  s->stored = metric(c->body, "tenement_log_lines_stored_total");
  s->pending = metric(c->body, "tenement_log_lines_pending");
  s->total = metric(c->body, "tenement_log_lines_total");
  s->dropped = metric(c->body, "tenement_log_lines_dropped_total");
  s->cpu = metric(c->body, "process_cpu_seconds_total");
  s->rss = metric(c->body, "process_resident_memory_bytes");
  /* The newest committed row and how far the full-text index reaches. */
  if (request(c, "localhost", "/api/logs?limit=1", NULL) < 0 || c->status != 200) return -1;
  s->max_id = json_int(c->body, "id");
  s->indexed_through = json_int(c->body, "indexed_through");
  return 0;
}

static void print_sample(const char *prefix, const sample_t *s) {
  printf("%s_stored=%.0f\n%s_pending=%.0f\n%s_total=%.0f\n%s_dropped=%.0f\n%s_cpu=%.3f\n"
         "%s_rss=%.0f\n%s_max_id=%lld\n%s_indexed=%lld\n",
         prefix, s->stored, prefix, s->pending, prefix, s->total, prefix, s->dropped, prefix,
         s->cpu, prefix, s->rss, prefix, s->max_id, prefix, s->indexed_through);
}

/* ------------------------------------------------------------ load */

typedef struct worker {
  pthread_t thread;
  const char *host;
  char path[256];
  long n;
  uint64_t requests, lines;
  double lat_max;
  int failed;
  char error[256];
} worker_t;

static atomic_int g_go;
static double g_deadline; /* written before g_go is set */
static double g_rate;     /* lines/s per connection; 0 = as fast as possible */

static void *worker_main(void *arg) {
  worker_t *w = arg;
  conn_t c;
  if (conn_open(&c) < 0) {
    w->failed = 1;
    snprintf(w->error, sizeof w->error, "connect: %s", strerror(errno));
    return NULL;
  }
  while (!atomic_load(&g_go)) usleep(100);
  double start = now_s();
  while (now_s() < g_deadline) {
    if (g_rate > 0) { /* paced: request k starts at start + k * n / rate */
      double at = start + (double)w->requests * (double)w->n / g_rate;
      if (at >= g_deadline) break;
      double wait = at - now_s();
      if (wait > 0) usleep((useconds_t)(wait * 1e6));
    }
    double t0 = now_s();
    if (request(&c, w->host, w->path, NULL) < 0) {
      w->failed = 1;
      snprintf(w->error, sizeof w->error, "request failed after %llu requests",
               (unsigned long long)w->requests);
      break;
    }
    if (c.status != 200 || json_int(c.body, "lines") != w->n) {
      w->failed = 1;
      snprintf(w->error, sizeof w->error, "status %d: %.120s", c.status, c.body);
      break;
    }
    double dt = now_s() - t0;
    if (dt > w->lat_max) w->lat_max = dt;
    w->requests++;
    w->lines += (uint64_t)w->n;
  }
  conn_close(&c);
  return NULL;
}

static int cmd_load(int argc, char **argv) {
  if (argc < 7) return 2;
  double secs = atof(argv[3]);
  long n = atol(argv[4]), size = atol(argv[5]);
  const char *stream = argv[6];
  int nw = argc - 7;
  const char *rate = getenv("LOGS_RATE");
  g_rate = rate ? atof(rate) : 0;
  worker_t *ws = calloc((size_t)nw, sizeof *ws);
  conn_t mc;
  if (conn_open(&mc) < 0) {
    fprintf(stderr, "logs_load: cannot connect to 127.0.0.1:%d\n", g_port);
    return 1;
  }
  sample_t s0, s1, s2;
  if (take_sample(&mc, &s0) < 0) {
    fprintf(stderr, "logs_load: /metrics failed\n");
    return 1;
  }
  double start = now_s();
  for (int i = 0; i < nw; i++) {
    worker_t *w = &ws[i];
    w->host = argv[7 + i];
    w->n = n;
    if (size > 0) snprintf(w->path, sizeof w->path, "/log?n=%ld&stream=%s&size=%ld", n, stream, size);
    else snprintf(w->path, sizeof w->path, "/log?n=%ld&stream=%s", n, stream);
    pthread_create(&w->thread, NULL, worker_main, w);
  }
  start = now_s();
  g_deadline = start + secs;
  atomic_store(&g_go, 1);
  /* Sample at the end of the window (the workers stop starting requests). */
  double end = start + secs;
  int mid_ok = 1, sampled = 0;
  /* A progress sample every second, on stderr. */
  for (;;) {
    double t = now_s();
    if (t >= end) break;
    double next = start + (double)((int)(t - start) + 1);
    if (next > end) next = end;
    usleep((useconds_t)((next - t) * 1e6));
    if (now_s() < end - 0.05) {
      sample_t s;
      if (take_sample(&mc, &s) == 0)
        fprintf(stderr,
                "  t=%4.1fs captured=%.0f stored=%.0f pending=%.0f indexed_lag=%lld dropped=%.0f "
                "rss=%.0fMB\n",
                s.t - start, s.total - s0.total, s.stored - s0.stored, s.pending,
                s.max_id - s.indexed_through, s.dropped - s0.dropped, s.rss / 1048576);
    }
  }
  if (take_sample(&mc, &s1) < 0) mid_ok = 0;
  double window_end_wall = wall_s();
  sampled = 1;
  int failed = 0;
  uint64_t lines = 0, reqs = 0;
  double lat_max = 0;
  for (int i = 0; i < nw; i++) {
    pthread_join(ws[i].thread, NULL);
    if (ws[i].failed) {
      failed = 1;
      fprintf(stderr, "logs_load: %s: %s\n", ws[i].host, ws[i].error);
    }
    lines += ws[i].lines;
    reqs += ws[i].requests;
    if (ws[i].lat_max > lat_max) lat_max = ws[i].lat_max;
  }
  double joined = now_s();
  if (take_sample(&mc, &s2) < 0) mid_ok = 0;
  printf("window=%.3f\n", s1.t - start);
  printf("window_end_epoch=%.3f\n", window_end_wall);
  printf("joined=%.3f\n", joined - start);
  printf("requests=%llu\nlines_asked=%llu\nreq_lat_max=%.3f\n", (unsigned long long)reqs,
         (unsigned long long)lines, lat_max);
  for (int i = 0; i < nw; i++)
    printf("asked_%s=%llu\n", ws[i].host, (unsigned long long)ws[i].lines);
  print_sample("s0", &s0);
  if (sampled && mid_ok) {
    print_sample("s1", &s1);
    print_sample("s2", &s2);
  }
  conn_close(&mc);
  free(ws);
  return failed || !mid_ok ? 1 : 0;
}

/* ------------------------------------------------------------ queries */

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static int cmd_query(int argc, char **argv) {
  if (argc < 5) return 2;
  int count = atoi(argv[3]);
  conn_t c;
  if (conn_open(&c) < 0) return 1;
  double *lat = calloc((size_t)count, sizeof *lat);
  int rc = 0;
  const char *b = getenv("LOGS_QUERY_BUDGET");
  double budget = b ? atof(b) : 15;
  for (int a = 4; a < argc; a++) {
    const char *path = argv[a];
    int rows = 0, done = 0;
    double begin = now_s();
    for (int i = 0; i < count; i++) {
      if (i > 0 && now_s() - begin > budget) break;  /* a slow query: fewer runs */
      double t0 = now_s();
      if (request(&c, "localhost", path, NULL) < 0) {
        fprintf(stderr, "logs_load: %s: request failed\n", path);
        return 1;
      }
      lat[i] = (now_s() - t0) * 1000.0;
      if (c.status != 200) {
        fprintf(stderr, "logs_load: %s: status %d: %.200s\n", path, c.status, c.body);
        rc = 1;
        break;
      }
      rows = 0;
      for (const char *p = c.body; (p = strstr(p, "\"message\":")); p++) rows++;
      done++;
    }
    if (!done) break;
    qsort(lat, (size_t)done, sizeof *lat, cmp_d);
    printf("q %s %d %.3f %.3f %.3f %.3f %d\n", path, done, lat[(done - 1) / 2],
           lat[(int)(done * 0.9) < done ? (int)(done * 0.9) : done - 1], lat[0], lat[done - 1],
           rows);
    fflush(stdout);
  }
  free(lat);
  conn_close(&c);
  return rc;
}

static int cmd_get(int argc, char **argv) {
  if (argc < 5) return 2;
  conn_t c;
  if (conn_open(&c) < 0) return 1;
  if (request(&c, argv[3], argv[4], NULL) < 0) return 1;
  fwrite(c.body, 1, c.body_len, stdout);
  int ok = c.status >= 200 && c.status < 300;
  conn_close(&c);
  return ok ? 0 : 1;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: logs_load load|query|get PORT ...\n");
    return 2;
  }
  g_port = atoi(argv[2]);
  int rc = 2;
  if (!strcmp(argv[1], "load")) rc = cmd_load(argc, argv);
  else if (!strcmp(argv[1], "query")) rc = cmd_query(argc, argv);
  else if (!strcmp(argv[1], "get")) rc = cmd_get(argc, argv);
  if (rc == 2) fprintf(stderr, "logs_load: bad arguments\n");
  return rc;
}
