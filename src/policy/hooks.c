#include "policy/hooks.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "policy/lua.h"

/* Where a hook function is defined, for messages about what it returned. */
static void where(lua_State *L, int fn_index, char *out, size_t len) {
  lua_Debug ar;
  lua_pushvalue(L, fn_index);
  if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
    snprintf(out, len, "%s:%d", ar.short_src, ar.linedefined);
  else
    snprintf(out, len, "hook");
}

static void push_instance(lua_State *L, const ten_hook_instance_t *i) {
  lua_createtable(L, 0, 8);
  lua_pushstring(L, i->service);
  lua_setfield(L, -2, "service");
  lua_pushstring(L, i->id);
  lua_setfield(L, -2, "id");
  lua_pushstring(L, i->state);
  lua_setfield(L, -2, "state");
  lua_pushnumber(L, i->idle_seconds);
  lua_setfield(L, -2, "idle_seconds");
  lua_pushnumber(L, i->uptime);
  lua_setfield(L, -2, "uptime");
  lua_pushinteger(L, (lua_Integer)i->requests);
  lua_setfield(L, -2, "requests");
  lua_pushnumber(L, i->memory_mb);
  lua_setfield(L, -2, "memory_mb");
  lua_pushinteger(L, i->weight);
  lua_setfield(L, -2, "weight");
}

static void push_request(lua_State *L, const ten_hook_request_t *r) {
  lua_createtable(L, 0, 6);
  lua_pushstring(L, r->method);
  lua_setfield(L, -2, "method");
  lua_pushlstring(L, r->host, r->host_len);
  lua_setfield(L, -2, "host");
  lua_pushlstring(L, r->path, r->path_len);
  lua_setfield(L, -2, "path");
  lua_pushstring(L, r->client ? r->client : "");
  lua_setfield(L, -2, "client");
  lua_createtable(L, 0, (int)r->header_count);
  for (size_t i = 0; i < r->header_count; i++) {
    const ten_hook_header_t *h = &r->headers[i];
    char name[128];
    size_t n = TEN_MIN(h->name_len, sizeof name - 1);
    for (size_t k = 0; k < n; k++)
      name[k] = (char)(h->name[k] >= 'A' && h->name[k] <= 'Z' ? h->name[k] + 32 : h->name[k]);
    name[n] = '\0';
    lua_pushlstring(L, h->value, h->value_len);
    lua_setfield(L, -2, name);
  }
  lua_setfield(L, -2, "headers");
}

/* Pushes the function of `ref`; false if there is none. */
static bool push_hook(ten_config_t *c, int ref) {
  if (!c->L || ref == LUA_NOREF || ref == LUA_REFNIL) return false;
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, ref);
  if (lua_type(c->L, -1) != LUA_TFUNCTION) {
    lua_pop(c->L, 1);
    return false;
  }
  return true;
}

int ten_hook_weight(ten_config_t *c, int ref, const ten_hook_instance_t *inst, int *weight,
                    ten_err_t *err) {
  if (!push_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  int top = lua_gettop(L) - 1;
  char loc[128];
  where(L, -1, loc, sizeof loc);
  push_instance(L, inst);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 100)
      rc = ten_errf(err, UV_EINVAL, "%s: weight hook must return an integer from 0 to 100, got %s",
                    loc, luaL_typename(L, -1));
    else
      *weight = (int)lua_tointeger(L, -1);
  }
  lua_settop(L, top);
  return rc;
}

int ten_hook_idle(ten_config_t *c, int ref, const ten_hook_instance_t *inst, bool *idle,
                  ten_err_t *err) {
  if (!push_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  int top = lua_gettop(L) - 1;
  char loc[128];
  where(L, -1, loc, sizeof loc);
  push_instance(L, inst);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = ten_errf(err, UV_EINVAL, "%s: idle hook must return true or false, got %s", loc,
                    luaL_typename(L, -1));
    else
      *idle = lua_toboolean(L, -1);
  }
  lua_settop(L, top);
  return rc;
}

int ten_hook_admit(ten_config_t *c, int ref, const char *id, const ten_hook_request_t *req,
                   bool *admit, ten_err_t *err) {
  if (!push_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  int top = lua_gettop(L) - 1;
  char loc[128];
  where(L, -1, loc, sizeof loc);
  lua_pushstring(L, id);
  push_request(L, req);
  int rc = tenL_pcall(L, 2, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = ten_errf(err, UV_EINVAL, "%s: admit hook must return true or false, got %s", loc,
                    luaL_typename(L, -1));
    else
      *admit = lua_toboolean(L, -1);
  }
  lua_settop(L, top);
  return rc;
}

int ten_hook_route(ten_config_t *c, const ten_hook_request_t *req, char *key, size_t key_len,
                   bool *routed, ten_err_t *err) {
  *routed = false;
  if (!push_hook(c, c->settings.route_ref)) return UV_ENOENT;
  lua_State *L = c->L;
  int top = lua_gettop(L) - 1;
  char loc[128];
  where(L, -1, loc, sizeof loc);
  push_request(L, req);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    size_t len;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (lua_isnil(L, -1)) {
      /* nil: route by Host */
    } else if (!s || !memchr(s, ':', len) || len >= key_len) {
      rc = ten_errf(err, UV_EINVAL, "%s: route hook must return \"service:id\" or nil, got %s",
                    loc, s ? "a malformed string" : luaL_typename(L, -1));
    } else {
      memcpy(key, s, len);
      key[len] = '\0';
      *routed = true;
    }
  }
  lua_settop(L, top);
  return rc;
}
