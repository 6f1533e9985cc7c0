/* spool.c: the log spool's record format, its segment files, and the
 * reading back of what a crashed run left. */
#include "obs/spool.h"

#include "obs/lines.h"
#include "util/log.h"
#include "util/map.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

#define READ_CHUNK (1u << 20)
#define SEQ_DIGITS 20

/* ------------------------------------------------------------ records */

static void put_rec(ten_spool_buf_t *b, const ten_spool_rec_t *rec, const char *service,
                    const char *instance, const char *body) {
  ten_buf_reserve(&b->data, sizeof *rec + rec->service_len + rec->instance_len + rec->len);
  ten_buf_append(&b->data, rec, sizeof *rec);
  ten_buf_append(&b->data, service, rec->service_len);
  ten_buf_append(&b->data, instance, rec->instance_len);
  ten_buf_append(&b->data, body, rec->len);
}

void ten_spool_buf_line(ten_spool_buf_t *b, uint64_t key, int64_t id, int64_t ts_ms, int level,
                        int stream, const char *service, const char *instance, const char *message,
                        size_t len) {
  ten_spool_rec_t rec = {.kind = TEN_SPOOL_LINE,
                         .level = (uint8_t)level,
                         .stream = (uint8_t)stream,
                         .len = (uint32_t)len,
                         .key = key,
                         .id = id,
                         .ts = ts_ms,
                         .service_len = (uint16_t)strlen(service),
                         .instance_len = (uint16_t)strlen(instance),
                         .magic = TEN_SPOOL_MAGIC};
  put_rec(b, &rec, service, instance, message);
  b->lines++;
  if (id > b->last_id) b->last_id = id;
}

void ten_spool_buf_partial(ten_spool_buf_t *b, uint64_t key, size_t keep, int64_t ts_ms, int stream,
                           const char *service, const char *instance, const char *bytes,
                           size_t len) {
  ten_spool_rec_t rec = {.kind = TEN_SPOOL_PARTIAL,
                         .stream = (uint8_t)stream,
                         .len = (uint32_t)len,
                         .key = key,
                         .id = (int64_t)keep,
                         .ts = ts_ms,
                         .service_len = (uint16_t)strlen(service),
                         .instance_len = (uint16_t)strlen(instance),
                         .magic = TEN_SPOOL_MAGIC};
  put_rec(b, &rec, service, instance, bytes);
}

void ten_spool_buf_reset(ten_spool_buf_t *b) {
  ten_buf_reset(&b->data);
  b->lines = 0;
  b->last_id = 0;
  b->written = 0;
}

void ten_spool_buf_free(ten_spool_buf_t *b) {
  ten_buf_free(&b->data);
  *b = (ten_spool_buf_t)TEN_SPOOL_BUF_INIT;
}

int ten_spool_next(const char *data, size_t len, size_t *pos, ten_spool_view_t *out) {
  size_t at = *pos;
  if (len - at < sizeof out->rec) return 0;
  memcpy(&out->rec, data + at, sizeof out->rec);
  const ten_spool_rec_t *r = &out->rec;
  if (r->magic != TEN_SPOOL_MAGIC || (r->kind != TEN_SPOOL_LINE && r->kind != TEN_SPOOL_PARTIAL))
    return -1;
  size_t total = sizeof *r + (size_t)r->service_len + r->instance_len + r->len;
  if (len - at < total) return 0;
  out->service = data + at + sizeof *r;
  out->instance = out->service + r->service_len;
  out->body = out->instance + r->instance_len;
  *pos = at + total;
  return 1;
}

/* ------------------------------------------------------------ segments */

static char *segment_path(const char *dir, uint64_t seq) {
  return ten_xasprintf("%s/%0*llu.spool", dir, SEQ_DIGITS, (unsigned long long)seq);
}

/* "00000000000000000042.spool" -> 42; 0 for any other name. */
static uint64_t segment_seq(const char *name) {
  uint64_t seq = 0;
  for (int i = 0; i < SEQ_DIGITS; i++) {
    if (name[i] < '0' || name[i] > '9') return 0;
    seq = seq * 10 + (uint64_t)(name[i] - '0');
  }
  return strcmp(name + SEQ_DIGITS, ".spool") == 0 ? seq : 0;
}

static int create_segment(const char *dir, uint64_t seq, int *fd) {
  char *path = segment_path(dir, seq);
  *fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0600);
  int rc = *fd < 0 ? -errno : 0;
  free(path);
  return rc;
}

