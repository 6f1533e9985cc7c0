/* logs.h: the log pipeline. Every line an instance writes to stdout or
 * stderr is captured from a pipe, split into lines (long ones cut, never
 * dropped; a partial last line flushed at exit), given a level and its
 * database id, and appended to the spool (obs/spool.h, one write() per read
 * from a pipe) before anything else: from then on it survives the death of
 * ten, an unfinished last line included. Only then does it go to a ring of
 * the last lines per instance (instant tail) and to live subscribers (SSE,
 * `ten logs -f`); the database writer ingests it from the spool. Ids are
 * what the database will use, so a subscriber that reconnects can resume
 * where it was. Loop thread only. When the writer falls behind (the spool
 * holds max_pending_bytes not yet committed) or the spool cannot be written
 * (disk full), the pipes are not read until that is over: the apps block on
 * their writes, and no line is lost. Memory does not grow with the backlog.
 */
#ifndef TEN_OBS_LOGS_H
#define TEN_OBS_LOGS_H

#include <string.h>
#include <uv.h>

#include "obs/db.h"
#include "obs/lines.h"

typedef struct ten_logs ten_logs_t;

typedef struct ten_logs_options {
  size_t ring_lines; /* lines kept in memory per instance */
  size_t max_line;   /* longer lines are cut into pieces of this size */
} ten_logs_options_t;

/* One line, as subscribers and the tail see it. */
typedef struct ten_log_line {
  int64_t id;
  int64_t ts_ms;
  int level;
  int stream;
  const char *service;
  const char *instance;
  const char *message;
  size_t len;
} ten_log_line_t;

/* A stored row seen as a line. */
static inline ten_log_line_t ten_log_line_from_row(const ten_db_log_row_t *r) {
  return (ten_log_line_t){r->id,       r->ts,       r->level,  r->stream,
                          r->service,  r->instance, r->message, strlen(r->message)};
}

/* Appends the line as the JSON object every API and CLI answer uses:
 * {"id","ts" (RFC 3339),"ts_ms","level","service","instance","stream","message"}. */
void ten_log_line_json(ten_buf_t *out, const ten_log_line_t *line);

/* db may be NULL (lines then go only to the ring and subscribers). */
ten_logs_t *ten_logs_new(uv_loop_t *loop, ten_db_t *db, const ten_logs_options_t *opts);
void ten_logs_set_options(ten_logs_t *logs, const ten_logs_options_t *opts);

/* Pipes for one process of service:id: fills two write ends (O_CLOEXEC)
 * that the caller hands to the child and then closes. Reading stops when
 * both reach EOF (the process and its children have exited). */
int ten_logs_capture(ten_logs_t *logs, const char *service, const char *id, int *out_fd,
                     int *err_fd);

typedef struct ten_logs_sub ten_logs_sub_t;
typedef void (*ten_logs_sub_fn)(void *ctx, const ten_log_line_t *line);
/* Live lines of service:id (either may be NULL for any; tenant, if not
 * NULL, limits to instances with that id). */
ten_logs_sub_t *ten_logs_subscribe(ten_logs_t *logs, const char *service, const char *id,
                                   const char *tenant, ten_logs_sub_fn fn, void *ctx);
void ten_logs_unsubscribe(ten_logs_sub_t *sub);

/* The ring of service:id: lines with id > after_id, oldest first, at most
 * max. Returns the id of the oldest line the ring holds (0 if empty), so a
 * caller can tell whether it must ask the database for older ones. */
int64_t ten_logs_tail(ten_logs_t *logs, const char *service, const char *id, int64_t after_id,
                      size_t max, ten_logs_sub_fn fn, void *ctx);

typedef struct ten_logs_stats {
  uint64_t lines;   /* captured */
  uint64_t pauses;  /* times reading stopped for the writer (or the spool) */
  uint64_t paused_ms; /* total time spent so (finished pauses) */
  uint64_t bytes;
  unsigned captures; /* open pipe pairs */
} ten_logs_stats_t;
void ten_logs_stats(const ten_logs_t *logs, ten_logs_stats_t *out);

/* Stops capturing (pipes still open are read to the end first, spooled,
 * or counted as dropped if the spool cannot take them now), then calls
 * done. */
void ten_logs_close(ten_logs_t *logs, void (*done)(void *ctx), void *ctx);
void ten_logs_free(ten_logs_t *logs);

#endif
