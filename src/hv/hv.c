#include "hv/hv.h"

#include "hv/internal.h"
#include "hv/spawn.h"
#include "policy/template.h"
#include "util/httpc.h"
#include "util/json.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
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

/* The process of an instance: its pidfd watch outlives the instance's
 * interest in it (closing is asynchronous), so it is its own allocation. */
struct ten_proc {
  uv_poll_t poll;
  int pidfd;
  pid_t pid;
  ten_instance_t *inst; /* NULL once the instance has let go */
  ten_hv_t *hv;
};

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
static void check_shutdown(ten_hv_t *hv);
static void maybe_shutdown_done(ten_hv_t *hv);

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
  ten__hv_reload_transition(inst, to); /* last: it may let go of the instance */
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

/* ------------------------------------------------------------ processes */

static void describe_exit(int status, char *out, size_t len) {
  if (WIFEXITED(status))
    snprintf(out, len, "exited with status %d", WEXITSTATUS(status));
  else if (WIFSIGNALED(status))
    snprintf(out, len, "killed by signal %d (%s)", WTERMSIG(status), strsignal(WTERMSIG(status)));
  else
    snprintf(out, len, "ended with wait status %d", status);
}

static void on_proc_closed(uv_handle_t *h) {
  ten_proc_t *proc = ten_container_of((uv_poll_t *)h, ten_proc_t, poll);
  ten_hv_t *hv = proc->hv;
  close(proc->pidfd);
  free(proc);
  hv->live_procs--;
  check_shutdown(hv);
}

static void on_pidfd(uv_poll_t *h, int status, int events) {
  ten_proc_t *proc = ten_container_of(h, ten_proc_t, poll);
  int wstatus = 0;
  pid_t r;
  /* The leader has exited but is not reaped yet, so its pid still names
   * its process group and cannot have been reused: whatever it left
   * running in the group goes with it. */
  siginfo_t info = {0};
  if (waitid(P_PID, (id_t)proc->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid)
    killpg(proc->pid, SIGKILL);
  do r = waitpid(proc->pid, &wstatus, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return;     /* spurious */
  if (r < 0) wstatus = 0; /* reaped elsewhere: nothing more to learn */
  uv_poll_stop(h);
  ten_instance_t *inst = proc->inst;
  uv_close((uv_handle_t *)h, on_proc_closed);
  if (!inst) return;
  describe_exit(wstatus, inst->last_exit, sizeof inst->last_exit);
  inst->proc = NULL;
  inst->pid = 0;
  inst->_exit_crashed = !(WIFEXITED(wstatus) && WEXITSTATUS(wstatus) == 0);
  dispatch(inst, EV_EXIT);
}

static void signal_group(ten_instance_t *inst, int sig) {
  if (!inst->pid) return;
  /* The child made itself a group leader; until it has, signal it alone. */
  if (killpg(inst->pid, sig) < 0) kill(inst->pid, sig);
}

static int mkdir_parents(const char *path, ten_err_t *err) {
  char *copy = ten_xstrdup(path);
  int rc = 0;
  for (char *p = copy + 1; *p && rc == 0; p++) {
    if (*p != '/') continue;
    *p = '\0';
    if (mkdir(copy, 0755) < 0 && errno != EEXIST)
      rc = ten_errf(err, -errno, "cannot create %s: %s", copy, strerror(errno));
    *p = '/';
  }
  free(copy);
  return rc;
}

static int free_tcp_port(void) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t len = sizeof a;
  int rc = 0;
  if (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 ||
      getsockname(fd, (struct sockaddr *)&a, &len) < 0)
    rc = -errno;
  close(fd);
  return rc ? rc : ntohs(a.sin_port);
}

/* Prepares the socket path or port of the next process. */
static int bind_activation_socket(ten_instance_t *inst, ten_err_t *err);

static int prepare_endpoint(ten_instance_t *inst, ten_err_t *err) {
  const ten_service_conf_t *conf = inst->conf;
  const char *data_dir = inst->config->settings.data_dir;
  /* Socket activation: the socket ten bound outlives the process, so
   * connections queue in the kernel across a restart. */
  if (inst->_listen_fd >= 0) return 0;
  free(inst->socket_path);
  inst->socket_path = NULL;
  inst->port = 0;
  if (conf->port_auto) {
    int port = free_tcp_port();
    if (port < 0) return ten_errf(err, port, "no free TCP port: %s", uv_strerror(port));
    inst->port = port;
    return 0;
  }
  ten_template_vars_t vars = {inst->id, inst->service, data_dir, "", ""};
  inst->socket_path = ten_template_expand(conf->socket, &vars);
  struct sockaddr_un sun;
  if (strlen(inst->socket_path) >= sizeof sun.sun_path)
    return ten_errf(
        err, UV_ENAMETOOLONG,
        "socket path %s is %zu bytes; unix sockets allow %zu (shorten data_dir or 'socket')",
        inst->socket_path, strlen(inst->socket_path), sizeof sun.sun_path - 1);
  int rc = mkdir_parents(inst->socket_path, err);
  if (rc) return rc;
  /* A socket left by a previous process would accept nothing: remove it so
   * readiness means the new process is listening. Never remove a non-socket. */
  struct stat st;
  if (lstat(inst->socket_path, &st) == 0) {
    if (!S_ISSOCK(st.st_mode))
      return ten_errf(err, UV_EEXIST, "%s exists and is not a socket", inst->socket_path);
    if (unlink(inst->socket_path) < 0)
      return ten_errf(err, -errno, "cannot remove stale socket %s: %s", inst->socket_path,
                      strerror(errno));
  }
  return conf->activation == TEN_ACTIVATION_SOCKET ? bind_activation_socket(inst, err) : 0;
}

static int bind_activation_socket(ten_instance_t *inst, ten_err_t *err) {
  int fd;
  if (inst->socket_path) {
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    snprintf(a.sun_path, sizeof a.sun_path, "%s", inst->socket_path);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0)) {
      close(fd);
      fd = -1;
    }
  } else {
    fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)inst->port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&a, sizeof a) < 0 || listen(fd, 1024) < 0)) {
      close(fd);
      fd = -1;
    }
  }
  if (fd < 0)
    return ten_errf(err, -errno, "cannot bind the activation socket of %s: %s", inst->key,
                    strerror(errno));
  inst->_listen_fd = fd;
  return 0;
}

