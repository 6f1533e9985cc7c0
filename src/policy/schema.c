#include "policy/schema.h"

#include "policy/config.h"
#include "policy/lua.h"
#include "policy/template.h"

#include <ctype.h>
#include <lauxlib.h>
#include <regex.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ------------------------------------------------------------ the tables */

static const char *const restart_choices[] = {"on-failure", "always", "never", NULL};
static const char *const activation_choices[] = {"none", "socket", NULL};

#define SET(field) offsetof(ten_settings_t, field)
#define SVC(field) offsetof(ten_service_conf_t, field)

/* clang-format off */
const ten_option_t ten_settings_options[] = {
  {"domain", TEN_OPT_DOMAIN, SET(domain), 0, 0, 0, "localhost", NULL, 0, 0,
   "hosts are routed as {id}.{service}.{domain}; the domain itself serves the API"},
  {"listen", TEN_OPT_STRING, SET(listen), 0, 0, 0, "0.0.0.0", NULL, 0, TEN_OPT_STARTUP,
   "address the HTTP listener binds"},
  {"port", TEN_OPT_INT, SET(port), 0, 65535, 8080, NULL, NULL, 0, TEN_OPT_STARTUP,
   "HTTP port; 0 picks a free one"},
  {"data_dir", TEN_OPT_PATH, SET(data_dir), 0, 0, 0, NULL, NULL, 0, TEN_OPT_STARTUP,
   "state, sockets and logs; default /var/lib/tenement (root) or ~/.local/state/tenement"},
  {"drain_timeout", TEN_OPT_SECONDS, SET(drain_timeout), 0, 3600, 10, NULL, NULL, 0, 0,
   "seconds in-flight requests may take to finish at shutdown"},
  {"log_retention_days", TEN_OPT_NUMBER, SET(log_retention_days), 0, 36500, 7, NULL, NULL, 0, 0,
   "days log lines are kept (0 = no age limit)"},
  {"log_max_rows", TEN_OPT_SIZE, SET(log_max_rows), 0, 1e12, 10000000, NULL, NULL, 0, 0,
   "log lines kept in all; the oldest go first (0 = no cap)"},
  {"log_rotate_interval", TEN_OPT_SECONDS, SET(log_rotate_interval), 0.1, 86400, 60, NULL, NULL, 0,
   0, "seconds between passes that apply log_retention_days and log_max_rows"},
  {"log_ring_lines", TEN_OPT_INT, SET(log_ring_lines), 1, 1000000, 1000, NULL, NULL, 0,
   TEN_OPT_STARTUP, "lines kept in memory per instance for instant tails"},
  {"log_max_line", TEN_OPT_INT, SET(log_max_line), 256, 1048576, 16384, NULL, NULL, 0, 0,
   "bytes; longer lines are split into pieces this long"},
  {"metrics_auth", TEN_OPT_BOOL, SET(metrics_auth), 0, 0, 0, NULL, NULL, 0, 0,
   "true: /metrics needs a token like the API"},
  {"max_connections", TEN_OPT_INT, SET(max_connections), 1, 1000000, 10000, NULL, NULL, 0, 0,
   "open client connections; new ones beyond are refused (503, closed)"},
  {"max_header_size", TEN_OPT_INT, SET(max_header_size), 1024, 61440, 32768, NULL, NULL, 0, 0,
   "bytes of request line and headers (431 beyond)"},
  {"max_body_size", TEN_OPT_SIZE, SET(max_body_size), 0, 1e15, 104857600, NULL, NULL, 0, 0,
   "bytes of request body (413 beyond; 0 = no limit); e.g. \"100m\""},
  {"header_timeout", TEN_OPT_SECONDS, SET(header_timeout), 0.001, 3600, 30, NULL, NULL, 0, 0,
   "seconds a client may take to send a request head (408 after)"},
  {"client_timeout", TEN_OPT_SECONDS, SET(client_timeout), 0.001, 3600, 60, NULL, NULL, 0, 0,
   "seconds a client may stay silent while sending a body"},
  {"body_timeout", TEN_OPT_SECONDS, SET(body_timeout), 0, 86400, 300, NULL, NULL, 0, 0,
   "seconds the whole request body may take, however steadily it trickles (0 = no limit)"},
  {"send_timeout", TEN_OPT_SECONDS, SET(send_timeout), 0.001, 3600, 60, NULL, NULL, 0, 0,
   "seconds a client may read nothing of what ten sends it before it is cut off"},
  {"keepalive_timeout", TEN_OPT_SECONDS, SET(keepalive_timeout), 0, 3600, 75, NULL, NULL, 0, 0,
   "seconds an idle keep-alive client connection is kept (0 = no keep-alive)"},
  {"trusted_proxies", TEN_OPT_CIDRS, SET(trusted_proxies), 0, 0, 0, NULL, NULL, 0, 0,
   "peers (e.g. \"10.0.0.0/8\") whose X-Forwarded-* headers are believed"},
  {"route", TEN_OPT_FUNC, SET(route_ref), 0, 0, 0, NULL, NULL, 0, 0,
   "function(req) -> \"service:id\" to route a request (runs per request: measure it)"},
  {"hook_log_interval", TEN_OPT_SECONDS, SET(hook_log_interval), 0, 86400, 10, NULL, NULL, 0,
   0, "seconds between log lines of a hook that keeps failing (the first failure is logged at once; 0 = every failure)"},
  {"upstream_keepalive", TEN_OPT_INT, SET(upstream_keepalive), 0, 4096, 32, NULL, NULL, 0, 0,
   "idle upstream connections kept open per instance"},
  {"upstream_connect_timeout", TEN_OPT_SECONDS, SET(upstream_connect_timeout), 0.001, 3600, 5, NULL,
   NULL, 0, 0, "seconds to connect to an instance (502 after)"},
  {"upstream_timeout", TEN_OPT_SECONDS, SET(upstream_timeout), 0.001, 86400, 60, NULL, NULL, 0, 0,
   "seconds an instance may stay silent while answering (504 before the response starts)"},
  {NULL, 0, 0, 0, 0, 0, NULL, NULL, 0, 0, NULL},
};

