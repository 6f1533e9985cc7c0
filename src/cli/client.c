/* client.c: config resolution shared by every command, and the client side
 * of the commands that talk to a running server over its control socket.
 * The CLI is a short-lived process, so plain blocking sockets are right here.
 */
#include "cli/cli.h"
#include "util/json.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

const char *ten_cli_config_path(const ten_cli_opts_t *o) {
  if (o->config) return o->config;
  const char *env = getenv("TENEMENT_CONFIG");
  if (env && *env) return env;
  if (access("tenement.lua", R_OK) == 0) return "tenement.lua";
  return NULL;
}

int ten_cli_load_config(const ten_cli_opts_t *o, ten_config_t **out) {
  ten_config_overrides_t ovr = {o->domain, o->listen, o->port, o->data_dir};
  ten_err_t err;
  if (ten_config_load(ten_cli_config_path(o), &ovr, out, &err)) {
    fprintf(stderr, "ten: %s\n", err.msg);
    return TEN_EXIT_USAGE;
  }
  return TEN_EXIT_OK;
}

/* ------------------------------------------------------------ the socket */

static int data_dir_of(const ten_cli_opts_t *o, char **out);

typedef struct reply {
  ten_json_t *doc;
  const ten_json_t *result;
} reply_t;

int ten_cli_data_dir(const ten_cli_opts_t *o, char **out) { return data_dir_of(o, out); }

static int data_dir_of(const ten_cli_opts_t *o, char **out) {
  if (o->data_dir) {
    *out = ten_xstrdup(o->data_dir);
    return 0;
  }
  ten_config_t *c;
  int rc = ten_cli_load_config(o, &c);
  if (rc) return rc;
  *out = ten_xstrdup(c->settings.data_dir);
  ten_config_unref(c);
  return 0;
}

/* Replies and stream events arrive as newline-delimited JSON; one read()
 * may carry several. Bytes after the first newline belong to the next call,
 * so they wait here, tagged with the fd they came from. The CLI is single
 * threaded and reads one connection at a time. */
static ten_buf_t pending = TEN_BUF_INIT;
static int pending_fd = -1;

static int read_line(int fd, ten_buf_t *line) {
  if (pending_fd != fd) {
    ten_buf_reset(&pending);
    pending_fd = fd;
  }
  char chunk[4096];
  for (;;) {
    char *nl = pending.len ? memchr(pending.data, '\n', pending.len) : NULL;
    if (nl) {
      size_t len = (size_t)(nl - pending.data);
      ten_buf_append(line, pending.data, len);
      ten_buf_consume(&pending, len + 1);
      return 0;
    }
    ssize_t n = read(fd, chunk, sizeof chunk);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      ten_buf_free(&pending);
      pending_fd = -1;
      return -1;
    }
    ten_buf_append(&pending, chunk, (size_t)n);
  }
}

int ten_cli_connect(const ten_cli_opts_t *o, int *out_fd) {
  return ten_cli_connect_quiet(o, out_fd, false);
}

int ten_cli_connect_quiet(const ten_cli_opts_t *o, int *out_fd, bool quiet) {
  char *data_dir;
  int rc = data_dir_of(o, &data_dir);
  if (rc) return rc;
  char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
  int n = snprintf(path, sizeof path, "%s/ten.sock", data_dir);
  if (n < 0 || (size_t)n >= sizeof path) {
    fprintf(stderr, "ten: control socket path under %s is too long\n", data_dir);
    free(data_dir);
    return TEN_EXIT_ERROR;
  }
  int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_un addr = {.sun_family = AF_UNIX};
  memcpy(addr.sun_path, path, (size_t)n + 1);
  if (fd < 0 || connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
    int e = errno;
    if (fd >= 0) close(fd);
    if (quiet) {
      free(data_dir);
      return e == ENOENT || e == ECONNREFUSED ? TEN_EXIT_NO_SERVER : TEN_EXIT_ERROR;
    }
    if (e == ENOENT || e == ECONNREFUSED) {
      fprintf(stderr,
              "ten: no server is running for data dir %s\n"
              "     start one with: ten serve%s%s (or point at it with --config, --data-dir or "
              "TENEMENT_DATA_DIR)\n",
              data_dir, o->config ? " --config " : "", o->config ? o->config : "");
      free(data_dir);
      return TEN_EXIT_NO_SERVER;
    }
    fprintf(stderr, "ten: cannot connect to %s: %s\n", path, strerror(e));
    free(data_dir);
    return TEN_EXIT_ERROR;
  }
  free(data_dir);
  /* A new connection may reuse the fd number of a closed one. */
  ten_buf_reset(&pending);
  pending_fd = fd;
  *out_fd = fd;
  return TEN_EXIT_OK;
}

