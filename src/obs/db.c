/* db.c: the writer thread: the operations queued for it, and the log
 * lines it ingests from the spool. */
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
 * steps, so lines become visible as it drains. */
#define TXN_MAX_LINES   50000
#define READ_VIEWS      512   /* records taken from the spool at a time */
#define RETRY_MS        1000  /* after a failed commit, before the next try */
#define COMPLAIN_MS     60000 /* at most one complaint a minute about the same trouble */

typedef enum op_kind {
  OP_CONFIG_SET,
  OP_CONFIG_DELETE,
  OP_EVENT,
} op_kind_t;

typedef struct op {
  struct op *next;
  op_kind_t kind;
  char *key;   /* config key; event: "service\0instance\0kind\0detail" */
  char *value; /* config value */
  int64_t ts;
} op_t;

struct ten_db {
  char *path;
  sqlite3 *writer; /* owned by the writer thread once it runs */
  ten__logstore_t logs;
  uv_thread_t thread;
  uv_mutex_t lock;
  uv_cond_t wake;      /* work queued, or stop */
  uv_cond_t committed; /* a transaction ended (ten_db_sync waits on it) */
  op_t *head, *tail;
  uint64_t queued, done; /* op counters, for sync */
  uint64_t failures;     /* failed commits, so sync does not wait forever */
  bool urgent;           /* something other than log lines waits: commit now */
  bool stop;
  ten_db_options_t opts;

