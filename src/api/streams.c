/* streams.c: log queries and the live streams (Server-Sent Events) of log
 * lines and instance state changes. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "api/internal.h"
#include "obs/lines.h"
#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#define HEARTBEAT_MS 15000
#define REPLAY_MAX 10000   /* lines a resuming stream catches up with */
#define BUFFER_MAX 10000   /* live lines held while catching up */
#define QUERY_LIMIT_MAX 1000

typedef enum stream_kind { STREAM_LOGS, STREAM_EVENTS } stream_kind_t;

struct ten__stream {
  ten__stream_t *next, *prev;
  ten_api_t *api;
  ten__call_t *call;
  stream_kind_t kind;
  uv_timer_t heartbeat;
  ten_logs_sub_t *sub;
  char *service, *id; /* log filter (NULL: any) */
  bool replaying;      /* catching up from the database; live lines wait */
  ten_buf_t waiting;   /* live lines (already formatted) during the catch-up */
  size_t waiting_count;
  int64_t last_sent;
  bool ended;
  struct replay *replay; /* the catch-up query, while it runs */
};

static uint64_t event_seq;

/* ------------------------------------------------------------ formatting */

/* "id: N\nevent: log\ndata: {...}\n\n" */
static void sse_event(ten_buf_t *out, int64_t id, const char *event, const char *data, size_t len) {
  ten_buf_printf(out, "id: %lld\nevent: %s\ndata: ", (long long)id, event);
  ten_buf_append(out, data, len);
  ten_buf_puts(out, "\n\n");
}

/* ------------------------------------------------------------ streams */

struct replay;
static void replay_detach(struct replay *r);

static void on_heartbeat_closed(uv_handle_t *h) {
  ten__stream_t *st = h->data;
  ten_buf_free(&st->waiting);
  free(st->service);
  free(st->id);
  free(st);
}

/* One way out for every stream: the client left, it was too slow, or the
 * server is closing. */
static void stream_end(ten__stream_t *st, bool client_gone) {
  if (st->ended) return;
  st->ended = true;
  ten_api_t *api = st->api;
  if (st->prev) st->prev->next = st->next;
  else api->streams = st->next;
  if (st->next) st->next->prev = st->prev;
  ten_logs_unsubscribe(st->sub);
  st->sub = NULL;
  if (st->replay) replay_detach(st->replay);
  ten__call_t *call = st->call;
  st->call = NULL;
  if (call) {
    if (!client_gone && call->req) ten_http_stream_end(call->req);
    ten__call_free(call);
  }
  uv_close((uv_handle_t *)&st->heartbeat, on_heartbeat_closed);
}

static void on_stream_gone(ten__call_t *call) { stream_end(call->state, true); }

static bool stream_send(ten__stream_t *st, const char *data, size_t len) {
  if (st->ended || !st->call || !st->call->req) return false;
  if (!ten_http_stream_write(st->call->req, data, len)) {
    /* Too slow to keep up: it can come back with Last-Event-ID. */
    ten_log(TEN_LOG_WARN, "api: closing a stream whose reader fell behind");
    stream_end(st, false);
    return false;
  }
  return true;
}

static void on_heartbeat(uv_timer_t *t) { stream_send(t->data, ": ping\n\n", 8); }

static ten__stream_t *stream_open(ten__call_t *call, stream_kind_t kind) {
  ten_api_t *api = call->api;
  ten__stream_t *st = ten_xcalloc(1, sizeof *st);
  st->api = api;
  st->call = call;
  st->kind = kind;
  call->state = st;
  call->on_gone = on_stream_gone;
  uv_timer_init(ten_http_loop(api->http), &st->heartbeat);
  st->heartbeat.data = st;
  uv_timer_start(&st->heartbeat, on_heartbeat, HEARTBEAT_MS, HEARTBEAT_MS);
  st->next = api->streams;
  if (api->streams) api->streams->prev = st;
  api->streams = st;
  ten_http_stream_begin(call->req, 200, "text/event-stream", "X-Accel-Buffering: no\r\n");
  /* Tell the client how soon to reconnect if we part. */
  stream_send(st, "retry: 2000\n\n", 13);
  return st;
}

/* ------------------------------------------------------------ log lines */

static void send_line(ten__stream_t *st, const ten_log_line_t *line) {
  if (line->id <= st->last_sent) return; /* already sent while catching up */
  ten_buf_t json = TEN_BUF_INIT, ev = TEN_BUF_INIT;
  ten_log_line_json(&json, line);
  sse_event(&ev, line->id, "log", json.data, json.len);
  if (stream_send(st, ev.data, ev.len)) st->last_sent = line->id;
  ten_buf_free(&json);
  ten_buf_free(&ev);
}

