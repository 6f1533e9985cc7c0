/* test_db.c: tenement.db (src/obs/db.h) on a real SQLite file: config
 * through the writer thread and without it, log batches, queries with
 * every filter, full-text search, persistence, back-pressure, and rotation
 * (through the log store's internals, src/obs/db_internal.h, since the
 * writer only rotates once a minute). */
#include "test.h"
#include "obs/db.h"
#include "obs/db_internal.h"
#include "obs/lines.h"
#include "util/log.h"
#include "util/time.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* ---------------------------------------------------------------- fixtures */

static char dir[] = "/tmp/ten-unit-db-XXXXXX";
static char db_path[300];

/* Config rows seen by a scan, as "k=v;k=v;". */
static void on_config(void *ctx, const char *key, const char *value) {
  ten_buf_printf(ctx, "%s=%s;", key, value);
}

#define MAX_ROWS 512

typedef struct row {
  int64_t id, ts;
  int level, stream;
  char service[32], instance[32], message[128];
} row_t;

typedef struct rows {
  row_t row[MAX_ROWS];
  int count;
} rows_t;

static void on_row(void *ctx, const ten_db_log_row_t *r) {
  rows_t *rs = ctx;
  if (rs->count == MAX_ROWS) return;
  row_t *o = &rs->row[rs->count++];
  o->id = r->id;
  o->ts = r->ts;
  o->level = r->level;
  o->stream = r->stream;
  snprintf(o->service, sizeof o->service, "%s", r->service ? r->service : "(null)");
  snprintf(o->instance, sizeof o->instance, "%s", r->instance ? r->instance : "(null)");
  snprintf(o->message, sizeof o->message, "%s", r->message ? r->message : "(null)");
}

static ten_db_log_query_t query_all(void) {
  ten_db_log_query_t q;
  memset(&q, 0, sizeof q);
  q.min_level = -1;
  q.limit = 1000;
  return q;
}

/* Runs q; the number of rows (or -1 on error, with the message in err). */
static int run_query(const ten_db_log_query_t *q, rows_t *out, int64_t *cursor, ten_err_t *err) {
  out->count = 0;
  int64_t next = -1, indexed = -1;
  ten_err_t local;
  if (!err) err = &local;
  int rc = ten_db_logs_query(db_path, q, on_row, out, &next, &indexed, err);
  if (cursor) *cursor = next;
  return rc ? -1 : out->count;
}

static int count_search(const char *search) {
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  q.search = search;
  ten_err_t err;
  int n = run_query(&q, &rs, NULL, &err);
  if (n < 0) fprintf(stderr, "  search \"%s\": %s\n", search, err.msg);
  return n;
}

/* Polls stats until the index reaches `want` or `seconds` pass. */
static bool index_reaches(ten_db_t *db, int64_t want, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  ten_db_stats_t st;
  for (;;) {
    ten_db_stats(db, &st);
    if (st.indexed_through >= want || ten_now_ms() >= deadline) break;
    usleep(20000);
  }
  if (st.indexed_through != want)
    fprintf(stderr, "  indexed_through %lld, want %lld\n", (long long)st.indexed_through,
            (long long)want);
  return st.indexed_through == want;
}

/* The dataset: 250 lines of web:i0/web:i1 (ids 1..250), then 5 lines of
 * api:t1 (ids 251..255). Every line's ts is BASE + id seconds. */
#define BASE_TS 1700000000000LL
#define WEB_LINES 250
static const char *const api_messages[] = {"hello world", "helium balloon", "shell script",
                                           "world hello", "the quick brown fox"};

static int web_level(int64_t id) { return (int)(id % 4); }

static ten_db_t *db;
static int64_t max_id;

/* ---------------------------------------------------------------- config */

TEST(open_fresh) {
  ten_err_t err;
  ten_db_options_t opts = {0};
  CHECK_EQ(ten_db_open(db_path, &opts, &db, &err), 0);
  CHECK(db != NULL);
  if (!db) return;
  CHECK_STR(ten_db_path(db), db_path);
  CHECK_EQ(ten_db_next_log_id(db), 1);
  ten_db_stats_t st;
  ten_db_stats(db, &st);
  CHECK_EQ(st.lines_stored, 0);
  CHECK_EQ(st.lines_pending, 0);
  CHECK_EQ(st.indexed_through, 0);
  struct stat sb;
  CHECK_EQ(stat(db_path, &sb), 0);

  /* A path that cannot be opened is an error, not a crash. */
  ten_db_t *bad = NULL;
  char nowhere[300];
  snprintf(nowhere, sizeof nowhere, "%s/no/such/dir/x.db", dir);
  CHECK(ten_db_open(nowhere, NULL, &bad, &err) < 0);
  CHECK(bad == NULL);
  CHECK_CONTAINS(err.msg, nowhere);
  ten_db_close(NULL); /* harmless */
}

