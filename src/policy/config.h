/* config.h: the effective configuration, loaded from tenement.lua.
 *
 * A ten_config_t is an immutable snapshot: loading builds a new one (a fresh
 * lua_State evaluates the file in a sandbox under tenL_config_limit,
 * src/policy/schema.c checks every value and fills defaults), and users
 * hold references. A reload swaps the pointer; the old snapshot lives
 * until its last reference is dropped. The snapshot owns the lua_State its
 * hooks live in. Loop thread only.
 *
 * A file that declares no service must say so with `instances {}`: an
 * empty or half-written file (an editor's truncate-then-write) is refused
 * like any bad config, so a reload never drains everything by accident.
 *
 * Errors: ten_config_load returns UV_EINVAL and fills err with one line that
 * names file:line and the offending key, e.g.
 *   tenement.lua:12: service "api": unknown key 'comand' (did you mean 'command'?)
 */
#ifndef TEN_POLICY_CONFIG_H
#define TEN_POLICY_CONFIG_H

#include "util/buf.h"
#include "util/cidr.h"
#include "util/common.h"

#include <lua.h>

typedef enum ten_restart_policy {
  TEN_RESTART_ON_FAILURE, /* default: restart after a non-zero exit or a signal */
  TEN_RESTART_ALWAYS,
  TEN_RESTART_NEVER,
} ten_restart_policy_t;

typedef struct ten_env_var {
  char *name;
  char *value; /* a template: {id}, {data_dir}, ... expanded at spawn */
} ten_env_var_t;

typedef struct ten_service_conf {
  char *name;
  int line; /* where it is declared, for messages */

  char *command;   /* template; run by /bin/sh -c (a simple command is exec'd) */
  char *directory; /* template or NULL (then data_dir) */
  char *socket;    /* template of the unix socket path, or NULL in port mode */
  bool port_auto;  /* port = "auto": a free TCP port on 127.0.0.1, env PORT */
  char *health;    /* HTTP path that must answer 2xx, or NULL */
  ten_env_var_t *env;
  size_t env_count;

  ten_restart_policy_t restart;
  double start_timeout;   /* seconds to become ready before the start fails */
  double stop_timeout;    /* seconds between SIGTERM and SIGKILL */
  double backoff_initial; /* seconds before the first restart after a crash */
  double backoff_max;     /* cap of the exponential backoff */
  int max_restarts;       /* consecutive crashes before `failed` */
  double stable_after;    /* seconds up after which the crash count resets */

  /* readiness and health */
  int activation;         /* TEN_ACTIVATION_*: who creates the listening socket */
  double health_interval; /* seconds between health checks while ready; 0 = none */
  double health_timeout;  /* seconds a health check may take */
  int health_failures;    /* consecutive failed checks before a restart */

  /* scale to zero */
  double idle_timeout; /* seconds without a request before stopping; 0 = never */
  int idle_ref;        /* Lua function deciding idleness, or LUA_NOREF */
  double wake_timeout; /* seconds a request waits for a sleeping instance */
  int wake_queue;      /* requests that may wait per instance (503 beyond) */

  /* weighted pool ({service}.{domain}) */
  int weight;     /* 0-100 for every instance unless set per instance */
  int weight_ref; /* Lua function(inst) -> weight, or LUA_NOREF */

  /* one process per customer: instances created by their first request */
  bool spawn_on_demand;
  char *id_pattern;  /* POSIX extended regex ids must match */
  int admit_ref;     /* Lua function(id, req) -> bool, or LUA_NOREF */
  int max_instances; /* instances the service may have in all */
  int spawn_rate;    /* on-demand creations per minute */
} ten_service_conf_t;

enum {
  TEN_ACTIVATION_NONE,   /* the app binds its socket itself; ten probes it */
  TEN_ACTIVATION_SOCKET, /* ten binds it and passes it as fd 3 (LISTEN_FDS) */
};

