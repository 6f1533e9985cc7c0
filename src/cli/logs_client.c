/* logs_client.c: `ten logs` and the token commands.
 *
 * `ten logs` asks the running server (so lines not yet committed are there
 * with -f); without a server it reads tenement.db itself, since the logs
 * are a file. Token commands write the database directly and then tell a
 * running server, so a revocation takes effect at once.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "api/auth.h"
#include "cli/cli.h"
#include "cli/logs_cmd.h"
#include "obs/db.h"
#include "obs/lines.h"
#include "util/json.h"
#include "util/time.h"

/* "10m", "2h", "1d", "30s" ago, or epoch ms. */
static bool parse_time(const char *s, int64_t *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0) return false;
  double unit;
  switch (*end) {
  case '\0': *out = (int64_t)v; return true;
  case 's': unit = 1000; break;
  case 'm': unit = 60000; break;
  case 'h': unit = 3600000; break;
  case 'd': unit = 86400000; break;
  default: return false;
  }
  if (end[1]) return false;
  *out = ten_wall_ms() - (int64_t)(v * unit);
  return true;
}

typedef struct logs_args {
  char service[64], id[64];
  int64_t since, until;
  long limit, tail;
  int level;
} logs_args_t;

static int parse_logs_args(const ten_cli_opts_t *o, logs_args_t *a) {
  memset(a, 0, sizeof *a);
  a->level = -1;
  a->limit = 100;
  a->tail = 10;
  if (o->arg_count) {
    const char *target = o->args[0];
    const char *colon = strchr(target, ':');
    size_t slen = colon ? (size_t)(colon - target) : strlen(target);
    if (slen == 0 || slen >= sizeof a->service || (colon && strlen(colon + 1) >= sizeof a->id)) {
      fprintf(stderr, "ten: '%s' is not SERVICE or SERVICE:ID\n", target);
      return TEN_EXIT_USAGE;
    }
    memcpy(a->service, target, slen);
    if (colon) snprintf(a->id, sizeof a->id, "%s", colon + 1);
  }
  if (o->level && (a->level = ten_level_parse(o->level, strlen(o->level))) < 0) {
    fprintf(stderr, "ten: --level must be debug, info, warn or error\n");
    return TEN_EXIT_USAGE;
  }
  if ((o->since && !parse_time(o->since, &a->since)) || (o->until && !parse_time(o->until, &a->until))) {
    fprintf(stderr, "ten: --since/--until take 30s, 10m, 2h, 1d or epoch milliseconds\n");
    return TEN_EXIT_USAGE;
  }
  if (o->limit && ((a->limit = strtol(o->limit, NULL, 10)) < 1 || a->limit > 100000)) {
    fprintf(stderr, "ten: --limit must be from 1 to 100000\n");
    return TEN_EXIT_USAGE;
  }
  if (o->tail && (a->tail = strtol(o->tail, NULL, 10)) < 0) {
    fprintf(stderr, "ten: --tail must be a number of lines\n");
    return TEN_EXIT_USAGE;
  }
  return 0;
}

static void print_line_json(const ten_json_t *l) {
  double ts = 0;
  ten_json_get_num(l, "ts_ms", &ts);
  const char *level = ten_json_get_str(l, "level");
  ten_logs_cmd_print((int64_t)ts, ten_json_get_str(l, "service") ? ten_json_get_str(l, "service") : "?",
                     ten_json_get_str(l, "instance") ? ten_json_get_str(l, "instance") : "?",
                     level ? ten_level_parse(level, strlen(level)) : 1,
                     ten_json_get_str(l, "message") ? ten_json_get_str(l, "message") : "");
}

/* Lines come newest first from a query; they are printed oldest first. */
typedef struct collected {
  char **lines;
  size_t count;
} collected_t;

static void collect_row(void *ctx, const ten_db_log_row_t *r) {
  collected_t *c = ctx;
  char when[32];
  ten_format_rfc3339(r->ts, when, sizeof when);
  c->lines = ten_xrealloc(c->lines, (c->count + 1) * sizeof *c->lines);
  c->lines[c->count++] = ten_xasprintf("%s %s:%s %-5s %s", when, r->service, r->instance,
                                       ten_level_name(r->level), r->message);
}

/* No server: the database file answers. */
static int logs_from_file(const ten_cli_opts_t *o, const logs_args_t *a) {
  char *dir;
  int rc = ten_cli_data_dir(o, &dir);
  if (rc) return rc;
  char *path = ten_xasprintf("%s/tenement.db", dir);
  free(dir);
  struct stat st;
  if (stat(path, &st) < 0) {
    fprintf(stderr, "ten: no logs yet: %s does not exist\n", path);
    free(path);
    return TEN_EXIT_NO_SERVER;
  }
  ten_db_log_query_t q = {.service = a->service[0] ? a->service : NULL,
                          .instance = a->id[0] ? a->id : NULL, .min_level = a->level,
                          .search = o->search, .since_ms = a->since, .until_ms = a->until,
                          .limit = (int)a->limit};
  collected_t c = {0};
  ten_err_t err;
  rc = ten_db_logs_query(path, &q, collect_row, &c, NULL, NULL, &err);
  free(path);
  for (size_t i = c.count; i-- > 0;) {
    puts(c.lines[i]);
    free(c.lines[i]);
  }
  free(c.lines);
  if (rc) {
    fprintf(stderr, "ten: %s\n", err.msg);
    return TEN_EXIT_ERROR;
  }
  return TEN_EXIT_OK;
}

