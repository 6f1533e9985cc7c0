/* buf.h: a growable byte buffer.
 *
 * Growth aborts on out-of-memory (ten_xrealloc): use it for text we build
 * ourselves (JSON, headers), not for sizes a peer controls without a limit.
 * The content is always NUL-terminated so it can be printed.
 */
#ifndef TEN_UTIL_BUF_H
#define TEN_UTIL_BUF_H

#include "util/common.h"

typedef struct ten_buf {
  char *data;
  size_t len;
  size_t cap;
} ten_buf_t;

#define TEN_BUF_INIT                                                                               \
  { NULL, 0, 0 }

void ten_buf_reserve(ten_buf_t *b, size_t extra);
void ten_buf_append(ten_buf_t *b, const void *data, size_t len);
void ten_buf_puts(ten_buf_t *b, const char *s);
void ten_buf_putc(ten_buf_t *b, char c);
void ten_buf_printf(ten_buf_t *b, const char *fmt, ...) TEN_PRINTF(2, 3);
void ten_buf_vprintf(ten_buf_t *b, const char *fmt, va_list ap) TEN_PRINTF(2, 0);
/* Forget the content, keep the memory. */
void ten_buf_reset(ten_buf_t *b);
/* Remove the first n bytes. */
void ten_buf_consume(ten_buf_t *b, size_t n);
/* Hand the content to the caller (who frees it); the buffer becomes empty. */
char *ten_buf_steal(ten_buf_t *b);
void ten_buf_free(ten_buf_t *b);

#endif
