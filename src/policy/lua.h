/* lua.h: the Lua states tenement runs the operator's code in.
 *
 * tenement.lua, its hooks and REPL chunks run on the loop thread, inside
 * the server; nothing they do may hang, exhaust or end it:
 * - time: every call through tenL_pcall has a wall-clock deadline (the
 *   limits below). A count hook reads a monotonic clock every
 *   TEN_LUA_HOOK_EVERY instructions, and the C loops that user input can
 *   make long (pattern matching, table.sort, move, ...: lua_strings.c,
 *   lua_pattern.c, lua_tables.c) count their steps too. Once the deadline
 *   passed, the error is raised again at every instruction, so a `pcall`
 *   that catches it gets no further: the call is abandoned. The message
 *   names the user's file:line and the limit.
 * - memory: each state has a ceiling (TEN_LUA_MEMORY_LIMIT); an allocation
 *   beyond it is a Lua memory error, which the call reports.
 * - reach: user code sees only the environment of tenL_push_env (no io,
 *   os.exit, require, load of bytecode, debug but traceback, ...: see
 *   sandbox.c); the embedded modules keep the full library.
 * States come from tenL_newstate and go with tenL_close. Loop thread only.
 */
#ifndef TEN_POLICY_LUA_H
#define TEN_POLICY_LUA_H

#include "util/common.h"

#include <lua.h>

/* How long one call may take, and what it is called in messages. */
typedef struct tenL_limit {
  const char *what; /* "hook call" */
  int ms;
} tenL_limit_t;

/* A config file may do real work, once per load. */
extern const tenL_limit_t tenL_config_limit; /* 1000 ms */
/* A hook runs on the loop per request or per instance: it must be quick,
 * and every millisecond it takes, every client waits. */
extern const tenL_limit_t tenL_hook_limit; /* 100 ms */
/* A REPL chunk may wait for a reload (itself under tenL_config_limit). */
extern const tenL_limit_t tenL_repl_limit; /* 2000 ms */

/* Bytes one state may hold: the config's tables, what hooks keep between
 * calls, a REPL session. */
#define TEN_LUA_MEMORY_LIMIT ((size_t)64 << 20)

#define TEN_LUA_HOOK_EVERY 1000 /* instructions between two looks at the clock */

/* A state with the libraries (safe subset, see sandbox.c), cjson preloaded
 * and the embedded modules of lua/tenement/ findable by require, holding at
 * most memory_limit bytes. NULL if it cannot be created. */
lua_State *tenL_newstate(size_t memory_limit);
/* Closes a state of tenL_newstate (not lua_close: it owns more). NULL is ok. */
void tenL_close(lua_State *L);

/* Pushes a fresh environment for user code: the sandbox's globals, with
 * `load` defaulting to it and `_G` pointing at it. */
void tenL_push_env(lua_State *L);

/* Calls the function below nargs arguments like lua_pcall, under the limit's
 * deadline (or the running call's, if that comes first: calls may nest).
 * On error the stack is restored to what it was before the function and
 * arguments were pushed, and err (may be NULL) gets the message; returns
 * UV_EINVAL. Memory errors name the state's memory limit. */
int tenL_pcall(lua_State *L, int nargs, int nresults, const tenL_limit_t *limit, ten_err_t *err);
/* Loads an embedded module by name and leaves its value on the stack. */
int tenL_require(lua_State *L, const char *name, ten_err_t *err);

/* For C functions that loop as long as user input says: counts `steps`
 * units of work and every few thousand raises the running call's
 * time-limit error if its deadline passed. */
void tenL_spend(lua_State *L, size_t steps);
/* The same, reading the clock now. */
void tenL_check_time(lua_State *L);

#endif
