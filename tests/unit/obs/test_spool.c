/* test_spool.c: the log spool (src/obs/spool.h) on real files: the record
 * format, recovery of lines and unfinished lines, the reader, and the
 * database after a writer process is killed with SIGKILL mid-work (in a
 * forked child, so the kill is real). */
#include "obs/db.h"
#include "obs/lines.h"
#include "obs/spool.h"
#include "test.h"
#include "util/log.h"
#include "util/time.h"

#include <signal.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

static char dir[] = "/tmp/ten-unit-spool-XXXXXX";

static bool exists(const char *path) {
  struct stat st;
  return stat(path, &st) == 0;
}

static char *seg(const char *d, uint64_t seq) {
  return ten_xasprintf("%s/%020llu.spool", d, (unsigned long long)seq);
}

/* Writes b as segment seq of d. */
static void write_segment(const char *d, uint64_t seq, ten_spool_buf_t *b) {
  ten_spool_writer_t w;
  ten_err_t err;
  CHECK_EQ(ten_spool_writer_open(&w, d, seq, &err), 0);
  b->written = 0;
  CHECK_EQ(ten_spool_append(&w, b), 0);
  ten_spool_writer_close(&w);
  ten_spool_buf_reset(b);
}

static void line(ten_spool_buf_t *b, uint64_t key, int64_t id, const char *msg) {
  ten_spool_buf_line(b, key, id, 1000 + id, TEN_LEVEL_INFO, TEN_STREAM_STDOUT, "svc", "i", msg,
                     strlen(msg));
}

static void partial(ten_spool_buf_t *b, uint64_t key, size_t keep, const char *bytes) {
  ten_spool_buf_partial(b, key, keep, 5000, TEN_STREAM_STDERR, "svc", "i", bytes, strlen(bytes));
}

/* ---------------------------------------------------------------- records */

TEST(records) {
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  ten_spool_buf_line(&b, 7, 42, 1234, TEN_LEVEL_WARN, TEN_STREAM_STDERR, "web", "prod", "hello", 5);
  ten_spool_buf_partial(&b, 7, 3, 1235, TEN_STREAM_STDERR, "web", "prod", "tail", 4);
  CHECK_EQ(b.lines, 1);
  CHECK_EQ(b.last_id, 42);
  size_t pos = 0;
  ten_spool_view_t v;
  CHECK_EQ(ten_spool_next(b.data.data, b.data.len, &pos, &v), 1);
  CHECK_EQ(v.rec.kind, TEN_SPOOL_LINE);
  CHECK_EQ(v.rec.key, 7);
  CHECK_EQ(v.rec.id, 42);
  CHECK_EQ(v.rec.ts, 1234);
  CHECK_EQ(v.rec.level, TEN_LEVEL_WARN);
  CHECK_EQ(v.rec.stream, TEN_STREAM_STDERR);
  CHECK(v.rec.service_len == 3 && memcmp(v.service, "web", 3) == 0);
  CHECK(v.rec.instance_len == 4 && memcmp(v.instance, "prod", 4) == 0);
  CHECK(v.rec.len == 5 && memcmp(v.body, "hello", 5) == 0);
  size_t first_end = pos;
  CHECK_EQ(ten_spool_next(b.data.data, b.data.len, &pos, &v), 1);
  CHECK_EQ(v.rec.kind, TEN_SPOOL_PARTIAL);
  CHECK_EQ(v.rec.id, 3); /* keep */
  CHECK(v.rec.len == 4 && memcmp(v.body, "tail", 4) == 0);
  CHECK_EQ(pos, b.data.len);
  CHECK_EQ(ten_spool_next(b.data.data, b.data.len, &pos, &v), 0);
  /* Every cut short of a whole record is "not yet", never a record. */
  bool all_short = true;
  for (size_t len = 0; len < first_end; len++) {
    size_t p = 0;
    all_short = all_short && ten_spool_next(b.data.data, len, &p, &v) == 0 && p == 0;
  }
  CHECK(all_short);
  /* Bytes that are not a record say so. */
  b.data.data[first_end + sizeof(ten_spool_rec_t) - 1] ^= 0x55;
  pos = first_end;
  CHECK_EQ(ten_spool_next(b.data.data, b.data.len, &pos, &v), -1);
  CHECK_EQ(pos, first_end);
  ten_spool_buf_free(&b);
}

