#include "hv/spawn.h"

#include <ctype.h>
#include <errno.h>
#include <pthread.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/pidfd.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

/* What the child reports through the CLOEXEC pipe when it cannot exec. */
typedef struct child_failure {
  int step; /* index into step_names */
  int error;
} child_failure_t;

static const char *const step_names[] = {"setpgid", "prctl", "chdir", "dup2", "exec"};
enum { STEP_SETPGID, STEP_PRCTL, STEP_CHDIR, STEP_DUP2, STEP_EXEC };

static void child_fail(int pipe_fd, int step) {
  child_failure_t f = {step, errno};
  ssize_t w = write(pipe_fd, &f, sizeof f);
  (void)w;
  _exit(127);
}

/* Moves fd above the range we are about to fill (0-3), close-on-exec. */
static int lift(int fd, int report_fd) {
  int moved = fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (moved < 0) child_fail(report_fd, STEP_DUP2);
  return moved;
}

/* Runs in the vfork child, on the parent's memory: async-signal-safe calls
 * only, no allocation, and it never returns. Signals arrive blocked; the
 * dispositions are reset before they are unblocked, so none of ten's
 * handlers can run here. */
static void child_exec(const ten_spawn_opts_t *o, const char *path, char *const argv[],
                       int report_fd, pid_t parent, int null_fd) {
  if (setpgid(0, 0) < 0) child_fail(report_fd, STEP_SETPGID);
  if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0) child_fail(report_fd, STEP_PRCTL);
  /* The parent may have died before prctl took effect. */
  if (getppid() != parent) _exit(127);

  struct sigaction dfl;
  memset(&dfl, 0, sizeof dfl);
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; sig++) sigaction(sig, &dfl, NULL);
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);

  if (o->directory && chdir(o->directory) < 0) child_fail(report_fd, STEP_CHDIR);

  /* Any source fd may itself be 0-3: lift them all out of the way first,
   * then place them. */
  report_fd = lift(report_fd, report_fd);
  int in = lift(null_fd, report_fd);
  int out = lift(o->stdout_fd >= 0 ? o->stdout_fd : null_fd, report_fd);
  int err = lift(o->stderr_fd >= 0 ? o->stderr_fd : null_fd, report_fd);
  int listener = o->listen_fd >= 0 ? lift(o->listen_fd, report_fd) : -1;
  /* dup2 clears FD_CLOEXEC on the copies, which is what the app inherits. */
  if (dup2(in, 0) < 0 || dup2(out, 1) < 0 || dup2(err, 2) < 0) child_fail(report_fd, STEP_DUP2);
  if (listener >= 0) {
    /* Socket activation: the socket is fd 3 and LISTEN_PID this process,
     * written into the slot the parent reserved in the environment. */
    if (dup2(listener, 3) < 0) child_fail(report_fd, STEP_DUP2);
    for (char **e = o->envp; *e; e++) {
      if (strncmp(*e, "LISTEN_PID=", 11) != 0) continue;
      char *digits = *e + 11;
      pid_t pid = getpid();
      char tmp[16];
      int n = 0;
      do tmp[n++] = (char)('0' + pid % 10);
      while ((pid /= 10) > 0 && n < 15);
      for (int i = 0; i < n; i++) digits[i] = tmp[n - 1 - i];
      digits[n] = '\0';
    }
  }
  /* Close everything else but the report pipe, which closes itself on exec. */
  unsigned first = listener >= 0 ? 4 : 3;
  if ((unsigned)report_fd > first) close_range(first, (unsigned)report_fd - 1, 0);
  close_range((unsigned)report_fd + 1, ~0u, 0);

  execve(path, argv, o->envp);
  child_fail(report_fd, STEP_EXEC);
}

/* A simple command is exec'd by the shell, so the app itself is the process
 * we watch and signal (and PR_SET_PDEATHSIG applies to it). Compound
 * commands run as written: they should end with `exec app` themselves. */
static bool is_simple_command(const char *cmd) {
  if (strncmp(cmd, "exec ", 5) == 0) return false;
  if (strpbrk(cmd, ";&|\n()`<>")) return false;
  /* NAME=value prefixes cannot follow `exec`. */
  const char *eq = strchr(cmd, '='), *sp = strpbrk(cmd, " \t");
  if (eq && (!sp || eq < sp)) return false;
  return true;
}

