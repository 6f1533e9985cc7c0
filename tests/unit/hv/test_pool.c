/* test_pool.c: weighted pools through the public hv API (ten_hv_pick,
 * ten_hv_set_weight) with real instances of the example app on a real
 * loop. Smooth weighted round robin is deterministic, so the counts and
 * the interleaving are exact. */
#include "test.h"
#include "test_loop.h"
#include "hv/hv.h"
#include "util/log.h"
#include "util/time.h"

#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixtures */

static uv_loop_t loop;
static uv_timer_t tick;
static ten_hv_t hv;
static ten_config_t *config;
static char data_dir[] = "/tmp/ten-unit-pool-XXXXXX";
static ten_instance_t *a, *b, *c;

static void on_tick(uv_timer_t *t) { (void)t; }

static bool run_until_state(ten_instance_t *inst, ten_instance_state_t state, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  while (inst->state != state && ten_now_ms() < deadline) uv_run(&loop, UV_RUN_ONCE);
  if (inst->state != state)
    fprintf(stderr, "  %s: still %s, waited for %s\n", inst->key,
            ten_instance_state_name(inst->state), ten_instance_state_name(state));
  return inst->state == state;
}

static bool setup(void) {
  const char *hello = getenv("TEN_HELLO_BIN");
  if (!hello || !*hello) {
    fprintf(stderr, "TEN_HELLO_BIN is not set (run through ctest)\n");
    return false;
  }
  if (!mkdtemp(data_dir)) return false;
  char path[256];
  snprintf(path, sizeof path, "%s/tenement.lua", data_dir);
  FILE *f = fopen(path, "w");
  if (!f) return false;
  fprintf(f,
          "local hello = [==[%s]==]\n"
          "settings { data_dir = [==[%s]==] }\n"
          "service \"web\" { command = hello, health = \"/health\", restart = \"never\",\n"
          "  start_timeout = 10, stop_timeout = 5 }\n",
          hello, data_dir);
  fclose(f);
  ten_err_t err;
  if (ten_config_load(path, NULL, &config, &err)) {
    fprintf(stderr, "config: %s\n", err.msg);
    return false;
  }
  ten_log_set_level(TEN_LOG_WARN);
  CHECK_EQ(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 50, 50);
  CHECK_EQ(ten_hv_init(&hv, &loop, config), 0);
  return true;
}

/* Picks n times; counts per instance and the sequence ('a', 'b', 'c', '-'). */
static void pick_many(int n, int counts[3], char *seq) {
  counts[0] = counts[1] = counts[2] = 0;
  for (int i = 0; i < n; i++) {
    ten_instance_t *p = ten_hv_pick(&hv, "web", 3);
    char ch = p == a ? 'a' : p == b ? 'b' : p == c ? 'c' : '-';
    if (ch != '-') counts[ch - 'a']++;
    if (seq) seq[i] = ch;
  }
  if (seq) seq[n] = '\0';
}

/* ---------------------------------------------------------------- tests */

TEST(start_two) {
  ten_err_t err;
  CHECK_EQ(ten_hv_spawn(&hv, "web", "a", &err), 0);
  CHECK_EQ(ten_hv_spawn(&hv, "web", "b", &err), 0);
  a = ten_hv_find_key(&hv, "web:a");
  b = ten_hv_find_key(&hv, "web:b");
  CHECK(a && b);
  if (!a || !b) return;
  CHECK(run_until_state(a, TEN_INST_READY, 10));
  CHECK(run_until_state(b, TEN_INST_READY, 10));
  /* The service's weight (default 100) until set. */
  CHECK_EQ(a->weight, 100);
  CHECK_EQ(b->weight, 100);
  CHECK_EQ(a->weight_override, -1);
}

TEST(weighted_90_10) {
  if (!a || !b) return;
  ten_err_t err;
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 90, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:b", 10, &err), 0);
  CHECK_EQ(a->weight, 90);
  CHECK_EQ(b->weight, 10);
  CHECK_EQ(a->weight_override, 90);

  static char seq[1001];
  int counts[3];
  pick_many(1000, counts, seq);
  CHECK_EQ(counts[0], 900);
  CHECK_EQ(counts[1], 100);
  CHECK(strchr(seq, '-') == NULL);
  /* Interleaved, not in bursts: never two b's in a row, and every window
   * of ten picks has exactly one b. */
  CHECK(strstr(seq, "bb") == NULL);
  int bad_windows = 0;
  for (int i = 0; i + 10 <= 1000; i++) {
    int bs = 0;
    for (int j = i; j < i + 10; j++) bs += seq[j] == 'b';
    if (bs != 1) bad_windows++;
  }
  CHECK_EQ(bad_windows, 0);
  /* The longest run of a's is nine. */
  int run = 0, longest = 0;
  for (int i = 0; i < 1000; i++) {
    run = seq[i] == 'a' ? run + 1 : 0;
    if (run > longest) longest = run;
  }
  CHECK_EQ(longest, 9);

  /* The same weights set again: the same exact split from a fresh start. */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 90, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:b", 10, &err), 0);
  static char seq2[1001];
  pick_many(1000, counts, seq2);
  CHECK_EQ(counts[0], 900);
  CHECK_EQ(counts[1], 100);
  CHECK_STR(seq2, seq);
}

