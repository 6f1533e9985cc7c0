/* test_logs.c: the log pipeline (src/obs/logs.h) on a real uv loop: pipes
 * from ten_logs_capture, subscribers, the ring, stats, close, and the trip
 * to SQLite when there is a database. */
#include "obs/logs.h"
#include "test.h"
#include "test_loop.h"
#include "util/log.h"
#include "util/time.h"

#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixtures */

#define MAX_SEEN 64

typedef struct seen_line {
  int64_t id;
  int level, stream;
  char service[16], instance[16];
  char message[256];
  size_t len;
} seen_line_t;

typedef struct seen {
  seen_line_t line[MAX_SEEN];
  int count;
} seen_t;

static void on_line(void *ctx, const ten_log_line_t *l) {
  seen_t *s = ctx;
  if (s->count == MAX_SEEN) return;
  seen_line_t *o = &s->line[s->count++];
  o->id = l->id;
  o->level = l->level;
  o->stream = l->stream;
  snprintf(o->service, sizeof o->service, "%s", l->service);
  snprintf(o->instance, sizeof o->instance, "%s", l->instance);
  o->len = l->len < sizeof o->message - 1 ? l->len : sizeof o->message - 1;
  memcpy(o->message, l->message, o->len);
  o->message[o->len] = '\0';
}

static uv_loop_t loop;
static uv_timer_t tick;
static void on_tick(uv_timer_t *t) { (void)t; }

static bool run_until_count(const int *count, int want, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  while (*count < want && ten_now_ms() < deadline) uv_run(&loop, UV_RUN_ONCE);
  if (*count < want) fprintf(stderr, "  saw %d, waited for %d\n", *count, want);
  return *count >= want;
}

static bool captures_done(ten_logs_t *logs, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  ten_logs_stats_t st;
  for (;;) {
    ten_logs_stats(logs, &st);
    if (st.captures == 0 || ten_now_ms() >= deadline) break;
    uv_run(&loop, UV_RUN_ONCE);
  }
  return st.captures == 0;
}

static bool closed;
static void on_closed(void *ctx) { *(bool *)ctx = true; }

static void put(int fd, const char *s) {
  size_t n = strlen(s);
  CHECK_EQ(write(fd, s, n), (ssize_t)n);
}

static bool cloexec(int fd) { return (fcntl(fd, F_GETFD) & FD_CLOEXEC) != 0; }

static char dir[] = "/tmp/ten-unit-logs-XXXXXX";

/* ---------------------------------------------------------------- tests */

/* What the first scenario writes, in order: one write at a time, each
 * delivered before the next. */
static char long_line[201];