/* Words the shell would pass through unchanged: no quoting, expansion,
 * globbing or redirection. Such a command is exec'd without a shell,
 * which saves starting one (about half a millisecond per start). */
static bool is_plain_words(const char *cmd) {
  bool any = false;
  for (const char *p = cmd; *p; p++) {
    unsigned char c = (unsigned char)*p;
    if (c == ' ' || c == '\t') continue;
    if (!(isalnum(c) || strchr("_-./:=@%+,", c))) return false;
    any = true;
  }
  return any;
}

static const char *env_get(char *const *envp, const char *name) {
  size_t n = strlen(name);
  for (char *const *e = envp; e && *e; e++)
    if (strncmp(*e, name, n) == 0 && (*e)[n] == '=') return *e + n + 1;
  return NULL;
}

/* The file the shell would run for `word`, searched in the child's PATH;
 * NULL when the shell should decide (not found, relative PATH entries). */
static char *resolve_program(const char *word, char *const *envp) {
  if (strchr(word, '/')) return ten_xstrdup(word); /* relative to the instance's directory */
  const char *path = env_get(envp, "PATH");
  if (!path) path = "/usr/local/bin:/usr/bin:/bin";
  while (*path) {
    size_t len = strcspn(path, ":");
    if (len && path[0] == '/') {
      char *candidate = ten_xasprintf("%.*s/%s", (int)len, path, word);
      struct stat st;
      if (stat(candidate, &st) == 0 && S_ISREG(st.st_mode) && access(candidate, X_OK) == 0)
        return candidate;
      free(candidate);
    } else if (!len || path[0] != '/') {
      return NULL; /* the shell would look in the working directory */
    }
    path += len;
    if (*path == ':') path++;
  }
  return NULL;
}

/* What to execve: the program itself for plain words, else /bin/sh -c. */
typedef struct exec_plan {
  char *path;
  char **argv;
} exec_plan_t;

static void plan_exec(const ten_spawn_opts_t *o, exec_plan_t *plan) {
  const char *cmd = o->command;
  const char *first = cmd + strspn(cmd, " \t");
  bool assigns = memchr(first, '=', strcspn(first, " \t")) != NULL; /* NAME=value app */
  if (is_plain_words(cmd) && !assigns) {
    size_t words = 0;
    for (const char *p = cmd; *p;) {
      p += strspn(p, " \t");
      if (!*p) break;
      words++;
      p += strcspn(p, " \t");
    }
    char **argv = ten_xcalloc(words + 1, sizeof *argv);
    size_t i = 0;
    for (const char *p = cmd; *p;) {
      p += strspn(p, " \t");
      if (!*p) break;
      size_t len = strcspn(p, " \t");
      argv[i++] = ten_xstrndup(p, len);
      p += len;
    }
    char *path = resolve_program(argv[0], o->envp);
    if (path) {
      plan->path = path;
      plan->argv = argv;
      return;
    }
    for (i = 0; i < words; i++) free(argv[i]);
    free(argv);
  }
  plan->path = ten_xstrdup("/bin/sh");
  plan->argv = ten_xcalloc(4, sizeof *plan->argv);
  plan->argv[0] = ten_xstrdup("sh");
  plan->argv[1] = ten_xstrdup("-c");
  plan->argv[2] = is_simple_command(cmd) ? ten_xasprintf("exec %s", cmd) : ten_xstrdup(cmd);
}

static void plan_free(exec_plan_t *plan) {
  free(plan->path);
  for (char **a = plan->argv; a && *a; a++) free(*a);
  free(plan->argv);
}

