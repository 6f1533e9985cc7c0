/* db.c: the writer thread and its queue. */
#include "obs/db.h"

#include <sqlite3.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "obs/db_internal.h"
#include "util/log.h"
#include "util/time.h"

#define ROTATE_EVERY_MS 60000
#define ROTATE_CHUNK    20000
#define INDEX_CHUNK     50000
/* The most log lines one transaction stores: a backlog is committed in
 * steps, so lines become visible (and memory is freed) as it drains. */
#define TXN_MAX_LINES   50000

typedef enum op_kind {
  OP_CONFIG_SET,
  OP_CONFIG_DELETE,
  OP_LOGS,
  OP_EVENT,
} op_kind_t;

typedef struct op {
  struct op *next;
  op_kind_t kind;
  char *key;   /* config key; event: "service\0instance\0kind\0detail" */
  char *value; /* config value */
  int64_t ts;
  ten_db_log_batch_t *batch;
  size_t lines, bytes; /* of the batch */
} op_t;

struct ten_db {
  char *path;
  sqlite3 *writer; /* owned by the writer thread once it runs */
  ten__logstore_t logs;
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t wake;      /* work queued, or stop */
  uv_cond_t committed; /* a batch finished (ten_db_sync waits on it) */
  op_t *head, *tail;
  uint64_t queued, done; /* op counters, for sync */
  size_t pending_lines; /* queued, not yet taken by the writer */
  size_t pending_bytes; /* queued or being written: freed at commit */
  bool urgent; /* something other than log lines waits: commit now */
  bool stop;
  ten_db_options_t opts;

  /* Shared with the loop thread without the lock. */
  _Atomic int64_t next_log_id;
  _Atomic uint64_t lines_stored;
  _Atomic uint64_t lines_failed;
  _Atomic uint64_t lines_pending;
  _Atomic int64_t indexed_through;
  _Atomic uint64_t commits;
  _Atomic uint64_t rows_rotated;
};

static const char pragmas_sql[] = "PRAGMA journal_mode=WAL;"
                                  "PRAGMA synchronous=NORMAL;"
                                  "PRAGMA cache_size=-65536;"
                                  "PRAGMA wal_autocheckpoint=10000;";

static const char config_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static int open_conn(const char *path, int flags, sqlite3 **out, ten_err_t *err) {
  int rc = sqlite3_open_v2(path, out, flags | SQLITE_OPEN_NOMUTEX, NULL);
  if (rc != SQLITE_OK) {
    ten_errf(err, UV_EIO, "cannot open %s: %s", path, *out ? sqlite3_errmsg(*out) : "out of memory");
    sqlite3_close(*out);
    *out = NULL;
    return UV_EIO;
  }
  sqlite3_busy_timeout(*out, 5000);
  return 0;
}

static void free_op(op_t *op) {
  if (op->batch) {
    ten_buf_free(&op->batch->arena);
    free(op->batch);
  }
  free(op->key);
  free(op->value);
  free(op);
}

/* ------------------------------------------------------------ the writer */

