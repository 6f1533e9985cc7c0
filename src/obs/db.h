/* db.h: {data_dir}/tenement.db (SQLite, WAL).
 *
 * The loop thread never touches the disk: writes are queued to one writer
 * thread, which owns the write connection and commits what is queued in one
 * transaction. Reads at start-up (before the loop runs) use their own
 * connection; later readers open theirs on the threadpool (WAL lets them
 * run beside the writer). ten_db_close flushes the queue and joins.
 *
 * Tables: config(key, value) for persisted state (weights, token hashes,
 * settings); more arrive with the log pipeline.
 */
#ifndef TEN_OBS_DB_H
#define TEN_OBS_DB_H

#include "util/common.h"

typedef struct ten_db ten_db_t;

int ten_db_open(const char *path, ten_db_t **out, ten_err_t *err);
/* Flushes pending writes, stops the writer thread, closes. NULL is fine. */
void ten_db_close(ten_db_t *db);
const char *ten_db_path(const ten_db_t *db);

/* Every config row whose key starts with prefix, synchronously (start-up or
 * a CLI process, never the loop thread). */
int ten_db_config_scan(ten_db_t *db, const char *prefix,
                       void (*fn)(void *ctx, const char *key, const char *value), void *ctx,
                       ten_err_t *err);
/* Queues an upsert (value NULL deletes). Returns at once. */
void ten_db_config_set(ten_db_t *db, const char *key, const char *value);
/* Waits until everything queued so far is committed (tests, shutdown). */
void ten_db_sync(ten_db_t *db);

#endif
