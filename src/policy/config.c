#include "policy/config.h"

#include "policy/lua.h"
#include "policy/schema.h"

#include <errno.h>
#include <lauxlib.h>
#include <libgen.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <uv.h>

#define MAX_CONFIG_BYTES (4 * 1024 * 1024)

const char *ten_restart_policy_name(ten_restart_policy_t p) {
  switch (p) {
  case TEN_RESTART_ON_FAILURE: return "on-failure";
  case TEN_RESTART_ALWAYS: return "always";
  case TEN_RESTART_NEVER: return "never";
  }
  return "?";
}

char *ten_config_default_data_dir(void) {
  if (geteuid() == 0) return ten_xstrdup("/var/lib/tenement");
  const char *state = getenv("XDG_STATE_HOME");
  if (state && state[0] == '/') return ten_xasprintf("%s/tenement", state);
  const char *home = getenv("HOME");
  if (!home || home[0] != '/') {
    struct passwd *pw = getpwuid(geteuid());
    home = pw ? pw->pw_dir : "/tmp";
  }
  return ten_xasprintf("%s/.local/state/tenement", home);
}

static char *absolute_path(const char *path) {
  if (path[0] == '/') return ten_xstrdup(path);
  char cwd[PATH_MAX];
  if (!getcwd(cwd, sizeof cwd)) return ten_xstrdup(path);
  return ten_xasprintf("%s/%s", cwd, path);
}

static int read_source(const char *path, char **out, ten_err_t *err) {
  FILE *f = fopen(path, "rb");
  if (!f) return ten_errf(err, -errno, "%s: cannot read config: %s", path, strerror(errno));
  ten_buf_t b = TEN_BUF_INIT;
  char chunk[8192];
  size_t n;
  while ((n = fread(chunk, 1, sizeof chunk, f)) > 0) {
    ten_buf_append(&b, chunk, n);
    if (b.len > MAX_CONFIG_BYTES) {
      fclose(f);
      ten_buf_free(&b);
      return ten_errf(err, UV_EFBIG, "%s: config file is larger than %d bytes", path,
                      MAX_CONFIG_BYTES);
    }
  }
  bool failed = ferror(f);
  fclose(f);
  if (failed) {
    ten_buf_free(&b);
    return ten_errf(err, UV_EIO, "%s: error reading config", path);
  }
  *out = ten_buf_steal(&b);
  return 0;
}

static void free_service(ten_service_conf_t *s) {
  ten_schema_free(ten_service_options, s);
  free(s->name);
}

static void config_free(ten_config_t *c) {
  ten_schema_free(ten_settings_options, &c->settings);
  for (size_t i = 0; i < c->service_count; i++) free_service(&c->services[i]);
  free(c->services);
  for (size_t i = 0; i < c->instance_count; i++) {
    free(c->instances[i].service);
    free(c->instances[i].id);
  }
  free(c->instances);
  tenL_close(c->L);
  free(c->_hook_log);
  free(c->path);
  free(c);
}

ten_config_t *ten_config_ref(ten_config_t *c) {
  c->_refs++;
  return c;
}

void ten_config_unref(ten_config_t *c) {
  if (c && --c->_refs == 0) config_free(c);
}

const ten_service_conf_t *ten_config_service(const ten_config_t *c, const char *name,
                                             size_t name_len) {
  for (size_t i = 0; i < c->service_count; i++)
    if (strlen(c->services[i].name) == name_len && memcmp(c->services[i].name, name, name_len) == 0)
      return &c->services[i];
  return NULL;
}

/* Reads decl.<field>[i] style entries: pushes decl[field] and returns its length. */
static lua_Integer push_list(lua_State *L, int decl, const char *field) {
  lua_getfield(L, decl, field);
  return luaL_len(L, -1);
}

static int line_of(lua_State *L, int idx) {
  lua_getfield(L, idx, "line");
  int line = (int)lua_tointeger(L, -1);
  lua_pop(L, 1);
  return line;
}

