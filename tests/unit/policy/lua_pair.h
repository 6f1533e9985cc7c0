/* lua_pair.h: one Lua driver loaded into two states, one with stock Lua's
 * libraries (luaL_openlibs) and one of tenL_newstate, so a differential
 * test can ask both the same question and compare the answers.
 *
 * The driver is a chunk returning a table of functions; each returns one
 * string, a transcript of what it saw. It must only use functions that
 * tenement does not replace to build that string (`..`, string.format,
 * tostring, math), or a bug could hide itself in both transcripts.
 */
#ifndef TEN_TEST_LUA_PAIR_H
#define TEN_TEST_LUA_PAIR_H

#include "policy/lua.h"

#include <lauxlib.h>
#include <lualib.h>
#include <stdio.h>
#include <string.h>

typedef struct lua_pair {
  lua_State *stock, *ours;
} lua_pair_t;

/* An argument of a driver call: a string (str, len) or an integer. */
typedef struct lua_pair_arg {
  const char *str; /* NULL: the integer */
  size_t len;
  lua_Integer integer;
} lua_pair_arg_t;

#define PAIR_STR(s, n) ((lua_pair_arg_t){.str = (s), .len = (n)})
#define PAIR_INT(i)    ((lua_pair_arg_t){.integer = (i)})

static inline int lua_pair_load_(lua_State *L, const char *driver) {
  if (luaL_loadstring(L, driver) != LUA_OK || lua_pcall(L, 0, 1, 0) != LUA_OK) {
    fprintf(stderr, "driver: %s\n", lua_tostring(L, -1));
    return -1;
  }
  lua_setglobal(L, "driver");
  return 0;
}

/* 0, or -1 with a message on stderr. */
static inline int lua_pair_open(lua_pair_t *pair, const char *driver) {
  pair->stock = luaL_newstate();
  pair->ours = tenL_newstate(TEN_LUA_MEMORY_LIMIT);
  if (!pair->stock || !pair->ours) return -1;
  luaL_openlibs(pair->stock);
  return lua_pair_load_(pair->stock, driver) || lua_pair_load_(pair->ours, driver) ? -1 : 0;
}

static inline void lua_pair_close(lua_pair_t *pair) {
  if (pair->stock) lua_close(pair->stock);
  tenL_close(pair->ours);
}

/* Calls driver[fn](args) in L and leaves its transcript (or the error that
 * escaped the driver) on the stack; returns it. Plain lua_pcall: the call
 * runs without a deadline, as the stock state has none. */
static inline const char *lua_pair_call_(lua_State *L, const char *fn, const lua_pair_arg_t *args,
                                         int nargs) {
  lua_getglobal(L, "driver");
  lua_getfield(L, -1, fn);
  lua_remove(L, -2);
  for (int i = 0; i < nargs; i++) {
    if (args[i].str)
      lua_pushlstring(L, args[i].str, args[i].len);
    else
      lua_pushinteger(L, args[i].integer);
  }
  if (lua_pcall(L, nargs, 1, 0) != LUA_OK) {
    lua_pushfstring(L, "driver error: %s", lua_tostring(L, -1));
    lua_remove(L, -2);
  }
  return lua_tostring(L, -1);
}

/* Asks both states; true if the transcripts are the same. On a difference,
 * prints both, after `what` (the case). */
static inline bool lua_pair_agree(lua_pair_t *pair, const char *what, const char *fn,
                                  const lua_pair_arg_t *args, int nargs) {
  size_t stock_len, ours_len;
  lua_pair_call_(pair->stock, fn, args, nargs);
  lua_pair_call_(pair->ours, fn, args, nargs);
  const char *stock = lua_tolstring(pair->stock, -1, &stock_len);
  const char *ours = lua_tolstring(pair->ours, -1, &ours_len);
  bool same = stock && ours && stock_len == ours_len && memcmp(stock, ours, stock_len) == 0;
  if (!same)
    fprintf(stderr, "  %s\n    stock: %s\n    ours:  %s\n", what, stock ? stock : "(none)",
            ours ? ours : "(none)");
  lua_pop(pair->stock, 1);
  lua_pop(pair->ours, 1);
  return same;
}

#endif
