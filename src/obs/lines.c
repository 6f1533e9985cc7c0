#include "obs/lines.h"

#include <string.h>
#include <strings.h>

#include "util/json.h"

static const char *const level_names[] = {"debug", "info", "warn", "error"};

const char *ten_level_name(int level) {
  return level >= 0 && level <= TEN_LEVEL_ERROR ? level_names[level] : "info";
}

int ten_level_parse(const char *name, size_t len) {
  if (len == 5 && !strncasecmp(name, "debug", 5)) return TEN_LEVEL_DEBUG;
  if (len == 4 && !strncasecmp(name, "info", 4)) return TEN_LEVEL_INFO;
  if ((len == 4 && !strncasecmp(name, "warn", 4)) || (len == 7 && !strncasecmp(name, "warning", 7)))
    return TEN_LEVEL_WARN;
  if ((len == 5 && !strncasecmp(name, "error", 5)) || (len == 3 && !strncasecmp(name, "err", 3)))
    return TEN_LEVEL_ERROR;
  return -1;
}

const char *ten_stream_name(int stream) { return stream == TEN_STREAM_STDERR ? "stderr" : "stdout"; }

static bool is_letter(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z'); }

/* {"level":"warn", ...}: found without building a tree when the line looks
 * like a flat object; a full parse otherwise. */
static int json_level(const char *line, size_t len) {
  ten_json_t *doc;
  if (ten_json_parse(line, len, &doc, NULL) != 0) return -1;
  const char *v = ten_json_get_str(doc, "level");
  if (!v) v = ten_json_get_str(doc, "severity");
  int level = v ? ten_level_parse(v, strlen(v)) : -1;
  ten_json_free(doc);
  return level;
}

int ten_log_detect_level(const char *line, size_t len, ten_log_stream_t stream) {
  int fallback = stream == TEN_STREAM_STDERR ? TEN_LEVEL_ERROR : TEN_LEVEL_INFO;
  size_t i = 0;
  while (i < len && (line[i] == ' ' || line[i] == '\t')) i++;
  if (i < len && line[i] == '{') {
    int level = json_level(line + i, len - i);
    return level >= 0 ? level : fallback;
  }
  if (i < len && line[i] == '[') i++;
  size_t start = i;
  while (i < len && is_letter(line[i]) && i - start < 8) i++;
  if (i == start || (i < len && is_letter(line[i]))) return fallback;
  /* The word must end the line or be followed by a separator. */
  if (i < len && line[i] != ' ' && line[i] != ':' && line[i] != ']' && line[i] != '\t' &&
      line[i] != '|' && line[i] != '-')
    return fallback;
  int level = ten_level_parse(line + start, i - start);
  return level >= 0 ? level : fallback;
}

void ten_line_splitter_init(ten_line_splitter_t *s, size_t max_line) {
  s->partial = (ten_buf_t)TEN_BUF_INIT;
  s->max_line = max_line ? max_line : 16384;
  s->cut = false;
  s->resets = 0;
}

/* A piece of a line longer than max_line. It never ends in '\r': that byte
 * may be half of a CRLF, so it starts the next piece instead. Returns how
 * many bytes the piece took. */
static size_t emit_cut(ten_line_splitter_t *s, const char *p, size_t n, ten_line_fn fn,
                       void *ctx) {
  if (n > 1 && p[n - 1] == '\r') n--;
  fn(ctx, p, n);
  s->cut = true;
  return n;
}

/* The end of a line: CRLF counts as a newline. A line that was cut at
 * max_line and whose newline comes right after the cut must not produce an
 * extra empty line. */
static void end_line(ten_line_splitter_t *s, const char *line, size_t len, ten_line_fn fn,
                     void *ctx) {
  if (len && line[len - 1] == '\r') len--;
  bool after_cut = s->cut;
  s->cut = false;
  if (len == 0 && after_cut) return;
  fn(ctx, line, len);
}

void ten_line_splitter_feed(ten_line_splitter_t *s, const char *data, size_t len, ten_line_fn fn,
                            void *ctx) {
  while (len > 0) {
    const char *nl = memchr(data, '\n', len);
    size_t take = nl ? (size_t)(nl - data) : len;
    if (s->partial.len == 0) {
      /* The common case: whole lines straight from the read buffer. */
      while (take >= s->max_line) {
        size_t used = emit_cut(s, data, s->max_line, fn, ctx);
        data += used;
        len -= used;
        take -= used;
      }
      if (nl) {
        end_line(s, data, take, fn, ctx);
        data += take + 1;
        len -= take + 1;
        continue;
      }
      ten_buf_append(&s->partial, data, take);
      return;
    }
    size_t room = s->max_line - s->partial.len; /* at least 1 */
    if (take >= room) {
      ten_buf_append(&s->partial, data, room);
      size_t used = emit_cut(s, s->partial.data, s->partial.len, fn, ctx);
      size_t kept = s->partial.len - used; /* a '\r' that came from data */
      ten_buf_reset(&s->partial);
      s->resets++;
      data += room - kept;
      len -= room - kept;
      continue;
    }
    ten_buf_append(&s->partial, data, take);
    if (!nl) return;
    end_line(s, s->partial.data, s->partial.len, fn, ctx);
    ten_buf_reset(&s->partial);
    s->resets++;
    data += take + 1;
    len -= take + 1;
  }
}

void ten_line_splitter_flush(ten_line_splitter_t *s, ten_line_fn fn, void *ctx) {
  if (s->partial.len) {
    end_line(s, s->partial.data, s->partial.len, fn, ctx);
    ten_buf_reset(&s->partial);
    s->resets++;
  }
  s->cut = false;
}

void ten_line_splitter_free(ten_line_splitter_t *s) { ten_buf_free(&s->partial); }
