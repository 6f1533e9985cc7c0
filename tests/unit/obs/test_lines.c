/* test_lines.c: the line splitter and level detection (src/obs/lines.h). */
#include "test.h"
#include "obs/lines.h"

#include <stdlib.h>

/* ---------------------------------------------------------------- fixtures */

#define MAX_LINES 64

typedef struct collected {
  char *line[MAX_LINES];
  size_t len[MAX_LINES];
  int count;
  int overflow;
} collected_t;

static void collect(void *ctx, const char *line, size_t len) {
  collected_t *c = ctx;
  if (c->count == MAX_LINES) {
    c->overflow++;
    return;
  }
  c->line[c->count] = malloc(len + 1);
  memcpy(c->line[c->count], line, len);
  c->line[c->count][len] = '\0';
  c->len[c->count] = len;
  c->count++;
}

static void collected_free(collected_t *c) {
  for (int i = 0; i < c->count; i++) free(c->line[i]);
  memset(c, 0, sizeof *c);
}

/* "a|b|c" style rendering of what came out, for readable failures. */
static const char *joined(const collected_t *c) {
  static char out[4096];
  size_t used = 0;
  out[0] = '\0';
  for (int i = 0; i < c->count && used < sizeof out; i++)
    used += (size_t)snprintf(out + used, sizeof out - used, "%s%s", i ? "|" : "", c->line[i]);
  return out;
}

/* Feeds `data` cut at the given offsets (ascending), then flushes if asked. */
static void feed_cut(ten_line_splitter_t *s, const char *data, size_t len, const size_t *cuts,
                     size_t ncuts, collected_t *c) {
  size_t at = 0;
  for (size_t i = 0; i < ncuts; i++) {
    ten_line_splitter_feed(s, data + at, cuts[i] - at, collect, c);
    at = cuts[i];
  }
  ten_line_splitter_feed(s, data + at, len - at, collect, c);
}

static bool same_lines(const collected_t *a, const collected_t *b) {
  if (a->count != b->count) return false;
  for (int i = 0; i < a->count; i++)
    if (a->len[i] != b->len[i] || memcmp(a->line[i], b->line[i], a->len[i]) != 0) return false;
  return true;
}

/* ---------------------------------------------------------------- splitter */

static const char multi[] = "alpha\nbeta\r\n\n\r\ngamma delta\nlast";
static const char *const multi_lines[] = {"alpha", "beta", "", "", "gamma delta"};

TEST(split_whole) {
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 1024);
  collected_t c = {0};
  ten_line_splitter_feed(&s, multi, strlen(multi), collect, &c);
  CHECK_EQ(c.count, 5);
  CHECK_STR(joined(&c), "alpha|beta|||gamma delta");
  for (int i = 0; i < c.count && i < 5; i++) CHECK_STR(c.line[i], multi_lines[i]);
  /* "last" has no newline: only the flush gives it. */
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_EQ(c.count, 6);
  if (c.count == 6) CHECK_STR(c.line[5], "last");
  /* A second flush has nothing left to give. */
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_EQ(c.count, 6);
  /* And the splitter is usable afterwards. */
  ten_line_splitter_feed(&s, "again\n", 6, collect, &c);
  CHECK_EQ(c.count, 7);
  if (c.count == 7) CHECK_STR(c.line[6], "again");
  ten_line_splitter_free(&s);
  collected_free(&c);
}

/* Two feeds, cut at every byte boundary; then three feeds, cut at every
 * pair of boundaries: always the same lines. */
