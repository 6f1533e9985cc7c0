/* iobuf.h: reference-counted I/O buffers, recycled through a free list.
 *
 * Every byte the proxy reads lands in an iobuf and is written onward from
 * the same memory: a write holds a reference until its callback runs, so
 * bodies are never copied and steady traffic does not call malloc. The free
 * list is bounded so a burst does not pin memory forever. The free list is
 * per thread, so each loop thread has its own.
 */
#ifndef TEN_HTTP_IOBUF_H
#define TEN_HTTP_IOBUF_H

#include <stddef.h>
#include <stdint.h>

#define TEN_IOBUF_SIZE (64 * 1024)

typedef struct ten_iobuf {
  uint32_t refs;
  uint32_t size; /* bytes of data[] */
  struct ten_iobuf *_next_free;
  char data[];
} ten_iobuf_t;

/* A buffer of TEN_IOBUF_SIZE bytes with one reference. Aborts on OOM. */
ten_iobuf_t *ten_iobuf_get(void);
static inline ten_iobuf_t *ten_iobuf_ref(ten_iobuf_t *b) {
  b->refs++;
  return b;
}
void ten_iobuf_unref(ten_iobuf_t *b);
/* Buffers alive (held anywhere) and buffers idle in the free list. */
size_t ten_iobuf_live(void);
size_t ten_iobuf_idle(void);
/* Frees the free list (at exit, so leak checkers see nothing). */
void ten_iobuf_trim(void);

#endif
