/* test_hooks.c: hostile hooks. Every hook call ends, in bounded time and
 * memory, with either its answer or an error naming what was refused; the
 * state keeps answering normal calls afterwards. Also prints the cost of a
 * route hook call (not asserted: figures, not a timed test). */
#include "policy/config.h"
#include "policy/hooks.h"
#include "test.h"
#include "util/time.h"

#include <stdlib.h>
#include <unistd.h>
#include <uv.h>

/* Each case is a route hook branch, picked by the request path. The ones
 * that return "a:done" must succeed; the others must fail with `words`. */
static const char hostile_config[] =
    "local cases = {}\n"
    "cases.ok = function() return 'a:ok' end\n"
    /* what the sandbox does not offer */
    "cases.io_open = function() io.open('/tmp/ten-unit-hooks-pwned', 'w') end\n"
    "cases.os_execute = function() os.execute('true') end\n"
    "cases.os_remove = function() os.remove('/tmp/ten-unit-hooks-pwned') end\n"
    "cases.loadlib = function() package.loadlib('libc.so.6', 'abort') end\n"
    "cases.require = function() require('io') end\n"
    "cases.dofile = function() dofile('/etc/hostname') end\n"
    "cases.debug = function() debug.getregistry() end\n"
    "cases.dump = function() string.dump(function() end) end\n"
    "cases.bytecode = function() assert(load('\\27LuaT\\0\\25\\147\\r\\n\\26\\n')) end\n"
    "cases.gc_stop = function() collectgarbage('stop') end\n"
    "cases.gc_metamethod = function() setmetatable({}, { __gc = function() end }) end\n"
    "cases.traceback = function() return debug.traceback('x'):find('^x') and 'a:done' end\n"
    "cases.load_text = function() return load('return \"a:done\"')() end\n"
    "cases.os_exit = function() os.exit(3) end\n"
    "cases.load_exit = function() load('os.exit(3)')() end\n"
    /* time: none of these may hang the caller */
    "cases.sethook = function() debug.sethook(); while true do end end\n"
    "cases.pcall_loop = function()\n"
    "  while true do pcall(function() while true do end end) end\n"
    "end\n"
    "cases.xpcall_loop = function()\n"
    "  local spin = function() while true do end end\n"
    "  while true do xpcall(spin, spin) end\n"
    "end\n"
    "cases.coroutine_loop = function()\n"
    "  while true do coroutine.resume(coroutine.create(function() while true do end end)) end\n"
    "end\n"
    "cases.pattern_find = function() string.rep('a', 1e5):find('.-.-.-.-b') end\n"
    "cases.pattern_method = function() return ('a'):rep(1e5):match('(.-)(.-)(.-)b') end\n"
    "cases.pattern_gsub = function() ('a'):rep(1e5):gsub('.-.-.-b', '') end\n"
    "cases.pattern_gmatch = function() for _ in ('a'):rep(1e5):gmatch('.-.-.-b') do end end\n"
    /* Each of the 1001 empty matches expands a million (empty) %0s, then
     * adds 256 KiB: seconds of work before memory runs out at the 250th or
     * so. Counted, the expansion meets the deadline long before that. */
    "cases.pattern_replacement = function()\n"
    "  ('x'):rep(1000):gsub('', ('%0'):rep(1e6) .. ('y'):rep(1 << 18))\n"
    "end\n"
    "cases.plain_find = function()\n"
    "  return not string.rep('a', 1e6):find(string.rep('a', 1e5) .. 'b', 1, true) and 'a:done'\n"
    "end\n"
    "cases.rep_empty = function() return #string.rep('', math.maxinteger) == 0 and 'a:done' end\n"
    "cases.table_move = function() table.move({}, 1, math.maxinteger - 1, 2) end\n"
    "local function endless()\n"
    "  return setmetatable({}, { __len = function() return (1 << 31) - 2 end,\n"
    "    __index = rawlen, __newindex = rawequal })\n"
    "end\n"
    "cases.table_concat = function()\n"
    "  table.concat(setmetatable({}, { __index = table.concat }), '', 1, math.maxinteger)\n"
    "end\n"
    "cases.table_insert = function() table.insert(endless(), 1, 0) end\n"
    "cases.table_remove = function() table.remove(endless(), 1) end\n"
    "cases.table_sort = function() table.sort(endless()) end\n"
    /* memory */
    "cases.rep_huge = function() return #string.rep('x', 1 << 30) end\n"
    "cases.rep_caught = function()\n"
    "  return not pcall(string.rep, 'x', 1 << 30) and 'a:done'\n"
    "end\n"
    "cases.grow = function() local t = {} for i = 1, 1e9 do t[i] = i end end\n"
    "settings { route = function(req) return cases[req.path:sub(2)]() end }\n"
    "service \"a\" { command = \"x\" }\n";

typedef struct hostile_case {
  const char *path;
  const char *words[2]; /* NULL words[0]: the call must succeed with "a:done" */
} hostile_case_t;

