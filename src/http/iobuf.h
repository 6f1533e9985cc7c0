/* iobuf.h: reference-counted I/O buffers, recycled through free lists.
 *
 * Every byte the proxy reads lands in an iobuf and is written onward from
 * the same memory: a write holds a reference until its callback runs, so
 * bodies are never copied and steady traffic does not call malloc. Two
 * sizes: small ones for requests and small responses (most traffic), large
 * ones once a stream shows it carries bulk data. Large buffers are mapped
 * directly, so a burst that needed many of them gives the memory back to
 * the system instead of fragmenting the heap. The free lists are bounded
 * and per thread (each loop thread has its own).
 */
#ifndef TEN_HTTP_IOBUF_H
#define TEN_HTTP_IOBUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TEN_IOBUF_SMALL (8 * 1024)
/* Large: the mapping (header + data) is exactly 64 KiB, 16 pages, not 17. */
#define TEN_IOBUF_MAP   (64 * 1024)
#define TEN_IOBUF_SIZE  (TEN_IOBUF_MAP - 16)

typedef struct ten_iobuf {
  uint32_t refs;
  uint32_t size; /* bytes of data[] */
  struct ten_iobuf *_next_free;
  char data[];
} ten_iobuf_t;
_Static_assert(sizeof(ten_iobuf_t) == 16, "TEN_IOBUF_SIZE assumes a 16-byte header");

/* A large buffer with one reference. Aborts on OOM. */
ten_iobuf_t *ten_iobuf_get(void);
/* A small one, or a large one when `large`. */
ten_iobuf_t *ten_iobuf_get_sized(bool large);
static inline ten_iobuf_t *ten_iobuf_ref(ten_iobuf_t *b) {
  b->refs++;
  return b;
}
void ten_iobuf_unref(ten_iobuf_t *b);
/* Buffers alive (held anywhere) and buffers idle in the free lists. */
size_t ten_iobuf_live(void);
size_t ten_iobuf_idle(void);
/* Frees the free lists (at exit, so leak checkers see nothing). */
void ten_iobuf_trim(void);

/* Read-size hint for a stream: small until a read fills a small buffer. */
static inline bool ten_iobuf_want_large(size_t last_read) { return last_read >= TEN_IOBUF_SMALL; }

#endif