TEST(capture_without_db) {
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, NULL, &opts);
  CHECK(logs != NULL);
  if (!logs) return;

  static seen_t all, only_web_a, tenant_a, other, early;
  ten_logs_sub_t *sub_all = ten_logs_subscribe(logs, NULL, NULL, NULL, on_line, &all);
  ten_logs_subscribe(logs, "web", "a", NULL, on_line, &only_web_a);
  ten_logs_subscribe(logs, NULL, NULL, "a", on_line, &tenant_a);
  ten_logs_subscribe(logs, "api", NULL, NULL, on_line, &other);
  ten_logs_sub_t *sub_early = ten_logs_subscribe(logs, "web", NULL, NULL, on_line, &early);
  (void)sub_all;

  int out = -1, err = -1;
  CHECK_EQ(ten_logs_capture(logs, "web", "a", &out, &err), 0);
  CHECK(out >= 0 && err >= 0 && out != err);
  if (out < 0 || err < 0) return;
  CHECK(cloexec(out));
  CHECK(cloexec(err));
  ten_logs_stats_t st;
  ten_logs_stats(logs, &st);
  CHECK_EQ(st.captures, 1);

  put(out, "one\ntwo\n");
  CHECK(run_until_count(&all.count, 2, 5));
  put(err, "bad thing\n");
  CHECK(run_until_count(&all.count, 3, 5));
  /* One subscriber leaves; it sees nothing more. */
  ten_logs_unsubscribe(sub_early);
  CHECK_EQ(early.count, 3);
  put(err, "WARN careful\n");
  CHECK(run_until_count(&all.count, 4, 5));
  put(out, "DEBUG detail\n");
  CHECK(run_until_count(&all.count, 5, 5));
  /* 200 bytes: pieces of 64, 64, 64 and 8. */
  for (int i = 0; i < 200; i++) long_line[i] = (char)('A' + i % 26);
  long_line[200] = '\0';
  put(out, long_line);
  put(out, "\n");
  CHECK(run_until_count(&all.count, 9, 5));
  /* A last line without a newline: it comes out at EOF. */
  put(out, "partial");
  for (int i = 0; i < 5; i++) uv_run(&loop, UV_RUN_NOWAIT);
  CHECK_EQ(all.count, 9);
  close(out);
  close(err);
  CHECK(captures_done(logs, 5));
  CHECK_EQ(all.count, 10);
  CHECK_EQ(early.count, 3);

  /* Every line, with its stream and level. */
  static const struct {
    const char *message;
    int stream, level;
  } want[] = {
      {"one", TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
      {"two", TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
      {"bad thing", TEN_STREAM_STDERR, TEN_LEVEL_ERROR},
      {"WARN careful", TEN_STREAM_STDERR, TEN_LEVEL_WARN},
      {"DEBUG detail", TEN_STREAM_STDOUT, TEN_LEVEL_DEBUG},
      {NULL, TEN_STREAM_STDOUT, TEN_LEVEL_INFO}, /* the long line's pieces */
      {NULL, TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
      {NULL, TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
      {NULL, TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
      {"partial", TEN_STREAM_STDOUT, TEN_LEVEL_INFO},
  };
  CHECK_EQ(all.count, (int)TEN_ARRAY_SIZE(want));
  size_t long_at = 0;
  for (int i = 0; i < all.count && i < (int)TEN_ARRAY_SIZE(want); i++) {
    seen_line_t *l = &all.line[i];
    CHECK_EQ(l->stream, want[i].stream);
    CHECK_EQ(l->level, want[i].level);
    CHECK_STR(l->service, "web");
    CHECK_STR(l->instance, "a");
    if (i) CHECK(l->id > all.line[i - 1].id);
    if (want[i].message) {
      CHECK_STR(l->message, want[i].message);
    } else {
      size_t piece = i < 8 ? 64 : 8;
      CHECK_EQ(l->len, piece);
      CHECK(memcmp(l->message, long_line + long_at, piece) == 0);
      long_at += piece;
    }
  }
  CHECK_EQ(long_at, 200);
  CHECK_EQ(all.line[0].id, 1); /* no db: ids start at 1 */

  /* Filters. */
  CHECK_EQ(only_web_a.count, 10);
  CHECK_EQ(tenant_a.count, 10);
  CHECK_EQ(other.count, 0);

  ten_logs_stats(logs, &st);
  CHECK_EQ(st.lines, 10);
  CHECK_EQ(st.pauses, 0);
  CHECK_EQ(st.captures, 0);
  CHECK_EQ(st.bytes, 3 + 3 + 9 + 12 + 12 + 200 + 7);

  /* The ring holds the last 5, oldest first. */
  static seen_t tail;
  tail.count = 0;
  int64_t oldest = ten_logs_tail(logs, "web", "a", 0, 100, on_line, &tail);
  CHECK_EQ(tail.count, 5);
  CHECK_EQ(oldest, all.line[5].id);
  for (int i = 0; i < tail.count; i++) {
    CHECK_EQ(tail.line[i].id, all.line[5 + i].id);
    CHECK_STR(tail.line[i].message, all.line[5 + i].message);
    CHECK_EQ(tail.line[i].level, all.line[5 + i].level);
    CHECK_EQ(tail.line[i].stream, all.line[5 + i].stream);
  }
  /* after_id: only newer lines. */
  tail.count = 0;
  ten_logs_tail(logs, "web", "a", all.line[7].id, 100, on_line, &tail);
  CHECK_EQ(tail.count, 2);
  if (tail.count == 2) {
    CHECK_EQ(tail.line[0].id, all.line[8].id);
    CHECK_STR(tail.line[1].message, "partial");
  }
  /* max: the newest ones. */
  tail.count = 0;
  ten_logs_tail(logs, "web", "a", 0, 2, on_line, &tail);
  CHECK_EQ(tail.count, 2);
  if (tail.count == 2) CHECK_EQ(tail.line[0].id, all.line[8].id);
  /* after_id older than the ring: the whole ring. */
  tail.count = 0;
  ten_logs_tail(logs, "web", "a", all.line[1].id, 100, on_line, &tail);
  CHECK_EQ(tail.count, 5);
  /* Nothing newer, or no such instance. */
  tail.count = 0;
  ten_logs_tail(logs, "web", "a", all.line[9].id, 100, on_line, &tail);
  CHECK_EQ(tail.count, 0);
  CHECK_EQ(ten_logs_tail(logs, "web", "zzz", 0, 100, on_line, &tail), 0);
  CHECK_EQ(tail.count, 0);

  /* A second capture of another instance: its own ring, the same ids. */
  CHECK_EQ(ten_logs_capture(logs, "api", "b", &out, &err), 0);
  put(out, "from api\n");
  close(out);
  close(err);
  CHECK(captures_done(logs, 5));
  CHECK_EQ(other.count, 1);
  CHECK_EQ(all.count, 11);
  if (all.count == 11) CHECK_EQ(all.line[10].id, all.line[9].id + 1);
  tail.count = 0;
  ten_logs_tail(logs, "api", "b", 0, 100, on_line, &tail);
  CHECK_EQ(tail.count, 1);
  tail.count = 0;
  ten_logs_tail(logs, "web", "a", 0, 100, on_line, &tail);
  CHECK_EQ(tail.count, 5);

  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  /* Closed: no new captures. */
  CHECK(ten_logs_capture(logs, "web", "c", &out, &err) < 0);
  ten_logs_free(logs); /* frees the remaining subscribers too */
}

/* Closing while a pipe is still open: it is read to the end first. */
TEST(close_with_open_pipe) {
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, NULL, &opts);
  static seen_t all;
  all.count = 0;
  ten_logs_subscribe(logs, NULL, NULL, NULL, on_line, &all);
  int out = -1, err = -1;
  CHECK_EQ(ten_logs_capture(logs, "web", "a", &out, &err), 0);
  if (out < 0) return;
  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  for (int i = 0; i < 3; i++) uv_run(&loop, UV_RUN_NOWAIT);
  CHECK(!closed);
  put(out, "late\nlast words");
  close(out);
  close(err);
  CHECK(test_run_until(&loop, &closed, 5));
  CHECK_EQ(all.count, 2);
  if (all.count == 2) {
    CHECK_STR(all.line[0].message, "late");
    CHECK_STR(all.line[1].message, "last words");
  }
  ten_logs_free(logs);
}

/* With a database: the lines reach SQLite with the ids subscribers saw. */
static void on_row(void *ctx, const ten_db_log_row_t *r) {
  seen_t *s = ctx;
  if (s->count == MAX_SEEN) return;
  seen_line_t *o = &s->line[s->count++];
  o->id = r->id;
  o->level = r->level;
  o->stream = r->stream;
  snprintf(o->service, sizeof o->service, "%s", r->service);
  snprintf(o->instance, sizeof o->instance, "%s", r->instance);
  snprintf(o->message, sizeof o->message, "%s", r->message);
  o->len = strlen(o->message);
}

TEST(capture_to_db) {
  if (!mkdtemp(dir)) {
    CHECK(!"mkdtemp");
    return;
  }
  char path[256];
  snprintf(path, sizeof path, "%s/tenement.db", dir);
  ten_db_t *db = NULL;
  ten_err_t e;
  CHECK_EQ(ten_db_open(path, NULL, &db, &e), 0);
  if (!db) return;
  /* Something already stored: the pipeline's ids continue after it. */
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  ten_spool_buf_line(&b, ten_db_log_stream_key(db), 1, ten_wall_ms(), TEN_LEVEL_INFO,
                     TEN_STREAM_STDOUT, "old", "x", "old", 3);
  CHECK_EQ(ten_db_log_write(db, &b), 0);
  ten_spool_buf_free(&b);
  ten_db_sync(db);

  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, db, &opts);
  static seen_t all;
  all.count = 0;
  ten_logs_subscribe(logs, NULL, NULL, NULL, on_line, &all);
  int out = -1, err = -1;
  CHECK_EQ(ten_logs_capture(logs, "web", "a", &out, &err), 0);
  if (out < 0) return;
  put(out, "hello from stdout\n");
  CHECK(run_until_count(&all.count, 1, 5));
  put(err, "[warn] from stderr\noops on stderr\n");
  CHECK(run_until_count(&all.count, 3, 5));
  put(out, long_line); /* 200 bytes, no newline: 3 pieces now, 1 at EOF */
  close(out);
  close(err);
  CHECK(captures_done(logs, 5));
  CHECK_EQ(all.count, 7);
  CHECK_EQ(all.line[0].id, 2);

  /* Lines are handed to the writer every loop turn, not only at close. */
  ten_db_sync(db);
  static seen_t rows;
  rows.count = 0;
  ten_db_log_query_t q;
  memset(&q, 0, sizeof q);
  q.min_level = -1;
  q.service = "web";
  q.after_id = 1;
  q.limit = 100;
  CHECK_EQ(ten_db_logs_query(path, &q, on_row, &rows, NULL, NULL, &e), 0);
  CHECK_EQ(rows.count, 7);

  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  ten_db_sync(db);
  rows.count = 0;
  CHECK_EQ(ten_db_logs_query(path, &q, on_row, &rows, NULL, NULL, &e), 0);
  CHECK_EQ(rows.count, all.count);
  for (int i = 0; i < rows.count && i < all.count; i++) {
    CHECK_EQ(rows.line[i].id, all.line[i].id);
    CHECK_EQ(rows.line[i].level, all.line[i].level);
    CHECK_EQ(rows.line[i].stream, all.line[i].stream);
    CHECK_STR(rows.line[i].message, all.line[i].message);
    CHECK_STR(rows.line[i].service, "web");
    CHECK_STR(rows.line[i].instance, "a");
  }
  if (rows.count >= 3) {
    CHECK_EQ(rows.line[1].level, TEN_LEVEL_WARN);
    CHECK_EQ(rows.line[1].stream, TEN_STREAM_STDERR);
    CHECK_EQ(rows.line[2].level, TEN_LEVEL_ERROR);
  }
  ten_logs_stats_t st;
  ten_logs_stats(logs, &st);
  CHECK_EQ(st.lines, 7);
  CHECK_EQ(st.pauses, 0);
  ten_db_stats_t dst;
  ten_db_stats(db, &dst);
  CHECK_EQ(dst.lines_stored, 8);
  CHECK_EQ(ten_db_next_log_id(db), all.line[all.count - 1].id + 1);
  ten_logs_free(logs);
  ten_db_close(db);
}

/* A writer that cannot keep up: reading pauses until it has caught up, and
 * every line is still stored (nothing dropped). */
TEST(backpressure_pauses_and_loses_nothing) {
  char path[256];
  snprintf(path, sizeof path, "%s/tiny.db", dir);
  ten_db_t *db = NULL;
  ten_err_t e;
  ten_db_options_t dopts = {.max_pending_bytes = 16};
  CHECK_EQ(ten_db_open(path, &dopts, &db, &e), 0);
  if (!db) return;
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, db, &opts);
  static seen_t all;
  all.count = 0;
  ten_logs_subscribe(logs, NULL, NULL, NULL, on_line, &all);
  int out = -1, err = -1;
  CHECK_EQ(ten_logs_capture(logs, "web", "a", &out, &err), 0);
  if (out < 0) return;
  put(out, "this line is longer than sixteen bytes\n");
  close(out);
  close(err);
  CHECK(captures_done(logs, 5));
  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  CHECK_EQ(all.count, 1);
  ten_logs_stats_t st;
  ten_logs_stats(logs, &st);
  CHECK_EQ(st.lines, 1);
  CHECK_EQ(st.pauses, 1);
  ten_db_sync(db);
  ten_db_stats_t dst;
  ten_db_stats(db, &dst);
  CHECK_EQ(dst.lines_stored, 1);
  CHECK_EQ(dst.lines_failed, 0);
  ten_logs_free(logs);
  ten_db_close(db);
}

/* What the spool holds mirrors the pipeline at every moment: each line
 * delivered so far, and each stream's unfinished last line, which is what
 * a start after a crash would store. Random chunks, CRs and lines longer
 * than max_line cover the splitter's paths; a reference splitter says
 * what is expected. */
static int ref_lines;
static void count_ref(void *ctx, const char *line, size_t len) {
  (void)ctx, (void)line, (void)len;
  ref_lines++;
}

static void count_line(void *ctx, const ten_log_line_t *l) {
  (void)l;
  (*(int *)ctx)++;
}

/* The unfinished line a crash now would leave, as recovery stores it (a
 * trailing CR dropped, nothing when nothing is left). */
static void expected_orphan(const ten_line_splitter_t *s, ten_buf_t *out) {
  ten_buf_reset(out);
  size_t len = s->partial.len;
  if (len && s->partial.data[len - 1] == '\r') len--;
  ten_buf_append(out, s->partial.data, len);
}

static bool spool_matches(const char *spool, ten_buf_t want[2], int64_t next_id, char *why,
                          size_t cap) {
  ten_spool_recovery_t rec;
  ten_err_t err;
  if (ten_spool_recover(spool, 0, &rec, &err)) {
    snprintf(why, cap, "%.400s", err.msg);
    return false;
  }
  bool ok =
      rec.lines == (uint64_t)ref_lines && rec.max_id == next_id - 1 + (int64_t)rec.orphans.lines;
  if (!ok)
    snprintf(why, cap, "%llu lines in the spool (max id %lld), %d delivered (next id %lld)",
             (unsigned long long)rec.lines, (long long)rec.max_id, ref_lines, (long long)next_id);
  size_t pos = 0, n = 0;
  ten_spool_view_t v;
  for (int i = 0; i < 2 && ok; i++) {
    if (!want[i].len) continue;
    ok = ten_spool_next(rec.orphans.data.data, rec.orphans.data.len, &pos, &v) == 1 &&
         v.rec.stream == (i ? TEN_STREAM_STDERR : TEN_STREAM_STDOUT) && v.rec.len == want[i].len &&
         memcmp(v.body, want[i].data, v.rec.len) == 0;
    if (!ok)
      snprintf(why, cap, "%s: unfinished line \"%s\" not recovered as such",
               i ? "stderr" : "stdout", want[i].data);
    n++;
  }
  if (ok && rec.orphans.lines != n) {
    ok = false;
    snprintf(why, cap, "%zu unfinished lines recovered, %zu expected", rec.orphans.lines, n);
  }
  ten_spool_recovery_free(&rec);
  return ok;
}

TEST(spool_mirrors_the_pipeline) {
  char path[256], spool[300];
  snprintf(path, sizeof path, "%s/mirror.db", dir);
  snprintf(spool, sizeof spool, "%s-spool", path);
  ten_db_t *db = NULL;
  ten_err_t e;
  CHECK_EQ(ten_db_open(path, NULL, &db, &e), 0);
  if (!db) return;
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 8};
  ten_logs_t *logs = ten_logs_new(&loop, db, &opts);
  int delivered = 0;
  ten_logs_subscribe(logs, NULL, NULL, NULL, count_line, &delivered);
  int fds[2] = {-1, -1};
  CHECK_EQ(ten_logs_capture(logs, "web", "m", &fds[0], &fds[1]), 0);
  if (fds[0] < 0) return;
  ten_line_splitter_t ref[2];
  ten_buf_t want[2] = {TEN_BUF_INIT, TEN_BUF_INIT};
  for (int i = 0; i < 2; i++) ten_line_splitter_init(&ref[i], 8);
  ref_lines = 0;
  int64_t first_id = ten_db_next_log_id(db);
  /* First the splitter's corners, one write each (max_line is 8): a line
   * grown over several reads; cuts; a cut that leaves a CR, then the LF
   * that ends it (the partial line empties without a line); then random
   * chunks. */
  static const char *const script[] = {"ab",  "cd",        "e\nfg", "hijklmnopq", "rs\r",
                                       "\nt", "abcdefg\r", "\nxy",  "\n",         "abcdefg\r",
                                       "\n",  "abcdefgh",  "\n",    "ab\r\ncd\r"};
  static const char alphabet[] = "abcdefgh\r\r\n\n";
  unsigned seed = 8;
  int mismatches = 0;
  for (int round = 0; round < 300 && mismatches == 0; round++) {
    int scripted = round < (int)TEN_ARRAY_SIZE(script);
    int which = !scripted && rand_r(&seed) % 4 == 0; /* mostly stdout */
    char chunk[24];
    size_t len = scripted ? strlen(script[round]) : 1 + (size_t)rand_r(&seed) % (sizeof chunk - 1);
    if (scripted)
      memcpy(chunk, script[round], len);
    else
      for (size_t i = 0; i < len; i++) chunk[i] = alphabet[rand_r(&seed) % (sizeof alphabet - 1)];
    CHECK_EQ(write(fds[which], chunk, len), (ssize_t)len);
    ten_line_splitter_feed(&ref[which], chunk, len, count_ref, NULL);
    for (int i = 0; i < 2; i++) expected_orphan(&ref[i], &want[i]);
    /* The loop reads the chunk; then the spool must say the same. */
    char why[512] = "";
    uint64_t deadline = ten_now_ms() + 5000;
    bool ok = false;
    while (!ok && ten_now_ms() < deadline) {
      uv_run(&loop, UV_RUN_NOWAIT);
      ok = delivered == ref_lines &&
           spool_matches(spool, want, first_id + ref_lines, why, sizeof why);
      if (!ok) usleep(1000);
    }
    if (!ok) {
      mismatches++;
      fprintf(stderr, "  round %d (%zu bytes to %s): %s (delivered %d)\n", round, len,
              which ? "stderr" : "stdout", why, delivered);
    }
  }
  CHECK_EQ(mismatches, 0);
  CHECK(ref_lines > 50);
  close(fds[0]);
  close(fds[1]);
  CHECK(captures_done(logs, 5));
  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  ten_logs_free(logs);
  /* Closed: the unfinished lines became lines; nothing is left over. */
  ten_spool_recovery_t rec;
  CHECK_EQ(ten_spool_recover(spool, 0, &rec, &e), 0);
  CHECK_EQ(rec.orphans.lines, 0);
  CHECK_EQ(rec.lines, (uint64_t)delivered);
  ten_spool_recovery_free(&rec);
  ten_db_close(db);
  for (int i = 0; i < 2; i++) {
    ten_line_splitter_free(&ref[i]);
    ten_buf_free(&want[i]);
  }
}

