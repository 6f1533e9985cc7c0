/* db.h: {data_dir}/tenement.db (SQLite, WAL).
 *
 * The loop thread never waits for SQLite: writes go to one writer thread,
 * which owns the write connection and commits what is waiting in one
 * transaction (log lines every 250 ms or every TEN_DB_BATCH_LINES lines,
 * anything else at once; a backlog in steps of at most 50,000 lines). Reads
 * use their own connections: at start-up before the loop runs, and later on
 * the threadpool (WAL lets readers run beside the writer). ten_db_close
 * commits what is waiting and joins.
 *
 * Log lines reach the writer through the spool (the folder "<path>-spool",
 * see obs/spool.h), not through memory: the producer appends them with one
 * write() into the page cache, after which they survive the death of ten
 * (not a power cut: nothing is fsync'd). That write() is the one disk call
 * the loop thread makes; it only waits when the kernel throttles writers
 * with too many dirty pages, which slows reading the apps' output as a
 * full spool would. The writer reads them back, commits
 * them together with the highest id it has ingested (a line is never stored
 * twice), and deletes the segments it is done with. ten_db_open stores first
 * what an earlier run left in the spool, a partial last line included. The
 * backlog lives in the spool, so memory does not grow with it; past
 * max_pending_bytes the producer is told to stop reading (ten_db_log_full).
 *
 * Tables:
 *   config(key, value)                      persisted state: weights, tokens
 *   sources(id, service, instance)          who wrote a log line
 *   log_lines(id, ts, level, source, stream, message) + index (source, id)
 *   logs                                    a view with service and instance
 *   logs_fts                                FTS5 over log_lines.message, with each
 *                                           line's source as a token (src column)
 *   log_spool(through)                      the highest id ingested from the spool
 *   events(id, ts, service, instance, kind, detail)
 *
 * The full-text index follows the rows: lines are indexed in the same
 * transaction that stores them while the writer keeps up; under a burst
 * the rows are stored first (nothing is dropped) and indexed as soon as
 * there is room, oldest first. Deleting rows (rotation) removes them from
 * the index by trigger.
 */
#ifndef TEN_OBS_DB_H
#define TEN_OBS_DB_H

#include "obs/spool.h"
#include "util/buf.h"
#include "util/common.h"

#define TEN_DB_BATCH_LINES 20000
#define TEN_DB_BATCH_MS    250
#define TEN_DB_MAX_PENDING_BYTES (64u << 20)

typedef struct ten_db ten_db_t;

typedef struct ten_db_options {
  double log_retention_days; /* rows older are deleted; 0 = keep */
  int64_t log_max_rows;      /* the oldest rows beyond are deleted; 0 = no cap */
  size_t max_pending_bytes;  /* spooled log bytes not committed yet before the
                                producer should pause (0: TEN_DB_MAX_PENDING_BYTES) */
  double rotate_interval;    /* seconds between rotation passes (0: 60) */
} ten_db_options_t;

/* Process-wide SQLite settings: call first thing in main, before anything
 * else touches SQLite. */
void ten_db_global_init(void);
int ten_db_open(const char *path, const ten_db_options_t *opts, ten_db_t **out, ten_err_t *err);
/* Commits what is waiting, stops the writer thread, closes. NULL is fine. */
void ten_db_close(ten_db_t *db);
const char *ten_db_path(const ten_db_t *db);
void ten_db_set_options(ten_db_t *db, const ten_db_options_t *opts);

/* ---- config ---- */

/* Every config row whose key starts with prefix, synchronously (start-up or
 * a CLI process, never the loop thread). */
int ten_db_config_scan(ten_db_t *db, const char *prefix,
                       void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                       ten_err_t *err);
/* Queues an upsert (value NULL deletes). Returns at once. */
void ten_db_config_set(ten_db_t *db, const char *key, const char *value);
/* Waits until everything queued or spooled so far is committed, or a
 * commit failed (tests, shutdown). */
void ten_db_sync(ten_db_t *db);

/* The same, for a process without a server (the CLI): direct, synchronous. */
int ten_db_file_config_scan(const char *path, const char *prefix,
                            void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                            ten_err_t *err);
int ten_db_file_config_set(const char *path, const char *key, const char *value, ten_err_t *err);

/* ---- log lines (the producer: one thread, the loop's) ---- */

/* The id the next log line gets (ids are assigned by the loop thread, so a
 * line has its final id before it is stored: it is the SSE event id). */
int64_t ten_db_next_log_id(const ten_db_t *db);
/* A key for the records of a new stream, unique in the spool. */
uint64_t ten_db_log_stream_key(ten_db_t *db);
/* Appends b (from b->written on) to the spool. 0 when it is all in (reset
 * b then); else an error such as UV_ENOSPC, with b->written saying how far
 * it got: call again later with the same b. */
int ten_db_log_write(ten_db_t *db, ten_spool_buf_t *b);
/* The spool's current segment is full: the producer should start the next
 * one with ten_db_log_roll. */
bool ten_db_log_segment_full(const ten_db_t *db);
/* Starts the next segment with b, which holds every partial line the
 * producer has (keep 0), since the full one is deleted once ingested. On
 * error (reported here, once a minute) the current segment goes on. */
int ten_db_log_roll(ten_db_t *db, const ten_spool_buf_t *b);
/* Lines the producer read but could not spool: counted as failed. */
void ten_db_log_dropped(ten_db_t *db, uint64_t lines);
/* More than max_pending_bytes are spooled and not committed: the producer
 * should stop reading until ten_db_log_has_room (below half of it). */
bool ten_db_log_full(ten_db_t *db);
bool ten_db_log_has_room(ten_db_t *db);

/* Counters for /metrics. */
typedef struct ten_db_stats {
  uint64_t lines_stored;
  uint64_t lines_failed;   /* read and lost: a failed insert, or a spool write
                              that failed while closing */
  uint64_t lines_pending;  /* spooled, not yet committed */
  int64_t indexed_through; /* the highest id in the full-text index */
  uint64_t commits;
  uint64_t rows_rotated;
} ten_db_stats_t;
void ten_db_stats(ten_db_t *db, ten_db_stats_t *out);

/* ---- events ---- */

void ten_db_event(ten_db_t *db, int64_t ts_ms, const char *service, const char *instance,
                  const char *kind, const char *detail);

/* ---- queries (threadpool or CLI, never the loop thread) ---- */

typedef struct ten_db_log_query {
  const char *service;  /* NULL: any */
  const char *instance; /* NULL: any */
  const char *tenant;   /* NULL: any; else only instances with this id */
  int min_level;        /* -1: any */
  const char *search;   /* FTS5 query syntax, or NULL */
  int64_t since_ms;     /* 0: no bound */
  int64_t until_ms;     /* 0: no bound */
  int64_t before_id;    /* cursor: only ids below; 0 = newest */
  int64_t after_id;     /* only ids above (resuming a stream); 0 = none */
  int limit;            /* newest first (oldest first when after_id is set) */
} ten_db_log_query_t;

typedef struct ten_db_log_row {
  int64_t id, ts;
  int level, stream;
  const char *service, *instance, *message;
} ten_db_log_row_t;

/* Runs the query on its own connection; fn sees each row (its strings live
 * for the call only). *next_cursor is the id to pass as before_id for the
 * next page (0 when there is none). */
int ten_db_logs_query(const char *path, const ten_db_log_query_t *q,
                      void (*fn)(void *ctx, const ten_db_log_row_t *row), void *ctx,
                      int64_t *next_cursor, int64_t *indexed_through, ten_err_t *err);

#endif