int ten_cli_send(int fd, const char *data, size_t len) {
  size_t off = 0;
  while (off < len) {
    ssize_t w = write(fd, data + off, len - off);
    if (w < 0 && errno == EINTR) continue;
    if (w < 0) return -errno;
    off += (size_t)w;
  }
  return 0;
}

int ten_cli_receive(int fd, ten_json_t **doc) {
  ten_buf_t line = TEN_BUF_INIT;
  int rc = read_line(fd, &line);
  if (rc) {
    fprintf(stderr, "ten: the server closed the connection without answering\n");
    ten_buf_free(&line);
    return TEN_EXIT_ERROR;
  }
  ten_err_t err;
  rc = ten_json_parse(line.data, line.len, doc, &err);
  ten_buf_free(&line);
  if (rc) {
    fprintf(stderr, "ten: unreadable reply from the server: %s\n", err.msg);
    return TEN_EXIT_ERROR;
  }
  return TEN_EXIT_OK;
}

/* Sends one request and reads its reply. Returns an exit code; on 0,
 * r->result is the server's result. Errors are printed here. */
static int request(const ten_cli_opts_t *o, const char *cmd, const char *args_json, reply_t *r) {
  memset(r, 0, sizeof *r);
  int fd;
  int rc = ten_cli_connect(o, &fd);
  if (rc) return rc;
  ten_buf_t out = TEN_BUF_INIT;
  ten_buf_puts(&out, "{\"cmd\":");
  ten_json_quote(&out, cmd, strlen(cmd));
  ten_buf_printf(&out, ",\"args\":%s}\n", args_json ? args_json : "{}");
  ten_cli_send(fd, out.data, out.len);
  ten_buf_free(&out);
  rc = ten_cli_receive(fd, &r->doc);
  close(fd);
  if (rc) return rc;
  bool ok = false;
  ten_json_get_bool(r->doc, "ok", &ok);
  if (!ok) {
    const char *msg = ten_json_get_str(r->doc, "error");
    fprintf(stderr, "ten: %s\n", msg ? msg : "the server reported an error");
    ten_json_free(r->doc);
    r->doc = NULL;
    return TEN_EXIT_ERROR;
  }
  r->result = ten_json_get(r->doc, "result");
  return TEN_EXIT_OK;
}

/* ------------------------------------------------------------ printing */

static void print_json(const ten_json_t *v, ten_buf_t *out) {
  ten_jw_t w;
  ten_jw_init(&w, out);
  switch (v ? v->type : TEN_JSON_NULL) {
  case TEN_JSON_NULL: ten_buf_puts(out, "null"); break;
  case TEN_JSON_BOOL: ten_buf_puts(out, v->boolean ? "true" : "false"); break;
  case TEN_JSON_NUMBER: ten_jw_num(&w, v->number); break;
  case TEN_JSON_STRING: ten_json_quote(out, v->string, v->string_len); break;
  case TEN_JSON_ARRAY:
    ten_buf_putc(out, '[');
    for (size_t i = 0; i < v->count; i++) {
      if (i) ten_buf_putc(out, ',');
      print_json(&v->items[i], out);
    }
    ten_buf_putc(out, ']');
    break;
  case TEN_JSON_OBJECT:
    ten_buf_putc(out, '{');
    for (size_t i = 0; i < v->count; i++) {
      if (i) ten_buf_putc(out, ',');
      ten_json_quote(out, v->keys[i], strlen(v->keys[i]));
      ten_buf_putc(out, ':');
      print_json(&v->items[i], out);
    }
    ten_buf_putc(out, '}');
    break;
  }
}