const ten_option_t ten_service_options[] = {
  {"command", TEN_OPT_TEMPLATE, SVC(command), 0, 0, 0, NULL, NULL, TEN_TPL_ALL,
   TEN_OPT_REQUIRED | TEN_OPT_RESTARTS, "shell command that runs one instance"},
  {"directory", TEN_OPT_TEMPLATE, SVC(directory), 0, 0, 0, NULL, NULL,
   TEN_TPL_ID | TEN_TPL_SERVICE | TEN_TPL_DATA_DIR, TEN_OPT_RESTARTS,
   "working directory (default: data_dir)"},
  {"socket", TEN_OPT_TEMPLATE, SVC(socket), 0, 0, 0, NULL, NULL,
   TEN_TPL_ID | TEN_TPL_SERVICE | TEN_TPL_DATA_DIR, TEN_OPT_RESTARTS,
   "unix socket the instance listens on (default {data_dir}/run/{service}-{id}.sock)"},
  {"port", TEN_OPT_AUTO, SVC(port_auto), 0, 0, 0, NULL, NULL, 0, TEN_OPT_RESTARTS,
   "\"auto\": listen on a free TCP port on 127.0.0.1 given as {port} and PORT instead"},
  {"health", TEN_OPT_HTTP_PATH, SVC(health), 0, 0, 0, NULL, NULL, 0, 0,
   "path that must answer 2xx before the instance is ready"},
  {"env", TEN_OPT_ENV, SVC(env), 0, 0, 0, NULL, NULL, TEN_TPL_ALL, TEN_OPT_RESTARTS,
   "extra environment variables (templates)"},
  {"restart", TEN_OPT_ENUM, SVC(restart), 0, 0, 0, NULL, restart_choices, 0, 0,
   "when to restart after the process exits: on-failure, always or never"},
  {"start_timeout", TEN_OPT_SECONDS, SVC(start_timeout), 0.01, 3600, 30, NULL, NULL, 0, 0,
   "seconds to become ready before the start is failed"},
  {"stop_timeout", TEN_OPT_SECONDS, SVC(stop_timeout), 0, 3600, 10, NULL, NULL, 0, 0,
   "seconds between SIGTERM and SIGKILL"},
  {"backoff_initial", TEN_OPT_SECONDS, SVC(backoff_initial), 0, 3600, 0.5, NULL, NULL, 0, 0,
   "seconds before restarting after the first crash; doubles per crash"},
  {"backoff_max", TEN_OPT_SECONDS, SVC(backoff_max), 0, 86400, 30, NULL, NULL, 0, 0,
   "cap of the restart backoff"},
  {"max_restarts", TEN_OPT_INT, SVC(max_restarts), 0, 100000, 5, NULL, NULL, 0, 0,
   "consecutive crashes after which the instance is failed"},
  {"stable_after", TEN_OPT_SECONDS, SVC(stable_after), 0, 86400, 30, NULL, NULL, 0, 0,
   "seconds up after which the crash count starts again from zero"},
  {"activation", TEN_OPT_ENUM, SVC(activation), 0, 0, 0, NULL, activation_choices, 0,
   TEN_OPT_RESTARTS, "\"socket\": ten binds the socket and passes it as fd 3 (LISTEN_FDS)"},
  {"health_interval", TEN_OPT_SECONDS, SVC(health_interval), 0, 86400, 10, NULL, NULL, 0, 0,
   "seconds between health checks of a ready instance (0 = only at start)"},
  {"health_timeout", TEN_OPT_SECONDS, SVC(health_timeout), 0.001, 3600, 2, NULL, NULL, 0, 0,
   "seconds a health check may take"},
  {"health_failures", TEN_OPT_INT, SVC(health_failures), 1, 1000, 3, NULL, NULL, 0, 0,
   "failed health checks in a row before the instance is restarted"},
  {"idle_timeout", TEN_OPT_SECONDS, SVC(idle_timeout), 0, 31536000, 0, NULL, NULL, 0, 0,
   "seconds without a request before an instance is stopped (0 = never)"},
  {"idle", TEN_OPT_FUNC, SVC(idle_ref), 0, 0, 0, NULL, NULL, 0, 0,
   "function(inst) -> true to stop an instance now (inst: idle_seconds, uptime, requests, memory_mb)"},
  {"wake_timeout", TEN_OPT_SECONDS, SVC(wake_timeout), 0.01, 3600, 30, NULL, NULL, 0, 0,
   "seconds a request waits for a sleeping instance to start (503 after)"},
  {"wake_queue", TEN_OPT_INT, SVC(wake_queue), 0, 100000, 256, NULL, NULL, 0, 0,
   "requests that may wait for one instance to start (503 beyond)"},
  {"weight", TEN_OPT_WEIGHT, SVC(weight), 0, 100, 100, NULL, NULL, 0, 0,
   "share of {service}.{domain} traffic, 0-100, or function(inst) -> weight"},
  {"spawn_on_demand", TEN_OPT_BOOL, SVC(spawn_on_demand), 0, 0, 0, NULL, NULL, 0, 0,
   "create an instance on the first request for a new {id}"},
  {"id_pattern", TEN_OPT_REGEX, SVC(id_pattern), 0, 0, 0, "^[a-z0-9][a-z0-9-]{0,62}$", NULL, 0, 0,
   "regular expression an on-demand id must match"},
  {"admit", TEN_OPT_FUNC, SVC(admit_ref), 0, 0, 0, NULL, NULL, 0, 0,
   "function(id, req) -> true to allow creating that instance on demand"},
  {"max_instances", TEN_OPT_INT, SVC(max_instances), 0, 100000, 100, NULL, NULL, 0, 0,
   "instances the service may have (on-demand creation stops there)"},
  {"spawn_rate", TEN_OPT_INT, SVC(spawn_rate), 0, 100000, 60, NULL, NULL, 0, 0,
   "on-demand creations allowed per minute"},
  {NULL, 0, 0, 0, 0, 0, NULL, NULL, 0, 0, NULL},
};
/* clang-format on */