static int load_services(ten_config_t *c, ten_schema_ctx_t *ctx, int decl, ten_err_t *err) {
  lua_State *L = ctx->L;
  lua_Integer n = push_list(L, decl, "services");
  c->services = ten_xcalloc((size_t)n, sizeof *c->services);
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, -1, i);
    ten_service_conf_t *s = &c->services[c->service_count++];
    lua_getfield(L, -1, "name");
    s->name = ten_xstrdup(lua_tostring(L, -1));
    lua_pop(L, 1);
    s->line = ctx->line = line_of(L, -1);
    snprintf(ctx->what, sizeof ctx->what, "service \"%s\"", s->name);
    lua_getfield(L, -1, "fields");
    int rc = ten_schema_apply(ten_service_options, ctx, -1, s, err);
    lua_pop(L, 2);
    if (rc) {
      lua_pop(L, 1);
      return rc;
    }
    if (s->socket && s->port_auto) {
      lua_pop(L, 1);
      return ten_errf(err, UV_EINVAL, "%s:%d: %s: give either 'socket' or 'port', not both",
                      ctx->path, s->line, ctx->what);
    }
    if (!s->socket && !s->port_auto) s->socket = ten_xstrdup("{data_dir}/run/{service}-{id}.sock");
  }
  lua_pop(L, 1);
  return 0;
}

static int load_instances(ten_config_t *c, ten_schema_ctx_t *ctx, int decl, ten_err_t *err) {
  lua_State *L = ctx->L;
  lua_Integer n = push_list(L, decl, "instances");
  c->instances = ten_xcalloc((size_t)n, sizeof *c->instances);
  int rc = 0;
  for (lua_Integer i = 1; i <= n && rc == 0; i++) {
    lua_rawgeti(L, -1, i);
    lua_getfield(L, -1, "service");
    lua_getfield(L, -2, "id");
    const char *svc = lua_tostring(L, -2), *id = lua_tostring(L, -1);
    int line = line_of(L, -3);
    if (!ten_config_service(c, svc, strlen(svc))) {
      rc = ten_errf(err, UV_EINVAL, "%s:%d: instances: unknown service '%s'", ctx->path, line, svc);
    } else {
      for (size_t j = 0; j < c->instance_count; j++)
        if (!strcmp(c->instances[j].service, svc) && !strcmp(c->instances[j].id, id))
          rc = ten_errf(err, UV_EINVAL, "%s:%d: instances: %s:%s is listed twice", ctx->path, line,
                        svc, id);
    }
    if (rc == 0) {
      c->instances[c->instance_count].service = ten_xstrdup(svc);
      c->instances[c->instance_count].id = ten_xstrdup(id);
      c->instance_count++;
    }
    lua_pop(L, 3);
  }
  lua_pop(L, 1);
  return rc;
}

/* Lua shortens long chunk names to "...tail" in messages: put the whole
 * path back, so the operator can click or copy it. */
static void restore_path(ten_err_t *err, const char *path) {
  if (!err || strncmp(err->msg, "...", 3) != 0) return;
  const char *tail = err->msg + 3;
  for (const char *p = tail; *p; p++) {
    if (*p != ':' || p[1] < '0' || p[1] > '9') continue;
    size_t tail_len = (size_t)(p - tail), path_len = strlen(path);
    if (tail_len > path_len || memcmp(path + path_len - tail_len, tail, tail_len) != 0) return;
    char rest[sizeof err->msg];
    snprintf(rest, sizeof rest, "%s", p);
    snprintf(err->msg, sizeof err->msg, "%s%s", path, rest);
    return;
  }
}

/* One evaluation of a tenement.lua, shared with the protected function. */
typedef struct evaluation {
  ten_config_t *c;
  ten_schema_ctx_t *ctx;
  ten_err_t *err;
  int rc; /* a mistake found by the C side; err has the message */
} evaluation_t;

/* Runs the file and turns what it declared into c, under one tenL_pcall:
 * the user's code, and everything that touches values it made (metamethods
 * included), is bounded by the config's deadline and memory limit. Lua
 * errors propagate; mistakes found here set e->rc. */
