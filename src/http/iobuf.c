#include "http/iobuf.h"

#include "util/common.h"

#include <stdlib.h>

/* 4 MB of idle buffers at most: enough for bursts of large transfers. */
#define MAX_IDLE 64

static _Thread_local ten_iobuf_t *free_list; /* per loop thread */
static _Thread_local size_t idle_count;
static _Thread_local size_t live_count;

ten_iobuf_t *ten_iobuf_get(void) {
  ten_iobuf_t *b = free_list;
  if (b) {
    free_list = b->_next_free;
    idle_count--;
  } else {
    b = ten_xmalloc(sizeof *b + TEN_IOBUF_SIZE);
    b->size = TEN_IOBUF_SIZE;
  }
  b->refs = 1;
  b->_next_free = NULL;
  live_count++;
  return b;
}

void ten_iobuf_unref(ten_iobuf_t *b) {
  if (!b || --b->refs > 0) return;
  live_count--;
  if (idle_count < MAX_IDLE) {
    b->_next_free = free_list;
    free_list = b;
    idle_count++;
  } else {
    free(b);
  }
}

size_t ten_iobuf_live(void) { return live_count; }
size_t ten_iobuf_idle(void) { return idle_count; }

void ten_iobuf_trim(void) {
  while (free_list) {
    ten_iobuf_t *b = free_list;
    free_list = b->_next_free;
    free(b);
  }
  idle_count = 0;
}