static char **build_env(ten_instance_t *inst) {
  const ten_service_conf_t *conf = inst->conf;
  char port[16] = "";
  if (inst->port) snprintf(port, sizeof port, "%d", inst->port);
  const char *socket = inst->socket_path ? inst->socket_path : "";
  ten_template_vars_t vars = {inst->id, inst->service, inst->config->settings.data_dir, socket,
                              port};
  size_t n = 0;
  char **extra = ten_xcalloc(conf->env_count + 8, sizeof *extra);
  extra[n++] = ten_xasprintf("TENEMENT_SERVICE=%s", inst->service);
  extra[n++] = ten_xasprintf("TENEMENT_ID=%s", inst->id);
  extra[n++] = ten_xasprintf("TENEMENT_DATA_DIR=%s", inst->config->settings.data_dir);
  if (inst->socket_path) extra[n++] = ten_xasprintf("SOCKET=%s", socket);
  if (inst->port) extra[n++] = ten_xasprintf("PORT=%s", port);
  if (inst->_listen_fd >= 0) {
    extra[n++] = ten_xstrdup("LISTEN_FDS=1");
    /* Room for the child to write its own pid in (spawn.c). */
    extra[n++] = ten_xstrdup("LISTEN_PID=00000000000000000000");
  }
  for (size_t i = 0; i < conf->env_count; i++) {
    char *value = ten_template_expand(conf->env[i].value, &vars);
    extra[n++] = ten_xasprintf("%s=%s", conf->env[i].name, value);
    free(value);
  }
  char **envp = ten_spawn_env_build(extra, n);
  for (size_t i = 0; i < n; i++) free(extra[i]);
  free(extra);
  return envp;
}