TEST(split_every_boundary) {
  size_t n = strlen(multi);
  int bad = 0;
  for (size_t i = 0; i <= n; i++) {
    for (size_t j = i; j <= n; j++) {
      ten_line_splitter_t s;
      ten_line_splitter_init(&s, 1024);
      collected_t c = {0};
      size_t cuts[2] = {i, j};
      feed_cut(&s, multi, n, cuts, 2, &c);
      bool ok = c.count == 5;
      for (int k = 0; ok && k < 5; k++) ok = strcmp(c.line[k], multi_lines[k]) == 0;
      ten_line_splitter_flush(&s, collect, &c);
      ok = ok && c.count == 6 && strcmp(c.line[5], "last") == 0;
      if (!ok && bad++ < 5)
        fprintf(stderr, "  cuts at %zu,%zu gave \"%s\"\n", i, j, joined(&c));
      ten_line_splitter_free(&s);
      collected_free(&c);
    }
  }
  CHECK_EQ(bad, 0);

  /* One byte at a time. */
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 1024);
  collected_t c = {0};
  for (size_t i = 0; i < n; i++) ten_line_splitter_feed(&s, multi + i, 1, collect, &c);
  CHECK_STR(joined(&c), "alpha|beta|||gamma delta");
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_STR(joined(&c), "alpha|beta|||gamma delta|last");
  ten_line_splitter_free(&s);
  collected_free(&c);
}

TEST(split_empty_and_crlf) {
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 16);
  collected_t c = {0};
  ten_line_splitter_feed(&s, "\n\n\n", 3, collect, &c);
  CHECK_EQ(c.count, 3);
  for (int i = 0; i < c.count; i++) CHECK_EQ(c.len[i], 0);
  ten_line_splitter_feed(&s, "\r\n", 2, collect, &c);
  CHECK_EQ(c.count, 4);
  if (c.count == 4) CHECK_EQ(c.len[3], 0);
  /* CRLF split between feeds: the '\r' still goes. */
  ten_line_splitter_feed(&s, "x\r", 2, collect, &c);
  CHECK_EQ(c.count, 4);
  ten_line_splitter_feed(&s, "\ny", 2, collect, &c);
  CHECK_EQ(c.count, 5);
  if (c.count == 5) CHECK_STR(c.line[4], "x");
  /* Only one trailing '\r' is dropped; one inside the line stays. */
  ten_line_splitter_feed(&s, "a\rb\r\r\n", 6, collect, &c);
  CHECK_EQ(c.count, 6);
  if (c.count == 6) {
    CHECK_EQ(c.len[5], 5);
    CHECK(memcmp(c.line[5], "ya\rb\r", 5) == 0);
  }
  /* No partial line: flush gives nothing, twice. */
  ten_line_splitter_flush(&s, collect, &c);
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_EQ(c.count, 6);
  /* Bytes are bytes: NUL inside a line is kept. */
  ten_line_splitter_feed(&s, "a\0b\n", 4, collect, &c);
  CHECK_EQ(c.count, 7);
  if (c.count == 7) CHECK(c.len[6] == 3 && memcmp(c.line[6], "a\0b", 3) == 0);
  ten_line_splitter_free(&s);
  collected_free(&c);
}

/* A line exactly max_line long, then '\n': one line, not one plus an empty
 * one, however the bytes arrive. */
TEST(split_exact_max_line) {
  static const char in[] = "12345678\nabc\n\nxyz\n";
  size_t n = strlen(in);
  for (size_t i = 0; i <= n; i++) {
    ten_line_splitter_t s;
    ten_line_splitter_init(&s, 8);
    collected_t c = {0};
    size_t cut = i;
    feed_cut(&s, in, n, &cut, 1, &c);
    ten_line_splitter_flush(&s, collect, &c);
    if (strcmp(joined(&c), "12345678|abc||xyz") != 0)
      fprintf(stderr, "  cut at %zu gave \"%s\"\n", i, joined(&c));
    CHECK_STR(joined(&c), "12345678|abc||xyz");
    CHECK_EQ(c.count, 4);
    ten_line_splitter_free(&s);
    collected_free(&c);
  }

  /* Exactly max_line with nothing after: the piece is out at once, and the
   * flush has nothing more. */
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 8);
  collected_t c = {0};
  ten_line_splitter_feed(&s, "ABCDEFGH", 8, collect, &c);
  CHECK_EQ(c.count, 1);
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_EQ(c.count, 1);
  /* The next newline belongs to a new, empty line after a flush. */
  ten_line_splitter_feed(&s, "\n", 1, collect, &c);
  CHECK_EQ(c.count, 2);
  ten_line_splitter_free(&s);
  collected_free(&c);

  /* max_line - 1 bytes and CRLF: the '\r' lands in the piece and is dropped. */
  ten_line_splitter_init(&s, 8);
  ten_line_splitter_feed(&s, "1234567\r\n", 9, collect, &c);
  CHECK_STR(joined(&c), "1234567");
  ten_line_splitter_free(&s);
  collected_free(&c);
}

