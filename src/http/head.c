/* head.c: message-head storage, hop-by-hop rules and the shared write path. */
#include "http/conn.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

void ten__head_reset(ten__head_t *h) {
  ten_buf_reset(&h->arena);
  /* A head that once needed a lot of memory should not pin it while the
   * connection idles: 1000 idle keep-alive connections must stay cheap. */
  if (h->arena.cap > 8192) ten_buf_free(&h->arena);
  h->target_off = h->target_len = 0;
  h->count = 0;
  h->last = 0;
  h->too_large = h->too_many = h->target_too_large = false;
}

int ten__head_append(ten__head_t *h, int kind, const char *at, size_t len) {
  uint32_t limit = h->limit ? h->limit : TEN_HTTP_MAX_HEAD;
  if (h->arena.len + len > limit) {
    h->too_large = true;
    if (kind == 0) h->target_too_large = true;
    return -1;
  }
  uint32_t off = (uint32_t)h->arena.len;
  ten_buf_append(&h->arena, at, len);
  if (kind == 0) {
    if (h->target_len == 0) h->target_off = off;
    h->target_len += (uint32_t)len;
  } else if (kind == 1) {
    if (h->last != 1) {
      if (h->count == TEN_HTTP_MAX_HEADERS) {
        h->too_many = true;
        return -1;
      }
      ten__header_t *hd = &h->headers[h->count++];
      hd->name_off = off;
      hd->name_len = 0;
      hd->value_off = off;
      hd->value_len = 0;
    }
    h->headers[h->count - 1].name_len += (uint32_t)len;
  } else {
    ten__header_t *hd = &h->headers[h->count - 1];
    if (h->last != 2) hd->value_off = off;
    hd->value_len += (uint32_t)len;
  }
  h->last = kind;
  return 0;
}

const char *ten__head_get(const ten__head_t *h, const char *name, size_t *len) {
  size_t n = strlen(name);
  for (unsigned i = 0; i < h->count; i++) {
    const ten__header_t *hd = &h->headers[i];
    if (hd->name_len == n && strncasecmp(h->arena.data + hd->name_off, name, n) == 0) {
      if (len) *len = hd->value_len;
      return h->arena.data + hd->value_off;
    }
  }
  return NULL;
}

/* Does the comma-separated list `list` contain token `tok` (case-insensitive)? */
static bool list_has(const char *list, size_t list_len, const char *tok, size_t tok_len) {
  size_t i = 0;
  while (i < list_len) {
    while (i < list_len && (list[i] == ' ' || list[i] == '\t' || list[i] == ',')) i++;
    size_t start = i;
    while (i < list_len && list[i] != ',') i++;
    size_t end = i;
    while (end > start && (list[end - 1] == ' ' || list[end - 1] == '\t')) end--;
    if (end - start == tok_len && strncasecmp(list + start, tok, tok_len) == 0) return true;
  }
  return false;
}

bool ten__is_hop_by_hop(const ten__head_t *h, const char *name, size_t len) {
  /* Not Transfer-Encoding: a response body is forwarded with its framing
   * (checked by strict.h); a request is re-framed by forward.c anyway.
   * Not Trailer: the response trailers it announces are forwarded too. */
  static const char *const fixed[] = {
      "connection", "keep-alive",         "proxy-connection",   "te",
      "upgrade",    "proxy-authenticate", "proxy-authorization"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(fixed); i++)
    if (ten_strieq(name, len, fixed[i])) return true;
  /* Connection: close, X-Foo  -> X-Foo is hop-by-hop too. */
  for (unsigned i = 0; i < h->count; i++) {
    const ten__header_t *hd = &h->headers[i];
    if (ten_strieq(h->arena.data + hd->name_off, hd->name_len, "connection") &&
        list_has(h->arena.data + hd->value_off, hd->value_len, name, len))
      return true;
  }
  return false;
}

/* ------------------------------------------------------------ writes */

