#include "ctl/repl.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>

#include "policy/lua.h"
#include "util/json.h"
#include "util/log.h"

struct ten_repl {
  ten_hv_t *hv;
  ten_repl_reload_fn reload;
  void *reload_ctx;
  lua_State *L;
  int module_ref, env_ref, output_ref;
};

static ten_repl_t *self(lua_State *L) { return lua_touserdata(L, lua_upvalueindex(1)); }

static int push_json(lua_State *L, ten_buf_t *b) {
  lua_pushlstring(L, b->data ? b->data : "null", b->data ? b->len : 4);
  ten_buf_free(b);
  return 1;
}

static int push_instance(lua_State *L, ten_instance_t *inst) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_instance_to_json(inst, &w);
  return push_json(L, &out);
}

static int fail(lua_State *L, const ten_err_t *err) { return luaL_error(L, "%s", err->msg); }

static int p_ps(lua_State *L) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_hv_to_json(self(L)->hv, &w);
  return push_json(L, &out);
}

static ten_instance_t *instance_arg(lua_State *L, int arg) {
  const char *key = luaL_checkstring(L, arg);
  ten_instance_t *inst = ten_hv_find_key(self(L)->hv, key);
  if (!inst) luaL_error(L, "unknown instance '%s' (write it as \"service:id\")", key);
  return inst;
}

static int p_instance(lua_State *L) { return push_instance(L, instance_arg(L, 1)); }

static int p_spawn(lua_State *L) {
  ten_hv_t *hv = self(L)->hv;
  const char *service = luaL_checkstring(L, 1);
  const char *id = luaL_checkstring(L, 2);
  ten_err_t err;
  if (ten_hv_spawn(hv, service, id, &err)) return fail(L, &err);
  return push_instance(L, ten_hv_find(hv, service, strlen(service), id, strlen(id)));
}

static int p_stop(lua_State *L) {
  ten_instance_t *inst = instance_arg(L, 1);
  ten_err_t err;
  if (ten_hv_stop(self(L)->hv, inst->key, &err)) return fail(L, &err);
  return push_instance(L, inst);
}

static int p_restart(lua_State *L) {
  ten_instance_t *inst = instance_arg(L, 1);
  ten_err_t err;
  if (ten_hv_restart(self(L)->hv, inst->key, &err)) return fail(L, &err);
  return push_instance(L, inst);
}

static int p_weight(lua_State *L) {
  ten_instance_t *inst = instance_arg(L, 1);
  lua_Integer n = luaL_checkinteger(L, 2);
  ten_err_t err;
  if (n < 0 || n > 100) luaL_error(L, "weight must be from 0 to 100, got %d", (int)n);
  if (ten_hv_set_weight(self(L)->hv, inst->key, (int)n, &err)) return fail(L, &err);
  return push_instance(L, inst);
}

static int p_config(lua_State *L) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_config_to_json(self(L)->hv->config, &out);
  return push_json(L, &out);
}

static int p_reload(lua_State *L) {
  ten_repl_t *r = self(L);
  ten_buf_t summary = TEN_BUF_INIT;
  ten_err_t err;
  if (!r->reload || r->reload(r->reload_ctx, &summary, &err)) {
    ten_buf_free(&summary);
    return luaL_error(L, "reload failed: %s", r->reload ? err.msg : "not available");
  }
  lua_pushstring(L, summary.data ? summary.data : "");
  ten_buf_free(&summary);
  return 1;
}

static const luaL_Reg primitives[] = {
    {"ps", p_ps},         {"instance", p_instance}, {"spawn", p_spawn},
    {"stop", p_stop},     {"restart", p_restart},   {"weight", p_weight},
    {"config", p_config}, {"reload", p_reload},     {NULL, NULL},
};

/* Protected: tenement.repl's environment (the sandbox, the `ten` table,
 * a captured print) and the module, kept in the registry. */
static int build_env(lua_State *L) {
  ten_repl_t *r = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushliteral(L, "tenement.repl");
  lua_call(L, 1, 1);
  lua_pushvalue(L, -1);
  r->module_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  lua_getfield(L, -1, "new");
  luaL_newlibtable(L, primitives);
  lua_pushlightuserdata(L, r);
  luaL_setfuncs(L, primitives, 1);
  tenL_push_env(L);
  lua_call(L, 2, 2);
  r->output_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  r->env_ref = luaL_ref(L, LUA_REGISTRYINDEX);
  return 0;
}

/* Builds the state on first use. */
static int ensure_state(ten_repl_t *r, ten_err_t *err) {
  if (r->L) return 0;
  lua_State *L = tenL_newstate(TEN_LUA_MEMORY_LIMIT);
  if (!L) return ten_errf(err, UV_ENOMEM, "cannot create a Lua state");
  lua_pushcfunction(L, build_env);
  lua_pushlightuserdata(L, r);
  if (tenL_pcall(L, 1, 0, &tenL_repl_limit, err)) {
    tenL_close(L);
    return UV_EINVAL;
  }
  r->L = L;
  return 0;
}