/* ---------------------------------------------------------------- recovery */

TEST(recover_lines_and_partials) {
  char *d = ten_xasprintf("%s/recover", dir);
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  CHECK_EQ(mkdir(d, 0700), 0);
  /* Key 1: a line, then a partial line grown in two records. Key 2: a
   * partial that ends in CR. Key 3: a partial later cleared. */
  line(&b, 1, 1, "one");
  partial(&b, 1, 0, "par");
  partial(&b, 1, 3, "tial");
  line(&b, 2, 2, "two");
  partial(&b, 2, 0, "xx\r");
  partial(&b, 3, 0, "gone");
  partial(&b, 3, 0, "");
  write_segment(d, 4, &b);
  /* The next segment: key 1's line ends, key 4 starts one, key 5 starts
   * one and grows it over a stale prefix, and the last record is torn. */
  line(&b, 1, 3, "partial done");
  partial(&b, 4, 0, "yy");
  partial(&b, 5, 0, "abc");
  partial(&b, 5, 1, "BC");
  line(&b, 6, 4, "torn");
  b.data.len -= 2;
  write_segment(d, 5, &b);

  ten_spool_recovery_t rec;
  ten_err_t err;
  CHECK_EQ(ten_spool_recover(d, 1, &rec, &err), 0);
  CHECK_EQ(rec.count, 2);
  if (rec.count == 2) CHECK(rec.segments[0] == 4 && rec.segments[1] == 5);
  CHECK_EQ(rec.next_seq, 6);
  CHECK_EQ(rec.lines, 2); /* ids 2 and 3: 1 is at or below last_id, 4 is torn */
  /* Unfinished lines come back as lines with the next ids, by key. */
  CHECK_EQ(rec.orphans.lines, 3);
  CHECK_EQ(rec.max_id, 6);
  static const struct {
    uint64_t key;
    const char *message;
  } want[] = {{2, "xx"}, {4, "yy"}, {5, "aBC"}};
  size_t pos = 0, n = 0;
  ten_spool_view_t v;
  while (ten_spool_next(rec.orphans.data.data, rec.orphans.data.len, &pos, &v) == 1) {
    if (n < TEN_ARRAY_SIZE(want)) {
      CHECK_EQ(v.rec.kind, TEN_SPOOL_LINE);
      CHECK_EQ(v.rec.key, want[n].key);
      CHECK_EQ(v.rec.id, 4 + (int64_t)n);
      CHECK(v.rec.len == strlen(want[n].message) &&
            memcmp(v.body, want[n].message, v.rec.len) == 0);
      CHECK_EQ(v.rec.stream, TEN_STREAM_STDERR);
      CHECK_EQ(v.rec.level, TEN_LEVEL_ERROR);
      CHECK_EQ(v.rec.ts, 5000);
    }
    n++;
  }
  CHECK_EQ(n, 3);

  /* Stored the way ten_db_open does (first thing in the next segment),
   * they are lines like any other: the next recovery makes none again. */
  rec.orphans.written = 0;
  write_segment(d, rec.next_seq, &rec.orphans);
  ten_spool_recovery_free(&rec);
  CHECK_EQ(ten_spool_recover(d, 3, &rec, &err), 0);
  CHECK_EQ(rec.count, 3);
  CHECK_EQ(rec.orphans.lines, 0);
  CHECK_EQ(rec.lines, 3); /* the three recovered ones: above 3 */
  CHECK_EQ(rec.max_id, 6);
  ten_spool_recovery_free(&rec);
  ten_spool_buf_free(&b);

  /* No spool yet: the folder is made, nothing is found. */
  char *fresh = ten_xasprintf("%s/fresh", dir);
  CHECK_EQ(ten_spool_recover(fresh, 9, &rec, &err), 0);
  CHECK(exists(fresh));
  CHECK_EQ(rec.count, 0);
  CHECK_EQ(rec.next_seq, 1);
  CHECK_EQ(rec.max_id, 9);
  ten_spool_recovery_free(&rec);
  free(fresh);
  free(d);
}

/* ---------------------------------------------------------------- reader */

/* Reads every record up to (end_seq, end_off); returns the ids of lines
 * (partials as 0) in order, as a count. */