TEST(config_through_writer) {
  if (!db) return;
  ten_err_t err;
  ten_buf_t seen = TEN_BUF_INIT;
  ten_db_config_set(db, "weight:web:a", "90");
  ten_db_config_set(db, "weight:web:b", "10");
  ten_db_config_set(db, "token:0001", "{}");
  ten_db_sync(db);
  CHECK_EQ(ten_db_config_scan(db, "weight:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "weight:web:a=90;weight:web:b=10;");

  /* Upsert, delete, and a prefix that matches nothing. */
  ten_db_config_set(db, "weight:web:a", "50");
  ten_db_config_set(db, "weight:web:b", NULL);
  ten_db_config_set(db, "weight:web:c", "it's \"quoted\"");
  ten_db_sync(db);
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_config_scan(db, "weight:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "weight:web:a=50;weight:web:c=it's \"quoted\";");
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_config_scan(db, "nothing:", on_config, &seen, &err), 0);
  CHECK_EQ(seen.len, 0);
  /* The prefix is literal: no LIKE wildcards. */
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_config_scan(db, "weight:web:_", on_config, &seen, &err), 0);
  CHECK_EQ(seen.len, 0);
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_config_scan(db, "", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "token:0001={};weight:web:a=50;weight:web:c=it's \"quoted\";");

  /* The file functions see the writer's rows, and the writer's scan sees
   * theirs (both on the same file, WAL). */
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_file_config_scan(db_path, "token:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "token:0001={};");
  CHECK_EQ(ten_db_file_config_set(db_path, "token:0002", "{\"x\":1}", &err), 0);
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_config_scan(db, "token:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "token:0001={};token:0002={\"x\":1};");
  ten_buf_free(&seen);

  /* A sync with nothing queued returns at once. */
  uint64_t t0 = ten_now_ms();
  ten_db_sync(db);
  CHECK(ten_now_ms() - t0 < 1000);
}

TEST(file_config_without_writer) {
  ten_err_t err;
  char path[300];
  snprintf(path, sizeof path, "%s/cli.db", dir);
  ten_buf_t seen = TEN_BUF_INIT;
  /* Scanning a file that does not exist yet creates it, empty. */
  CHECK_EQ(ten_db_file_config_scan(path, "", on_config, &seen, &err), 0);
  CHECK_EQ(seen.len, 0);
  CHECK_EQ(ten_db_file_config_set(path, "a:1", "one", &err), 0);
  CHECK_EQ(ten_db_file_config_set(path, "a:2", "two", &err), 0);
  CHECK_EQ(ten_db_file_config_set(path, "b:1", "three", &err), 0);
  CHECK_EQ(ten_db_file_config_set(path, "a:1", "uno", &err), 0);
  CHECK_EQ(ten_db_file_config_scan(path, "a:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "a:1=uno;a:2=two;");
  /* Deleting: 0 once, UV_ENOENT when there is nothing to delete. */
  CHECK_EQ(ten_db_file_config_set(path, "a:2", NULL, &err), 0);
  CHECK_EQ(ten_db_file_config_set(path, "a:2", NULL, &err), UV_ENOENT);
  ten_buf_reset(&seen);
  CHECK_EQ(ten_db_file_config_scan(path, "", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "a:1=uno;b:1=three;");
  ten_buf_free(&seen);

  char nowhere[300];
  snprintf(nowhere, sizeof nowhere, "%s/missing/x.db", dir);
  CHECK(ten_db_file_config_set(nowhere, "k", "v", &err) < 0);
  CHECK(ten_db_file_config_scan(nowhere, "", on_config, &seen, &err) < 0);
  ten_buf_free(&seen);
}

/* ---------------------------------------------------------------- logs */

TEST(store_lines) {
  if (!db) return;
  /* Two batches, built the way the pipeline does: ids from the db. */
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  uint64_t key = ten_db_log_stream_key(db);
  int64_t id = ten_db_next_log_id(db);
  CHECK_EQ(id, 1);
  for (int i = 0; i < WEB_LINES; i++, id++) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "request %lld served in %s", (long long)id,
                     id % 5 == 0 ? "slow motion" : "good time");
    int level = web_level(id);
    ten_spool_buf_line(&b, key, id, BASE_TS + id * 1000, level,
                       level == TEN_LEVEL_ERROR ? TEN_STREAM_STDERR : TEN_STREAM_STDOUT, "web",
                       id % 2 ? "i1" : "i0", msg, (size_t)n);
  }
  CHECK_EQ(b.lines, WEB_LINES);
  CHECK_EQ(ten_db_log_write(db, &b), 0);
  CHECK(!ten_db_log_full(db));
  ten_spool_buf_reset(&b);
  /* Ids handed out are not handed out again. */
  CHECK_EQ(ten_db_next_log_id(db), WEB_LINES + 1);

  id = ten_db_next_log_id(db);
  for (size_t i = 0; i < TEN_ARRAY_SIZE(api_messages); i++, id++)
    ten_spool_buf_line(&b, key + 1, id, BASE_TS + id * 1000,
                       i == 2 ? TEN_LEVEL_WARN : TEN_LEVEL_INFO, TEN_STREAM_STDOUT, "api", "t1",
                       api_messages[i], strlen(api_messages[i]));
  CHECK_EQ(ten_db_log_write(db, &b), 0);
  ten_spool_buf_free(&b);
  max_id = id - 1;
  CHECK_EQ(max_id, 255);

  ten_db_sync(db);
  ten_db_stats_t st;
  ten_db_stats(db, &st);
  CHECK_EQ(st.lines_stored, 255);
  CHECK_EQ(st.lines_pending, 0);
  CHECK(st.commits >= 1);
  /* The full-text index catches up (in the same commit, or soon after). */
  CHECK(index_reaches(db, max_id, 5));

  /* Everything, newest first, every field intact. */
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  int64_t cursor = -1, indexed = -1;
  ten_err_t err;
  rs.count = 0;
  CHECK_EQ(ten_db_logs_query(db_path, &q, on_row, &rs, &cursor, &indexed, &err), 0);
  CHECK_EQ(rs.count, 255);
  CHECK_EQ(cursor, 0); /* fewer than the limit: no next page */
  CHECK_EQ(indexed, max_id);
  if (rs.count == 255) {
    CHECK_EQ(rs.row[0].id, 255);
    CHECK_STR(rs.row[0].service, "api");
    CHECK_STR(rs.row[0].instance, "t1");
    CHECK_STR(rs.row[0].message, "the quick brown fox");
    CHECK_EQ(rs.row[0].ts, BASE_TS + 255 * 1000);
    CHECK_EQ(rs.row[0].level, TEN_LEVEL_INFO);
    CHECK_EQ(rs.row[0].stream, TEN_STREAM_STDOUT);
    const row_t *r = &rs.row[255 - 7]; /* id 7 */
    CHECK_EQ(r->id, 7);
    CHECK_STR(r->service, "web");
    CHECK_STR(r->instance, "i1");
    CHECK_STR(r->message, "request 7 served in good time");
    CHECK_EQ(r->level, TEN_LEVEL_ERROR);
    CHECK_EQ(r->stream, TEN_STREAM_STDERR);
    CHECK_EQ(r->ts, BASE_TS + 7000);
    bool descending = true;
    for (int i = 1; i < rs.count; i++) descending = descending && rs.row[i].id < rs.row[i - 1].id;
    CHECK(descending);
  }
}

TEST(query_filters) {
  if (!db) return;
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  bool ok;

  q.service = "api";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 5);

  q.service = "web";
  q.instance = "i0";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 125);
  ok = true;
  for (int i = 0; i < rs.count; i++) ok = ok && rs.row[i].id % 2 == 0 && !strcmp(rs.row[i].instance, "i0");
  CHECK(ok);

  q = query_all();
  q.instance = "i1"; /* any service */
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 125);

  q = query_all();
  q.service = "nope";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 0);

  /* A tenant sees only instances with its id. */
  q = query_all();
  q.tenant = "t1";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 5);
  ok = true;
  for (int i = 0; i < rs.count; i++) ok = ok && !strcmp(rs.row[i].instance, "t1");
  CHECK(ok);
  q.service = "web"; /* tenant t1 has nothing in web */
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 0);
  q = query_all();
  q.tenant = "i0";
  q.instance = "i1"; /* contradicting: nothing */
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 0);

  /* Levels: at least the given one. */
  q = query_all();
  q.min_level = TEN_LEVEL_ERROR;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 62); /* ids 3, 7, ... 247 */
  ok = true;
  for (int i = 0; i < rs.count; i++) ok = ok && rs.row[i].level == TEN_LEVEL_ERROR;
  CHECK(ok);
  q.min_level = TEN_LEVEL_WARN;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 62 + 63 + 1);
  q.min_level = TEN_LEVEL_DEBUG;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 255);

  /* Time: since inclusive, until exclusive. */
  q = query_all();
  q.since_ms = BASE_TS + 100 * 1000;
  q.until_ms = BASE_TS + 110 * 1000;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 10);
  if (rs.count == 10) {
    CHECK_EQ(rs.row[0].id, 109);
    CHECK_EQ(rs.row[9].id, 100);
  }
  q.until_ms = 0;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 156); /* 100..255 */
  q.since_ms = 0;
  q.until_ms = BASE_TS + 11 * 1000;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 10); /* 1..10 */

  /* before_id alone. */
  q = query_all();
  q.before_id = 11;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 10);
  if (rs.count) CHECK_EQ(rs.row[0].id, 10);

  /* Filters combine. */
  q = query_all();
  q.service = "web";
  q.instance = "i1";
  q.min_level = TEN_LEVEL_ERROR;
  q.since_ms = BASE_TS + 200 * 1000;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 12); /* 203, 207, ..., 247 */
}

