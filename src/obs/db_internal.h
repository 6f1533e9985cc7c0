/* db_internal.h: what db.c (the writer thread and its queue) and
 * logstore.c (the log tables' SQL) share. */
#ifndef TEN_OBS_DB_INTERNAL_H
#define TEN_OBS_DB_INTERNAL_H

#include <sqlite3.h>

#include "obs/db.h"
#include "util/map.h"

/* Rows per multi-row INSERT: the statement's fixed costs (cursors, VDBE
 * set-up) are paid once per group instead of once per line. */
#define TEN_LOGSTORE_INSERT_ROWS 32

/* The writer's prepared statements and caches (writer thread only). */
typedef struct ten__logstore {
  sqlite3 *conn;
  sqlite3_stmt *insert_line, *insert_many, *insert_source, *find_source;
  sqlite3_stmt *index_range, *set_indexed, *set_through;
  ten_map_t sources; /* "service\n instance" -> source id (as pointer-sized int) */
  int64_t indexed_through;
  int64_t max_id;
  int64_t through;       /* the highest id ingested from the spool (committed or not) */
  int64_t saved_through; /* ... as log_spool has it */
  int64_t row_count; /* rows in log_lines: ids have gaps, so the cap counts rows */
  uint64_t last_rotation_ms;
} ten__logstore_t;

extern const char ten__log_schema_sql[];

/* Brings an older file's log tables to the current layout (before the
 * schema SQL runs). 0 or UV_EIO. */
int ten__logstore_migrate(sqlite3 *conn);

int ten__logstore_open(ten__logstore_t *ls, sqlite3 *conn, ten_err_t *err);
void ten__logstore_close(ten__logstore_t *ls);
/* Stores line records (inside the caller's transaction) and moves through
 * past them. Returns lines stored. */
size_t ten__logstore_insert(ten__logstore_t *ls, const ten_spool_view_t *lines, size_t n);
/* Writes through to log_spool if it moved (inside the transaction); false
 * if that failed (the transaction must not commit without it). */
bool ten__logstore_save_through(ten__logstore_t *ls);
/* Indexes up to max rows not yet in the full-text index (inside the
 * caller's transaction). Returns how many. */
int64_t ten__logstore_index(ten__logstore_t *ls, int64_t max);
/* Deletes a chunk of rows past retention or the row cap (own transaction).
 * Returns rows deleted. */
int64_t ten__logstore_rotate(ten__logstore_t *ls, double retention_days, int64_t max_rows,
                             int64_t chunk);
/* The highest stored id, read at open. */
int64_t ten__logstore_max_id(sqlite3 *conn);

#endif
