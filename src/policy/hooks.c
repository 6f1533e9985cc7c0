#include "policy/hooks.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "policy/lua.h"

/* A hook returned the wrong thing: the message names where the function
 * at stack index fn is defined (looked up only now, not on every call). */
static int bad_result(lua_State *L, int fn, const char *hook, const char *expected,
                      const char *got, ten_err_t *err) {
  char loc[128] = "hook";
  lua_Debug ar;
  lua_pushvalue(L, fn);
  if (lua_getinfo(L, ">S", &ar) && ar.linedefined > 0)
    snprintf(loc, sizeof loc, "%s:%d", ar.short_src, ar.linedefined);
  return ten_errf(err, UV_EINVAL, "%s: %s hook must return %s, got %s", loc, hook, expected, got);
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

/* The request a hook sees is a small userdata whose fields are read on
 * access: a trivial route hook costs no tables and no copies of headers it
 * never looks at. It points at the request only for the call's duration;
 * a hook that keeps `req` and uses it later gets a clear error. */
#define REQUEST_META "tenement.request"
#define HEADERS_META "tenement.headers"

typedef struct request_box {
  const ten_hook_request_t *req; /* NULL once the call is over */
} request_box_t;

/* The request behind argument 1, a request or its headers. */
static const ten_hook_request_t *box_request(lua_State *L, const char *meta) {
  request_box_t *box = luaL_checkudata(L, 1, meta);
  if (!strcmp(meta, HEADERS_META)) {
    lua_getiuservalue(L, 1, 1);
    box = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  if (!box || !box->req) luaL_error(L, "the request is only available during the hook call");
  return box->req;
}

static bool header_is(const ten_hook_header_t *h, const char *name, size_t len) {
  if (h->name_len != len) return false;
  for (size_t i = 0; i < len; i++) {
    char c = h->name[i];
    if (c >= 'A' && c <= 'Z') c = (char)(c + 32);
    char w = name[i];
    if (w >= 'A' && w <= 'Z') w = (char)(w + 32);
    if (c != w) return false;
  }
  return true;
}

static void push_lower(lua_State *L, const char *s, size_t len) {
  luaL_Buffer b;
  char *p = luaL_buffinitsize(L, &b, len);
  for (size_t i = 0; i < len; i++) p[i] = (char)(s[i] >= 'A' && s[i] <= 'Z' ? s[i] + 32 : s[i]);
  luaL_pushresultsize(&b, len);
}

/* req.headers["content-type"]: any case; the first of repeated headers. */
static int headers_index(lua_State *L) {
  const ten_hook_request_t *r = box_request(L, HEADERS_META);
  size_t len;
  const char *name = luaL_checklstring(L, 2, &len);
  for (size_t i = 0; i < r->header_count; i++) {
    if (!header_is(&r->headers[i], name, len)) continue;
    lua_pushlstring(L, r->headers[i].value, r->headers[i].value_len);
    return 1;
  }
  lua_pushnil(L);
  return 1;
}

static int headers_next(lua_State *L) {
  const ten_hook_request_t *r = box_request(L, HEADERS_META);
  lua_Integer i = lua_tointeger(L, lua_upvalueindex(1));
  if ((size_t)i >= r->header_count) return 0;
  lua_pushinteger(L, i + 1);
  lua_replace(L, lua_upvalueindex(1));
  push_lower(L, r->headers[i].name, r->headers[i].name_len);
  lua_pushlstring(L, r->headers[i].value, r->headers[i].value_len);
  return 2;
}

/* for name, value in pairs(req.headers): lower-case names, in order. */
static int headers_pairs(lua_State *L) {
  box_request(L, HEADERS_META);
  lua_pushinteger(L, 0);
  lua_pushcclosure(L, headers_next, 1);
  lua_pushvalue(L, 1);
  lua_pushnil(L);
  return 3;
}

static int request_index(lua_State *L) {
  const ten_hook_request_t *r = box_request(L, REQUEST_META);
  const char *key = luaL_checkstring(L, 2);
  if (!strcmp(key, "method")) lua_pushstring(L, r->method);
  else if (!strcmp(key, "host")) lua_pushlstring(L, r->host, r->host_len);
  else if (!strcmp(key, "path")) lua_pushlstring(L, r->path, r->path_len);
  else if (!strcmp(key, "client")) lua_pushstring(L, r->client ? r->client : "");
  else if (!strcmp(key, "headers")) {
    lua_newuserdatauv(L, 1, 1);
    luaL_setmetatable(L, HEADERS_META);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
  } else {
    lua_pushnil(L);
  }
  return 1;
}

/* Pushes a request for r; the caller clears it (box->req = NULL) after. */
static request_box_t *push_request(lua_State *L, const ten_hook_request_t *r) {
  request_box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  box->req = r;
  if (luaL_newmetatable(L, REQUEST_META)) {
    lua_pushcfunction(L, request_index);
    lua_setfield(L, -2, "__index");
    if (luaL_newmetatable(L, HEADERS_META)) {
      lua_pushcfunction(L, headers_index);
      lua_setfield(L, -2, "__index");
      lua_pushcfunction(L, headers_pairs);
      lua_setfield(L, -2, "__pairs");
    }
    lua_pop(L, 1);
  }
  lua_setmetatable(L, -2);
  return box;
}

/* Pushes the function of `ref` twice: one copy to call, one kept below it
 * for bad_result. Returns the kept copy's index, or 0 if there is no hook. */
static int begin_hook(ten_config_t *c, int ref) {
  if (!c->L || ref == LUA_NOREF || ref == LUA_REFNIL) return 0;
  lua_rawgeti(c->L, LUA_REGISTRYINDEX, ref);
  if (lua_type(c->L, -1) != LUA_TFUNCTION) {
    lua_pop(c->L, 1);
    return 0;
  }
  lua_pushvalue(c->L, -1);
  return lua_gettop(c->L) - 1;
}

int ten_hook_weight(ten_config_t *c, int ref, const ten_hook_instance_t *inst, int *weight,
                    ten_err_t *err) {
  int fn = begin_hook(c, ref);
  if (!fn) return UV_ENOENT;
  lua_State *L = c->L;
  push_instance(L, inst);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 100)
      rc = bad_result(L, fn, "weight", "an integer from 0 to 100", luaL_typename(L, -1), err);
    else
      *weight = (int)lua_tointeger(L, -1);
  }
  lua_settop(L, fn - 1);
  return rc;
}