/* Cursor paging through the 250 web lines, 100 at a time. */
TEST(query_paging) {
  if (!db) return;
  static rows_t rs;
  static bool seen[WEB_LINES + 1];
  memset(seen, 0, sizeof seen);
  ten_db_log_query_t q = query_all();
  q.service = "web";
  q.limit = 100;
  int pages = 0, total = 0, dupes = 0;
  int64_t cursor = 0, last = INT64_MAX;
  bool ordered = true;
  do {
    q.before_id = cursor;
    int n = run_query(&q, &rs, &cursor, NULL);
    CHECK(n >= 0);
    if (n < 0) break;
    pages++;
    for (int i = 0; i < n; i++) {
      int64_t id = rs.row[i].id;
      ordered = ordered && id < last;
      last = id;
      if (id < 1 || id > WEB_LINES || seen[id]) dupes++;
      else seen[id] = true;
    }
    total += n;
    if (n == 100) CHECK_EQ(cursor, rs.row[99].id);
  } while (cursor && pages < 10);
  CHECK_EQ(pages, 3);
  CHECK_EQ(total, WEB_LINES);
  CHECK_EQ(dupes, 0);
  CHECK(ordered);

  /* Without a limit, a default applies (and a cursor comes with it). */
  q = query_all();
  q.limit = 0;
  int n = run_query(&q, &rs, &cursor, NULL);
  CHECK(n > 0 && n < 255);
  CHECK(cursor > 0);
}

