/* test_lua.c: the Lua states of policy/lua.h. Deadlines that nest and
 * cannot be caught (not by pcall, xpcall handlers, coroutines or __close
 * handlers), the bounded string and table functions behaving like Lua's
 * own, and the sandbox environment. */
#include "policy/lua.h"
#include "test.h"

#include <lauxlib.h>
#include <uv.h>

static const tenL_limit_t short_limit = {"test call", 50};

static const char env_key;

/* Pushes L's sandbox environment for these tests (one per state, so
 * globals persist from one run to the next). */
static void push_test_env(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &env_key) == LUA_TTABLE) return;
  lua_pop(L, 1);
  tenL_push_env(L);
  lua_pushvalue(L, -1);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &env_key);
}

/* Runs `code` in L's sandbox environment; returns tenL_pcall's rc. */
static int run(lua_State *L, const char *code, const tenL_limit_t *limit, ten_err_t *err) {
  if (luaL_loadbufferx(L, code, strlen(code), "=test", "t") != LUA_OK) {
    ten_errf(err, UV_EINVAL, "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return UV_EINVAL;
  }
  push_test_env(L);
  lua_setupvalue(L, -2, 1);
  return tenL_pcall(L, 0, 0, limit, err);
}

static lua_State *new_state(void) { return tenL_newstate(TEN_LUA_MEMORY_LIMIT); }

/* The replaced functions answer as Lua's own do. */
TEST(bounded_functions_behave_like_lua) {
  lua_State *L = new_state();
  ten_err_t err = {{0}};
  static const char code[] =
      "assert(('hello world'):find('o w') == 5)\n"
      "assert(('hello world'):find('o', 6) == 8)\n"
      "assert(('a.b'):find('.', 1, true) == 2)\n"
      "assert(('x'):find('') == 1 and ('x'):find('', 10) == nil)\n"
      "local s, e, cap = ('key = value'):find('(%w+)%s*=')\n"
      "assert(s == 1 and e == 5 and cap == 'key')\n"
      "assert(('  trim  '):match('^%s*(.-)%s*$') == 'trim')\n"
      "assert(('f(a(b)c)d'):match('%b()') == '(a(b)c)')\n"
      "assert(('THE (quick) fox'):find('%f[%a]%a+%f[%A]') == 1)\n"
      "assert(select(2, ('abc'):gsub('', '-')) == 4)\n"
      "assert(('hello'):gsub('l+', function(m) return #m end) == 'he2o')\n"
      "assert(('$name $x'):gsub('%$(%w+)', { name = 'ten' }) == 'ten $x')\n"
      "assert(('abab'):gsub('(a)(b)', '%2%1') == 'baba')\n"
      "assert(('aaa'):gsub('a', 'b', 2) == 'bba')\n"
      "local words = {}\n"
      "for k, v in ('a=1, b=2'):gmatch('(%w+)=(%w+)') do words[#words + 1] = k .. v end\n"
      "assert(table.concat(words, ' ') == 'a1 b2')\n"
      "assert(('()'):match('()') == 1)\n"
      "assert(('x'):rep(3, ',') == 'x,x,x' and ('x'):rep(0) == '' and (''):rep(5) == '')\n"
      "assert(not pcall(string.rep))\n"
      "assert(not pcall(string.find, 'a', '[a'))\n"
      "local t = { 1, 2, 3 }\n"
      "table.insert(t, 4); table.insert(t, 1, 0)\n"
      "assert(table.concat(t, ',') == '0,1,2,3,4')\n"
      "assert(table.remove(t) == 4 and table.remove(t, 1) == 0)\n"
      "assert(table.concat(table.move(t, 1, 3, 2), ',') == '1,1,2,3')\n"
      "assert(table.concat({ 1, 2, 3 }, '-', 2, 3) == '2-3')\n"
      "local u = { 5, 3, 9, 1 }\n"
      "table.sort(u); assert(table.concat(u, ',') == '1,3,5,9')\n"
      "table.sort(u, function(a, b) return a > b end); assert(u[1] == 9)\n"
      "assert(not pcall(table.sort, { 1, 'x' }))\n"
      "assert(not pcall(table.insert, {}, 5, 1))\n";
  int rc = run(L, code, &tenL_config_limit, &err);
  if (rc) fprintf(stderr, "  %s\n", err.msg);
  CHECK_EQ(rc, 0);
  tenL_close(L);
}

/* What user code sees, and what it does not. */
TEST(sandbox_environment) {
  lua_State *L = new_state();
  ten_err_t err = {{0}};
  static const char code[] =
      "assert(_G.string == string and _G.print == print and _G._G == _G)\n"
      "assert(type(os.getenv) == 'function' and type(os.time) == 'function')\n"
      "assert(type(debug.traceback) == 'function')\n"
      "for _, f in ipairs { 'os.exit', 'os.execute', 'os.remove', 'os.rename', 'os.tmpname',\n"
      "    'os.setlocale', 'io.open', 'io.write', 'package.loadlib', 'package.path',\n"
      "    'debug.sethook', 'debug.getinfo', 'debug.getupvalue', 'string.dump', 'require',\n"
      "    'dofile', 'loadfile' } do\n"
      "  local ok, msg = pcall(load('local _ = ' .. f .. '()'))\n"
      "  assert(not ok and msg:find(f .. ' is not available', 1, true), f .. ': ' .. "
      "tostring(msg))\n"
      "end\n"
      "assert(warn == nil and rawget(_G, 'loadstring') == nil)\n"
      "x = 1; assert(load('return x')() == 1)\n"
      "assert(load('return x', 'c', 't', { x = 2 })() == 2)\n"
      "assert(not load('\\27Lua'))\n"
      "assert(collectgarbage('count') > 0 and collectgarbage('isrunning'))\n"
      "for _, opt in ipairs { 'stop', 'restart', 'incremental', 'generational', 'setpause' } do\n"
      "  assert(not pcall(collectgarbage, opt))\n"
      "end\n"
      "assert(not pcall(setmetatable, {}, { __gc = true }))\n"
      "assert(getmetatable(setmetatable({}, { __index = {} })).__index)\n";
  int rc = run(L, code, &tenL_config_limit, &err);
  if (rc) fprintf(stderr, "  %s\n", err.msg);
  CHECK_EQ(rc, 0);
  tenL_close(L);
}

/* Ways to keep running past the deadline; each must end the call. */
TEST(deadline_cannot_be_caught) {
  static const char *const escapes[] = {
      "while true do end",
      "while true do pcall(function() while true do end end) end",
      "local spin = function() while true do end end\n"
      "while true do xpcall(spin, spin) end",
      "while true do\n"
      "  local co = coroutine.create(function() while true do end end)\n"
      "  coroutine.resume(co)\n"
      "  pcall(coroutine.close, co)\n"
      "end",
      "while true do\n"
      "  pcall(coroutine.wrap(function()\n"
      "    local guard <close> = setmetatable({}, { __close = function() while true do end end })\n"
      "    while true do end\n"
      "  end))\n"
      "end",
      "local t = setmetatable({}, { __index = function(t, k) while true do end end })\n"
      "while true do pcall(function() return t.x end) end",
      "while true do pcall(string.rep, 'x', 10) end",
      "while true do pcall(error, setmetatable({}, { __tostring = function() while true do end end "
      "})) "
      "end",
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(escapes); i++) {
    lua_State *L = new_state();
    ten_err_t err = {{0}};
    CHECK_EQ(run(L, escapes[i], &short_limit, &err), UV_EINVAL);
    if (!strstr(err.msg, "test call exceeded its time limit of 50 ms"))
      fprintf(stderr, "  escape %zu: %s\n", i, err.msg);
    CHECK_CONTAINS(err.msg, "test call exceeded its time limit of 50 ms");
    /* The state is usable again, with a fresh deadline. */
    CHECK_EQ(run(L, "local n = 0 for i = 1, 1000 do n = n + i end", &short_limit, &err), 0);
    tenL_close(L);
  }
}

/* A coroutine stopped by the time limit keeps hooks off (Lua's rule for
 * errors raised by a hook), so its __close handlers must never run, not
 * even in a later call. */
TEST(stopped_coroutine_is_not_closed_later) {
  lua_State *L = new_state();
  ten_err_t err = {{0}};
  CHECK_EQ(run(L,
               "co = coroutine.create(function()\n"
               "  local guard <close> = setmetatable({}, { __close = function() while true do end "
               "end })\n"
               "  while true do end\n"
               "end)\n"
               "coroutine.resume(co)",
               &short_limit, &err),
           UV_EINVAL);
  CHECK_CONTAINS(err.msg, "time limit");
  int rc = run(L,
               "local ok, msg = coroutine.close(co)\n"
               "assert(not ok and msg:find('stopped by a time limit'))",
               &short_limit, &err);
  if (rc) fprintf(stderr, "  %s\n", err.msg);
  CHECK_EQ(rc, 0);
  tenL_close(L);
}

/* Calls nest: the inner one gets the sooner deadline, an inner timeout
 * leaves the outer call running, and once the outer call is out of time
 * an inner call is refused at once. */
static int nested(lua_State *L) {
  static const tenL_limit_t inner = {"inner call", 30};
  ten_err_t err;
  const char *code = lua_tostring(L, 1);
  luaL_loadstring(L, code);
  int rc = tenL_pcall(L, 0, 0, &inner, &err);
  lua_pushinteger(L, rc);
  lua_pushstring(L, rc ? err.msg : "");
  return 2;
}

TEST(calls_nest) {
  lua_State *L = new_state();
  push_test_env(L);
  lua_pushcfunction(L, nested);
  lua_setfield(L, -2, "nested");
  lua_pop(L, 1);
  ten_err_t err = {{0}};
  int rc = run(L,
               "local rc, msg = nested('while true do end')\n"
               "assert(rc ~= 0 and msg:find('inner call exceeded its time limit of 30 ms'), msg)\n"
               "local n = 0 for i = 1, 1e5 do n = n + i end\n"
               "rc = nested('local x = 1')\n"
               "assert(rc == 0)",
               &tenL_config_limit, &err);
  if (rc) fprintf(stderr, "  %s\n", err.msg);
  CHECK_EQ(rc, 0);
  /* Once the outer call (50 ms) is out of time, inner calls fail at once. */
  CHECK_EQ(run(L, "while true do nested('while true do end') end", &short_limit, &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "time limit");
  tenL_close(L);
}

/* The memory limit: allocations beyond it fail as Lua errors, and what the
 * state frees counts again. */
TEST(memory_limit) {
  lua_State *L = tenL_newstate((size_t)8 << 20);
  ten_err_t err = {{0}};
  CHECK_EQ(run(L, "local s = string.rep('x', 16 << 20)", &tenL_config_limit, &err), UV_EINVAL);
  CHECK_CONTAINS(err.msg, "memory limit of its Lua state (8 MiB)");
  CHECK_EQ(run(L, "big = string.rep('x', 3 << 20)", &tenL_config_limit, &err), 0);
  CHECK_EQ(run(L, "local s = string.rep('y', 3 << 20)", &tenL_config_limit, &err), UV_EINVAL);
  CHECK_EQ(run(L, "big = nil collectgarbage() local s = string.rep('y', 3 << 20)",
               &tenL_config_limit, &err),
           0);
  /* Caught inside, it is just an error. */
  CHECK_EQ(run(L, "assert(not pcall(string.rep, 'x', 16 << 20))", &tenL_config_limit, &err), 0);
  tenL_close(L);
  tenL_close(NULL);
}

int main(void) {
  RUN(bounded_functions_behave_like_lua);
  RUN(sandbox_environment);
  RUN(deadline_cannot_be_caught);
  RUN(stopped_coroutine_is_not_closed_later);
  RUN(calls_nest);
  RUN(memory_limit);
  return test_report();
}
