/* test_metrics.c: Prometheus text exposition and histograms (src/obs/metrics.h). */
#include "test.h"
#include "obs/metrics.h"

#include <math.h>
#include <stdlib.h>

/* The value printed after the last space of a one-line sample. */
static double value_of(const char *line) {
  const char *sp = strrchr(line, ' ');
  return sp ? strtod(sp + 1, NULL) : NAN;
}

static ten_buf_t sample_buf;

/* "m <v>\n", in a buffer reused by the next call. */
static const char *sample(double v) {
  ten_buf_reset(&sample_buf);
  ten_metric_sample(&sample_buf, "m", NULL, 0, v);
  return sample_buf.data;
}

TEST(family_lines) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_metric_family(&b, "tenement_requests_total", "counter", "Requests proxied.");
  CHECK_STR(b.data,
            "# HELP tenement_requests_total Requests proxied.\n"
            "# TYPE tenement_requests_total counter\n");
  ten_buf_reset(&b);
  ten_metric_family(&b, "x_seconds", "histogram", "Latency of x.");
  CHECK_STR(b.data, "# HELP x_seconds Latency of x.\n# TYPE x_seconds histogram\n");
  ten_buf_reset(&b);
  ten_metric_family(&b, "g", "gauge", "A gauge.");
  CHECK_STR(b.data, "# HELP g A gauge.\n# TYPE g gauge\n");
  ten_buf_free(&b);
}

TEST(sample_labels) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_metric_sample(&b, "up", NULL, 0, 1);
  CHECK_STR(b.data, "up 1\n");
  ten_buf_reset(&b);

  ten_label_t one[] = {{"service", "web"}};
  ten_metric_sample(&b, "up", one, 1, 0);
  CHECK_STR(b.data, "up{service=\"web\"} 0\n");
  ten_buf_reset(&b);

  ten_label_t two[] = {{"service", "web"}, {"instance", "a-1"}};
  ten_metric_sample(&b, "tenement_instance_up", two, 2, 1);
  CHECK_STR(b.data, "tenement_instance_up{service=\"web\",instance=\"a-1\"} 1\n");
  ten_buf_reset(&b);

  /* Escaping: backslash, double quote and newline; nothing else. */
  ten_label_t nasty[] = {{"path", "C:\\dir \"q\"\nnext\ttab{}=,"}};
  ten_metric_sample(&b, "m", nasty, 1, 2);
  CHECK_STR(b.data, "m{path=\"C:\\\\dir \\\"q\\\"\\nnext\ttab{}=,\"} 2\n");
  ten_buf_reset(&b);

  /* Empty and missing values are empty strings. */
  ten_label_t empty[] = {{"a", ""}, {"b", NULL}};
  ten_metric_sample(&b, "m", empty, 2, 3);
  CHECK_STR(b.data, "m{a=\"\",b=\"\"} 3\n");
  ten_buf_reset(&b);

  /* Samples append: a family and its samples build one text. */
  ten_metric_family(&b, "m", "gauge", "M.");
  ten_metric_sample(&b, "m", one, 1, 5);
  ten_metric_sample(&b, "m", two, 2, 6);
  CHECK_STR(b.data, "# HELP m M.\n# TYPE m gauge\nm{service=\"web\"} 5\n"
                    "m{service=\"web\",instance=\"a-1\"} 6\n");
  ten_buf_free(&b);
}

TEST(numbers) {
  /* Integers: plain digits, no exponent, no decimal point. */
  CHECK_STR(sample(0), "m 0\n");
  CHECK_STR(sample(-0.0), "m 0\n");
  CHECK_STR(sample(7), "m 7\n");
  CHECK_STR(sample(-42), "m -42\n");
  CHECK_STR(sample(1e6), "m 1000000\n");
  CHECK_STR(sample(1e12), "m 1000000000000\n");
  CHECK_STR(sample(123456789012345.0), "m 123456789012345\n");
  CHECK_STR(sample(4294967296.0), "m 4294967296\n");
  /* Fractions: as many digits as it takes to read the same double back. */
  CHECK_STR(sample(0.5), "m 0.5\n");
  CHECK_STR(sample(0.25), "m 0.25\n");
  CHECK_STR(sample(-1.5), "m -1.5\n");
  static const double fractions[] = {0.1, 1.0 / 3, 2.0 / 3, 0.0005, 1e-9, 123.456, 3.14159265358979,
                                     99999.99999, 1e15 + 0.5, 0.30000000000000004};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(fractions); i++) {
    const char *s = sample(fractions[i]);
    CHECK(value_of(s) == fractions[i]);
    CHECK(s[strlen(s) - 1] == '\n');
  }
  /* Large integral values still read back exactly. */
  CHECK(value_of(sample(9007199254740992.0)) == 9007199254740992.0);
  /* Special values in the format's spelling. */
  CHECK_STR(sample(NAN), "m NaN\n");
  CHECK_STR(sample(INFINITY), "m +Inf\n");
  CHECK_STR(sample(-INFINITY), "m -Inf\n");
  ten_buf_free(&sample_buf);
}

