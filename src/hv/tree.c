/* tree.c: finding and signalling the processes of an instance's tree
 * through /proc (see tree.h for what a tree is and what is promised). */
#include "hv/tree.h"

#include "util/common.h"
#include "util/log.h"
#include "util/time.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <unistd.h>

/* A tree this large is not walked further: the group kill still reaches
 * every member that stayed in the group, and a fork bomb is cgroups' job. */
#define TREE_MAX 4096

/* Environments hold one's whole shell setup at worst; past this, give up. */
#define ENVIRON_MAX (4u << 20)

/* ------------------------------------------------------------ /proc reads */

/* The whole of a small /proc file, NUL-terminated (it may hold NULs too).
 * NULL if it cannot be read. */
static char *read_proc(const char *path, size_t max, size_t *len_out) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return NULL;
  size_t cap = 4096, len = 0;
  char *buf = ten_xmalloc(cap + 1);
  for (;;) {
    if (len == cap) {
      if (cap >= max) break;
      cap *= 2;
      buf = ten_xrealloc(buf, cap + 1);
    }
    ssize_t n = read(fd, buf + len, cap - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      close(fd);
      free(buf);
      return NULL;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  if (len_out) *len_out = len;
  return buf;
}

/* The value of `name` in an environ block ("A=1\0B=2\0"), or NULL. */
static const char *environ_get(const char *env, size_t len, const char *name) {
  size_t name_len = strlen(name);
  for (const char *p = env; p < env + len; p += strlen(p) + 1)
    if (strncmp(p, name, name_len) == 0 && p[name_len] == '=') return p + name_len + 1;
  return NULL;
}

static char *read_environ(pid_t pid, size_t *len) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/environ", (int)pid);
  return read_proc(path, ENVIRON_MAX, len);
}

bool ten__tree_run_id(pid_t pid, char *out, size_t out_len) {
  size_t len = 0;
  char *env = read_environ(pid, &len);
  /* A process in the middle of execve reads as empty for a moment. */
  for (int retry = 0; env && len == 0 && retry < 3; retry++) {
    free(env);
    env = read_environ(pid, &len);
  }
  if (!env) return false;
  const char *value = environ_get(env, len, TEN_RUN_VAR);
  bool found = value && strlen(value) < out_len;
  if (found) snprintf(out, out_len, "%s", value);
  free(env);
  return found;
}

/* The parent pid from /proc/<pid>/stat (the command name may hold spaces
 * and parentheses: the fields start after the last ')'). */
static bool read_ppid(pid_t pid, pid_t *ppid) {
  char path[64], buf[1024];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  ssize_t n = read(fd, buf, sizeof buf - 1);
  close(fd);
  if (n <= 0) return false;
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  char state;
  int parent;
  if (!p || sscanf(p + 1, " %c %d", &state, &parent) != 2) return false;
  *ppid = (pid_t)parent;
  return true;
}

/* ------------------------------------------------------------ children */

typedef struct pid_list {
  pid_t *pid;
  pid_t *parent;
  size_t count, cap;
} pid_list_t;

static void list_add(pid_list_t *l, pid_t pid, pid_t parent) {
  for (size_t i = 0; i < l->count; i++)
    if (l->pid[i] == pid) return;
  if (l->count == l->cap) {
    l->cap = l->cap ? l->cap * 2 : 16;
    l->pid = ten_xrealloc(l->pid, l->cap * sizeof *l->pid);
    l->parent = ten_xrealloc(l->parent, l->cap * sizeof *l->parent);
  }
  l->pid[l->count] = pid;
  l->parent[l->count++] = parent;
}

static void list_free(pid_list_t *l) {
  free(l->pid);
  free(l->parent);
}

static void add_pids(pid_list_t *l, const char *text, pid_t parent) {
  for (const char *p = text; *p;) {
    char *end;
    long v = strtol(p, &end, 10);
    if (end == p) break;
    if (v > 0) list_add(l, (pid_t)v, parent);
    p = end;
  }
}

/* Without CONFIG_PROC_CHILDREN: every process whose parent is pid. */
static void scan_children(pid_list_t *l, pid_t pid) {
  DIR *d = opendir("/proc");
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    long v = strtol(de->d_name, &end, 10);
    pid_t ppid;
    if (*end || v <= 0) continue;
    if (read_ppid((pid_t)v, &ppid) && ppid == pid) list_add(l, (pid_t)v, pid);
  }
  closedir(d);
}

