#include "cli/logs_cmd.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "obs/lines.h"
#include "util/json.h"
#include "util/time.h"

typedef struct logs_cmd {
  ten_logs_t *logs;
  ten_db_t *db;
  uv_loop_t *loop;
} logs_cmd_t;

/* ---- follow ---- */

typedef struct follow {
  ten_ctl_req_t *req;
  ten_logs_sub_t *sub;
  int min_level;
} follow_t;

static void follow_line(void *ctx, const ten_log_line_t *l) {
  follow_t *f = ctx;
  if (l->level < f->min_level) return;
  ten_buf_t out = TEN_BUF_INIT;
  ten_buf_puts(&out, "{\"line\":");
  ten_log_line_json(&out, l);
  ten_buf_putc(&out, '}');
  ten_ctl_send_line(f->req, out.data, out.len);
  ten_buf_free(&out);
}

static void follow_cancel(void *ctx) {
  follow_t *f = ctx;
  ten_logs_unsubscribe(f->sub);
  ten_ctl_reply_error(f->req, "cancelled");
  free(f);
}

/* ---- query ---- */

typedef struct query {
  uv_work_t work;
  ten_ctl_req_t *req;
  bool cancelled;
  char *db_path, *service, *id, *search;
  ten_db_log_query_t q;
  ten_buf_t lines; /* a JSON array's items, newest first */
  size_t count;
  int rc;
  char error[512];
} query_t;

static void query_row(void *ctx, const ten_db_log_row_t *r) {
  query_t *q = ctx;
  if (q->count++) ten_buf_putc(&q->lines, ',');
  ten_log_line_t line = ten_log_line_from_row(r);
  ten_log_line_json(&q->lines, &line);
}

static void query_work(uv_work_t *w) {
  query_t *q = ten_container_of(w, query_t, work);
  ten_err_t err;
  q->rc = ten_db_logs_query(q->db_path, &q->q, query_row, q, NULL, NULL, &err);
  if (q->rc) snprintf(q->error, sizeof q->error, "%.500s", err.msg);
}

static void query_cancel(void *ctx) {
  query_t *q = ctx;
  q->cancelled = true;
}

static void query_done(uv_work_t *w, int status) {
  query_t *q = ten_container_of(w, query_t, work);
  ten_ctl_req_on_cancel(q->req, NULL, NULL);
  if (q->rc) {
    ten_ctl_reply_error(q->req, "%s", q->error);
  } else {
    ten_buf_t out = TEN_BUF_INIT;
    ten_buf_puts(&out, "{\"lines\":[");
    if (q->lines.len) ten_buf_append(&out, q->lines.data, q->lines.len);
    ten_buf_puts(&out, "]}");
    ten_ctl_reply_ok(q->req, out.data, out.len);
    ten_buf_free(&out);
  }
  ten_buf_free(&q->lines);
  free(q->db_path);
  free(q->service);
  free(q->id);
  free(q->search);
  free(q);
}

static char *opt_str(const ten_json_t *args, const char *key) {
  const char *s = ten_json_get_str(args, key);
  return s && *s ? ten_xstrdup(s) : NULL;
}

static void cmd_logs(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  logs_cmd_t *lc = ctx;
  const char *level_name = ten_json_get_str(args, "level");
  int min_level = -1;
  if (level_name && (min_level = ten_level_parse(level_name, strlen(level_name))) < 0) {
    ten_ctl_reply_error(req, "level must be debug, info, warn or error");
    return;
  }
  bool follow = false;
  ten_json_get_bool(args, "follow", &follow);
  double limit = 100, since = 0, until = 0, tail = 10;
  ten_json_get_num(args, "limit", &limit);
  ten_json_get_num(args, "since_ms", &since);
  ten_json_get_num(args, "until_ms", &until);
  ten_json_get_num(args, "tail", &tail);
  if (follow) {
    const char *service = ten_json_get_str(args, "service");
    const char *id = ten_json_get_str(args, "id");
    follow_t *f = ten_xcalloc(1, sizeof *f);
    f->req = req;
    f->min_level = min_level;
    if (service && id && tail > 0)
      ten_logs_tail(lc->logs, service, id, 0, (size_t)tail, follow_line, f);
    f->sub = ten_logs_subscribe(lc->logs, service, id, NULL, follow_line, f);
    ten_ctl_req_on_cancel(req, follow_cancel, f);
    return;
  }
  if (!lc->db) {
    ten_ctl_reply_error(req, "log storage is not available");
    return;
  }
  if (limit < 1 || limit > 100000) {
    ten_ctl_reply_error(req, "limit must be from 1 to 100000");
    return;
  }
  query_t *q = ten_xcalloc(1, sizeof *q);
  q->req = req;
  q->db_path = ten_xstrdup(ten_db_path(lc->db));
  q->service = opt_str(args, "service");
  q->id = opt_str(args, "id");
  q->search = opt_str(args, "search");
  q->q = (ten_db_log_query_t){.service = q->service, .instance = q->id, .min_level = min_level,
                              .search = q->search, .since_ms = (int64_t)since,
                              .until_ms = (int64_t)until, .limit = (int)limit};
  ten_ctl_req_on_cancel(req, query_cancel, q);
  if (uv_queue_work(lc->loop, &q->work, query_work, query_done) < 0) {
    ten_ctl_req_on_cancel(req, NULL, NULL);
    ten_ctl_reply_error(req, "cannot queue the query");
    free(q->db_path);
    free(q->service);
    free(q->id);
    free(q->search);
    free(q);
  }
}

void ten_logs_cmd_register(ten_ctl_t *ctl, ten_logs_t *logs, ten_db_t *db) {
  static logs_cmd_t lc; /* one server per process */
  lc.logs = logs;
  lc.db = db;
  lc.loop = ten_ctl_loop(ctl);
  ten_ctl_register(ctl, "logs", cmd_logs, &lc);
}

void ten_logs_cmd_print(int64_t ts_ms, const char *service, const char *instance, int level,
                        const char *message) {
  char when[32];
  ten_format_rfc3339(ts_ms, when, sizeof when);
  printf("%s %s:%s %-5s %s\n", when, service, instance, ten_level_name(level), message);
}