static int evaluate(lua_State *L) {
  evaluation_t *e = lua_touserdata(L, 1);
  ten_schema_ctx_t *ctx = e->ctx;
  const char *path = ctx->path;
  lua_settop(L, 0);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "tenement.dsl");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "new");
  tenL_push_env(L);
  lua_call(L, 1, 2);
  int decl = lua_gettop(L), env = decl - 1;

  char chunkname[PATH_MAX + 2];
  snprintf(chunkname, sizeof chunkname, "@%s", path);
  if (luaL_loadbufferx(L, ctx->source, strlen(ctx->source), chunkname, "t") != LUA_OK) {
    e->rc = ten_errf(e->err, UV_EINVAL, "%s", lua_tostring(L, -1));
    return 0;
  }
  lua_pushvalue(L, env);
  lua_setupvalue(L, -2, 1); /* the chunk's _ENV */
  lua_call(L, 0, 0);

  lua_getfield(L, decl, "unfinished");
  lua_call(L, 0, 2);
  if (lua_isstring(L, -2)) {
    e->rc = ten_errf(e->err, UV_EINVAL, "%s:%d: %s", path, (int)lua_tointeger(L, -1),
                     lua_tostring(L, -2));
    return 0;
  }
  lua_pop(L, 2);

  lua_getfield(L, decl, "settings");
  if (lua_istable(L, -1)) {
    ctx->line = line_of(L, -1);
    snprintf(ctx->what, sizeof ctx->what, "settings");
    lua_getfield(L, -1, "fields");
    if ((e->rc = ten_schema_apply(ten_settings_options, ctx, -1, &e->c->settings, e->err)))
      return 0;
    lua_pop(L, 1);
  }
  lua_pop(L, 1);

  if ((e->rc = load_services(e->c, ctx, decl, e->err))) return 0;
  if ((e->rc = load_instances(e->c, ctx, decl, e->err))) return 0;

  /* An editor that truncates the file, then writes it, shows a reload an
   * empty file for a moment: that must not drain every service. So a file
   * that declares no service has to say so. */
  lua_getfield(L, decl, "instances_line");
  if (e->c->service_count == 0 && lua_isnil(L, -1))
    e->rc = ten_errf(e->err, UV_EINVAL,
                     "%s: declares no service: an empty or half-written file is refused "
                     "(to run without services, say so with `instances {}`)",
                     path);
  return 0;
}

/* Runs `source` (named `path` in messages) in a fresh state with the DSL
 * in a sandbox as its environment and turns what it declared into c.
 * Takes `source`. */
static int evaluate_source(ten_config_t *c, const char *path, char *source, ten_err_t *err) {
  lua_State *L = c->L = tenL_newstate(TEN_LUA_MEMORY_LIMIT);
  if (!L) {
    free(source);
    return ten_errf(err, UV_ENOMEM, "%s: cannot create a Lua state", path);
  }
  char *abs = absolute_path(path);
  char *base_dir = ten_xstrdup(dirname(abs));
  ten_schema_ctx_t ctx = {.path = path, .source = source, .base_dir = base_dir, .L = L};
  evaluation_t e = {.c = c, .ctx = &ctx, .err = err};

  lua_pushcfunction(L, evaluate);
  lua_pushlightuserdata(L, &e);
  int rc = tenL_pcall(L, 1, 0, &tenL_config_limit, err);
  if (rc == 0) rc = e.rc;
  if (rc) {
    restore_path(err, path);
    /* A limit hit outside the user's lines (the memory limit) names the file still. */
    if (err && strncmp(err->msg, path, strlen(path)) != 0) {
      char msg[sizeof err->msg];
      snprintf(msg, sizeof msg, "%s", err->msg);
      ten_errf(err, rc, "%s: %s", path, msg);
    }
  }
  lua_settop(L, 0);
  free(source);
  free(abs);
  free(base_dir);
  return rc;
}