TEST(equal_and_three_way) {
  if (!a || !b) return;
  ten_err_t err;
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 50, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:b", 50, &err), 0);
  static char seq[101];
  int counts[3];
  pick_many(100, counts, seq);
  CHECK_EQ(counts[0], 50);
  CHECK_EQ(counts[1], 50);
  CHECK(strstr(seq, "aa") == NULL && strstr(seq, "bb") == NULL); /* strict alternation */

  /* A third member. */
  CHECK_EQ(ten_hv_spawn(&hv, "web", "c", &err), 0);
  c = ten_hv_find_key(&hv, "web:c");
  CHECK(c != NULL);
  if (!c) return;
  CHECK(run_until_state(c, TEN_INST_READY, 10));
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 50, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:b", 30, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:c", 20, &err), 0);
  pick_many(1000, counts, NULL);
  CHECK_EQ(counts[0], 500);
  CHECK_EQ(counts[1], 300);
  CHECK_EQ(counts[2], 200);
}

TEST(weight_zero) {
  if (!a || !b || !c) return;
  ten_err_t err;
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 0, &err), 0);
  CHECK_EQ(a->weight, 0);
  int counts[3];
  pick_many(300, counts, NULL);
  CHECK_EQ(counts[0], 0);
  CHECK_EQ(counts[1] + counts[2], 300);
  CHECK_EQ(counts[1], 180); /* 30:20 */
  CHECK_EQ(counts[2], 120);
  /* Only one left with a weight: always that one. */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:b", 0, &err), 0);
  pick_many(50, counts, NULL);
  CHECK_EQ(counts[2], 50);
  /* Nobody with a weight: nothing to pick. */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:c", 0, &err), 0);
  CHECK(ten_hv_pick(&hv, "web", 3) == NULL);
  CHECK(ten_hv_pick(&hv, "nope", 4) == NULL);
  /* Back again. */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 100, &err), 0);
  CHECK(ten_hv_pick(&hv, "web", 3) == a);
  CHECK(ten_hv_pick(&hv, "webx", 3) == a); /* the name is taken by length */
  CHECK(ten_hv_pick(&hv, "we", 2) == NULL);
}

TEST(set_weight_errors) {
  if (!a) return;
  ten_err_t err;
  int before = a->weight;
  err.msg[0] = '\0';
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 101, &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "101");
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", -1, &err), UV_EINVAL);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 1000000, &err), UV_EINVAL);
  CHECK_EQ(a->weight, before); /* unchanged */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:zzz", 50, &err), UV_ENOENT);
  CHECK_CONTAINS(err.msg, "web:zzz");
  CHECK_EQ(ten_hv_set_weight(&hv, "nope:a", 50, &err), UV_ENOENT);
  CHECK_EQ(ten_hv_set_weight(&hv, "", 50, &err), UV_ENOENT);
  CHECK_EQ(ten_hv_set_weight(&hv, "web", 50, &err), UV_ENOENT);
  /* The limits themselves are fine. */
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 0, &err), 0);
  CHECK_EQ(ten_hv_set_weight(&hv, "web:a", 100, &err), 0);
}

static bool shutdown_done;
static void on_shutdown(ten_hv_t *h) {
  (void)h;
  shutdown_done = true;
}

int main(void) {
  if (!setup()) {
    CHECK(!"setup failed");
    if (strcmp(data_dir + strlen(data_dir) - 6, "XXXXXX") != 0)
      test_rm_rf(data_dir);
    return test_report();
  }
  RUN(start_two);
  RUN(weighted_90_10);
  RUN(equal_and_three_way);
  RUN(weight_zero);
  RUN(set_weight_errors);

  ten_hv_shutdown(&hv, on_shutdown);
  CHECK(test_run_until(&loop, &shutdown_done, 15));
  CHECK_EQ(hv.live_procs, 0);
  ten_hv_free(&hv);
  ten_config_unref(config);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(test_rm_rf(data_dir), 0);
  return test_report();
}
