/* auth_client.c: the sequential client of tests/bench/auth (built by it).
 *
 *   auth_client PORT COUNT PATH [HEADER]
 *
 * Sends COUNT `GET PATH` requests (Host: localhost, plus HEADER if given,
 * e.g. "Authorization: Bearer ten_...") one after another over one
 * keep-alive connection to 127.0.0.1:PORT, and prints one line:
 *
 *   n=COUNT total_ms=.. mean_us=.. p50_us=.. p90_us=.. p99_us=.. max_us=..
 *   first_us=.. bytes=.. status=..
 *
 * (bytes: the body size of the last answer). With AUTH_BURST=1 in the
 * environment: COUNT connections instead, one request on each, all sent
 * before any answer is read; prints n, total_ms, p50_us, max_us, min_us.
 * Exit status 1 when a connection fails or any answer is not 200.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static char buf[1 << 20];
static size_t off, len;
static int fd = -1;

static double now_us(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int fill(void) {
  if (off == len) off = len = 0;
  if (len == sizeof buf) {
    if (!off) return -1;  /* a header line larger than the buffer */
    memmove(buf, buf + off, len - off);
    len -= off;
    off = 0;
  }
  ssize_t n;
  do n = read(fd, buf + len, sizeof buf - len);
  while (n < 0 && errno == EINTR);
  if (n <= 0) return -1;
  len += (size_t)n;
  return 0;
}

static long read_line(char **line) {
  for (;;) {
    char *start = buf + off;
    char *nl = memmem(start, len - off, "\r\n", 2);
    if (nl) {
      *line = start;
      off += (size_t)(nl - start) + 2;
      return nl - start;
    }
    if (fill() < 0) return -1;
  }
}

static int skip(size_t n) {
  while (n) {
    if (off == len && fill() < 0) return -1;
    size_t k = len - off < n ? len - off : n;
    off += k;
    n -= k;
  }
  return 0;
}

static int send_all(const char *req, size_t req_len) {
  for (size_t done = 0; done < req_len;) {
    ssize_t w = write(fd, req + done, req_len - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    done += (size_t)w;
  }
  return 0;
}

/* Reads one answer; returns the status (or -1) and the body size in *body. */
static int response(size_t *body) {
  char *line;
  long ll;
  int status;
  for (;;) {
    if ((ll = read_line(&line)) < 12 || strncmp(line, "HTTP/1.", 7)) return -1;
    status = atoi(line + 9);
    long clen = -1;
    int chunked = 0;
    while ((ll = read_line(&line)) > 0) {
      if (ll > 15 && !strncasecmp(line, "content-length:", 15)) clen = strtol(line + 15, NULL, 10);
      else if (ll > 18 && !strncasecmp(line, "transfer-encoding:", 18) &&
               memmem(line, (size_t)ll, "chunked", 7))
        chunked = 1;
    }
    if (ll < 0) return -1;
    if (status >= 100 && status < 200) continue;
    *body = 0;
    if (chunked) {
      for (;;) {
        if ((ll = read_line(&line)) < 0) return -1;
        size_t sz = strtoul(line, NULL, 16);
        if (sz == 0) {
          while ((ll = read_line(&line)) > 0) {}
          return ll < 0 ? -1 : status;
        }
        if (skip(sz) < 0 || read_line(&line) != 0) return -1;
        *body += sz;
      }
    }
    if (clen < 0) return -1;
    *body = (size_t)clen;
    return skip((size_t)clen) < 0 ? -1 : status;
  }
}

/* One request; returns the status (or -1) and the body size in *body. */
static int request(const char *req, size_t req_len, size_t *body) {
  return send_all(req, req_len) < 0 ? -1 : response(body);
}

static int connect_lo(int port) {
  int s = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (s < 0) return -1;
  int one = 1;
  setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(s, (struct sockaddr *)&a, sizeof a) < 0) {
    close(s);
    return -1;
  }
  return s;
}

static int cmp_d(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

int main(int argc, char **argv) {
  if (argc < 4) {
    fprintf(stderr, "usage: auth_client PORT COUNT PATH [HEADER]\n");
    return 2;
  }
  int port = atoi(argv[1]), count = atoi(argv[2]);
  if (count < 1) return 2;
  char req[4096];
  int rl = snprintf(req, sizeof req, "GET %s HTTP/1.1\r\nHost: localhost\r\n%s%sUser-Agent: auth_client\r\n\r\n",
                    argv[3], argc > 4 ? argv[4] : "", argc > 4 ? "\r\n" : "");
  if (rl <= 0 || (size_t)rl >= sizeof req) return 2;

  double *lat = calloc((size_t)count, sizeof *lat);
  size_t body = 0;
  int status = 0;
  if (getenv("AUTH_BURST")) {
    /* COUNT connections, one request each, all sent before any answer is
     * read; the answers are read in order (latency: until each is read). */
    int *fds = calloc((size_t)count, sizeof *fds);
    for (int i = 0; i < count; i++)
      if ((fds[i] = connect_lo(port)) < 0) {
        fprintf(stderr, "auth_client: connect: %s\n", strerror(errno));
        return 1;
      }
    double start = now_us();
    for (int i = 0; i < count; i++) {
      fd = fds[i];
      if (send_all(req, (size_t)rl) < 0) return 1;
    }
    for (int i = 0; i < count; i++) {
      fd = fds[i];
      off = len = 0;
      status = response(&body);
      lat[i] = now_us() - start;
      if (status != 200) {
        fprintf(stderr, "auth_client: burst request %d: status %d\n", i + 1, status);
        return 1;
      }
      close(fds[i]);
    }
    double total = now_us() - start;
    qsort(lat, (size_t)count, sizeof *lat, cmp_d);
    printf("n=%d total_ms=%.3f p50_us=%.1f max_us=%.1f min_us=%.1f status=%d\n", count,
           total / 1000, lat[(count - 1) / 2], lat[count - 1], lat[0], status);
    return 0;
  }
  if ((fd = connect_lo(port)) < 0) {
    fprintf(stderr, "auth_client: connect: %s\n", strerror(errno));
    return 1;
  }
  double start = now_us();
  for (int i = 0; i < count; i++) {
    double t0 = now_us();
    status = request(req, (size_t)rl, &body);
    lat[i] = now_us() - t0;
    if (status != 200) {
      fprintf(stderr, "auth_client: request %d of %s: %s %d\n", i + 1, argv[3],
              status < 0 ? "connection failed" : "status", status);
      return 1;
    }
  }
  double total = now_us() - start, first = lat[0];
  qsort(lat, (size_t)count, sizeof *lat, cmp_d);
#define PCT(p) lat[(int)((count - 1) * (p) + 0.5)]
  printf("n=%d total_ms=%.3f mean_us=%.1f p50_us=%.1f p90_us=%.1f p99_us=%.1f max_us=%.1f "
         "first_us=%.1f bytes=%zu status=%d\n",
         count, total / 1000, total / count, PCT(0.5), PCT(0.9), PCT(0.99), lat[count - 1], first,
         body, status);
  free(lat);
  close(fd);
  return 0;
}