/* Resuming a stream: ids above after_id, oldest first. */
TEST(query_after_id) {
  if (!db) return;
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  q.service = "web";
  q.after_id = 240;
  int64_t cursor = -1;
  CHECK_EQ(run_query(&q, &rs, &cursor, NULL), 10);
  if (rs.count == 10) {
    for (int i = 0; i < 10; i++) CHECK_EQ(rs.row[i].id, 241 + i);
  }
  CHECK_EQ(cursor, 0);
  /* With a limit, still the oldest ones after the id. */
  q.after_id = 100;
  q.limit = 3;
  CHECK_EQ(run_query(&q, &rs, &cursor, NULL), 3);
  if (rs.count == 3) {
    CHECK_EQ(rs.row[0].id, 101);
    CHECK_EQ(rs.row[2].id, 103);
  }
  q.after_id = max_id;
  q.service = NULL;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 0);
}

TEST(query_search) {
  if (!db) return;
  CHECK_EQ(count_search("balloon"), 1);
  CHECK_EQ(count_search("hello"), 2);
  CHECK_EQ(count_search("\"hello world\""), 1);
  CHECK_EQ(count_search("hello AND world"), 2);
  CHECK_EQ(count_search("hello OR fox"), 3);
  CHECK_EQ(count_search("hello NOT balloon"), 2);
  CHECK_EQ(count_search("hel*"), 3);   /* hello x2, helium; not "shell" */
  CHECK_EQ(count_search("\"slow motion\""), 50);
  CHECK_EQ(count_search("served"), 250);
  CHECK_EQ(count_search("nonexistentword"), 0);
  CHECK_EQ(count_search("HELLO"), 2); /* case-insensitive */

  /* The phrase's row, with its fields. */
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  q.search = "\"hello world\"";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 1);
  if (rs.count == 1) {
    CHECK_EQ(rs.row[0].id, 251);
    CHECK_STR(rs.row[0].message, "hello world");
    CHECK_STR(rs.row[0].service, "api");
  }

  /* Search with filters and paging: newest match first. */
  q = query_all();
  q.search = "slow";
  q.instance = "i0";
  q.limit = 10;
  int64_t cursor = 0;
  CHECK_EQ(run_query(&q, &rs, &cursor, NULL), 10); /* ids % 10 == 0 */
  if (rs.count == 10) {
    CHECK_EQ(rs.row[0].id, 250);
    CHECK_EQ(rs.row[9].id, 160);
    CHECK_EQ(cursor, 160);
  }
  q.before_id = cursor;
  q.limit = 100;
  CHECK_EQ(run_query(&q, &rs, &cursor, NULL), 15); /* 150 .. 10 */
  CHECK_EQ(cursor, 0);
  q = query_all();
  q.search = "served";
  q.after_id = 245;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 5);
  if (rs.count == 5) CHECK_EQ(rs.row[0].id, 246);
  q = query_all();
  q.search = "hello";
  q.min_level = TEN_LEVEL_WARN;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 0);
  /* An empty search is no search. */
  q = query_all();
  q.search = "";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 255);

  /* Malformed FTS queries: an error, not a crash and not "no rows". */
  static const char *const bad[] = {"\"unterminated", "AND", "hello AND", "(hello", "a NEAR(",
                                    "nosuchcol: x"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    ten_err_t err;
    q = query_all();
    q.search = bad[i];
    err.msg[0] = '\0';
    int n = run_query(&q, &rs, NULL, &err);
    if (n != -1) fprintf(stderr, "  search \"%s\" gave %d rows\n", bad[i], n);
    CHECK_EQ(n, -1);
    CHECK(err.msg[0] != '\0');
  }
}

