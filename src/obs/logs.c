#include "obs/logs.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util/json.h"
#include "util/log.h"
#include "util/map.h"
#include "util/time.h"

#define CLOSE_GRACE_MS 2000  /* pipes still open this long after close are cut */
#define RESUME_POLL_MS 10    /* while paused: how often to ask the writer, or retry the spool */
#define PAUSE_WARN_MS  60000 /* at most one warning about pausing per minute */
#define READ_BUFFER (64 * 1024)

typedef struct ring_entry {
  int64_t id, ts;
  uint8_t level, stream;
  char *message;
  uint32_t len;
} ring_entry_t;

/* The last lines of one instance. Slots grow on demand up to cap, so an
 * instance that logs little costs little (ten holds thousands). Until the
 * ring is full head stays 0; after that alloc == cap. */
typedef struct ring {
  char *service, *id;
  ring_entry_t *entries;
  size_t cap, alloc, head, count; /* head: index of the oldest */
} ring_t;

typedef struct capture capture_t;

typedef struct capture_stream {
  uv_pipe_t pipe;
  capture_t *owner;
  ten_line_splitter_t splitter;
  int stream; /* TEN_STREAM_* */
  bool open;
  /* The spool's copy of the splitter's partial line: its key, how many of
   * its bytes the spool holds, and the splitter's resets when it was made
   * (a reset since means the copy is stale). */
  uint64_t key;
  size_t spooled;
  uint64_t spooled_resets;
} capture_stream_t;

struct capture {
  ten_logs_t *logs;
  ring_t *ring;
  capture_stream_t out, err;
  int open_handles;
  capture_t *next, *prev;
};

struct ten_logs_sub {
  ten_logs_t *logs;
  char *service, *id, *tenant;
  ten_logs_sub_fn fn;
  void *ctx;
  ten_logs_sub_t *next, *prev;
};

struct ten_logs {
  uv_loop_t *loop;
  ten_db_t *db;
  ten_logs_options_t opts;
  ten_map_t rings; /* "service:id" -> ring_t* */
  capture_t *captures;
  ten_logs_sub_t *subs;
  /* Records of what was just read: spooled first, then delivered. */
  ten_spool_buf_t batch;
  int64_t next_id;
  uint64_t next_key; /* without a database */
  uv_timer_t close_timer;
  uv_timer_t resume_timer; /* while paused: polls the writer for room */
  bool paused;             /* the writer is behind, or the spool failed: pipes are not read */
  int spool_error;         /* the batch could not be spooled (it is kept and retried) */
  uint64_t paused_since, last_pause_warning;
  ten_logs_stats_t stats;
  bool closing;
  int open_handles;
  void (*done)(void *ctx);
  void *done_ctx;
  char read_buffer[READ_BUFFER]; /* lines are handled before the next read */
};

/* ------------------------------------------------------------ rings */

static ring_t *ring_of(ten_logs_t *logs, const char *service, const char *id) {
  char key[256];
  int n = snprintf(key, sizeof key, "%s:%s", service, id);
  if (n < 0 || (size_t)n >= sizeof key) n = (int)sizeof key - 1; /* config limits names far below */
  ring_t *r = ten_map_get(&logs->rings, key, (size_t)n);
  if (r) return r;
  r = ten_xcalloc(1, sizeof *r);
  r->service = ten_xstrdup(service);
  r->id = ten_xstrdup(id);
  r->cap = logs->opts.ring_lines ? logs->opts.ring_lines : 1000;
  ten_map_put(&logs->rings, key, (size_t)n, r);
  return r;
}

static void ring_push(ring_t *r, const ten_log_line_t *line) {
  ring_entry_t *e;
  if (r->count == r->alloc && r->alloc < r->cap) {
    r->alloc = TEN_MIN(r->cap, TEN_MAX(r->alloc * 2, (size_t)8));
    r->entries = ten_xrealloc(r->entries, r->alloc * sizeof *r->entries);
  }
  if (r->count == r->cap) {
    e = &r->entries[r->head];
    r->head = (r->head + 1) % r->alloc;
    free(e->message);
  } else {
    e = &r->entries[(r->head + r->count) % r->alloc];
    r->count++;
  }
  e->id = line->id;
  e->ts = line->ts_ms;
  e->level = (uint8_t)line->level;
  e->stream = (uint8_t)line->stream;
  e->message = ten_xstrndup(line->message, line->len);
  e->len = (uint32_t)line->len;
}