static int apply_overrides(ten_config_t *c, const ten_config_overrides_t *ovr, ten_err_t *err) {
  ten_settings_t *s = &c->settings;
  if (ovr->domain) {
    /* Validate like the file's value, through the same schema row. */
    lua_State *L = tenL_newstate(TEN_LUA_MEMORY_LIMIT);
    if (!L) return ten_errf(err, UV_ENOMEM, "cannot create a Lua state");
    ten_schema_ctx_t ctx = {.path = "--domain", .L = L};
    snprintf(ctx.what, sizeof ctx.what, "command line");
    lua_createtable(L, 0, 1);
    lua_pushstring(L, ovr->domain);
    lua_setfield(L, -2, "domain");
    ten_settings_t tmp = {0};
    int rc = ten_schema_apply(ten_settings_options, &ctx, -1, &tmp, err);
    tenL_close(L);
    if (rc == 0) {
      free(s->domain);
      s->domain = tmp.domain;
      tmp.domain = NULL;
    } else {
      rc = ten_errf(err, rc, "--domain %s: must be a DNS name like example.com", ovr->domain);
    }
    ten_schema_free(ten_settings_options, &tmp);
    if (rc) return rc;
  }
  if (ovr->listen) {
    free(s->listen);
    s->listen = ten_xstrdup(ovr->listen);
  }
  if (ovr->port >= 0) {
    if (ovr->port > 65535) return ten_errf(err, UV_EINVAL, "--port %d: must be 0-65535", ovr->port);
    s->port = ovr->port;
  }
  if (ovr->data_dir) {
    free(s->data_dir);
    s->data_dir = absolute_path(ovr->data_dir);
  }
  return 0;
}

static int load(const char *path, char *source, const ten_config_overrides_t *ovr,
                ten_config_t **out, ten_err_t *err) {
  static const ten_config_overrides_t none = TEN_CONFIG_OVERRIDES_NONE;
  ten_config_t *c = ten_xcalloc(1, sizeof *c);
  c->_refs = 1;
  ten_schema_defaults(ten_settings_options, &c->settings);
  int rc = 0;
  if (source) {
    c->path = absolute_path(path);
    rc = evaluate_source(c, path, source, err);
  }
  if (rc == 0) rc = apply_overrides(c, ovr ? ovr : &none, err);
  if (rc == 0 && !c->settings.data_dir) {
    const char *env = getenv("TENEMENT_DATA_DIR");
    c->settings.data_dir = env && *env ? absolute_path(env) : ten_config_default_data_dir();
  }
  if (rc) {
    config_free(c);
    *out = NULL;
    return rc;
  }
  *out = c;
  return 0;
}

int ten_config_load(const char *path, const ten_config_overrides_t *ovr, ten_config_t **out,
                    ten_err_t *err) {
  char *source = NULL;
  if (path) {
    int rc = read_source(path, &source, err);
    if (rc) {
      *out = NULL;
      return rc;
    }
  }
  return load(path, source, ovr, out, err);
}

int ten_config_load_source(const char *name, const char *source, size_t len,
                           const ten_config_overrides_t *ovr, ten_config_t **out,
                           ten_err_t *err) {
  if (memchr(source, '\0', len)) {
    *out = NULL;
    return ten_errf(err, UV_EINVAL, "%s: config contains a NUL byte", name);
  }
  return load(name, ten_xstrndup(source, len), ovr, out, err);
}

void ten_config_to_json(const ten_config_t *c, ten_buf_t *out) {
  ten_jw_t w;
  ten_jw_init(&w, out);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "path", c->path);
  ten_jw_key(&w, "settings");
  ten_jw_obj(&w);
  ten_schema_to_json(ten_settings_options, &c->settings, &w);
  ten_jw_obj_end(&w);
  ten_jw_key(&w, "services");
  ten_jw_obj(&w);
  for (size_t i = 0; i < c->service_count; i++) {
    ten_jw_key(&w, c->services[i].name);
    ten_jw_obj(&w);
    ten_schema_to_json(ten_service_options, &c->services[i], &w);
    ten_jw_obj_end(&w);
  }
  ten_jw_obj_end(&w);
  ten_jw_key(&w, "instances");
  ten_jw_arr(&w);
  for (size_t i = 0; i < c->instance_count; i++) {
    ten_jw_obj(&w);
    ten_jw_kstr(&w, "service", c->instances[i].service);
    ten_jw_kstr(&w, "id", c->instances[i].id);
    ten_jw_obj_end(&w);
  }
  ten_jw_arr_end(&w);
  ten_jw_obj_end(&w);
}
