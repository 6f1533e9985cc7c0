/* tentest: process-control helpers for the busted specs (Lua 5.4 C module).
 *
 * Debian's lua-posix does not support Lua 5.4, so the specs use this small
 * module instead: spawn/kill/wait real processes, inspect /proc, and manage
 * temporary directories.  Functions that can fail return nil, message;
 * argument errors raise. */
#include <lauxlib.h>
#include <lua.h>

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

extern char **environ;

int luaopen_tentest(lua_State *L);

/* --- helpers ------------------------------------------------------------- */

/* Push nil, "<what> <arg>: strerror(errno)" and return 2. */
static int fail(lua_State *L, const char *what, const char *arg) {
  int e = errno;
  lua_pushnil(L);
  if (arg)
    lua_pushfstring(L, "%s %s: %s", what, arg, strerror(e));
  else
    lua_pushfstring(L, "%s: %s", what, strerror(e));
  return 2;
}

static pid_t check_pid(lua_State *L, int arg) {
  lua_Integer n = luaL_checkinteger(L, arg);
  luaL_argcheck(L, n > 0 && n <= INT_MAX, arg, "pid must be a positive integer");
  return (pid_t)n;
}

static const struct { const char *name; int sig; } signames[] = {
  {"HUP", SIGHUP},   {"INT", SIGINT},   {"QUIT", SIGQUIT}, {"KILL", SIGKILL},
  {"TERM", SIGTERM}, {"USR1", SIGUSR1}, {"USR2", SIGUSR2}, {"STOP", SIGSTOP},
  {"CONT", SIGCONT}, {"PIPE", SIGPIPE}, {"CHLD", SIGCHLD}, {"ALRM", SIGALRM},
  {"ABRT", SIGABRT}, {"SEGV", SIGSEGV}, {"TSTP", SIGTSTP}, {"TTIN", SIGTTIN},
  {"TTOU", SIGTTOU}, {"WINCH", SIGWINCH}, {NULL, 0}};

/* A signal as a number or a name ("TERM" or "SIGTERM"). */
static int check_signal(lua_State *L, int arg) {
  if (lua_type(L, arg) == LUA_TNUMBER) {
    lua_Integer n = luaL_checkinteger(L, arg);
    luaL_argcheck(L, n >= 0 && n < NSIG, arg, "signal number out of range");
    return (int)n;
  }
  const char *s = luaL_checkstring(L, arg);
  const char *name = strncmp(s, "SIG", 3) == 0 ? s + 3 : s;
  for (int i = 0; signames[i].name; i++)
    if (strcmp(name, signames[i].name) == 0) return signames[i].sig;
  return luaL_argerror(L, arg, lua_pushfstring(L, "unknown signal '%s'", s));
}

static double mono_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void sleep_ms(double ms) {
  if (!(ms > 0)) return;
  if (ms > 1e12) ms = 1e12;
  long long ns = (long long)(ms * 1e6);
  struct timespec ts = {.tv_sec = (time_t)(ns / 1000000000), .tv_nsec = (long)(ns % 1000000000)};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
  }
}

/* Read a whole small file into buf (NUL-terminated); -1 on error. */
static ssize_t read_small(const char *path, char *buf, size_t cap) {
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return -1;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return -1;
    }
    if (n == 0) break;
    len += (size_t)n;
  }
  close(fd);
  buf[len] = '\0';
  return (ssize_t)len;
}

/* State char and ppid from /proc/<pid>/stat; comm may hold spaces and ')'. */
static int proc_stat(pid_t pid, char *state, pid_t *ppid) {
  char path[64], buf[2048];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (read_small(path, buf, sizeof buf) < 0) return -1;
  char *p = strrchr(buf, ')');
  char s;
  int pp;
  if (!p || sscanf(p + 1, " %c %d", &s, &pp) != 2) {
    errno = EINVAL;
    return -1;
  }
  if (state) *state = s;
  if (ppid) *ppid = (pid_t)pp;
  return 0;
}

