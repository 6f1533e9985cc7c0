/* spool.h: the log spool, append-only segment files in a folder beside the
 * database ({data_dir}/tenement.db-spool) that hold every line ten has read
 * from an app, from the moment it is read until the database writer has
 * committed it.
 *
 * Durability is against the death of the ten process (SIGKILL, a crash),
 * not power loss: records reach the page cache with one write() per batch
 * and are never fsync'd (the kernel writes them back in its own time, or
 * never, when a segment is deleted first). A start after a crash reads the
 * segments left behind (ten_spool_recover) and ingests what the database
 * does not have yet.
 *
 * A segment is a run of records. A line record carries the line's final id.
 * A partial record carries bytes of a stream's unfinished last line; the
 * stream's next line record supersedes them, so a line that ten had only
 * partly read when it died still comes back, once. A segment opens with the
 * partial lines of its time (the producer's job, see ten_db_log_roll), so a
 * segment that has been ingested can be deleted.
 *
 * Threads: one producer appends (ten_spool_writer_t, the loop thread); one
 * reader (ten_spool_reader_t, the database writer) reads only bytes the
 * producer has published, and deletes what it has committed. Errors are
 * 0 or a negative errno-style code (libuv's).
 */
#ifndef TEN_OBS_SPOOL_H
#define TEN_OBS_SPOOL_H

#include "util/buf.h"

/* Segments roll over at this size, so one can be deleted as soon as the
 * writer is past it. */
#define TEN_SPOOL_SEGMENT_BYTES (8u << 20)

enum { TEN_SPOOL_LINE = 1, TEN_SPOOL_PARTIAL = 2 };
#define TEN_SPOOL_MAGIC 0x4c4e4554u /* "TENL" */

/* A record's header, followed by service, instance and len bytes. */
typedef struct ten_spool_rec {
  uint8_t kind;  /* TEN_SPOOL_LINE or TEN_SPOOL_PARTIAL */
  uint8_t level; /* ten_log_level_id_t (lines) */
  uint8_t stream;
  uint8_t _pad;
  uint32_t len; /* the message (line), or the bytes a partial record appends */
  uint64_t key; /* the stream (one pipe of one process) it was read from */
  int64_t id;   /* line: its id. partial: how many bytes of the stream's
                   partial line so far stay before these (0: start afresh) */
  int64_t ts;   /* ms since the epoch */
  uint16_t service_len, instance_len;
  uint32_t magic; /* TEN_SPOOL_MAGIC: a torn or foreign tail is noticed */
} ten_spool_rec_t;

typedef struct ten_spool_view {
  ten_spool_rec_t rec;
  const char *service, *instance, *body;
} ten_spool_view_t;

/* Records built in memory, then appended whole. */
typedef struct ten_spool_buf {
  ten_buf_t data;
  size_t lines;    /* line records in it */
  int64_t last_id; /* the highest line id in it (0: none) */
  size_t written;  /* bytes of data already in the spool (a short write) */
} ten_spool_buf_t;

#define TEN_SPOOL_BUF_INIT                                                                         \
  { TEN_BUF_INIT, 0, 0, 0 }

void ten_spool_buf_line(ten_spool_buf_t *b, uint64_t key, int64_t id, int64_t ts_ms, int level,
                        int stream, const char *service, const char *instance, const char *message,
                        size_t len);
void ten_spool_buf_partial(ten_spool_buf_t *b, uint64_t key, size_t keep, int64_t ts_ms, int stream,
                           const char *service, const char *instance, const char *bytes,
                           size_t len);
/* Empty again (the memory is kept). */
void ten_spool_buf_reset(ten_spool_buf_t *b);
void ten_spool_buf_free(ten_spool_buf_t *b);

/* The record at *pos of data[0, len): 1 (*pos moves past it), 0 when the
 * bytes end inside it, -1 when they are not a record. */
int ten_spool_next(const char *data, size_t len, size_t *pos, ten_spool_view_t *out);