/* What one chunk gave back. */
typedef struct eval_result {
  const char *code;
  size_t code_len;
  bool incomplete;
  const char *compile_error; /* the chunk does not compile */
  const char *result;        /* formatted values, one a line */
  const char *output;        /* printed lines */
} eval_result_t;

/* Protected, under the REPL's deadline: compiles and runs the chunk, and
 * formats what it returned and printed. The strings in *out live on the
 * stack until the caller clears it. */
static int eval_chunk(lua_State *L) {
  eval_result_t *out = lua_touserdata(L, 1);
  ten_repl_t *r = lua_touserdata(L, 2);
  lua_settop(L, 0);
  /* Clear the captured output of the previous chunk. */
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->output_ref);
  for (lua_Integer i = (lua_Integer)lua_rawlen(L, -1); i >= 1; i--) {
    lua_pushnil(L);
    lua_rawseti(L, -2, i);
  }
  lua_pop(L, 1);

  lua_rawgeti(L, LUA_REGISTRYINDEX, r->module_ref); /* 1: module */
  lua_getfield(L, 1, "compile");
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->env_ref);
  lua_pushlstring(L, out->code, out->code_len);
  lua_call(L, 2, 3);
  if (lua_isnil(L, 2)) { /* nil, message, incomplete */
    out->incomplete = lua_toboolean(L, 4);
    out->compile_error = lua_tostring(L, 3);
    return lua_gettop(L); /* returned, the strings stay on the stack */
  }
  lua_settop(L, 2); /* module, fn */
  lua_getfield(L, 1, "results");
  lua_insert(L, 2); /* module, results, fn */
  lua_call(L, 0, LUA_MULTRET);
  lua_call(L, lua_gettop(L) - 2, 1);
  out->result = lua_tostring(L, -1);

  /* Printed lines, joined. */
  luaL_Buffer b;
  lua_rawgeti(L, LUA_REGISTRYINDEX, r->output_ref);
  int lines = lua_gettop(L);
  luaL_buffinit(L, &b);
  for (lua_Integer i = 1, n = (lua_Integer)lua_rawlen(L, lines); i <= n; i++) {
    lua_rawgeti(L, lines, i);
    luaL_addvalue(&b);
    luaL_addchar(&b, '\n');
  }
  luaL_pushresult(&b);
  out->output = lua_tostring(L, -1);
  return lua_gettop(L);
}

static void reply(ten_ctl_req_t *req, const char *output, const char *result, bool incomplete) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_jw_obj(&w);
  if (incomplete) {
    ten_jw_kbool(&w, "incomplete", true);
  } else {
    ten_jw_kstr(&w, "output", output);
    ten_jw_kstr(&w, "result", result);
  }
  ten_jw_obj_end(&w);
  ten_ctl_reply_ok(req, out.data, out.len);
  ten_buf_free(&out);
}

static void cmd_eval(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  ten_repl_t *r = ctx;
  const ten_json_t *code = ten_json_get(args, "code");
  if (!code || code->type != TEN_JSON_STRING) {
    ten_ctl_reply_error(req, "eval needs \"code\": a string of Lua");
    return;
  }
  ten_err_t err;
  if (ensure_state(r, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
    return;
  }
  lua_State *L = r->L;
  lua_settop(L, 0);
  eval_result_t out = {.code = code->string, .code_len = code->string_len};
  lua_pushcfunction(L, eval_chunk);
  lua_pushlightuserdata(L, &out);
  lua_pushlightuserdata(L, r);
  if (tenL_pcall(L, 2, LUA_MULTRET, &tenL_repl_limit, &err))
    ten_ctl_reply_error(req, "%s", err.msg);
  else if (out.incomplete)
    reply(req, NULL, NULL, true);
  else if (out.compile_error)
    ten_ctl_reply_error(req, "%s", out.compile_error);
  else
    reply(req, out.output ? out.output : "", out.result ? out.result : "", false);
  lua_settop(L, 0);
}

ten_repl_t *ten_repl_new(ten_ctl_t *ctl, ten_hv_t *hv, ten_repl_reload_fn reload, void *ctx) {
  ten_repl_t *r = ten_xcalloc(1, sizeof *r);
  r->hv = hv;
  r->reload = reload;
  r->reload_ctx = ctx;
  ten_ctl_register(ctl, "eval", cmd_eval, r);
  return r;
}

void ten_repl_free(ten_repl_t *r) {
  if (!r) return;
  tenL_close(r->L);
  free(r);
}
