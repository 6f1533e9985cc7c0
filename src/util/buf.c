#include "util/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void ten_buf_reserve(ten_buf_t *b, size_t extra) {
  size_t need = b->len + extra + 1;
  if (need <= b->cap) return;
  size_t cap = b->cap ? b->cap : 64;
  while (cap < need) cap *= 2;
  b->data = ten_xrealloc(b->data, cap);
  b->cap = cap;
  b->data[b->len] = '\0'; /* a fresh buffer is an empty string, not garbage */
}

void ten_buf_append(ten_buf_t *b, const void *data, size_t len) {
  ten_buf_reserve(b, len);
  if (len) memcpy(b->data + b->len, data, len);
  b->len += len;
  b->data[b->len] = '\0';
}

void ten_buf_puts(ten_buf_t *b, const char *s) { ten_buf_append(b, s, strlen(s)); }

void ten_buf_putc(ten_buf_t *b, char c) { ten_buf_append(b, &c, 1); }

void ten_buf_vprintf(ten_buf_t *b, const char *fmt, va_list ap) {
  va_list copy;
  va_copy(copy, ap);
  ten_buf_reserve(b, 64);
  int n = vsnprintf(b->data + b->len, b->cap - b->len, fmt, copy);
  va_end(copy);
  if (n < 0) return;
  if ((size_t)n >= b->cap - b->len) {
    ten_buf_reserve(b, (size_t)n);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
  }
  b->len += (size_t)n;
}

void ten_buf_printf(ten_buf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  ten_buf_vprintf(b, fmt, ap);
  va_end(ap);
}

void ten_buf_reset(ten_buf_t *b) {
  b->len = 0;
  if (b->data) b->data[0] = '\0';
}

void ten_buf_consume(ten_buf_t *b, size_t n) {
  if (n >= b->len) {
    ten_buf_reset(b);
    return;
  }
  memmove(b->data, b->data + n, b->len - n);
  b->len -= n;
  b->data[b->len] = '\0';
}

char *ten_buf_steal(ten_buf_t *b) {
  char *p = b->data ? b->data : ten_xstrdup("");
  b->data = NULL;
  b->len = b->cap = 0;
  return p;
}

void ten_buf_free(ten_buf_t *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}