static int is_alive(pid_t pid) {
  char st;
  if (proc_stat(pid, &st, NULL) < 0) return 0;
  return st != 'Z' && st != 'X';
}

/* --- spawn --------------------------------------------------------------- */

enum { ST_EXEC, ST_CHDIR, ST_SETSID, ST_DUP };
struct spawn_err { int stage, err; };

/* Convert the value at the top of the stack to a string, anchor it in the
 * table at index `anchor` (so it stays alive) and pop it. */
static const char *anchor_str(lua_State *L, int anchor, const char *what) {
  int t = lua_type(L, -1);
  if (t != LUA_TSTRING && t != LUA_TNUMBER) luaL_error(L, "spawn: %s must be a string", what);
  lua_pushvalue(L, -1);
  const char *s = lua_tostring(L, -1);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  lua_pop(L, 1);
  return s;
}

static const char *opt_field(lua_State *L, int anchor, const char *field) {
  if (lua_getfield(L, 1, field) == LUA_TNIL) {
    lua_pop(L, 1);
    return NULL;
  }
  return anchor_str(L, anchor, field);
}

/* Build envp from spec.env (+ environ if env_inherit); NULL = inherit. */
static char **build_env(lua_State *L, int anchor) {
  if (lua_getfield(L, 1, "env") == LUA_TNIL) {
    lua_pop(L, 1);
    return environ;
  }
  luaL_argcheck(L, lua_istable(L, -1), 1, "field 'env' must be a table");
  int env = lua_gettop(L);
  lua_getfield(L, 1, "env_inherit");
  int inherit = lua_toboolean(L, -1);
  lua_pop(L, 1);
  lua_newtable(L);
  int merged = lua_gettop(L);
  for (char **e = inherit ? environ : NULL; e && *e; e++) {
    const char *eq = strchr(*e, '=');
    if (!eq) continue;
    lua_pushlstring(L, *e, (size_t)(eq - *e));
    lua_pushstring(L, eq + 1);
    lua_rawset(L, merged);
  }
  lua_pushnil(L);
  while (lua_next(L, env)) {
    if (lua_type(L, -2) != LUA_TSTRING) luaL_error(L, "spawn: env keys must be strings");
    const char *k = lua_tostring(L, -2);
    if (!*k || strchr(k, '=')) luaL_error(L, "spawn: bad env name '%s'", k);
    int t = lua_type(L, -1);
    if (t == LUA_TBOOLEAN && !lua_toboolean(L, -1)) {
      lua_pushnil(L); /* false unsets an inherited variable */
    } else if (t == LUA_TSTRING || t == LUA_TNUMBER) {
      lua_pushstring(L, lua_tostring(L, -1));
    } else {
      luaL_error(L, "spawn: env value for '%s' must be a string", k);
    }
    lua_pushvalue(L, -3);
    lua_insert(L, -2);
    lua_rawset(L, merged);
    lua_pop(L, 1);
  }
  size_t n = 0;
  lua_pushnil(L);
  while (lua_next(L, merged)) {
    n++;
    lua_pop(L, 1);
  }
  char **envp = lua_newuserdatauv(L, (n + 1) * sizeof *envp, 0);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  size_t i = 0;
  lua_pushnil(L);
  while (lua_next(L, merged)) {
    lua_pushfstring(L, "%s=%s", lua_tostring(L, -2), lua_tostring(L, -1));
    envp[i++] = (char *)anchor_str(L, anchor, "env");
    lua_pop(L, 1);
  }
  envp[i] = NULL;
  lua_settop(L, env - 1);
  return envp;
}

/* Open path as a CLOEXEC fd numbered >= 3 (so the dup2s onto 0..2 never clash). */
static int open_high(const char *path, int flags) {
  int fd = open(path, flags | O_CLOEXEC, 0644);
  if (fd < 0 || fd >= 3) return fd;
  int hi = fcntl(fd, F_DUPFD_CLOEXEC, 3);
  int e = errno;
  close(fd);
  errno = e;
  return hi;
}