/* Values beyond long long's range (a byte counter past 9.2e18, a huge
 * sum). metrics.c's number() tests `v == (double)(long long)v` before it
 * tests the magnitude, and converting an out-of-range double to long long
 * is undefined behaviour (C11 6.3.1.4): clang's UBSan (float-cast-overflow)
 * stops here; GCC's -fsanitize=undefined does not include that check. */
TEST(numbers_beyond_long_long) {
  static const double big[] = {1e19, -1e19, 9.3e18, 1e300, -1e300, 1.8446744073709552e19};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(big); i++) {
    const char *s = sample(big[i]);
    CHECK(value_of(s) == big[i]);
  }
  ten_buf_free(&sample_buf);
}

static const char *const bound_text[TEN_HIST_BUCKETS] = {
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05",
    "0.1",    "0.25",  "0.5",    "1",     "2.5",  "5",     "10"};

TEST(bounds) {
  /* The documented buckets, ascending. */
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) {
    CHECK(ten_hist_bounds[i] == strtod(bound_text[i], NULL));
    if (i) CHECK(ten_hist_bounds[i] > ten_hist_bounds[i - 1]);
  }
}

TEST(observe) {
  ten_histogram_t h;
  memset(&h, 0, sizeof h);
  /* Every bound itself goes into its own bucket (le = less or equal). */
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) ten_histogram_observe(&h, ten_hist_bounds[i]);
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) CHECK_EQ(h.buckets[i], 1);
  CHECK_EQ(h.count, TEN_HIST_BUCKETS);

  memset(&h, 0, sizeof h);
  ten_histogram_observe(&h, 0);         /* bucket 0 */
  ten_histogram_observe(&h, 0.0001);    /* bucket 0 */
  ten_histogram_observe(&h, 0.0005001); /* bucket 1 (just above 0.0005) */
  ten_histogram_observe(&h, 0.3);       /* 0.25 < x <= 0.5: bucket 9 */
  ten_histogram_observe(&h, 0.1);       /* exactly 0.1: bucket 7 */
  ten_histogram_observe(&h, 9.999);     /* bucket 13 */
  ten_histogram_observe(&h, 10.000001); /* above the last bound: only +Inf */
  ten_histogram_observe(&h, 3600);      /* only +Inf */
  uint64_t want[TEN_HIST_BUCKETS] = {2, 1, 0, 0, 0, 0, 0, 1, 0, 1, 0, 0, 0, 1};
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) {
    if (h.buckets[i] != want[i]) fprintf(stderr, "  bucket %d (le %s)\n", i, bound_text[i]);
    CHECK_EQ(h.buckets[i], want[i]);
  }
  CHECK_EQ(h.count, 8);
  uint64_t in_buckets = 0;
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) in_buckets += h.buckets[i];
  CHECK_EQ(in_buckets, 6);
  double sum = 0 + 0.0001 + 0.0005001 + 0.3 + 0.1 + 9.999 + 10.000001 + 3600;
  CHECK(fabs(h.sum - sum) < 1e-9);
}