static size_t read_all(ten_spool_reader_t *r, uint64_t end_seq, uint64_t end_off, int64_t *ids,
                       size_t max) {
  ten_spool_view_t views[3]; /* few at a time: calls span chunks and segments */
  size_t total = 0, n;
  while ((n = ten_spool_read(r, end_seq, end_off, views, TEN_ARRAY_SIZE(views))) > 0)
    for (size_t i = 0; i < n; i++) {
      if (total < max) ids[total] = views[i].rec.kind == TEN_SPOOL_LINE ? views[i].rec.id : 0;
      total++;
    }
  return total;
}

TEST(reader) {
  char *d = ten_xasprintf("%s/reader", dir);
  CHECK_EQ(mkdir(d, 0700), 0);
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  line(&b, 1, 1, "a");
  line(&b, 1, 2, "b");
  write_segment(d, 3, &b);
  line(&b, 1, 3, "c");
  partial(&b, 1, 0, "p");
  write_segment(d, 7, &b); /* a gap in the numbers is fine */
  /* This run's segment, being written: the reader stops at the end the
   * producer published, not at the end of the file. */
  ten_spool_writer_t w;
  ten_err_t err;
  CHECK_EQ(ten_spool_writer_open(&w, d, 8, &err), 0);
  line(&b, 2, 4, "d");
  CHECK_EQ(ten_spool_append(&w, &b), 0);
  uint64_t published = w.size;
  ten_spool_buf_reset(&b);
  line(&b, 2, 5, "e");
  CHECK_EQ(ten_spool_append(&w, &b), 0);
  ten_spool_buf_reset(&b);

  uint64_t *old = ten_xcalloc(2, sizeof *old);
  old[0] = 3;
  old[1] = 7;
  ten_spool_reader_t r;
  ten_spool_reader_init(&r, d, old, 2, 8);
  int64_t ids[16];
  ten_spool_mark_t mark = ten_spool_reader_mark(&r);
  CHECK_EQ(read_all(&r, 8, published, ids, 16), 5);
  CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == 3 && ids[3] == 0 && ids[4] == 4);
  /* A failed commit: back to the mark, the same records again. */
  ten_spool_reader_rewind(&r, mark);
  CHECK_EQ(read_all(&r, 8, published, ids, 16), 5);
  CHECK_EQ(ids[4], 4);
  /* Committed: the finished segments go, the current one stays. */
  char *s3 = seg(d, 3), *s7 = seg(d, 7), *s8 = seg(d, 8);
  CHECK(exists(s3) && exists(s7));
  uint64_t consumed = ten_spool_reader_commit(&r);
  CHECK(!exists(s3) && !exists(s7) && exists(s8));
  CHECK(consumed > published);
  /* The producer goes on, and rolls: the reader follows into segment 9. */
  mark = ten_spool_reader_mark(&r);
  uint64_t seg8_size = w.size;
  line(&b, 2, 6, "f");
  CHECK_EQ(ten_spool_roll(&w, &b), 0);
  ten_spool_buf_reset(&b);
  CHECK_EQ(w.seq, 9);
  CHECK_EQ(read_all(&r, 9, w.size, ids, 16), 2);
  CHECK(ids[0] == 5 && ids[1] == 6);
  CHECK_EQ(ten_spool_reader_commit(&r), seg8_size - published + w.size);
  CHECK(!exists(s8));
  CHECK_EQ(read_all(&r, 9, w.size, ids, 16), 0);
  ten_spool_writer_close(&w);
  ten_spool_reader_free(&r);
  ten_spool_buf_free(&b);
  free(s3);
  free(s7);
  free(s8);
  free(d);
}

/* ---------------------------------------------------------------- crash */

/* A writer process is killed with SIGKILL: lines it spooled (committed or
 * not, before and after a segment roll) and its unfinished lines are all
 * in the database after the next open, each once. */
#define ROLL_LINES  70000 /* about 9.5 MB of spool: more than a segment */
#define AFTER_LINES 1000  /* spooled but never committed */
#define ALL_LINES   (ROLL_LINES + AFTER_LINES)

static void message(char *out, size_t cap, int n) {
  snprintf(out, cap, "line %d %s", n,
           "padding padding padding padding padding padding padding padding padding padding");
}