  /* The spool, the producer's side (its thread only). */
  ten_spool_writer_t spool;
  uint64_t next_key;
  uint64_t roll_complained_ms;
  /* Published by the producer, under the lock. Counts include what earlier
   * runs left in the spool. */
  uint64_t end_seq, end_off; /* how far the spool is written */
  uint64_t bytes_written, lines_written;
  /* Published by the writer, under the lock. */
  uint64_t bytes_committed, lines_committed;
  /* The spool, the writer's side. */
  ten_spool_reader_t reader;
  ten_spool_view_t views[READ_VIEWS];
  uint64_t commit_complained_ms;

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

/* Line records from the spool, up to the producer's end (end_seq,
 * end_off) and about TXN_MAX_LINES. Lines at or below `through` are
 * stored already (an earlier run committed them before it died). Returns
 * the lines taken; *stored says how many of them made it. */
static uint64_t ingest(ten_db_t *db, uint64_t end_seq, uint64_t end_off, uint64_t *stored) {
  uint64_t lines = 0;
  while (lines < TXN_MAX_LINES) {
    size_t n = ten_spool_read(&db->reader, end_seq, end_off, db->views, READ_VIEWS);
    if (!n) break;
    size_t keep = 0;
    for (size_t i = 0; i < n; i++) {
      const ten_spool_view_t *v = &db->views[i];
      if (v->rec.kind != TEN_SPOOL_LINE || v->rec.id <= db->logs.through) continue;
      db->views[keep++] = *v;
    }
    *stored += ten__logstore_insert(&db->logs, db->views, keep);
    lines += keep;
  }
  return lines;
}

/* One transaction: the queued operations and the spool up to the given
 * end. The full-text index is brought along while the writer keeps up; if
 * lines are piling up, rows go first and indexing waits for a quieter
 * moment. If the commit fails nothing is lost: the reader goes back, the
 * caller puts the operations back, and all of it is tried again. */
static bool apply_batch(ten_db_t *db, op_t *ops, uint64_t end_seq, uint64_t end_off,
                        uint64_t backlog_lines, uint64_t *lines, uint64_t *bytes) {
  sqlite3 *conn = db->writer;
  ten__logstore_t *ls = &db->logs;
  int64_t saved_indexed = ls->indexed_through, saved_max = ls->max_id;
  int64_t saved_through = ls->through, saved_saved = ls->saved_through;
  int64_t saved_rows = ls->row_count;
  ten_spool_mark_t mark = ten_spool_reader_mark(&db->reader);
  sqlite3_stmt *set = NULL, *del = NULL, *event = NULL;
  uint64_t stored = 0;
  *lines = *bytes = 0;
  bool ok = sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
  if (ok) {
    for (op_t *op = ops; op; op = op->next) {
      switch (op->kind) {
      case OP_CONFIG_SET:
      case OP_CONFIG_DELETE: apply_config(conn, op, &set, &del); break;
      case OP_EVENT: apply_event(conn, op, &event); break;
      }
    }
    *lines = ingest(db, end_seq, end_off, &stored);
    if (backlog_lines < TEN_DB_BATCH_LINES) ten__logstore_index(ls, INDEX_CHUNK);
    ok = ten__logstore_save_through(ls) &&
         sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL) == SQLITE_OK;
  }
  sqlite3_finalize(set);
  sqlite3_finalize(del);
  sqlite3_finalize(event);
  if (!ok) {
    uint64_t now = ten_now_ms();
    if (now - db->commit_complained_ms >= COMPLAIN_MS || !db->commit_complained_ms) {
      db->commit_complained_ms = now;
      ten_log(TEN_LOG_ERROR,
              "db: commit failed: %s; the log lines stay in the spool and are tried again",
              sqlite3_errmsg(conn));
    }
    sqlite3_exec(conn, "ROLLBACK", NULL, NULL, NULL);
    ls->indexed_through = saved_indexed;
    ls->max_id = saved_max;
    ls->through = saved_through;
    ls->saved_through = saved_saved;
    ls->row_count = saved_rows;
    /* Sources added in the transaction are gone with it. */
    ten_map_free(&ls->sources);
    ls->sources = (ten_map_t)TEN_MAP_INIT;
    ten_spool_reader_rewind(&db->reader, mark);
    *lines = 0;
    return false;
  }
  *bytes = ten_spool_reader_commit(&db->reader);
  atomic_fetch_add(&db->lines_stored, stored);
  atomic_fetch_add(&db->lines_failed, *lines - stored);
  atomic_store(&db->indexed_through, ls->indexed_through);
  atomic_fetch_add(&db->commits, 1);
  return true;
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
  uint64_t waiting_since = 0; /* when the oldest uncommitted work was first seen */
  uint64_t retry_at = 0;      /* after a failed commit: not before */
  uv_mutex_lock(&db->lock);
  for (;;) {
    uint64_t now = ten_now_ms();
    bool work = db->head || db->bytes_written > db->bytes_committed;
    if (!work) {
      waiting_since = 0;
      if (db->stop) break;
    } else if (!waiting_since) {
      waiting_since = now;
    }
    uint64_t backlog_lines = db->lines_written - db->lines_committed;
    bool ready = work && (db->urgent || db->stop || backlog_lines >= TEN_DB_BATCH_LINES ||
                          now - waiting_since >= TEN_DB_BATCH_MS);
    if (ready && now < retry_at && !db->stop) ready = false;
    if (!ready) {
      ten_db_options_t opts = db->opts;
      uv_mutex_unlock(&db->lock);
      bool worked = !db->stop && idle_work(db, opts);
      uv_mutex_lock(&db->lock);
      if (worked || db->stop) continue;
      now = ten_now_ms();
      uint64_t wait_ms = TEN_DB_BATCH_MS;
      if (now < retry_at)
        wait_ms = retry_at - now;
      else if (db->urgent && work)
        wait_ms = 0;
      else if (waiting_since)
        wait_ms = TEN_DB_BATCH_MS - TEN_MIN(now - waiting_since, TEN_DB_BATCH_MS);
      if (wait_ms) uv_cond_timedwait(&db->wake, &db->lock, wait_ms * 1000000ull);
      continue;
    }
    op_t *ops = db->head, *last = db->tail;
    uint64_t count = 0;
    for (op_t *op = ops; op; op = op->next) count++;
    db->head = db->tail = NULL;
    db->urgent = false;
    uint64_t end_seq = db->end_seq, end_off = db->end_off;
    uv_mutex_unlock(&db->lock);

    uint64_t lines, bytes;
    bool ok = apply_batch(db, ops, end_seq, end_off, backlog_lines, &lines, &bytes);

    uv_mutex_lock(&db->lock);
    if (ok || db->stop) {
      while (ops) {
        op_t *next = ops->next;
        free_op(ops);
        ops = next;
      }
      db->done += count;
    } else if (ops) {
      last->next = db->head;
      if (!db->head) db->tail = last;
      db->head = ops;
    }
    /* Spooled bytes that cannot be read (a segment that does not open)
     * are no progress either: back off as after a failed commit. */
    bool progress = ok && (bytes || count || db->bytes_written == db->bytes_committed);
    if (ok) {
      db->bytes_committed += bytes;
      db->lines_committed += lines;
      atomic_fetch_sub(&db->lines_pending, lines);
    }
    if (progress) {
      retry_at = 0;
    } else {
      db->failures++;
      retry_at = ten_now_ms() + RETRY_MS;
    }
    waiting_since = 0;
    uv_cond_broadcast(&db->committed);
    /* Stopping and the database refuses: what is spooled stays for the
     * next start. */
    if (!progress && db->stop) break;
  }
  uv_mutex_unlock(&db->lock);
}