typedef struct ten_settings {
  char *domain;         /* lower-case, no trailing dot */
  char *listen;         /* address to bind, e.g. "0.0.0.0" */
  int port;             /* 0 = pick a free one */
  char *data_dir;       /* absolute */
  double drain_timeout; /* seconds in-flight requests get at shutdown */

  /* logs */
  double log_retention_days; /* older lines are deleted; 0 = keep */
  int64_t log_max_rows;      /* the oldest lines beyond are deleted; 0 = no cap */
  double log_rotate_interval; /* seconds between rotation passes */
  int log_ring_lines;        /* lines kept in memory per instance for instant tails */
  int log_max_line;          /* longer lines are split into pieces this long */
  bool metrics_auth;         /* /metrics needs a token too */

  /* client side limits and timeouts */
  int max_connections;         /* open client connections; more are refused */
  int max_header_size;         /* request line + headers, bytes (431 above) */
  int64_t max_body_size;       /* request body bytes (413 above); 0 = no limit */
  double header_timeout;       /* seconds to send a request head (408 after) */
  double client_timeout;       /* seconds of silence while sending a body */
  double body_timeout;         /* seconds the whole request body may take; 0 = no limit */
  double send_timeout;         /* seconds a client may read nothing of its answer */
  double keepalive_timeout;    /* seconds an idle keep-alive connection stays */
  ten_cidr_t *trusted_proxies; /* peers whose X-Forwarded-* are kept */
  size_t trusted_proxy_count;

  /* upstream side */
  int route_ref; /* per-request Lua hook function(req) -> "service:id", or LUA_NOREF */
  double hook_log_interval; /* seconds between log lines of a hook that keeps failing */

  int upstream_keepalive;          /* idle upstream connections kept per instance */
  double upstream_connect_timeout; /* seconds to connect to an instance */
  double upstream_timeout;         /* seconds of silence from an answering instance */
} ten_settings_t;

typedef struct ten_instance_decl {
  char *service;
  char *id;
} ten_instance_decl_t;

typedef struct ten_hook_log ten_hook_log_t;

typedef struct ten_config {
  int _refs;
  char *path; /* the tenement.lua it came from, or NULL for defaults */
  ten_settings_t settings;
  ten_service_conf_t *services;
  size_t service_count;
  ten_instance_decl_t *instances; /* started by `ten serve` */
  size_t instance_count;
  lua_State *L; /* owns the hooks; NULL when there are none */
  ten_hook_log_t *_hook_log; /* hooks.c: when each hook's failures were logged */
  uint64_t _hook_calls, _hook_running; /* hooks.c: calls so far, the one running (0: none) */
} ten_config_t;

/* Command-line values that override the file (NULL / -1 = not given). */
typedef struct ten_config_overrides {
  const char *domain;
  const char *listen;
  int port;
  const char *data_dir;
} ten_config_overrides_t;

#define TEN_CONFIG_OVERRIDES_NONE                                                                  \
  { NULL, NULL, -1, NULL }

/* path may be NULL: defaults only. Returns 0 and a config with one reference,
 * or UV_EINVAL / UV_ENOENT with err filled. */
int ten_config_load(const char *path, const ten_config_overrides_t *ovr, ten_config_t **out,
                    ten_err_t *err);
/* The same from text in memory; `name` stands for the file in messages. */
int ten_config_load_source(const char *name, const char *source, size_t len,
                           const ten_config_overrides_t *ovr, ten_config_t **out,
                           ten_err_t *err);
ten_config_t *ten_config_ref(ten_config_t *c);
void ten_config_unref(ten_config_t *c);

const ten_service_conf_t *ten_config_service(const ten_config_t *c, const char *name,
                                             size_t name_len);

/* The effective config as JSON (what `ten config` prints). */
void ten_config_to_json(const ten_config_t *c, ten_buf_t *out);

/* The data dir used when neither flag, file nor TENEMENT_DATA_DIR says:
 * /var/lib/tenement for root, else $XDG_STATE_HOME/tenement or
 * ~/.local/state/tenement. Caller frees. */
char *ten_config_default_data_dir(void);

const char *ten_restart_policy_name(ten_restart_policy_t p);

#endif