static void apply_config(sqlite3 *conn, op_t *op, sqlite3_stmt **set, sqlite3_stmt **del) {
  sqlite3_stmt *st;
  if (op->kind == OP_CONFIG_SET) {
    if (!*set)
      sqlite3_prepare_v2(conn,
                         "INSERT INTO config(key, value) VALUES(?1, ?2) "
                         "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                         -1, set, NULL);
    st = *set;
  } else {
    if (!*del) sqlite3_prepare_v2(conn, "DELETE FROM config WHERE key = ?1", -1, del, NULL);
    st = *del;
  }
  if (!st) return;
  sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
  if (op->kind == OP_CONFIG_SET) sqlite3_bind_text(st, 2, op->value, -1, SQLITE_STATIC);
  if (sqlite3_step(st) != SQLITE_DONE)
    ten_log(TEN_LOG_ERROR, "db: writing %s: %s", op->key, sqlite3_errmsg(conn));
  sqlite3_reset(st);
}

static void apply_event(sqlite3 *conn, op_t *op, sqlite3_stmt **ins) {
  if (!*ins)
    sqlite3_prepare_v2(conn,
                       "INSERT INTO events(ts, service, instance, kind, detail) "
                       "VALUES(?1, ?2, ?3, ?4, ?5)",
                       -1, ins, NULL);
  if (!*ins) return;
  const char *service = op->key;
  const char *instance = service + strlen(service) + 1;
  const char *kind = instance + strlen(instance) + 1;
  const char *detail = kind + strlen(kind) + 1;
  sqlite3_bind_int64(*ins, 1, op->ts);
  sqlite3_bind_text(*ins, 2, service, -1, SQLITE_STATIC);
  sqlite3_bind_text(*ins, 3, instance, -1, SQLITE_STATIC);
  sqlite3_bind_text(*ins, 4, kind, -1, SQLITE_STATIC);
  sqlite3_bind_text(*ins, 5, detail, -1, SQLITE_STATIC);
  sqlite3_step(*ins);
  sqlite3_reset(*ins);
}

/* One transaction for everything queued. The full-text index is brought
 * along in the same transaction while the writer keeps up; if lines are
 * piling up, rows go first and indexing waits for a quieter moment. */
static void apply_batch(ten_db_t *db, op_t *batch, size_t lines, size_t backlog_lines) {
  sqlite3 *conn = db->writer;
  sqlite3_stmt *set = NULL, *del = NULL, *event = NULL;
  uint64_t stored = 0;
  sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL);
  for (op_t *op = batch; op; op = op->next) {
    switch (op->kind) {
    case OP_CONFIG_SET:
    case OP_CONFIG_DELETE: apply_config(conn, op, &set, &del); break;
    case OP_LOGS: stored += ten__logstore_insert(&db->logs, op->batch); break;
    case OP_EVENT: apply_event(conn, op, &event); break;
    }
  }
  if (backlog_lines < TEN_DB_BATCH_LINES) ten__logstore_index(&db->logs, INDEX_CHUNK);
  if (sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    ten_log(TEN_LOG_ERROR, "db: commit failed: %s", sqlite3_errmsg(conn));
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
    /* A rolled-back index step leaves the index where the table says. */
    db->logs.indexed_through = atomic_load(&db->indexed_through);
    db->logs.row_count -= (int64_t)stored;
    atomic_fetch_add(&db->lines_failed, lines);
  } else {
    atomic_fetch_add(&db->lines_stored, stored);
    atomic_fetch_add(&db->lines_failed, lines - stored);
    atomic_store(&db->indexed_through, db->logs.indexed_through);
    atomic_fetch_add(&db->commits, 1);
  }
  sqlite3_finalize(set);
  sqlite3_finalize(del);
  sqlite3_finalize(event);
}

