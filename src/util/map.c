#include "util/map.h"

#include <stdlib.h>
#include <string.h>

/* A deleted slot keeps its place in probe chains. */
static char tombstone_key[1];
#define TOMB tombstone_key

uint64_t ten_hash(const void *data, size_t len) {
  /* FNV-1a, 64-bit: short keys, no adversarial pressure on a table we size. */
  const unsigned char *p = data;
  uint64_t h = 14695981039346656037ull;
  for (size_t i = 0; i < len; i++) {
    h ^= p[i];
    h *= 1099511628211ull;
  }
  return h;
}

static ten_map_entry_t *find_slot(const ten_map_t *m, const char *key, size_t len, uint64_t h) {
  if (!m->cap) return NULL;
  size_t mask = m->cap - 1;
  for (size_t i = h & mask;; i = (i + 1) & mask) {
    ten_map_entry_t *e = &m->slots[i];
    if (!e->key) return NULL;
    if (e->key != TOMB && e->hash == h && e->key_len == len && memcmp(e->key, key, len) == 0)
      return e;
  }
}

void *ten_map_get(const ten_map_t *m, const char *key, size_t key_len) {
  ten_map_entry_t *e = find_slot(m, key, key_len, ten_hash(key, key_len));
  return e ? e->value : NULL;
}

static void grow(ten_map_t *m) {
  size_t old_cap = m->cap;
  ten_map_entry_t *old = m->slots;
  size_t cap = old_cap ? old_cap : 8;
  while ((m->count + 1) * 4 >= cap * 3) cap *= 2; /* load under 3/4 */
  m->slots = ten_xcalloc(cap, sizeof *m->slots);
  m->cap = cap;
  m->tombs = 0;
  size_t mask = cap - 1;
  for (size_t i = 0; i < old_cap; i++) {
    ten_map_entry_t *e = &old[i];
    if (!e->key || e->key == TOMB) continue;
    size_t j = e->hash & mask;
    while (m->slots[j].key) j = (j + 1) & mask;
    m->slots[j] = *e;
  }
  free(old);
}

void *ten_map_put(ten_map_t *m, const char *key, size_t key_len, void *value) {
  uint64_t h = ten_hash(key, key_len);
  ten_map_entry_t *e = find_slot(m, key, key_len, h);
  if (e) {
    void *prev = e->value;
    e->value = value;
    return prev;
  }
  if (!m->cap || (m->count + m->tombs + 1) * 4 >= m->cap * 3) grow(m);
  size_t mask = m->cap - 1;
  size_t i = h & mask;
  while (m->slots[i].key && m->slots[i].key != TOMB) i = (i + 1) & mask;
  if (m->slots[i].key == TOMB) m->tombs--;
  m->slots[i] = (ten_map_entry_t){ten_xstrndup(key, key_len), key_len, h, value};
  m->count++;
  return NULL;
}

void *ten_map_del(ten_map_t *m, const char *key, size_t key_len) {
  ten_map_entry_t *e = find_slot(m, key, key_len, ten_hash(key, key_len));
  if (!e) return NULL;
  void *prev = e->value;
  free(e->key);
  e->key = TOMB;
  e->value = NULL;
  m->count--;
  m->tombs++;
  return prev;
}

void ten_map_free(ten_map_t *m) {
  for (size_t i = 0; i < m->cap; i++)
    if (m->slots[i].key && m->slots[i].key != TOMB) free(m->slots[i].key);
  free(m->slots);
  *m = (ten_map_t)TEN_MAP_INIT;
}

bool ten_map_next(const ten_map_t *m, size_t *iter, ten_map_entry_t **entry) {
  for (; *iter < m->cap; (*iter)++) {
    ten_map_entry_t *e = &m->slots[*iter];
    if (e->key && e->key != TOMB) {
      *entry = e;
      (*iter)++;
      return true;
    }
  }
  return false;
}