/* ------------------------------------------------------------ lifecycle */

void ten_db_global_init(void) {
  /* Memory statistics take a global mutex on every allocation SQLite makes;
   * nothing here reads them. Must precede any other SQLite call. */
  sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
}

/* Opens the spool: what earlier runs left is read back (its unfinished
 * lines become lines, appended first), and the writer will ingest it
 * before anything new. */
static int open_spool(ten_db_t *db, ten_err_t *err) {
  char *dir = ten_xasprintf("%s-spool", db->path);
  ten_spool_recovery_t rec;
  int rc = ten_spool_recover(dir, db->logs.through, &rec, err);
  if (rc) goto done;
  if ((rc = ten_spool_writer_open(&db->spool, dir, rec.next_seq, err))) goto done;
  if ((rc = ten_spool_append(&db->spool, &rec.orphans))) {
    ten_errf(err, rc, "cannot write to the log spool in %s: %s", dir, uv_strerror(rc));
    ten_spool_writer_close(&db->spool);
    goto done;
  }
  ten_spool_reader_init(&db->reader, dir, rec.segments, rec.count, rec.next_seq);
  rec.segments = NULL; /* the reader's now */
  db->reader.quiet_old = true; /* recovery has said what is wrong with them */
  db->end_seq = db->spool.seq;
  db->end_off = db->spool.size;
  db->bytes_written = rec.bytes + db->spool.size;
  db->lines_written = rec.lines + rec.orphans.lines;
  atomic_store(&db->lines_pending, db->lines_written);
  atomic_store(&db->next_log_id, rec.max_id + 1);
  db->next_key = rec.next_seq << 32;
  if (db->lines_written)
    ten_log(TEN_LOG_INFO,
            "db: %llu log lines read by an earlier run were not stored yet (%zu of them "
            "unfinished last lines); storing them from %s",
            (unsigned long long)db->lines_written, rec.orphans.lines, dir);
done:
  ten_spool_recovery_free(&rec);
  free(dir);
  return rc;
}

int ten_db_open(const char *path, const ten_db_options_t *opts, ten_db_t **out, ten_err_t *err) {
  *out = NULL;
  ten_db_t *db = ten_xcalloc(1, sizeof *db);
  db->path = ten_xstrdup(path);
  db->spool.fd = -1;
  if (opts) db->opts = *opts;
  if (!db->opts.max_pending_bytes) db->opts.max_pending_bytes = TEN_DB_MAX_PENDING_BYTES;
  bool logstore_open = false;
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
  logstore_open = true;
  if ((rc = ten__logstore_open(&db->logs, db->writer, err))) goto fail;
  if ((rc = open_spool(db, err))) goto fail;
  atomic_store(&db->indexed_through, db->logs.indexed_through);
  uv_mutex_init(&db->lock);
  uv_cond_init(&db->wake);
  uv_cond_init(&db->committed);
  if ((rc = uv_thread_create(&db->thread, writer_main, db)) < 0) {
    ten_errf(err, rc, "cannot start the database writer thread: %s", uv_strerror(rc));
    uv_cond_destroy(&db->wake);
    uv_cond_destroy(&db->committed);
    uv_mutex_destroy(&db->lock);
    ten_spool_writer_close(&db->spool);
    ten_spool_reader_free(&db->reader);
    goto fail;
  }
  *out = db;
  return 0;

fail:
  if (logstore_open) ten__logstore_close(&db->logs);
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
  while (db->head) { /* left by a database that refused them */
    op_t *next = db->head->next;
    free_op(db->head);
    db->head = next;
  }
  ten_spool_writer_close(&db->spool);
  ten_spool_reader_free(&db->reader);
  ten__logstore_close(&db->logs);
  sqlite3_close(db->writer);
  uv_cond_destroy(&db->wake);
  uv_cond_destroy(&db->committed);
  uv_mutex_destroy(&db->lock);
  free(db->path);
  free(db);
}

