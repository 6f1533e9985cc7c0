/* test_reload.c: who owns an instance and its process across reloads.
 *
 * A reload that removes a service drains its instances and forgets them
 * once their process is reaped; one that restores the service while they
 * drain keeps them. In every order of events: no instance is freed while
 * its process runs (ASan sees a use after free otherwise), every process
 * belongs to an instance the map holds, and a shutdown leaves nothing.
 */
#include "hv/hv.h"
#include "test.h"
#include "test_loop.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

static uv_loop_t loop;
static uv_timer_t tick; /* wakes UV_RUN_ONCE up so deadlines are honoured */
static ten_hv_t hv;
static char data_dir[] = "/tmp/ten-unit-reload-XXXXXX";
static ten_config_t *with_cycle, *without_cycle;

static void on_tick(uv_timer_t *t) { (void)t; }

static ten_config_t *load(const char *name, bool cycle) {
  char path[256];
  snprintf(path, sizeof path, "%s/%s.lua", data_dir, name);
  FILE *f = fopen(path, "w");
  if (!f) return NULL;
  fprintf(f,
          "settings { data_dir = [==[%s]==], drain_timeout = 5 }\n"
          "service \"keep\" { command = os.getenv(\"TEN_HELLO_BIN\"), stop_timeout = 5 }\n",
          data_dir);
  if (cycle)
    fprintf(f, "service \"cycle\" { command = os.getenv(\"TEN_HELLO_BIN\"), stop_timeout = 5 }\n"
               "instances { keep = { \"k1\" }, cycle = { \"c1\" } }\n");
  else
    fprintf(f, "instances { keep = { \"k1\" } }\n");
  fclose(f);
  ten_config_t *config = NULL;
  ten_err_t err;
  if (ten_config_load(path, NULL, &config, &err)) fprintf(stderr, "config: %s\n", err.msg);
  return config;
}

static void apply(ten_config_t *config) {
  ten_buf_t summary = TEN_BUF_INIT;
  ten_hv_apply_config(&hv, config, &summary);
  ten_buf_free(&summary);
}

/* Turns the loop until pred() holds or `seconds` pass. */
static bool run_until(bool (*pred)(void), double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  while (!pred() && ten_now_ms() < deadline) uv_run(&loop, UV_RUN_ONCE);
  return pred();
}

static ten_instance_t *c1(void) { return ten_hv_find_key(&hv, "cycle:c1"); }
static bool c1_ready(void) { return c1() && c1()->state == TEN_INST_READY; }
static bool c1_gone(void) { return c1() == NULL && hv.live_procs == 1; /* keep:k1 only */ }

/* Every process the hypervisor watches belongs to an instance in the map:
 * the watched count equals the instances with a process. */
static bool every_process_tracked(void) {
  unsigned with_proc = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv.instances, &it, &e);)
    if (((ten_instance_t *)e->value)->proc) with_proc++;
  if (with_proc != hv.live_procs)
    fprintf(stderr, "  %u processes watched, %u instances have one\n", hv.live_procs, with_proc);
  return with_proc == hv.live_procs;
}

static bool process_gone(pid_t pid) {
  while (waitpid(pid, NULL, WNOHANG) > 0) {
  }
  return kill(pid, 0) < 0 && errno == ESRCH;
}

static int woken_status = 1;
static void on_woken(ten_hv_waiter_t *w, int status) {
  (void)w;
  woken_status = status;
}

/* The service goes while a request is in flight on c1, and a request then
 * asks for c1: it must not start again (its service is gone), and c1 is
 * forgotten once its process has exited. */