/* ------------------------------------------------------------ field access */

#define FIELD(target, o, type)  ((type *)((char *)(target) + (o)->offset))
#define CFIELD(target, o, type) ((const type *)((const char *)(target) + (o)->offset))

typedef struct env_list {
  ten_env_var_t *vars;
  size_t count;
} env_list_t;

typedef struct cidr_list {
  ten_cidr_t *items;
  size_t count;
} cidr_list_t;

_Static_assert(offsetof(ten_settings_t, trusted_proxy_count) ==
                   offsetof(ten_settings_t, trusted_proxies) + sizeof(ten_cidr_t *),
               "trusted_proxies and its count must be adjacent");

_Static_assert(offsetof(ten_service_conf_t, weight_ref) ==
                   offsetof(ten_service_conf_t, weight) + sizeof(int),
               "weight and weight_ref must be adjacent");

/* ten_service_conf_t keeps env and env_count side by side. */
_Static_assert(offsetof(ten_service_conf_t, env_count) ==
                   offsetof(ten_service_conf_t, env) + sizeof(ten_env_var_t *),
               "env and env_count must be adjacent");

static bool is_string_type(ten_opt_type_t t) {
  return t == TEN_OPT_STRING || t == TEN_OPT_TEMPLATE || t == TEN_OPT_DOMAIN || t == TEN_OPT_PATH ||
         t == TEN_OPT_HTTP_PATH || t == TEN_OPT_REGEX;
}