static void format_duration(double seconds, char *out, size_t len) {
  long s = (long)seconds;
  if (s < 60)
    snprintf(out, len, "%lds", s);
  else if (s < 3600)
    snprintf(out, len, "%ldm%02lds", s / 60, s % 60);
  else if (s < 86400)
    snprintf(out, len, "%ldh%02ldm", s / 3600, (s % 3600) / 60);
  else
    snprintf(out, len, "%ldd%02ldh", s / 86400, (s % 86400) / 3600);
}

static const char *str_or(const ten_json_t *obj, const char *key, const char *dflt) {
  const char *s = ten_json_get_str(obj, key);
  return s ? s : dflt;
}

static void print_table(const ten_json_t *list) {
  printf("%-28s %-9s %-8s %-8s %-8s %-6s %-8s %s\n", "INSTANCE", "STATE", "PID", "UPTIME",
         "RESTARTS", "WEIGHT", "HEALTH", "DETAIL");
  for (size_t i = 0; list && list->type == TEN_JSON_ARRAY && i < list->count; i++) {
    const ten_json_t *inst = &list->items[i];
    char key[160], pid[16] = "-", uptime[32] = "-", port_text[32];
    snprintf(key, sizeof key, "%s:%s", str_or(inst, "service", "?"), str_or(inst, "id", "?"));
    double v;
    if (ten_json_get_num(inst, "pid", &v)) snprintf(pid, sizeof pid, "%.0f", v);
    if (ten_json_get_num(inst, "uptime", &v)) format_duration(v, uptime, sizeof uptime);
    double restarts = 0, weight = 0;
    ten_json_get_num(inst, "restarts", &restarts);
    ten_json_get_num(inst, "weight", &weight);
    const char *detail = ten_json_get_str(inst, "reason");
    if (!detail) detail = ten_json_get_str(inst, "hook_error");
    if (!detail) detail = ten_json_get_str(inst, "socket");
    if (!detail && ten_json_get_num(inst, "port", &v)) {
      snprintf(port_text, sizeof port_text, "port %.0f", v);
      detail = port_text;
    }
    printf("%-28s %-9s %-8s %-8s %-8.0f %-6.0f %-8s %s\n", key, str_or(inst, "state", "?"), pid,
           uptime, restarts, weight, str_or(inst, "health", "-"), detail ? detail : "");
  }
}

/* ------------------------------------------------------------ commands */

int ten_cli_ps(const ten_cli_opts_t *o) {
  reply_t r;
  int rc = request(o, "ps", NULL, &r);
  if (rc) return rc;
  if (o->json) {
    ten_buf_t out = TEN_BUF_INIT;
    print_json(r.result, &out);
    puts(out.data);
    ten_buf_free(&out);
  } else {
    print_table(r.result);
  }
  ten_json_free(r.doc);
  return TEN_EXIT_OK;
}

/* "service:id" -> args {"instance": ...}; false with a usage message if malformed. */
static bool instance_args(const char *key, const ten_cli_opts_t *o, ten_buf_t *args) {
  const char *colon = strchr(key, ':');
  if (!colon || colon == key || !colon[1]) {
    fprintf(stderr, "ten: '%s' is not SERVICE:ID (for example api:prod)\n", key);
    return false;
  }
  ten_buf_puts(args, "{\"instance\":");
  ten_json_quote(args, key, strlen(key));
  if (o->no_wait) ten_buf_puts(args, ",\"wait\":false");
  ten_buf_putc(args, '}');
  return true;
}

/* "api:prod ready in 12 ms (pid 4242)", "api:prod stopped (exited with status 0)" */
static void print_instance_result(const ten_json_t *result) {
  const ten_json_t *inst = ten_json_get(result, "instance");
  double pid = 0, waited = 0;
  ten_json_get_num(inst, "pid", &pid);
  ten_json_get_num(result, "waited_ms", &waited);
  const char *state = str_or(inst, "state", "?");
  printf("%s:%s ", str_or(inst, "service", "?"), str_or(inst, "id", "?"));
  if (!strcmp(state, "ready"))
    printf("ready in %.0f ms (pid %.0f)\n", waited, pid);
  else if (!strcmp(state, "starting"))
    printf("starting (pid %.0f)\n", pid);
  else if (ten_json_get_str(inst, "last_exit"))
    printf("%s (%s)\n", state, ten_json_get_str(inst, "last_exit"));
  else
    printf("%s\n", state);
}

