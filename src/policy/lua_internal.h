/* lua_internal.h: what lua.c, sandbox.c, lua_strings.c and lua_tables.c
 * share. Not for other modules: they use policy/lua.h. */
#ifndef TEN_POLICY_LUA_INTERNAL_H
#define TEN_POLICY_LUA_INTERNAL_H

#include <lua.h>
#include <stdbool.h>

/* A lua_CFunction, run protected by tenL_newstate: opens the libraries
 * the state offers and takes out what no code in it may use. */
int ten__lua_open_libs(lua_State *L);
/* Replace the functions of the string / table library at the top of the
 * stack whose time user input decides with versions that respect the
 * running call's deadline. */
void ten__lua_bound_strings(lua_State *L);
void ten__lua_bound_tables(lua_State *L);
/* True while the running call is past its deadline. */
bool ten__lua_expired(lua_State *L);
/* True if coroutine co died of a time-limit error raised by the count
 * hook: it runs no hooks any more, so none of its Lua may run again. */
bool ten__lua_stopped(lua_State *L, lua_State *co);

#endif
