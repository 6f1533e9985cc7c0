#include "ctl/ctl.h"

#include "util/log.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

typedef struct ctl_conn ctl_conn_t;

struct ten_ctl_req {
  ctl_conn_t *conn; /* NULL once the client left */
  void (*on_cancel)(void *ctx);
  void *cancel_ctx;
};

struct ctl_conn {
  uv_pipe_t pipe;
  ten_ctl_t *ctl;
  ctl_conn_t *next, *prev;
  ten_buf_t in;           /* bytes not yet split into lines */
  size_t unread;          /* memory held by replies not yet written (or not called back) */
  ten_ctl_req_t *pending; /* the request being answered, if any */
  bool closing;
  bool reading; /* uv_read_start'ed */
  bool in_next; /* inside conn_next: a synchronous reply must not recurse */
};

typedef struct command {
  char *name;
  ten_ctl_cmd_fn fn;
  void *ctx;
} command_t;

struct ten_ctl {
  uv_loop_t *loop;
  uv_pipe_t listener;
  char *path;
  ctl_conn_t *conns;
  command_t *commands;
  size_t command_count;
  bool closing;
  bool bound; /* the socket file is ours to remove */
  int open_handles;
  void (*done)(void *ctx);
  void *done_ctx;
};

static void conn_next(ctl_conn_t *c);
static void conn_read(ctl_conn_t *c);

/* ------------------------------------------------------------ decoding */

int ten_ctl_decode(const char *line, size_t len, ten_json_t **doc, const char **cmd,
                   const ten_json_t **args, ten_err_t *err) {
  static const ten_json_t empty_object = {.type = TEN_JSON_OBJECT};
  *doc = NULL;
  int rc = ten_json_parse(line, len, doc, err);
  if (rc) return rc;
  if ((*doc)->type != TEN_JSON_OBJECT) {
    ten_json_free(*doc);
    *doc = NULL;
    return ten_errf(err, UV_EINVAL, "a request must be a JSON object like {\"cmd\":\"ps\"}");
  }
  *cmd = ten_json_get_str(*doc, "cmd");
  if (!*cmd) {
    ten_json_free(*doc);
    *doc = NULL;
    return ten_errf(err, UV_EINVAL, "a request needs a string \"cmd\"");
  }
  const ten_json_t *a = ten_json_get(*doc, "args");
  if (a && a->type != TEN_JSON_OBJECT && a->type != TEN_JSON_NULL) {
    ten_json_free(*doc);
    *doc = NULL;
    return ten_errf(err, UV_EINVAL, "\"args\" must be an object");
  }
  *args = a && a->type == TEN_JSON_OBJECT ? a : &empty_object;
  return 0;
}

/* ------------------------------------------------------------ connections */

static void maybe_done(ten_ctl_t *ctl) {
  if (ctl->closing && !ctl->conns && ctl->open_handles == 0 && ctl->done) {
    void (*done)(void *) = ctl->done;
    ctl->done = NULL;
    done(ctl->done_ctx);
  }
}

static void on_conn_closed(uv_handle_t *h) {
  ctl_conn_t *c = h->data;
  ten_ctl_t *ctl = c->ctl;
  if (c->prev)
    c->prev->next = c->next;
  else
    ctl->conns = c->next;
  if (c->next) c->next->prev = c->prev;
  ten_buf_free(&c->in);
  free(c);
  maybe_done(ctl);
}

static void conn_close(ctl_conn_t *c) {
  if (c->closing) return;
  c->closing = true;
  ten_ctl_req_t *req = c->pending;
  c->pending = NULL;
  if (req) {
    /* The handler still holds req: it learns the client left and frees it
     * when it replies (the reply is dropped). */
    req->conn = NULL;
    if (req->on_cancel) req->on_cancel(req->cancel_ctx);
  }
  uv_close((uv_handle_t *)&c->pipe, on_conn_closed);
}

typedef struct line_write {
  uv_write_t req;
  char *data;
  size_t held; /* what it counts in the connection's `unread` */
} line_write_t;

/* Replies the client has not read yet hold this connection's memory (a
 * small reply costs more in its write request than in its bytes). */
static bool replies_backed_up(const ctl_conn_t *c) { return c->unread > TEN_CTL_MAX_UNREAD; }

static void on_written(uv_write_t *w, int status) {
  line_write_t *lw = ten_container_of(w, line_write_t, req);
  ctl_conn_t *c = w->handle->data;
  c->unread -= lw->held;
  free(lw->data);
  free(lw);
  if (c->closing) return;
  if (status < 0) {
    conn_close(c); /* the client is gone */
    return;
  }
  if (!replies_backed_up(c)) {
    conn_next(c);
    conn_read(c);
  }
}

static void send_line(ctl_conn_t *c, ten_buf_t *line) {
  ten_buf_putc(line, '\n');
  line_write_t *lw = ten_xmalloc(sizeof *lw);
  lw->data = ten_buf_steal(line);
  size_t len = strlen(lw->data);
  lw->held = sizeof *lw + len;
  uv_buf_t b = uv_buf_init(lw->data, (unsigned)len);
  if (uv_write(&lw->req, (uv_stream_t *)&c->pipe, &b, 1, on_written) < 0) {
    free(lw->data);
    free(lw);
    conn_close(c);
    return;
  }
  c->unread += lw->held;
}