static void ring_free(ring_t *r) {
  for (size_t i = 0; i < r->count; i++) free(r->entries[(r->head + i) % r->alloc].message);
  free(r->entries);
  free(r->service);
  free(r->id);
  free(r);
}

int64_t ten_logs_tail(ten_logs_t *logs, const char *service, const char *id, int64_t after_id,
                      size_t max, ten_logs_sub_fn fn, void *ctx) {
  char key[256];
  int n = snprintf(key, sizeof key, "%s:%s", service, id);
  if (n < 0 || (size_t)n >= sizeof key) return 0; /* no instance has such names */
  ring_t *r = ten_map_get(&logs->rings, key, (size_t)n);
  if (!r || !r->count) return 0;
  /* The newest `max` lines after after_id, delivered oldest first. */
  size_t first = 0;
  while (first < r->count && r->entries[(r->head + first) % r->alloc].id <= after_id) first++;
  if (r->count - first > max) first = r->count - max;
  for (size_t i = first; i < r->count; i++) {
    ring_entry_t *e = &r->entries[(r->head + i) % r->alloc];
    ten_log_line_t line = {e->id, e->ts, e->level, e->stream, r->service, r->id, e->message, e->len};
    fn(ctx, &line);
  }
  return r->entries[r->head].id;
}

/* ------------------------------------------------------------ lines */

void ten_log_line_json(ten_buf_t *out, const ten_log_line_t *line) {
  char when[32];
  ten_format_rfc3339(line->ts_ms, when, sizeof when);
  ten_jw_t w;
  ten_jw_init(&w, out);
  ten_jw_obj(&w);
  ten_jw_kint(&w, "id", line->id);
  ten_jw_kstr(&w, "ts", when);
  ten_jw_kint(&w, "ts_ms", line->ts_ms);
  ten_jw_kstr(&w, "level", ten_level_name(line->level));
  ten_jw_kstr(&w, "service", line->service);
  ten_jw_kstr(&w, "instance", line->instance);
  ten_jw_kstr(&w, "stream", ten_stream_name(line->stream));
  ten_jw_key(&w, "message");
  ten_jw_strn(&w, line->message, line->len);
  ten_jw_obj_end(&w);
}

static bool sub_wants(const ten_logs_sub_t *s, const ten_log_line_t *line) {
  if (s->service && strcmp(s->service, line->service) != 0) return false;
  if (s->id && strcmp(s->id, line->instance) != 0) return false;
  if (s->tenant && strcmp(s->tenant, line->instance) != 0) return false;
  return true;
}

static void set_reading(ten_logs_t *logs, bool on);
static bool flush_batch(ten_logs_t *logs);

/* Reading stops when the writer is behind (the spool holds its limit) or
 * the spool cannot be written (disk full): the apps block on a full pipe
 * instead of their lines being lost, until it is resolved. While ten is
 * closing, everything is read regardless. */
static void on_resume_poll(uv_timer_t *t) {
  ten_logs_t *logs = t->data;
  if (!logs->paused) return;
  if (!flush_batch(logs)) return;
  if (!logs->closing && !ten_db_log_has_room(logs->db)) return;
  logs->paused = false;
  uv_timer_stop(&logs->resume_timer);
  logs->stats.paused_ms += ten_now_ms() - logs->paused_since;
  set_reading(logs, true);
}

static void pause_reading(ten_logs_t *logs) {
  if (logs->paused) return;
  logs->paused = true;
  logs->stats.pauses++;
  logs->paused_since = ten_now_ms();
  if (logs->paused_since - logs->last_pause_warning >= PAUSE_WARN_MS || !logs->last_pause_warning) {
    logs->last_pause_warning = logs->paused_since;
    if (logs->spool_error)
      ten_log(TEN_LOG_ERROR,
              "logs: cannot write to the log spool (%s); reading instances' output is paused "
              "until it can (apps writing logs will block)",
              uv_strerror(logs->spool_error));
    else
      ten_log(TEN_LOG_WARN,
              "logs: the database writer is behind; reading instances' output is paused until "
              "it catches up (apps writing logs will block)");
  }
  set_reading(logs, false);
  uv_timer_start(&logs->resume_timer, on_resume_poll, RESUME_POLL_MS, RESUME_POLL_MS);
}

/* The ring of the instance a record came from. Records of one batch come
 * from one stream but for a close, so the last ring is nearly always it. */