/* The same with CRLF: "12345678\r\n" is one 8-byte line (the '\r' is part
 * of the line ending, as "a trailing '\r' is dropped too" says), not the
 * line and an extra empty one. */
TEST(split_exact_max_line_crlf) {
  static const char in[] = "12345678\r\nabc\r\n";
  size_t n = strlen(in);
  int bad = 0;
  for (size_t i = 0; i <= n; i++) {
    ten_line_splitter_t s;
    ten_line_splitter_init(&s, 8);
    collected_t c = {0};
    size_t cut = i;
    feed_cut(&s, in, n, &cut, 1, &c);
    ten_line_splitter_flush(&s, collect, &c);
    if (strcmp(joined(&c), "12345678|abc") != 0 && bad++ < 3)
      fprintf(stderr, "  \"12345678\\r\\nabc\\r\\n\", max_line 8, cut at %zu: got \"%s\" "
              "(%d lines), want \"12345678|abc\"\n", i, joined(&c), c.count);
    ten_line_splitter_free(&s);
    collected_free(&c);
  }
  CHECK_EQ(bad, 0);
}

/* 3.5 x max_line: four pieces (three of max_line, one of half), nothing
 * lost, in every chunking; with or without a newline at the end. */
TEST(split_long_line) {
  enum { MAX = 16, LONG = MAX * 7 / 2 };
  char in[LONG + 1];
  for (int i = 0; i < LONG; i++) in[i] = (char)('a' + i % 26);
  in[LONG] = '\n';
  for (int with_nl = 0; with_nl <= 1; with_nl++) {
    size_t n = LONG + (size_t)with_nl;
    for (size_t chunk = 1; chunk <= n; chunk++) {
      ten_line_splitter_t s;
      ten_line_splitter_init(&s, MAX);
      collected_t c = {0};
      for (size_t at = 0; at < n; at += chunk)
        ten_line_splitter_feed(&s, in + at, TEN_MIN(chunk, n - at), collect, &c);
      /* Without the newline, the last piece waits for the flush. */
      CHECK_EQ(c.count, with_nl ? 4 : 3);
      ten_line_splitter_flush(&s, collect, &c);
      CHECK_EQ(c.count, 4);
      ten_line_splitter_flush(&s, collect, &c);
      CHECK_EQ(c.count, 4);
      if (c.count == 4) {
        CHECK_EQ(c.len[0], MAX);
        CHECK_EQ(c.len[1], MAX);
        CHECK_EQ(c.len[2], MAX);
        CHECK_EQ(c.len[3], MAX / 2);
        char back[LONG];
        size_t used = 0;
        for (int i = 0; i < 4; i++) {
          memcpy(back + used, c.line[i], c.len[i]);
          used += c.len[i];
        }
        CHECK_EQ(used, LONG);
        CHECK(memcmp(back, in, LONG) == 0);
      }
      ten_line_splitter_free(&s);
      collected_free(&c);
    }
  }
}

/* A '\r' that happens to fall at the end of a max_line piece is content,
 * not a line ending: "never dropped" means the pieces put together give
 * the line back. (emit() strips a trailing '\r' from every piece, cut or
 * not.) */
