/* logstore.c: the SQL of the log tables: the schema, storing batches,
 * catching the full-text index up, rotation, and queries. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "obs/db_internal.h"
#include "obs/lines.h"
#include "util/log.h"
#include "util/time.h"

const char ten__log_schema_sql[] =
    "CREATE TABLE IF NOT EXISTS sources("
    "  id INTEGER PRIMARY KEY, service TEXT NOT NULL, instance TEXT NOT NULL,"
    "  UNIQUE(service, instance));"
    "CREATE TABLE IF NOT EXISTS log_lines("
    "  id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, level INTEGER NOT NULL,"
    "  source INTEGER NOT NULL, stream INTEGER NOT NULL, message TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS log_lines_source ON log_lines(source, id);"
    "CREATE INDEX IF NOT EXISTS log_lines_ts ON log_lines(ts);"
    /* The columns DESIGN.md names, for people and tools reading the file. */
    "CREATE VIEW IF NOT EXISTS logs AS"
    "  SELECT l.id, l.ts,"
    "    CASE l.level WHEN 0 THEN 'debug' WHEN 1 THEN 'info' WHEN 2 THEN 'warn' ELSE 'error' END"
    "      AS level,"
    "    s.service, s.instance,"
    "    CASE l.stream WHEN 2 THEN 'stderr' ELSE 'stdout' END AS stream, l.message"
    "  FROM log_lines l JOIN sources s ON s.id = l.source;"
    /* The index holds each line's source as a token ('s17') in a column of
     * its own, so a search within one instance intersects doclists instead
     * of walking every match of every instance. */
    "CREATE VIEW IF NOT EXISTS log_fts_content AS"
    "  SELECT id, message, 's' || source AS src FROM log_lines;"
    "CREATE VIRTUAL TABLE IF NOT EXISTS logs_fts USING fts5("
    "  message, src, content='log_fts_content', content_rowid='id');"
    /* How far the index reaches: rows above are stored but not indexed yet. */
    "CREATE TABLE IF NOT EXISTS log_index(id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  indexed_through INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO log_index(id, indexed_through) VALUES(1, 0);"
    /* How far the writer has ingested the spool (obs/spool.h), committed
     * with the rows: a start after a crash stores only the lines above. */
    "CREATE TABLE IF NOT EXISTS log_spool(id INTEGER PRIMARY KEY CHECK (id = 1),"
    "  through INTEGER NOT NULL);"
    "INSERT OR IGNORE INTO log_spool(id, through) VALUES(1, 0);"
    /* Deleting or changing a row keeps the index in sync, for rows it holds. */
    "CREATE TRIGGER IF NOT EXISTS log_lines_ad AFTER DELETE ON log_lines"
    "  WHEN old.id <= (SELECT indexed_through FROM log_index WHERE id = 1) BEGIN"
    "  INSERT INTO logs_fts(logs_fts, rowid, message, src)"
    "    VALUES('delete', old.id, old.message, 's' || old.source);"
    "END;"
    "CREATE TRIGGER IF NOT EXISTS log_lines_au AFTER UPDATE OF message ON log_lines"
    "  WHEN old.id <= (SELECT indexed_through FROM log_index WHERE id = 1) BEGIN"
    "  INSERT INTO logs_fts(logs_fts, rowid, message, src)"
    "    VALUES('delete', old.id, old.message, 's' || old.source);"
    "  INSERT INTO logs_fts(rowid, message, src) VALUES(new.id, new.message, 's' || new.source);"
    "END;"
    "CREATE TABLE IF NOT EXISTS events("
    "  id INTEGER PRIMARY KEY, ts INTEGER NOT NULL, service TEXT NOT NULL,"
    "  instance TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT);";