typedef struct wreq {
  uv_write_t req;
  ten_iobuf_t *bufs[TEN_WBATCH_MAX];
  unsigned count;
  ten__write_cb cb;
  void *owner;
  size_t len;
  struct wreq *next_free;
} wreq_t;

static _Thread_local wreq_t *free_wreqs;
static _Thread_local size_t free_wreq_count;

static wreq_t *wreq_get(void) {
  wreq_t *w = free_wreqs;
  if (w) {
    free_wreqs = w->next_free;
    free_wreq_count--;
  } else {
    w = ten_xmalloc(sizeof *w);
  }
  return w;
}

static void wreq_put(wreq_t *w) {
  for (unsigned i = 0; i < w->count; i++) ten_iobuf_unref(w->bufs[i]);
  if (free_wreq_count < 1024) {
    w->next_free = free_wreqs;
    free_wreqs = w;
    free_wreq_count++;
  } else {
    free(w);
  }
}

static void on_write(uv_write_t *req, int status) {
  wreq_t *w = ten_container_of(req, wreq_t, req);
  ten__write_cb cb = w->cb;
  void *owner = w->owner;
  size_t len = w->len;
  wreq_put(w);
  cb(owner, status, len);
}

int ten__write(uv_stream_t *stream, ten_iobuf_t *buf, const char *data, size_t len,
               ten__write_cb cb, void *owner) {
  ten__wbatch_t one = {.count = 1, .bytes = len};
  one.bufs[0] = ten_iobuf_ref(buf);
  one.iov[0] = uv_buf_init((char *)data, (unsigned)len);
  return ten__wbatch_flush(&one, stream, cb, owner);
}

bool ten__wbatch_add(ten__wbatch_t *b, ten_iobuf_t *buf, const char *data, size_t len) {
  /* Contiguous with the previous piece of the same buffer: extend it. */
  if (b->count && b->bufs[b->count - 1] == buf &&
      b->iov[b->count - 1].base + b->iov[b->count - 1].len == data) {
    b->iov[b->count - 1].len += len;
    b->bytes += len;
    return true;
  }
  if (b->count == TEN_WBATCH_MAX) return false;
  b->bufs[b->count] = ten_iobuf_ref(buf);
  b->iov[b->count] = uv_buf_init((char *)data, (unsigned)len);
  b->count++;
  b->bytes += len;
  return true;
}

int ten__wbatch_flush(ten__wbatch_t *b, uv_stream_t *stream, ten__write_cb cb, void *owner) {
  if (!b->count) return 0;
  /* Most writes fit in the socket buffer. Written at once, they need no
   * write request, and libuv does not re-arm the fd in epoll after each
   * completed uv_write (one epoll_ctl per write otherwise). */
  int done = uv_try_write(stream, b->iov, b->count);
  if (done < 0 && done != UV_EAGAIN) {
    ten__wbatch_drop(b);
    return done;
  }
  if (done > 0 && (size_t)done == b->bytes) {
    ten__wbatch_drop(b);
    return 1;
  }
  unsigned first = 0;
  size_t skip = done > 0 ? (size_t)done : 0;
  while (skip && skip >= b->iov[first].len) skip -= b->iov[first++].len;
  b->iov[first].base += skip;
  b->iov[first].len -= skip;

  wreq_t *w = wreq_get();
  memcpy(w->bufs, b->bufs, b->count * sizeof *b->bufs);
  w->count = b->count;
  w->cb = cb;
  w->owner = owner;
  w->len = b->bytes;
  int rc = uv_write(&w->req, stream, b->iov + first, b->count - first, on_write);
  b->count = 0;
  b->bytes = 0;
  if (rc < 0) wreq_put(w);
  return rc;
}

void ten__wbatch_drop(ten__wbatch_t *b) {
  for (unsigned i = 0; i < b->count; i++) ten_iobuf_unref(b->bufs[i]);
  b->count = 0;
  b->bytes = 0;
}

void ten__write_trim(void) {
  while (free_wreqs) {
    wreq_t *w = free_wreqs;
    free_wreqs = w->next_free;
    free(w);
  }
  free_wreq_count = 0;
}
