#include "policy/lua.h"

#include "policy/embedded.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <string.h>
#include <uv.h>

/* The instruction budget lives in the state's extra space, so the count hook
 * needs no global. */
typedef struct budget {
  long remaining;
} budget_t;

_Static_assert(sizeof(budget_t) <= LUA_EXTRASPACE, "LUA_EXTRASPACE too small");

#define HOOK_EVERY 1000

static budget_t *state_budget(lua_State *L) { return (budget_t *)lua_getextraspace(L); }

static void count_hook(lua_State *L, lua_Debug *ar) {
  budget_t *b = state_budget(L);
  b->remaining -= HOOK_EVERY;
  if (b->remaining < 0) {
    b->remaining = HOOK_EVERY * 10; /* room for the error handler itself */
    /* Name the user's line: the function running is the one looping. */
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
      lua_pushfstring(L, "%s:%d: instruction limit exceeded (runaway loop?)", ar->short_src,
                      ar->currentline);
    else
      lua_pushstring(L, "instruction limit exceeded (runaway loop?)");
    lua_error(L);
  }
}

static int embedded_searcher(lua_State *L) {
  const char *name = luaL_checkstring(L, 1);
  for (const ten_embedded_lua_t *m = ten_embedded_lua; m->name; m++) {
    if (strcmp(m->name, name) != 0) continue;
    char chunkname[256];
    snprintf(chunkname, sizeof chunkname, "@%s", m->path);
    if (luaL_loadbuffer(L, m->source, m->len, chunkname) != LUA_OK) return lua_error(L);
    lua_pushstring(L, m->path);
    return 2;
  }
  lua_pushfstring(L, "no embedded module '%s'", name);
  return 1;
}

lua_State *tenL_newstate(void) {
  lua_State *L = luaL_newstate();
  if (!L) return NULL;
  state_budget(L)->remaining = TEN_LUA_BUDGET_CONFIG;
  luaL_openlibs(L);

  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 1);

  /* Embedded modules are found second, after preload: they win over files on
   * disk so the binary always runs the Lua it was built with. */
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "searchers");
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
  return L;
}

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  /* Only the message: the first line already names the user's file:line,
   * and operators read these in one-line logs. */
  lua_pushstring(L, msg);
  return 1;
}

int tenL_pcall(lua_State *L, int nargs, int nresults, long budget, ten_err_t *err) {
  int base = lua_gettop(L) - nargs; /* the function's index */
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  state_budget(L)->remaining = budget;
  lua_sethook(L, count_hook, LUA_MASKCOUNT, HOOK_EVERY);
  int rc = lua_pcall(L, nargs, nresults, base);
  lua_sethook(L, NULL, 0, 0);
  if (rc != LUA_OK) {
    ten_errf(err, UV_EINVAL, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    lua_settop(L, base - 1);
    return UV_EINVAL;
  }
  lua_remove(L, base);
  return 0;
}

int tenL_require(lua_State *L, const char *name, ten_err_t *err) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  return tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_CONFIG, err);
}