static ring_t *ring_of_rec(ten_logs_t *logs, ring_t *last, const ten_spool_view_t *v) {
  if (last && strlen(last->service) == v->rec.service_len &&
      strlen(last->id) == v->rec.instance_len &&
      memcmp(last->service, v->service, v->rec.service_len) == 0 &&
      memcmp(last->id, v->instance, v->rec.instance_len) == 0)
    return last;
  char service[256], id[256];
  snprintf(service, sizeof service, "%.*s", (int)v->rec.service_len, v->service);
  snprintf(id, sizeof id, "%.*s", (int)v->rec.instance_len, v->instance);
  return ring_of(logs, service, id);
}

/* The lines of the batch go to the ring and to subscribers. */
static void deliver(ten_logs_t *logs) {
  ring_t *ring = NULL;
  size_t pos = 0;
  ten_spool_view_t v;
  while (ten_spool_next(logs->batch.data.data, logs->batch.data.len, &pos, &v) == 1) {
    if (v.rec.kind != TEN_SPOOL_LINE) continue;
    ring = ring_of_rec(logs, ring, &v);
    ten_log_line_t line = {v.rec.id,      v.rec.ts, v.rec.level, v.rec.stream,
                           ring->service, ring->id, v.body,      v.rec.len};
    logs->stats.lines++;
    logs->stats.bytes += line.len;
    ring_push(ring, &line);
    for (ten_logs_sub_t *s = logs->subs, *next; s; s = next) {
      next = s->next; /* a subscriber may leave from inside its callback */
      if (sub_wants(s, &line)) s->fn(s->ctx, &line);
    }
  }
  ten_spool_buf_reset(&logs->batch);
}

/* A full spool segment gives way to a new one that opens with the partial
 * lines held now, so the full one can go once it is ingested. */
static void roll_spool(ten_logs_t *logs) {
  for (capture_t *c = logs->captures; c; c = c->next) {
    capture_stream_t *streams[] = {&c->out, &c->err};
    for (int i = 0; i < 2; i++) {
      capture_stream_t *cs = streams[i];
      if (!cs->open || !cs->splitter.partial.len) continue;
      ten_spool_buf_partial(&logs->batch, cs->key, 0, ten_wall_ms(), cs->stream, c->ring->service,
                            c->ring->id, cs->splitter.partial.data, cs->splitter.partial.len);
    }
  }
  ten_db_log_roll(logs->db, &logs->batch); /* on error the old segment goes on */
  ten_spool_buf_reset(&logs->batch);
}

/* What was read is spooled before anything else happens to it: from then
 * on it survives the death of ten. Returns true when the batch is empty
 * again; false when it is kept for a retry (reading is paused). */
static bool flush_batch(ten_logs_t *logs) {
  if (!logs->batch.data.len) return true;
  int rc = logs->db ? ten_db_log_write(logs->db, &logs->batch) : 0;
  if (rc && !logs->closing) {
    logs->spool_error = rc;
    pause_reading(logs);
    return false;
  }
  if (rc) {
    /* Closing: the apps are gone, nothing can wait any more. */
    ten_log(TEN_LOG_ERROR, "logs: cannot write to the log spool (%s): %zu lines not stored",
            uv_strerror(rc), logs->batch.lines);
    ten_db_log_dropped(logs->db, logs->batch.lines);
  }
  logs->spool_error = 0;
  deliver(logs);
  if (!logs->db) return true;
  if (ten_db_log_segment_full(logs->db)) roll_spool(logs);
  if (!logs->closing && ten_db_log_full(logs->db)) pause_reading(logs);
  return true;
}

static void on_line(void *ctx, const char *text, size_t len) {
  capture_stream_t *cs = ctx;
  ten_logs_t *logs = cs->owner->logs;
  ring_t *ring = cs->owner->ring;
  ten_spool_buf_line(&logs->batch, cs->key, logs->next_id++, ten_wall_ms(),
                     ten_log_detect_level(text, len, cs->stream), cs->stream, ring->service,
                     ring->id, text, len);
  cs->spooled = 0; /* the line ends whatever the spool held of it */
}

/* After the splitter had bytes: the spool's copy of the partial line is
 * brought up to date, by appending while the splitter only appended. */