/* A spool that cannot be written (a full disk; here a file size limit)
 * pauses reading: nothing is delivered that is not spooled, nothing is
 * dropped, and once the disk has room every line arrives, once. */
TEST(spool_write_failure_pauses_and_loses_nothing) {
  char path[256];
  snprintf(path, sizeof path, "%s/full.db", dir);
  ten_db_t *db = NULL;
  ten_err_t e;
  CHECK_EQ(ten_db_open(path, NULL, &db, &e), 0);
  if (!db) return;
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, db, &opts);
  int delivered = 0;
  ten_logs_subscribe(logs, NULL, NULL, NULL, count_line, &delivered);
  int out = -1, err = -1;
  CHECK_EQ(ten_logs_capture(logs, "web", "full", &out, &err), 0);
  if (out < 0) return;

  signal(SIGXFSZ, SIG_IGN);
  struct rlimit saved, tight;
  CHECK_EQ(getrlimit(RLIMIT_FSIZE, &saved), 0);
  tight = saved;
  tight.rlim_cur = 100; /* less than the ten records below */
  CHECK_EQ(setrlimit(RLIMIT_FSIZE, &tight), 0);
  char text[400] = "";
  for (int i = 1; i <= 10; i++) snprintf(text + strlen(text), 40, "line %d of ten\n", i);
  put(out, text);
  ten_logs_stats_t st;
  uint64_t deadline = ten_now_ms() + 5000;
  do {
    uv_run(&loop, UV_RUN_ONCE);
    ten_logs_stats(logs, &st);
  } while (st.pauses == 0 && ten_now_ms() < deadline);
  for (int i = 0; i < 5; i++) uv_run(&loop, UV_RUN_NOWAIT); /* and it stays so */
  CHECK_EQ(st.pauses, 1);
  CHECK_EQ(delivered, 0);
  CHECK_EQ(setrlimit(RLIMIT_FSIZE, &saved), 0);
  CHECK(run_until_count(&delivered, 10, 5));

  close(out);
  close(err);
  CHECK(captures_done(logs, 5));
  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  ten_db_sync(db);
  static seen_t rows;
  rows.count = 0;
  ten_db_log_query_t q;
  memset(&q, 0, sizeof q);
  q.min_level = -1;
  q.after_id = 0;
  q.limit = 100;
  CHECK_EQ(ten_db_logs_query(path, &q, on_row, &rows, NULL, NULL, &e), 0);
  CHECK_EQ(rows.count, 10);
  for (int i = 0; i < rows.count; i++) {
    char want[40];
    snprintf(want, sizeof want, "line %d of ten", 10 - i); /* newest first */
    CHECK_STR(rows.line[i].message, want);
  }
  ten_db_stats_t dst;
  ten_db_stats(db, &dst);
  CHECK_EQ(dst.lines_failed, 0);
  ten_logs_free(logs);
  ten_db_close(db);
}

