/* test_hv.c: the hypervisor on a real loop with the real example app.
 *
 * Everything runs against one config and one uv loop, in order: a healthy
 * start, errors from spawn, stop, restart, an app that fails at start, one
 * that never becomes ready, and finally a shutdown that must leave no process
 * and no open handle behind.
 */
#include "test.h"
#include "test_loop.h"
#include "hv/hv.h"
#include "util/httpc.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <ftw.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixtures */

#define MAX_EVENTS 64

static struct {
  char key[MAX_EVENTS][32];
  ten_instance_state_t from[MAX_EVENTS], to[MAX_EVENTS];
  int count;
  int freed; /* (COUNT, COUNT) notifications: instances being freed */
} events;

static void observer(void *ctx, ten_instance_t *inst, ten_instance_state_t from,
                     ten_instance_state_t to) {
  (void)ctx;
  if (from == TEN_INST_STATE_COUNT && to == TEN_INST_STATE_COUNT) {
    events.freed++;
    return;
  }
  CHECK(from != to);
  CHECK_EQ(inst->state, to); /* observers see the new state in place */
  if (events.count == MAX_EVENTS) return;
  snprintf(events.key[events.count], sizeof events.key[0], "%s", inst->key);
  events.from[events.count] = from;
  events.to[events.count] = to;
  events.count++;
}

/* The transitions of `key` since event index `since`, as "a>b c>d". */
static const char *history(const char *key, int since) {
  static char out[512];
  out[0] = '\0';
  for (int i = since; i < events.count; i++) {
    if (strcmp(events.key[i], key) != 0) continue;
    size_t used = strlen(out);
    snprintf(out + used, sizeof out - used, "%s%s>%s", used ? " " : "",
             ten_instance_state_name(events.from[i]), ten_instance_state_name(events.to[i]));
  }
  return out;
}

static uv_loop_t loop;
static uv_timer_t tick; /* wakes UV_RUN_ONCE up so deadlines are honoured */
static ten_hv_t hv;

static void on_tick(uv_timer_t *t) { (void)t; }

/* Runs the loop until inst is in `state` or `seconds` pass. */
static bool run_until_state(ten_instance_t *inst, ten_instance_state_t state, double seconds) {
  uint64_t deadline = ten_now_ms() + (uint64_t)(seconds * 1000);
  while (inst->state != state && ten_now_ms() < deadline) uv_run(&loop, UV_RUN_ONCE);
  if (inst->state != state)
    fprintf(stderr, "  %s: still %s, waited for %s\n", inst->key,
            ten_instance_state_name(inst->state), ten_instance_state_name(state));
  return inst->state == state;
}

static bool process_gone(pid_t pid) { return kill(pid, 0) < 0 && errno == ESRCH; }

static char data_dir[] = "/tmp/ten-unit-hv-XXXXXX";
static ten_config_t *config;

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
          "service \"hello\" { command = hello, health = \"/health\", restart = \"never\",\n"
          "  start_timeout = 10, stop_timeout = 5 }\n"
          "service \"broken\" { command = hello, env = { HELLO_FAIL_START = \"1\" },\n"
          "  restart = \"never\" }\n"
          "service \"mute\" { command = \"sleep 30\", restart = \"never\", start_timeout = 0.3 }\n"
          "service \"tree\" { command = \"(trap '' TERM; touch {data_dir}/{service}-{id}.ready; \"\n"
          "  .. \"exec sleep 300) & exec \" .. hello,\n"
          "  health = \"/health\", restart = \"never\", stop_timeout = 5 }\n"
          "service \"longsock\" { command = hello,\n"
          "  socket = \"{data_dir}/\" .. string.rep(\"s\", 120) .. \".sock\" }\n",
          hello, data_dir);
  fclose(f);
  ten_err_t err;
  if (ten_config_load(path, NULL, &config, &err)) {
    fprintf(stderr, "config: %s\n", err.msg);
    return false;
  }
  ten_log_set_level(TEN_LOG_WARN);
  /* Orphans of the instances' process groups come to us, not to init, so
   * the process-group test can reap them. */
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  CHECK_EQ(uv_loop_init(&loop), 0);
  uv_timer_init(&loop, &tick);
  uv_timer_start(&tick, on_tick, 50, 50);
  CHECK_EQ(ten_hv_init(&hv, &loop, config), 0);
  CHECK_EQ(ten_hv_observe(&hv, observer, NULL), 0);
  return true;
}