void ten_schema_defaults(const ten_option_t *opts, void *target) {
  for (const ten_option_t *o = opts; o->name; o++) {
    switch (o->type) {
    case TEN_OPT_INT: *FIELD(target, o, int) = (int)o->def_num; break;
    case TEN_OPT_SECONDS:
    case TEN_OPT_NUMBER: *FIELD(target, o, double) = o->def_num; break;
    case TEN_OPT_BOOL:
    case TEN_OPT_AUTO: *FIELD(target, o, bool) = o->def_num != 0; break;
    case TEN_OPT_ENUM: *FIELD(target, o, int) = (int)o->def_num; break;
    case TEN_OPT_FUNC: *FIELD(target, o, int) = LUA_NOREF; break;
    case TEN_OPT_WEIGHT:
      FIELD(target, o, int)[0] = (int)o->def_num;
      FIELD(target, o, int)[1] = LUA_NOREF;
      break;
    case TEN_OPT_SIZE: *FIELD(target, o, int64_t) = (int64_t)o->def_num; break;
    case TEN_OPT_ENV:
    case TEN_OPT_CIDRS: break;
    default:
      free(*FIELD(target, o, char *));
      *FIELD(target, o, char *) = o->def_str ? ten_xstrdup(o->def_str) : NULL;
    }
  }
}

void ten_schema_free(const ten_option_t *opts, void *target) {
  for (const ten_option_t *o = opts; o->name; o++) {
    if (is_string_type(o->type)) {
      free(*FIELD(target, o, char *));
      *FIELD(target, o, char *) = NULL;
    } else if (o->type == TEN_OPT_ENV) {
      env_list_t *env = FIELD(target, o, env_list_t);
      for (size_t i = 0; i < env->count; i++) {
        free(env->vars[i].name);
        free(env->vars[i].value);
      }
      free(env->vars);
      env->vars = NULL;
      env->count = 0;
    } else if (o->type == TEN_OPT_CIDRS) {
      cidr_list_t *list = FIELD(target, o, cidr_list_t);
      free(list->items);
      list->items = NULL;
      list->count = 0;
    }
  }
}

/* ------------------------------------------------------------ messages */

static int key_line(ten_schema_ctx_t *ctx, const char *key) {
  if (!ctx->L || !ctx->source) return ctx->line;
  lua_State *L = ctx->L;
  int top = lua_gettop(L);
  int line = ctx->line;
  if (tenL_require(L, "tenement.dsl", NULL) == 0) {
    lua_getfield(L, -1, "key_line");
    lua_pushstring(L, ctx->source);
    lua_pushinteger(L, ctx->line);
    lua_pushstring(L, key);
    if (tenL_pcall(L, 3, 1, &tenL_config_limit, NULL) == 0 && lua_isinteger(L, -1))
      line = (int)lua_tointeger(L, -1);
  }
  lua_settop(L, top);
  return line;
}

static int key_error(ten_schema_ctx_t *ctx, ten_err_t *err, const char *key, const char *fmt, ...)
    TEN_PRINTF(4, 5);

static int key_error(ten_schema_ctx_t *ctx, ten_err_t *err, const char *key, const char *fmt, ...) {
  char detail[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  int line = key ? key_line(ctx, key) : ctx->line;
  return ten_errf(err, UV_EINVAL, "%s:%d: %s: %s", ctx->path, line, ctx->what, detail);
}

/* key_error for an entry of a table option (env = { NAME = ... }): the
 * line of NAME inside that table. */
static int entry_error(ten_schema_ctx_t *ctx, ten_err_t *err, const char *option,
                       const char *entry, const char *fmt, ...) TEN_PRINTF(5, 6);

static int entry_error(ten_schema_ctx_t *ctx, ten_err_t *err, const char *option,
                       const char *entry, const char *fmt, ...) {
  char detail[768];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(detail, sizeof detail, fmt, ap);
  va_end(ap);
  int block_line = ctx->line;
  ctx->line = key_line(ctx, option);
  int line = key_line(ctx, entry);
  ctx->line = block_line;
  return ten_errf(err, UV_EINVAL, "%s:%d: %s: %s", ctx->path, line, ctx->what, detail);
}

static const char *describe(lua_State *L, int idx, char *buf, size_t len) {
  switch (lua_type(L, idx)) {
  case LUA_TSTRING: snprintf(buf, len, "\"%.60s\"", lua_tostring(L, idx)); break;
  case LUA_TNUMBER: snprintf(buf, len, "%.60s", lua_tostring(L, idx)); break;
  case LUA_TBOOLEAN: snprintf(buf, len, "%s", lua_toboolean(L, idx) ? "true" : "false"); break;
  default: snprintf(buf, len, "a %s", luaL_typename(L, idx));
  }
  return buf;
}

static size_t edit_distance(const char *a, const char *b) {
  size_t la = strlen(a), lb = strlen(b);
  if (la > 64 || lb > 64) return 99;
  size_t prev[65], cur[65];
  for (size_t j = 0; j <= lb; j++) prev[j] = j;
  for (size_t i = 1; i <= la; i++) {
    cur[0] = i;
    for (size_t j = 1; j <= lb; j++) {
      size_t cost = a[i - 1] == b[j - 1] ? 0 : 1;
      cur[j] = TEN_MIN(TEN_MIN(prev[j] + 1, cur[j - 1] + 1), prev[j - 1] + cost);
    }
    memcpy(prev, cur, (lb + 1) * sizeof *prev);
  }
  return prev[lb];
}

const char *ten_schema_suggest(const ten_option_t *opts, const char *name) {
  const char *best = NULL;
  size_t best_d = 3;
  for (const ten_option_t *o = opts; o->name; o++) {
    size_t d = edit_distance(name, o->name);
    if (d < best_d) {
      best_d = d;
      best = o->name;
    }
  }
  return best;
}

/* ------------------------------------------------------------ validation */

static bool valid_domain(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || len > 253) return false;
  size_t label = 0;
  for (size_t i = 0; i < len; i++) {
    char c = s[i];
    if (c == '.') {
      if (label == 0 || s[i - 1] == '-') return false;
      label = 0;
      continue;
    }
    if (!(isalnum((unsigned char)c) || c == '-')) return false;
    if (c == '-' && label == 0) return false;
    if (++label > 63) return false;
  }
  return label > 0 && s[len - 1] != '-';
}

