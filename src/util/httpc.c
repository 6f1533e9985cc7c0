#include "util/httpc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define RESPONSE_HEAD_MAX 512

struct ten_httpc {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } conn;
  uv_timer_t timer;
  uv_connect_t connect_req;
  uv_write_t write_req;
  int open_handles; /* freed when both handles have closed */
  bool finished;    /* callback ran or was cancelled */
  ten_httpc_cb cb;
  void *ctx;
  char *request; /* NULL: connect only */
  size_t request_len;
  char head[RESPONSE_HEAD_MAX];
  size_t head_len;
};

static void on_close(uv_handle_t *h) {
  ten_httpc_t *p = h->data;
  if (--p->open_handles == 0) {
    free(p->request);
    free(p);
  }
}

/* One exit path: report (unless cancelled) and close both handles. */
static void finish(ten_httpc_t *p, int result) {
  if (p->finished) return;
  p->finished = true;
  if (p->cb) p->cb(p->ctx, result);
  uv_close(&p->conn.handle, on_close);
  uv_close((uv_handle_t *)&p->timer, on_close);
}

static void on_timeout(uv_timer_t *t) { finish(t->data, UV_ETIMEDOUT); }

/* "HTTP/1.1 200 OK\r\n" -> 200; -1 while incomplete; UV_EPROTO if malformed. */
static int parse_status(const char *head, size_t len) {
  const char *eol = memchr(head, '\n', len);
  if (!eol) return len >= RESPONSE_HEAD_MAX ? UV_EPROTO : -1;
  if (len < 12 || memcmp(head, "HTTP/1.", 7) != 0 || head[8] != ' ') return UV_EPROTO;
  int code = 0;
  for (int i = 9; i < 12; i++) {
    if (head[i] < '0' || head[i] > '9') return UV_EPROTO;
    code = code * 10 + (head[i] - '0');
  }
  return code >= 100 ? code : UV_EPROTO;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ten_httpc_t *p = h->data;
  buf->base = p->head + p->head_len;
  buf->len = sizeof p->head - p->head_len;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ten_httpc_t *p = s->data;
  if (nread < 0) {
    finish(p, nread == UV_EOF ? UV_EPROTO : (int)nread);
    return;
  }
  p->head_len += (size_t)nread;
  int status = parse_status(p->head, p->head_len);
  if (status != -1) finish(p, status);
}

static void on_write(uv_write_t *req, int status) {
  ten_httpc_t *p = req->data;
  if (status < 0) finish(p, status);
}

static void on_connect(uv_connect_t *req, int status) {
  ten_httpc_t *p = req->data;
  if (p->finished) return;
  if (status < 0) {
    finish(p, status);
    return;
  }
  if (!p->request) {
    finish(p, 0);
    return;
  }
  uv_buf_t buf = uv_buf_init(p->request, (unsigned)p->request_len);
  int rc = uv_write(&p->write_req, &p->conn.stream, &buf, 1, on_write);
  if (rc == 0) rc = uv_read_start(&p->conn.stream, on_alloc, on_read);
  if (rc < 0) finish(p, rc);
}

ten_httpc_t *ten_httpc_get(uv_loop_t *loop, const ten_httpc_target_t *target, const char *path,
                           uint64_t timeout_ms, ten_httpc_cb cb, void *ctx, int *rc) {
  ten_httpc_t *p = ten_xcalloc(1, sizeof *p);
  p->cb = cb;
  p->ctx = ctx;
  if (path) {
    p->request =
        ten_xasprintf("GET %s HTTP/1.1\r\nHost: localhost\r\nUser-Agent: tenement-probe\r\n"
                      "Connection: close\r\n\r\n",
                      path);
    p->request_len = strlen(p->request);
  }
  int err =
      target->socket_path ? uv_pipe_init(loop, &p->conn.pipe, 0) : uv_tcp_init(loop, &p->conn.tcp);
  if (err) {
    free(p->request);
    free(p);
    *rc = err;
    return NULL;
  }
  p->conn.handle.data = p;
  p->open_handles = 1;
  uv_timer_init(loop, &p->timer);
  p->timer.data = p;
  p->open_handles++;
  p->connect_req.data = p;
  p->write_req.data = p;

  if (target->socket_path) {
    uv_pipe_connect(&p->connect_req, &p->conn.pipe, target->socket_path, on_connect);
  } else {
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", target->port, &addr);
    err = uv_tcp_connect(&p->connect_req, &p->conn.tcp, (const struct sockaddr *)&addr, on_connect);
    if (err) {
      p->cb = NULL;
      finish(p, err);
      *rc = err;
      return NULL;
    }
  }
  uv_timer_start(&p->timer, on_timeout, timeout_ms, 0);
  *rc = 0;
  return p;
}

void ten_httpc_cancel(ten_httpc_t *probe) {
  if (!probe) return;
  probe->cb = NULL;
  finish(probe, UV_ECANCELED);
}
