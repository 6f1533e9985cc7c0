/* metrics.h: Prometheus text exposition (format 0.0.4) and the histogram
 * type subsystems keep their latencies in.
 *
 * Recording is a few additions into memory the owner already holds: no
 * lock, no allocation (histograms have fixed buckets). Rendering happens
 * only when /metrics is scraped: each subsystem writes its families with
 * these helpers, which take care of HELP/TYPE lines, label escaping and
 * the _bucket/_sum/_count series.
 */
#ifndef TEN_OBS_METRICS_H
#define TEN_OBS_METRICS_H

#include "util/buf.h"

/* Latency buckets in seconds, shared by every histogram. */
#define TEN_HIST_BUCKETS 14
extern const double ten_hist_bounds[TEN_HIST_BUCKETS];

typedef struct ten_histogram {
  uint64_t buckets[TEN_HIST_BUCKETS]; /* non-cumulative counts; +Inf is count */
  uint64_t count;
  double sum;
} ten_histogram_t;

void ten_histogram_observe(ten_histogram_t *h, double seconds);

typedef struct ten_label {
  const char *name;
  const char *value;
} ten_label_t;

/* # HELP and # TYPE lines. type: "counter", "gauge" or "histogram". */
void ten_metric_family(ten_buf_t *out, const char *name, const char *type, const char *help);
/* name{labels} value */
void ten_metric_sample(ten_buf_t *out, const char *name, const ten_label_t *labels, size_t nlabels,
                       double value);
/* A family of one sample without labels: HELP, TYPE and the value. */
void ten_metric_single(ten_buf_t *out, const char *name, const char *type, const char *help,
                       double value);
/* name_bucket{labels,le=...}, name_sum, name_count. */
void ten_metric_histogram(ten_buf_t *out, const char *name, const ten_label_t *labels,
                          size_t nlabels, const ten_histogram_t *h);

#endif