static void close_from(int lo, int keep) {
  int ok = keep <= lo || close_range((unsigned)lo, (unsigned)keep - 1, 0) == 0;
  if (ok && close_range((unsigned)keep + 1, ~0U, 0) == 0) return;
  struct rlimit rl;
  long max = getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY ? (long)rl.rlim_cur : 65536;
  if (max > 65536) max = 65536;
  for (long fd = lo; fd < max; fd++)
    if (fd != keep) close((int)fd);
}

/* In the forked child: only async-signal-safe calls. Never returns. */
static void child(int errfd, const int fds[3], const char *cwd, int new_session,
                  const char *path, char **argv, char **envp) {
  struct spawn_err e = {ST_DUP, 0};
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = SIG_DFL;
  for (int s = 1; s < NSIG; s++) sigaction(s, &sa, NULL); /* undo SIG_IGN */
  sigset_t none;
  sigemptyset(&none);
  sigprocmask(SIG_SETMASK, &none, NULL);
  if (new_session && setsid() < 0) {
    e.stage = ST_SETSID;
    goto out;
  }
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0 && dup2(fds[i], i) < 0) goto out;
  close_from(3, errfd); /* errfd itself is CLOEXEC */
  if (cwd && chdir(cwd) < 0) {
    e.stage = ST_CHDIR;
    goto out;
  }
  e.stage = ST_EXEC;
  if (strchr(path, '/'))
    execve(path, argv, envp);
  else
    execvpe(path, argv, envp);
out:
  e.err = errno;
  ssize_t w = write(errfd, &e, sizeof e);
  (void)w;
  _exit(127);
}

static int l_spawn(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_settop(L, 1);
  luaL_checkstack(L, 40, "spawn");
  lua_newtable(L); /* 2: anchor for every string/array we hand to the child */
  int anchor = 2;

  if (lua_getfield(L, 1, "argv") != LUA_TTABLE) luaL_error(L, "spawn: field 'argv' must be a table");
  lua_Integer argc = luaL_len(L, -1);
  if (argc < 1) luaL_error(L, "spawn: argv must not be empty");
  char **argv = lua_newuserdatauv(L, ((size_t)argc + 1) * sizeof *argv, 0);
  lua_rawseti(L, anchor, (lua_Integer)lua_rawlen(L, anchor) + 1);
  for (lua_Integer i = 1; i <= argc; i++) {
    lua_geti(L, -1, i);
    argv[i - 1] = (char *)anchor_str(L, anchor, "argv element");
  }
  argv[argc] = NULL;
  lua_pop(L, 1);

  char **envp = build_env(L, anchor);
  const char *cwd = opt_field(L, anchor, "cwd");
  const char *paths[3] = {opt_field(L, anchor, "stdin"), opt_field(L, anchor, "stdout"),
                          opt_field(L, anchor, "stderr")};
  lua_getfield(L, 1, "setsid");
  int new_session = lua_toboolean(L, -1);
  lua_pop(L, 1);

  int fds[3] = {-1, -1, -1}, errpipe[2] = {-1, -1}, nret;
  for (int i = 0; i < 3; i++) {
    const char *p = i == 0 ? (paths[0] ? paths[0] : "/dev/null") : paths[i];
    if (!p) continue;
    fds[i] = open_high(p, i == 0 ? O_RDONLY : O_WRONLY | O_CREAT | O_APPEND);
    if (fds[i] < 0) {
      nret = fail(L, "open", p);
      goto done;
    }
  }
  if (pipe2(errpipe, O_CLOEXEC) < 0) {
    nret = fail(L, "pipe", NULL);
    goto done;
  }
  pid_t pid = fork();
  if (pid < 0) {
    nret = fail(L, "fork", NULL);
    goto done;
  }
  if (pid == 0) child(errpipe[1], fds, cwd, new_session, argv[0], argv, envp);
  close(errpipe[1]);
  errpipe[1] = -1;
  struct spawn_err e;
  ssize_t n;
  do n = read(errpipe[0], &e, sizeof e);
  while (n < 0 && errno == EINTR);
  if (n == (ssize_t)sizeof e) { /* the child failed before/at exec */
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
    errno = e.err;
    static const char *const stage[] = {"exec", "chdir", "setsid", "dup2"};
    nret = fail(L, stage[e.stage & 3], e.stage == ST_EXEC ? argv[0] : e.stage == ST_CHDIR ? cwd : NULL);
  } else {
    lua_pushinteger(L, pid);
    nret = 1;
  }
done:
  for (int i = 0; i < 3; i++)
    if (fds[i] >= 0) close(fds[i]);
  for (int i = 0; i < 2; i++)
    if (errpipe[i] >= 0) close(errpipe[i]);
  return nret;
}