static int apply_string(const ten_option_t *o, ten_schema_ctx_t *ctx, int vidx, void *target,
                        ten_err_t *err) {
  lua_State *L = ctx->L;
  char got[96];
  if (lua_type(L, vidx) != LUA_TSTRING)
    return key_error(ctx, err, o->name, "'%s' must be a string, got %s", o->name,
                     describe(L, vidx, got, sizeof got));
  size_t len;
  const char *s = lua_tolstring(L, vidx, &len);
  if (len == 0 || strlen(s) != len)
    return key_error(ctx, err, o->name, "'%s' must be a non-empty string without NUL bytes",
                     o->name);
  char *value = NULL;
  ten_err_t why;
  switch (o->type) {
  case TEN_OPT_TEMPLATE:
    if (ten_template_check(s, o->placeholders, &why))
      return key_error(ctx, err, o->name, "'%s': %s", o->name, why.msg);
    value = ten_xstrdup(s);
    break;
  case TEN_OPT_DOMAIN: {
    value = ten_xstrdup(s);
    for (char *p = value; *p; p++) *p = (char)tolower((unsigned char)*p);
    if (len > 1 && value[len - 1] == '.') value[len - 1] = '\0';
    if (!valid_domain(value)) {
      free(value);
      return key_error(ctx, err, o->name, "'%s' must be a DNS name like \"example.com\", got %s",
                       o->name, describe(L, vidx, got, sizeof got));
    }
    break;
  }
  case TEN_OPT_PATH:
    if (s[0] == '/' || !ctx->base_dir)
      value = ten_xstrdup(s);
    else
      value = ten_xasprintf("%s/%s", ctx->base_dir, s);
    break;
  case TEN_OPT_REGEX: {
    regex_t re;
    int rc = regcomp(&re, s, REG_EXTENDED | REG_NOSUB);
    if (rc != 0) {
      char why_re[128];
      regerror(rc, &re, why_re, sizeof why_re);
      return key_error(ctx, err, o->name, "'%s' is not a valid regular expression: %s", o->name,
                       why_re);
    }
    regfree(&re);
    value = ten_xstrdup(s);
    break;
  }
  case TEN_OPT_HTTP_PATH:
    if (s[0] != '/' || strpbrk(s, " \t\r\n"))
      return key_error(ctx, err, o->name, "'%s' must be a URL path starting with '/', got %s",
                       o->name, describe(L, vidx, got, sizeof got));
    value = ten_xstrdup(s);
    break;
  default: value = ten_xstrdup(s);
  }
  char **field = FIELD(target, o, char *);
  free(*field);
  *field = value;
  return 0;
}

static int cmp_env(const void *a, const void *b) {
  return strcmp(((const ten_env_var_t *)a)->name, ((const ten_env_var_t *)b)->name);
}

static bool valid_env_name(const char *s) {
  if (!(isalpha((unsigned char)*s) || *s == '_')) return false;
  for (; *s; s++)
    if (!(isalnum((unsigned char)*s) || *s == '_')) return false;
  return true;
}