static int start_process(ten_instance_t *inst, ten_err_t *err) {
  ten_hv_t *hv = inst->hv;
  const ten_service_conf_t *conf = inst->conf;
  int rc = prepare_endpoint(inst, err);
  if (rc) return rc;

  char port[16] = "";
  if (inst->port) snprintf(port, sizeof port, "%d", inst->port);
  ten_template_vars_t vars = {inst->id, inst->service, inst->config->settings.data_dir,
                              inst->socket_path ? inst->socket_path : "", port};
  char *command = ten_template_expand(conf->command, &vars);
  char *directory = conf->directory ? ten_template_expand(conf->directory, &vars)
                                    : ten_xstrdup(inst->config->settings.data_dir);
  char **envp = build_env(inst);
  int out_fd = -1, err_fd = -1;
  if (hv->output && (rc = hv->output(hv->output_ctx, inst, &out_fd, &err_fd)) < 0) {
    rc = ten_errf(err, rc, "cannot open the log of %s: %s", inst->key, uv_strerror(rc));
    goto done;
  }

  ten_spawn_opts_t opts = {command, directory, envp, out_fd, err_fd, inst->_listen_fd};
  ten_spawned_t child;
  if ((rc = ten_spawn(&opts, &child, err))) goto done;

  ten_proc_t *proc = ten_xcalloc(1, sizeof *proc);
  proc->pid = child.pid;
  proc->pidfd = child.pidfd;
  proc->inst = inst;
  proc->hv = hv;
  if ((rc = uv_poll_init(hv->loop, &proc->poll, child.pidfd)) < 0) {
    /* Cannot watch it: do not leave it running unwatched. */
    kill(child.pid, SIGKILL);
    while (waitpid(child.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close(child.pidfd);
    free(proc);
    rc = ten_errf(err, rc, "cannot watch pid %d: %s", (int)child.pid, uv_strerror(rc));
    goto done;
  }
  uv_poll_start(&proc->poll, UV_READABLE, on_pidfd);
  hv->live_procs++;
  inst->proc = proc;
  inst->pid = child.pid;
  inst->started_ms = ten_now_ms();
  inst->ready_ms = 0;

done:
  if (out_fd >= 0) close(out_fd);
  if (err_fd >= 0 && err_fd != out_fd) close(err_fd);
  ten_spawn_env_free(envp);
  free(command);
  free(directory);
  return rc;
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
  if (result < 0) snprintf(what, sizeof what, "%s", uv_strerror(result));
  else snprintf(what, sizeof what, "status %d", result);
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
  if (start_process(inst, &err)) {
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
    if (inst->conf->health) probe(inst, true);
    else dispatch(inst, EV_READY);
    return;
  }
  probe(inst, false);
}

static void send_term(ten_instance_t *inst) {
  inst->_term_sent = true;
  signal_group(inst, SIGTERM);
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

/* state x event -> action. Unlisted pairs are no-ops on purpose. */
static void dispatch(ten_instance_t *inst, event_t ev) {
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
      signal_group(inst, SIGKILL);
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
        signal_group(inst, SIGKILL);
      }
      break;
    case EV_EXIT: {
      disarm_timer(inst);
      bool again = inst->_restart_after_stop && !inst->hv->shutting_down;
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
  maybe_shutdown_done(hv);
}

ten_instance_t *ten__hv_instance_new(ten_hv_t *hv, const ten_service_conf_t *conf,
                                     const char *id) {
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

void ten__hv_instance_close(ten_instance_t *inst) {
  ten_hv_t *hv = inst->hv;
  stop_probing(inst);
  ten_map_del(&hv->instances, inst->key, strlen(inst->key));
  uv_close((uv_handle_t *)&inst->_timer, on_instance_handle_closed);
  uv_close((uv_handle_t *)&inst->_retry, on_instance_handle_closed);
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

static double rss_mb(pid_t pid) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/statm", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return 0;
  long pages = 0, resident = 0;
  int n = fscanf(f, "%ld %ld", &pages, &resident);
  fclose(f);
  return n == 2 ? (double)resident * (double)sysconf(_SC_PAGESIZE) / (1024.0 * 1024.0) : 0;
}

void ten__hv_facts(const ten_instance_t *inst, ten_hook_instance_t *out) {
  uint64_t now = ten_now_ms();
  out->service = inst->service;
  out->id = inst->id;
  out->state = state_names[inst->state];
  out->idle_seconds = inst->active ? 0 : (double)(now - inst->last_active_ms) / 1000.0;
  out->uptime = inst->pid ? (double)(now - inst->started_ms) / 1000.0 : 0;
  out->requests = inst->requests;
  out->memory_mb = inst->pid ? rss_mb(inst->pid) : 0;
  out->weight = inst->weight;
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

/* ------------------------------------------------------------ reporting */

void ten_instance_to_json(const ten_instance_t *inst, ten_jw_t *w) {
  uint64_t now = ten_now_ms();
  ten_jw_obj(w);
  ten_jw_kstr(w, "service", inst->service);
  ten_jw_kstr(w, "id", inst->id);
  ten_jw_kstr(w, "state", state_names[inst->state]);
  ten_jw_key(w, "pid");
  if (inst->pid)
    ten_jw_int(w, inst->pid);
  else
    ten_jw_null(w);
  ten_jw_kstr(w, "socket", inst->socket_path);
  ten_jw_key(w, "port");
  if (inst->port)
    ten_jw_int(w, inst->port);
  else
    ten_jw_null(w);
  ten_jw_key(w, "uptime");
  if (inst->pid)
    ten_jw_num(w, (double)(now - inst->started_ms) / 1000.0);
  else
    ten_jw_null(w);
  static const char *const health_names[] = {"unknown", "ok", "failing"};
  ten_jw_kint(w, "restarts", inst->restarts);
  ten_jw_kint(w, "crashes", inst->crashes);
  ten_jw_kstr(w, "health", inst->conf->health ? health_names[inst->health] : NULL);
  ten_jw_kint(w, "weight", inst->weight);
  ten_jw_kint(w, "active", inst->active);
  ten_jw_kint(w, "requests", (int64_t)inst->requests);
  ten_jw_key(w, "idle_seconds");
  if (inst->active || !inst->last_active_ms) ten_jw_num(w, 0);
  else ten_jw_num(w, (double)(now - inst->last_active_ms) / 1000.0);
  ten_jw_kbool(w, "held", inst->held);
  ten_jw_kbool(w, "idle_stopped", inst->idle_stopped);
  ten_jw_kbool(w, "on_demand", inst->on_demand);
  ten_jw_kstr(w, "last_exit", inst->last_exit[0] ? inst->last_exit : NULL);
  ten_jw_kstr(w, "reason", inst->reason[0] ? inst->reason : NULL);
  ten_jw_kstr(w, "hook_error", inst->hook_error[0] ? inst->hook_error : NULL);
  ten_jw_key(w, "hook_errors");
  ten_jw_obj(w);
  if (inst->weight_hook_error[0]) ten_jw_kstr(w, "weight", inst->weight_hook_error);
  if (inst->idle_hook_error[0]) ten_jw_kstr(w, "idle", inst->idle_hook_error);
  ten_jw_obj_end(w);
  ten_jw_obj_end(w);
}

static int cmp_instances(const void *a, const void *b) {
  return strcmp((*(ten_instance_t *const *)a)->key, (*(ten_instance_t *const *)b)->key);
}

/* All instances sorted by key; caller frees the array. */
static ten_instance_t **sorted_instances(ten_hv_t *hv, size_t *count) {
  ten_instance_t **list = ten_xcalloc(hv->instances.count + 1, sizeof *list);
  size_t n = 0;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);) list[n++] = e->value;
  qsort(list, n, sizeof *list, cmp_instances);
  *count = n;
  return list;
}

void ten_hv_to_json(ten_hv_t *hv, ten_jw_t *w) {
  size_t n;
  ten_instance_t **list = sorted_instances(hv, &n);
  ten_jw_arr(w);
  for (size_t i = 0; i < n; i++) ten_instance_to_json(list[i], w);
  ten_jw_arr_end(w);
  free(list);
}

void ten_hv_count(ten_hv_t *hv, unsigned counts[TEN_INST_STATE_COUNT]) {
  memset(counts, 0, sizeof(unsigned) * TEN_INST_STATE_COUNT);
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);)
    counts[((ten_instance_t *)e->value)->state]++;
}

/* ------------------------------------------------------------ shutdown */

/* Once every process is reaped, close every instance's handles; the last
 * close callback reports the end of the shutdown. */
static void maybe_shutdown_done(ten_hv_t *hv) {
  if (!hv->_closing || hv->live_instances > 0 || hv->_reaper_open || !hv->shutdown_cb) return;
  void (*cb)(ten_hv_t *) = hv->shutdown_cb;
  hv->shutdown_cb = NULL;
  cb(hv);
}

static void on_reaper_closed(uv_handle_t *h) {
  ten_hv_t *hv = h->data;
  hv->_reaper_open = false;
  maybe_shutdown_done(hv);
}

static void check_shutdown(ten_hv_t *hv) {
  if (!hv->shutting_down || hv->_closing || hv->live_procs > 0) return;
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&hv->instances, &it, &e);)
    if (((ten_instance_t *)e->value)->proc) return;
  hv->_closing = true;
  if (hv->_reaper_open && !uv_is_closing((uv_handle_t *)&hv->_reaper))
    uv_close((uv_handle_t *)&hv->_reaper, on_reaper_closed);
  if (hv->live_instances == 0) {
    maybe_shutdown_done(hv);
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
  ten_instance_t **list = sorted_instances(hv, &n);
  for (size_t i = 0; i < n; i++) {
    ten_instance_t *inst = list[i];
    inst->_restart_after_stop = false;
    if (inst->state != TEN_INST_DRAINING) dispatch(inst, EV_STOP);
  }
  free(list);
  check_shutdown(hv);
}

void ten_hv_free(ten_hv_t *hv) {
  ten_map_free(&hv->instances);
  ten__hv_services_free(hv);
  ten_config_unref(hv->config);
  hv->config = NULL;
}
