/* internal.h: what the hypervisor's files share (hv.c: the state machine;
 * proc.c: starting, watching and signalling processes, see proc.h;
 * report.c: JSON, counts and hook facts; scale.c: waking, idling,
 * on-demand creation; pool.c: weights and the weighted pools; reload.c:
 * applying a new config). Not for other subsystems: they use hv.h.
 */
#ifndef TEN_HV_INTERNAL_H
#define TEN_HV_INTERNAL_H

#include "hv/hv.h"
#include "obs/metrics.h"
#include "policy/hooks.h"

#include <lauxlib.h> /* LUA_NOREF */

/* Per-service state, created on first use, freed with the hypervisor. */
typedef struct ten__hv_service {
  char *name;
  ten_instance_t **members; /* every instance of the service, pool order */
  size_t count, cap;
  double tokens; /* on-demand creations left (refills spawn_rate / min) */
  uint64_t refill_ms;
  ten_histogram_t wake; /* request-to-ready times of woken instances */
} ten__hv_service_t;

/* hv.c */
void ten__hv_start(ten_instance_t *inst);
void ten__hv_stop(ten_instance_t *inst);
void ten__hv_restart(ten_instance_t *inst, const char *why);
ten_instance_t *ten__hv_instance_new(ten_hv_t *hv, const ten_service_conf_t *conf, const char *id);
/* Lets go of an instance (its service left the config): it never starts
 * again, stops if it has a process, and leaves the map and is freed once
 * that process is reaped (at once if it has none). Calling it twice is
 * fine; reload.c may take it back (clear _removing) while it stops. */
void ten__hv_instance_remove(ten_instance_t *inst);
bool ten__hv_running(const ten_instance_t *inst);
void ten__hv_hook_error(ten_instance_t *inst, const char *what, const char *msg);
ten__hv_service_t *ten__hv_service(ten_hv_t *hv, const char *name, size_t len);
/* Shutting down: once no process is left, closes every instance. */
void ten__hv_check_shutdown(ten_hv_t *hv);
/* Shutting down: reports the end once every handle is closed. */
void ten__hv_maybe_shutdown_done(ten_hv_t *hv);

/* proc.c (the rest of its interface is proc.h) */
/* Makes ten the child subreaper and watches SIGCHLD to reap what it adopts. */
void ten__proc_init(ten_hv_t *hv);
/* Once a second: reaps adopted children, and kills those whose instance's
 * process is gone. */
void ten__proc_sweep(ten_hv_t *hv);
/* Shutting down, every process reaped: kills whatever ten still adopted
 * and closes the SIGCHLD watch. */
void ten__proc_close(ten_hv_t *hv);

/* report.c */
void ten__hv_facts(const ten_instance_t *inst, ten_hook_instance_t *out);
/* Every instance, sorted by key; the caller frees the array. */
ten_instance_t **ten__hv_sorted_instances(ten_hv_t *hv, size_t *count);

/* scale.c: every transition passes through here (waiters, held flag). */
void ten__hv_scale_transition(ten_instance_t *inst, ten_instance_state_t from,
                              ten_instance_state_t to);
void ten__hv_reaper_start(ten_hv_t *hv);
void ten__hv_fail_waiters(ten_instance_t *inst, int status);

void ten__hv_regex_cache_free(void);

/* reload.c */
void ten__hv_reload_transition(ten_instance_t *inst, ten_instance_state_t to);
void ten__hv_reload_forget(ten_instance_t *inst);

/* pool.c */
void ten__hv_pool_add(ten_instance_t *inst);
void ten__hv_pool_remove(ten_instance_t *inst);
/* Recomputes the effective weight (override, hook, service default). */
void ten__hv_update_weight(ten_instance_t *inst);
void ten__hv_services_free(ten_hv_t *hv);

#endif
