/* sandbox.c: what Lua code inside the server can reach.
 *
 * Two layers. The state's own globals (_G) are what the embedded modules
 * of lua/tenement/ run with: the standard libraries without io, dofile,
 * loadfile, os.exit/execute/remove/rename/tmpname/setlocale, string.dump,
 * package.loadlib and any searcher but preload and the embedded modules;
 * with collectgarbage limited to collect/count/step/isrunning; with the
 * pattern and table functions bounded by the call's deadline; with xpcall
 * and coroutine.wrap/close that run no user code once time ran out (see
 * below). debug is there in full, because the DSL reads the caller's line.
 *
 * User code (tenement.lua, its hooks, REPL chunks) runs in an environment
 * from tenL_push_env: a table of its own holding the safe base functions,
 * string (the real table: string methods reach it anyway), copies of table,
 * math, utf8 and coroutine, os with clock, date, difftime, getenv and time,
 * debug with traceback only; `load` of text only, into this environment by
 * default; setmetatable refusing __gc (a finalizer would run wherever the
 * collector happens to, outside any call's deadline). What is left out
 * raises "<name> is not available ..." when touched, so a config copied
 * from elsewhere fails with a message, not a nil call.
 */
#include "policy/embedded.h"
#include "policy/lua.h"
#include "policy/lua_internal.h"

#include <lauxlib.h>
#include <lua-cjson.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

#define UNAVAILABLE "is not available to tenement's Lua (it runs inside the server)"

/* ------------------------------------------------------------ the state */

static void set_unavailable(lua_State *L, const char *field, const char *full_name);

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

static void remove_fields(lua_State *L, const char *const *names) {
  for (; *names; names++) {
    lua_pushnil(L);
    lua_setfield(L, -2, *names);
  }
}

/* collectgarbage without the options that hand the collector to user code. */
static int limited_collectgarbage(lua_State *L) {
  static const char *const allowed[] = {"collect", "count", "step", "isrunning", NULL};
  const char *opt = luaL_optstring(L, 1, "collect");
  bool ok = false;
  for (const char *const *a = allowed; *a; a++) ok = ok || !strcmp(opt, *a);
  if (!ok)
    return luaL_error(L, "collectgarbage(\"%s\") is not available: the server runs the collector",
                      opt);
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, LUA_MULTRET);
  return lua_gettop(L);
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
  static const luaL_Reg libs[] = {
      {LUA_GNAME, luaopen_base},          {LUA_LOADLIBNAME, luaopen_package},
      {LUA_COLIBNAME, luaopen_coroutine}, {LUA_TABLIBNAME, luaopen_table},
      {LUA_OSLIBNAME, luaopen_os},        {LUA_STRLIBNAME, luaopen_string},
      {LUA_MATHLIBNAME, luaopen_math},    {LUA_UTF8LIBNAME, luaopen_utf8},
      {LUA_DBLIBNAME, luaopen_debug},     {NULL, NULL},
  };
  for (const luaL_Reg *lib = libs; lib->func; lib++) {
    luaL_requiref(L, lib->name, lib->func, 1);
    lua_pop(L, 1);
  }

  lua_pushglobaltable(L);
  remove_fields(L, (const char *const[]){"dofile", "loadfile", NULL});
  lua_getfield(L, -1, "collectgarbage");
  lua_pushcclosure(L, limited_collectgarbage, 1);
  lua_setfield(L, -2, "collectgarbage");
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

  lua_getglobal(L, LUA_OSLIBNAME);
  remove_fields(L, (const char *const[]){"exit", "execute", "remove", "rename", "tmpname",
                                         "setlocale", NULL});
  lua_pop(L, 1);
  lua_getglobal(L, LUA_STRLIBNAME);
  set_unavailable(L, "dump", "string.dump"); /* bytecode could not be loaded anyway */
  ten__lua_bound_strings(L);
  lua_pop(L, 1);
  lua_getglobal(L, LUA_TABLIBNAME);
  ten__lua_bound_tables(L);
  lua_pop(L, 1);

  /* require finds preloaded and embedded modules, nothing on disk: the
   * binary runs the Lua it was built with, and no C library is loaded. */
  lua_getglobal(L, LUA_LOADLIBNAME);
  remove_fields(L, (const char *const[]){"loadlib", "searchpath", NULL});
  lua_getfield(L, -1, "searchers");
  lua_createtable(L, 2, 0);
  lua_rawgeti(L, -2, 1); /* the preload searcher */
  lua_rawseti(L, -2, 1);
  lua_pushcfunction(L, embedded_searcher);
  lua_rawseti(L, -2, 2);
  lua_setfield(L, -3, "searchers");
  lua_pop(L, 1);
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "path");
  lua_pushliteral(L, "");
  lua_setfield(L, -2, "cpath");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_cjson);
  lua_setfield(L, -2, "cjson");
  lua_pop(L, 2);
  return 0;
}

/* ------------------------------------------------------------ user code */

/* A function left out: raises its name when called. */
static int unavailable(lua_State *L) {
  return luaL_error(L, "%s " UNAVAILABLE, lua_tostring(L, lua_upvalueindex(1)));
}

