/* lua.h: the Lua states tenement runs user code in.
 *
 * Every state gets the standard libraries, cjson preloaded, and a searcher
 * for the modules embedded from lua/tenement/. User code always runs through
 * tenL_pcall: a traceback handler names the user's file:line, and an
 * instruction budget turns a runaway loop into an error instead of a hung
 * server. Loop thread only.
 */
#ifndef TEN_POLICY_LUA_H
#define TEN_POLICY_LUA_H

#include "util/common.h"

#include <lua.h>

/* Instruction budgets: a config file may do real work; a hook must be quick. */
#define TEN_LUA_BUDGET_CONFIG 50000000L
#define TEN_LUA_BUDGET_HOOK   1000000L

lua_State *tenL_newstate(void);
/* Calls the function below nargs arguments like lua_pcall, with at most
 * `budget` VM instructions. On error the stack is restored to what it was
 * before the function and arguments were pushed, and err gets the message. */
int tenL_pcall(lua_State *L, int nargs, int nresults, long budget, ten_err_t *err);
/* Loads an embedded module by name and leaves its value on the stack. */
int tenL_require(lua_State *L, const char *name, ten_err_t *err);

#endif