/* Whether the kernel lists a task's children in /proc (CONFIG_PROC_CHILDREN). */
static bool have_children_files(void) {
  static int known = -1;
  if (known < 0) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task/%d/children", (int)getpid(), (int)getpid());
    known = access(path, F_OK) == 0;
  }
  return known;
}

static void add_children(pid_list_t *l, pid_t pid) {
  if (!have_children_files()) {
    scan_children(l, pid);
    return;
  }
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/task", (int)pid);
  DIR *d = opendir(path);
  if (!d) return;
  struct dirent *de;
  while ((de = readdir(d))) {
    if (de->d_name[0] == '.') continue;
    char file[320];
    snprintf(file, sizeof file, "/proc/%d/task/%.32s/children", (int)pid, de->d_name);
    char *text = read_proc(file, 1u << 20, NULL);
    if (!text) continue;
    add_pids(l, text, pid);
    free(text);
  }
  closedir(d);
}

pid_t *ten__tree_children(pid_t pid, size_t *count) {
  pid_list_t l = {0};
  add_children(&l, pid);
  free(l.parent);
  *count = l.count;
  return l.pid;
}

/* Adds every descendant of the list's members from index `from` on. */
static void add_descendants(pid_list_t *l, size_t from) {
  for (size_t i = from; i < l->count && l->count < TREE_MAX; i++) add_children(l, l->pid[i]);
}

/* ------------------------------------------------------------ signalling */

/* Signals pid if, once pinned by a pidfd, it still is the process that was
 * found: a child of `parent`, or of this process (it was re-parented here
 * when its parent exited). */
static bool signal_found(pid_t pid, pid_t parent, int sig) {
  int fd = pidfd_open(pid, 0);
  if (fd < 0) return false;
  pid_t ppid;
  bool ours = read_ppid(pid, &ppid) && (ppid == parent || ppid == getpid());
  bool sent = ours && pidfd_send_signal(fd, sig, NULL, 0) == 0;
  close(fd);
  return sent;
}

static bool list_has(const pid_list_t *l, pid_t pid) {
  for (size_t i = 0; i < l->count; i++)
    if (l->pid[i] == pid) return true;
  return false;
}

/* Signals the list's members outside `group` (0: all of them) that are not
 * in `done` yet, and adds them to it; the deepest first, so a parent is
 * alive while its children are checked. */
static int signal_list(const pid_list_t *l, pid_t group, int sig, pid_list_t *done) {
  int sent = 0;
  for (size_t i = l->count; i-- > 0;) {
    if (list_has(done, l->pid[i])) continue;
    if (group > 0 && getpgid(l->pid[i]) == group) continue; /* the group kill reached it */
    if (!signal_found(l->pid[i], l->parent[i], sig)) continue;
    list_add(done, l->pid[i], l->parent[i]);
    sent++;
  }
  return sent;
}

/* One pass over the tree; returns how many were signalled outside the
 * group. */
static int signal_tree_once(pid_t leader, const char *run_id, ten_tree_tracked_fn tracked,
                            void *ctx, int sig, pid_list_t *done) {
  pid_list_t tree = {0};
  add_children(&tree, leader); /* a zombie leader has none: they were adopted */
  size_t count = 0;
  pid_t *mine = ten__tree_children(getpid(), &count);
  for (size_t i = 0; i < count; i++) {
    char id[64];
    if (mine[i] == leader || (tracked && tracked(ctx, mine[i]))) continue;
    if (ten__tree_run_id(mine[i], id, sizeof id) && strcmp(id, run_id) == 0)
      list_add(&tree, mine[i], getpid());
  }
  free(mine);
  add_descendants(&tree, 0);
  /* The group first: one atomic kill for every member, forks included. */
  if (killpg(leader, sig) < 0) kill(leader, sig); /* not a group leader yet */
  int sent = signal_list(&tree, leader, sig, done);
  list_free(&tree);
  return sent;
}

int ten__tree_signal(pid_t leader, const char *run_id, ten_tree_tracked_fn tracked, void *ctx,
                     int sig) {
  pid_list_t done = {0};
  int sent = signal_tree_once(leader, run_id, tracked, ctx, sig, &done);
  /* A member may have forked between the walk and its kill: for SIGKILL,
   * walk again until nothing new is found (a few passes at most). */
  for (int pass = 0, more = sent; sig == SIGKILL && more > 0 && pass < 4; pass++) {
    more = signal_tree_once(leader, run_id, tracked, ctx, sig, &done);
    sent += more;
  }
  list_free(&done);
  return sent;
}