int ten_spool_writer_open(ten_spool_writer_t *w, const char *dir, uint64_t seq, ten_err_t *err) {
  memset(w, 0, sizeof *w);
  w->fd = -1;
  int rc = create_segment(dir, seq, &w->fd);
  if (rc) {
    char *path = segment_path(dir, seq);
    ten_errf(err, rc, "cannot create the log spool %s: %s", path, uv_strerror(rc));
    free(path);
    return rc;
  }
  w->dir = ten_xstrdup(dir);
  w->seq = seq;
  return 0;
}

int ten_spool_append(ten_spool_writer_t *w, ten_spool_buf_t *b) {
  while (b->written < b->data.len) {
    ssize_t n = write(w->fd, b->data.data + b->written, b->data.len - b->written);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? -errno : UV_EIO;
    b->written += (size_t)n;
    w->size += (uint64_t)n;
  }
  return 0;
}

int ten_spool_roll(ten_spool_writer_t *w, const ten_spool_buf_t *first) {
  ten_spool_writer_t next = {.dir = w->dir, .seq = w->seq + 1, .fd = -1};
  int rc = create_segment(w->dir, next.seq, &next.fd);
  if (rc) return rc;
  ten_spool_buf_t copy = *first;
  copy.written = 0;
  if ((rc = ten_spool_append(&next, &copy))) {
    /* Half a start is no start: the next try begins from nothing. */
    char *path = segment_path(w->dir, next.seq);
    close(next.fd);
    unlink(path);
    free(path);
    return rc;
  }
  close(w->fd);
  *w = next;
  return 0;
}

void ten_spool_writer_close(ten_spool_writer_t *w) {
  if (w->fd >= 0) close(w->fd);
  w->fd = -1;
  free(w->dir);
  w->dir = NULL;
}

/* ------------------------------------------------------------ reading */

void ten_spool_reader_init(ten_spool_reader_t *r, const char *dir, uint64_t *old, size_t old_count,
                           uint64_t first_new) {
  memset(r, 0, sizeof *r);
  r->dir = ten_xstrdup(dir);
  r->old = old;
  r->old_count = old_count;
  r->first_new = first_new;
  r->fd = -1;
  if (old_count) {
    r->seq = old[0];
    r->old_next = 1;
  } else {
    r->seq = first_new;
  }
}

static void reader_close_segment(ten_spool_reader_t *r) {
  if (r->fd >= 0) close(r->fd);
  r->fd = -1;
  ten_buf_reset(&r->chunk);
  r->pos = 0;
  r->off = 0;
}

/* The segment is read to its end: on to the next. */
static void reader_finish_segment(ten_spool_reader_t *r) {
  if (r->finished_count == r->finished_cap) {
    r->finished_cap = r->finished_cap ? r->finished_cap * 2 : 4;
    r->finished = ten_xrealloc(r->finished, r->finished_cap * sizeof *r->finished);
  }
  r->finished[r->finished_count++] = r->seq;
  reader_close_segment(r);
  if (r->old_next < r->old_count)
    r->seq = r->old[r->old_next++];
  else if (r->seq < r->first_new)
    r->seq = r->first_new;
  else
    r->seq++;
}

/* Appends up to READ_CHUNK more bytes of the segment, never past limit.
 * Returns the count (0: nothing more now), or a negative error. */
static ssize_t reader_fill(ten_spool_reader_t *r, uint64_t limit) {
  /* Consumed bytes go first, so the chunk only ever holds one record's
   * worth more than a read. */
  if (r->pos) {
    r->off += r->pos;
    ten_buf_consume(&r->chunk, r->pos);
    r->pos = 0;
  }
  uint64_t at = r->off + r->chunk.len;
  if (at >= limit) return 0;
  if (r->fd < 0) {
    char *path = segment_path(r->dir, r->seq);
    r->fd = open(path, O_RDONLY | O_CLOEXEC);
    int rc = r->fd < 0 ? -errno : 0;
    if (rc) ten_log(TEN_LOG_ERROR, "logs: cannot read the spool %s: %s", path, uv_strerror(rc));
    free(path);
    if (rc) return rc;
  }
  size_t want = (size_t)TEN_MIN((uint64_t)READ_CHUNK, limit - at);
  ten_buf_reserve(&r->chunk, want);
  ssize_t n;
  do n = pread(r->fd, r->chunk.data + r->chunk.len, want, (off_t)at);
  while (n < 0 && errno == EINTR);
  if (n < 0) return -errno;
  r->chunk.len += (size_t)n;
  return n;
}