static int apply_env(const ten_option_t *o, ten_schema_ctx_t *ctx, int vidx, void *target,
                     ten_err_t *err) {
  lua_State *L = ctx->L;
  char got[96];
  if (!lua_istable(L, vidx))
    return key_error(ctx, err, o->name, "'%s' must be a table of NAME = \"value\", got %s", o->name,
                     describe(L, vidx, got, sizeof got));
  env_list_t *env = FIELD(target, o, env_list_t);
  lua_pushnil(L);
  while (lua_next(L, vidx)) {
    if (lua_type(L, -2) != LUA_TSTRING || !valid_env_name(lua_tostring(L, -2))) {
      lua_pop(L, 2);
      return key_error(ctx, err, o->name, "'%s' keys must be variable names like DATABASE_URL",
                       o->name);
    }
    const char *name = lua_tostring(L, -2);
    int t = lua_type(L, -1);
    if (t != LUA_TSTRING && t != LUA_TNUMBER) {
      int rc = entry_error(ctx, err, o->name, name, "env %s must be a string or number, got %s", name,
                         describe(L, -1, got, sizeof got));
      lua_pop(L, 2);
      return rc;
    }
    /* lua_tostring on a number converts in place: copy the key first. */
    lua_pushvalue(L, -1);
    const char *value = lua_tostring(L, -1);
    ten_err_t why;
    if (ten_template_check(value, o->placeholders, &why)) {
      int rc = entry_error(ctx, err, o->name, name, "env %s: %s", name, why.msg);
      lua_pop(L, 3);
      return rc;
    }
    env->vars = ten_xrealloc(env->vars, (env->count + 1) * sizeof *env->vars);
    env->vars[env->count].name = ten_xstrdup(name);
    env->vars[env->count].value = ten_xstrdup(value);
    env->count++;
    lua_pop(L, 2); /* the copy and the value; the key stays for lua_next */
  }
  qsort(env->vars, env->count, sizeof *env->vars, cmp_env);
  return 0;
}

/* 1048576, "1024k", "10m", "1g" -> bytes; -1 if malformed. */
static int64_t parse_size(const char *s) {
  char *end;
  double v = strtod(s, &end);
  if (end == s || v < 0) return -1;
  double mult = 1;
  switch (*end) {
  case 'k': case 'K': mult = 1024.0; end++; break;
  case 'm': case 'M': mult = 1024.0 * 1024; end++; break;
  case 'g': case 'G': mult = 1024.0 * 1024 * 1024; end++; break;
  default: break;
  }
  if (*end == 'b' || *end == 'B') end++;
  if (*end) return -1;
  return (int64_t)(v * mult);
}

static int apply_size(const ten_option_t *o, ten_schema_ctx_t *ctx, int vidx, void *target,
                      ten_err_t *err) {
  lua_State *L = ctx->L;
  char got[96];
  int64_t v = -1;
  if (lua_isinteger(L, vidx)) v = (int64_t)lua_tointeger(L, vidx);
  else if (lua_type(L, vidx) == LUA_TSTRING) v = parse_size(lua_tostring(L, vidx));
  if (v < (int64_t)o->min || (double)v > o->max)
    return key_error(ctx, err, o->name,
                     "'%s' must be a size in bytes, like 1048576 or \"10m\", got %s", o->name,
                     describe(L, vidx, got, sizeof got));
  *FIELD(target, o, int64_t) = v;
  return 0;
}

static int apply_cidrs(const ten_option_t *o, ten_schema_ctx_t *ctx, int vidx, void *target,
                       ten_err_t *err) {
  lua_State *L = ctx->L;
  char got[96];
  if (!lua_istable(L, vidx))
    return key_error(ctx, err, o->name, "'%s' must be a list like { \"10.0.0.0/8\" }, got %s",
                     o->name, describe(L, vidx, got, sizeof got));
  cidr_list_t *list = FIELD(target, o, cidr_list_t);
  /* Raw: a __len could claim any size, and this allocates by it. */
  lua_Integer n = (lua_Integer)lua_rawlen(L, vidx);
  list->items = ten_xcalloc((size_t)n + 1, sizeof *list->items);
  list->count = 0;
  for (lua_Integer i = 1; i <= n; i++) {
    lua_rawgeti(L, vidx, i);
    const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    if (!s || ten_cidr_parse(s, &list->items[list->count]) != 0) {
      int rc = key_error(ctx, err, o->name,
                         "'%s'[%lld] must be an address or range like \"10.0.0.0/8\", got %s",
                         o->name, (long long)i, describe(L, -1, got, sizeof got));
      lua_pop(L, 1);
      return rc;
    }
    list->count++;
    lua_pop(L, 1);
  }
  return 0;
}