int ten_cli_spawn(const ten_cli_opts_t *o) {
  const char *service = o->args[0];
  const char *id = o->id;
  char *split = NULL;
  const char *colon = strchr(service, ':');
  if (colon && !id) {
    split = ten_xstrndup(service, (size_t)(colon - service));
    id = colon + 1;
    service = split;
  }
  if (!id || !*id) {
    fprintf(stderr, "ten: usage: ten spawn SERVICE --id ID\n");
    free(split);
    return TEN_EXIT_USAGE;
  }
  ten_buf_t args = TEN_BUF_INIT;
  ten_buf_puts(&args, "{\"service\":");
  ten_json_quote(&args, service, strlen(service));
  ten_buf_puts(&args, ",\"id\":");
  ten_json_quote(&args, id, strlen(id));
  if (o->no_wait) ten_buf_puts(&args, ",\"wait\":false");
  ten_buf_putc(&args, '}');
  free(split);
  reply_t r;
  int rc = request(o, "spawn", args.data, &r);
  ten_buf_free(&args);
  if (rc) return rc;
  print_instance_result(r.result);
  ten_json_free(r.doc);
  return TEN_EXIT_OK;
}

static int instance_command(const ten_cli_opts_t *o, const char *cmd) {
  ten_buf_t args = TEN_BUF_INIT;
  if (!instance_args(o->args[0], o, &args)) {
    ten_buf_free(&args);
    return TEN_EXIT_USAGE;
  }
  reply_t r;
  int rc = request(o, cmd, args.data, &r);
  ten_buf_free(&args);
  if (rc) return rc;
  print_instance_result(r.result);
  ten_json_free(r.doc);
  return TEN_EXIT_OK;
}

int ten_cli_stop(const ten_cli_opts_t *o) { return instance_command(o, "stop"); }

int ten_cli_weight(const ten_cli_opts_t *o) {
  char *end;
  long weight = strtol(o->args[1], &end, 10);
  if (!*o->args[1] || *end || weight < 0 || weight > 100) {
    fprintf(stderr, "ten: weight must be a whole number from 0 to 100, got '%s'\n", o->args[1]);
    return TEN_EXIT_USAGE;
  }
  ten_buf_t args = TEN_BUF_INIT;
  if (!instance_args(o->args[0], o, &args)) {
    ten_buf_free(&args);
    return TEN_EXIT_USAGE;
  }
  args.len--; /* reopen the object to add the weight */
  ten_buf_printf(&args, ",\"weight\":%ld}", weight);
  reply_t r;
  int rc = request(o, "weight", args.data, &r);
  ten_buf_free(&args);
  if (rc) return rc;
  const ten_json_t *inst = ten_json_get(r.result, "instance");
  double w = 0;
  ten_json_get_num(inst, "weight", &w);
  printf("%s:%s weight %.0f\n", str_or(inst, "service", "?"), str_or(inst, "id", "?"), w);
  ten_json_free(r.doc);
  return TEN_EXIT_OK;
}

int ten_cli_reload(const ten_cli_opts_t *o) {
  reply_t r;
  int rc = request(o, "reload", NULL, &r);
  if (rc) return rc;
  const char *summary = ten_json_get_str(r.result, "summary");
  fputs(summary ? summary : "reloaded\n", stdout);
  ten_json_free(r.doc);
  return TEN_EXIT_OK;
}
int ten_cli_restart(const ten_cli_opts_t *o) { return instance_command(o, "restart"); }

int ten_cli_config(const ten_cli_opts_t *o) {
  if (o->running) {
    reply_t r;
    int rc = request(o, "config", NULL, &r);
    if (rc) return rc;
    ten_buf_t out = TEN_BUF_INIT;
    print_json(r.result, &out);
    puts(out.data);
    ten_buf_free(&out);
    ten_json_free(r.doc);
    return TEN_EXIT_OK;
  }
  ten_config_t *c;
  int rc = ten_cli_load_config(o, &c);
  if (rc) return rc;
  ten_buf_t out = TEN_BUF_INIT;
  ten_config_to_json(c, &out);
  puts(out.data);
  ten_buf_free(&out);
  ten_config_unref(c);
  return TEN_EXIT_OK;
}