TEST(histogram_text) {
  ten_histogram_t h;
  memset(&h, 0, sizeof h);
  ten_histogram_observe(&h, 0.0002); /* le 0.0005 */
  ten_histogram_observe(&h, 0.003);  /* le 0.005 */
  ten_histogram_observe(&h, 0.003);  /* le 0.005 */
  ten_histogram_observe(&h, 0.5);    /* le 0.5 */
  ten_histogram_observe(&h, 2);      /* le 2.5 */
  ten_histogram_observe(&h, 60);     /* +Inf only */
  static const unsigned cumulative[TEN_HIST_BUCKETS] = {1, 1, 1, 3, 3, 3, 3, 3, 3, 4, 4, 5, 5, 5};

  ten_buf_t want = TEN_BUF_INIT;
  for (int i = 0; i < TEN_HIST_BUCKETS; i++)
    ten_buf_printf(&want, "lat_seconds_bucket{service=\"web\",instance=\"a\",le=\"%s\"} %u\n",
                   bound_text[i], cumulative[i]);
  ten_buf_puts(&want, "lat_seconds_bucket{service=\"web\",instance=\"a\",le=\"+Inf\"} 6\n");

  ten_buf_t b = TEN_BUF_INIT;
  ten_label_t l[] = {{"service", "web"}, {"instance", "a"}};
  ten_metric_histogram(&b, "lat_seconds", l, 2, &h);
  /* Everything up to _sum is exact; the sum is checked by value. */
  char *sum_line = strstr(b.data, "lat_seconds_sum{");
  CHECK(sum_line != NULL);
  if (!sum_line) {
    ten_buf_free(&b);
    ten_buf_free(&want);
    return;
  }
  CHECK_EQ((size_t)(sum_line - b.data), want.len);
  CHECK(strncmp(b.data, want.data, want.len) == 0);
  if (strncmp(b.data, want.data, want.len) != 0) fprintf(stderr, "got:\n%s\n", b.data);
  static const char sum_prefix[] = "lat_seconds_sum{service=\"web\",instance=\"a\"} ";
  CHECK(strncmp(sum_line, sum_prefix, strlen(sum_prefix)) == 0);
  char *nl = strchr(sum_line, '\n');
  CHECK(nl != NULL);
  if (nl) {
    *nl = '\0';
    CHECK(value_of(sum_line) == h.sum);
    CHECK_STR(nl + 1, "lat_seconds_count{service=\"web\",instance=\"a\"} 6\n");
    *nl = '\n';
  }

  /* The buckets never go down, and +Inf is the count. */
  unsigned long long prev = 0;
  int lines = 0;
  for (const char *p = b.data; (p = strstr(p, "_bucket{")) != NULL; p++) {
    const char *eol = strchr(p, '\n');
    const char *sp = p;
    while (sp < eol && *sp != ' ') sp++;
    unsigned long long v = strtoull(sp + 1, NULL, 10);
    CHECK(v >= prev);
    prev = v;
    lines++;
  }
  CHECK_EQ(lines, TEN_HIST_BUCKETS + 1);
  CHECK_EQ(prev, h.count);
  ten_buf_free(&b);
  ten_buf_free(&want);
}

TEST(histogram_no_labels_and_empty) {
  ten_histogram_t h;
  memset(&h, 0, sizeof h);
  ten_buf_t b = TEN_BUF_INIT, want = TEN_BUF_INIT;
  ten_metric_histogram(&b, "h", NULL, 0, &h);
  for (int i = 0; i < TEN_HIST_BUCKETS; i++)
    ten_buf_printf(&want, "h_bucket{le=\"%s\"} 0\n", bound_text[i]);
  ten_buf_puts(&want, "h_bucket{le=\"+Inf\"} 0\nh_sum 0\nh_count 0\n");
  CHECK_STR(b.data, want.data);

  /* Integral sums print as integers; escaped labels come before le. */
  ten_buf_reset(&b);
  ten_buf_reset(&want);
  ten_histogram_observe(&h, 1);
  ten_histogram_observe(&h, 1);
  ten_label_t l[] = {{"q", "a\"b"}};
  ten_metric_histogram(&b, "h", l, 1, &h);
  for (int i = 0; i < TEN_HIST_BUCKETS; i++)
    ten_buf_printf(&want, "h_bucket{q=\"a\\\"b\",le=\"%s\"} %d\n", bound_text[i],
                   ten_hist_bounds[i] >= 1 ? 2 : 0);
  ten_buf_puts(&want, "h_bucket{q=\"a\\\"b\",le=\"+Inf\"} 2\nh_sum{q=\"a\\\"b\"} 2\n"
                      "h_count{q=\"a\\\"b\"} 2\n");
  CHECK_STR(b.data, want.data);
  ten_buf_free(&b);
  ten_buf_free(&want);
}

int main(void) {
  RUN(family_lines);
  RUN(sample_labels);
  RUN(numbers);
  RUN(bounds);
  RUN(observe);
  RUN(histogram_text);
  RUN(histogram_no_labels_and_empty);
  RUN(numbers_beyond_long_long);
  return test_report();
}
