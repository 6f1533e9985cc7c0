#include "util/log.h"

#include "util/time.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

static ten_log_level_t min_level = TEN_LOG_INFO;
static ten_log_sink_fn sink_fn;
static void *sink_ctx;

void ten_log_set_level(ten_log_level_t level) { min_level = level; }
ten_log_level_t ten_log_get_level(void) { return min_level; }

void ten_log_set_sink(ten_log_sink_fn fn, void *ctx) {
  sink_fn = fn;
  sink_ctx = ctx;
}

const char *ten_log_level_name(ten_log_level_t level) {
  switch (level) {
  case TEN_LOG_DEBUG: return "debug";
  case TEN_LOG_INFO: return "info";
  case TEN_LOG_WARN: return "warn";
  case TEN_LOG_ERROR: return "error";
  }
  return "?";
}

int ten_log_level_parse(const char *name) {
  for (int l = TEN_LOG_DEBUG; l <= TEN_LOG_ERROR; l++)
    if (strcmp(name, ten_log_level_name((ten_log_level_t)l)) == 0) return l;
  return -1;
}

void ten_log(ten_log_level_t level, const char *fmt, ...) {
  if (level < min_level) return;
  char line[2048];
  char ts[32];
  ten_format_rfc3339(ten_wall_ms(), ts, sizeof ts);
  int n = snprintf(line, sizeof line, "%s %-5s ", ts, ten_log_level_name(level));
  size_t head = (size_t)n;
  va_list ap;
  va_start(ap, fmt);
  int m = vsnprintf(line + head, sizeof line - head - 1, fmt, ap);
  va_end(ap);
  size_t len = head + (m < 0 ? 0 : TEN_MIN((size_t)m, sizeof line - head - 2));
  line[len++] = '\n';
  line[len] = '\0';
  /* One write(2) per line so lines from a crash are never half-buffered. */
  ssize_t w = write(STDERR_FILENO, line, len);
  (void)w;
  if (sink_fn) {
    line[len - 1] = '\0';
    sink_fn(sink_ctx, level, line + head);
  }
}