TEST(wake_while_removed) {
  ten_instance_t *inst = c1();
  CHECK(inst && run_until(c1_ready, 10));
  if (!c1_ready()) return;
  pid_t pid = inst->pid;
  ten_instance_acquire(inst); /* a request in flight: it drains, not stops */
  apply(without_cycle);
  CHECK_EQ(inst->state, TEN_INST_DRAINING);
  ten_hv_waiter_t w = {0};
  w.cb = on_woken;
  CHECK_EQ(ten_hv_wake(inst, &w), UV_EPERM);
  ten_instance_release(inst);
  CHECK(run_until(c1_gone, 10));
  CHECK(process_gone(pid));
  CHECK(every_process_tracked());
  CHECK_EQ(woken_status, 1); /* never queued, so never called */
}

/* The service goes and comes back while c1 drains: c1 is declared again,
 * so it runs again (a new process) and is not forgotten. */
TEST(restored_while_draining) {
  apply(with_cycle);
  CHECK(run_until(c1_ready, 10));
  ten_instance_t *inst = c1();
  if (!inst) return;
  pid_t pid = inst->pid;
  ten_instance_acquire(inst);
  apply(without_cycle);
  CHECK_EQ(inst->state, TEN_INST_DRAINING);
  apply(with_cycle);
  CHECK(c1() == inst);
  ten_instance_release(inst);
  CHECK(run_until(c1_ready, 10));
  CHECK(c1() == inst);
  if (c1() != inst) return; /* forgotten: freed, do not look at it */
  CHECK(inst->pid != pid && inst->pid > 0);
  CHECK(process_gone(pid));
  CHECK(every_process_tracked());
}

/* Many cycles, each with a request waking c1 between removal and restore. */
TEST(cycles) {
  for (int i = 0; i < 10; i++) {
    ten_instance_t *inst = c1();
    CHECK(inst && run_until(c1_ready, 10));
    if (!c1_ready()) return;
    ten_instance_acquire(inst);
    apply(without_cycle);
    ten_hv_waiter_t w = {0};
    w.cb = on_woken;
    ten_hv_wake(inst, &w);
    apply(with_cycle);
    ten_hv_unwait(&w);
    ten_instance_release(inst);
    CHECK(every_process_tracked());
  }
  CHECK(run_until(c1_ready, 10));
  CHECK(every_process_tracked());
}

static bool shutdown_done;
static void on_shutdown(ten_hv_t *h) {
  (void)h;
  shutdown_done = true;
}

int main(void) {
  if (!getenv("TEN_HELLO_BIN") || !mkdtemp(data_dir)) {
    CHECK(!"setup failed: TEN_HELLO_BIN unset (run through ctest) or no temp dir");
    return test_report();
  }
  ten_log_set_level(TEN_LOG_WARN);
  with_cycle = load("with", true);
  without_cycle = load("without", false);
  CHECK(with_cycle && without_cycle);
  if (with_cycle && without_cycle) {
    CHECK_EQ(uv_loop_init(&loop), 0);
    uv_timer_init(&loop, &tick);
    uv_timer_start(&tick, on_tick, 50, 50);
    CHECK_EQ(ten_hv_init(&hv, &loop, with_cycle), 0);
    ten_hv_start_declared(&hv);

    RUN(wake_while_removed);
    RUN(restored_while_draining);
    RUN(cycles);

    ten_hv_shutdown(&hv, on_shutdown);
    CHECK(test_run_until(&loop, &shutdown_done, 20));
    CHECK_EQ(hv.live_procs, 0);
    CHECK_EQ(hv.live_instances, 0);
    /* A shutdown that did not finish leaves watches open: running the loop
     * to its end would hang. */
    if (shutdown_done) {
      ten_hv_free(&hv);
      uv_close((uv_handle_t *)&tick, NULL);
      uv_run(&loop, UV_RUN_DEFAULT);
      CHECK_EQ(uv_loop_close(&loop), 0); /* no handle left open */
    }
  }
  if (with_cycle) ten_config_unref(with_cycle);
  if (without_cycle) ten_config_unref(without_cycle);
  CHECK_EQ(test_rm_rf(data_dir), 0);
  return test_report();
}