/* Ordered so that on a ten without a sandbox the cases with a wrong answer
 * fail first, then os.exit ends the test, before any case that would hang
 * it or allocate gigabytes. */
static const hostile_case_t hostile_cases[] = {
    {"/io_open", {"io.open is not available", NULL}},
    {"/os_execute", {"os.execute is not available", NULL}},
    {"/os_remove", {"os.remove is not available", NULL}},
    {"/loadlib", {"package.loadlib is not available", NULL}},
    {"/require", {"require is not available", NULL}},
    {"/dofile", {"dofile is not available", NULL}},
    {"/debug", {"debug.getregistry is not available", NULL}},
    {"/dump", {"string.dump is not available", NULL}},
    {"/bytecode", {"attempt to load a binary chunk", NULL}},
    {"/gc_stop", {"collectgarbage(\"stop\") is not available", NULL}},
    {"/gc_metamethod", {"__gc", "not available"}},
    {"/traceback", {NULL, NULL}},
    {"/load_text", {NULL, NULL}},
    {"/os_exit", {"os.exit is not available", NULL}},
    {"/load_exit", {"os.exit is not available", NULL}},
    {"/sethook", {"debug.sethook is not available", NULL}},
    {"/pcall_loop", {"hooks.lua:", "time limit"}},
    {"/xpcall_loop", {"time limit", NULL}},
    {"/coroutine_loop", {"hooks.lua:", "time limit"}},
    {"/pattern_find", {"hooks.lua:", "time limit"}},
    {"/pattern_method", {"hooks.lua:", "time limit"}},
    {"/pattern_gsub", {"hooks.lua:", "time limit"}},
    {"/pattern_gmatch", {"hooks.lua:", "time limit"}},
    {"/pattern_replacement", {"hooks.lua:", "time limit"}},
    {"/plain_find", {NULL, NULL}},
    {"/rep_empty", {NULL, NULL}},
    {"/table_move", {"hooks.lua:", "time limit"}},
    {"/table_concat", {"hooks.lua:", "time limit"}},
    {"/table_insert", {"hooks.lua:", "time limit"}},
    {"/table_remove", {"hooks.lua:", "time limit"}},
    {"/table_sort", {"hooks.lua:", "time limit"}},
    {"/rep_huge", {"memory limit", NULL}},
    {"/rep_caught", {NULL, NULL}},
    {"/grow", {"limit", NULL}},
};

static ten_hook_request_t request_for(const char *path) {
  ten_hook_request_t req = {.method = "GET",
                            .host = "x",
                            .host_len = 1,
                            .path = path,
                            .path_len = strlen(path),
                            .client = "127.0.0.1"};
  return req;
}

static int route(ten_config_t *c, const char *path, char *key, size_t key_len, bool *routed,
                 ten_err_t *err) {
  ten_hook_request_t req = request_for(path);
  return ten_hook_route(c, &req, key, key_len, routed, err);
}

TEST(hostile_route_hooks_end_and_the_state_goes_on) {
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  if (ten_config_load_source("hooks.lua", hostile_config, strlen(hostile_config), NULL, &c, &err)) {
    fprintf(stderr, "  load failed: %s\n", err.msg);
    CHECK(0);
    return;
  }
  for (size_t i = 0; i < TEN_ARRAY_SIZE(hostile_cases); i++) {
    const hostile_case_t *hc = &hostile_cases[i];
    char key[64] = "";
    bool routed = false;
    memset(&err, 0, sizeof err);
    uint64_t start = ten_now_ms();
    int rc = route(c, hc->path, key, sizeof key, &routed, &err);
    uint64_t took = ten_now_ms() - start;
    bool ok;
    if (!hc->words[0]) {
      ok = rc == 0 && routed && !strcmp(key, "a:done");
    } else {
      ok = rc == UV_EINVAL;
      for (int w = 0; w < 2; w++) ok = ok && (!hc->words[w] || strstr(err.msg, hc->words[w]));
    }
    if (!ok)
      fprintf(stderr, "  %s: rc %d, key \"%s\", message \"%s\"\n", hc->path, rc, key, err.msg);
    else
      printf("  %-16s %4llu ms  %s\n", hc->path, (unsigned long long)took,
             rc ? err.msg : "(answered)");
    CHECK(ok);
    /* Whatever the case did, the state answers the next call. */
    routed = false;
    CHECK_EQ(route(c, "/ok", key, sizeof key, &routed, &err), 0);
    CHECK(routed && !strcmp(key, "a:ok"));
  }
  CHECK(access("/tmp/ten-unit-hooks-pwned", F_OK) != 0);
  ten_config_unref(c);
}

/* A hook that keeps what it allocates fills its state up to the memory
 * limit: from then on calls fail with the limit (never an abort of ten),
 * and once the hook lets go, they work again. It hoards 1 MiB per call:
 * string.rep counts its copies against the deadline, and 64 MiB in one
 * call does not fit in 100 ms on a loaded machine or under ASan. */
