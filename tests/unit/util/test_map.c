/* test_map.c: the open-addressing hash map. */
#include "test.h"
#include "util/map.h"

#include <stdlib.h>

/* Distinct non-NULL values to store. */
static int values[16];
#define V(i) ((void *)&values[i])

TEST(empty) {
  ten_map_t m = TEN_MAP_INIT;
  CHECK(ten_map_get(&m, "a", 1) == NULL);
  CHECK(ten_map_del(&m, "a", 1) == NULL);
  size_t it = 0;
  ten_map_entry_t *e = NULL;
  CHECK(!ten_map_next(&m, &it, &e));
  ten_map_free(&m);
  ten_map_free(&m); /* twice is fine: free resets the map */
  CHECK_EQ(m.cap, 0);
  CHECK_EQ(m.count, 0);
}

TEST(put_get_replace_del) {
  ten_map_t m = TEN_MAP_INIT;
  CHECK(ten_map_put(&m, "api:prod", 8, V(0)) == NULL);
  CHECK(ten_map_put(&m, "api:staging", 11, V(1)) == NULL);
  CHECK_EQ(m.count, 2);
  CHECK(ten_map_get(&m, "api:prod", 8) == V(0));
  CHECK(ten_map_get(&m, "api:staging", 11) == V(1));
  CHECK(ten_map_get(&m, "api:dev", 7) == NULL);

  /* Replace returns the previous value and keeps the count. */
  CHECK(ten_map_put(&m, "api:prod", 8, V(2)) == V(0));
  CHECK(ten_map_get(&m, "api:prod", 8) == V(2));
  CHECK_EQ(m.count, 2);

  /* The map copies keys: the caller's buffer may change afterwards. */
  char key[] = "web:a";
  ten_map_put(&m, key, 5, V(3));
  key[4] = 'b';
  CHECK(ten_map_get(&m, "web:a", 5) == V(3));
  CHECK(ten_map_get(&m, key, 5) == NULL);

  CHECK(ten_map_del(&m, "api:prod", 8) == V(2));
  CHECK(ten_map_get(&m, "api:prod", 8) == NULL);
  CHECK(ten_map_del(&m, "api:prod", 8) == NULL);
  CHECK_EQ(m.count, 2);
  CHECK(ten_map_get(&m, "api:staging", 11) == V(1));

  /* A NULL value is storable, though get cannot tell it from absent. */
  CHECK(ten_map_put(&m, "nil", 3, NULL) == NULL);
  CHECK_EQ(m.count, 3);
  ten_map_free(&m);
}

/* Keys sharing prefixes, and keys taken as (ptr, len) slices. */
TEST(prefixes_and_lengths) {
  ten_map_t m = TEN_MAP_INIT;
  const char *s = "abcdef";
  for (size_t n = 0; n <= 6; n++) CHECK(ten_map_put(&m, s, n, V(n)) == NULL);
  CHECK_EQ(m.count, 7);
  for (size_t n = 0; n <= 6; n++) CHECK(ten_map_get(&m, s, n) == V(n));
  CHECK(ten_map_get(&m, "", 0) == V(0)); /* the empty key */
  CHECK(ten_map_get(&m, "abcdefg", 7) == NULL);
  CHECK(ten_map_get(&m, "abd", 3) == NULL);
  /* A slice of a longer buffer finds the short key. */
  CHECK(ten_map_get(&m, "abc:rest", 3) == V(3));
  CHECK(ten_map_del(&m, "abc", 3) == V(3));
  CHECK(ten_map_get(&m, "ab", 2) == V(2));
  CHECK(ten_map_get(&m, "abcd", 4) == V(4));
  ten_map_free(&m);
}

/* Keys are (ptr, len): bytes after a NUL count. */
TEST(binary_keys) {
  ten_map_t m = TEN_MAP_INIT;
  CHECK(ten_map_put(&m, "a\0b", 3, V(1)) == NULL);
  CHECK(ten_map_put(&m, "a\0c", 3, V(2)) == NULL);
  CHECK(ten_map_put(&m, "a", 1, V(3)) == NULL);
  CHECK(ten_map_put(&m, "\xff\x00\x80", 3, V(4)) == NULL);
  CHECK_EQ(m.count, 4);
  CHECK(ten_map_get(&m, "a\0b", 3) == V(1));
  CHECK(ten_map_get(&m, "a\0c", 3) == V(2));
  CHECK(ten_map_get(&m, "a", 1) == V(3));
  CHECK(ten_map_get(&m, "a\0", 2) == NULL);
  CHECK(ten_map_get(&m, "\xff\x00\x80", 3) == V(4));
  size_t seen = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&m, &it, &e);) {
    if (e->value == V(1)) CHECK(e->key_len == 3 && memcmp(e->key, "a\0b", 3) == 0);
    seen++;
  }
  CHECK_EQ(seen, 4);
  CHECK(ten_map_del(&m, "a\0b", 3) == V(1));
  CHECK(ten_map_get(&m, "a\0c", 3) == V(2));
  ten_map_free(&m);
}

#define MANY 10000

static void key_of(int i, char *buf, size_t len) { snprintf(buf, len, "service-%d:id-%d", i % 97, i); }

