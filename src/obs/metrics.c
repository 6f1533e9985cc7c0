#include "obs/metrics.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const double ten_hist_bounds[TEN_HIST_BUCKETS] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                  0.1,    0.25,  0.5,    1,     2.5,  5,    10};

void ten_histogram_observe(ten_histogram_t *h, double seconds) {
  h->count++;
  h->sum += seconds;
  for (int i = 0; i < TEN_HIST_BUCKETS; i++) {
    if (seconds <= ten_hist_bounds[i]) {
      h->buckets[i]++;
      return;
    }
  }
}

void ten_metric_family(ten_buf_t *out, const char *name, const char *type, const char *help) {
  ten_buf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* Label values escape backslash, double quote and newline (the format's rules). */
static void label_value(ten_buf_t *out, const char *v) {
  for (; *v; v++) {
    if (*v == '\\') ten_buf_puts(out, "\\\\");
    else if (*v == '"') ten_buf_puts(out, "\\\"");
    else if (*v == '\n') ten_buf_puts(out, "\\n");
    else ten_buf_putc(out, *v);
  }
}

static void labels(ten_buf_t *out, const ten_label_t *l, size_t n, const char *le) {
  if (!n && !le) return;
  ten_buf_putc(out, '{');
  for (size_t i = 0; i < n; i++) {
    ten_buf_printf(out, "%s%s=\"", i ? "," : "", l[i].name);
    label_value(out, l[i].value ? l[i].value : "");
    ten_buf_putc(out, '"');
  }
  if (le) ten_buf_printf(out, "%sle=\"%s\"", n ? "," : "", le);
  ten_buf_putc(out, '}');
}

static void number(ten_buf_t *out, double v) {
  if (isnan(v)) ten_buf_puts(out, "NaN");
  else if (isinf(v)) ten_buf_puts(out, v > 0 ? "+Inf" : "-Inf");
  else if (fabs(v) < 1e15 && v == (double)(long long)v) ten_buf_printf(out, "%lld", (long long)v);
  else {
    /* The shortest form that reads back as the same double: 9.421, not
     * 9.4209999999999994. */
    char text[32];
    for (int digits = 15; digits <= 17; digits++) {
      snprintf(text, sizeof text, "%.*g", digits, v);
      if (strtod(text, NULL) == v) break;
    }
    ten_buf_puts(out, text);
  }
}

void ten_metric_single(ten_buf_t *out, const char *name, const char *type, const char *help,
                       double value) {
  ten_metric_family(out, name, type, help);
  ten_metric_sample(out, name, NULL, 0, value);
}

void ten_metric_sample(ten_buf_t *out, const char *name, const ten_label_t *l, size_t n,
                       double value) {
  ten_buf_puts(out, name);
  labels(out, l, n, NULL);
  ten_buf_putc(out, ' ');
  number(out, value);
  ten_buf_putc(out, '\n');
}

void ten_metric_histogram(ten_buf_t *out, const char *name, const ten_label_t *l, size_t n,
                          const ten_histogram_t *h) {
  uint64_t cumulative = 0;
  for (int i = 0; i <= TEN_HIST_BUCKETS; i++) {
    char le[32];
    if (i < TEN_HIST_BUCKETS) {
      cumulative += h->buckets[i];
      snprintf(le, sizeof le, "%g", ten_hist_bounds[i]);
    } else {
      cumulative = h->count;
      snprintf(le, sizeof le, "+Inf");
    }
    ten_buf_printf(out, "%s_bucket", name);
    labels(out, l, n, le);
    ten_buf_printf(out, " %llu\n", (unsigned long long)cumulative);
  }
  ten_buf_printf(out, "%s_sum", name);
  labels(out, l, n, NULL);
  ten_buf_putc(out, ' ');
  number(out, h->sum);
  ten_buf_printf(out, "\n%s_count", name);
  labels(out, l, n, NULL);
  ten_buf_printf(out, " %llu\n", (unsigned long long)h->count);
}