/* --- signals and waiting ------------------------------------------------- */

static int l_kill(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  int sig = check_signal(L, 2);
  if (kill(pid, sig) < 0) return fail(L, "kill", lua_tostring(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_killpg(lua_State *L) {
  pid_t pgid = check_pid(L, 1);
  luaL_argcheck(L, pgid > 1, 1, "refusing to signal process group 1");
  int sig = check_signal(L, 2);
  if (killpg(pgid, sig) < 0) return fail(L, "killpg", lua_tostring(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_wait(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  double deadline = mono_ms() + luaL_optnumber(L, 2, 0);
  for (;;) {
    int st;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == pid) {
      lua_pushstring(L, WIFSIGNALED(st) ? "signaled" : "exited");
      lua_pushinteger(L, WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
      return 2;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) {
      int e = errno;
      lua_pushnil(L);
      lua_pushfstring(L, "%swaitpid %d: %s", e == ECHILD ? "ECHILD: " : "", (int)pid, strerror(e));
      return 2;
    }
    double left = deadline - mono_ms();
    if (left <= 0) {
      lua_pushnil(L);
      lua_pushliteral(L, "timeout");
      return 2;
    }
    sleep_ms(left < 5 ? left : 5);
  }
}

static int l_alive(lua_State *L) {
  lua_pushboolean(L, is_alive(check_pid(L, 1)));
  return 1;
}

static int l_wait_gone(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  double deadline = mono_ms() + luaL_optnumber(L, 2, 0);
  for (;;) {
    while (waitpid(pid, NULL, WNOHANG) < 0 && errno == EINTR) {
    }
    if (!is_alive(pid)) {
      lua_pushboolean(L, 1);
      return 1;
    }
    double left = deadline - mono_ms();
    if (left <= 0) {
      lua_pushboolean(L, 0);
      return 1;
    }
    sleep_ms(left < 5 ? left : 5);
  }
}

static int l_reap(lua_State *L) {
  lua_Integer count = 0;
  for (;;) {
    pid_t r = waitpid(-1, NULL, WNOHANG);
    if (r > 0)
      count++;
    else if (!(r < 0 && errno == EINTR))
      break;
  }
  lua_pushinteger(L, count);
  return 1;
}

static int set_disposition(lua_State *L, void (*handler)(int)) {
  int sig = check_signal(L, 1);
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = handler;
  if (sigaction(sig, &sa, NULL) < 0) return fail(L, "sigaction", lua_tostring(L, 1));
  lua_pushboolean(L, 1);
  return 1;
}

static int l_signal_ignore(lua_State *L) { return set_disposition(L, SIG_IGN); }
static int l_signal_default(lua_State *L) { return set_disposition(L, SIG_DFL); }

static int l_subreaper(lua_State *L) {
  unsigned long on = lua_isnoneornil(L, 1) || lua_toboolean(L, 1);
  if (prctl(PR_SET_CHILD_SUBREAPER, on, 0UL, 0UL, 0UL) < 0) return fail(L, "prctl", "PR_SET_CHILD_SUBREAPER");
  lua_pushboolean(L, 1);
  return 1;
}

/* --- /proc --------------------------------------------------------------- */

static int l_rss_kb(lua_State *L) {
  pid_t pid = check_pid(L, 1);
  char path[64], buf[8192];
  snprintf(path, sizeof path, "/proc/%d/status", (int)pid);
  if (read_small(path, buf, sizeof buf) < 0) return fail(L, "read", path);
  const char *p = strstr(buf, "\nVmRSS:");
  if (!p) {
    lua_pushnil(L);
    lua_pushfstring(L, "rss_kb %d: no VmRSS in %s", (int)pid, path);
    return 2;
  }
  lua_pushinteger(L, strtoll(p + 7, NULL, 10));
  return 1;
}

static int l_ppid(lua_State *L) {
  pid_t pid = check_pid(L, 1), pp;
  char path[64];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  if (proc_stat(pid, NULL, &pp) < 0) return fail(L, "read", path);
  lua_pushinteger(L, pp);
  return 1;
}

static int l_pgid(lua_State *L) {
  pid_t g = getpgid(check_pid(L, 1));
  if (g < 0) return fail(L, "getpgid", lua_tostring(L, 1));
  lua_pushinteger(L, g);
  return 1;
}

struct pp { pid_t pid, ppid; };

/* Snapshot of every (pid, ppid) in /proc; malloc'd, NULL + errno on error. */
static struct pp *scan_proc(size_t *count) {
  DIR *d = opendir("/proc");
  if (!d) return NULL;
  struct pp *v = NULL;
  size_t n = 0, cap = 0;
  struct dirent *de;
  while ((de = readdir(d))) {
    char *end;
    long pid = strtol(de->d_name, &end, 10);
    pid_t pp;
    if (*end || pid <= 0 || proc_stat((pid_t)pid, NULL, &pp) < 0) continue;
    if (n == cap) {
      cap = cap ? cap * 2 : 256;
      struct pp *nv = realloc(v, cap * sizeof *v);
      if (!nv) {
        free(v);
        closedir(d);
        errno = ENOMEM;
        return NULL;
      }
      v = nv;
    }
    v[n].pid = (pid_t)pid;
    v[n++].ppid = pp;
  }
  closedir(d);
  *count = n;
  return v ? v : malloc(sizeof *v);
}

/* children(pid) when `recursive` is 0, descendants(pid) (breadth-first) otherwise. */
static int list_children(lua_State *L, int recursive) {
  pid_t root = check_pid(L, 1);
  size_t n = 0;
  struct pp *v = scan_proc(&n);
  if (!v) return fail(L, "scan", "/proc");
  pid_t *out = malloc((n + 1) * sizeof *out);
  if (!out) {
    free(v);
    errno = ENOMEM;
    return fail(L, "scan", "/proc");
  }
  size_t nout = 0;
  for (size_t q = 0; q == 0 || (recursive && q <= nout && nout < n); q++) {
    pid_t parent = q == 0 ? root : out[q - 1];
    for (size_t i = 0; i < n && nout < n; i++)
      if (v[i].ppid == parent && v[i].pid != root) out[nout++] = v[i].pid;
  }
  free(v);
  lua_createtable(L, (int)nout, 0);
  for (size_t i = 0; i < nout; i++) {
    lua_pushinteger(L, out[i]);
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  free(out);
  return 1;
}

static int l_children(lua_State *L) { return list_children(L, 0); }
static int l_descendants(lua_State *L) { return list_children(L, 1); }

/* --- misc ------------------------------------------------------------------ */

static int l_sleep(lua_State *L) {
  lua_Number ms = luaL_checknumber(L, 1);
  luaL_argcheck(L, ms >= 0, 1, "negative duration");
  sleep_ms(ms);
  return 0;
}

static int l_now_ms(lua_State *L) {
  lua_pushnumber(L, mono_ms());
  return 1;
}

static int l_getpid(lua_State *L) {
  lua_pushinteger(L, getpid());
  return 1;
}

static int l_getuid(lua_State *L) {
  lua_pushinteger(L, getuid());
  return 1;
}

static int l_free_port(lua_State *L) {
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(L, "socket", NULL);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof sa;
  if (bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || getsockname(fd, (struct sockaddr *)&sa, &len) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return fail(L, "bind", "127.0.0.1:0");
  }
  close(fd);
  lua_pushinteger(L, ntohs(sa.sin_port));
  return 1;
}

/* exchange(port, bytes [, timeout_ms]) -> received, how: sends the bytes
 * to 127.0.0.1:port and reads until the peer is done; how is "eof" (a
 * clean close), "reset" (the kernel got a RST: LuaSocket reports that as
 * "closed" too, so specs that must tell them apart use this) or "timeout". */
static int l_exchange(lua_State *L) {
  int port = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *bytes = luaL_checklstring(L, 2, &len);
  int timeout_ms = (int)luaL_optinteger(L, 3, 5000);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(L, "socket", NULL);
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0) {
    int e = errno;
    close(fd);
    errno = e;
    return fail(L, "connect", NULL);
  }
  struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  const char *how = "eof";
  size_t sent = 0;
  while (sent < len) {
    ssize_t n = send(fd, bytes + sent, len - sent, MSG_NOSIGNAL);
    if (n <= 0) break; /* the peer closed: what it answered is still read */
    sent += (size_t)n;
  }
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char chunk[4096];
    ssize_t n = recv(fd, chunk, sizeof chunk, 0);
    if (n > 0) {
      luaL_addlstring(&b, chunk, (size_t)n);
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) how = errno == ECONNRESET ? "reset" : (errno == EAGAIN || errno == EWOULDBLOCK) ? "timeout" : "error";
    break;
  }
  close(fd);
  luaL_pushresult(&b);
  lua_pushstring(L, how);
  return 2;
}

/* hold(port, bytes [, rcvbuf]) -> fd: a client that sends the bytes and then
 * reads nothing, with a small receive buffer so that what the server
 * cannot send piles up in the server rather than in the kernel. Close it
 * with release(fd). */
static int l_hold(lua_State *L) {
  int port = (int)luaL_checkinteger(L, 1);
  size_t len;
  const char *bytes = luaL_checklstring(L, 2, &len);
  int rcvbuf = (int)luaL_optinteger(L, 3, 4096);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return fail(L, "socket", NULL);
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf); /* before connect: sets the window */
  struct sockaddr_in sa;
  memset(&sa, 0, sizeof sa);
  sa.sin_family = AF_INET;
  sa.sin_port = htons((uint16_t)port);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0 || send(fd, bytes, len, MSG_NOSIGNAL) != (ssize_t)len) {
    int e = errno;
    close(fd);
    errno = e;
    return fail(L, "connect/send", NULL);
  }
  lua_pushinteger(L, fd);
  return 1;
}

static int l_release(lua_State *L) {
  close((int)luaL_checkinteger(L, 1));
  return 0;
}

/* --- files and temp dirs ------------------------------------------------- */

/* $TMPDIR (if absolute) or /tmp, without trailing slashes. */
static const char *tmp_root(char *buf, size_t cap) {
  const char *t = getenv("TMPDIR");
  if (!t || t[0] != '/' || strlen(t) >= cap) t = "/tmp";
  strcpy(buf, t);
  size_t n = strlen(buf);
  while (n > 0 && buf[n - 1] == '/') buf[--n] = '\0';
  if (n == 0) strcpy(buf, "/tmp");
  return buf;
}

static int l_mkdtemp(lua_State *L) {
  const char *prefix = luaL_optstring(L, 1, "tentest-");
  luaL_argcheck(L, !strchr(prefix, '/'), 1, "prefix must not contain '/'");
  char root[PATH_MAX], path[PATH_MAX];
  int n = snprintf(path, sizeof path, "%s/%sXXXXXX", tmp_root(root, sizeof root), prefix);
  luaL_argcheck(L, n > 0 && (size_t)n < sizeof path, 1, "prefix too long");
  if (!mkdtemp(path)) return fail(L, "mkdtemp", path);
  lua_pushstring(L, path);
  return 1;
}

/* Is `path` (canonical or lexical) strictly below / equal to `root`? */
static int under(const char *path, const char *root, int allow_equal) {
  size_t n = strlen(root);
  if (strncmp(path, root, n) != 0) return 0;
  return path[n] == '\0' ? allow_equal : path[n] == '/' && path[n + 1] != '\0';
}

static int under_tmp(const char *path, int canonical, int allow_equal) {
  char root[PATH_MAX], real[PATH_MAX];
  const char *roots[2] = {"/tmp", tmp_root(root, sizeof root)};
  for (int i = 0; i < 2; i++) {
    const char *r = roots[i];
    if (canonical) {
      if (!realpath(roots[i], real)) continue;
      r = real;
    }
    if (under(path, r, allow_equal)) return 1;
  }
  return 0;
}

static int rm_errno;
static char rm_errpath[PATH_MAX];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)ftw;
  int r = (flag == FTW_DP || flag == FTW_D || flag == FTW_DNR) ? rmdir(p) : unlink(p);
  if (r < 0 && errno != ENOENT && !rm_errno) {
    rm_errno = errno;
    snprintf(rm_errpath, sizeof rm_errpath, "%s", p);
  }
  return 0; /* keep going: remove as much as possible */
}

static int refuse(lua_State *L, const char *path, const char *why) {
  lua_pushnil(L);
  lua_pushfstring(L, "rm_rf: refusing '%s': %s", path, why);
  return 2;
}

static int l_rm_rf(lua_State *L) {
  size_t len;
  const char *arg = luaL_checklstring(L, 1, &len);
  char path[PATH_MAX], parent[PATH_MAX];
  if (len == 0) return refuse(L, arg, "empty path");
  if (arg[0] != '/') return refuse(L, arg, "not absolute");
  if (len >= sizeof path || strlen(arg) != len) return refuse(L, arg, "bad path");
  memcpy(path, arg, len + 1);
  while (len > 1 && path[len - 1] == '/') path[--len] = '\0';
  for (const char *c = path + 1; *c;) { /* no "", "." or ".." components */
    size_t cl = strcspn(c, "/");
    if (cl == 0 || (cl == 1 && c[0] == '.') || (cl == 2 && c[0] == '.' && c[1] == '.'))
      return refuse(L, arg, "empty, '.' or '..' component");
    c += cl + (c[cl] == '/');
  }
  if (!under_tmp(path, 0, 0)) return refuse(L, arg, "not below /tmp or $TMPDIR");
  memcpy(parent, path, len + 1);
  *strrchr(parent, '/') = '\0';
  char real[PATH_MAX];
  if (!realpath(parent, real)) {
    if (errno == ENOENT) goto gone;
    return fail(L, "realpath", parent);
  }
  if (!under_tmp(real, 1, 1)) return refuse(L, arg, "parent resolves outside the temp dir");
  struct stat sb;
  if (lstat(path, &sb) < 0) {
    if (errno == ENOENT) goto gone;
    return fail(L, "lstat", path);
  }
  rm_errno = 0;
  if (nftw(path, rm_one, 32, FTW_DEPTH | FTW_PHYS | FTW_MOUNT) < 0 && !rm_errno) return fail(L, "nftw", path);
  if (rm_errno) {
    errno = rm_errno;
    return fail(L, "rm_rf", rm_errpath);
  }
gone:
  lua_pushboolean(L, 1);
  return 1;
}

static int l_write_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  size_t len;
  const char *data = luaL_checklstring(L, 2, &len);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)luaL_optinteger(L, 3, 0644));
  if (fd < 0) return fail(L, "open", path);
  for (size_t off = 0; off < len;) {
    ssize_t n = write(fd, data + off, len - off);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return fail(L, "write", path);
    }
    off += (size_t)n;
  }
  if (close(fd) < 0) return fail(L, "close", path);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_read_file(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return fail(L, "open", path);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  for (;;) {
    char *p = luaL_prepbuffer(&b);
    ssize_t n = read(fd, p, LUAL_BUFFERSIZE);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      int e = errno;
      close(fd);
      errno = e;
      return fail(L, "read", path);
    }
    if (n == 0) break;
    luaL_addsize(&b, (size_t)n);
  }
  close(fd);
  luaL_pushresult(&b);
  return 1;
}