/* Work for quiet moments: catching the index up, then rotation. */
static bool idle_work(ten_db_t *db, ten_db_options_t opts) {
  if (db->logs.max_id > db->logs.indexed_through) {
    sqlite3_exec(db->writer, "BEGIN", NULL, NULL, NULL);
    ten__logstore_index(&db->logs, INDEX_CHUNK);
    if (sqlite3_exec(db->writer, "COMMIT", NULL, NULL, NULL) == SQLITE_OK)
      atomic_store(&db->indexed_through, db->logs.indexed_through);
    else
      db->logs.indexed_through = atomic_load(&db->indexed_through);
    return true;
  }
  uint64_t now = ten_now_ms();
  uint64_t every = opts.rotate_interval > 0 ? (uint64_t)(opts.rotate_interval * 1000) : ROTATE_EVERY_MS;
  if (now - db->logs.last_rotation_ms < every) return false;
  sqlite3_exec(db->writer, "BEGIN", NULL, NULL, NULL);
  int64_t deleted =
      ten__logstore_rotate(&db->logs, opts.log_retention_days, opts.log_max_rows, ROTATE_CHUNK);
  if (sqlite3_exec(db->writer, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    sqlite3_exec(db->writer, "ROLLBACK", NULL, NULL, NULL);
    db->logs.row_count += deleted;
    deleted = 0;
  }
  atomic_fetch_add(&db->rows_rotated, (uint64_t)deleted);
  /* More to delete: come back soon, between other work, not all at once. */
  if (deleted < ROTATE_CHUNK) db->logs.last_rotation_ms = now;
  return deleted > 0;
}

static void writer_main(void *arg) {
  ten_db_t *db = arg;
  uv_mutex_lock(&db->lock);
  uint64_t oldest_ms = 0;
  for (;;) {
    bool ready = db->head && (db->urgent || db->stop || db->pending_lines >= TEN_DB_BATCH_LINES);
    if (!ready && db->head && oldest_ms && ten_now_ms() - oldest_ms >= TEN_DB_BATCH_MS) ready = true;
    if (!ready) {
      if (!db->head && db->stop) break;
      if (db->head && !oldest_ms) oldest_ms = ten_now_ms();
      ten_db_options_t opts = db->opts;
      uv_mutex_unlock(&db->lock);
      bool worked = !db->stop && idle_work(db, opts);
      uv_mutex_lock(&db->lock);
      if (!worked && !db->urgent && !db->stop) {
        uint64_t wait_ms = TEN_DB_BATCH_MS;
        if (oldest_ms) {
          uint64_t age = ten_now_ms() - oldest_ms;
          wait_ms = age >= TEN_DB_BATCH_MS ? 0 : TEN_DB_BATCH_MS - age;
        }
        if (wait_ms) uv_cond_timedwait(&db->wake, &db->lock, wait_ms * 1000000ull);
      }
      continue;
    }
    /* Everything queued, up to TXN_MAX_LINES log lines (at least one op). */
    op_t *batch = db->head, *last = batch;
    uint64_t count = 1;
    size_t lines = batch->lines, bytes = batch->bytes;
    while (last->next && lines + last->next->lines <= TXN_MAX_LINES) {
      last = last->next;
      lines += last->lines;
      bytes += last->bytes;
      count++;
    }
    size_t backlog = db->pending_lines;
    db->head = last->next;
    if (!db->head) db->tail = NULL;
    last->next = NULL;
    db->pending_lines -= lines;
    if (!db->head) db->urgent = false;
    oldest_ms = db->head ? ten_now_ms() : 0;
    uv_mutex_unlock(&db->lock);

    apply_batch(db, batch, lines, backlog);
    atomic_fetch_sub(&db->lines_pending, lines);
    while (batch) {
      op_t *next = batch->next;
      free_op(batch);
      batch = next;
    }

    uv_mutex_lock(&db->lock);
    db->pending_bytes -= bytes;
    db->done += count;
    uv_cond_broadcast(&db->committed);
  }
  uv_mutex_unlock(&db->lock);
}

/* ------------------------------------------------------------ lifecycle */

void ten_db_global_init(void) {
  /* Memory statistics take a global mutex on every allocation SQLite makes;
   * nothing here reads them. Must precede any other SQLite call. */
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

int ten_db_open(const char *path, const ten_db_options_t *opts, ten_db_t **out, ten_err_t *err) {
  *out = NULL;
  ten_db_t *db = ten_xcalloc(1, sizeof *db);
  db->path = ten_xstrdup(path);
  if (opts) db->opts = *opts;
  if (!db->opts.max_pending_bytes) db->opts.max_pending_bytes = TEN_DB_MAX_PENDING_BYTES;
  int rc = open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &db->writer, err);
  if (rc) goto fail;
  char *msg = NULL;
  if (sqlite3_exec(db->writer, pragmas_sql, NULL, NULL, &msg) != SQLITE_OK ||
      sqlite3_exec(db->writer, config_schema_sql, NULL, NULL, &msg) != SQLITE_OK ||
      ten__logstore_migrate(db->writer) != 0 ||
      sqlite3_exec(db->writer, ten__log_schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "cannot set up %s: %s", path, msg ? msg : "?");
    sqlite3_free(msg);
    goto fail;
  }
  if ((rc = ten__logstore_open(&db->logs, db->writer, err))) goto fail;
  atomic_store(&db->next_log_id, db->logs.max_id + 1);
  atomic_store(&db->indexed_through, db->logs.indexed_through);
  uv_mutex_init(&db->lock);
  uv_cond_init(&db->wake);
  uv_cond_init(&db->committed);
  if ((rc = uv_thread_create(&db->thread, writer_main, db)) < 0) {
    ten_errf(err, rc, "cannot start the database writer thread: %s", uv_strerror(rc));
    uv_cond_destroy(&db->wake);
    uv_cond_destroy(&db->committed);
    uv_mutex_destroy(&db->lock);
    ten__logstore_close(&db->logs);
    goto fail;
  }
  *out = db;
  return 0;

fail:
  sqlite3_close(db->writer);
  free(db->path);
  free(db);
  return rc ? rc : UV_EIO;
}

const char *ten_db_path(const ten_db_t *db) { return db->path; }

void ten_db_set_options(ten_db_t *db, const ten_db_options_t *opts) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  size_t max_pending = db->opts.max_pending_bytes;
  db->opts = *opts;
  if (!db->opts.max_pending_bytes) db->opts.max_pending_bytes = max_pending;
  uv_mutex_unlock(&db->lock);
}