int64_t ten__logstore_max_id(sqlite3 *conn) {
  sqlite3_stmt *st;
  int64_t max = 0;
  if (sqlite3_prepare_v2(conn, "SELECT COALESCE(MAX(id), 0) FROM log_lines", -1, &st, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) max = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  return max;
}

int ten__logstore_migrate(sqlite3 *conn) {
  /* Files from before the index had its src column: drop the index (the
   * rows stay) and let the writer build it again from the start. */
  sqlite3_stmt *st;
  bool old_index = false;
  if (sqlite3_prepare_v2(conn,
                         "SELECT 1 FROM sqlite_schema WHERE name = 'logs_fts' AND "
                         "sql NOT LIKE '%src%'",
                         -1, &st, NULL) == SQLITE_OK) {
    old_index = sqlite3_step(st) == SQLITE_ROW;
    sqlite3_finalize(st);
  }
  if (!old_index) return 0;
  ten_log(TEN_LOG_INFO, "db: rebuilding the log search index in the background (new layout)");
  return sqlite3_exec(conn,
                      "DROP TRIGGER IF EXISTS log_lines_ad; DROP TRIGGER IF EXISTS log_lines_au;"
                      "DROP TABLE logs_fts; UPDATE log_index SET indexed_through = 0;",
                      NULL, NULL, NULL) == SQLITE_OK
             ? 0
             : UV_EIO;
}

static int prepare(ten__logstore_t *ls, const char *sql, sqlite3_stmt **st, ten_err_t *err) {
  if (sqlite3_prepare_v3(ls->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL) != SQLITE_OK)
    return ten_errf(err, UV_EIO, "preparing log statements: %s", sqlite3_errmsg(ls->conn));
  return 0;
}

int ten__logstore_open(ten__logstore_t *ls, sqlite3 *conn, ten_err_t *err) {
  memset(ls, 0, sizeof *ls);
  ls->conn = conn;
  int rc;
  ten_buf_t many = TEN_BUF_INIT;
  ten_buf_puts(&many, "INSERT INTO log_lines(id, ts, level, source, stream, message) VALUES");
  for (int i = 0; i < TEN_LOGSTORE_INSERT_ROWS; i++)
    ten_buf_puts(&many, i ? ",(?,?,?,?,?,?)" : "(?,?,?,?,?,?)");
  rc = prepare(ls, many.data, &ls->insert_many, err);
  ten_buf_free(&many);
  if (rc) return rc;
  if ((rc = prepare(ls,
                    "INSERT INTO log_lines(id, ts, level, source, stream, message) "
                    "VALUES(?1, ?2, ?3, ?4, ?5, ?6)",
                    &ls->insert_line, err)) ||
      (rc = prepare(ls, "INSERT OR IGNORE INTO sources(service, instance) VALUES(?1, ?2)",
                    &ls->insert_source, err)) ||
      (rc = prepare(ls, "SELECT id FROM sources WHERE service = ?1 AND instance = ?2",
                    &ls->find_source, err)) ||
      (rc = prepare(ls,
                    "INSERT INTO logs_fts(rowid, message, src) "
                    "SELECT id, message, 's' || source FROM log_lines WHERE id > ?1 AND id <= ?2",
                    &ls->index_range, err)) ||
      (rc = prepare(ls, "UPDATE log_index SET indexed_through = ?1 WHERE id = 1", &ls->set_indexed,
                    err)) ||
      (rc = prepare(ls, "UPDATE log_spool SET through = ?1 WHERE id = 1", &ls->set_through, err)))
    return rc;
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(conn, "SELECT indexed_through FROM log_index WHERE id = 1", -1, &st,
                         NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) ls->indexed_through = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  ls->max_id = ten__logstore_max_id(conn);
  if (sqlite3_prepare_v2(conn, "SELECT through FROM log_spool WHERE id = 1", -1, &st, NULL) ==
      SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) ls->saved_through = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  /* A file from before the spool: what it holds counts as ingested. */
  ls->through = TEN_MAX(ls->saved_through, ls->max_id);
  if (sqlite3_prepare_v2(conn, "SELECT COUNT(*) FROM log_lines", -1, &st, NULL) == SQLITE_OK) {
    if (sqlite3_step(st) == SQLITE_ROW) ls->row_count = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
  }
  /* Fewer, larger merges: bursts of small segments cost less this way. */
  sqlite3_exec(conn, "INSERT INTO logs_fts(logs_fts, rank) VALUES('automerge', 8)", NULL, NULL,
               NULL);
  return 0;
}

void ten__logstore_close(ten__logstore_t *ls) {
  sqlite3_finalize(ls->insert_line);
  sqlite3_finalize(ls->insert_many);
  sqlite3_finalize(ls->insert_source);
  sqlite3_finalize(ls->find_source);
  sqlite3_finalize(ls->index_range);
  sqlite3_finalize(ls->set_indexed);
  sqlite3_finalize(ls->set_through);
  ten_map_free(&ls->sources);
}

static int64_t source_id(ten__logstore_t *ls, const char *service, size_t slen,
                         const char *instance, size_t ilen) {
  char key[256];
  if (slen + ilen + 1 >= sizeof key) return 0;
  memcpy(key, service, slen);
  key[slen] = '\n';
  memcpy(key + slen + 1, instance, ilen);
  size_t klen = slen + 1 + ilen;
  void *cached = ten_map_get(&ls->sources, key, klen);
  if (cached) return (int64_t)(intptr_t)cached;
  sqlite3_bind_text(ls->insert_source, 1, service, (int)slen, SQLITE_STATIC);
  sqlite3_bind_text(ls->insert_source, 2, instance, (int)ilen, SQLITE_STATIC);
  sqlite3_step(ls->insert_source);
  sqlite3_reset(ls->insert_source);
  sqlite3_bind_text(ls->find_source, 1, service, (int)slen, SQLITE_STATIC);
  sqlite3_bind_text(ls->find_source, 2, instance, (int)ilen, SQLITE_STATIC);
  int64_t id = 0;
  if (sqlite3_step(ls->find_source) == SQLITE_ROW) id = sqlite3_column_int64(ls->find_source, 0);
  sqlite3_reset(ls->find_source);
  if (id) ten_map_put(&ls->sources, key, klen, (void *)(intptr_t)id);
  return id;
}

/* A line record and the source id of its service and instance. */
typedef struct rec_view {
  const ten_spool_view_t *v;
  int64_t source;
} rec_view_t;

static void bind_rec(sqlite3_stmt *st, int first, const rec_view_t *r) {
  const ten_spool_rec_t *rec = &r->v->rec;
  sqlite3_bind_int64(st, first, rec->id);
  sqlite3_bind_int64(st, first + 1, rec->ts);
  sqlite3_bind_int(st, first + 2, rec->level);
  sqlite3_bind_int64(st, first + 3, r->source);
  sqlite3_bind_int(st, first + 4, rec->stream);
  sqlite3_bind_text(st, first + 5, r->v->body, (int)rec->len, SQLITE_STATIC);
}

/* Rows one at a time: the remainder of a group, and the fallback when a
 * multi-row statement fails (so one bad row costs only itself). */
static size_t insert_each(ten__logstore_t *ls, const rec_view_t *recs, size_t n) {
  size_t stored = 0;
  for (size_t i = 0; i < n; i++) {
    bind_rec(ls->insert_line, 1, &recs[i]);
    if (sqlite3_step(ls->insert_line) == SQLITE_DONE) stored++;
    else
      ten_log(TEN_LOG_ERROR, "db: storing log line %lld: %s", (long long)recs[i].v->rec.id,
              sqlite3_errmsg(ls->conn));
    sqlite3_reset(ls->insert_line);
  }
  return stored;
}

size_t ten__logstore_insert(ten__logstore_t *ls, const ten_spool_view_t *lines, size_t count) {
  size_t stored = 0;
  rec_view_t recs[TEN_LOGSTORE_INSERT_ROWS];
  size_t n = 0;
  for (size_t i = 0; i < count; i++) {
    const ten_spool_view_t *v = &lines[i];
    recs[n].v = v;
    recs[n].source =
        source_id(ls, v->service, v->rec.service_len, v->instance, v->rec.instance_len);
    if (v->rec.id > ls->max_id) ls->max_id = v->rec.id;
    if (v->rec.id > ls->through) ls->through = v->rec.id;
    if (++n < TEN_LOGSTORE_INSERT_ROWS) continue;
    /* A full group: one statement, which costs far less per row. */
    for (size_t j = 0; j < n; j++) bind_rec(ls->insert_many, (int)(j * 6 + 1), &recs[j]);
    int rc = sqlite3_step(ls->insert_many);
    sqlite3_reset(ls->insert_many);
    stored += rc == SQLITE_DONE ? n : insert_each(ls, recs, n);
    n = 0;
  }
  stored += insert_each(ls, recs, n);
  ls->row_count += (int64_t)stored;
  return stored;
}

bool ten__logstore_save_through(ten__logstore_t *ls) {
  if (ls->through == ls->saved_through) return true;
  sqlite3_bind_int64(ls->set_through, 1, ls->through);
  bool ok = sqlite3_step(ls->set_through) == SQLITE_DONE;
  if (ok)
    ls->saved_through = ls->through;
  else
    ten_log(TEN_LOG_ERROR, "db: recording the spool position: %s", sqlite3_errmsg(ls->conn));
  sqlite3_reset(ls->set_through);
  return ok;
}

int64_t ten__logstore_index(ten__logstore_t *ls, int64_t max) {
  if (ls->max_id <= ls->indexed_through) return 0;
  int64_t upto = ls->max_id;
  if (upto - ls->indexed_through > max) upto = ls->indexed_through + max;
  /* One statement for the whole range: FTS5 flushes its in-memory terms at
   * every statement boundary, so one row per statement (a per-row trigger)
   * would be several times slower. */
  sqlite3_bind_int64(ls->index_range, 1, ls->indexed_through);
  sqlite3_bind_int64(ls->index_range, 2, upto);
  int rc = sqlite3_step(ls->index_range);
  sqlite3_reset(ls->index_range);
  if (rc != SQLITE_DONE) {
    ten_log(TEN_LOG_ERROR, "db: indexing log lines: %s", sqlite3_errmsg(ls->conn));
    return 0;
  }
  sqlite3_bind_int64(ls->set_indexed, 1, upto);
  sqlite3_step(ls->set_indexed);
  sqlite3_reset(ls->set_indexed);
  int64_t n = upto - ls->indexed_through;
  ls->indexed_through = upto;
  return n;
}

int64_t ten__logstore_rotate(ten__logstore_t *ls, double retention_days, int64_t max_rows,
                             int64_t chunk) {
  int64_t deleted = 0;
  char sql[256];
  if (retention_days > 0) {
    int64_t cutoff = ten_wall_ms() - (int64_t)(retention_days * 86400000.0);
    snprintf(sql, sizeof sql,
             "DELETE FROM log_lines WHERE id IN (SELECT id FROM log_lines WHERE ts < %lld "
             "ORDER BY id LIMIT %lld)",
             (long long)cutoff, (long long)chunk);
    if (sqlite3_exec(ls->conn, sql, NULL, NULL, NULL) == SQLITE_OK)
      deleted += sqlite3_changes(ls->conn);
  }
  if (max_rows > 0 && deleted < chunk && ls->row_count - deleted > max_rows) {
    /* Ids have gaps (a failed batch used its ids up), so the cap is a
     * count: the oldest rows beyond it go, a chunk at a time. */
    int64_t excess = TEN_MIN(ls->row_count - deleted - max_rows, chunk - deleted);
    snprintf(sql, sizeof sql,
             "DELETE FROM log_lines WHERE id <= "
             "(SELECT id FROM log_lines ORDER BY id LIMIT 1 OFFSET %lld)",
             (long long)(excess - 1));
    if (sqlite3_exec(ls->conn, sql, NULL, NULL, NULL) == SQLITE_OK)
      deleted += sqlite3_changes(ls->conn);
  }
  ls->row_count -= deleted;
  return deleted;
}

/* ------------------------------------------------------------ queries */

/* Appends " AND src : (s1 OR s2 ...)" for the sources the query is limited
 * to. Returns how many there are (0: none, nothing appended); with very
 * many, appends nothing and leaves the narrowing to SQL alone. */
static int match_sources(sqlite3 *conn, const ten_db_log_query_t *q, ten_buf_t *match) {
  enum { MATCH_SOURCES_MAX = 64 };
  char sql[160] = "SELECT id FROM sources WHERE 1";
  if (q->service) strcat(sql, " AND service = ?1");
  if (q->instance) strcat(sql, " AND instance = ?2");
  if (q->tenant) strcat(sql, " AND instance = ?3");
  strcat(sql, " LIMIT 65");
  sqlite3_stmt *st;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK) return -1;
  if (q->service) sqlite3_bind_text(st, 1, q->service, -1, SQLITE_STATIC);
  if (q->instance) sqlite3_bind_text(st, 2, q->instance, -1, SQLITE_STATIC);
  if (q->tenant) sqlite3_bind_text(st, 3, q->tenant, -1, SQLITE_STATIC);
  int64_t ids[MATCH_SOURCES_MAX + 1];
  int count = 0;
  while (count <= MATCH_SOURCES_MAX && sqlite3_step(st) == SQLITE_ROW)
    ids[count++] = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  if (count == 0 || count > MATCH_SOURCES_MAX) return count;
  ten_buf_puts(match, " AND src : (");
  for (int i = 0; i < count; i++) ten_buf_printf(match, "%ss%lld", i ? " OR " : "", (long long)ids[i]);
  ten_buf_putc(match, ')');
  return count;
}