static void enqueue(ten_db_t *db, op_t *op) {
  uv_mutex_lock(&db->lock);
  if (db->tail) db->tail->next = op;
  else db->head = op;
  db->tail = op;
  db->queued++;
  db->urgent = true;
  uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
}

void ten_db_sync(ten_db_t *db) {
  if (!db) return;
  uv_mutex_lock(&db->lock);
  uint64_t ops = db->queued, bytes = db->bytes_written, failures = db->failures;
  db->urgent = true;
  uv_cond_signal(&db->wake);
  while ((db->done < ops || db->bytes_committed < bytes) && db->failures == failures)
    uv_cond_wait(&db->committed, &db->lock);
  uv_mutex_unlock(&db->lock);
}

/* ------------------------------------------------------------ config */

void ten_db_config_set(ten_db_t *db, const char *key, const char *value) {
  if (!db) return;
  op_t *op = ten_xcalloc(1, sizeof *op);
  op->kind = value ? OP_CONFIG_SET : OP_CONFIG_DELETE;
  op->key = ten_xstrdup(key);
  op->value = value ? ten_xstrdup(value) : NULL;
  enqueue(db, op);
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

uint64_t ten_db_log_stream_key(ten_db_t *db) { return ++db->next_key; }

bool ten_db_log_segment_full(const ten_db_t *db) {
  return db->spool.size >= TEN_SPOOL_SEGMENT_BYTES;
}

int ten_db_log_roll(ten_db_t *db, const ten_spool_buf_t *b) {
  int rc = ten_spool_roll(&db->spool, b);
  if (rc) {
    /* The current segment grows instead: nothing is lost, only its disk
     * space is not given back until a new one can be made. */
    uint64_t now = ten_now_ms();
    if (now - db->roll_complained_ms >= COMPLAIN_MS || !db->roll_complained_ms) {
      db->roll_complained_ms = now;
      ten_log(TEN_LOG_WARN, "logs: cannot start a new log spool segment in %s-spool: %s", db->path,
              uv_strerror(rc));
    }
    return rc;
  }
  /* Published only now that the new segment holds the partial lines: the
   * writer may delete the old one as soon as it sees this. */
  uv_mutex_lock(&db->lock);
  db->end_seq = db->spool.seq;
  db->end_off = db->spool.size;
  db->bytes_written += b->data.len;
  uv_mutex_unlock(&db->lock);
  return 0;
}

int ten_db_log_write(ten_db_t *db, ten_spool_buf_t *b) {
  if (!b->data.len) return 0;
  int rc = ten_spool_append(&db->spool, b);
  if (rc) return rc;
  if (b->last_id) atomic_store(&db->next_log_id, b->last_id + 1);
  /* Only whole buffers are published, so the writer never reads a record
   * that a short write cut. */
  uv_mutex_lock(&db->lock);
  bool was_idle = db->bytes_written == db->bytes_committed;
  db->end_seq = db->spool.seq;
  db->end_off = db->spool.size;
  db->bytes_written += b->data.len;
  db->lines_written += b->lines;
  atomic_fetch_add(&db->lines_pending, b->lines);
  if (was_idle || db->lines_written - db->lines_committed >= TEN_DB_BATCH_LINES)
    uv_cond_signal(&db->wake);
  uv_mutex_unlock(&db->lock);
  return 0;
}

void ten_db_log_dropped(ten_db_t *db, uint64_t lines) {
  atomic_fetch_add(&db->lines_failed, lines);
}

static uint64_t spool_backlog(ten_db_t *db) {
  uv_mutex_lock(&db->lock);
  uint64_t bytes = db->bytes_written - db->bytes_committed;
  uv_mutex_unlock(&db->lock);
  return bytes;
}

bool ten_db_log_full(ten_db_t *db) { return spool_backlog(db) > db->opts.max_pending_bytes; }

bool ten_db_log_has_room(ten_db_t *db) {
  return spool_backlog(db) <= db->opts.max_pending_bytes / 2;
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
  enqueue(db, op);
}