void ten_db_close(ten_db_t *db) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  db->stop = true;
  uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
  uv_thread_join(&db->thread);
  ten__logstore_close(&db->logs);
  sqlite3_close(db->writer);
  uv_cond_destroy(&db->wake);
  uv_cond_destroy(&db->committed);
  uv_mutex_destroy(&db->lock);
  free(db->path);
  free(db);
}

static void enqueue(ten_db_t *db, op_t *op, size_t lines, size_t bytes) {
  op->lines = lines;
  op->bytes = bytes;
  uv_mutex_lock(&db->lock);
  if (db->tail) db->tail->next = op;
  else db->head = op;
  db->tail = op;
  db->queued++;
  db->pending_lines += lines;
  db->pending_bytes += bytes;
  if (op->kind != OP_LOGS) db->urgent = true;
  if (db->urgent || db->pending_lines >= TEN_DB_BATCH_LINES || db->head == op)
    uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
}

void ten_db_sync(ten_db_t *db) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  uint64_t target = db->queued;
  db->urgent = true;
  uv_cond_signal(&db->wake);
  while (db->done < target) uv_cond_wait(&db->committed, &db->lock);
  uv_mutex_unlock(&db->lock);
}

/* ------------------------------------------------------------ config */

void ten_db_config_set(ten_db_t *db, const char *key, const char *value) {
  if (!db) return;
  op_t *op = ten_xcalloc(1, sizeof *op);
  op->kind = value ? OP_CONFIG_SET : OP_CONFIG_DELETE;
  op->key = ten_xstrdup(key);
  op->value = value ? ten_xstrdup(value) : NULL;
  enqueue(db, op, 0, 0);
}

int ten_db_file_config_scan(const char *path, const char *prefix,
                            void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                            ten_err_t *err) {
  sqlite3 *conn;
  int rc = open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &conn, err);
  if (rc) return rc;
  sqlite3_exec(conn, config_schema_sql, NULL, NULL, NULL);
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn,
                         "SELECT key, value FROM config WHERE substr(key, 1, length(?1)) = ?1 "
                         "ORDER BY key",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "reading %s: %s", path, sqlite3_errmsg(conn));
  } else {
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
      fn(ctx, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1));
    if (step != SQLITE_DONE)
      rc = ten_errf(err, UV_EIO, "reading %s: %s", path, sqlite3_errmsg(conn));
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return rc;
}

