#include "policy/hooks.h"

#include <lauxlib.h>
#include <stdio.h>
#include <string.h>
#include <uv.h>

#include "policy/lua.h"
#include "util/log.h"
#include "util/time.h"

/* A hook returned the wrong thing: the message names where its function is
 * defined (looked up only now, not on every call). */
static int bad_result(lua_State *L, int ref, const char *hook, const char *expected,
                      const char *got, ten_err_t *err) {
  char loc[128] = "hook";
  lua_Debug ar;
  lua_rawgeti(L, LUA_REGISTRYINDEX, ref);
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
  const ten_hook_request_t *req;
  uint64_t call;           /* the hook call it belongs to */
  const uint64_t *running; /* the config's call running now (0: none) */
} request_box_t;

/* The request behind argument 1, a request or its headers. */
static const ten_hook_request_t *box_request(lua_State *L, const char *meta) {
  request_box_t *box = luaL_checkudata(L, 1, meta);
  if (!strcmp(meta, HEADERS_META)) {
    lua_getiuservalue(L, 1, 1);
    box = lua_touserdata(L, -1);
    lua_pop(L, 1);
  }
  if (!box || *box->running != box->call)
    luaL_error(L, "the request is only available during the hook call");
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

/* Pushes the request r of the config's running call. Nothing touches the
 * box after the call (it may be garbage by then): a kept box goes stale
 * because the config's running call is another one. */
static void push_request(lua_State *L, ten_config_t *c, const ten_hook_request_t *r) {
  request_box_t *box = lua_newuserdatauv(L, sizeof *box, 0);
  *box = (request_box_t){.req = r, .call = c->_hook_running, .running = &c->_hook_running};
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
}

/* ------------------------------------------------------------ calls */

typedef enum hook_kind { HOOK_WEIGHT, HOOK_IDLE, HOOK_ADMIT, HOOK_ROUTE } hook_kind_t;

static const char *const hook_names[] = {"weight", "idle", "admit", "route"};
/* What the callers do instead when a hook fails (hooks.h). */
static const char *const hook_fallbacks[] = {"using the default weight", "using idle_timeout",
                                             "refusing the instance", "routing by Host"};

/* One call of a hook: its arguments. */
typedef struct hook_call {
  hook_kind_t kind;
  ten_config_t *c;
  int ref;
  const ten_hook_instance_t *inst;
  const char *id;
  const ten_hook_request_t *req;
  int top; /* the stack as the caller left it */
} hook_call_t;

/* Runs inside tenL_pcall, so that building the arguments too is protected
 * (at the memory limit, a push raises) and under the hook's deadline. */
static int call_protected(lua_State *L) {
  hook_call_t *h = lua_touserdata(L, 1);
  lua_settop(L, 0);
  lua_rawgeti(L, LUA_REGISTRYINDEX, h->ref);
  int nargs = 1;
  switch (h->kind) {
  case HOOK_WEIGHT:
  case HOOK_IDLE: push_instance(L, h->inst); break;
  case HOOK_ADMIT:
    lua_pushstring(L, h->id);
    push_request(L, h->c, h->req);
    nargs = 2;
    break;
  case HOOK_ROUTE: push_request(L, h->c, h->req); break;
  }
  lua_call(L, nargs, 1);
  return 1;
}

/* Per hook of a config: when its failures were last logged. */
typedef struct hook_log_entry {
  int ref;
  uint64_t last_line_ms; /* 0: never failed */
  uint64_t unlogged;     /* failures since that line */
} hook_log_entry_t;

struct ten_hook_log {
  size_t count;
  hook_log_entry_t entries[];
};

static hook_log_entry_t *log_entry(ten_config_t *c, int ref) {
  ten_hook_log_t *log = c->_hook_log;
  for (size_t i = 0; log && i < log->count; i++)
    if (log->entries[i].ref == ref) return &log->entries[i];
  size_t count = log ? log->count + 1 : 1;
  log = ten_xrealloc(log, sizeof *log + count * sizeof log->entries[0]);
  log->count = count;
  log->entries[count - 1] = (hook_log_entry_t){.ref = ref};
  c->_hook_log = log;
  return &log->entries[count - 1];
}

/* A hook failing on every request must not write a line per request: the
 * first failure is logged at once, then at most one line per
 * hook_log_interval with the count since the last line and the last error.
 * The count of a burst that stops is written with the next failure. */
static void log_failure(ten_config_t *c, const hook_call_t *h, const char *msg) {
  hook_log_entry_t *e = log_entry(c, h->ref);
  char subject[160] = "";
  if (h->inst)
    snprintf(subject, sizeof subject, " for %s:%s", h->inst->service, h->inst->id);
  else if (h->id)
    snprintf(subject, sizeof subject, " for id %s", h->id);
  uint64_t now = ten_now_ms();
  const char *hook = hook_names[h->kind], *fallback = hook_fallbacks[h->kind];
  if (!e->last_line_ms) {
    ten_log(TEN_LOG_ERROR, "policy: %s hook failed%s, %s: %s", hook, subject, fallback, msg);
    e->last_line_ms = now ? now : 1;
    return;
  }
  e->unlogged++;
  double since = (double)(now - e->last_line_ms) / 1000.0;
  if (since < c->settings.hook_log_interval) return;
  ten_log(TEN_LOG_ERROR, "policy: %s hook failed %llu more time%s in %.1f s (last%s), %s: %s", hook,
          (unsigned long long)e->unlogged, e->unlogged == 1 ? "" : "s", since, subject, fallback,
          msg);
  e->last_line_ms = now;
  e->unlogged = 0;
}

/* Calls the hook, leaving its one result on the stack on success. */
static int run_hook(ten_config_t *c, hook_call_t *h, ten_err_t *err) {
  lua_State *L = c->L;
  h->c = c;
  h->top = lua_gettop(L);
  c->_hook_running = ++c->_hook_calls;
  lua_pushcfunction(L, call_protected);
  lua_pushlightuserdata(L, h);
  int rc = tenL_pcall(L, 1, 1, &tenL_hook_limit, err);
  c->_hook_running = 0;
  return rc;
}

static bool has_hook(const ten_config_t *c, int ref) {
  return c->L && ref != LUA_NOREF && ref != LUA_REFNIL;
}

static int finish(ten_config_t *c, const hook_call_t *h, int rc, ten_err_t *err) {
  if (rc) log_failure(c, h, err->msg);
  lua_settop(c->L, h->top);
  return rc;
}

int ten_hook_weight(ten_config_t *c, int ref, const ten_hook_instance_t *inst, int *weight,
                    ten_err_t *err) {
  if (!has_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  hook_call_t h = {.kind = HOOK_WEIGHT, .ref = ref, .inst = inst};
  int rc = run_hook(c, &h, err);
  if (rc == 0) {
    if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0 || lua_tointeger(L, -1) > 100)
      rc = bad_result(L, ref, "weight", "an integer from 0 to 100", luaL_typename(L, -1), err);
    else
      *weight = (int)lua_tointeger(L, -1);
  }
  return finish(c, &h, rc, err);
}

int ten_hook_idle(ten_config_t *c, int ref, const ten_hook_instance_t *inst, bool *idle,
                  ten_err_t *err) {
  if (!has_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  hook_call_t h = {.kind = HOOK_IDLE, .ref = ref, .inst = inst};
  int rc = run_hook(c, &h, err);
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = bad_result(L, ref, "idle", "true or false", luaL_typename(L, -1), err);
    else
      *idle = lua_toboolean(L, -1);
  }
  return finish(c, &h, rc, err);
}

int ten_hook_admit(ten_config_t *c, int ref, const char *id, const ten_hook_request_t *req,
                   bool *admit, ten_err_t *err) {
  if (!has_hook(c, ref)) return UV_ENOENT;
  lua_State *L = c->L;
  hook_call_t h = {.kind = HOOK_ADMIT, .ref = ref, .id = id, .req = req};
  int rc = run_hook(c, &h, err);
  if (rc == 0) {
    if (!lua_isboolean(L, -1))
      rc = bad_result(L, ref, "admit", "true or false", luaL_typename(L, -1), err);
    else
      *admit = lua_toboolean(L, -1);
  }
  return finish(c, &h, rc, err);
}

int ten_hook_route(ten_config_t *c, const ten_hook_request_t *req, char *key, size_t key_len,
                   bool *routed, ten_err_t *err) {
  *routed = false;
  if (!has_hook(c, c->settings.route_ref)) return UV_ENOENT;
  lua_State *L = c->L;
  hook_call_t h = {.kind = HOOK_ROUTE, .ref = c->settings.route_ref, .req = req};
  int rc = run_hook(c, &h, err);
  if (rc == 0 && !lua_isnil(L, -1)) { /* nil: route by Host */
    size_t len;
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &len) : NULL;
    if (!s || !memchr(s, ':', len) || len >= key_len) {
      rc = bad_result(L, h.ref, "route", "\"service:id\" or nil",
                      s ? "a malformed string" : luaL_typename(L, -1), err);
    } else {
      memcpy(key, s, len);
      key[len] = '\0';
      *routed = true;
    }
  }
  return finish(c, &h, rc, err);
}