TEST(split_cut_keeps_carriage_return) {
  static const char in[] = "abc\rdefg\rhij\n";
  static const char line[] = "abc\rdefg\rhij";
  for (size_t chunk = 1; chunk <= strlen(in); chunk++) {
    ten_line_splitter_t s;
    ten_line_splitter_init(&s, 4);
    collected_t c = {0};
    for (size_t at = 0; at < strlen(in); at += chunk)
      ten_line_splitter_feed(&s, in + at, TEN_MIN(chunk, strlen(in) - at), collect, &c);
    ten_line_splitter_flush(&s, collect, &c);
    char back[64];
    size_t used = 0;
    bool short_pieces = true;
    for (int i = 0; i < c.count && used + c.len[i] < sizeof back; i++) {
      memcpy(back + used, c.line[i], c.len[i]);
      used += c.len[i];
      short_pieces = short_pieces && c.len[i] <= 4;
    }
    CHECK(short_pieces);
    if (used != strlen(line) || memcmp(back, line, used) != 0) {
      if (chunk == 1)
        fprintf(stderr, "  \"abc\\rdefg\\rhij\\n\", max_line 4: pieces put together are %zu "
                "bytes, want %zu (a '\\r' at the end of a piece was dropped)\n", used,
                strlen(line));
      CHECK(!"pieces == line");
    }
    ten_line_splitter_free(&s);
    collected_free(&c);
    if (used != strlen(line)) break; /* one report is enough */
  }
}

/* After a cut line, the next line starts clean: a genuine empty line right
 * after is still an empty line. */
TEST(split_after_cut) {
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 4);
  collected_t c = {0};
  ten_line_splitter_feed(&s, "abcdefgh\n\nij\n", 13, collect, &c);
  CHECK_STR(joined(&c), "abcd|efgh||ij");
  CHECK_EQ(c.count, 4);
  collected_free(&c);
  /* The same bytes one at a time. */
  const char *in = "abcdefgh\n\nij\nklmnop";
  for (size_t i = 0; in[i]; i++) ten_line_splitter_feed(&s, in + i, 1, collect, &c);
  CHECK_STR(joined(&c), "abcd|efgh||ij|klmn");
  ten_line_splitter_flush(&s, collect, &c);
  CHECK_STR(joined(&c), "abcd|efgh||ij|klmn|op");
  ten_line_splitter_free(&s);
  collected_free(&c);

  /* A long line fed in one go and in pieces gives the same. */
  collected_t one = {0}, many = {0};
  static const char text[] = "0123456789abcdefghij\nshort\n0123\n\n";
  ten_line_splitter_init(&s, 4);
  ten_line_splitter_feed(&s, text, strlen(text), collect, &one);
  ten_line_splitter_flush(&s, collect, &one);
  ten_line_splitter_free(&s);
  ten_line_splitter_init(&s, 4);
  for (size_t i = 0; text[i]; i += 3)
    ten_line_splitter_feed(&s, text + i, TEN_MIN((size_t)3, strlen(text) - i), collect, &many);
  ten_line_splitter_flush(&s, collect, &many);
  ten_line_splitter_free(&s);
  CHECK_STR(joined(&one), "0123|4567|89ab|cdef|ghij|shor|t|0123|");
  CHECK(same_lines(&one, &many));
  collected_free(&one);
  collected_free(&many);
}

TEST(split_default_max) {
  /* 0 means the default (16 KiB): a 10 KB line is one line. */
  ten_line_splitter_t s;
  ten_line_splitter_init(&s, 0);
  CHECK(s.max_line > 10000);
  collected_t c = {0};
  char *big = malloc(10001);
  memset(big, 'x', 10000);
  big[10000] = '\n';
  ten_line_splitter_feed(&s, big, 10001, collect, &c);
  CHECK_EQ(c.count, 1);
  if (c.count == 1) CHECK_EQ(c.len[0], 10000);
  free(big);
  ten_line_splitter_free(&s);
  collected_free(&c);
}

/* ---------------------------------------------------------------- levels */

