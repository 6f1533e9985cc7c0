/* hooks.h: calling the operator's Lua hooks from tenement.lua.
 *
 * Each hook runs in the config snapshot's lua_State, in its sandbox, under
 * tenL_hook_limit (100 ms a call, uncatchable) and the state's memory
 * limit (src/policy/lua.h): an error, a wrong return type, a runaway loop
 * or pattern returns UV_EINVAL with a message naming file:line, and the
 * caller uses the default behaviour. The failure is also logged here,
 * rate-limited per hook: the first at once, then at most one line per
 * settings.hook_log_interval with the count since the last line and the
 * last message (callers record every failure themselves: instance JSON,
 * metrics). Hooks see plain facts, never C structs of other subsystems.
 * The stack is left as it was. Loop thread only.
 *
 *   weight = function(inst) -> integer 0..100         (pool membership changes)
 *   idle   = function(inst) -> boolean                (the idle reaper, every second)
 *   admit  = function(id, req) -> boolean             (on-demand creation)
 *   route  = function(req) -> "service:id" or nil     (every request: costs time)
 *
 * inst: { service, id, state, idle_seconds, uptime, requests, memory_mb, weight }
 * req:  { method, host, path, client, headers } read on access and valid
 *       only during the call; req.headers["Name"] in any case (the first
 *       of repeated headers), pairs(req.headers) gives lower-case names.
 */
#ifndef TEN_POLICY_HOOKS_H
#define TEN_POLICY_HOOKS_H

#include "policy/config.h"

typedef struct ten_hook_instance {
  const char *service;
  const char *id;
  const char *state;
  double idle_seconds;
  double uptime;
  uint64_t requests;
  double memory_mb;
  int weight;
} ten_hook_instance_t;

typedef struct ten_hook_header {
  const char *name; /* as received; lower-cased for the table */
  size_t name_len;
  const char *value;
  size_t value_len;
} ten_hook_header_t;

typedef struct ten_hook_request {
  const char *method;
  const char *host;
  size_t host_len;
  const char *path;
  size_t path_len;
  const char *client; /* address */
  const ten_hook_header_t *headers;
  size_t header_count;
} ten_hook_request_t;

int ten_hook_weight(ten_config_t *c, int ref, const ten_hook_instance_t *inst, int *weight,
                    ten_err_t *err);
int ten_hook_idle(ten_config_t *c, int ref, const ten_hook_instance_t *inst, bool *idle,
                  ten_err_t *err);
int ten_hook_admit(ten_config_t *c, int ref, const char *id, const ten_hook_request_t *req,
                   bool *admit, ten_err_t *err);
/* *routed false (and 0) when the hook returned nil: route by Host as usual. */
int ten_hook_route(ten_config_t *c, const ten_hook_request_t *req, char *key, size_t key_len,
                   bool *routed, ten_err_t *err);

#endif
