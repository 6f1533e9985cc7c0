/* hv.c: the instance state machine (see hv.h): events, transitions, timers,
 * readiness and health probes, the public calls that drive it, and the
 * shutdown. Starting, watching and killing processes is proc.c's (proc.h);
 * reporting is report.c's. */
#include "hv/hv.h"

#include "hv/internal.h"
#include "hv/proc.h"
#include "util/httpc.h"
#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* Until the app listens, a probe is one failed connect(): cheap, so it is
 * retried every millisecond for the first PROBE_EAGER_ATTEMPTS (most apps
 * listen within a few ms, and a doubling delay would overshoot them by as
 * much again). After that, and for health answers that are not yet 2xx,
 * the delay doubles up to the cap. */
#define PROBE_FIRST_DELAY_MS     1
#define PROBE_EAGER_ATTEMPTS     100
#define PROBE_MAX_DELAY_MS       25
#define PROBE_ATTEMPT_TIMEOUT_MS 2000

#define ID_MAX 63

typedef enum event {
  EV_START,         /* someone asked for it to run */
  EV_READY,         /* the probe succeeded */
  EV_START_TIMEOUT, /* not ready within start_timeout */
  EV_EXIT,          /* the process was reaped */
  EV_STOP,          /* someone asked for it to stop */
  EV_RESTART,       /* someone asked for a restart */
  EV_DRAINED,       /* no request in flight any more */
  EV_TIMER,         /* the state's timer fired (drain, kill or backoff deadline) */
  EV_UNHEALTHY,     /* health checks failed health_failures times in a row */
} event_t;

static const char *const state_names[] = {"stopped",  "starting", "ready",
                                          "draining", "backoff",  "failed"};

const char *ten_instance_state_name(ten_instance_state_t s) {
  return s < TEN_INST_STATE_COUNT ? state_names[s] : "?";
}

static void dispatch(ten_instance_t *inst, event_t ev);
static void close_instance(ten_instance_t *inst);

/* ------------------------------------------------------------ transitions */

static void notify(ten_hv_t *hv, ten_instance_t *inst, ten_instance_state_t from,
                   ten_instance_state_t to) {
  for (int i = 0; i < hv->observer_count; i++)
    hv->observers[i].fn(hv->observers[i].ctx, inst, from, to);
}

/* The one place an instance changes state: log, count, publish. */
static void transition(ten_instance_t *inst, ten_instance_state_t to, const char *detail) {
  ten_instance_state_t from = inst->state;
  if (from == to) return;
  inst->state = to;
  inst->hv->transitions[to]++;
  ten_log(to == TEN_INST_FAILED ? TEN_LOG_ERROR : TEN_LOG_INFO, "hv: %s %s -> %s%s%s", inst->key,
          state_names[from], state_names[to], detail && *detail ? ": " : "", detail ? detail : "");
  ten__hv_scale_transition(inst, from, to);
  notify(inst->hv, inst, from, to);
  ten__hv_reload_transition(inst, to);
  /* Last: a removed instance is let go of once its process is reaped, and
   * never before (the process record points at it until then). */
  if (inst->_removing && !inst->proc && (to == TEN_INST_STOPPED || to == TEN_INST_FAILED))
    close_instance(inst);
}

/* Sets inst->reason; the message may quote the old reason. */
static void set_reason(ten_instance_t *inst, const char *fmt, ...) TEN_PRINTF(2, 3);
static void set_reason(ten_instance_t *inst, const char *fmt, ...) {
  char tmp[sizeof inst->reason];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(tmp, sizeof tmp, fmt, ap);
  va_end(ap);
  memcpy(inst->reason, tmp, sizeof tmp);
}

/* ------------------------------------------------------------ timers */

static void on_timer(uv_timer_t *t) { dispatch(t->data, EV_TIMER); }

static void arm_timer(ten_instance_t *inst, double seconds) {
  uint64_t ms = seconds <= 0 ? 0 : (uint64_t)ceil(seconds * 1000.0);
  uv_timer_start(&inst->_timer, on_timer, ms, 0);
}

static void disarm_timer(ten_instance_t *inst) { uv_timer_stop(&inst->_timer); }

/* ------------------------------------------------------------ exits */

static void describe_exit(int status, char *out, size_t len) {
  if (WIFEXITED(status))
    snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(out, len, "ended with wait status %d", status);
}