static void on_live_line(void *ctx, const ten_log_line_t *line) {
  ten__stream_t *st = ctx;
  if (!st->replaying) {
    send_line(st, line);
    return;
  }
  if (st->waiting_count >= BUFFER_MAX) {
    stream_end(st, false); /* it resumes from its Last-Event-ID */
    return;
  }
  /* Held as id, then the event text, until the catch-up is done. */
  ten_buf_t json = TEN_BUF_INIT;
  ten_log_line_json(&json, line);
  ten_buf_printf(&st->waiting, "%lld %zu\n", (long long)line->id, json.len);
  ten_buf_append(&st->waiting, json.data, json.len);
  ten_buf_free(&json);
  st->waiting_count++;
}

static void flush_waiting(ten__stream_t *st) {
  const char *p = st->waiting.data, *end = p + st->waiting.len;
  while (p && p < end && !st->ended) {
    long long id;
    size_t len;
    int consumed;
    if (sscanf(p, "%lld %zu\n%n", &id, &len, &consumed) != 2) break;
    p += consumed;
    if (id > st->last_sent) {
      ten_buf_t ev = TEN_BUF_INIT;
      sse_event(&ev, id, "log", p, len);
      if (stream_send(st, ev.data, ev.len)) st->last_sent = id;
      ten_buf_free(&ev);
    }
    p += len;
  }
  if (!st->ended) {
    ten_buf_free(&st->waiting);
    st->waiting_count = 0;
  }
}

static void send_line_cb(void *ctx, const ten_log_line_t *line) { send_line(ctx, line); }

/* The catch-up query, on the threadpool. */
typedef struct replay {
  uv_work_t work;
  ten__stream_t *stream; /* NULL once the stream has ended */
  char *db_path;
  ten_db_log_query_t q;
  char *service, *id, *tenant;
  ten_buf_t events; /* formatted SSE events, ids ascending */
  int64_t last_id;
  int rc;
} replay_t;

static void replay_detach(struct replay *r) { r->stream = NULL; }

static void replay_row(void *ctx, const ten_db_log_row_t *row) {
  replay_t *r = ctx;
  ten_buf_t json = TEN_BUF_INIT;
  ten_log_line_t line = ten_log_line_from_row(row);
  ten_log_line_json(&json, &line);
  sse_event(&r->events, row->id, "log", json.data, json.len);
  ten_buf_free(&json);
  r->last_id = row->id;
}

static void replay_work(uv_work_t *w) {
  replay_t *r = ten_container_of(w, replay_t, work);
  ten_err_t err;
  r->rc = ten_db_logs_query(r->db_path, &r->q, replay_row, r, NULL, NULL, &err);
}

static void replay_done(uv_work_t *w, int status) {
  replay_t *r = ten_container_of(w, replay_t, work);
  ten__stream_t *st = r->stream;
  if (st) {
    st->replay = NULL;
    if (r->events.len && stream_send(st, r->events.data, r->events.len) &&
        r->last_id > st->last_sent)
      st->last_sent = r->last_id;
    if (!st->ended) {
      /* What arrived meanwhile: the ring first (it holds lines not committed
       * yet), then the live lines held during the catch-up. */
      if (st->service && st->id)
        ten_logs_tail(st->api->logs, st->service, st->id, st->last_sent, REPLAY_MAX, send_line_cb,
                      st);
      st->replaying = false;
      if (!st->ended) flush_waiting(st);
    }
  }
  ten_buf_free(&r->events);
  free(r->db_path);
  free(r->service);
  free(r->id);
  free(r->tenant);
  free(r);
}

static bool tenant_blocks(const ten__call_t *call, const char *id) {
  return !call->id.admin && (!id || strcmp(id, call->id.tenant) != 0);
}

