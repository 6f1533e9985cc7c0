/* lines.h: turning an instance's output into log lines. Pure functions, no
 * I/O: a splitter that cuts a byte stream into lines (over-long lines are
 * split at max_line, never dropped; a partial last line is flushed at EOF),
 * and level detection (stdout is info and stderr error, unless the line
 * says otherwise). */
#ifndef TEN_OBS_LINES_H
#define TEN_OBS_LINES_H

#include "util/buf.h"

typedef enum ten_log_level_id {
  TEN_LEVEL_DEBUG = 0,
  TEN_LEVEL_INFO = 1,
  TEN_LEVEL_WARN = 2,
  TEN_LEVEL_ERROR = 3,
} ten_log_level_id_t;

typedef enum ten_log_stream {
  TEN_STREAM_STDOUT = 1,
  TEN_STREAM_STDERR = 2,
} ten_log_stream_t;

const char *ten_level_name(int level);
/* "debug", "info", "warn"/"warning", "error": the level, or -1. */
int ten_level_parse(const char *name, size_t len);
const char *ten_stream_name(int stream);

/* A leading DEBUG/INFO/WARN/WARNING/ERROR word (any case, optionally in [ ]
 * or followed by ':'), or a JSON object's "level" field, decides; otherwise
 * the stream's default. */
int ten_log_detect_level(const char *line, size_t len, ten_log_stream_t stream);

typedef void (*ten_line_fn)(void *ctx, const char *line, size_t len);

typedef struct ten_line_splitter {
  ten_buf_t partial; /* bytes after the last newline */
  size_t max_line;
  bool cut; /* the last piece was cut at max_line */
  /* Times partial was emptied. While it stays the same, partial only grows:
   * a copy of it elsewhere (the log spool) can be kept by appending. */
  uint64_t resets;
} ten_line_splitter_t;

void ten_line_splitter_init(ten_line_splitter_t *s, size_t max_line);
/* Calls fn for every complete line in data (without the '\n'; a trailing
 * '\r' is dropped too), and for every max_line piece of a longer one. */
void ten_line_splitter_feed(ten_line_splitter_t *s, const char *data, size_t len, ten_line_fn fn,
                            void *ctx);
/* End of stream: the partial last line, if any. */
void ten_line_splitter_flush(ten_line_splitter_t *s, ten_line_fn fn, void *ctx);
void ten_line_splitter_free(ten_line_splitter_t *s);

#endif
