/* proc.c: starting, watching and signalling the process of an instance
 * (the interface and its promises are in proc.h). */
#include "hv/proc.h"

#include "hv/internal.h"
#include "hv/spawn.h"
#include "hv/tree.h"
#include "policy/template.h"
#include "util/log.h"
#include "util/time.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

/* The process of an instance: its pidfd watch outlives the instance's
 * interest in it (closing is asynchronous), so it is its own allocation. */
struct ten_proc {
  uv_poll_t poll;
  int pidfd;
  pid_t pid;
  char run_id[48];      /* TENEMENT_RUN of its whole tree */
  ten_instance_t *inst; /* NULL once the instance has let go */
  ten_hv_t *hv;
};

/* ------------------------------------------------------------ tracking */

/* hv->_procs holds every process not yet reaped, by pid: what the reaping
 * of adopted children must leave to the pidfd watches. */
static void pid_key(pid_t pid, char *key, size_t len) { snprintf(key, len, "%d", (int)pid); }

static ten_proc_t *tracked_proc(ten_hv_t *hv, pid_t pid) {
  char key[16];
  pid_key(pid, key, sizeof key);
  return ten_map_get(&hv->_procs, key, strlen(key));
}

static bool is_tracked(void *ctx, pid_t pid) { return tracked_proc(ctx, pid) != NULL; }

static void track(ten_proc_t *proc) {
  char key[16];
  pid_key(proc->pid, key, sizeof key);
  ten_map_put(&proc->hv->_procs, key, strlen(key), proc);
}

static void untrack(ten_proc_t *proc) {
  char key[16];
  pid_key(proc->pid, key, sizeof key);
  ten_map_del(&proc->hv->_procs, key, strlen(key));
}

/* ------------------------------------------------------------ the tree */

/* The one place where every process of an instance is signalled: its
 * process group, the descendants that left it, and those adopted by ten
 * (tree.h). Issue 9 replaces this body with a cgroup kill where the
 * instance has a cgroup. The leader must not be reaped yet. */
static void kill_tree(ten_proc_t *proc, int sig) {
  int escaped = ten__tree_signal(proc->pid, proc->run_id, is_tracked, proc->hv, sig);
  if (escaped > 0)
    ten_log(TEN_LOG_INFO, "hv: %s: sent %s to %d process%s outside its process group",
            proc->inst ? proc->inst->key : proc->run_id, sigabbrev_np(sig), escaped,
            escaped == 1 ? "" : "es");
}

void ten__proc_signal(ten_instance_t *inst, int sig) {
  if (inst->proc) kill_tree(inst->proc, sig);
}

/* Children ten adopted as subreaper (their parent exited) are reaped here;
 * the tracked ones are left to their pidfd watch, which sweeps again once
 * it has reaped (waitid sees one zombie at a time). */
static void reap_adopted(ten_hv_t *hv) {
  for (;;) {
    siginfo_t info = {0};
    if (waitid(P_ALL, 0, &info, WEXITED | WNOHANG | WNOWAIT) < 0 || info.si_pid == 0) return;
    if (tracked_proc(hv, info.si_pid)) return;
    int wstatus;
    pid_t r;
    do r = waitpid(info.si_pid, &wstatus, WNOHANG);
    while (r < 0 && errno == EINTR);
    if (r <= 0) return;
    ten_log(TEN_LOG_DEBUG, "hv: reaped pid %d, adopted when its parent exited", (int)r);
  }
}

static void on_sigchld(uv_signal_t *h, int signum) { reap_adopted(h->data); }

/* Kills what ten adopted that belongs to no running instance: the run id
 * names a process that is gone, or (with `all`) anything at all. */
static void kill_stray(ten_hv_t *hv, bool all) {
  size_t count = 0;
  pid_t *children = ten__tree_children(getpid(), &count);
  for (size_t i = 0; i < count; i++) {
    if (tracked_proc(hv, children[i])) continue;
    char run_id[64] = "";
    bool ours = ten__tree_run_id(children[i], run_id, sizeof run_id) &&
                strncmp(run_id, hv->_run_prefix, strlen(hv->_run_prefix)) == 0;
    bool owned = false;
    ten_map_entry_t *e;
    for (size_t it = 0; ours && !owned && ten_map_next(&hv->_procs, &it, &e);)
      owned = strcmp(((ten_proc_t *)e->value)->run_id, run_id) == 0;
    if (owned || (!ours && !all)) continue;
    int n = ten__tree_signal_adopted(children[i], SIGKILL);
    if (n > 0)
      ten_log(TEN_LOG_INFO, "hv: killed %d adopted process%s (%s%s): %s", n, n == 1 ? "" : "es",
              ours ? TEN_RUN_VAR "=" : "no run id", run_id,
              ours ? "its instance has stopped" : "ten is stopping");
  }
  free(children);
  reap_adopted(hv);
}

void ten__proc_sweep(ten_hv_t *hv) { kill_stray(hv, false); }

/* ------------------------------------------------------------ set-up and end */

/* Identifies this data dir across runs: a hash of its real path. */
static void data_dir_tag(const char *data_dir, char *out, size_t len) {
  char real[PATH_MAX];
  const char *path = realpath(data_dir, real) ? real : data_dir;
  snprintf(out, len, "%016llx", (unsigned long long)ten_hash(path, strlen(path)));
}

