/* log.h: tenement's own diagnostic log (not the instances' logs: those are
 * captured by src/obs). One line per event on stderr:
 *   2026-11-23T16:52:34.123Z info  hv: api:prod ready in 12 ms (pid 4242)
 * Loop-thread only by convention; the writes are small and unbuffered so a
 * crash never loses the last lines. A sink can be added to mirror the lines
 * elsewhere (the log pipeline, later).
 */
#ifndef TEN_UTIL_LOG_H
#define TEN_UTIL_LOG_H

#include "util/common.h"

typedef enum ten_log_level {
  TEN_LOG_DEBUG,
  TEN_LOG_INFO,
  TEN_LOG_WARN,
  TEN_LOG_ERROR,
} ten_log_level_t;

typedef void (*ten_log_sink_fn)(void *ctx, ten_log_level_t level, const char *line);

/* Lines below this level are not written. Default: info (TEN_LOG_LEVEL=debug
 * in the environment lowers it). */
void ten_log_set_level(ten_log_level_t level);
ten_log_level_t ten_log_get_level(void);
void ten_log_set_sink(ten_log_sink_fn fn, void *ctx);
const char *ten_log_level_name(ten_log_level_t level);
/* Parses "debug"/"info"/"warn"/"error"; returns -1 if unknown. */
int ten_log_level_parse(const char *name);

void ten_log(ten_log_level_t level, const char *fmt, ...) TEN_PRINTF(2, 3);

#define ten_debug(...) ten_log(TEN_LOG_DEBUG, __VA_ARGS__)
#define ten_info(...)  ten_log(TEN_LOG_INFO, __VA_ARGS__)
#define ten_warn(...)  ten_log(TEN_LOG_WARN, __VA_ARGS__)
#define ten_error(...) ten_log(TEN_LOG_ERROR, __VA_ARGS__)

#endif