/* ---- the producer's side ---- */

typedef struct ten_spool_writer {
  char *dir;
  uint64_t seq; /* the segment being written */
  int fd;
  uint64_t size; /* bytes in it */
} ten_spool_writer_t;

/* Creates segment seq in dir (which must exist). */
int ten_spool_writer_open(ten_spool_writer_t *w, const char *dir, uint64_t seq, ten_err_t *err);
/* Appends b from b->written on, with write() (no fsync). 0 once all of it
 * is in; else an error, with b->written saying how far it got (call again
 * to go on: a record cut short is completed, never repeated). */
int ten_spool_append(ten_spool_writer_t *w, ten_spool_buf_t *b);
/* Moves on to segment seq + 1, which opens with all of first (the state
 * that must carry over). On error the current segment stays in use. */
int ten_spool_roll(ten_spool_writer_t *w, const ten_spool_buf_t *first);
void ten_spool_writer_close(ten_spool_writer_t *w);

/* ---- the reader's side ---- */

typedef struct ten_spool_reader {
  char *dir;
  uint64_t *old; /* segments of earlier runs still to read, oldest first */
  size_t old_count, old_next;
  uint64_t first_new; /* this run's first segment; the rest follow it */
  uint64_t seq;       /* the segment being read */
  int fd;
  uint64_t off;       /* where chunk starts in it */
  ten_buf_t chunk;    /* bytes read, not consumed yet */
  size_t pos;         /* consumed bytes of chunk */
  uint64_t consumed;  /* bytes handed out or skipped since the last mark (of a
                         damaged segment: what was read of it) */
  uint64_t *finished; /* segments read to the end since the last mark */
  size_t finished_count, finished_cap;
  bool quiet_old; /* damage in old segments was reported (by recovery) */
} ten_spool_reader_t;

/* Reads the old segments (taking the array), then first_new onward. */
void ten_spool_reader_init(ten_spool_reader_t *r, const char *dir, uint64_t *old, size_t old_count,
                           uint64_t first_new);
/* Up to max records, in order, that end at or before (end_seq, end_off),
 * the producer's published end. Views point into the reader's memory and
 * stay valid until the next call. Returns how many (0: nothing more). */
size_t ten_spool_read(ten_spool_reader_t *r, uint64_t end_seq, uint64_t end_off,
                      ten_spool_view_t *out, size_t max);
/* Where the reader is, to go back there if what was read since could not
 * be committed. */
typedef struct ten_spool_mark {
  uint64_t seq, off;
  size_t old_next;
} ten_spool_mark_t;
ten_spool_mark_t ten_spool_reader_mark(ten_spool_reader_t *r);
void ten_spool_reader_rewind(ten_spool_reader_t *r, ten_spool_mark_t m);
/* What was read since the last mark is committed: deletes the segments
 * finished since, and returns the bytes consumed since. */
uint64_t ten_spool_reader_commit(ten_spool_reader_t *r);
void ten_spool_reader_free(ten_spool_reader_t *r);

/* ---- start-up ---- */

typedef struct ten_spool_recovery {
  uint64_t *segments; /* left by earlier runs, oldest first */
  size_t count;
  uint64_t next_seq; /* the first number free for this run */
  uint64_t bytes;    /* what a reader consumes of them */
  uint64_t lines;    /* line records in them above last_id */
  int64_t max_id;    /* the highest id in use: theirs, the orphans', or last_id */
  /* Partial lines nobody finished, as line records with ids after all of
   * theirs: to be appended first thing, so they are stored like any other
   * line (and, keyed as before, end those partial lines for good). */
  ten_spool_buf_t orphans;
} ten_spool_recovery_t;

/* Reads what earlier runs left in dir (created if missing). last_id: the
 * highest id the database has seen (lines up to it are stored). */
int ten_spool_recover(const char *dir, int64_t last_id, ten_spool_recovery_t *out, ten_err_t *err);
void ten_spool_recovery_free(ten_spool_recovery_t *rec);

#endif
