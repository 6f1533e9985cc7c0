/* strict.c: see strict.h. Two small state machines over raw bytes. */
#include "http/strict.h"

enum head_state {
  H_START,       /* before the first line: only empty lines */
  H_START_LF,    /* a CR of an empty line before the first line */
  H_LINE,        /* the request or status line */
  H_LINE_LF,     /* its CR */
  H_FIELD_START, /* the first byte of a field line, or the CR of the end */
  H_FIELD,       /* inside a field line */
  H_FIELD_LF,    /* its CR */
  H_END_LF,      /* the CR of the empty line */
  H_DONE,
};

static const char BARE_CR[] = "a CR not followed by LF in the head";
static const char BARE_LF[] = "a line ends with LF alone (CRLF is required)";
static const char FOLD[] = "a header line starts with whitespace (obsolete line folding, RFC 9112 5.2)";
static const char EMPTY_NAME[] = "a header field with an empty name";

void ten_strict_head_init(ten_strict_head_t *s) {
  s->state = H_START;
  s->done = false;
}

const char *ten_strict_head_scan(ten_strict_head_t *s, const char *p, size_t n) {
  for (size_t i = 0; i < n; i++) {
    char ch = p[i];
    switch ((enum head_state)s->state) {
    case H_START:
      if (ch == '\r') s->state = H_START_LF;
      else if (ch == '\n') return BARE_LF;
      else s->state = H_LINE;
      break;
    case H_START_LF:
      if (ch != '\n') return BARE_CR;
      s->state = H_START;
      break;
    case H_LINE:
      if (ch == '\r') s->state = H_LINE_LF;
      else if (ch == '\n') return BARE_LF;
      break;
    case H_LINE_LF:
    case H_FIELD_LF:
      if (ch != '\n') return BARE_CR;
      s->state = H_FIELD_START;
      break;
    case H_FIELD_START:
      if (ch == '\r') s->state = H_END_LF;
      else if (ch == '\n') return BARE_LF;
      else if (ch == ' ' || ch == '\t') return FOLD;
      else if (ch == ':') return EMPTY_NAME;
      else s->state = H_FIELD;
      break;
    case H_FIELD:
      if (ch == '\r') s->state = H_FIELD_LF;
      else if (ch == '\n') return BARE_LF;
      break;
    case H_END_LF:
      if (ch != '\n') return BARE_CR;
      s->state = H_DONE;
      s->done = true;
      break;
    case H_DONE: return "bytes after the end of the head";
    }
  }
  return NULL;
}

enum chunked_state {
  C_SIZE,          /* hex digits of a chunk size */
  C_EXT,           /* a chunk extension, up to CR */
  C_SIZE_LF,       /* the CR after the size line */
  C_DATA,          /* chunk data */
  C_DATA_CR,       /* the CR after the data */
  C_DATA_LF,       /* its LF */
  C_TRAILER_START, /* the first byte of a trailer line, or the CR of the end */
  C_TRAILER,       /* inside a trailer line */
  C_TRAILER_LF,    /* its CR */
  C_END_LF,        /* the CR of the final empty line */
  C_DONE,
};

#define MAX_SIZE_DIGITS 16

void ten_strict_chunked_init(ten_strict_chunked_t *s) {
  s->state = C_SIZE;
  s->size_digits = 0;
  s->done = false;
  s->remaining = 0;
}

static int hex_value(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

const char *ten_strict_chunked_scan(ten_strict_chunked_t *s, const char *p, size_t n) {
  size_t i = 0;
  while (i < n) {
    char ch = p[i];
    switch ((enum chunked_state)s->state) {
    case C_SIZE: {
      int v = hex_value(ch);
      if (v >= 0) {
        if (++s->size_digits > MAX_SIZE_DIGITS) return "a chunk size longer than 16 hex digits";
        s->remaining = s->remaining << 4 | (uint64_t)v;
      } else if (s->size_digits == 0) {
        return "a chunk without a size";
      } else if (ch == ';') {
        s->state = C_EXT;
      } else if (ch == '\r') {
        s->state = C_SIZE_LF;
      } else {
        return "an invalid character after a chunk size";
      }
      break;
    }
    case C_EXT:
      if (ch == '\r') s->state = C_SIZE_LF;
      else if (ch == '\n') return BARE_LF;
      else if ((unsigned char)ch < 0x20 && ch != '\t') return "a control character in a chunk extension";
      else if (ch == 0x7f) return "a control character in a chunk extension";
      break;
    case C_SIZE_LF:
      if (ch != '\n') return "a chunk size line not ended by CRLF";
      s->state = s->remaining ? C_DATA : C_TRAILER_START;
      break;
    case C_DATA: {
      size_t take = n - i;
      if ((uint64_t)take > s->remaining) take = (size_t)s->remaining;
      s->remaining -= take;
      i += take;
      if (s->remaining == 0) s->state = C_DATA_CR;
      continue;
    }
    case C_DATA_CR:
      if (ch != '\r') return "chunk data not followed by CRLF";
      s->state = C_DATA_LF;
      break;
    case C_DATA_LF:
      if (ch != '\n') return "chunk data not followed by CRLF";
      s->state = C_SIZE;
      s->size_digits = 0;
      break;
    case C_TRAILER_START:
      if (ch == '\r') s->state = C_END_LF;
      else if (ch == '\n') return BARE_LF;
      else if (ch == ' ' || ch == '\t') return FOLD;
      else if (ch == ':') return EMPTY_NAME;
      else s->state = C_TRAILER;
      break;
    case C_TRAILER:
      if (ch == '\r') s->state = C_TRAILER_LF;
      else if (ch == '\n') return BARE_LF;
      break;
    case C_TRAILER_LF:
      if (ch != '\n') return "a CR not followed by LF in the trailers";
      s->state = C_TRAILER_START;
      break;
    case C_END_LF:
      if (ch != '\n') return "a CR not followed by LF at the end of the body";
      s->state = C_DONE;
      s->done = true;
      break;
    case C_DONE: return "bytes after the end of a chunked body";
    }
    i++;
  }
  return NULL;
}