void ten__proc_init(ten_hv_t *hv) {
  /* Descendants whose parent exits come to ten, not to init: they can be
   * reaped, and killed with their instance. */
  if (prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL) < 0)
    ten_log(TEN_LOG_WARN,
            "hv: cannot become a child subreaper (%s): processes an instance "
            "leaves behind when their parent exits are not found",
            strerror(errno));
  char tag[20];
  data_dir_tag(hv->config->settings.data_dir, tag, sizeof tag);
  snprintf(hv->_run_prefix, sizeof hv->_run_prefix, "%s-%d-", tag, (int)getpid());
  uv_signal_init(hv->loop, &hv->_sigchld);
  hv->_sigchld.data = hv;
  hv->_sigchld_open = true;
  int rc = uv_signal_start(&hv->_sigchld, on_sigchld, SIGCHLD);
  if (rc < 0)
    ten_log(TEN_LOG_WARN,
            "hv: cannot watch SIGCHLD (%s): adopted processes are reaped once a "
            "second",
            uv_strerror(rc));
  uv_unref((uv_handle_t *)&hv->_sigchld); /* it alone must not keep the loop alive */
}

int ten_hv_kill_leftovers(ten_hv_t *hv) {
  char prefix[24];
  snprintf(prefix, sizeof prefix, "%.16s-", hv->_run_prefix);
  return ten__tree_kill_leftovers(prefix, 2000);
}

static void on_sigchld_closed(uv_handle_t *h) {
  ten_hv_t *hv = h->data;
  hv->_sigchld_open = false;
  ten__hv_maybe_shutdown_done(hv);
}

void ten__proc_close(ten_hv_t *hv) {
  /* Every instance has stopped: nothing ten adopted has a reason to run. */
  kill_stray(hv, true);
  if (hv->_sigchld_open && !uv_is_closing((uv_handle_t *)&hv->_sigchld))
    uv_close((uv_handle_t *)&hv->_sigchld, on_sigchld_closed);
}

/* ------------------------------------------------------------ watching */

static void on_proc_closed(uv_handle_t *h) {
  ten_proc_t *proc = ten_container_of((uv_poll_t *)h, ten_proc_t, poll);
  ten_hv_t *hv = proc->hv;
  close(proc->pidfd);
  free(proc);
  hv->live_procs--;
  ten__hv_check_shutdown(hv);
}

static void on_pidfd(uv_poll_t *h, int status, int events) {
  ten_proc_t *proc = ten_container_of(h, ten_proc_t, poll);
  int wstatus = 0;
  pid_t r;
  /* The leader has exited but is not reaped yet, so its pid still names
   * its process group and cannot have been reused: whatever it left
   * running, in the group or not, goes with it. */
  siginfo_t info = {0};
  if (waitid(P_PID, (id_t)proc->pid, &info, WEXITED | WNOHANG | WNOWAIT) == 0 && info.si_pid)
    kill_tree(proc, SIGKILL);
  do r = waitpid(proc->pid, &wstatus, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return;     /* spurious */
  if (r < 0) wstatus = 0; /* reaped elsewhere: nothing more to learn */
  uv_poll_stop(h);
  untrack(proc);
  ten_instance_t *inst = proc->inst;
  uv_close((uv_handle_t *)h, on_proc_closed);
  reap_adopted(proc->hv); /* those a tracked zombie hid from the last sweep */
  if (!inst) return;
  inst->proc = NULL;
  inst->pid = 0;
  ten__hv_exited(inst, wstatus);
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
    struct sockaddr_in a = {.sin_family = AF_INET,
                            .sin_port = htons((uint16_t)inst->port),
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

static char **build_env(ten_instance_t *inst, const char *run_id) {
  const ten_service_conf_t *conf = inst->conf;
  char port[16] = "";
  if (inst->port) snprintf(port, sizeof port, "%d", inst->port);
  const char *socket = inst->socket_path ? inst->socket_path : "";
  ten_template_vars_t vars = {inst->id, inst->service, inst->config->settings.data_dir, socket,
                              port};
  size_t n = 0;
  char **extra = ten_xcalloc(conf->env_count + 9, sizeof *extra);
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
  /* Last, so the service's env cannot replace it: how ten finds the
   * instance's processes that left its process group (tree.h). */
  extra[n++] = ten_xasprintf(TEN_RUN_VAR "=%s", run_id);
  char **envp = ten_spawn_env_build(extra, n);
  for (size_t i = 0; i < n; i++) free(extra[i]);
  free(extra);
  return envp;
}

int ten__proc_start(ten_instance_t *inst, ten_err_t *err) {
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
  char run_id[sizeof inst->proc->run_id];
  snprintf(run_id, sizeof run_id, "%s%llu", hv->_run_prefix, (unsigned long long)++hv->_run_seq);
  char **envp = build_env(inst, run_id);
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
  snprintf(proc->run_id, sizeof proc->run_id, "%s", run_id);
  if ((rc = uv_poll_init(hv->loop, &proc->poll, child.pidfd)) < 0) {
    /* Cannot watch it: do not leave it running unwatched. */
    if (killpg(child.pid, SIGKILL) < 0) kill(child.pid, SIGKILL);
    while (waitpid(child.pid, NULL, 0) < 0 && errno == EINTR) {
    }
    close(child.pidfd);
    free(proc);
    rc = ten_errf(err, rc, "cannot watch pid %d: %s", (int)child.pid, uv_strerror(rc));
    goto done;
  }
  uv_poll_start(&proc->poll, UV_READABLE, on_pidfd);
  hv->live_procs++;
  track(proc);
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
