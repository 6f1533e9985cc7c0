/* test_spool.c: the log spool (src/obs/spool.h) on real files: the record
 * format, recovery of lines and unfinished lines, and the reader. */
#include "obs/lines.h"
#include "obs/spool.h"
#include "test.h"
#include "util/log.h"
#include "util/time.h"

#include <stdlib.h>
#include <sys/stat.h>
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

int main(void) {
  ten_log_set_level(TEN_LOG_ERROR);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  RUN(records);
  RUN(recover_lines_and_partials);
  RUN(reader);
  CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
