/* tests/bench/coldstart.c: the timing helper of tests/bench/coldstart.
 *
 * Built by that script with `cc -O2` (not part of the CMake build).  One run
 * measures cold starts of the example app (examples/hello), interleaved so
 * that drift hits every series alike.  For each sample of each variant:
 *
 *   app     the app by itself, no ten: clock -> fork+exec hello -> a full
 *           200 response to GET / over its unix socket.
 *             plain:  SOCKET=<path>; connect is retried every RETRY_US.
 *             socket: the socket is bound and listening before the clock
 *                     starts, passed as fd 3 with LISTEN_FDS=1 and
 *                     LISTEN_PID=<child pid>; the request is written right
 *                     after fork (the kernel queues it).
 *   ten     a new id of a spawn_on_demand service through a running
 *           `ten serve`: connect (not timed), clock, write GET / with
 *           Host: <id>.<service>.localhost, read the full response, clock.
 *
 * Every response must be a 200 whose JSON body names the service and id.
 * Output, one line per sample on stdout:  <variant> <app|ten> <idx> <usec>
 * (idx < 0 for warm-up samples); ten lines add the wall clock (epoch seconds)
 * when the request was written and when the response was complete, to line
 * up with the millisecond timestamps of ten's log.
 *
 * COLDSTART_REWAKE=1 measures only the ten samples, kind "rewake": the same
 * ids again, once the script has seen them idle out (the instance exists and
 * is stopped: ten starts it again for the request).
 *
 * COLDSTART_BACKGROUND=N first asks ten for N instances of the service "bg"
 * (ids b1..bN), so that the samples run with N more instances in ten.
 *
 * COLDSTART_VIA_SH=1 starts the app alone the way ten does (/bin/sh -c
 * 'exec hello') instead of exec'ing it directly.  Anything unexpected: a message on stderr
 * and exit status 1.
 *
 * usage: coldstart HELLO DIR PORT SAMPLES WARMUP RETRY_US GAP_MS VARIANTS...
 *   VARIANTS: plain and/or socket; the ten service is named like the variant.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define IO_TIMEOUT_MS 15000
#define RESP_MAX      65536

static const char *hello_bin, *dir;
static int ten_port;
static long retry_us;
static bool via_sh; /* COLDSTART_VIA_SH=1: start hello as ten does, sh -c 'exec hello' */
static volatile pid_t child_pid; /* the app-alone process running now, if any */

static void kill_child(void) {
  pid_t pid = child_pid;
  if (pid > 0) {
    kill(pid, SIGKILL);
    waitpid(pid, NULL, 0);
    child_pid = 0;
  }
}

static void on_signal(int sig) { /* the script's cleanup: leave nothing behind */
  kill_child();
  signal(sig, SIG_DFL);
  raise(sig);
}

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("coldstart: error: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  kill_child();
  exit(1);
}

static int64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void sleep_us(long us) {
  struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {}
}

static void write_all(int fd, const char *p, size_t n) {
  while (n) {
    ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) die("write: %s", strerror(errno));
    p += w;
    n -= (size_t)w;
  }
}

/* Reads one HTTP/1.1 response (Content-Length, chunked, or until EOF) into
 * buf; returns the status code and points *body at the body (for chunked:
 * the raw chunked bytes, which is enough to look for the id). */
