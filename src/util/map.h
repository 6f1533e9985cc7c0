/* map.h: a string-keyed hash map (open addressing, linear probing).
 *
 * O(1) lookups on the hot path (routing: "service:id" -> instance). Keys are
 * copied in; values are borrowed pointers the map never frees. Iteration
 * order is unspecified. Not thread-safe: one owner.
 */
#ifndef TEN_UTIL_MAP_H
#define TEN_UTIL_MAP_H

#include "util/common.h"

typedef struct ten_map_entry {
  char *key;
  size_t key_len;
  uint64_t hash;
  void *value;
} ten_map_entry_t;

typedef struct ten_map {
  ten_map_entry_t *slots;
  size_t cap; /* power of two, or 0 */
  size_t count;
  size_t tombs; /* deleted slots still in probe chains */
} ten_map_t;

#define TEN_MAP_INIT                                                                               \
  { NULL, 0, 0, 0 }

uint64_t ten_hash(const void *data, size_t len);

void *ten_map_get(const ten_map_t *m, const char *key, size_t key_len);
/* Inserts or replaces; returns the previous value or NULL. */
void *ten_map_put(ten_map_t *m, const char *key, size_t key_len, void *value);
/* Removes; returns the removed value or NULL. */
void *ten_map_del(ten_map_t *m, const char *key, size_t key_len);
void ten_map_free(ten_map_t *m);

/* Iterate: for (size_t i = 0; ten_map_next(m, &i, &e);) { ... } */
bool ten_map_next(const ten_map_t *m, size_t *iter, ten_map_entry_t **entry);

#endif