static void spool_partial(capture_stream_t *cs) {
  ten_logs_t *logs = cs->owner->logs;
  ten_line_splitter_t *sp = &cs->splitter;
  if (!logs->db) return;
  size_t keep = sp->resets == cs->spooled_resets ? cs->spooled : 0;
  if (sp->partial.len > keep || (keep == 0 && cs->spooled > 0)) {
    ring_t *ring = cs->owner->ring;
    ten_spool_buf_partial(&logs->batch, cs->key, keep, ten_wall_ms(), cs->stream, ring->service,
                          ring->id, sp->partial.data + keep, sp->partial.len - keep);
  }
  cs->spooled = sp->partial.len;
  cs->spooled_resets = sp->resets;
}

static void feed(capture_stream_t *cs, const char *data, size_t len) {
  ten_logs_t *logs = cs->owner->logs;
  if (data)
    ten_line_splitter_feed(&cs->splitter, data, len, on_line, cs);
  else
    ten_line_splitter_flush(&cs->splitter, on_line, cs);
  spool_partial(cs);
  flush_batch(logs);
}

/* ------------------------------------------------------------ captures */

static void maybe_done(ten_logs_t *logs);

static void on_capture_closed(uv_handle_t *h) {
  capture_stream_t *cs = h->data;
  capture_t *c = cs->owner;
  ten_line_splitter_free(&cs->splitter);
  if (--c->open_handles > 0) return;
  ten_logs_t *logs = c->logs;
  if (c->prev) c->prev->next = c->next;
  else logs->captures = c->next;
  if (c->next) c->next->prev = c->prev;
  logs->stats.captures--;
  free(c);
  maybe_done(logs);
}

static void stream_close(capture_stream_t *cs) {
  if (!cs->open) return;
  /* The last line may have no newline: it still counts. */
  feed(cs, NULL, 0);
  cs->open = false;
  uv_close((uv_handle_t *)&cs->pipe, on_capture_closed);
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf) {
  capture_stream_t *cs = h->data;
  buf->base = cs->owner->logs->read_buffer;
  buf->len = READ_BUFFER;
}

static void on_read(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf) {
  capture_stream_t *cs = s->data;
  if (nread < 0) {
    stream_close(cs);
    return;
  }
  if (nread > 0) feed(cs, buf->base, (size_t)nread);
}

static int open_stream(ten_logs_t *logs, capture_t *c, capture_stream_t *cs, int stream,
                       int *write_fd) {
  int fds[2];
  if (pipe2(fds, O_CLOEXEC) < 0) return -errno;
  cs->owner = c;
  cs->stream = stream;
  cs->key = logs->db ? ten_db_log_stream_key(logs->db) : ++logs->next_key;
  ten_line_splitter_init(&cs->splitter, logs->opts.max_line);
  int rc = uv_pipe_init(logs->loop, &cs->pipe, 0);
  if (rc == 0) rc = uv_pipe_open(&cs->pipe, fds[0]);
  if (rc < 0) {
    close(fds[0]);
    close(fds[1]);
    ten_line_splitter_free(&cs->splitter);
    return rc;
  }
  cs->pipe.data = cs;
  cs->open = true;
  c->open_handles++;
  if (!logs->paused) uv_read_start((uv_stream_t *)&cs->pipe, on_alloc, on_read);
  *write_fd = fds[1];
  return 0;
}

static void set_reading(ten_logs_t *logs, bool on) {
  for (capture_t *c = logs->captures; c; c = c->next) {
    capture_stream_t *streams[] = {&c->out, &c->err};
    for (int i = 0; i < 2; i++) {
      if (!streams[i]->open) continue;
      if (on) uv_read_start((uv_stream_t *)&streams[i]->pipe, on_alloc, on_read);
      else uv_read_stop((uv_stream_t *)&streams[i]->pipe);
    }
  }
}

int ten_logs_capture(ten_logs_t *logs, const char *service, const char *id, int *out_fd,
                     int *err_fd) {
  if (logs->closing) return UV_ECANCELED;
  capture_t *c = ten_xcalloc(1, sizeof *c);
  c->logs = logs;
  c->ring = ring_of(logs, service, id);
  int rc = open_stream(logs, c, &c->out, TEN_STREAM_STDOUT, out_fd);
  if (rc == 0) rc = open_stream(logs, c, &c->err, TEN_STREAM_STDERR, err_fd);
  if (rc) {
    if (c->out.open) {
      close(*out_fd);
      stream_close(&c->out); /* frees c in its close callback */
      logs->stats.captures++;
      c->next = logs->captures;
      if (logs->captures) logs->captures->prev = c;
      logs->captures = c;
    } else {
      free(c);
    }
    return rc;
  }
  c->next = logs->captures;
  if (logs->captures) logs->captures->prev = c;
  logs->captures = c;
  logs->stats.captures++;
  return 0;
}