void ten__api_logs_stream(ten__call_t *call) {
  ten_api_t *api = call->api;
  char service[64] = "", id[64] = "", last[32] = "", tail[16] = "";
  bool has_service = ten__query_get(call->req, "service", service, sizeof service) && *service;
  bool has_id = ten__query_get(call->req, "id", id, sizeof id) && *id;
  /* A tenant streams only its own instances. */
  if (!call->id.admin && has_id && strcmp(id, call->id.tenant) != 0) {
    ten__call_error(call, 404, "no such instance", NULL);
    return;
  }
  size_t hlen;
  const char *h = ten_http_req_header(call->req, "last-event-id", &hlen);
  if (h && hlen < sizeof last) {
    memcpy(last, h, hlen);
    last[hlen] = '\0';
  } else {
    ten__query_get(call->req, "last_event_id", last, sizeof last);
  }
  ten__query_get(call->req, "tail", tail, sizeof tail);

  ten__stream_t *st = stream_open(call, STREAM_LOGS);
  st->service = has_service ? ten_xstrdup(service) : NULL;
  st->id = has_id ? ten_xstrdup(id) : NULL;
  const char *tenant = call->id.admin ? NULL : call->id.tenant;
  st->sub = ten_logs_subscribe(api->logs, st->service, st->id, tenant, on_live_line, st);

  /* Last-Event-ID: 0 is a resume from the very start (up to REPLAY_MAX). */
  char *end = NULL;
  long long after = *last ? strtoll(last, &end, 10) : -1;
  if (end && *end) after = -1;
  if (after >= 0 && api->db) {
    st->replaying = true;
    st->last_sent = after;
    replay_t *r = ten_xcalloc(1, sizeof *r);
    r->stream = st;
    st->replay = r;
    r->db_path = ten_xstrdup(ten_db_path(api->db));
    r->service = st->service ? ten_xstrdup(st->service) : NULL;
    r->id = st->id ? ten_xstrdup(st->id) : NULL;
    r->tenant = tenant ? ten_xstrdup(tenant) : NULL;
    r->q = (ten_db_log_query_t){.service = r->service, .instance = r->id, .tenant = r->tenant,
                                .min_level = -1, .after_id = after, .limit = REPLAY_MAX};
    if (uv_queue_work(ten_http_loop(api->http), &r->work, replay_work, replay_done) < 0) {
      st->replay = NULL;
      st->replaying = false;
      free(r->db_path);
      free(r->service);
      free(r->id);
      free(r->tenant);
      free(r);
    }
  } else if (atoi(tail) > 0 && st->service && st->id) {
    ten_logs_tail(api->logs, st->service, st->id, 0, (size_t)atoi(tail), send_line_cb, st);
  }
}

/* ------------------------------------------------------------ queries */

typedef struct query {
  uv_work_t work;
  ten__call_t *call; /* NULL once the client has gone */
  char *db_path;
  ten_db_log_query_t q;
  char service[64], id[64], tenant[64], search[1024];
  ten_buf_t out;
  ten_jw_t w;
  int64_t next_cursor, indexed_through;
  int rc;
  char error[512];
} query_t;

static void query_row(void *ctx, const ten_db_log_row_t *row) {
  query_t *q = ctx;
  ten_buf_t json = TEN_BUF_INIT;
  ten_log_line_t line = ten_log_line_from_row(row);
  ten_log_line_json(&json, &line);
  ten_jw_raw(&q->w, json.data, json.len);
  ten_buf_free(&json);
}

static void query_work(uv_work_t *w) {
  query_t *q = ten_container_of(w, query_t, work);
  ten_err_t err;
  ten_jw_init(&q->w, &q->out);
  ten_jw_obj(&q->w);
  ten_jw_key(&q->w, "lines");
  ten_jw_arr(&q->w);
  q->rc = ten_db_logs_query(q->db_path, &q->q, query_row, q, &q->next_cursor, &q->indexed_through,
                            &err);
  if (q->rc) snprintf(q->error, sizeof q->error, "%.500s", err.msg);
  ten_jw_arr_end(&q->w);
  ten_jw_key(&q->w, "next_cursor");
  if (q->next_cursor) ten_jw_int(&q->w, q->next_cursor);
  else ten_jw_null(&q->w);
  ten_jw_kint(&q->w, "indexed_through", q->indexed_through);
  ten_jw_obj_end(&q->w);
  ten_buf_putc(&q->out, '\n');
}

static void query_gone(ten__call_t *call) {
  query_t *q = call->state;
  q->call = NULL;
  free(call);
}

static void query_done(uv_work_t *w, int status) {
  query_t *q = ten_container_of(w, query_t, work);
  ten__call_t *call = q->call;
  if (call) {
    call->on_gone = NULL;
    if (q->rc) ten__call_error(call, q->rc == UV_EINVAL ? 400 : 500, q->error, NULL);
    else ten__call_json(call, 200, &q->out);
  }
  ten_buf_free(&q->out);
  free(q->db_path);
  free(q);
}

/* "10m", "2h", "3d", "45s" ago, or absolute epoch milliseconds. */
static bool parse_time(const char *s, int64_t *out) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0) return false;
  double unit = 0;
  switch (*end) {
  case 's': unit = 1000; break;
  case 'm': unit = 60000; break;
  case 'h': unit = 3600000; break;
  case 'd': unit = 86400000; break;
  case '\0': *out = (int64_t)v; return true;
  default: return false;
  }
  if (end[1]) return false;
  *out = ten_wall_ms() - (int64_t)(v * unit);
  return true;
}