static int apply_one(const ten_option_t *o, ten_schema_ctx_t *ctx, int vidx, void *target,
                     ten_err_t *err) {
  lua_State *L = ctx->L;
  char got[96];
  if (is_string_type(o->type)) return apply_string(o, ctx, vidx, target, err);
  switch (o->type) {
  case TEN_OPT_INT:
    if (!lua_isinteger(L, vidx) || lua_tointeger(L, vidx) < (lua_Integer)o->min ||
        lua_tointeger(L, vidx) > (lua_Integer)o->max)
      return key_error(ctx, err, o->name, "'%s' must be an integer from %.0f to %.0f, got %s",
                       o->name, o->min, o->max, describe(L, vidx, got, sizeof got));
    *FIELD(target, o, int) = (int)lua_tointeger(L, vidx);
    return 0;
  case TEN_OPT_SECONDS:
  case TEN_OPT_NUMBER: {
    double v = lua_type(L, vidx) == LUA_TNUMBER ? lua_tonumber(L, vidx) : NAN;
    if (!(v >= o->min && v <= o->max))
      return key_error(ctx, err, o->name, "'%s' must be a number%s from %.10g to %.10g, got %s",
                       o->name, o->type == TEN_OPT_SECONDS ? " of seconds" : "", o->min, o->max,
                       describe(L, vidx, got, sizeof got));
    *FIELD(target, o, double) = v;
    return 0;
  }
  case TEN_OPT_BOOL:
    if (!lua_isboolean(L, vidx))
      return key_error(ctx, err, o->name, "'%s' must be true or false, got %s", o->name,
                       describe(L, vidx, got, sizeof got));
    *FIELD(target, o, bool) = lua_toboolean(L, vidx);
    return 0;
  case TEN_OPT_AUTO:
    if (lua_type(L, vidx) != LUA_TSTRING || strcmp(lua_tostring(L, vidx), "auto") != 0)
      return key_error(ctx, err, o->name, "'%s' must be \"auto\", got %s", o->name,
                       describe(L, vidx, got, sizeof got));
    *FIELD(target, o, bool) = true;
    return 0;
  case TEN_OPT_ENUM: {
    const char *s = lua_type(L, vidx) == LUA_TSTRING ? lua_tostring(L, vidx) : NULL;
    for (int i = 0; s && o->choices[i]; i++) {
      if (strcmp(s, o->choices[i]) == 0) {
        *FIELD(target, o, int) = i;
        return 0;
      }
    }
    char list[160] = "";
    for (int i = 0; o->choices[i]; i++) {
      size_t used = strlen(list);
      snprintf(list + used, sizeof list - used, "%s\"%s\"", i ? ", " : "", o->choices[i]);
    }
    return key_error(ctx, err, o->name, "'%s' must be one of %s, got %s", o->name, list,
                     describe(L, vidx, got, sizeof got));
  }
  case TEN_OPT_ENV: return apply_env(o, ctx, vidx, target, err);
  case TEN_OPT_SIZE: return apply_size(o, ctx, vidx, target, err);
  case TEN_OPT_FUNC:
    if (lua_type(L, vidx) != LUA_TFUNCTION)
      return key_error(ctx, err, o->name, "'%s' must be a function, got %s", o->name,
                       describe(L, vidx, got, sizeof got));
    lua_pushvalue(L, vidx);
    *FIELD(target, o, int) = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
  case TEN_OPT_WEIGHT:
    if (lua_type(L, vidx) == LUA_TFUNCTION) {
      lua_pushvalue(L, vidx);
      FIELD(target, o, int)[1] = luaL_ref(L, LUA_REGISTRYINDEX);
      return 0;
    }
    if (!lua_isinteger(L, vidx) || lua_tointeger(L, vidx) < 0 || lua_tointeger(L, vidx) > 100)
      return key_error(ctx, err, o->name,
                       "'%s' must be an integer from 0 to 100 or a function, got %s", o->name,
                       describe(L, vidx, got, sizeof got));
    FIELD(target, o, int)[0] = (int)lua_tointeger(L, vidx);
    return 0;
  case TEN_OPT_CIDRS: return apply_cidrs(o, ctx, vidx, target, err);
  default: return key_error(ctx, err, o->name, "'%s': unsupported option type", o->name);
  }
}

int ten_schema_apply(const ten_option_t *opts, ten_schema_ctx_t *ctx, int index, void *target,
                     ten_err_t *err) {
  lua_State *L = ctx->L;
  index = lua_absindex(L, index);
  ten_schema_defaults(opts, target);
  bool seen[64] = {false};

  lua_pushnil(L);
  while (lua_next(L, index)) {
    if (lua_type(L, -2) != LUA_TSTRING) {
      char got[96];
      int rc = key_error(ctx, err, NULL, "every value needs a key (found %s without one)",
                         describe(L, -1, got, sizeof got));
      lua_pop(L, 2);
      return rc;
    }
    const char *key = lua_tostring(L, -2);
    const ten_option_t *o = opts;
    while (o->name && strcmp(o->name, key) != 0) o++;
    if (!o->name) {
      const char *hint = ten_schema_suggest(opts, key);
      int rc = hint ? key_error(ctx, err, key, "unknown key '%s' (did you mean '%s'?)", key, hint)
                    : key_error(ctx, err, key, "unknown key '%s'", key);
      lua_pop(L, 2);
      return rc;
    }
    int rc = apply_one(o, ctx, lua_gettop(L), target, err);
    lua_pop(L, 1);
    if (rc) {
      lua_pop(L, 1);
      return rc;
    }
    seen[o - opts] = true;
  }
  for (const ten_option_t *o = opts; o->name; o++)
    if ((o->flags & TEN_OPT_REQUIRED) && !seen[o - opts])
      return key_error(ctx, err, NULL, "'%s' is required (%s)", o->name, o->doc);
  return 0;
}