static void finish_request(ten_ctl_req_t *req, ten_buf_t *line) {
  ctl_conn_t *c = req->conn;
  free(req);
  if (!c) {
    ten_buf_free(line);
    return;
  }
  c->pending = NULL;
  send_line(c, line);
  conn_next(c);
}

void ten_ctl_reply_ok(ten_ctl_req_t *req, const char *result_json, size_t len) {
  ten_buf_t line = TEN_BUF_INIT;
  ten_buf_puts(&line, "{\"ok\":true,\"result\":");
  if (result_json)
    ten_buf_append(&line, result_json, len);
  else
    ten_buf_puts(&line, "null");
  ten_buf_putc(&line, '}');
  finish_request(req, &line);
}

void ten_ctl_reply_error(ten_ctl_req_t *req, const char *fmt, ...) {
  char msg[2048];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(msg, sizeof msg, fmt, ap);
  va_end(ap);
  ten_buf_t line = TEN_BUF_INIT;
  ten_buf_puts(&line, "{\"ok\":false,\"error\":");
  ten_json_quote(&line, msg, strlen(msg));
  ten_buf_putc(&line, '}');
  finish_request(req, &line);
}

bool ten_ctl_req_alive(const ten_ctl_req_t *req) { return req->conn != NULL; }

void ten_ctl_send_line(ten_ctl_req_t *req, const char *json, size_t len) {
  if (!req->conn || req->conn->closing) return;
  ten_buf_t line = TEN_BUF_INIT;
  ten_buf_append(&line, json, len);
  send_line(req->conn, &line);
}

uv_loop_t *ten_ctl_loop(const ten_ctl_t *ctl) { return ctl->loop; }

void ten_ctl_req_on_cancel(ten_ctl_req_t *req, void (*fn)(void *ctx), void *ctx) {
  req->on_cancel = fn;
  req->cancel_ctx = ctx;
}

static void dispatch_line(ctl_conn_t *c, const char *line, size_t len) {
  ten_ctl_t *ctl = c->ctl;
  ten_ctl_req_t *req = ten_xcalloc(1, sizeof *req);
  req->conn = c;
  c->pending = req;
  ten_json_t *doc;
  const char *cmd;
  const ten_json_t *args;
  ten_err_t err;
  if (ten_ctl_decode(line, len, &doc, &cmd, &args, &err)) {
    ten_ctl_reply_error(req, "bad request: %s", err.msg);
    return;
  }
  for (size_t i = 0; i < ctl->command_count; i++) {
    if (strcmp(ctl->commands[i].name, cmd) == 0) {
      ctl->commands[i].fn(ctl->commands[i].ctx, req, args);
      ten_json_free(doc);
      return;
    }
  }
  ten_ctl_reply_error(req, "unknown command '%s'", cmd);
  ten_json_free(doc);
}

/* Runs the next complete line, if no request is being answered and the
 * client has read (most of) the earlier replies. */
static void conn_next(ctl_conn_t *c) {
  if (c->in_next) return;
  c->in_next = true;
  while (!c->closing && !c->pending && !replies_backed_up(c)) {
    char *nl = c->in.len ? memchr(c->in.data, '\n', c->in.len) : NULL;
    if (!nl) break;
    size_t len = (size_t)(nl - c->in.data);
    char *line = ten_xstrndup(c->in.data, len);
    ten_buf_consume(&c->in, len + 1);
    size_t n = len;
    if (n && line[n - 1] == '\r') n--;
    if (n) dispatch_line(c, line, n);
    free(line);
  }
  c->in_next = false;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  ctl_conn_t *c = h->data;
  ten_buf_reserve(&c->in, 16384);
  buf->base = c->in.data + c->in.len;
  buf->len = c->in.cap - c->in.len - 1;
}

/* The client sent more than the connection may hold: it learns why, and
 * the connection (with the request it was waiting for) ends. */
static void refuse_input(ctl_conn_t *c, const char *why) {
  ten_buf_t line = TEN_BUF_INIT;
  ten_buf_printf(&line, "{\"ok\":false,\"error\":\"%s\"}", why);
  send_line(c, &line);
  conn_close(c);
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  ctl_conn_t *c = s->data;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  c->in.len += (size_t)nread;
  c->in.data[c->in.len] = '\0';
  conn_next(c);
  if (c->closing) return;
  /* What is left is one unfinished line, or the requests waiting behind one
   * being answered: either way the client is not waiting for us. */
  if (c->in.len > TEN_CTL_MAX_LINE) {
    char why[160];
    if (c->pending)
      snprintf(why, sizeof why, "more than %d bytes of requests sent while one is being answered",
               TEN_CTL_MAX_LINE);
    else
      snprintf(why, sizeof why, "request line longer than %d bytes", TEN_CTL_MAX_LINE);
    refuse_input(c, why);
    return;
  }
  conn_read(c);
}

