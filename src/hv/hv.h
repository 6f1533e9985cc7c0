/* hv.h: the hypervisor. Owns every instance and its process.
 *
 * Each instance follows one state machine (s6 style: every state x event
 * pair is decided in hv.c's dispatch, the no-ops written out):
 *
 *   stopped -> starting -> ready -> draining -> stopped
 *                 |          |                   ^
 *                 +--crash---+--> backoff -------+ (restart) / failed
 *
 * Every transition goes through one function that logs it, counts it and
 * tells the observers (the proxy's upstream pool, later the event stream).
 * Processes are watched with pidfds on the loop; no zombie survives. Every
 * process of an instance (its process group, descendants that left it,
 * and those `ten` adopted as subreaper) dies with the instance and with
 * `ten`; what a killed `ten` left behind, the next one on the same data dir
 * kills at start (ten_hv_kill_leftovers). All functions are loop-thread only. Errors a person reads come back in a
 * ten_err_t naming the instance.
 */
#ifndef TEN_HV_HV_H
#define TEN_HV_HV_H

#include "policy/config.h"
#include "util/buf.h"
#include "util/common.h"
#include "util/json.h"
#include "util/map.h"

#include <sys/types.h>
#include <uv.h>

typedef enum ten_instance_state {
  TEN_INST_STOPPED,
  TEN_INST_STARTING, /* process running, not yet accepting */
  TEN_INST_READY,    /* accepting; routed to */
  TEN_INST_DRAINING, /* not routed to; in-flight requests finish, then it is stopped */
  TEN_INST_BACKOFF,  /* crashed; waiting to be restarted */
  TEN_INST_FAILED,   /* gave up: crash loop, or a crash with restart = "never" */
  TEN_INST_STATE_COUNT
} ten_instance_state_t;

const char *ten_instance_state_name(ten_instance_state_t s);

typedef struct ten_hv ten_hv_t;
typedef struct ten_proc ten_proc_t;
typedef struct ten_instance ten_instance_t;

struct ten_instance {
  ten_hv_t *hv;
  char *service;
  char *id;
  char *key;            /* "service:id" */
  ten_config_t *config; /* the snapshot conf points into (one reference held) */
  const ten_service_conf_t *conf;

  ten_instance_state_t state;
  char *socket_path; /* expanded; NULL in port mode */
  int port;          /* port mode: the TCP port of the current process */
  ten_proc_t *proc;  /* the running process, or NULL */
  pid_t pid;         /* 0 when no process */

  uint64_t started_ms; /* monotonic, when the current process started */
  uint64_t ready_ms;   /* monotonic, when it became ready */
  unsigned restarts;   /* times started again after the first start */
  unsigned crashes;    /* consecutive crashes, reset once stable */
  char last_exit[512]; /* e.g. "exited with status 3", "killed by signal 9" */
  char reason[512];    /* why it is failed / last start error */

  /* Maintained by the proxy: requests in flight and long-lived connections. */
  unsigned active;
  uint64_t last_active_ms;
  uint64_t requests; /* requests routed to it, all time */
  uint64_t cold_starts; /* starts caused by a request finding it asleep */
  uint64_t _wake_started_ns; /* a request woke it and waits: when */

  /* Scale to zero and health. */
  bool held;         /* stopped by an operator: traffic does not wake it */
  bool idle_stopped; /* the last stop was for idleness */
  bool on_demand;    /* created by its first request (spawn_on_demand) */
  int health;        /* TEN_HEALTH_*: the last periodic check */
  unsigned health_failures; /* consecutive failed checks */
  char hook_error[512];     /* the last failure of a Lua hook about it */
  char weight_hook_error[384]; /* the last failure of each hook, kept apart */
  char idle_hook_error[384];

  /* Weighted pool. */
  int weight_override; /* set by `ten weight` (persisted), or -1 */
  int weight;          /* effective: override, hook, or the service's */
  int _swrr_current;   /* smooth weighted round robin state */

  /* Slot for the proxy's upstream pool (the hypervisor never touches it). */
  void *upstream_pool;