/* ------------------------------------------------------------ dump, diff */

void ten_schema_to_json(const ten_option_t *opts, const void *target, ten_jw_t *w) {
  for (const ten_option_t *o = opts; o->name; o++) {
    ten_jw_key(w, o->name);
    switch (o->type) {
    case TEN_OPT_INT: ten_jw_int(w, *CFIELD(target, o, int)); break;
    case TEN_OPT_SECONDS:
    case TEN_OPT_NUMBER: ten_jw_num(w, *CFIELD(target, o, double)); break;
    case TEN_OPT_BOOL: ten_jw_bool(w, *CFIELD(target, o, bool)); break;
    case TEN_OPT_AUTO:
      if (*CFIELD(target, o, bool))
        ten_jw_str(w, "auto");
      else
        ten_jw_null(w);
      break;
    case TEN_OPT_ENUM: ten_jw_str(w, o->choices[*CFIELD(target, o, int)]); break;
    case TEN_OPT_SIZE: ten_jw_int(w, *CFIELD(target, o, int64_t)); break;
    case TEN_OPT_FUNC:
      if (*CFIELD(target, o, int) == LUA_NOREF) ten_jw_null(w);
      else ten_jw_str(w, "<function>");
      break;
    case TEN_OPT_WEIGHT:
      if (CFIELD(target, o, int)[1] != LUA_NOREF) ten_jw_str(w, "<function>");
      else ten_jw_int(w, CFIELD(target, o, int)[0]);
      break;
    case TEN_OPT_CIDRS: {
      const cidr_list_t *list = CFIELD(target, o, cidr_list_t);
      ten_jw_arr(w);
      for (size_t i = 0; i < list->count; i++) {
        char text[64];
        ten_cidr_format(&list->items[i], text, sizeof text);
        ten_jw_str(w, text);
      }
      ten_jw_arr_end(w);
      break;
    }
    case TEN_OPT_ENV: {
      const env_list_t *env = CFIELD(target, o, env_list_t);
      ten_jw_obj(w);
      for (size_t i = 0; i < env->count; i++) ten_jw_kstr(w, env->vars[i].name, env->vars[i].value);
      ten_jw_obj_end(w);
      break;
    }
    default: ten_jw_str(w, *CFIELD(target, o, char *));
    }
  }
}

static bool str_differs(const char *a, const char *b) {
  if (!a || !b) return a != b;
  return strcmp(a, b) != 0;
}

bool ten_schema_differs(const ten_option_t *o, const void *a, const void *b) {
  switch (o->type) {
  case TEN_OPT_INT:
  case TEN_OPT_ENUM: return *CFIELD(a, o, int) != *CFIELD(b, o, int);
  case TEN_OPT_SECONDS:
  case TEN_OPT_NUMBER: return *CFIELD(a, o, double) != *CFIELD(b, o, double);
  case TEN_OPT_SIZE: return *CFIELD(a, o, int64_t) != *CFIELD(b, o, int64_t);
  case TEN_OPT_FUNC: /* functions of two states cannot be compared: a hook is a hook */
    return (*CFIELD(a, o, int) == LUA_NOREF) != (*CFIELD(b, o, int) == LUA_NOREF);
  case TEN_OPT_WEIGHT:
    return CFIELD(a, o, int)[0] != CFIELD(b, o, int)[0] ||
           (CFIELD(a, o, int)[1] == LUA_NOREF) != (CFIELD(b, o, int)[1] == LUA_NOREF);
  case TEN_OPT_CIDRS: {
    const cidr_list_t *la = CFIELD(a, o, cidr_list_t), *lb = CFIELD(b, o, cidr_list_t);
    return la->count != lb->count ||
           (la->count && memcmp(la->items, lb->items, la->count * sizeof *la->items) != 0);
  }
  case TEN_OPT_BOOL:
  case TEN_OPT_AUTO: return *CFIELD(a, o, bool) != *CFIELD(b, o, bool);
  case TEN_OPT_ENV: {
    const env_list_t *ea = CFIELD(a, o, env_list_t), *eb = CFIELD(b, o, env_list_t);
    if (ea->count != eb->count) return true;
    for (size_t i = 0; i < ea->count; i++)
      if (strcmp(ea->vars[i].name, eb->vars[i].name) ||
          strcmp(ea->vars[i].value, eb->vars[i].value))
        return true;
    return false;
  }
  default: return str_differs(*CFIELD(a, o, char *), *CFIELD(b, o, char *));
  }
}