TEST(state_at_its_memory_limit) {
  static const char config[] = "local hoard = {}\n"
                               "settings { route = function(req)\n"
                               "  if req.path == '/hoard' then\n"
                               "    hoard[#hoard + 1] = string.rep('x', 1 << 20) .. #hoard\n"
                               "  elseif req.path == '/release' then hoard = {} collectgarbage()\n"
                               "  end\n"
                               "  return 'a:' .. req.path:sub(2)\n"
                               "end }\n"
                               "service \"a\" { command = \"x\" }\n";
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load_source("hoard.lua", config, strlen(config), NULL, &c, &err), 0);
  if (!c) return;
  char key[64];
  bool routed;
  /* A call's limit is wall-clock time: one that loses it to a busy
   * machine is made again. */
  int rc = 0;
  for (int calls = 0; calls < 200; calls++) {
    rc = route(c, "/hoard", key, sizeof key, &routed, &err);
    if (rc != 0 && !strstr(err.msg, "time limit")) break;
  }
  CHECK_EQ(rc, UV_EINVAL);
  CHECK_CONTAINS(err.msg, "memory limit");
  for (int i = 0; i < 20; i++) {
    rc = route(c, "/ok", key, sizeof key, &routed, &err);
    CHECK(rc == 0 || strstr(err.msg, "memory limit"));
  }
  CHECK_EQ(route(c, "/release", key, sizeof key, &routed, &err), 0);
  CHECK_EQ(route(c, "/ok", key, sizeof key, &routed, &err), 0);
  CHECK(routed && !strcmp(key, "a:ok"));
  ten_config_unref(c);
}

/* The instance hooks share the call path: a weight hook that catches its
 * own timeout is still cut off, and the next call works. */
TEST(weight_hook_pcall_loop) {
  static const char config[] = "local calls = 0\n"
                               "service \"a\" {\n"
                               "  command = \"x\",\n"
                               "  weight = function(inst)\n"
                               "    calls = calls + 1\n"
                               "    if calls == 1 then\n"
                               "      while true do pcall(function() while true do end end) end\n"
                               "    end\n"
                               "    return 7\n"
                               "  end,\n"
                               "}\n";
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load_source("weight.lua", config, strlen(config), NULL, &c, &err), 0);
  if (!c) return;
  ten_hook_instance_t inst = {.service = "a", .id = "one", .state = "ready", .weight = 100};
  int weight = -1;
  CHECK_EQ(ten_hook_weight(c, c->services[0].weight_ref, &inst, &weight, &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "weight.lua:");
  CHECK_CONTAINS(err.msg, "time limit");
  CHECK_EQ(weight, -1);
  CHECK_EQ(ten_hook_weight(c, c->services[0].weight_ref, &inst, &weight, &err), 0);
  CHECK_EQ(weight, 7);
  ten_config_unref(c);
}

/* Figures for the report: the cost of one route hook call. */
static void bench_route(const char *name, const char *config, const char *path) {
  ten_config_t *c = NULL;
  ten_err_t err;
  if (ten_config_load_source("bench.lua", config, strlen(config), NULL, &c, &err)) {
    fprintf(stderr, "  %s: %s\n", name, err.msg);
    CHECK(0);
    return;
  }
  ten_hook_header_t headers[] = {{"Host", 4, "x", 1}, {"X-Tenant", 8, "acme", 4}};
  ten_hook_request_t req = request_for(path);
  req.headers = headers;
  req.header_count = TEN_ARRAY_SIZE(headers);
  char key[64];
  bool routed;
  enum { CALLS = 200000 };
  uint64_t start = ten_now_ns();
  int failures = 0;
  for (int i = 0; i < CALLS; i++)
    failures += ten_hook_route(c, &req, key, sizeof key, &routed, &err) != 0;
  uint64_t ns = ten_now_ns() - start;
  CHECK_EQ(failures, 0);
  printf("  bench: %-28s %6.0f ns/call\n", name, (double)ns / CALLS);
  ten_config_unref(c);
}

TEST(route_hook_cost) {
  bench_route(
      "route returns nil",
      "settings { route = function(req) return nil end }\nservice \"a\" { command = \"x\" }\n",
      "/");
  bench_route("route reads a header",
              "settings { route = function(req)\n"
              "  local t = req.headers['x-tenant']\n"
              "  if t then return 'a:' .. t end\n"
              "end }\nservice \"a\" { command = \"x\" }\n",
              "/");
  bench_route("route matches a header",
              "settings { route = function(req)\n"
              "  local t = req.headers['x-tenant']\n"
              "  local id = t and t:match('^%s*([%w_-]+)%s*$')\n"
              "  if id then return 'a:' .. id end\n"
              "end }\nservice \"a\" { command = \"x\" }\n",
              "/");
}

int main(void) {
  RUN(hostile_route_hooks_end_and_the_state_goes_on);
  RUN(state_at_its_memory_limit);
  RUN(weight_hook_pcall_loop);
  RUN(route_hook_cost);
  return test_report();
}