static int l_chmod(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  lua_Integer mode;
  if (lua_type(L, 2) == LUA_TSTRING) { /* "0755": Lua has no octal literals */
    char *end;
    mode = strtol(lua_tostring(L, 2), &end, 8);
    luaL_argcheck(L, *end == '\0', 2, "bad octal mode");
  } else {
    mode = luaL_checkinteger(L, 2);
  }
  luaL_argcheck(L, mode >= 0 && mode <= 07777, 2, "mode out of range");
  if (chmod(path, (mode_t)mode) < 0) return fail(L, "chmod", path);
  lua_pushboolean(L, 1);
  return 1;
}

static int l_stat(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  struct stat sb;
  if (lstat(path, &sb) < 0) return fail(L, "lstat", path);
  lua_createtable(L, 0, 6);
  lua_pushinteger(L, sb.st_mode & 07777);
  lua_setfield(L, -2, "mode");
  lua_pushinteger(L, (lua_Integer)sb.st_size);
  lua_setfield(L, -2, "size");
  lua_pushstring(L, S_ISREG(sb.st_mode) ? "file" : S_ISDIR(sb.st_mode) ? "dir" : S_ISSOCK(sb.st_mode) ? "socket"
                                                 : S_ISLNK(sb.st_mode) ? "link" : "other");
  lua_setfield(L, -2, "type");
  lua_pushinteger(L, sb.st_uid);
  lua_setfield(L, -2, "uid");
  lua_pushinteger(L, sb.st_gid);
  lua_setfield(L, -2, "gid");
  lua_pushinteger(L, (lua_Integer)sb.st_mtime);
  lua_setfield(L, -2, "mtime");
  return 1;
}