TEST(query_bad_path) {
  ten_err_t err;
  ten_db_log_query_t q = query_all();
  static rows_t rs;
  char nowhere[300];
  snprintf(nowhere, sizeof nowhere, "%s/absent.db", dir);
  err.msg[0] = '\0';
  CHECK(ten_db_logs_query(nowhere, &q, on_row, &rs, NULL, NULL, &err) < 0);
  CHECK(err.msg[0] != '\0');
  struct stat sb;
  CHECK(stat(nowhere, &sb) != 0); /* a read-only query creates nothing */
}

/* Events go to their own table. */
TEST(events) {
  if (!db) return;
  ten_db_event(db, 1234, "web", "i0", "crash", "exited with status 3");
  ten_db_event(db, 1235, "web", "i1", "start", NULL);
  ten_db_sync(db);
  sqlite3 *conn;
  CHECK_EQ(sqlite3_open_v2(db_path, &conn, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
  sqlite3_stmt *st = NULL;
  CHECK_EQ(sqlite3_prepare_v2(conn,
                              "SELECT ts, service, instance, kind, detail FROM events ORDER BY id",
                              -1, &st, NULL),
           SQLITE_OK);
  int n = 0;
  while (st && sqlite3_step(st) == SQLITE_ROW) {
    if (n == 0) {
      CHECK_EQ(sqlite3_column_int64(st, 0), 1234);
      CHECK_STR((const char *)sqlite3_column_text(st, 1), "web");
      CHECK_STR((const char *)sqlite3_column_text(st, 2), "i0");
      CHECK_STR((const char *)sqlite3_column_text(st, 3), "crash");
      CHECK_STR((const char *)sqlite3_column_text(st, 4), "exited with status 3");
    } else {
      CHECK_STR((const char *)sqlite3_column_text(st, 3), "start");
      CHECK_STR((const char *)sqlite3_column_text(st, 4), "");
    }
    n++;
  }
  CHECK_EQ(n, 2);
  sqlite3_finalize(st);
  sqlite3_close(conn);
}

/* Closing and opening again: the lines are there, ids go on. */
TEST(reopen) {
  if (!db) return;
  ten_db_close(db);
  db = NULL;
  ten_err_t err;
  CHECK_EQ(ten_db_open(db_path, NULL, &db, &err), 0);
  if (!db) return;
  CHECK_EQ(ten_db_next_log_id(db), max_id + 1);
  ten_db_stats_t st;
  ten_db_stats(db, &st);
  CHECK_EQ(st.indexed_through, max_id);
  static rows_t rs;
  ten_db_log_query_t q = query_all();
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 255);
  CHECK_EQ(count_search("balloon"), 1);
  ten_buf_t seen = TEN_BUF_INIT;
  CHECK_EQ(ten_db_config_scan(db, "weight:", on_config, &seen, &err), 0);
  CHECK_STR(seen.data, "weight:web:a=50;weight:web:c=it's \"quoted\";");
  ten_buf_free(&seen);

  /* New lines after the reopen get the next ids, and are searchable. */
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  int64_t id = ten_db_next_log_id(db);
  ten_spool_buf_line(&b, ten_db_log_stream_key(db), id, BASE_TS + id * 1000, TEN_LEVEL_INFO,
                     TEN_STREAM_STDOUT, "api", "t1", "after reopen", 12);
  CHECK_EQ(ten_db_log_write(db, &b), 0);
  ten_spool_buf_free(&b);
  ten_db_sync(db);
  max_id = id;
  CHECK(index_reaches(db, max_id, 5));
  CHECK_EQ(count_search("reopen"), 1);
  q.after_id = max_id - 1;
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 1);
  if (rs.count == 1) {
    CHECK_EQ(rs.row[0].id, 256);
    CHECK_STR(rs.row[0].message, "after reopen");
  }
}