TEST(level_parse_and_names) {
  CHECK_EQ(ten_level_parse("debug", 5), TEN_LEVEL_DEBUG);
  CHECK_EQ(ten_level_parse("INFO", 4), TEN_LEVEL_INFO);
  CHECK_EQ(ten_level_parse("warn", 4), TEN_LEVEL_WARN);
  CHECK_EQ(ten_level_parse("Warning", 7), TEN_LEVEL_WARN);
  CHECK_EQ(ten_level_parse("ERROR", 5), TEN_LEVEL_ERROR);
  CHECK_EQ(ten_level_parse("", 0), -1);
  CHECK_EQ(ten_level_parse("fatal", 5), -1);
  CHECK_EQ(ten_level_parse("information", 11), -1);
  CHECK_EQ(ten_level_parse("warnings", 8), -1);
  /* By length, not by NUL. */
  CHECK_EQ(ten_level_parse("warnx", 4), TEN_LEVEL_WARN);
  CHECK_EQ(ten_level_parse("errorx", 6), -1);
  CHECK_EQ(ten_level_parse("info", 3), -1);

  CHECK_STR(ten_level_name(TEN_LEVEL_DEBUG), "debug");
  CHECK_STR(ten_level_name(TEN_LEVEL_INFO), "info");
  CHECK_STR(ten_level_name(TEN_LEVEL_WARN), "warn");
  CHECK_STR(ten_level_name(TEN_LEVEL_ERROR), "error");
  CHECK(ten_level_name(-1) != NULL);
  CHECK(ten_level_name(4) != NULL);
  /* name -> parse round trip */
  for (int l = TEN_LEVEL_DEBUG; l <= TEN_LEVEL_ERROR; l++)
    CHECK_EQ(ten_level_parse(ten_level_name(l), strlen(ten_level_name(l))), l);

  CHECK_STR(ten_stream_name(TEN_STREAM_STDOUT), "stdout");
  CHECK_STR(ten_stream_name(TEN_STREAM_STDERR), "stderr");
}

#define O TEN_STREAM_STDOUT
#define E TEN_STREAM_STDERR
#define DEF (-1) /* the stream's default */

static const struct {
  const char *line;
  int stream;
  int want;
} level_cases[] = {
    {"WARN x", O, TEN_LEVEL_WARN},
    {"WARN x", E, TEN_LEVEL_WARN},
    {"[ERROR] x", O, TEN_LEVEL_ERROR},
    {"error: x", O, TEN_LEVEL_ERROR},
    {"Warning - x", O, TEN_LEVEL_WARN},
    {"WARNING: disk almost full", O, TEN_LEVEL_WARN},
    {"DEBUG", E, TEN_LEVEL_DEBUG},
    {"debug", E, TEN_LEVEL_DEBUG},
    {"info:", E, TEN_LEVEL_INFO},
    {"INFO", E, TEN_LEVEL_INFO},
    {"iNfO x", E, TEN_LEVEL_INFO},
    {"[warn] x", O, TEN_LEVEL_WARN},
    {"[info]", E, TEN_LEVEL_INFO},
    {"  WARN indented", O, TEN_LEVEL_WARN},
    {"\tERROR\ttabbed", O, TEN_LEVEL_ERROR},
    {"warn|x", O, TEN_LEVEL_WARN},
    {"ERROR-x", O, TEN_LEVEL_ERROR},
    {"{\"level\":\"warn\"}", O, TEN_LEVEL_WARN},
    {"{\"level\":\"warn\"}", E, TEN_LEVEL_WARN},
    {"{\"level\":\"info\",\"msg\":\"started\"}", E, TEN_LEVEL_INFO},
    {"{\"severity\":\"ERROR\"}", O, TEN_LEVEL_ERROR},
    {"{\"msg\":\"x\",\"severity\":\"Debug\"}", E, TEN_LEVEL_DEBUG},
    {"  {\"level\":\"error\"}", O, TEN_LEVEL_ERROR},
    {"{\"level\":\"verbose\"}", O, DEF},
    {"{\"level\":\"verbose\"}", E, DEF},
    {"{\"level\":3}", O, DEF},
    {"{\"msg\":\"WARN inside\"}", O, DEF},
    /* malformed JSON: the stream's default */
    {"{\"level\":\"warn\"", O, DEF},
    {"{\"level\":\"warn\"", E, DEF},
    {"{level: warn}", O, DEF},
    {"{", E, DEF},
    /* not a level word */
    {"INFORMATION x", O, DEF},
    {"INFORMATION x", E, DEF},
    {"ERRORS", O, DEF},
    {"ERRORS found", O, DEF},
    {"Warnings: 3", O, DEF},
    {"WARNx", O, DEF},
    {"WARN.x", O, DEF},
    {"hello WARN", O, DEF},
    {"12:00:01 ERROR x", O, DEF},
    {"fatal: x", O, DEF},
    {"[", O, DEF},
    {"", O, DEF},
    {"", E, DEF},
    {"   ", E, DEF},
    {"plain text", O, DEF},
    {"plain text", E, DEF},
};