TEST(many_keys_and_growth) {
  ten_map_t m = TEN_MAP_INIT;
  int *vals = malloc(MANY * sizeof *vals);
  char key[64];
  size_t last_cap = 0;
  int grew = 0, fresh = 0;
  for (int i = 0; i < MANY; i++) {
    vals[i] = i;
    key_of(i, key, sizeof key);
    fresh += ten_map_put(&m, key, strlen(key), &vals[i]) == NULL;
    if (m.cap != last_cap) grew++, last_cap = m.cap;
    /* The load stays under 3/4 and cap is a power of two. */
    if ((m.count + m.tombs) * 4 >= m.cap * 3 || (m.cap & (m.cap - 1))) {
      CHECK(!"bad load or capacity");
      break;
    }
  }
  CHECK_EQ(fresh, MANY);
  CHECK_EQ(m.count, MANY);
  CHECK(grew > 5);
  int found = 0;
  for (int i = 0; i < MANY; i++) {
    key_of(i, key, sizeof key);
    int *v = ten_map_get(&m, key, strlen(key));
    found += v == &vals[i];
  }
  CHECK_EQ(found, MANY);

  /* Each live entry is visited exactly once. */
  char *visits = calloc(MANY, 1);
  size_t n = 0, consistent = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&m, &it, &e);) {
    int i = *(int *)e->value;
    consistent += e->key_len == strlen(e->key) && e->hash == ten_hash(e->key, e->key_len);
    if (i >= 0 && i < MANY) visits[i]++;
    n++;
  }
  CHECK_EQ(n, MANY);
  CHECK_EQ(consistent, MANY);
  int once = 0;
  for (int i = 0; i < MANY; i++) once += visits[i] == 1;
  CHECK_EQ(once, MANY);
  free(visits);
  free(vals);
  ten_map_free(&m);
  CHECK(m.slots == NULL && m.cap == 0 && m.count == 0);
}

/* Deletes leave tombstones in probe chains: lookups past them still work,
 * reinserts reuse them, and churn does not grow the table without bound. */
TEST(tombstones) {
  ten_map_t m = TEN_MAP_INIT;
  int vals[1001];
  char key[64];
  for (int i = 0; i < 1000; i++) {
    vals[i] = i;
    key_of(i, key, sizeof key);
    ten_map_put(&m, key, strlen(key), &vals[i]);
  }
  /* Delete every other key; the rest stay reachable. */
  int ok = 0;
  for (int i = 0; i < 1000; i += 2) {
    key_of(i, key, sizeof key);
    ok += ten_map_del(&m, key, strlen(key)) == &vals[i];
  }
  CHECK_EQ(ok, 500);
  CHECK_EQ(m.count, 500);
  ok = 0;
  for (int i = 0; i < 1000; i++) {
    key_of(i, key, sizeof key);
    void *v = ten_map_get(&m, key, strlen(key));
    ok += (i % 2) ? v == &vals[i] : v == NULL;
  }
  CHECK_EQ(ok, 1000);
  size_t n = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&m, &it, &e);) n += (*(int *)e->value % 2) == 1;
  CHECK_EQ(n, 500);

  /* Reinsert the deleted ones with new values. */
  ok = 0;
  for (int i = 0; i < 1000; i += 2) {
    key_of(i, key, sizeof key);
    ok += ten_map_put(&m, key, strlen(key), &vals[i + 1]) == NULL;
  }
  CHECK_EQ(ok, 500);
  CHECK_EQ(m.count, 1000);
  ok = 0;
  for (int i = 0; i < 1000; i += 2) {
    key_of(i, key, sizeof key);
    ok += ten_map_get(&m, key, strlen(key)) == &vals[i + 1];
  }
  CHECK_EQ(ok, 500);

  /* Churn: one key in, one key out, many times over. */
  size_t cap = m.cap;
  int churn_ok = 0;
  for (int round = 0; round < 20000; round++) {
    snprintf(key, sizeof key, "churn-%d", round);
    ten_map_put(&m, key, strlen(key), &vals[0]);
    churn_ok += m.count == 1001 && ten_map_del(&m, key, strlen(key)) == &vals[0];
  }
  CHECK_EQ(churn_ok, 20000);
  CHECK_EQ(m.count, 1000);
  CHECK(m.cap <= cap * 2);
  CHECK((m.count + m.tombs) * 4 < m.cap * 3);
  ok = 0;
  for (int i = 1; i < 1000; i += 2) {
    key_of(i, key, sizeof key);
    ok += ten_map_get(&m, key, strlen(key)) == &vals[i];
  }
  CHECK_EQ(ok, 500);

  /* Delete everything, then the map is empty and reusable. */
  ok = 0;
  for (int i = 0; i < 1000; i++) {
    key_of(i, key, sizeof key);
    ok += ten_map_del(&m, key, strlen(key)) != NULL;
  }
  CHECK_EQ(ok, 1000);
  CHECK_EQ(m.count, 0);
  size_t it = 0;
  CHECK(!ten_map_next(&m, &it, &e));
  CHECK(ten_map_put(&m, "again", 5, &vals[7]) == NULL);
  CHECK(ten_map_get(&m, "again", 5) == &vals[7]);
  ten_map_free(&m);
}

TEST(hash) {
  /* FNV-1a 64 reference values. */
  CHECK(ten_hash("", 0) == 14695981039346656037ull);
  CHECK(ten_hash("a", 1) == 0xaf63dc4c8601ec8cull);
  CHECK(ten_hash("foobar", 6) == 0x85944171f73967e8ull);
  CHECK(ten_hash("a\0b", 3) != ten_hash("a\0c", 3));
}

int main(void) {
  RUN(empty);
  RUN(put_get_replace_del);
  RUN(prefixes_and_lengths);
  RUN(binary_keys);
  RUN(many_keys_and_growth);
  RUN(tombstones);
  RUN(hash);
  return test_report();
}
