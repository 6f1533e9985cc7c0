/* sandbox.c: the libraries Lua code inside the server runs with.
 *
 * The standard libraries, cjson preloaded, the modules embedded from
 * lua/tenement/ found by require before files on disk; the pattern and
 * table functions bounded by the call's deadline (lua_strings.c,
 * lua_tables.c); xpcall and coroutine.wrap/close that run no user code
 * once time ran out (see below).
 */
#include "policy/embedded.h"
#include "policy/lua.h"
#include "policy/lua_internal.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

/* ------------------------------------------------------------ the state */

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

/* Errors that the count hook raises leave hooks off in their thread until
 * a pcall catches them (ldo.c: luaD_hook sets allowhook back only when the
 * hook returns). Lua code that runs in between could loop beyond any
 * deadline; there are two places where it does: an xpcall's message
 * handler, and the __close handlers of a dead coroutine that wrap or close
 * resets. The three functions below keep user code out of both. */

static int call_done(lua_State *L, int status, lua_KContext ctx) {
  (void)status, (void)ctx;
  return lua_gettop(L);
}

/* Calls upvalue 1 with the arguments, yieldable. */
static int call_original(lua_State *L) {
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_callk(L, lua_gettop(L) - 1, LUA_MULTRET, 0, call_done);
  return lua_gettop(L);
}

/* The message handler xpcall gets: the user's, unless time ran out. */
static int guarded_handler(lua_State *L) {
  if (ten__lua_expired(L)) return 1; /* the error as it is */
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

static int sandbox_xpcall(lua_State *L) {
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 2);
  lua_pushcclosure(L, guarded_handler, 1);
  lua_replace(L, 2);
  return call_original(L);
}

/* A wrapped coroutine's function: lcorolib's auxwrap, except that a
 * coroutine stopped by the time limit is not reset. */
static int resume_wrapped(lua_State *L) {
  lua_State *co = lua_tothread(L, lua_upvalueindex(1));
  int narg = lua_gettop(L), nres;
  if (!lua_checkstack(co, narg)) return luaL_error(L, "too many arguments to resume");
  lua_xmove(L, co, narg);
  int status = lua_resume(co, L, narg, &nres);
  if (status == LUA_OK || status == LUA_YIELD) {
    if (!lua_checkstack(L, nres + 1)) {
      lua_pop(co, nres);
      return luaL_error(L, "too many results to resume");
    }
    lua_xmove(co, L, nres);
    return nres;
  }
  lua_xmove(co, L, 1); /* the error */
  status = lua_status(co);
  if (status != LUA_OK && status != LUA_YIELD && !ten__lua_stopped(L, co)) {
    status = lua_resetthread(co); /* runs its __close handlers */
    lua_xmove(co, L, 1);
  }
  if (status != LUA_ERRMEM && lua_type(L, -1) == LUA_TSTRING) {
    luaL_where(L, 1);
    lua_insert(L, -2);
    lua_concat(L, 2);
  }
  return lua_error(L);
}

static int sandbox_wrap(lua_State *L) {
  luaL_checktype(L, 1, LUA_TFUNCTION);
  lua_State *co = lua_newthread(L);
  lua_pushvalue(L, 1);
  lua_xmove(L, co, 1);
  lua_pushcclosure(L, resume_wrapped, 1);
  return 1;
}

static int sandbox_close(lua_State *L) {
  lua_State *co = lua_tothread(L, 1);
  if (co && ten__lua_stopped(L, co)) {
    lua_pushboolean(L, 0);
    lua_pushliteral(L, "the coroutine was stopped by a time limit");
    return 2;
  }
  return call_original(L);
}

int ten__lua_open_libs(lua_State *L) {
  luaL_openlibs(L);
  lua_getglobal(L, LUA_GNAME);
  lua_getfield(L, -1, "xpcall");
  lua_pushcclosure(L, sandbox_xpcall, 1);
  lua_setfield(L, -2, "xpcall");
  lua_pop(L, 1);

  lua_getglobal(L, LUA_COLIBNAME);
  lua_pushcfunction(L, sandbox_wrap);
  lua_setfield(L, -2, "wrap");
  lua_getfield(L, -1, "close");
  lua_pushcclosure(L, sandbox_close, 1);
  lua_setfield(L, -2, "close");
  lua_pop(L, 1);
  lua_getglobal(L, LUA_STRLIBNAME);
  ten__lua_bound_strings(L);
  lua_pop(L, 1);
  lua_getglobal(L, LUA_TABLIBNAME);
  ten__lua_bound_tables(L);
  lua_pop(L, 1);

  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 1);

  /* Embedded modules are found second, after preload: they win over files on
   * disk so the binary always runs the Lua it was built with. */
  lua_getglobal(L, LUA_LOADLIBNAME);
  lua_getfield(L, -1, "searchers");
  lua_Integer n = luaL_len(L, -1);
  for (lua_Integer i = n; i >= 2; i--) {
    lua_rawgeti(L, -1, i);
    lua_rawseti(L, -2, i + 1);
  }
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, 2);
  lua_pop(L, 2);
  return 0;
}