static int read_response(int fd, char *buf, size_t cap, const char **body, size_t *body_len,
                         const char *what) {
  size_t len = 0, head_len = 0;
  long content_length = -1;
  bool chunked = false;
  int status = 0;
  int64_t deadline = now_ns() + (int64_t)IO_TIMEOUT_MS * 1000000;
  for (;;) {
    if (head_len && content_length >= 0 && len >= head_len + (size_t)content_length) break;
    if (head_len && chunked && len >= head_len + 5 && memcmp(buf + len - 5, "0\r\n\r\n", 5) == 0)
      break;
    if (len == cap) die("%s: response larger than %zu bytes", what, cap);
    int left = (int)((deadline - now_ns()) / 1000000);
    if (left <= 0) die("%s: no complete response within %d ms", what, IO_TIMEOUT_MS);
    struct pollfd pfd = {fd, POLLIN, 0};
    int pr = poll(&pfd, 1, left);
    if (pr < 0 && errno == EINTR) continue;
    if (pr < 0) die("%s: poll: %s", what, strerror(errno));
    if (pr == 0) continue;
    ssize_t r = read(fd, buf + len, cap - len);
    if (r < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (r < 0) die("%s: read: %s", what, strerror(errno));
    if (r == 0) {
      if (head_len && content_length < 0 && !chunked) break; /* close-delimited */
      die("%s: connection closed after %zu bytes of response", what, len);
    }
    len += (size_t)r;
    if (!head_len) {
      char *end = memmem(buf, len, "\r\n\r\n", 4);
      if (!end) continue;
      head_len = (size_t)(end - buf) + 4;
      if (len < 12 || memcmp(buf, "HTTP/1.", 7) != 0) die("%s: not an HTTP response", what);
      status = atoi(buf + 9);
      for (size_t off = 0; off < head_len;) {
        const char *l = buf + off, *eol = memchr(l, '\n', head_len - off);
        size_t ll = eol ? (size_t)(eol - l) : head_len - off;
        if (ll > 15 && strncasecmp(l, "content-length:", 15) == 0)
          content_length = strtol(l + 15, NULL, 10);
        else if (ll > 18 && strncasecmp(l, "transfer-encoding:", 18) == 0 &&
                 memmem(l, ll, "chunked", 7))
          chunked = true;
        off += ll + 1;
      }
    }
  }
  *body = buf + head_len;
  *body_len = len - head_len;
  return status;
}

static void check(int status, const char *body, size_t body_len, const char *service,
                  const char *id, const char *what) {
  char want[160];
  snprintf(want, sizeof want, "\"service\":\"%s\",\"id\":\"%s\"", service, id);
  if (status != 200 || !memmem(body, body_len, want, strlen(want)))
    die("%s: expected 200 with %s, got %d: %.*s", what, want, status,
        (int)(body_len > 300 ? 300 : body_len), body);
}

static pid_t spawn_hello(const char *service, const char *id, const char *sock_path, int listen_fd) {
  pid_t pid = fork();
  if (pid < 0) die("fork: %s", strerror(errno));
  if (pid) return child_pid = pid;
  prctl(PR_SET_PDEATHSIG, SIGKILL); /* as ten does; and never outlive us */
  int null_fd = open("/dev/null", O_RDWR);
  if (null_fd >= 0) {
    dup2(null_fd, 0);
    dup2(null_fd, 1);
  }
  setenv("TENEMENT_SERVICE", service, 1);
  setenv("TENEMENT_ID", id, 1);
  unsetenv("SOCKET");
  unsetenv("PORT");
  if (listen_fd >= 0) {
    if (listen_fd != 3) {
      dup2(listen_fd, 3);
      close(listen_fd);
    } else {
      fcntl(3, F_SETFD, 0);
    }
    char pidbuf[24];
    snprintf(pidbuf, sizeof pidbuf, "%d", (int)getpid());
    setenv("LISTEN_FDS", "1", 1);
    setenv("LISTEN_PID", pidbuf, 1);
  } else {
    unsetenv("LISTEN_FDS");
    unsetenv("LISTEN_PID");
    setenv("SOCKET", sock_path, 1);
  }
  if (via_sh) {
    char cmd[1100];
    snprintf(cmd, sizeof cmd, "exec %s", hello_bin);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
  } else {
    char *argv[] = {(char *)hello_bin, NULL};
    execv(hello_bin, argv);
  }
  _exit(127);
}

static void reap(pid_t pid, const char *what) {
  kill(pid, SIGTERM);
  int64_t deadline = now_ns() + 5000000000LL;
  int st;
  for (;;) {
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) break;
    if (r < 0 && errno == ECHILD) child_pid = 0;
    if (r < 0 && errno != EINTR) die("%s: waitpid: %s", what, strerror(errno));
    if (now_ns() > deadline) {
      die("%s: hello did not exit within 5 s of SIGTERM", what);
    }
    sleep_us(200);
  }
  child_pid = 0;
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
    die("%s: hello exited abnormally (status 0x%x)", what, st);
}

static void unix_addr(struct sockaddr_un *a, const char *path) {
  memset(a, 0, sizeof *a);
  a->sun_family = AF_UNIX;
  if (strlen(path) >= sizeof a->sun_path) die("socket path too long: %s", path);
  strcpy(a->sun_path, path);
}

static int64_t sample_app(const char *variant, const char *id) {
  char path[512], what[96], req[256], buf[RESP_MAX];
  snprintf(path, sizeof path, "%s/app-%s-%s.sock", dir, variant, id);
  snprintf(what, sizeof what, "app alone (%s, %s)", variant, id);
  int n = snprintf(req, sizeof req, "GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
  struct sockaddr_un addr;
  unix_addr(&addr, path);
  unlink(path);
  bool activation = strcmp(variant, "socket") == 0;
  int lfd = -1, fd = -1;
  int64_t t0;
  pid_t pid;

  if (activation) {
    lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0) die("%s: socket: %s", what, strerror(errno));
    if (bind(lfd, (struct sockaddr *)&addr, sizeof addr) < 0 || listen(lfd, 128) < 0)
      die("%s: bind/listen %s: %s", what, path, strerror(errno));
    t0 = now_ns();
    pid = spawn_hello(variant, id, NULL, lfd);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0)
      die("%s: connect: %s", what, strerror(errno));
  } else {
    t0 = now_ns();
    pid = spawn_hello(variant, id, path, -1);
    int64_t deadline = t0 + (int64_t)IO_TIMEOUT_MS * 1000000;
    for (;;) {
      fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd < 0) die("%s: socket: %s", what, strerror(errno));
      if (connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0) break;
      int e = errno;
      close(fd);
      if (e != ENOENT && e != ECONNREFUSED && e != EAGAIN) die("%s: connect: %s", what, strerror(e));
      int st;
      if (waitpid(pid, &st, WNOHANG) == pid) {
        child_pid = 0;
        die("%s: hello exited before listening (status 0x%x)", what, st);
      }
      if (now_ns() > deadline) die("%s: hello not listening after %d ms", what, IO_TIMEOUT_MS);
      if (retry_us > 0) sleep_us(retry_us);
    }
  }
  write_all(fd, req, (size_t)n);
  const char *body;
  size_t body_len;
  int status = read_response(fd, buf, sizeof buf, &body, &body_len, what);
  int64_t t1 = now_ns();
  check(status, body, body_len, variant, id, what);
  close(fd);
  if (lfd >= 0) close(lfd);
  reap(pid, what);
  unlink(path);
  return t1 - t0;
}