static void crash_child(const char *path) {
  ten_db_t *db = NULL;
  ten_err_t err;
  if (ten_db_open(path, NULL, &db, &err)) _exit(2);
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT, snapshot = TEN_SPOOL_BUF_INIT;
  uint64_t lines_key = ten_db_log_stream_key(db), early_key = ten_db_log_stream_key(db);
  int64_t id = ten_db_next_log_id(db);
  char msg[200];
  /* A stream that started a line before the roll and never finished it. */
  ten_spool_buf_partial(&b, early_key, 0, 1, TEN_STREAM_STDOUT, "svc", "early", "started", 7);
  ten_spool_buf_partial(&b, early_key, 7, 1, TEN_STREAM_STDOUT, "svc", "early", " early", 6);
  ten_spool_buf_partial(&snapshot, early_key, 0, 1, TEN_STREAM_STDOUT, "svc", "early",
                        "started early", 13);
  for (int n = 1; n <= ROLL_LINES; n++) {
    message(msg, sizeof msg, n);
    line(&b, lines_key, id++, msg);
    if (n % 1000) continue;
    if (ten_db_log_write(db, &b)) _exit(3);
    ten_spool_buf_reset(&b);
    /* What the pipeline does: a new segment opens with the partial lines. */
    if (ten_db_log_segment_full(db) && ten_db_log_roll(db, &snapshot)) _exit(4);
  }
  /* All committed, and the first segment (with the partial's own records)
   * ingested and deleted. */
  ten_db_sync(db);
  /* Now the database is locked by someone else: nothing more commits. */
  sqlite3 *blocker = NULL;
  if (sqlite3_open(path, &blocker) != SQLITE_OK || sqlite3_busy_timeout(blocker, 30000) ||
      sqlite3_exec(blocker, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK)
    _exit(5);
  for (int n = ROLL_LINES + 1; n <= ALL_LINES; n++) {
    message(msg, sizeof msg, n);
    line(&b, lines_key, id++, msg);
  }
  ten_spool_buf_partial(&b, lines_key, 0, 2, TEN_STREAM_STDOUT, "svc", "i", "half a li", 9);
  if (ten_db_log_write(db, &b)) _exit(6);
  kill(getpid(), SIGKILL);
  _exit(7);
}

typedef struct tally {
  int rows, dups, others;
  int64_t max_id;
  unsigned char seen[ALL_LINES + 1];
  char other[2][64];
} tally_t;

static void tally_row(void *ctx, const ten_db_log_row_t *r) {
  tally_t *t = ctx;
  t->rows++;
  if (r->id > t->max_id) t->max_id = r->id;
  int n;
  if (sscanf(r->message, "line %d ", &n) == 1 && n >= 1 && n <= ALL_LINES) {
    if (t->seen[n]++) t->dups++;
  } else {
    if (t->others < 2) snprintf(t->other[t->others], sizeof t->other[0], "%s", r->message);
    t->others++;
  }
}

static void tally(const char *path, tally_t *t) {
  memset(t, 0, sizeof *t);
  ten_db_log_query_t q;
  memset(&q, 0, sizeof q);
  q.min_level = -1;
  q.limit = ALL_LINES + 10;
  ten_err_t err;
  CHECK_EQ(ten_db_logs_query(path, &q, tally_row, t, NULL, NULL, &err), 0);
}

TEST(crash_and_reopen) {
  char *d = ten_xasprintf("%s/crash", dir);
  CHECK_EQ(mkdir(d, 0700), 0);
  char *path = ten_xasprintf("%s/tenement.db", d);
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  CHECK(pid >= 0);
  if (pid == 0) crash_child(path);
  int status = 0;
  CHECK_EQ(waitpid(pid, &status, 0), pid);
  CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  if (!WIFSIGNALED(status))
    fprintf(stderr, "  the child exited with %d\n", WIFEXITED(status) ? WEXITSTATUS(status) : -1);
  char *spool = ten_xasprintf("%s-spool", path);
  char *first = seg(spool, 1);
  CHECK(!exists(first)); /* the partial line survived its segment */

  static tally_t t;
  tally(path, &t);
  CHECK_EQ(t.rows, ROLL_LINES); /* what the child saw committed */

  ten_db_t *db = NULL;
  ten_err_t err;
  CHECK_EQ(ten_db_open(path, NULL, &db, &err), 0);
  if (!db) goto done;
  ten_db_stats_t st;
  ten_db_stats(db, &st);
  CHECK_EQ(st.lines_pending, AFTER_LINES + 2); /* and two unfinished lines */
  CHECK_EQ(ten_db_next_log_id(db), ALL_LINES + 3);
  ten_db_sync(db);
  ten_db_stats(db, &st);
  CHECK_EQ(st.lines_pending, 0);
  CHECK_EQ(st.lines_stored, AFTER_LINES + 2);
  CHECK_EQ(st.lines_failed, 0);
  tally(path, &t);
  CHECK_EQ(t.rows, ALL_LINES + 2);
  CHECK_EQ(t.dups, 0);
  CHECK_EQ(t.others, 2);
  CHECK_EQ(t.max_id, ALL_LINES + 2);
  bool unfinished = (!strcmp(t.other[0], "half a li") && !strcmp(t.other[1], "started early")) ||
                    (!strcmp(t.other[1], "half a li") && !strcmp(t.other[0], "started early"));
  CHECK(unfinished);
  if (!unfinished) fprintf(stderr, "  others: \"%s\", \"%s\"\n", t.other[0], t.other[1]);
  ten_db_close(db);

  /* Once more: nothing is stored twice, no id is reused. */
  CHECK_EQ(ten_db_open(path, NULL, &db, &err), 0);
  if (!db) goto done;
  ten_db_stats(db, &st);
  CHECK_EQ(st.lines_pending, 0);
  CHECK_EQ(ten_db_next_log_id(db), ALL_LINES + 3);
  ten_db_close(db);
  tally(path, &t);
  CHECK_EQ(t.rows, ALL_LINES + 2);
  CHECK_EQ(t.dups, 0);
done:
  free(first);
  free(spool);
  free(path);
  free(d);
}

/* A damaged segment (garbage after some records, more than a read's
 * worth) costs only its rest: the records before, and the next segment,
 * are stored, and the writer does not wait for bytes it skipped. */
TEST(damaged_segment) {
  char *d = ten_xasprintf("%s/damaged", dir);
  CHECK_EQ(mkdir(d, 0700), 0);
  char *path = ten_xasprintf("%s/tenement.db", d);
  char *spool = ten_xasprintf("%s-spool", path);
  CHECK_EQ(mkdir(spool, 0700), 0);
  ten_spool_buf_t b = TEN_SPOOL_BUF_INIT;
  line(&b, 1, 1, "before the damage");
  line(&b, 1, 2, "also before");
  size_t garbage = 2u << 20;
  ten_buf_reserve(&b.data, garbage);
  memset(b.data.data + b.data.len, 0xab, garbage);
  b.data.len += garbage;
  line(&b, 1, 3, "lost in the damage");
  write_segment(spool, 1, &b);
  line(&b, 2, 4, "in the next segment");
  write_segment(spool, 2, &b);

  ten_db_t *db = NULL;
  ten_err_t err;
  CHECK_EQ(ten_db_open(path, NULL, &db, &err), 0);
  if (db) {
    ten_db_stats_t st;
    ten_db_stats(db, &st);
    CHECK_EQ(st.lines_pending, 3);
    CHECK_EQ(ten_db_next_log_id(db), 5);
    ten_db_sync(db); /* returns: every byte is accounted for */
    ten_db_stats(db, &st);
    CHECK_EQ(st.lines_pending, 0);
    CHECK_EQ(st.lines_stored, 3);
    CHECK(!ten_db_log_full(db));
    CHECK(ten_db_log_has_room(db));
    ten_db_close(db);
  }
  static tally_t t;
  tally(path, &t);
  CHECK_EQ(t.rows, 3);
  CHECK_EQ(t.others, 3);
  char *s1 = seg(spool, 1), *s2 = seg(spool, 2);
  CHECK(!exists(s1) && !exists(s2)); /* read to the end, so deleted */
  free(s1);
  free(s2);
  ten_spool_buf_free(&b);
  free(spool);
  free(path);
  free(d);
}

int main(void) {
  ten_db_global_init();
  ten_log_set_level(TEN_LOG_ERROR);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(records);
  RUN(recover_lines_and_partials);
  RUN(reader);
  RUN(crash_and_reopen);
  RUN(damaged_segment);
  CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