void ten__hv_exited(ten_instance_t *inst, int wstatus) {
  describe_exit(wstatus, inst->last_exit, sizeof inst->last_exit);
  inst->_exit_crashed = !(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  dispatch(inst, EV_EXIT);
}

/* ------------------------------------------------------------ readiness */

static void probe(ten_instance_t *inst, bool health);

static void on_retry(uv_timer_t *t) {
  ten_instance_t *inst = t->data;
  if (inst->state == TEN_INST_STARTING) probe(inst, false);
}

static void retry_probe(ten_instance_t *inst, bool not_listening) {
  unsigned delay = inst->_probe_delay_ms;
  if (not_listening && inst->_probe_attempts < PROBE_EAGER_ATTEMPTS) {
    inst->_probe_attempts++;
    delay = PROBE_FIRST_DELAY_MS;
  } else {
    inst->_probe_delay_ms = TEN_MIN(delay * 2, PROBE_MAX_DELAY_MS);
  }
  uv_timer_start(&inst->_retry, on_retry, delay, 0);
}

static void on_probe(void *ctx, int result) {
  ten_instance_t *inst = ctx;
  bool was_health = inst->_probing_health;
  inst->_probe = NULL;
  if (inst->state != TEN_INST_STARTING) return;
  if (!was_health && result == 0) {
    if (inst->conf->health)
      probe(inst, true);
    else
      dispatch(inst, EV_READY);
    return;
  }
  if (was_health && result >= 200 && result < 300) {
    dispatch(inst, EV_READY);
    return;
  }
  if (was_health) {
    set_reason(inst, "health check %s answered %s%d", inst->conf->health,
               result < 0 ? "error " : "", result);
  }
  retry_probe(inst, !was_health);
}

static void probe(ten_instance_t *inst, bool health) {
  ten_httpc_target_t target = {inst->socket_path, inst->port};
  int rc;
  inst->_probing_health = health;
  inst->_probe = ten_httpc_get(inst->hv->loop, &target, health ? inst->conf->health : NULL,
                               PROBE_ATTEMPT_TIMEOUT_MS, on_probe, inst, &rc);
  if (!inst->_probe) retry_probe(inst, !health);
}

static void stop_probing(ten_instance_t *inst) {
  ten_httpc_cancel(inst->_probe);
  inst->_probe = NULL;
  ten_httpc_cancel(inst->_health_probe);
  inst->_health_probe = NULL;
  uv_timer_stop(&inst->_retry);
}

/* ------------------------------------------------------------ health */

static void schedule_health(ten_instance_t *inst);

static void on_health(void *ctx, int result) {
  ten_instance_t *inst = ctx;
  inst->_health_probe = NULL;
  if (inst->state != TEN_INST_READY) return;
  if (result >= 200 && result < 300) {
    if (inst->health != TEN_HEALTH_OK && inst->health_failures)
      ten_log(TEN_LOG_INFO, "hv: %s is healthy again", inst->key);
    inst->health = TEN_HEALTH_OK;
    inst->health_failures = 0;
    schedule_health(inst);
    return;
  }
  inst->health = TEN_HEALTH_FAILING;
  inst->health_failures++;
  char what[96];
  if (result < 0)
    snprintf(what, sizeof what, "%s", uv_strerror(result));
  else
    snprintf(what, sizeof what, "status %d", result);
  ten_log(TEN_LOG_WARN, "hv: %s health check %s failed (%s), %u of %d", inst->key,
          inst->conf->health, what, inst->health_failures, inst->conf->health_failures);
  if (inst->health_failures >= (unsigned)inst->conf->health_failures) {
    set_reason(inst, "health check %s failed %u times in a row (last: %s)", inst->conf->health,
               inst->health_failures, what);
    dispatch(inst, EV_UNHEALTHY);
    return;
  }
  schedule_health(inst);
}

static void on_health_due(uv_timer_t *t) {
  ten_instance_t *inst = t->data;
  if (inst->state != TEN_INST_READY || inst->_health_probe) return;
  ten_httpc_target_t target = {inst->socket_path, inst->port};
  int rc;
  uint64_t timeout = (uint64_t)(inst->conf->health_timeout * 1000.0);
  inst->_health_probe = ten_httpc_get(inst->hv->loop, &target, inst->conf->health,
                                      timeout ? timeout : 1, on_health, inst, &rc);
  if (!inst->_health_probe) on_health(inst, rc);
}

/* While ready, the health path is asked every health_interval seconds. */
static void schedule_health(ten_instance_t *inst) {
  if (!inst->conf->health || inst->conf->health_interval <= 0) return;
  uv_timer_start(&inst->_retry, on_health_due, (uint64_t)(inst->conf->health_interval * 1000.0), 0);
}

/* ------------------------------------------------------------ actions */

/* stopped/backoff/failed -> starting, or failed if the process cannot start. */
static void begin_start(ten_instance_t *inst) {
  ten_err_t err;
  if (inst->_ever_started) inst->restarts++;
  inst->_ever_started = true;
  inst->reason[0] = '\0';
  if (ten__proc_start(inst, &err)) {
    set_reason(inst, "cannot start: %s", err.msg);
    disarm_timer(inst);
    transition(inst, TEN_INST_FAILED, inst->reason);
    return;
  }
  char detail[64];
  snprintf(detail, sizeof detail, "pid %d", (int)inst->pid);
  transition(inst, TEN_INST_STARTING, detail);
  inst->_probe_delay_ms = PROBE_FIRST_DELAY_MS;
  inst->_probe_attempts = 0;
  arm_timer(inst, inst->conf->start_timeout);
  if (inst->_listen_fd >= 0) {
    /* The socket already accepts (the kernel queues connections until the
     * app does), so there is nothing to poll for; only health is asked. */
    if (inst->conf->health)
      probe(inst, true);
    else
      dispatch(inst, EV_READY);
    return;
  }
  probe(inst, false);
}

static void send_term(ten_instance_t *inst) {
  inst->_term_sent = true;
  ten__proc_signal(inst, SIGTERM);
  arm_timer(inst, inst->conf->stop_timeout);
}

/* starting/ready -> draining. Requests in flight finish first. */
static void begin_drain(ten_instance_t *inst, const char *why) {
  stop_probing(inst);
  disarm_timer(inst);
  inst->_term_sent = false;
  transition(inst, TEN_INST_DRAINING, why);
  if (inst->active == 0 || !inst->ready_ms)
    send_term(inst);
  else
    arm_timer(inst, inst->config->settings.drain_timeout);
}

/* The process went away without being asked to: restart, back off or give up. */
static void on_unplanned_exit(ten_instance_t *inst, bool crashed) {
  const ten_service_conf_t *conf = inst->conf;
  stop_probing(inst);
  disarm_timer(inst);
  bool was_ready = inst->ready_ms != 0;
  /* A start that timed out says so, rather than "killed by signal 9". */
  if (inst->_start_failure) {
    char why[sizeof inst->last_exit];
    snprintf(why, sizeof why, "%.*s", (int)sizeof why - 1, inst->reason);
    memcpy(inst->last_exit, why, sizeof why);
    inst->_start_failure = false;
    crashed = true;
  }
  if (!crashed && conf->restart != TEN_RESTART_ALWAYS) {
    transition(inst, TEN_INST_STOPPED, inst->last_exit);
    return;
  }
  if (conf->restart == TEN_RESTART_NEVER) {
    set_reason(inst, "%s (restart = \"never\")", inst->last_exit);
    transition(inst, TEN_INST_FAILED, inst->reason);
    return;
  }
  uint64_t up_ms = ten_now_ms() - inst->started_ms;
  if (was_ready && up_ms >= (uint64_t)(conf->stable_after * 1000)) inst->crashes = 0;
  inst->crashes++;
  if (inst->crashes > (unsigned)conf->max_restarts) {
    set_reason(inst, "gave up after %u crashes in a row; last: %s", inst->crashes, inst->last_exit);
    transition(inst, TEN_INST_FAILED, inst->reason);
    return;
  }
  double delay = conf->backoff_initial * pow(2.0, (double)(inst->crashes - 1));
  if (delay > conf->backoff_max) delay = conf->backoff_max;
  char detail[sizeof inst->last_exit + 96];
  snprintf(detail, sizeof detail, "%s; restarting in %.3g s (crash %u of at most %d)",
           inst->last_exit, delay, inst->crashes, conf->max_restarts);
  transition(inst, TEN_INST_BACKOFF, detail);
  arm_timer(inst, delay);
}

/* ------------------------------------------------------------ the machine */

/* Whether the instance may start a process (again). Not while ten shuts
 * down, and not once its service has left the config: a process started
 * then would outlive its instance. */
static bool may_run(const ten_instance_t *inst) {
  return !inst->hv->shutting_down && !inst->_removing;
}

/* state x event -> action. Unlisted pairs are no-ops on purpose. */
static void dispatch(ten_instance_t *inst, event_t ev) {
  if ((ev == EV_START || ev == EV_RESTART) && !may_run(inst)) return;
  switch (inst->state) {
  case TEN_INST_STOPPED:
  case TEN_INST_FAILED:
    switch (ev) {
    case EV_START:
    case EV_RESTART:
      inst->crashes = 0;
      begin_start(inst);
      break;
    case EV_STOP: transition(inst, TEN_INST_STOPPED, "stopped by request"); break;
    default: break; /* no process, no timers: nothing else can happen */
    }
    break;

  case TEN_INST_STARTING:
    switch (ev) {
    case EV_READY: {
      disarm_timer(inst);
      inst->ready_ms = ten_now_ms();
      char detail[64];
      snprintf(detail, sizeof detail, "in %llu ms",
               (unsigned long long)(inst->ready_ms - inst->started_ms));
      inst->health = inst->conf->health ? TEN_HEALTH_OK : TEN_HEALTH_UNKNOWN;
      inst->health_failures = 0;
      transition(inst, TEN_INST_READY, detail);
      schedule_health(inst);
      break;
    }
    case EV_TIMER: /* start_timeout */
      set_reason(inst, "not ready after %g s (start_timeout)%s%s", inst->conf->start_timeout,
                 inst->reason[0] ? "; last: " : "", inst->reason);
      inst->_start_failure = true;
      ten_log(TEN_LOG_WARN, "hv: %s %s; killing it", inst->key, inst->reason);
      stop_probing(inst);
      ten__proc_signal(inst, SIGKILL);
      break; /* the exit decides what comes next */
    case EV_EXIT: on_unplanned_exit(inst, true); break;
    case EV_STOP:
      inst->_restart_after_stop = false;
      begin_drain(inst, "stop requested");
      break;
    case EV_RESTART:
      inst->_restart_after_stop = true;
      begin_drain(inst, "restart requested");
      break;
    default: break; /* EV_START: already starting; EV_DRAINED: nothing routed yet */
    }
    break;

  case TEN_INST_READY:
    switch (ev) {
    case EV_EXIT: on_unplanned_exit(inst, inst->_exit_crashed); break;
    case EV_STOP:
      inst->_restart_after_stop = false;
      begin_drain(inst, "stop requested");
      break;
    case EV_RESTART:
      inst->_restart_after_stop = true;
      begin_drain(inst, "restart requested");
      break;
    case EV_UNHEALTHY:
      inst->_restart_after_stop = true;
      begin_drain(inst, inst->reason);
      break;
    default: break; /* EV_START: already running; no timer runs while ready */
    }
    break;

  case TEN_INST_DRAINING:
    switch (ev) {
    case EV_DRAINED:
      if (!inst->_term_sent) send_term(inst);
      break;
    case EV_TIMER:
      if (!inst->_term_sent) {
        send_term(inst); /* drain_timeout: in-flight requests ran out of time */
      } else {
        ten_log(TEN_LOG_WARN, "hv: %s did not exit %g s after SIGTERM; sending SIGKILL", inst->key,
                inst->conf->stop_timeout);
        ten__proc_signal(inst, SIGKILL);
      }
      break;
    case EV_EXIT: {
      disarm_timer(inst);
      bool again = inst->_restart_after_stop && may_run(inst);
      /* Observers see the flag still set: requests waiting through a
       * restart keep waiting, and a rolling restart does not move on. */
      inst->_restart_after_stop = again;
      transition(inst, TEN_INST_STOPPED, inst->last_exit);
      inst->_restart_after_stop = false;
      if (again) begin_start(inst);
      break;
    }
    case EV_START: inst->_restart_after_stop = true; break; /* start again once stopped */
    case EV_STOP: inst->_restart_after_stop = false; break;
    default: break;
    }
    break;

  case TEN_INST_BACKOFF:
    switch (ev) {
    case EV_TIMER:
    case EV_START:
    case EV_RESTART: begin_start(inst); break;
    case EV_STOP:
      disarm_timer(inst);
      transition(inst, TEN_INST_STOPPED, "stopped by request");
      break;
    default: break;
    }
    break;

  case TEN_INST_STATE_COUNT: break;
  }
}

/* ------------------------------------------------------------ instances */

static void on_instance_handle_closed(uv_handle_t *h) {
  ten_instance_t *inst = h->data;
  if (--inst->_open_handles > 0) return;
  ten_hv_t *hv = inst->hv;
  notify(hv, inst, TEN_INST_STATE_COUNT, TEN_INST_STATE_COUNT);
  ten__hv_fail_waiters(inst, UV_ECANCELED);
  ten__hv_pool_remove(inst);
  ten__hv_reload_forget(inst);
  if (inst->_listen_fd >= 0) {
    close(inst->_listen_fd);
    if (inst->socket_path) unlink(inst->socket_path);
  }
  ten_config_unref(inst->config);
  free(inst->socket_path);
  free(inst->service);
  free(inst->id);
  free(inst->key);
  free(inst);
  hv->live_instances--;
  ten__hv_maybe_shutdown_done(hv);
}

ten_instance_t *ten__hv_instance_new(ten_hv_t *hv, const ten_service_conf_t *conf, const char *id) {
  ten_instance_t *inst = ten_xcalloc(1, sizeof *inst);
  inst->hv = hv;
  inst->service = ten_xstrdup(conf->name);
  inst->id = ten_xstrdup(id);
  inst->key = ten_xasprintf("%s:%s", conf->name, id);
  inst->config = ten_config_ref(hv->config);
  inst->conf = conf;
  inst->state = TEN_INST_STOPPED;
  uv_timer_init(hv->loop, &inst->_timer);
  uv_timer_init(hv->loop, &inst->_retry);
  inst->_timer.data = inst->_retry.data = inst;
  inst->_open_handles = 2;
  inst->_listen_fd = -1;
  inst->weight_override = -1;
  hv->live_instances++;
  ten_map_put(&hv->instances, inst->key, strlen(inst->key), inst);
  ten__hv_pool_add(inst);
  return inst;
}

/* Takes the instance out of the map and closes its handles; it is freed in
 * the last close callback. Only for an instance without a process. */
static void close_instance(ten_instance_t *inst) {
  ten_hv_t *hv = inst->hv;
  stop_probing(inst);
  ten_map_del(&hv->instances, inst->key, strlen(inst->key));
  uv_close((uv_handle_t *)&inst->_timer, on_instance_handle_closed);
  uv_close((uv_handle_t *)&inst->_retry, on_instance_handle_closed);
}

void ten__hv_instance_remove(ten_instance_t *inst) {
  if (inst->_removing) return;
  inst->_removing = true;
  inst->_restart_after_stop = false;
  if (inst->proc) {
    dispatch(inst, EV_STOP); /* closed by transition() once reaped */
  } else {
    disarm_timer(inst); /* a backoff must not start it */
    close_instance(inst);
  }
}

void ten__hv_start(ten_instance_t *inst) { dispatch(inst, EV_START); }
void ten__hv_stop(ten_instance_t *inst) { dispatch(inst, EV_STOP); }
void ten__hv_restart(ten_instance_t *inst, const char *why) {
  ten_log(TEN_LOG_INFO, "hv: %s: %s", inst->key, why);
  dispatch(inst, inst->state == TEN_INST_DRAINING ? EV_START : EV_RESTART);
}

void ten__hv_hook_error(ten_instance_t *inst, const char *what, const char *msg) {
  snprintf(inst->hook_error, sizeof inst->hook_error, "%s hook: %s", what, msg);
  char *slot = !strcmp(what, "weight") ? inst->weight_hook_error
               : !strcmp(what, "idle") ? inst->idle_hook_error
                                       : NULL;
  if (slot) snprintf(slot, sizeof inst->idle_hook_error, "%.380s", msg);
}

static bool valid_id(const char *id) {
  size_t len = strlen(id);
  if (len == 0 || len > ID_MAX) return false;
  for (size_t i = 0; i < len; i++) {
    char c = id[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || (c == '-' && i > 0);
    if (!ok) return false;
  }
  return true;
}

int ten_hv_init(ten_hv_t *hv, uv_loop_t *loop, ten_config_t *config) {
  memset(hv, 0, sizeof *hv);
  hv->loop = loop;
  hv->config = ten_config_ref(config);
  ten__hv_reaper_start(hv);
  ten__proc_init(hv);
  return 0;
}

void ten_hv_set_output(ten_hv_t *hv, ten_hv_output_fn fn, void *ctx) {
  hv->output = fn;
  hv->output_ctx = ctx;
}

int ten_hv_observe(ten_hv_t *hv, ten_hv_observer_fn fn, void *ctx) {
  if (hv->observer_count == TEN_HV_MAX_OBSERVERS) return UV_ENOSPC;
  hv->observers[hv->observer_count].fn = fn;
  hv->observers[hv->observer_count].ctx = ctx;
  hv->observer_count++;
  return 0;
}

ten_instance_t *ten_hv_find(ten_hv_t *hv, const char *service, size_t service_len, const char *id,
                            size_t id_len) {
  char key[2 * (ID_MAX + 1) + 2];
  if (service_len + id_len + 1 >= sizeof key) return NULL;
  memcpy(key, service, service_len);
  key[service_len] = ':';
  memcpy(key + service_len + 1, id, id_len);
  return ten_map_get(&hv->instances, key, service_len + 1 + id_len);
}

ten_instance_t *ten_hv_find_key(ten_hv_t *hv, const char *key) {
  return ten_map_get(&hv->instances, key, strlen(key));
}

static void known_services(ten_hv_t *hv, char *out, size_t len) {
  out[0] = '\0';
  for (size_t i = 0; i < hv->config->service_count; i++) {
    size_t used = strlen(out);
    snprintf(out + used, len - used, "%s%s", i ? ", " : "", hv->config->services[i].name);
  }
  if (!out[0]) snprintf(out, len, "none: add a service block to tenement.lua");
}

static bool is_running(const ten_instance_t *inst) {
  return inst->state == TEN_INST_STARTING || inst->state == TEN_INST_READY;
}

bool ten__hv_running(const ten_instance_t *inst) { return is_running(inst); }

int ten_hv_spawn(ten_hv_t *hv, const char *service, const char *id, ten_err_t *err) {
  if (hv->shutting_down) return ten_errf(err, UV_ECANCELED, "the server is shutting down");
  const ten_service_conf_t *conf = ten_config_service(hv->config, service, strlen(service));
  if (!conf) {
    char known[512];
    known_services(hv, known, sizeof known);
    return ten_errf(err, UV_ENOENT, "unknown service '%s' (known: %s)", service, known);
  }
  if (!valid_id(id))
    return ten_errf(
        err, UV_EINVAL,
        "invalid id '%s': use 1-%d characters of a-z, 0-9 and '-', not starting with '-'", id,
        ID_MAX);
  ten_instance_t *inst = ten_hv_find(hv, service, strlen(service), id, strlen(id));
  if (inst && is_running(inst))
    return ten_errf(err, UV_EEXIST, "%s is already running (%s, pid %d)", inst->key,
                    state_names[inst->state], (int)inst->pid);
  if (inst && inst->state == TEN_INST_DRAINING)
    return ten_errf(err, UV_EBUSY, "%s is stopping; try again when it has stopped", inst->key);
  if (!inst) inst = ten__hv_instance_new(hv, conf, id);
  inst->held = false;
  dispatch(inst, EV_START);
  if (inst->state == TEN_INST_FAILED)
    return ten_errf(err, UV_EINVAL, "%s: %s", inst->key, inst->reason);
  return 0;
}

int ten_hv_stop(ten_hv_t *hv, const char *key, ten_err_t *err) {
  ten_instance_t *inst = ten_hv_find_key(hv, key);
  if (!inst) return ten_errf(err, UV_ENOENT, "unknown instance '%s'", key);
  if (inst->state == TEN_INST_STOPPED)
    return ten_errf(err, UV_EALREADY, "%s is not running (stopped)", key);
  if (inst->state == TEN_INST_DRAINING && !inst->_restart_after_stop)
    return ten_errf(err, UV_EALREADY, "%s is already stopping", key);
  inst->held = true; /* an operator's stop sticks: traffic does not wake it */
  inst->idle_stopped = false;
  dispatch(inst, EV_STOP);
  return 0;
}

int ten_hv_restart(ten_hv_t *hv, const char *key, ten_err_t *err) {
  if (hv->shutting_down) return ten_errf(err, UV_ECANCELED, "the server is shutting down");
  ten_instance_t *inst = ten_hv_find_key(hv, key);
  if (!inst) return ten_errf(err, UV_ENOENT, "unknown instance '%s'", key);
  if (inst->_removing)
    return ten_errf(err, UV_ENOENT, "%s: its service was removed from the config; it is stopping",
                    key);
  inst->held = false;
  dispatch(inst, inst->state == TEN_INST_DRAINING ? EV_START : EV_RESTART);
  if (inst->state == TEN_INST_FAILED)
    return ten_errf(err, UV_EINVAL, "%s: %s", inst->key, inst->reason);
  return 0;
}

void ten_hv_start_declared(ten_hv_t *hv) {
  const ten_config_t *c = hv->config;
  for (size_t i = 0; i < c->instance_count; i++) {
    ten_err_t err;
    if (ten_hv_spawn(hv, c->instances[i].service, c->instances[i].id, &err))
      ten_log(TEN_LOG_ERROR, "hv: cannot start %s:%s: %s", c->instances[i].service,
              c->instances[i].id, err.msg);
  }
}

void ten_instance_acquire(ten_instance_t *inst) {
  inst->active++;
  inst->requests++;
  inst->last_active_ms = ten_now_ms();
}

void ten_instance_release(ten_instance_t *inst) {
  if (inst->active > 0) inst->active--;
  inst->last_active_ms = ten_now_ms();
  if (inst->active == 0 && inst->state == TEN_INST_DRAINING) dispatch(inst, EV_DRAINED);
}

/* ------------------------------------------------------------ shutdown */

/* Once every process is reaped, close every instance's handles; the last
 * close callback reports the end of the shutdown. */
void ten__hv_maybe_shutdown_done(ten_hv_t *hv) {
  if (!hv->_closing || hv->live_instances > 0 || hv->_reaper_open || hv->_sigchld_open ||
      !hv->shutdown_cb)
    return;
  void (*cb)(ten_hv_t *) = hv->shutdown_cb;
  hv->shutdown_cb = NULL;
  cb(hv);
}

static void on_reaper_closed(uv_handle_t *h) {
  ten_hv_t *hv = h->data;
  hv->_reaper_open = false;
  ten__hv_maybe_shutdown_done(hv);
}

void ten__hv_check_shutdown(ten_hv_t *hv) {
  if (!hv->shutting_down || hv->_closing || hv->live_procs > 0) return;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);)
    if (((ten_instance_t *)e->value)->proc) return;
  hv->_closing = true;
  ten__proc_close(hv);
  if (hv->_reaper_open && !uv_is_closing((uv_handle_t *)&hv->_reaper))
    uv_close((uv_handle_t *)&hv->_reaper, on_reaper_closed);
  if (hv->live_instances == 0) {
    ten__hv_maybe_shutdown_done(hv);
    return;
  }
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) {
    ten_instance_t *inst = e->value;
    stop_probing(inst);
    uv_close((uv_handle_t *)&inst->_timer, on_instance_handle_closed);
    uv_close((uv_handle_t *)&inst->_retry, on_instance_handle_closed);
  }
  /* The instances free themselves in their close callbacks. */
  ten_map_free(&hv->instances);
}

void ten_hv_shutdown(ten_hv_t *hv, void (*done)(ten_hv_t *hv)) {
  if (hv->shutting_down) return;
  hv->shutting_down = true;
  hv->shutdown_cb = done;
  size_t n;
  ten_instance_t **list = ten__hv_sorted_instances(hv, &n);
  for (size_t i = 0; i < n; i++) {
    ten_instance_t *inst = list[i];
    inst->_restart_after_stop = false;
    if (inst->state != TEN_INST_DRAINING) dispatch(inst, EV_STOP);
  }
  free(list);
  ten__hv_check_shutdown(hv);
}

void ten_hv_free(ten_hv_t *hv) {
  ten_map_free(&hv->instances);
  ten_map_free(&hv->_procs);
  ten__hv_services_free(hv);
  ten_config_unref(hv->config);
  hv->config = NULL;
}
