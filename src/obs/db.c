#include "obs/db.h"

#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "util/log.h"

typedef enum op_kind {
  OP_CONFIG_SET,
  OP_CONFIG_DELETE,
} op_kind_t;

typedef struct op {
  struct op *next;
  op_kind_t kind;
  char *key;
  char *value;
} op_t;

struct ten_db {
  char *path;
  sqlite3 *writer; /* owned by the writer thread once it runs */
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t wake;      /* work queued, or stop */
  uv_cond_t committed; /* a batch finished (ten_db_sync waits on it) */
  op_t *head, *tail;
  uint64_t queued, done; /* op counters, for sync */
  bool stop;
};

static const char schema_sql[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS config(key TEXT PRIMARY KEY, value TEXT NOT NULL);";

static int open_conn(const char *path, sqlite3 **out, ten_err_t *err) {
  int rc = sqlite3_open_v2(path, out,
                           SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL);
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
  free(op->key);
  free(op->value);
  free(op);
}

/* Runs one batch in one transaction. A failed statement is logged and the
 * rest of the batch still commits: one bad row must not lose the others. */
static void apply_batch(ten_db_t *db, op_t *batch) {
  sqlite3 *conn = db->writer;
  sqlite3_stmt *set = NULL, *del = NULL;
  sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL);
  for (op_t *op = batch; op; op = op->next) {
    sqlite3_stmt *st;
    if (op->kind == OP_CONFIG_SET) {
      if (!set)
        sqlite3_prepare_v2(conn,
                           "INSERT INTO config(key, value) VALUES(?1, ?2) "
                           "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                           -1, &set, NULL);
      st = set;
    } else {
      if (!del) sqlite3_prepare_v2(conn, "DELETE FROM config WHERE key = ?1", -1, &del, NULL);
      st = del;
    }
    if (!st) continue;
    sqlite3_bind_text(st, 1, op->key, -1, SQLITE_STATIC);
    if (op->kind == OP_CONFIG_SET) sqlite3_bind_text(st, 2, op->value, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
      ten_log(TEN_LOG_ERROR, "db: writing %s: %s", op->key, sqlite3_errmsg(conn));
    sqlite3_reset(st);
  }
  if (sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
    ten_log(TEN_LOG_ERROR, "db: commit failed: %s", sqlite3_errmsg(conn));
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
  }
  sqlite3_finalize(set);
  sqlite3_finalize(del);
}

static void writer_main(void *arg) {
  ten_db_t *db = arg;
  uv_mutex_lock(&db->lock);
  for (;;) {
    while (!db->head && !db->stop) uv_cond_wait(&db->wake, &db->lock);
    if (!db->head && db->stop) break;
    op_t *batch = db->head;
    uint64_t count = 0;
    for (op_t *op = batch; op; op = op->next) count++;
    db->head = db->tail = NULL;
    uv_mutex_unlock(&db->lock);

    apply_batch(db, batch);
    while (batch) {
      op_t *next = batch->next;
      free_op(batch);
      batch = next;
    }

    uv_mutex_lock(&db->lock);
    db->done += count;
    uv_cond_broadcast(&db->committed);
  }
  uv_mutex_unlock(&db->lock);
}

int ten_db_open(const char *path, ten_db_t **out, ten_err_t *err) {
  *out = NULL;
  ten_db_t *db = ten_xcalloc(1, sizeof *db);
  db->path = ten_xstrdup(path);
  int rc = open_conn(path, &db->writer, err);
  if (rc) goto fail;
  char *msg = NULL;
  if (sqlite3_exec(db->writer, schema_sql, NULL, NULL, &msg) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "cannot set up %s: %s", path, msg ? msg : "?");
    sqlite3_free(msg);
    goto fail;
  }
  uv_mutex_init(&db->lock);
  uv_cond_init(&db->wake);
  uv_cond_init(&db->committed);
  if ((rc = uv_thread_create(&db->thread, writer_main, db)) < 0) {
    ten_errf(err, rc, "cannot start the database writer thread: %s", uv_strerror(rc));
    uv_cond_destroy(&db->wake);
    uv_cond_destroy(&db->committed);
    uv_mutex_destroy(&db->lock);
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

static void enqueue(ten_db_t *db, op_t *op) {
  uv_mutex_lock(&db->lock);
  if (db->tail) db->tail->next = op;
  else db->head = op;
  db->tail = op;
  db->queued++;
  uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
}

void ten_db_config_set(ten_db_t *db, const char *key, const char *value) {
  if (!db) return;
  op_t *op = ten_xcalloc(1, sizeof *op);
  op->kind = value ? OP_CONFIG_SET : OP_CONFIG_DELETE;
  op->key = ten_xstrdup(key);
  op->value = value ? ten_xstrdup(value) : NULL;
  enqueue(db, op);
}

void ten_db_sync(ten_db_t *db) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  uint64_t target = db->queued;
  while (db->done < target) uv_cond_wait(&db->committed, &db->lock);
  uv_mutex_unlock(&db->lock);
}

int ten_db_config_scan(ten_db_t *db, const char *prefix,
                       void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                       ten_err_t *err) {
  sqlite3 *conn;
  int rc = open_conn(db->path, &conn, err);
  if (rc) return rc;
  sqlite3_stmt *st = NULL;
  if (sqlite3_prepare_v2(conn,
                         "SELECT key, value FROM config WHERE substr(key, 1, length(?1)) = ?1 "
                         "ORDER BY key",
                         -1, &st, NULL) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "reading %s: %s", db->path, sqlite3_errmsg(conn));
  } else {
    sqlite3_bind_text(st, 1, prefix, -1, SQLITE_STATIC);
    int step;
    while ((step = sqlite3_step(st)) == SQLITE_ROW)
      fn(ctx, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1));
    if (step != SQLITE_DONE) rc = ten_errf(err, UV_EIO, "reading %s: %s", db->path, sqlite3_errmsg(conn));
  }
  sqlite3_finalize(st);
  sqlite3_close(conn);
  return rc;
}

void ten_db_close(ten_db_t *db) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  db->stop = true;
  uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
  uv_thread_join(&db->thread);
  sqlite3_close(db->writer);
  uv_cond_destroy(&db->wake);
  uv_cond_destroy(&db->committed);
  uv_mutex_destroy(&db->lock);
  free(db->path);
  free(db);
}