static double wall_now(void) { /* seconds since the epoch, for ten's log */
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static int64_t sample_ten(const char *service, const char *id, double *wall0, double *wall1) {
  char what[96], req[512], buf[RESP_MAX];
  snprintf(what, sizeof what, "through ten (%s, %s)", service, id);
  int n = snprintf(req, sizeof req,
                   "GET / HTTP/1.1\r\nHost: %s.%s.localhost\r\nUser-Agent: coldstart\r\n\r\n", id,
                   service);
  struct sockaddr_in a = {0};
  a.sin_family = AF_INET;
  a.sin_port = htons((uint16_t)ten_port);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) die("%s: socket: %s", what, strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) < 0)
    die("%s: connect to 127.0.0.1:%d: %s", what, ten_port, strerror(errno));
  *wall0 = wall_now();
  int64_t t0 = now_ns();
  write_all(fd, req, (size_t)n);
  const char *body;
  size_t body_len;
  int status = read_response(fd, buf, sizeof buf, &body, &body_len, what);
  int64_t t1 = now_ns();
  *wall1 = wall_now();
  check(status, body, body_len, service, id, what);
  close(fd);
  return t1 - t0;
}

int main(int argc, char **argv) {
  if (argc < 9) {
    fprintf(stderr, "usage: %s HELLO DIR PORT SAMPLES WARMUP RETRY_US GAP_MS VARIANTS...\n", argv[0]);
    return 2;
  }
  hello_bin = argv[1];
  dir = argv[2];
  ten_port = atoi(argv[3]);
  int samples = atoi(argv[4]), warmup = atoi(argv[5]);
  retry_us = atol(argv[6]);
  long gap_ms = atol(argv[7]);
  const char *rw = getenv("COLDSTART_REWAKE");
  bool rewake = rw && *rw && strcmp(rw, "0") != 0;
  const char *sh = getenv("COLDSTART_VIA_SH");
  via_sh = sh && *sh && strcmp(sh, "0") != 0;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGTERM, on_signal);
  signal(SIGINT, on_signal);
  signal(SIGHUP, on_signal);
  setvbuf(stdout, NULL, _IOLBF, 0);
  for (int v = 8; v < argc; v++)
    if (strcmp(argv[v], "plain") != 0 && strcmp(argv[v], "socket") != 0)
      die("unknown variant '%s' (plain or socket)", argv[v]);
  /* COLDSTART_BACKGROUND=N: first make ten hold N more instances (service
   * "bg", ids b1..bN), to see how a cold start scales with their number. */
  const char *bg = getenv("COLDSTART_BACKGROUND");
  long nbg = bg ? atol(bg) : 0;
  for (long i = 1; i <= nbg; i++) {
    char id[32];
    double w0, w1;
    snprintf(id, sizeof id, "b%ld", i);
    sample_ten("bg", id, &w0, &w1);
    if (i % 1000 == 0 || i == nbg) fprintf(stderr, "coldstart: %ld of %ld background instances\n", i, nbg);
  }
  /* Interleaved: sample i of every variant and kind before sample i+1. */
  for (int i = -warmup; i < samples; i++) {
    for (int v = 8; v < argc; v++) {
      char id[32];
      if (i < 0) snprintf(id, sizeof id, "w%d", -i);
      else snprintf(id, sizeof id, "s%d", i + 1);
      if (!rewake) {
        int64_t app = sample_app(argv[v], id);
        printf("%s app %d %.1f\n", argv[v], i, (double)app / 1000.0);
        if (gap_ms) sleep_us(gap_ms * 1000);
      }
      double w0, w1;
      int64_t ten = sample_ten(argv[v], id, &w0, &w1);
      printf("%s %s %d %.1f %.6f %.6f\n", argv[v], rewake ? "rewake" : "ten", i,
             (double)ten / 1000.0, w0, w1);
      if (gap_ms) sleep_us(gap_ms * 1000);
    }
  }
  return 0;
}