size_t ten_spool_read(ten_spool_reader_t *r, uint64_t end_seq, uint64_t end_off,
                      ten_spool_view_t *out, size_t max) {
  size_t n = 0;
  while (n < max) {
    size_t pos = r->pos;
    int rc = ten_spool_next(r->chunk.data, r->chunk.len, &pos, &out[n]);
    if (rc == 1) {
      r->consumed += pos - r->pos;
      r->pos = pos;
      n++;
      continue;
    }
    bool current = r->seq >= end_seq; /* the producer may still add to it */
    bool report = !(r->quiet_old && r->seq < r->first_new);
    if (rc < 0) {
      if (report) {
        char *path = segment_path(r->dir, r->seq);
        ten_log(TEN_LOG_ERROR, "logs: %s is damaged at byte %llu: the rest of it is skipped", path,
                (unsigned long long)(r->off + r->pos));
        free(path);
      }
      if (current) return n; /* cannot happen to bytes of this run; wait for its end */
      r->consumed += r->chunk.len - r->pos;
      reader_finish_segment(r);
      continue;
    }
    /* The next record is not all in memory: read more, but never while
     * views into the chunk are out (reading may move it). */
    if (n) break;
    ssize_t got = reader_fill(r, current ? end_off : UINT64_MAX);
    if (got > 0) continue;
    if (current) break;
    if (got < 0 && got != UV_ENOENT) break; /* try again at the next call */
    if (r->chunk.len > r->pos && report) {
      char *path = segment_path(r->dir, r->seq);
      ten_log(TEN_LOG_WARN,
              "logs: %s ends inside a record (ten died while writing it): %zu bytes skipped", path,
              r->chunk.len - r->pos);
      free(path);
    }
    r->consumed += r->chunk.len - r->pos;
    reader_finish_segment(r);
  }
  return n;
}

ten_spool_mark_t ten_spool_reader_mark(ten_spool_reader_t *r) {
  r->consumed = 0;
  r->finished_count = 0;
  return (ten_spool_mark_t){r->seq, r->off + r->pos, r->old_next};
}

void ten_spool_reader_rewind(ten_spool_reader_t *r, ten_spool_mark_t m) {
  reader_close_segment(r);
  r->seq = m.seq;
  r->off = m.off;
  r->old_next = m.old_next;
  r->consumed = 0;
  r->finished_count = 0;
}

uint64_t ten_spool_reader_commit(ten_spool_reader_t *r) {
  for (size_t i = 0; i < r->finished_count; i++) {
    char *path = segment_path(r->dir, r->finished[i]);
    if (unlink(path) < 0 && errno != ENOENT)
      ten_log(TEN_LOG_WARN, "logs: cannot delete the ingested spool %s: %s", path, strerror(errno));
    free(path);
  }
  r->finished_count = 0;
  uint64_t consumed = r->consumed;
  r->consumed = 0;
  return consumed;
}

void ten_spool_reader_free(ten_spool_reader_t *r) {
  reader_close_segment(r);
  ten_buf_free(&r->chunk);
  free(r->old);
  free(r->finished);
  free(r->dir);
  memset(r, 0, sizeof *r);
  r->fd = -1;
}

/* ------------------------------------------------------------ recovery */

/* A stream's unfinished last line, as the partial records left it. */
typedef struct orphan {
  uint64_t key;
  int64_t ts;
  int stream;
  char *service, *instance;
  ten_buf_t bytes;
} orphan_t;

static void orphan_free(orphan_t *o) {
  free(o->service);
  free(o->instance);
  ten_buf_free(&o->bytes);
  free(o);
}

static void apply_partial(ten_map_t *orphans, const ten_spool_view_t *v) {
  const char *key = (const char *)&v->rec.key;
  orphan_t *o = ten_map_get(orphans, key, sizeof v->rec.key);
  if (!o) {
    o = ten_xcalloc(1, sizeof *o);
    o->key = v->rec.key;
    ten_map_put(orphans, key, sizeof v->rec.key, o);
  }
  free(o->service);
  free(o->instance);
  o->service = ten_xstrndup(v->service, v->rec.service_len);
  o->instance = ten_xstrndup(v->instance, v->rec.instance_len);
  o->ts = v->rec.ts;
  o->stream = v->rec.stream;
  size_t keep = (size_t)v->rec.id;
  if (keep < o->bytes.len) o->bytes.len = keep; /* keep > len: a lost record; keep what is there */
  ten_buf_append(&o->bytes, v->body, v->rec.len);
}

