/* test_loop.h: running a libuv loop until something happened, for unit
 * tests of loop-driven modules. */
#ifndef TEN_TEST_LOOP_H
#define TEN_TEST_LOOP_H

#include <stdbool.h>
#include <uv.h>

#include "util/time.h"

/* Turns the loop until *flag is set or `seconds` passed; returns *flag. */
static inline bool test_run_until(uv_loop_t *loop, const bool *flag, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  while (!*flag && ten_now_ms() < deadline) uv_run(loop, UV_RUN_ONCE);
  return *flag;
}

#endif