TEST(detect_level_table) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(level_cases); i++) {
    const char *line = level_cases[i].line;
    int stream = level_cases[i].stream;
    int want = level_cases[i].want;
    if (want == DEF) want = stream == TEN_STREAM_STDERR ? TEN_LEVEL_ERROR : TEN_LEVEL_INFO;
    int got = ten_log_detect_level(line, strlen(line), (ten_log_stream_t)stream);
    if (got != want)
      fprintf(stderr, "  \"%s\" on %s: got %s, want %s\n", line, ten_stream_name(stream),
              ten_level_name(got), ten_level_name(want));
    CHECK_EQ(got, want);
  }
}

/* The length is the line, not the NUL: no reading past it. */
TEST(detect_level_by_length) {
  char buf[16];
  memcpy(buf, "WARNING!", 8); /* no NUL */
  CHECK_EQ(ten_log_detect_level(buf, 7, TEN_STREAM_STDOUT), TEN_LEVEL_WARN);
  CHECK_EQ(ten_log_detect_level(buf, 4, TEN_STREAM_STDOUT), TEN_LEVEL_WARN);
  CHECK_EQ(ten_log_detect_level(buf, 2, TEN_STREAM_STDOUT), TEN_LEVEL_INFO);
  CHECK_EQ(ten_log_detect_level(buf, 0, TEN_STREAM_STDERR), TEN_LEVEL_ERROR);
  CHECK_EQ(ten_log_detect_level("ERRORS", 5, TEN_STREAM_STDOUT), TEN_LEVEL_ERROR);
  CHECK_EQ(ten_log_detect_level("{\"level\":\"warn\"} trailing", 16, TEN_STREAM_STDOUT),
           TEN_LEVEL_WARN);
  /* A heap copy exactly the line's size, so ASan sees any overread. */
  static const char *const lines[] = {"ERROR", "[WARN", "{\"level\":\"warn\"}", "INFORMATIONAL",
                                      "{\"level\":"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(lines); i++) {
    size_t n = strlen(lines[i]);
    char *copy = malloc(n);
    memcpy(copy, lines[i], n);
    int level = ten_log_detect_level(copy, n, TEN_STREAM_STDOUT);
    CHECK(level >= TEN_LEVEL_DEBUG && level <= TEN_LEVEL_ERROR);
    free(copy);
  }
}

int main(void) {
  RUN(split_whole);
  RUN(split_every_boundary);
  RUN(split_empty_and_crlf);
  RUN(split_exact_max_line);
  RUN(split_exact_max_line_crlf);
  RUN(split_long_line);
  RUN(split_cut_keeps_carriage_return);
  RUN(split_after_cut);
  RUN(split_default_max);
  RUN(level_parse_and_names);
  RUN(detect_level_table);
  RUN(detect_level_by_length);
  return test_report();
}