  /* private */
  uv_timer_t _timer; /* deadline of the state: start, drain, kill or backoff */
  uv_timer_t _retry; /* next readiness probe */
  struct ten_httpc *_probe;
  unsigned _probe_delay_ms;
  unsigned _probe_attempts;
  bool _probing_health;
  bool _ever_started;
  bool _exit_crashed;   /* the last exit was not a clean status 0 */
  bool _start_failure;  /* killed for not becoming ready: reason says why */
  bool _stop_requested; /* draining because someone asked to stop */
  bool _restart_after_stop;
  bool _term_sent;
  int _open_handles;
  int _listen_fd;    /* socket activation: the socket ten bound, kept across restarts */
  bool _removing;    /* its service left the config: never started again, freed once reaped */
  struct ten_hv_waiter *_waiters; /* requests waiting for it to be ready */
  unsigned _waiter_count;
  struct ten_httpc *_health_probe;
};

enum {
  TEN_HEALTH_UNKNOWN,
  TEN_HEALTH_OK,
  TEN_HEALTH_FAILING,
};

/* A request waiting for an instance to become ready (scale to zero). The
 * caller owns the struct; the callback runs once (status 0: ready; a
 * negative UV_E* code: it did not start), unless ten_hv_unwait came first. */
typedef struct ten_hv_waiter ten_hv_waiter_t;
struct ten_hv_waiter {
  ten_hv_waiter_t *next, *prev;
  ten_instance_t *inst;
  void (*cb)(ten_hv_waiter_t *w, int status);
};

/* Called after every transition (old != new), and with new == old ==
 * TEN_INST_STATE_COUNT just before an instance is freed. */
typedef void (*ten_hv_observer_fn)(void *ctx, ten_instance_t *inst, ten_instance_state_t old_state,
                                   ten_instance_state_t new_state);

/* Where an instance's stdout/stderr go: fills two fds the hypervisor closes
 * after the spawn (the same fd twice is fine). Returns 0 or a negative errno. */
typedef int (*ten_hv_output_fn)(void *ctx, const ten_instance_t *inst, int *out_fd, int *err_fd);

#define TEN_HV_MAX_OBSERVERS 8

struct ten_hv {
  uv_loop_t *loop;
  ten_config_t *config;
  ten_map_t instances; /* key "service:id" -> ten_instance_t* */
  ten_hv_output_fn output;
  void *output_ctx;
  struct {
    ten_hv_observer_fn fn;
    void *ctx;
  } observers[TEN_HV_MAX_OBSERVERS];
  int observer_count;
  uint64_t transitions[TEN_INST_STATE_COUNT]; /* entries into each state */
  bool shutting_down;
  bool _closing; /* every process is gone; instance handles are closing */
  void (*shutdown_cb)(ten_hv_t *hv);
  unsigned live_procs;     /* processes whose pidfd watch is not closed yet */
  unsigned live_instances; /* instances not yet freed */
  struct ten_db *db;       /* where weights persist; may be NULL */
  uv_timer_t _reaper;      /* the idle reaper and health scheduler, every second */
  bool _reaper_open;
  ten_map_t _procs;        /* "pid" -> every process not reaped yet (proc.c) */
  char _run_prefix[40];    /* "<data dir hash>-<ten's pid>-": run ids of this run */
  uint64_t _run_seq;       /* the last run id's sequence number */
  uv_signal_t _sigchld;    /* reaps the descendants ten adopts as subreaper */
  bool _sigchld_open;
  ten_map_t _services;     /* service name -> per-service state (pools, rate limits) */
};

/* Also makes this process a child subreaper (descendants of an instance
 * whose parent exits come to it, to be reaped or killed). */
int ten_hv_init(ten_hv_t *hv, uv_loop_t *loop, ten_config_t *config);
/* Start-up, before any instance runs: kills every process an earlier run
 * on the same data dir left running (kill -9 of ten takes its direct
 * children along, not their descendants). They are found by the run id
 * all of an instance's processes carry (TENEMENT_RUN), re-checked through
 * a pidfd so a reused pid is never hit, logged, and waited for (2 s at
 * most). Returns how many were killed. */
int ten_hv_kill_leftovers(ten_hv_t *hv);
void ten_hv_set_output(ten_hv_t *hv, ten_hv_output_fn fn, void *ctx);
int ten_hv_observe(ten_hv_t *hv, ten_hv_observer_fn fn, void *ctx);