static void end_partial(ten_map_t *orphans, uint64_t key) {
  orphan_t *o = ten_map_del(orphans, (const char *)&key, sizeof key);
  if (o) orphan_free(o);
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static int cmp_orphan(const void *a, const void *b) {
  return cmp_u64(&(*(orphan_t *const *)a)->key, &(*(orphan_t *const *)b)->key);
}

/* Reads the segments as the writer will (a chunk at a time, a torn or
 * damaged tail skipped): their lines above last_id, their highest id, and
 * how they leave each stream's partial line. */
static int scan(const char *dir, int64_t last_id, ten_map_t *orphans, ten_spool_recovery_t *out,
                ten_err_t *err) {
  uint64_t *segments = ten_xmalloc((out->count + 1) * sizeof *segments);
  if (out->count) memcpy(segments, out->segments, out->count * sizeof *segments);
  ten_spool_reader_t r;
  ten_spool_reader_init(&r, dir, segments, out->count, out->next_seq);
  ten_spool_view_t views[64];
  size_t n;
  while ((n = ten_spool_read(&r, out->next_seq, 0, views, TEN_ARRAY_SIZE(views))) > 0) {
    for (size_t i = 0; i < n; i++) {
      const ten_spool_view_t *v = &views[i];
      if (v->rec.kind == TEN_SPOOL_PARTIAL) {
        apply_partial(orphans, v);
        continue;
      }
      end_partial(orphans, v->rec.key);
      if (v->rec.id > last_id) out->lines++;
      if (v->rec.id > out->max_id) out->max_id = v->rec.id;
    }
  }
  int rc = 0;
  if (r.seq != out->next_seq) { /* stopped at a segment it could not read */
    char *path = segment_path(dir, r.seq);
    rc = ten_errf(err, UV_EIO, "cannot read the log spool %s (see the error above)", path);
    free(path);
  }
  out->bytes = r.consumed;
  ten_spool_reader_free(&r); /* deletes nothing: nothing was committed */
  return rc;
}

int ten_spool_recover(const char *dir, int64_t last_id, ten_spool_recovery_t *out, ten_err_t *err) {
  memset(out, 0, sizeof *out);
  out->max_id = last_id;
  out->next_seq = 1;
  if (mkdir(dir, 0700) < 0 && errno != EEXIST)
    return ten_errf(err, -errno, "cannot create the log spool %s: %s", dir, strerror(errno));
  DIR *d = opendir(dir);
  if (!d) return ten_errf(err, -errno, "cannot read the log spool %s: %s", dir, strerror(errno));
  size_t cap = 0;
  struct dirent *e;
  while ((e = readdir(d))) {
    uint64_t seq = segment_seq(e->d_name);
    if (!seq) continue;
    if (out->count == cap) {
      cap = cap ? cap * 2 : 8;
      out->segments = ten_xrealloc(out->segments, cap * sizeof *out->segments);
    }
    out->segments[out->count++] = seq;
  }
  closedir(d);
  if (out->count) {
    qsort(out->segments, out->count, sizeof *out->segments, cmp_u64);
    out->next_seq = out->segments[out->count - 1] + 1;
  }

  ten_map_t orphans = TEN_MAP_INIT;
  int rc = scan(dir, last_id, &orphans, out, err);

  /* What is left unfinished becomes a line, as it would have at the
   * stream's end: ids after every other, in the order the streams began. */
  orphan_t **list = ten_xcalloc(orphans.count + 1, sizeof *list);
  size_t n = 0;
  ten_map_entry_t *me;
  for (size_t it = 0; ten_map_next(&orphans, &it, &me);) list[n++] = me->value;
  qsort(list, n, sizeof *list, cmp_orphan);
  for (size_t i = 0; i < n; i++) {
    orphan_t *o = list[i];
    size_t len = o->bytes.len;
    if (len && o->bytes.data[len - 1] == '\r') len--;
    if (rc == 0 && len) {
      int level = ten_log_detect_level(o->bytes.data, len, (ten_log_stream_t)o->stream);
      ten_spool_buf_line(&out->orphans, o->key, ++out->max_id, o->ts, level, o->stream, o->service,
                         o->instance, o->bytes.data, len);
    }
    orphan_free(o);
  }
  free(list);
  ten_map_free(&orphans);
  if (rc) ten_spool_recovery_free(out);
  return rc;
}

void ten_spool_recovery_free(ten_spool_recovery_t *rec) {
  free(rec->segments);
  rec->segments = NULL;
  rec->count = 0;
  ten_spool_buf_free(&rec->orphans);
}