/* Back-pressure: a spool over its limit still takes the batch (nothing is
 * dropped) and says the producer should pause until the writer has room. */
TEST(pending_limit) {
  ten_err_t err;
  char path[300];
  snprintf(path, sizeof path, "%s/tiny.db", dir);
  ten_db_options_t opts = {.max_pending_bytes = 64};
  ten_db_t *tiny = NULL;
  CHECK_EQ(ten_db_open(path, &opts, &tiny, &err), 0);
  if (!tiny) return;
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  char msg[200];
  memset(msg, 'x', sizeof msg);
  int64_t id = ten_db_next_log_id(tiny);
  uint64_t key = ten_db_log_stream_key(tiny);
  ten_spool_buf_line(&b, key, id, ten_wall_ms(), TEN_LEVEL_INFO, TEN_STREAM_STDOUT, "web", "a", msg,
                     sizeof msg);
  CHECK_EQ(ten_db_log_write(tiny, &b), 0); /* taken, over the limit: pause */
  CHECK(ten_db_log_full(tiny));
  CHECK_EQ(ten_db_next_log_id(tiny), id + 1);
  ten_db_sync(tiny);
  CHECK(ten_db_log_has_room(tiny));
  CHECK(!ten_db_log_full(tiny));
  ten_db_stats_t st;
  ten_db_stats(tiny, &st);
  CHECK_EQ(st.lines_stored, 1);
  CHECK_EQ(st.lines_failed, 0);
  CHECK_EQ(st.lines_pending, 0);

  /* A small batch fits. */
  ten_spool_buf_reset(&b);
  ten_spool_buf_line(&b, key, id + 1, ten_wall_ms(), TEN_LEVEL_INFO, TEN_STREAM_STDOUT, "w", "a",
                     "ok", 2);
  CHECK_EQ(ten_db_log_write(tiny, &b), 0);
  ten_db_sync(tiny);
  ten_db_stats(tiny, &st);
  CHECK_EQ(st.lines_stored, 2);
  ten_db_close(tiny);
  ten_spool_buf_free(&b);
}

/* ---------------------------------------------------------------- rotation */