/* Starts `service:id`, creating the instance if it is new. Errors:
 * UV_ENOENT unknown service, UV_EINVAL bad id, UV_EEXIST already running. */
int ten_hv_spawn(ten_hv_t *hv, const char *service, const char *id, ten_err_t *err);
/* Stops a running instance: drain, SIGTERM to its process group, SIGKILL
 * after stop_timeout. UV_ENOENT unknown, UV_EALREADY not running. */
int ten_hv_stop(ten_hv_t *hv, const char *key, ten_err_t *err);
/* Stops (if running) and starts again. UV_ENOENT unknown. */
int ten_hv_restart(ten_hv_t *hv, const char *key, ten_err_t *err);
/* Starts every instance the config lists. Reports failures in the log. */
void ten_hv_start_declared(ten_hv_t *hv);
/* Weights persist in db (config keys "weight:service:id"); loads them now. */
void ten_hv_set_db(ten_hv_t *hv, struct ten_db *db);

/* ---- scale to zero ---- */

/* Makes the instance ready for a request. Returns 1 if it is ready now;
 * 0 if the waiter was queued (its callback runs when the instance is ready
 * or has failed to start: one start serves every waiter); or an error:
 * UV_EAGAIN the queue is full, UV_EPERM it may not be woken (failed,
 * stopped by an operator, or its service was removed from the config),
 * UV_ECANCELED shutting down. */
int ten_hv_wake(ten_instance_t *inst, ten_hv_waiter_t *w);
/* Removes a queued waiter (its request timed out or left). */
void ten_hv_unwait(ten_hv_waiter_t *w);

/* Facts about a request, for the admit hook. */
struct ten_hook_request;
/* An instance for `service:id` may be created by its first request
 * (spawn_on_demand): checks the id pattern, max_instances, spawn_rate and
 * the admit hook, and creates it (stopped) if all agree. UV_ENOENT with
 * err saying why when not. */
int ten_hv_demand(ten_hv_t *hv, const char *service, size_t service_len, const char *id,
                  size_t id_len, const struct ten_hook_request *req, ten_instance_t **out,
                  ten_err_t *err);

/* ---- weighted pools ---- */

/* The next instance of `service` by smooth weighted round robin over its
 * instances with weight > 0 that are ready or can be woken; NULL if none. */
ten_instance_t *ten_hv_pick(ten_hv_t *hv, const char *service, size_t service_len);
/* Sets (and persists) an instance's weight, 0-100. */
int ten_hv_set_weight(ten_hv_t *hv, const char *key, int weight, ten_err_t *err);

/* ---- reload ---- */

/* Applies a new config as a diff: new services appear, removed ones drain
 * and go, instances of a service whose restart-relevant options changed
 * restart one at a time, the rest move to the new snapshot untouched.
 * Appends a human summary of what changed to `summary`. */
void ten_hv_apply_config(ten_hv_t *hv, ten_config_t *config, ten_buf_t *summary);

ten_instance_t *ten_hv_find(ten_hv_t *hv, const char *service, size_t service_len, const char *id,
                            size_t id_len);
ten_instance_t *ten_hv_find_key(ten_hv_t *hv, const char *key);

/* Proxy bookkeeping: a request (or tunnel) starts/ends on this instance. */
void ten_instance_acquire(ten_instance_t *inst);
void ten_instance_release(ten_instance_t *inst);

/* Writes one instance / all instances (sorted by key) as JSON. */
void ten_instance_to_json(const ten_instance_t *inst, ten_jw_t *w);
void ten_hv_to_json(ten_hv_t *hv, ten_jw_t *w);
/* Counts of instances per state. */
void ten_hv_count(ten_hv_t *hv, unsigned counts[TEN_INST_STATE_COUNT]);
/* Writes the hypervisor's metric families (Prometheus text format). */
void ten_hv_metrics(ten_hv_t *hv, ten_buf_t *out);

/* Stops everything; `done` runs once every process is reaped and every
 * handle closed. Safe to call twice (the second call does nothing). */
void ten_hv_shutdown(ten_hv_t *hv, void (*done)(ten_hv_t *hv));
/* Frees what is left; call after the loop has finished shutdown. */
void ten_hv_free(ten_hv_t *hv);

#endif