/* Reads while the client reads its replies: one that stops reading them
 * stops being read, so its requests wait in its own socket, not in ten.
 * While a request is pending the connection is still read (bounded by
 * on_read), or a client that left would not be noticed. */
static void conn_read(ctl_conn_t *c) {
  bool want = !c->closing && !replies_backed_up(c);
  if (want == c->reading) return;
  if (want) {
    int rc = uv_read_start((uv_stream_t *)&c->pipe, on_alloc, on_read);
    if (rc < 0) {
      ten_log(TEN_LOG_WARN, "ctl: cannot read a control connection: %s", uv_strerror(rc));
      conn_close(c);
      return;
    }
  } else {
    uv_read_stop((uv_stream_t *)&c->pipe);
  }
  c->reading = want;
}

static bool peer_allowed(uv_pipe_t *pipe) {
  uv_os_fd_t fd;
  if (uv_fileno((uv_handle_t *)pipe, &fd) < 0) return false;
  struct ucred cred;
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0) return false;
  return cred.uid == 0 || cred.uid == geteuid();
}

static void on_connection(uv_stream_t *server, int status) {
  ten_ctl_t *ctl = server->data;
  if (status < 0) return;
  ctl_conn_t *c = ten_xcalloc(1, sizeof *c);
  c->ctl = ctl;
  uv_pipe_init(ctl->loop, &c->pipe, 0);
  c->pipe.data = c;
  c->next = ctl->conns;
  if (ctl->conns) ctl->conns->prev = c;
  ctl->conns = c;
  if (uv_accept(server, (uv_stream_t *)&c->pipe) < 0) {
    conn_close(c);
    return;
  }
  if (!peer_allowed(&c->pipe)) {
    ten_log(TEN_LOG_WARN, "ctl: refused a control connection from another user");
    conn_close(c);
    return;
  }
  conn_read(c);
}

/* ------------------------------------------------------------ lifecycle */

/* Is a live server answering on path? (A stale socket refuses.) */
static bool socket_is_live(const char *path) {
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  struct sockaddr_un a = {.sun_family = AF_UNIX};
  snprintf(a.sun_path, sizeof a.sun_path, "%s", path);
  bool live = connect(fd, (struct sockaddr *)&a, sizeof a) == 0;
  close(fd);
  return live;
}

int ten_ctl_new(uv_loop_t *loop, const char *socket_path, ten_ctl_t **out, ten_err_t *err) {
  struct sockaddr_un a;
  if (strlen(socket_path) >= sizeof a.sun_path)
    return ten_errf(err, UV_ENAMETOOLONG, "control socket path %s is too long", socket_path);
  struct stat st;
  if (lstat(socket_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return ten_errf(err, UV_EEXIST, "%s exists and is not a socket", socket_path);
    if (socket_is_live(socket_path))
      return ten_errf(err, UV_EADDRINUSE, "another ten serve is answering on %s", socket_path);
    unlink(socket_path);
  }
  ten_ctl_t *ctl = ten_xcalloc(1, sizeof *ctl);
  ctl->loop = loop;
  ctl->path = ten_xstrdup(socket_path);
  uv_pipe_init(loop, &ctl->listener, 0);
  ctl->listener.data = ctl;
  ctl->open_handles = 1;
  /* Created 0600 from the start: no window in which others could connect. */
  mode_t old = umask(0177);
  int rc = uv_pipe_bind(&ctl->listener, socket_path);
  umask(old);
  if (rc == 0) rc = uv_listen((uv_stream_t *)&ctl->listener, 64, on_connection);
  *out = ctl;
  if (rc < 0) return ten_errf(err, rc, "cannot listen on %s: %s", socket_path, uv_strerror(rc));
  ctl->bound = true;
  return 0;
}

void ten_ctl_register(ten_ctl_t *ctl, const char *cmd, ten_ctl_cmd_fn fn, void *ctx) {
  ctl->commands = ten_xrealloc(ctl->commands, (ctl->command_count + 1) * sizeof *ctl->commands);
  ctl->commands[ctl->command_count++] = (command_t){ten_xstrdup(cmd), fn, ctx};
}

static void on_listener_closed(uv_handle_t *h) {
  ten_ctl_t *ctl = h->data;
  ctl->open_handles--;
  maybe_done(ctl);
}

void ten_ctl_close(ten_ctl_t *ctl, void (*done)(void *ctx), void *ctx) {
  bool was_closing = ctl->closing;
  ctl->closing = true;
  ctl->done = done;
  ctl->done_ctx = ctx;
  if (!was_closing) {
    uv_close((uv_handle_t *)&ctl->listener, on_listener_closed);
    if (ctl->bound) unlink(ctl->path);
  }
  for (ctl_conn_t *c = ctl->conns; c; c = c->next) conn_close(c);
  maybe_done(ctl);
}

void ten_ctl_free(ten_ctl_t *ctl) {
  if (!ctl) return;
  for (size_t i = 0; i < ctl->command_count; i++) free(ctl->commands[i].name);
  free(ctl->commands);
  free(ctl->path);
  free(ctl);
}