int ten_db_logs_query(const char *path, const ten_db_log_query_t *q,
                      void (*fn)(void *ctx, const ten_db_log_row_t *row), void *ctx,
                      int64_t *next_cursor, int64_t *indexed_through, ten_err_t *err) {
  sqlite3 *conn = NULL;
  if (sqlite3_open_v2(path, &conn, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
    int rc = ten_errf(err, UV_EIO, "cannot open %s: %s", path,
                      conn ? sqlite3_errmsg(conn) : "out of memory");
    sqlite3_close(conn);
    return rc;
  }
  sqlite3_busy_timeout(conn, 5000);
  ten_buf_t sql = TEN_BUF_INIT;
  ten_buf_t match = TEN_BUF_INIT;
  sqlite3_stmt *st = NULL;
  bool newest_first = q->after_id <= 0;
  int rc = 0;
  int n = 0;
  int64_t last_id = 0;
  bool more = false;
  if (q->search && *q->search) {
    /* Narrowed to some sources: say so in the match too (see the schema). */
    ten_buf_printf(&match, "message : (%s)", q->search);
    if ((q->service || q->instance || q->tenant) &&
        match_sources(conn, q, &match) == 0) /* no such source: nothing to find */
      goto empty;
  }
  /* With a search, the index drives (newest match first); otherwise the
   * rows, through the (source, id) index when a source is named. */
  if (q->search && *q->search)
    ten_buf_puts(&sql, "SELECT l.id, l.ts, l.level, s.service, s.instance, l.stream, l.message "
                       "FROM logs_fts f JOIN log_lines l ON l.id = f.rowid "
                       "JOIN sources s ON s.id = l.source WHERE logs_fts MATCH ?1");
  else
    ten_buf_puts(&sql, "SELECT l.id, l.ts, l.level, s.service, s.instance, l.stream, l.message "
                       "FROM log_lines l JOIN sources s ON s.id = l.source WHERE 1");
  if (q->service || q->instance || q->tenant) {
    ten_buf_puts(&sql, " AND l.source IN (SELECT id FROM sources WHERE 1");
    if (q->service) ten_buf_puts(&sql, " AND service = ?2");
    if (q->instance) ten_buf_puts(&sql, " AND instance = ?3");
    if (q->tenant) ten_buf_puts(&sql, " AND instance = ?4");
    ten_buf_puts(&sql, ")");
  }
  if (q->min_level >= 0) ten_buf_puts(&sql, " AND l.level >= ?5");
  if (q->since_ms > 0) ten_buf_puts(&sql, " AND l.ts >= ?6");
  if (q->until_ms > 0) ten_buf_puts(&sql, " AND l.ts < ?7");
  if (q->before_id > 0) ten_buf_puts(&sql, " AND l.id < ?8");
  if (q->after_id > 0) ten_buf_puts(&sql, " AND l.id > ?9");
  /* Ordering by the index's own rowid lets FTS5 walk its doclists newest
   * first and stop at the limit instead of sorting every match. */
  const char *order_col = q->search && *q->search ? "f.rowid" : "l.id";
  ten_buf_printf(&sql, " ORDER BY %s %s LIMIT ?10", order_col, newest_first ? "DESC" : "ASC");

  if (sqlite3_prepare_v2(conn, sql.data, -1, &st, NULL) != SQLITE_OK) {
    rc = ten_errf(err, UV_EIO, "log query: %s", sqlite3_errmsg(conn));
    goto done;
  }
  if (q->search && *q->search) sqlite3_bind_text(st, 1, match.data, (int)match.len, SQLITE_STATIC);
  if (q->service) sqlite3_bind_text(st, 2, q->service, -1, SQLITE_STATIC);
  if (q->instance) sqlite3_bind_text(st, 3, q->instance, -1, SQLITE_STATIC);
  if (q->tenant) sqlite3_bind_text(st, 4, q->tenant, -1, SQLITE_STATIC);
  sqlite3_bind_int(st, 5, q->min_level);
  sqlite3_bind_int64(st, 6, q->since_ms);
  sqlite3_bind_int64(st, 7, q->until_ms);
  sqlite3_bind_int64(st, 8, q->before_id);
  sqlite3_bind_int64(st, 9, q->after_id);
  int limit = q->limit > 0 ? q->limit : 100;
  /* One row more than asked says whether there is a next page. */
  sqlite3_bind_int(st, 10, limit + 1);
  int step;
  while ((step = sqlite3_step(st)) == SQLITE_ROW) {
    if (n == limit) {
      more = true;
      step = SQLITE_DONE;
      break;
    }
    ten_db_log_row_t row = {
        sqlite3_column_int64(st, 0),
        sqlite3_column_int64(st, 1),
        sqlite3_column_int(st, 2),
        sqlite3_column_int(st, 5),
        (const char *)sqlite3_column_text(st, 3),
        (const char *)sqlite3_column_text(st, 4),
        (const char *)sqlite3_column_text(st, 6),
    };
    last_id = row.id;
    fn(ctx, &row);
    n++;
  }
  if (step != SQLITE_DONE) {
    const char *msg = sqlite3_errmsg(conn);
    rc = ten_errf(err, UV_EINVAL, "%s%s", strstr(msg, "fts5") ? "bad search: " : "log query: ", msg);
    goto done;
  }
empty:
  if (next_cursor) *next_cursor = newest_first && more ? last_id : 0;
  if (indexed_through) {
    sqlite3_stmt *ix;
    *indexed_through = 0;
    if (sqlite3_prepare_v2(conn, "SELECT indexed_through FROM log_index WHERE id = 1", -1, &ix,
                           NULL) == SQLITE_OK) {
      if (sqlite3_step(ix) == SQLITE_ROW) *indexed_through = sqlite3_column_int64(ix, 0);
      sqlite3_finalize(ix);
    }
  }
done:
  sqlite3_finalize(st);
  sqlite3_close(conn);
  ten_buf_free(&sql);
  ten_buf_free(&match);
  return rc;
}