int ten_cli_logs(const ten_cli_opts_t *o) {
  logs_args_t a;
  int rc = parse_logs_args(o, &a);
  if (rc) return rc;
  int fd;
  /* Without a server the file can still answer. */
  rc = ten_cli_connect_quiet(o, &fd, true);
  if (rc == TEN_EXIT_NO_SERVER && !o->follow) return logs_from_file(o, &a);
  if (rc) return ten_cli_connect(o, &fd); /* again, to say why */

  ten_buf_t req = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &req);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "cmd", "logs");
  ten_jw_key(&w, "args");
  ten_jw_obj(&w);
  if (a.service[0]) ten_jw_kstr(&w, "service", a.service);
  if (a.id[0]) ten_jw_kstr(&w, "id", a.id);
  if (o->search) ten_jw_kstr(&w, "search", o->search);
  if (o->level) ten_jw_kstr(&w, "level", o->level);
  if (a.since) ten_jw_kint(&w, "since_ms", a.since);
  if (a.until) ten_jw_kint(&w, "until_ms", a.until);
  ten_jw_kint(&w, "limit", a.limit);
  ten_jw_kint(&w, "tail", a.tail);
  ten_jw_kbool(&w, "follow", o->follow);
  ten_jw_obj_end(&w);
  ten_jw_obj_end(&w);
  ten_buf_putc(&req, '\n');
  ten_cli_send(fd, req.data, req.len);
  ten_buf_free(&req);

  for (;;) {
    ten_json_t *doc;
    if ((rc = ten_cli_receive(fd, &doc))) {
      close(fd);
      return o->follow ? TEN_EXIT_ERROR : rc;
    }
    const ten_json_t *line = ten_json_get(doc, "line");
    if (line) { /* a followed line */
      print_line_json(line);
      fflush(stdout);
      ten_json_free(doc);
      continue;
    }
    bool ok = false;
    ten_json_get_bool(doc, "ok", &ok);
    if (!ok) {
      const char *msg = ten_json_get_str(doc, "error");
      fprintf(stderr, "ten: %s\n", msg ? msg : "the server reported an error");
      ten_json_free(doc);
      close(fd);
      return TEN_EXIT_ERROR;
    }
    const ten_json_t *lines = ten_json_get(ten_json_get(doc, "result"), "lines");
    for (size_t i = lines ? lines->count : 0; i-- > 0;) print_line_json(&lines->items[i]);
    ten_json_free(doc);
    close(fd);
    return TEN_EXIT_OK;
  }
}

/* ------------------------------------------------------------ tokens */

static char *db_path_of(const ten_cli_opts_t *o, int *rc) {
  char *dir;
  *rc = ten_cli_data_dir(o, &dir);
  if (*rc) return NULL;
  /* The data dir may not exist before the first `ten serve`. */
  mkdir(dir, 0755);
  char *path = ten_xasprintf("%s/tenement.db", dir);
  free(dir);
  return path;
}

/* A running server re-reads the tokens; no server, nothing to tell. */
static void tell_server(const ten_cli_opts_t *o) {
  int fd;
  if (ten_cli_connect_quiet(o, &fd, true)) return;
  static const char req[] = "{\"cmd\":\"auth-changed\"}\n";
  ten_cli_send(fd, req, sizeof req - 1);
  ten_json_t *doc;
  if (ten_cli_receive(fd, &doc) == 0) ten_json_free(doc);
  close(fd);
}

int ten_cli_token_gen(const ten_cli_opts_t *o) {
  int rc;
  char *path = db_path_of(o, &rc);
  if (!path) return rc;
  char name[64];
  if (o->name) snprintf(name, sizeof name, "%s", o->name);
  else snprintf(name, sizeof name, "%s-%lld", o->tenant ? o->tenant : "token", (long long)ten_wall_ms());
  char token[128];
  ten_err_t err;
  rc = ten_auth_token_gen(path, name, o->tenant, token, sizeof token, &err);
  free(path);
  if (rc) {
    fprintf(stderr, "ten: %s\n", err.msg);
    return rc == UV_EINVAL ? TEN_EXIT_USAGE : TEN_EXIT_ERROR;
  }
  tell_server(o);
  printf("%s\n", token);
  fprintf(stderr, "token '%s'%s%s created. It is shown only now: keep it somewhere safe.\n", name,
          o->tenant ? " for tenant " : " (admin)", o->tenant ? o->tenant : "");
  return TEN_EXIT_OK;
}

static void print_token(void *ctx, const ten_auth_token_info_t *t) {
  char when[32];
  ten_format_rfc3339(t->created_ms, when, sizeof when);
  printf("%-24s %-10s %-16s %s\n", t->name, t->id, t->tenant ? t->tenant : "(admin)", when);
}

int ten_cli_token_list(const ten_cli_opts_t *o) {
  int rc;
  char *path = db_path_of(o, &rc);
  if (!path) return rc;
  printf("%-24s %-10s %-16s %s\n", "NAME", "ID", "TENANT", "CREATED");
  ten_err_t err;
  rc = ten_auth_token_list(path, print_token, NULL, &err);
  free(path);
  if (rc) {
    fprintf(stderr, "ten: %s\n", err.msg);
    return TEN_EXIT_ERROR;
  }
  return TEN_EXIT_OK;
}

int ten_cli_token_revoke(const ten_cli_opts_t *o) {
  int rc;
  char *path = db_path_of(o, &rc);
  if (!path) return rc;
  ten_err_t err;
  rc = ten_auth_token_revoke(path, o->args[0], &err);
  free(path);
  if (rc) {
    fprintf(stderr, "ten: %s\n", err.msg);
    return TEN_EXIT_ERROR;
  }
  tell_server(o);
  printf("token '%s' revoked\n", o->args[0]);
  return TEN_EXIT_OK;
}