int ten_hook_idle(ten_config_t *c, int ref, const ten_hook_instance_t *inst, bool *idle,
                  ten_err_t *err) {
  int fn = begin_hook(c, ref);
  if (!fn) return UV_ENOENT;
  lua_State *L = c->L;
  push_instance(L, inst);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = bad_result(L, fn, "idle", "true or false", luaL_typename(L, -1), err);
    else
      *idle = lua_toboolean(L, -1);
  }
  lua_settop(L, fn - 1);
  return rc;
}

int ten_hook_admit(ten_config_t *c, int ref, const char *id, const ten_hook_request_t *req,
                   bool *admit, ten_err_t *err) {
  int fn = begin_hook(c, ref);
  if (!fn) return UV_ENOENT;
  lua_State *L = c->L;
  lua_pushstring(L, id);
  request_box_t *box = push_request(L, req);
  int rc = tenL_pcall(L, 2, 1, TEN_LUA_BUDGET_HOOK, err);
  box->req = NULL;
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = bad_result(L, fn, "admit", "true or false", luaL_typename(L, -1), err);
    else
      *admit = lua_toboolean(L, -1);
  }
  lua_settop(L, fn - 1);
  return rc;
}

int ten_hook_route(ten_config_t *c, const ten_hook_request_t *req, char *key, size_t key_len,
                   bool *routed, ten_err_t *err) {
  *routed = false;
  int fn = begin_hook(c, c->settings.route_ref);
  if (!fn) return UV_ENOENT;
  lua_State *L = c->L;
  request_box_t *box = push_request(L, req);
  int rc = tenL_pcall(L, 1, 1, TEN_LUA_BUDGET_HOOK, err);
  box->req = NULL;
  if (rc == 0 && !lua_isnil(L, -1)) { /* nil: route by Host */
    size_t len;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!s || !memchr(s, ':', len) || len >= key_len) {
      rc = bad_result(L, fn, "route", "\"service:id\" or nil",
                      s ? "a malformed string" : luaL_typename(L, -1), err);
    } else {
      memcpy(key, s, len);
      key[len] = '\0';
      *routed = true;
    }
  }
  lua_settop(L, fn - 1);
  return rc;
}