int ten_spawn(const ten_spawn_opts_t *o, ten_spawned_t *out, ten_err_t *err) {
  exec_plan_t plan = {0};
  plan_exec(o, &plan);
  int report[2] = {-1, -1};
  int null_fd = -1;
  int rc = 0;

  null_fd = open("/dev/null", O_RDWR | O_CLOEXEC);
  if (null_fd < 0) {
    rc = ten_errf(err, -errno, "open /dev/null: %s", strerror(errno));
    goto done;
  }
  if (pipe2(report, O_CLOEXEC) < 0) {
    rc = ten_errf(err, -errno, "pipe: %s", strerror(errno));
    goto done;
  }
  pid_t parent = getpid();
  /* vfork, not fork: the parent waits only until the child has exec'd,
   * and that no longer costs a copy of ten's page tables, which grew with
   * every instance ten holds. Signals stay blocked across it, so no
   * handler of ten's runs in the child before it resets them. */
  sigset_t all, saved;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &saved);
  pid_t pid = vfork();
  if (pid == 0) child_exec(o, plan.path, plan.argv, report[1], parent, null_fd);
  int vfork_errno = errno;
  pthread_sigmask(SIG_SETMASK, &saved, NULL);
  if (pid < 0) {
    rc = ten_errf(err, -vfork_errno, "vfork: %s", strerror(vfork_errno));
    goto done;
  }

  close(report[1]);
  report[1] = -1;
  /* Open the pidfd before anything can reap the child, so it names this
   * process and no other. */
  int pidfd = pidfd_open(pid, 0);
  int pidfd_errno = errno;

  child_failure_t failure;
  ssize_t n;
  do n = read(report[0], &failure, sizeof failure);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)sizeof failure) {
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    if (pidfd >= 0) close(pidfd);
    const char *what =
        failure.step < (int)TEN_ARRAY_SIZE(step_names) ? step_names[failure.step] : "?";
    if (failure.step == STEP_CHDIR)
      rc = ten_errf(err, -failure.error, "cannot enter directory %s: %s", o->directory,
                    strerror(failure.error));
    else if (failure.step == STEP_EXEC)
      rc = ten_errf(err, -failure.error, "cannot run %s: %s", plan.path, strerror(failure.error));
    else
      rc = ten_errf(err, -failure.error, "%s failed in the child: %s", what,
                    strerror(failure.error));
    goto done;
  }
  if (pidfd < 0) {
    kill(pid, SIGKILL);
    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    rc = ten_errf(err, -pidfd_errno, "pidfd_open: %s", strerror(pidfd_errno));
    goto done;
  }
  out->pid = pid;
  out->pidfd = pidfd;

done:
  if (report[0] >= 0) close(report[0]);
  if (report[1] >= 0) close(report[1]);
  if (null_fd >= 0) close(null_fd);
  plan_free(&plan);
  return rc;
}

/* Variables that describe how `ten` itself was started must not leak into
 * the instances (an app would think fd 3 is its listening socket). */
static bool inherited_ok(const char *entry) {
  static const char *const drop[] = {
      "LISTEN_FDS=", "LISTEN_PID=", "LISTEN_FDNAMES=", "NOTIFY_SOCKET=", "SOCKET=", "PORT="};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(drop); i++)
    if (strncmp(entry, drop[i], strlen(drop[i])) == 0) return false;
  return true;
}

char **ten_spawn_env_build(char *const *extra, size_t extra_count) {
  size_t inherited = 0;
  for (char **e = environ; e && *e; e++) inherited++;
  char **envp = ten_xcalloc(inherited + extra_count + 1, sizeof *envp);
  size_t n = 0;
  for (size_t i = 0; i < extra_count; i++) {
    /* Later extras win: skip one overridden by a later extra. */
    size_t name_len = strcspn(extra[i], "=");
    bool overridden = false;
    for (size_t j = i + 1; j < extra_count; j++)
      if (strncmp(extra[j], extra[i], name_len + 1) == 0) overridden = true;
    if (!overridden) envp[n++] = ten_xstrdup(extra[i]);
  }
  size_t extras = n;
  for (char **e = environ; e && *e; e++) {
    if (!inherited_ok(*e)) continue;
    size_t name_len = strcspn(*e, "=");
    bool overridden = false;
    for (size_t j = 0; j < extras; j++)
      if (strncmp(envp[j], *e, name_len + 1) == 0) overridden = true;
    if (!overridden) envp[n++] = ten_xstrdup(*e);
  }
  envp[n] = NULL;
  return envp;
}

void ten_spawn_env_free(char **envp) {
  if (!envp) return;
  for (char **e = envp; *e; e++) free(*e);
  free(envp);
}
