#include "http/iobuf.h"

#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "util/common.h"

/* At most 2 MB of idle small buffers and 4 MB of idle large ones. */
#define MAX_IDLE_SMALL 256
#define MAX_IDLE_LARGE 64

typedef struct free_list {
  ten_iobuf_t *head;
  size_t count;
} free_list_t;

static _Thread_local free_list_t small_free, large_free;
static _Thread_local size_t live_count;

static ten_iobuf_t *alloc_large(void) {
  void *p = mmap(NULL, sizeof(ten_iobuf_t) + TEN_IOBUF_SIZE, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) {
    fprintf(stderr, "ten: out of memory mapping an I/O buffer\n");
    abort();
  }
  return p;
}

ten_iobuf_t *ten_iobuf_get_sized(bool large) {
  free_list_t *fl = large ? &large_free : &small_free;
  ten_iobuf_t *b = fl->head;
  if (b) {
    fl->head = b->_next_free;
    fl->count--;
  } else if (large) {
    b = alloc_large();
    b->size = TEN_IOBUF_SIZE;
  } else {
    b = ten_xmalloc(sizeof *b + TEN_IOBUF_SMALL);
    b->size = TEN_IOBUF_SMALL;
  }
  b->refs = 1;
  b->_next_free = NULL;
  live_count++;
  return b;
}

ten_iobuf_t *ten_iobuf_get(void) { return ten_iobuf_get_sized(true); }

static void release(ten_iobuf_t *b) {
  if (b->size == TEN_IOBUF_SIZE) munmap(b, sizeof *b + TEN_IOBUF_SIZE);
  else free(b);
}

void ten_iobuf_unref(ten_iobuf_t *b) {
  if (!b || --b->refs > 0) return;
  live_count--;
  bool large = b->size == TEN_IOBUF_SIZE;
  free_list_t *fl = large ? &large_free : &small_free;
  if (fl->count < (large ? MAX_IDLE_LARGE : MAX_IDLE_SMALL)) {
    b->_next_free = fl->head;
    fl->head = b;
    fl->count++;
  } else {
    release(b);
  }
}

size_t ten_iobuf_live(void) { return live_count; }
size_t ten_iobuf_idle(void) { return small_free.count + large_free.count; }

void ten_iobuf_trim(void) {
  free_list_t *lists[] = {&small_free, &large_free};
  for (int i = 0; i < 2; i++) {
    while (lists[i]->head) {
      ten_iobuf_t *b = lists[i]->head;
      lists[i]->head = b->_next_free;
      release(b);
    }
    lists[i]->count = 0;
  }
}
