/* strict.h: the framing rules ten enforces beyond llhttp 8.1.
 *
 * Debian's llhttp 8.1 accepts some forms that nginx refuses and that other
 * parsers read differently (the stuff request smuggling is made of): a
 * header line folded onto the next (obs-fold), a CR not followed by LF
 * (`\r\n\rX` ends the head for llhttp), an empty field name, chunk data not
 * followed by CRLF (`3\r\nabcXX`), and the same in trailers. Its lenient
 * flags cannot make it strict there, so these scanners run over exactly the
 * bytes llhttp consumed, in the same order, with their state kept across
 * reads (a fold or a CR may be split from what follows by a TCP segment).
 * Each returns NULL while the bytes are acceptable and a fixed, human
 * message naming the rule once they are not. Pure and allocation-free.
 */
#ifndef TEN_HTTP_STRICT_H
#define TEN_HTTP_STRICT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* A message head: request or status line, field lines, the empty line. */
typedef struct ten_strict_head {
  uint8_t state;
  bool done; /* the empty line that ends the head has been seen */
} ten_strict_head_t;

void ten_strict_head_init(ten_strict_head_t *s);
/* Scans head bytes. Leading empty lines before the first line are allowed
 * (RFC 9112 2.2, as llhttp does). Bytes after the end of the head are an
 * error: the caller passes only what llhttp consumed for the head. */
const char *ten_strict_head_scan(ten_strict_head_t *s, const char *p, size_t n);

/* A chunked body: chunk-size [ext] CRLF data CRLF ... 0 [ext] CRLF
 * trailer-lines CRLF. */
typedef struct ten_strict_chunked {
  uint8_t state;
  uint8_t size_digits;
  bool done; /* the CRLF after the trailer section has been seen */
  uint64_t remaining; /* data bytes left in the current chunk */
} ten_strict_chunked_t;

void ten_strict_chunked_init(ten_strict_chunked_t *s);
const char *ten_strict_chunked_scan(ten_strict_chunked_t *s, const char *p, size_t n);

#endif