/* Names are not length-checked by the callers (`ten logs -f` passes the
 * control request's strings straight through), so a long service name must
 * simply match nothing. logs.c builds the ring key with
 * snprintf(key, 256, "%s:%s", ...) and then hashes the untruncated length
 * snprintf returns: a read past the 256-byte stack buffer (ASan:
 * stack-buffer-overflow). Run in a child so a sanitizer abort is reported
 * as a failed check instead of ending this test program. */
TEST(long_names_in_tail) {
  ten_logs_options_t opts = {.ring_lines = 5, .max_line = 64};
  ten_logs_t *logs = ten_logs_new(&loop, NULL, &opts);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) {
    static char name[400];
    memset(name, 's', sizeof name - 1);
    static seen_t none;
    int64_t oldest = ten_logs_tail(logs, name, "a", 0, 10, on_line, &none);
    oldest += ten_logs_tail(logs, "web", name, 0, 10, on_line, &none);
    _exit(oldest == 0 && none.count == 0 ? 0 : 2);
  }
  int status = 0;
  if (pid > 0) CHECK_EQ(waitpid(pid, &status, 0), pid);
  bool clean = pid > 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0;
  if (!clean)
    fprintf(stderr, "  ten_logs_tail with a 399-byte service name: child %s %d\n",
            WIFEXITED(status) ? "exited with status" : "killed by signal",
            WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
  CHECK(clean);
  closed = false;
  ten_logs_close(logs, on_closed, &closed);
  CHECK(test_run_until(&loop, &closed, 5));
  ten_logs_free(logs);
}

int main(void) {
  ten_log_set_level(TEN_LOG_ERROR);
  CHECK_EQ(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 50, 50);
  RUN(capture_without_db);
  RUN(close_with_open_pipe);
  RUN(capture_to_db);
  RUN(backpressure_pauses_and_loses_nothing);
  RUN(spool_mirrors_the_pipeline);
  RUN(spool_write_failure_pauses_and_loses_nothing);
  RUN(long_names_in_tail);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  if (strcmp(dir + strlen(dir) - 6, "XXXXXX") != 0)
    CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