/* ---------------------------------------------------------------- tests */

static pid_t first_pid;

static int probe_status;
static bool probe_done;
static void on_probe(void *ctx, int result) {
  (void)ctx;
  probe_status = result;
  probe_done = true;
}

TEST(spawn_until_ready) {
  ten_err_t err;
  int since = events.count;
  CHECK_EQ(ten_hv_spawn(&hv, "hello", "one", &err), 0);
  ten_instance_t *inst = ten_hv_find_key(&hv, "hello:one");
  CHECK(inst != NULL);
  if (!inst) return;
  CHECK(ten_hv_find(&hv, "hello", 5, "one", 3) == inst);
  CHECK_EQ(inst->state, TEN_INST_STARTING);
  CHECK(inst->pid > 0);
  first_pid = inst->pid;
  CHECK(run_until_state(inst, TEN_INST_READY, 10));
  CHECK_STR(history("hello:one", since), "stopped>starting starting>ready");
  CHECK(inst->ready_ms >= inst->started_ms);
  CHECK_EQ(inst->pid, first_pid);

  /* The socket is where the template says, and the app answers on it. */
  char want[256];
  snprintf(want, sizeof want, "%s/run/hello-one.sock", data_dir);
  CHECK_STR(inst->socket_path, want);
  struct stat st;
  CHECK(stat(want, &st) == 0 && S_ISSOCK(st.st_mode));
  ten_httpc_target_t target = {inst->socket_path, 0};
  int rc = 0;
  probe_done = false;
  CHECK(ten_httpc_get(&loop, &target, "/health", 2000, on_probe, NULL, &rc) != NULL);
  CHECK(test_run_until(&loop, &probe_done, 5));
  CHECK_EQ(probe_status, 200);

  unsigned counts[TEN_INST_STATE_COUNT];
  ten_hv_count(&hv, counts);
  CHECK_EQ(counts[TEN_INST_READY], 1);

  /* The JSON view agrees. */
  ten_buf_t b = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &b);
  ten_hv_to_json(&hv, &w);
  ten_json_t *j = NULL;
  CHECK_EQ(ten_json_parse(b.data, b.len, &j, &err), 0);
  CHECK(j && j->type == TEN_JSON_ARRAY && j->count == 1);
  if (j && j->count == 1) {
    double pid = 0;
    CHECK_STR(ten_json_get_str(&j->items[0], "state"), "ready");
    CHECK_STR(ten_json_get_str(&j->items[0], "service"), "hello");
    CHECK(ten_json_get_num(&j->items[0], "pid", &pid) && (pid_t)pid == first_pid);
  }
  ten_json_free(j);
  ten_buf_free(&b);
}