/* ------------------------------------------------------------ subscribers */

ten_logs_sub_t *ten_logs_subscribe(ten_logs_t *logs, const char *service, const char *id,
                                   const char *tenant, ten_logs_sub_fn fn, void *ctx) {
  ten_logs_sub_t *s = ten_xcalloc(1, sizeof *s);
  s->logs = logs;
  s->service = service ? ten_xstrdup(service) : NULL;
  s->id = id ? ten_xstrdup(id) : NULL;
  s->tenant = tenant ? ten_xstrdup(tenant) : NULL;
  s->fn = fn;
  s->ctx = ctx;
  s->next = logs->subs;
  if (logs->subs) logs->subs->prev = s;
  logs->subs = s;
  return s;
}

void ten_logs_unsubscribe(ten_logs_sub_t *s) {
  if (!s) return;
  ten_logs_t *logs = s->logs;
  if (s->prev) s->prev->next = s->next;
  else logs->subs = s->next;
  if (s->next) s->next->prev = s->prev;
  free(s->service);
  free(s->id);
  free(s->tenant);
  free(s);
}

/* ------------------------------------------------------------ lifecycle */

ten_logs_t *ten_logs_new(uv_loop_t *loop, ten_db_t *db, const ten_logs_options_t *opts) {
  ten_logs_t *logs = ten_xcalloc(1, sizeof *logs);
  logs->loop = loop;
  logs->db = db;
  if (opts) logs->opts = *opts;
  if (!logs->opts.ring_lines) logs->opts.ring_lines = 1000;
  if (!logs->opts.max_line) logs->opts.max_line = 16384;
  logs->next_id = db ? ten_db_next_log_id(db) : 1;
  uv_timer_init(loop, &logs->close_timer);
  uv_timer_init(loop, &logs->resume_timer);
  logs->close_timer.data = logs->resume_timer.data = logs;
  logs->open_handles = 2;
  return logs;
}

void ten_logs_set_options(ten_logs_t *logs, const ten_logs_options_t *opts) {
  if (opts->max_line) logs->opts.max_line = opts->max_line;
  if (opts->ring_lines) logs->opts.ring_lines = opts->ring_lines; /* new rings only */
}

void ten_logs_stats(const ten_logs_t *logs, ten_logs_stats_t *out) { *out = logs->stats; }

static void on_handle_closed(uv_handle_t *h) {
  ten_logs_t *logs = h->data;
  logs->open_handles--;
  maybe_done(logs);
}

static void maybe_done(ten_logs_t *logs) {
  if (!logs->closing) return;
  if (logs->captures) return;
  if (!uv_is_closing((uv_handle_t *)&logs->close_timer)) {
    flush_batch(logs); /* closing: spooled, or counted as dropped */
    uv_close((uv_handle_t *)&logs->close_timer, on_handle_closed);
    uv_close((uv_handle_t *)&logs->resume_timer, on_handle_closed);
    return;
  }
  if (logs->open_handles == 0 && logs->done) {
    void (*done)(void *) = logs->done;
    logs->done = NULL;
    done(logs->done_ctx);
  }
}

static void on_close_timeout(uv_timer_t *t) {
  ten_logs_t *logs = t->data;
  /* Something still holds a pipe open (a process that escaped its group). */
  for (capture_t *c = logs->captures, *next; c; c = next) {
    next = c->next;
    stream_close(&c->out);
    stream_close(&c->err);
  }
}

void ten_logs_close(ten_logs_t *logs, void (*done)(void *ctx), void *ctx) {
  logs->closing = true;
  logs->done = done;
  logs->done_ctx = ctx;
  on_resume_poll(&logs->resume_timer); /* read what is left, writer or not */
  if (logs->captures) uv_timer_start(&logs->close_timer, on_close_timeout, CLOSE_GRACE_MS, 0);
  maybe_done(logs);
}

void ten_logs_free(ten_logs_t *logs) {
  if (!logs) return;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&logs->rings, &it, &e);) ring_free(e->value);
  ten_map_free(&logs->rings);
  while (logs->subs) ten_logs_unsubscribe(logs->subs);
  ten_spool_buf_free(&logs->batch);
  free(logs);
}