static int64_t scalar(sqlite3 *conn, const char *sql) {
  sqlite3_stmt *st;
  int64_t v = -1;
  if (sqlite3_prepare_v2(conn, sql, -1, &st, NULL) != SQLITE_OK) {
    fprintf(stderr, "  %s: %s\n", sql, sqlite3_errmsg(conn));
    return -2;
  }
  if (sqlite3_step(st) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
  sqlite3_finalize(st);
  return v;
}

/* Rows the full-text index returns for a query, by rowid alone (so a stale
 * entry for a deleted row would show). */
static int64_t fts_count(sqlite3 *conn, const char *match) {
  char sql[256];
  snprintf(sql, sizeof sql, "SELECT count(*) FROM logs_fts WHERE logs_fts MATCH '%s'", match);
  return scalar(conn, sql);
}

static bool fts_consistent(sqlite3 *conn) {
  char *msg = NULL;
  int rc = sqlite3_exec(conn, "INSERT INTO logs_fts(logs_fts) VALUES('integrity-check')", NULL,
                        NULL, &msg);
  if (rc != SQLITE_OK) fprintf(stderr, "  integrity-check: %s\n", msg ? msg : "?");
  sqlite3_free(msg);
  return rc == SQLITE_OK;
}

static size_t insert_rows(ten__logstore_t *ls, int64_t from, int64_t to, int64_t old_upto) {
  int64_t now = ten_wall_ms();
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  for (int64_t id = from; id <= to; id++) {
    char msg[64];
    int n = snprintf(msg, sizeof msg, "common tok%lld", (long long)id);
    /* The first rows are ten days old. */
    int64_t ts = id <= old_upto ? now - 10LL * 86400000 : now;
    ten_spool_buf_line(&b, 1, id, ts, TEN_LEVEL_INFO, TEN_STREAM_STDOUT, "svc", "x", msg,
                       (size_t)n);
  }
  ten_spool_view_t *views = ten_xcalloc(b.lines, sizeof *views);
  size_t n = 0, pos = 0;
  while (ten_spool_next(b.data.data, b.data.len, &pos, &views[n]) == 1) n++;
  sqlite3_exec(ls->conn, "BEGIN", NULL, NULL, NULL);
  size_t stored = ten__logstore_insert(ls, views, n);
  sqlite3_exec(ls->conn, "COMMIT", NULL, NULL, NULL);
  free(views);
  ten_spool_buf_free(&b);
  return stored;
}

static int64_t rotate(ten__logstore_t *ls, double days, int64_t max_rows, int64_t chunk) {
  sqlite3_exec(ls->conn, "BEGIN", NULL, NULL, NULL);
  int64_t n = ten__logstore_rotate(ls, days, max_rows, chunk);
  sqlite3_exec(ls->conn, "COMMIT", NULL, NULL, NULL);
  return n;
}

TEST(rotation) {
  char path[300];
  snprintf(path, sizeof path, "%s/rotate.db", dir);
  sqlite3 *conn = NULL;
  CHECK_EQ(sqlite3_open(path, &conn), SQLITE_OK);
  char *msg = NULL;
  CHECK_EQ(sqlite3_exec(conn, ten__log_schema_sql, NULL, NULL, &msg), SQLITE_OK);
  sqlite3_free(msg);
  ten__logstore_t ls;
  ten_err_t err;
  CHECK_EQ(ten__logstore_open(&ls, conn, &err), 0);
  CHECK_EQ(ls.max_id, 0);
  CHECK_EQ(ls.indexed_through, 0);

  /* 300 rows, the first 50 old; all indexed. */
  CHECK_EQ(insert_rows(&ls, 1, 300, 50), 300);
  CHECK_EQ(ls.max_id, 300);
  CHECK_EQ(ten__logstore_max_id(conn), 300);
  CHECK_EQ(ten__logstore_index(&ls, 100), 100); /* at most max at a time */
  CHECK_EQ(ls.indexed_through, 100);
  CHECK_EQ(ten__logstore_index(&ls, 1000), 200);
  CHECK_EQ(ten__logstore_index(&ls, 1000), 0);
  CHECK_EQ(ls.indexed_through, 300);
  CHECK_EQ(scalar(conn, "SELECT indexed_through FROM log_index"), 300);
  CHECK_EQ(fts_count(conn, "common"), 300);
  CHECK(fts_consistent(conn));

  /* Retention: old rows go, a chunk at a time. */
  CHECK_EQ(rotate(&ls, 1.0, 0, 20), 20);
  CHECK_EQ(scalar(conn, "SELECT MIN(id) FROM log_lines"), 21);
  CHECK_EQ(rotate(&ls, 1.0, 0, 1000), 30);
  CHECK_EQ(rotate(&ls, 1.0, 0, 1000), 0);
  CHECK_EQ(scalar(conn, "SELECT count(*) FROM log_lines"), 250);
  CHECK_EQ(fts_count(conn, "tok17"), 0);
  CHECK_EQ(fts_count(conn, "tok50"), 0);
  CHECK_EQ(fts_count(conn, "tok51"), 1);
  CHECK_EQ(fts_count(conn, "common"), 250);
  CHECK(fts_consistent(conn));

  /* The row cap: the oldest beyond max_rows go, a chunk at a time. */
  CHECK_EQ(rotate(&ls, 0, 100, 50), 50); /* 51..100 */
  CHECK_EQ(scalar(conn, "SELECT MIN(id) FROM log_lines"), 101);
  CHECK_EQ(rotate(&ls, 0, 100, 1000), 100); /* 101..200 */
  CHECK_EQ(rotate(&ls, 0, 100, 1000), 0);
  CHECK_EQ(rotate(&ls, 0, 0, 1000), 0); /* no cap, no retention: nothing */
  CHECK_EQ(scalar(conn, "SELECT count(*) FROM log_lines"), 100);
  CHECK_EQ(scalar(conn, "SELECT MIN(id) FROM log_lines"), 201);
  CHECK_EQ(scalar(conn, "SELECT MAX(id) FROM log_lines"), 300);
  /* The index forgot the deleted rows and kept the others. */
  CHECK_EQ(fts_count(conn, "tok150"), 0);
  CHECK_EQ(fts_count(conn, "tok200"), 0);
  CHECK_EQ(fts_count(conn, "tok201"), 1);
  CHECK_EQ(fts_count(conn, "tok300"), 1);
  CHECK_EQ(fts_count(conn, "common"), 100);
  CHECK(fts_consistent(conn));

  /* Rows stored but not indexed yet, deleted before the index reaches
   * them: the index skips them, and stays consistent. */
  CHECK_EQ(insert_rows(&ls, 301, 310, 0), 10);
  CHECK_EQ(rotate(&ls, 0, 5, 1000), 105); /* 201..305 */
  CHECK_EQ(scalar(conn, "SELECT count(*) FROM log_lines"), 5);
  sqlite3_exec(conn, "BEGIN", NULL, NULL, NULL);
  int64_t indexed = ten__logstore_index(&ls, 1000);
  sqlite3_exec(conn, "COMMIT", NULL, NULL, NULL);
  CHECK(indexed >= 5 && indexed <= 10); /* the id range 301..310, 5 rows left in it */
  CHECK_EQ(ls.indexed_through, 310);
  CHECK_EQ(fts_count(conn, "common"), 5);
  CHECK_EQ(fts_count(conn, "tok305"), 0);
  CHECK_EQ(fts_count(conn, "tok306"), 1);
  CHECK(fts_consistent(conn));

  /* Through the public query too. */
  static rows_t rs;
  char saved[300];
  snprintf(saved, sizeof saved, "%s", db_path);
  snprintf(db_path, sizeof db_path, "%s", path);
  ten_db_log_query_t q = query_all();
  q.search = "common";
  CHECK_EQ(run_query(&q, &rs, NULL, NULL), 5);
  if (rs.count == 5) {
    CHECK_EQ(rs.row[0].id, 310);
    CHECK_EQ(rs.row[4].id, 306);
  }
  snprintf(db_path, sizeof db_path, "%s", saved);

  ten__logstore_close(&ls);
  CHECK_EQ(sqlite3_close(conn), SQLITE_OK);

  /* A reopened store knows where it was. */
  CHECK_EQ(sqlite3_open(path, &conn), SQLITE_OK);
  CHECK_EQ(ten__logstore_open(&ls, conn, &err), 0);
  CHECK_EQ(ls.max_id, 310);
  CHECK_EQ(ls.indexed_through, 310);
  ten__logstore_close(&ls);
  CHECK_EQ(sqlite3_close(conn), SQLITE_OK);
}

int main(void) {
  ten_log_set_level(TEN_LOG_ERROR);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(db_path, sizeof db_path, "%s/tenement.db", dir);
  RUN(open_fresh);
  RUN(config_through_writer);
  RUN(file_config_without_writer);
  RUN(store_lines);
  RUN(query_filters);
  RUN(query_paging);
  RUN(query_after_id);
  RUN(query_search);
  RUN(query_bad_path);
  RUN(events);
  RUN(reopen);
  RUN(pending_limit);
  RUN(rotation);
  ten_db_close(db);
  CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