TEST(spawn_errors) {
  ten_err_t err;
  int since = events.count;
  CHECK_EQ(ten_hv_spawn(&hv, "hello", "one", &err), UV_EEXIST);
  CHECK_CONTAINS(err.msg, "hello:one is already running");
  CHECK_EQ(ten_hv_spawn(&hv, "nope", "one", &err), UV_ENOENT);
  CHECK_CONTAINS(err.msg, "unknown service 'nope'");
  CHECK_CONTAINS(err.msg, "hello");
  static const char *const bad_ids[] = {"", "Bad_Id", "-x", "a b", "a.b", "a:b", "UPPER",
                                        "0123456789012345678901234567890123456789012345678901234567890123"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad_ids); i++)
    CHECK_EQ(ten_hv_spawn(&hv, "hello", bad_ids[i], &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "invalid id");
  CHECK_EQ(events.count, since); /* nothing changed state */
  CHECK_EQ(hv.instances.count, 1);
  CHECK(ten_hv_find_key(&hv, "nope:one") == NULL);

  /* A start that fails before any process exists: failed, with the reason. */
  CHECK_EQ(ten_hv_spawn(&hv, "longsock", "one", &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "longsock:one: cannot start: socket path");
  CHECK_CONTAINS(err.msg, "unix sockets allow 107");
  ten_instance_t *inst = ten_hv_find_key(&hv, "longsock:one");
  CHECK(inst && inst->state == TEN_INST_FAILED && inst->pid == 0);
  CHECK_STR(history("longsock:one", since), "stopped>failed");

  CHECK_EQ(ten_hv_stop(&hv, "hello:missing", &err), UV_ENOENT);
  CHECK_EQ(ten_hv_restart(&hv, "hello:missing", &err), UV_ENOENT);
}

TEST(restart) {
  ten_err_t err;
  ten_instance_t *inst = ten_hv_find_key(&hv, "hello:one");
  if (!inst) return;
  int since = events.count;
  CHECK_EQ(ten_hv_restart(&hv, "hello:one", &err), 0);
  CHECK_EQ(inst->state, TEN_INST_DRAINING);
  CHECK(run_until_state(inst, TEN_INST_READY, 10));
  CHECK_STR(history("hello:one", since),
            "ready>draining draining>stopped stopped>starting starting>ready");
  CHECK(inst->pid > 0 && inst->pid != first_pid);
  CHECK(process_gone(first_pid));
  CHECK_EQ(inst->restarts, 1);
}

TEST(stop) {
  ten_err_t err;
  ten_instance_t *inst = ten_hv_find_key(&hv, "hello:one");
  if (!inst) return;
  pid_t pid = inst->pid;
  int since = events.count;
  CHECK_EQ(ten_hv_stop(&hv, "hello:one", &err), 0);
  CHECK_EQ(inst->state, TEN_INST_DRAINING);
  CHECK_EQ(ten_hv_stop(&hv, "hello:one", &err), UV_EALREADY); /* already stopping */
  CHECK_EQ(ten_hv_spawn(&hv, "hello", "one", &err), UV_EBUSY);
  CHECK(run_until_state(inst, TEN_INST_STOPPED, 10));
  CHECK_STR(history("hello:one", since), "ready>draining draining>stopped");
  CHECK_EQ(inst->pid, 0);
  CHECK(inst->proc == NULL);
  CHECK(process_gone(pid));
  CHECK(inst->last_exit[0] != '\0');
  CHECK_EQ(ten_hv_stop(&hv, "hello:one", &err), UV_EALREADY);
  CHECK_CONTAINS(err.msg, "not running");
}

TEST(failing_app) {
  ten_err_t err;
  int since = events.count;
  CHECK_EQ(ten_hv_spawn(&hv, "broken", "one", &err), 0);
  ten_instance_t *inst = ten_hv_find_key(&hv, "broken:one");
  CHECK(inst != NULL);
  if (!inst) return;
  CHECK(run_until_state(inst, TEN_INST_FAILED, 10));
  CHECK_STR(history("broken:one", since), "stopped>starting starting>failed");
  CHECK_CONTAINS(inst->reason, "exited with status 1");
  CHECK_CONTAINS(inst->reason, "restart = \"never\"");
  CHECK_STR(inst->last_exit, "exited with status 1");
  CHECK_EQ(inst->pid, 0);

  /* A failed instance can be started again (and fails again). */
  since = events.count;
  CHECK_EQ(ten_hv_spawn(&hv, "broken", "one", &err), 0);
  CHECK(run_until_state(inst, TEN_INST_FAILED, 10));
  CHECK_STR(history("broken:one", since), "failed>starting starting>failed");
  CHECK_EQ(inst->restarts, 1);
}

TEST(start_timeout) {
  ten_err_t err;
  int since = events.count;
  CHECK_EQ(ten_hv_spawn(&hv, "mute", "one", &err), 0);
  ten_instance_t *inst = ten_hv_find_key(&hv, "mute:one");
  CHECK(inst != NULL);
  if (!inst) return;
  pid_t pid = inst->pid;
  uint64_t t0 = ten_now_ms();
  CHECK(run_until_state(inst, TEN_INST_FAILED, 10));
  CHECK(ten_now_ms() - t0 >= 250);
  CHECK_STR(history("mute:one", since), "stopped>starting starting>failed");
  CHECK_CONTAINS(inst->reason, "not ready after 0.3 s (start_timeout)");
  CHECK(process_gone(pid));
}

/* proc.c, on_pidfd: whatever the leader left running goes with it. A group
 * member that ignores SIGTERM must be SIGKILLed once the instance's main
 * process has exited. */
TEST(stop_kills_process_group) {
  ten_err_t err;
  CHECK_EQ(ten_hv_spawn(&hv, "tree", "one", &err), 0);
  ten_instance_t *inst = ten_hv_find_key(&hv, "tree:one");
  CHECK(inst != NULL);
  if (!inst) return;
  pid_t pgid = inst->pid; /* the child made itself a group leader */
  CHECK(run_until_state(inst, TEN_INST_READY, 10));
  /* Wait until the background sleep ignores SIGTERM (it then says so). */
  char marker[256];
  snprintf(marker, sizeof marker, "%s/tree-one.ready", data_dir);
  uint64_t deadline = ten_now_ms() + 5000;
  while (access(marker, F_OK) != 0 && ten_now_ms() < deadline) usleep(5000);
  CHECK_EQ(access(marker, F_OK), 0);
  CHECK_EQ(kill(-pgid, 0), 0); /* the group has the app and the sleep */
  CHECK_EQ(ten_hv_stop(&hv, "tree:one", &err), 0);
  CHECK(run_until_state(inst, TEN_INST_STOPPED, 10));
  /* Give a SIGKILL time to land. The orphaned sleep was reparented to this
   * process (a subreaper, see setup): reap it so no zombie keeps the group. */
  deadline = ten_now_ms() + 1000;
  bool gone = false;
  while (!gone && ten_now_ms() < deadline) {
    while (waitpid(-pgid, NULL, WNOHANG) > 0) {
    }
    gone = kill(-pgid, 0) < 0 && errno == ESRCH;
    if (!gone) usleep(10000);
  }
  if (!gone) fprintf(stderr, "  process group %d survived the stop\n", (int)pgid);
  CHECK(gone);
  if (!gone) { /* our own leftover: the group this test started */
    kill(-pgid, SIGKILL);
    while (waitpid(-pgid, NULL, 0) > 0) {
    }
  }
}

static bool shutdown_done;
static void on_shutdown(ten_hv_t *h) {
  CHECK(h == &hv);
  shutdown_done = true;
}

TEST(shutdown) {
  ten_err_t err;
  /* One instance still running when the shutdown starts. */
  CHECK_EQ(ten_hv_spawn(&hv, "hello", "two", &err), 0);
  ten_instance_t *two = ten_hv_find_key(&hv, "hello:two");
  CHECK(two && run_until_state(two, TEN_INST_READY, 10));
  pid_t pid = two ? two->pid : 0;
  int since = events.count;

  ten_hv_shutdown(&hv, on_shutdown);
  ten_hv_shutdown(&hv, on_shutdown); /* the second call does nothing */
  CHECK(hv.shutting_down);
  CHECK_EQ(ten_hv_spawn(&hv, "hello", "three", &err), UV_ECANCELED);
  CHECK_EQ(ten_hv_restart(&hv, "hello:two", &err), UV_ECANCELED);
  CHECK(test_run_until(&loop, &shutdown_done, 10));
  CHECK(pid > 0 && process_gone(pid));
  CHECK_STR(history("hello:two", since), "ready>draining draining>stopped");
  CHECK_STR(history("broken:one", since), "failed>stopped");
  CHECK_STR(history("mute:one", since), "failed>stopped");
  CHECK_STR(history("hello:one", since), ""); /* already stopped */
  CHECK_STR(history("tree:one", since), "");
  CHECK_STR(history("longsock:one", since), "failed>stopped");
  CHECK_EQ(events.freed, 6);
  CHECK_EQ(hv.live_procs, 0);
  CHECK_EQ(hv.live_instances, 0);
  CHECK_EQ(hv.instances.count, 0);
}

int main(void) {
  if (!setup()) {
    CHECK(!"setup failed");
    if (strcmp(data_dir + strlen(data_dir) - 6, "XXXXXX") != 0)
      test_rm_rf(data_dir);
    return test_report();
  }
  RUN(spawn_until_ready);
  RUN(spawn_errors);
  RUN(restart);
  RUN(stop);
  RUN(failing_app);
  RUN(start_timeout);
  RUN(stop_kills_process_group);
  RUN(shutdown);

  if (!shutdown_done) { /* a failed test above: still reap what we started */
    ten_hv_shutdown(&hv, on_shutdown);
    test_run_until(&loop, &shutdown_done, 15);
  }
  ten_hv_free(&hv);
  ten_config_unref(config);
  uv_close((uv_handle_t *)&tick, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0); /* no handle left open */
  CHECK_EQ(test_rm_rf(data_dir), 0);
  return test_report();
}