int ten__tree_signal_adopted(pid_t pid, int sig) {
  pid_list_t tree = {0};
  list_add(&tree, pid, getpid());
  add_descendants(&tree, 0);
  pid_list_t done = {0};
  int sent = signal_list(&tree, 0, sig, &done);
  list_free(&done);
  list_free(&tree);
  return sent;
}

/* ------------------------------------------------------------ leftovers */

static bool is_ancestor(pid_t pid) {
  pid_t p = getppid();
  for (int depth = 0; p > 1 && depth < 64; depth++) {
    if (p == pid) return true;
    if (!read_ppid(p, &p)) break;
  }
  return false;
}

static void describe_leftover(pid_t pid, const char *env, size_t env_len, char *out, size_t len) {
  const char *service = environ_get(env, env_len, "TENEMENT_SERVICE");
  const char *id = environ_get(env, env_len, "TENEMENT_ID");
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/cmdline", (int)pid);
  size_t cmd_len = 0;
  char *cmd = read_proc(path, 4096, &cmd_len);
  for (size_t i = 0; cmd && i + 1 < cmd_len; i++)
    if (cmd[i] == '\0') cmd[i] = ' ';
  snprintf(out, len, "%s:%s, %.200s", service ? service : "?", id ? id : "?",
           cmd && *cmd ? cmd : "?");
  free(cmd);
}

int ten__tree_kill_leftovers(const char *prefix, int wait_ms) {
  DIR *d = opendir("/proc");
  if (!d) {
    ten_log(TEN_LOG_WARN, "hv: cannot look for processes an earlier run left: /proc: %s",
            strerror(errno));
    return 0;
  }
  size_t prefix_len = strlen(prefix);
  struct pollfd *fds = NULL;
  pid_t *pids = NULL;
  size_t count = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    long v = strtol(de->d_name, &end, 10);
    if (*end || v <= 0 || (pid_t)v == getpid()) continue;
    pid_t pid = (pid_t)v;
    char run_id[64];
    if (!ten__tree_run_id(pid, run_id, sizeof run_id) || strncmp(run_id, prefix, prefix_len))
      continue;
    if (is_ancestor(pid)) continue; /* started from inside an old instance: not ours to end */
    /* Pin it, then look again: a process that is still alive after the
     * second look is the one that carried the marker, not a reused pid. */
    int fd = pidfd_open(pid, 0);
    if (fd < 0) continue;
    size_t env_len = 0;
    char *env = read_environ(pid, &env_len);
    const char *again = env ? environ_get(env, env_len, TEN_RUN_VAR) : NULL;
    char what[320] = "";
    if (again && strcmp(again, run_id) == 0)
      describe_leftover(pid, env, env_len, what, sizeof what);
    free(env);
    if (!what[0] || pidfd_send_signal(fd, SIGKILL, NULL, 0) < 0) {
      close(fd);
      continue;
    }
    ten_log(TEN_LOG_WARN, "hv: killed pid %d (%s), left running by an earlier run on this data dir",
            (int)pid, what);
    if (count == cap) {
      cap = cap ? cap * 2 : 8;
      fds = ten_xrealloc(fds, cap * sizeof *fds);
      pids = ten_xrealloc(pids, cap * sizeof *pids);
    }
    pids[count] = pid;
    fds[count++] = (struct pollfd){.fd = fd, .events = POLLIN};
  }
  closedir(d);

  /* A pidfd turns readable when its process has exited. Wait so the new
   * instances do not meet the old ones (on a lock, a port, a file). */
  uint64_t deadline = ten_now_ms() + (uint64_t)wait_ms;
  size_t left = count;
  while (left > 0) {
    uint64_t now = ten_now_ms();
    if (now >= deadline) break;
    int n = poll(fds, count, (int)(deadline - now));
    if (n < 0 && errno != EINTR) break;
    for (size_t i = 0; n > 0 && i < count; i++) {
      if (fds[i].fd < 0 || !fds[i].revents) continue;
      close(fds[i].fd);
      fds[i].fd = -1; /* poll ignores negative fds */
      left--;
    }
  }
  for (size_t i = 0; i < count; i++) {
    if (fds[i].fd < 0) continue;
    ten_log(TEN_LOG_WARN, "hv: pid %d, left by an earlier run, has not exited %d ms after SIGKILL",
            (int)pids[i], wait_ms);
    close(fds[i].fd);
  }
  free(fds);
  free(pids);
  return (int)count;
}