/* __index of a library left out (io, package): raises lib.key. */
static int unavailable_field(lua_State *L) {
  return luaL_error(L, "%s.%s " UNAVAILABLE, lua_tostring(L, lua_upvalueindex(1)),
                    luaL_tolstring(L, 2, NULL));
}

static void set_unavailable(lua_State *L, const char *field, const char *full_name) {
  lua_pushstring(L, full_name);
  lua_pushcclosure(L, unavailable, 1);
  lua_setfield(L, -2, field);
}

/* A table whose fields (other than those already in it) are unavailable. */
static void guard_table(lua_State *L, const char *lib) {
  lua_createtable(L, 0, 1);
  lua_pushstring(L, lib);
  lua_pushcclosure(L, unavailable_field, 1);
  lua_setfield(L, -2, "__index");
  lua_setmetatable(L, -2);
}

static int sandbox_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    if (lua_rawget(L, 2) != LUA_TNIL)
      return luaL_error(L, "__gc metamethods are not available to tenement's Lua: a finalizer "
                           "would run outside any time limit");
    lua_pop(L, 1);
  }
  lua_pushvalue(L, lua_upvalueindex(1));
  lua_insert(L, 1);
  lua_call(L, lua_gettop(L) - 1, 1);
  return 1;
}

/* load(chunk [, chunkname [, mode [, env]]]): text only; without env, the
 * chunk runs in the environment this load belongs to, not in _G. */
static int sandbox_load(lua_State *L) {
  bool has_env = lua_gettop(L) >= 4;
  lua_settop(L, 4);
  lua_pushvalue(L, lua_upvalueindex(1)); /* Lua's load */
  lua_pushvalue(L, 1);
  lua_pushvalue(L, 2);
  lua_pushliteral(L, "t");
  lua_pushvalue(L, has_env ? 4 : lua_upvalueindex(2));
  lua_call(L, 4, LUA_MULTRET);
  return lua_gettop(L) - 4;
}

/* Copies the listed fields of global library `lib` into a new table. */
static void push_copy(lua_State *L, const char *lib, const char *const *only) {
  lua_getglobal(L, lib);
  lua_newtable(L);
  if (only) {
    for (; *only; only++) {
      lua_getfield(L, -2, *only);
      lua_setfield(L, -2, *only);
    }
  } else {
    lua_pushnil(L);
    while (lua_next(L, -3)) {
      lua_pushvalue(L, -2);
      lua_insert(L, -2);
      lua_settable(L, -4);
    }
  }
  lua_remove(L, -2);
}

void tenL_push_env(lua_State *L) {
  static const char *const base[] = {
      "assert",   "error",    "getmetatable", "ipairs",   "next",           "pairs",  "pcall",
      "print",    "rawequal", "rawget",       "rawlen",   "rawset",         "select", "tonumber",
      "tostring", "type",     "xpcall",       "_VERSION", "collectgarbage", NULL};
  lua_newtable(L);
  int env = lua_gettop(L);
  for (const char *const *name = base; *name; name++) {
    lua_getglobal(L, *name);
    lua_setfield(L, env, *name);
  }
  lua_pushvalue(L, env);
  lua_setfield(L, env, "_G");
  lua_getglobal(L, "setmetatable");
  lua_pushcclosure(L, sandbox_setmetatable, 1);
  lua_setfield(L, env, "setmetatable");
  lua_getglobal(L, "load");
  lua_pushvalue(L, env);
  lua_pushcclosure(L, sandbox_load, 2);
  lua_setfield(L, env, "load");
  for (const char *const *name = (const char *const[]){"require", "dofile", "loadfile", NULL};
       *name; name++)
    set_unavailable(L, *name, *name);

  lua_getglobal(L, LUA_STRLIBNAME);
  lua_setfield(L, env, LUA_STRLIBNAME);
  for (const char *const *lib = (const char *const[]){LUA_TABLIBNAME, LUA_MATHLIBNAME,
                                                      LUA_UTF8LIBNAME, LUA_COLIBNAME, NULL};
       *lib; lib++) {
    push_copy(L, *lib, NULL);
    lua_setfield(L, env, *lib);
  }

  push_copy(L, LUA_OSLIBNAME,
            (const char *const[]){"clock", "date", "difftime", "getenv", "time", NULL});
  for (const char *const *name = (const char *const[]){"exit", "execute", "remove", "rename",
                                                       "tmpname", "setlocale", NULL};
       *name; name++) {
    char full[32];
    snprintf(full, sizeof full, "os.%s", *name);
    set_unavailable(L, *name, full);
  }
  lua_setfield(L, env, LUA_OSLIBNAME);

  push_copy(L, LUA_DBLIBNAME, (const char *const[]){"traceback", NULL});
  guard_table(L, LUA_DBLIBNAME);
  lua_setfield(L, env, LUA_DBLIBNAME);
  lua_newtable(L);
  guard_table(L, LUA_IOLIBNAME);
  lua_setfield(L, env, LUA_IOLIBNAME);
  lua_newtable(L);
  guard_table(L, LUA_LOADLIBNAME);
  lua_setfield(L, env, LUA_LOADLIBNAME);
}