void ten__api_logs(ten__call_t *call) {
  ten_api_t *api = call->api;
  if (!api->db) {
    ten__call_error(call, 503, "log storage is not available", NULL);
    return;
  }
  query_t *q = ten_xcalloc(1, sizeof *q);
  char level[16] = "", since[32] = "", until[32] = "", limit[16] = "", cursor[32] = "";
  bool has_service = ten__query_get(call->req, "service", q->service, sizeof q->service) && *q->service;
  bool has_id = ten__query_get(call->req, "id", q->id, sizeof q->id) && *q->id;
  bool has_search = ten__query_get(call->req, "search", q->search, sizeof q->search) && *q->search;
  ten__query_get(call->req, "level", level, sizeof level);
  ten__query_get(call->req, "since", since, sizeof since);
  ten__query_get(call->req, "until", until, sizeof until);
  ten__query_get(call->req, "limit", limit, sizeof limit);
  ten__query_get(call->req, "cursor", cursor, sizeof cursor);
  const char *bad = NULL;
  q->q.min_level = -1;
  if (*level && (q->q.min_level = ten_level_parse(level, strlen(level))) < 0)
    bad = "level must be debug, info, warn or error";
  if (*since && !parse_time(since, &q->q.since_ms)) bad = "since must be like 10m, 2h, 3d or epoch ms";
  if (*until && !parse_time(until, &q->q.until_ms)) bad = "until must be like 10m, 2h, 3d or epoch ms";
  q->q.limit = *limit ? atoi(limit) : 100;
  if (q->q.limit <= 0 || q->q.limit > QUERY_LIMIT_MAX) bad = "limit must be from 1 to 1000";
  q->q.before_id = *cursor ? atoll(cursor) : 0;
  if (bad) {
    free(q);
    ten__call_error(call, 400, bad, NULL);
    return;
  }
  if (tenant_blocks(call, has_id ? q->id : call->id.tenant)) {
    free(q);
    ten__call_error(call, 404, "no such instance", NULL);
    return;
  }
  if (!call->id.admin) snprintf(q->tenant, sizeof q->tenant, "%s", call->id.tenant);
  q->q.service = has_service ? q->service : NULL;
  q->q.instance = has_id ? q->id : NULL;
  q->q.tenant = q->tenant[0] ? q->tenant : NULL;
  q->q.search = has_search ? q->search : NULL;
  q->db_path = ten_xstrdup(ten_db_path(api->db));
  q->call = call;
  call->state = q;
  call->on_gone = query_gone;
  if (uv_queue_work(ten_http_loop(api->http), &q->work, query_work, query_done) < 0) {
    call->on_gone = NULL;
    free(q->db_path);
    free(q);
    ten__call_error(call, 500, "cannot queue the query", NULL);
  }
}

/* ------------------------------------------------------------ events */

static void on_transition(void *ctx, ten_instance_t *inst, ten_instance_state_t from,
                          ten_instance_state_t to) {
  ten_api_t *api = ctx;
  if (to == TEN_INST_STATE_COUNT || !api->streams) return;
  int64_t id = (int64_t)++event_seq;
  ten_buf_t json = TEN_BUF_INIT, ev = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &json);
  ten_jw_obj(&w);
  ten_jw_kint(&w, "ts_ms", ten_wall_ms());
  ten_jw_kstr(&w, "service", inst->service);
  ten_jw_kstr(&w, "id", inst->id);
  ten_jw_kstr(&w, "from", ten_instance_state_name(from));
  ten_jw_kstr(&w, "to", ten_instance_state_name(to));
  ten_jw_kstr(&w, "reason", inst->reason[0] ? inst->reason : NULL);
  ten_jw_key(&w, "pid");
  if (inst->pid) ten_jw_int(&w, inst->pid);
  else ten_jw_null(&w);
  ten_jw_obj_end(&w);
  sse_event(&ev, id, "state", json.data, json.len);
  for (ten__stream_t *st = api->streams, *next; st; st = next) {
    next = st->next;
    if (st->kind != STREAM_EVENTS || !st->call) continue;
    if (!ten__call_may_see(st->call, inst->id)) continue;
    stream_send(st, ev.data, ev.len);
  }
  ten_buf_free(&json);
  ten_buf_free(&ev);
}

void ten__api_events(ten__call_t *call) { stream_open(call, STREAM_EVENTS); }

void ten__streams_init(ten_api_t *api) { ten_hv_observe(api->hv, on_transition, api); }

void ten__streams_close(ten_api_t *api) {
  while (api->streams) stream_end(api->streams, false);
}