int ten_db_file_config_set(const char *path, const char *key, const char *value, ten_err_t *err) {
  sqlite3 *conn;
  int rc = open_conn(path, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, &conn, err);
  if (rc) return rc;
  sqlite3_exec(conn, "PRAGMA journal_mode=WAL", NULL, NULL, NULL);
  sqlite3_exec(conn, config_schema_sql, NULL, NULL, NULL);
  sqlite3_stmt *st = NULL;
  const char *sql = value ? "INSERT INTO config(key, value) VALUES(?1, ?2) "
                            "ON CONFLICT(key) DO UPDATE SET value = excluded.value"
                          : "DELETE FROM config WHERE key = ?1";
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "writing %s: %s", path, sqlite3_errmsg(conn));
  } else {
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    if (value) sqlite3_bind_text(st, 2, value, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      rc = ten_errf(err, UV_EIO, "writing %s: %s", path, sqlite3_errmsg(conn));
    else if (!value && sqlite3_changes(conn) == 0)
      rc = UV_ENOENT;
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return rc;
}

int ten_db_config_scan(ten_db_t *db, const char *prefix,
                       void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                       ten_err_t *err) {
  return ten_db_file_config_scan(db->path, prefix, fn, ctx, err);
}

/* ------------------------------------------------------------ log lines */

int64_t ten_db_next_log_id(const ten_db_t *db) {
  return atomic_load((_Atomic int64_t *)&db->next_log_id);
}

ten_db_log_batch_t *ten_db_log_batch_new(void) {
  ten_db_log_batch_t *b = ten_xcalloc(1, sizeof *b);
  ten_buf_reserve(&b->arena, 64 * 1024);
  return b;
}

void ten_db_log_batch_add(ten_db_log_batch_t *b, int64_t id, int64_t ts_ms, int level,
                          int stream, const char *service, const char *instance,
                          const char *message, size_t len) {
  ten__log_rec_t rec = {id, ts_ms, (uint8_t)level, (uint8_t)stream,
                        (uint16_t)strlen(service), (uint16_t)strlen(instance), (uint32_t)len};
  ten_buf_reserve(&b->arena, sizeof rec + rec.service_len + rec.instance_len + len);
  ten_buf_append(&b->arena, &rec, sizeof rec);
  ten_buf_append(&b->arena, service, rec.service_len);
  ten_buf_append(&b->arena, instance, rec.instance_len);
  ten_buf_append(&b->arena, message, len);
  if (!b->lines) b->first_id = id;
  b->last_id = id;
  b->lines++;
}

size_t ten_db_log_batch_lines(const ten_db_log_batch_t *b) { return b->lines; }

void ten_db_log_batch_free(ten_db_log_batch_t *b) {
  if (!b) return;
  ten_buf_free(&b->arena);
  free(b);
}

static size_t pending_bytes(ten_db_t *db) {
  uv_mutex_lock(&db->lock);
  size_t bytes = db->pending_bytes;
  uv_mutex_unlock(&db->lock);
  return bytes;
}

bool ten_db_log_submit(ten_db_t *db, ten_db_log_batch_t *b) {
  size_t bytes = b->arena.len;
  size_t lines = b->lines;
  atomic_store(&db->next_log_id, b->last_id + 1);
  op_t *op = ten_xcalloc(1, sizeof *op);
  op->kind = OP_LOGS;
  op->batch = b;
  atomic_fetch_add(&db->lines_pending, lines);
  enqueue(db, op, lines, bytes);
  return pending_bytes(db) <= db->opts.max_pending_bytes;
}

bool ten_db_log_has_room(ten_db_t *db) {
  return pending_bytes(db) <= db->opts.max_pending_bytes / 2;
}

void ten_db_stats(ten_db_t *db, ten_db_stats_t *out) {
  out->lines_stored = atomic_load(&db->lines_stored);
  out->lines_failed = atomic_load(&db->lines_failed);
  out->lines_pending = atomic_load(&db->lines_pending);
  out->indexed_through = atomic_load(&db->indexed_through);
  out->commits = atomic_load(&db->commits);
  out->rows_rotated = atomic_load(&db->rows_rotated);
}

/* ------------------------------------------------------------ events */

void ten_db_event(ten_db_t *db, int64_t ts_ms, const char *service, const char *instance,
                  const char *kind, const char *detail) {
  if (!db) return;
  op_t *op = ten_xcalloc(1, sizeof *op);
  op->kind = OP_EVENT;
  op->ts = ts_ms;
  size_t a = strlen(service) + 1, b = strlen(instance) + 1, c = strlen(kind) + 1;
  size_t d = strlen(detail ? detail : "") + 1;
  op->key = ten_xmalloc(a + b + c + d);
  memcpy(op->key, service, a);
  memcpy(op->key + a, instance, b);
  memcpy(op->key + a + b, kind, c);
  memcpy(op->key + a + b + c, detail ? detail : "", d);
  enqueue(db, op, 0, 0);
}