static const luaL_Reg funcs[] = {
  {"spawn", l_spawn},         {"kill", l_kill},
  {"killpg", l_killpg},       {"wait", l_wait},
  {"alive", l_alive},         {"wait_gone", l_wait_gone},
  {"reap", l_reap},           {"signal_ignore", l_signal_ignore},
  {"signal_default", l_signal_default}, {"subreaper", l_subreaper},
  {"rss_kb", l_rss_kb},       {"ppid", l_ppid},
  {"pgid", l_pgid},           {"children", l_children},
  {"descendants", l_descendants}, {"sleep", l_sleep},
  {"now_ms", l_now_ms},       {"getpid", l_getpid},
  {"getuid", l_getuid},       {"free_port", l_free_port},
  {"exchange", l_exchange},  {"hold", l_hold},
  {"release", l_release},
  {"mkdtemp", l_mkdtemp},     {"rm_rf", l_rm_rf},
  {"write_file", l_write_file}, {"read_file", l_read_file},
  {"chmod", l_chmod},         {"stat", l_stat},
  {NULL, NULL}};

int luaopen_tentest(lua_State *L) {
  luaL_newlib(L, funcs);
  lua_newtable(L); /* tentest.signals: name -> number */
  for (int i = 0; signames[i].name; i++) {
    lua_pushinteger(L, signames[i].sig);
    lua_setfield(L, -2, signames[i].name);
  }
  lua_setfield(L, -2, "signals");
  return 1;
}
