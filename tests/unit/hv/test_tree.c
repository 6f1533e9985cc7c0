/* test_tree.c: finding and killing an instance's process tree (tree.c)
 * with real processes: the whole tree goes, wherever its members went
 * (another session, re-parented to us), and nothing that is not its own:
 * not another tree, not a process without its run id, not the leftovers of
 * another data dir.
 */
#include "hv/tree.h"
#include "test.h"
#include "util/time.h"

#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

static char dir[] = "/tmp/ten-unit-tree-XXXXXX";

static bool wait_file(const char *path) {
  uint64_t deadline = ten_now_ms() + 5000;
  while (access(path, F_OK) != 0 && ten_now_ms() < deadline) usleep(2000);
  return access(path, F_OK) == 0;
}

/* Runs `script` under sh in a process group of its own, with TENEMENT_RUN
 * set to run_id (none if NULL) and $D naming a file; it ends as `sleep`.
 * Returns once it has run the script and each of its `helpers` has
 * touched $D.1, $D.2, ... (so they are set up: a new session, say). */
static pid_t start(const char *name, const char *run_id, int helpers, const char *script) {
  char ready[128], env_run[128], env_d[160], cmd[512];
  snprintf(ready, sizeof ready, "%s/%s", dir, name);
  snprintf(env_run, sizeof env_run, "%s=%s", TEN_RUN_VAR, run_id ? run_id : "");
  snprintf(env_d, sizeof env_d, "D=%s", ready);
  snprintf(cmd, sizeof cmd, "%s; touch \"$D\"; exec sleep 300", script);
  pid_t pid = fork();
  if (pid == 0) {
    setpgid(0, 0);
    char *envp[] = {"PATH=/usr/bin:/bin", env_d, run_id ? env_run : NULL, NULL};
    execle("/bin/sh", "sh", "-c", cmd, (char *)NULL, envp);
    _exit(127);
  }
  CHECK(wait_file(ready));
  for (int i = 1; i <= helpers; i++) {
    char helper[160];
    snprintf(helper, sizeof helper, "%s.%d", ready, i);
    CHECK(wait_file(helper));
  }
  return pid;
}

/* A helper that leaves the group for a session of its own, as sleep. */
#define SESSION_HELPER(n) "setsid sh -c 'touch \"$D." #n "\"; exec sleep 300' &"
/* The same, in a subshell that exits: the helper is re-parented to us. */
#define ADOPTED_HELPER(n) "(" SESSION_HELPER(n) ")"

static bool alive(pid_t pid) {
  char path[64], buf[512];
  snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
  FILE *f = fopen(path, "r");
  if (!f) return false;
  size_t n = fread(buf, 1, sizeof buf - 1, f);
  fclose(f);
  buf[n] = '\0';
  const char *p = strrchr(buf, ')');
  return p && p[1] == ' ' && p[2] != 'Z' && p[2] != 'X';
}

/* Reaps whatever of ours has exited (children and adopted ones). */
static void reap(void) {
  while (waitpid(-1, NULL, WNOHANG) > 0) {
  }
}

/* Every process in the list ends within a second. */
static bool all_gone(const pid_t *pids, size_t n) {
  uint64_t deadline = ten_now_ms() + 1000;
  for (;;) {
    reap();
    bool any = false;
    for (size_t i = 0; i < n; i++) any = any || alive(pids[i]);
    if (!any) return true;
    if (ten_now_ms() > deadline) return false;
    usleep(5000);
  }
}

/* Every process whose TENEMENT_RUN is run_id, among our descendants. */
static size_t find_run(const char *run_id, pid_t *out, size_t cap, bool *settled) {
  size_t n = 0, count = 0;
  pid_t *mine = ten__tree_children(getpid(), &count);
  pid_t queue[64];
  size_t q = 0;
  for (size_t i = 0; i < count && q < 64; i++) queue[q++] = mine[i];
  free(mine);
  *settled = true;
  for (size_t i = 0; i < q; i++) {
    char id[64], path[64];
    if (ten__tree_run_id(queue[i], id, sizeof id) && !strcmp(id, run_id) && n < cap) {
      out[n++] = queue[i];
      /* Settled: every member has become the sleep it ends as. */
      snprintf(path, sizeof path, "/proc/%d/cmdline", (int)queue[i]);
      FILE *f = fopen(path, "r");
      char cmd[16] = "";
      if (f) {
        size_t len = fread(cmd, 1, sizeof cmd - 1, f);
        cmd[len] = '\0';
        fclose(f);
      }
      if (strcmp(cmd, "sleep") != 0) *settled = false;
    }
    pid_t *kids = ten__tree_children(queue[i], &count);
    for (size_t k = 0; k < count && q < 64; k++) queue[q++] = kids[k];
    free(kids);
  }
  return n;
}

/* Waits until run_id's tree has `want` members, all settled. */
static size_t settled_tree(const char *run_id, pid_t *out, size_t cap, size_t want) {
  uint64_t deadline = ten_now_ms() + 5000;
  bool settled = false;
  size_t n = 0;
  while (((n = find_run(run_id, out, cap, &settled)) != want || !settled) &&
         ten_now_ms() < deadline)
    usleep(2000);
  return settled ? n : 0;
}

static bool leader_is(void *ctx, pid_t pid) { return pid == *(pid_t *)ctx; }

TEST(children) {
  pid_t a = start("children-a", NULL, 0, "true"), b = start("children-b", NULL, 0, "true");
  size_t count = 0;
  pid_t *kids = ten__tree_children(getpid(), &count);
  int found = 0;
  for (size_t i = 0; i < count; i++) found += kids[i] == a || kids[i] == b;
  free(kids);
  CHECK_EQ(found, 2);
  kill(a, SIGKILL);
  kill(b, SIGKILL);
  pid_t both[] = {a, b};
  CHECK(all_gone(both, 2));
}

/* A tree with a helper in its own session (still a descendant) and one
 * re-parented to us (its parent exited): SIGKILL of the tree ends all of
 * them, and neither the other tree nor the process without a run id. */
TEST(signal_tree) {
  pid_t other = start("other", "t1-1-2", 0, "true");
  pid_t plain = start("plain", NULL, 0, "true");
  pid_t leader = start("tree", "t1-1-1", 2, SESSION_HELPER(1) ADOPTED_HELPER(2));
  pid_t members[16];
  /* the leader, its session-leaving child, the adopted one */
  size_t n = settled_tree("t1-1-1", members, 16, 3);
  CHECK_EQ(n, 3);

  /* SIGTERM first: sleep dies of it, as apps do; the helpers outside the
   * group are counted. */
  CHECK_EQ(ten__tree_signal(leader, "t1-1-1", leader_is, &leader, SIGTERM), 2);
  CHECK(all_gone(members, n));
  CHECK(alive(other));
  CHECK(alive(plain));

  /* SIGKILL of a tree whose leader is a zombie (as when its exit is seen):
   * the adopted member still goes. */
  pid_t leader2 = start("tree2", "t1-1-3", 1, ADOPTED_HELPER(1));
  n = settled_tree("t1-1-3", members, 16, 2);
  CHECK_EQ(n, 2);
  kill(leader2, SIGKILL);
  siginfo_t info = {0};
  CHECK_EQ(waitid(P_PID, (id_t)leader2, &info, WEXITED | WNOWAIT), 0); /* a zombie, not reaped */
  CHECK_EQ(ten__tree_signal(leader2, "t1-1-3", leader_is, &leader2, SIGKILL), 1);
  CHECK(all_gone(members, n));
  CHECK(alive(other));

  kill(other, SIGKILL);
  kill(plain, SIGKILL);
  pid_t rest[] = {other, plain};
  CHECK(all_gone(rest, 2));
}

/* Leftovers: only processes whose run id starts with this data dir's
 * prefix are killed, and the count says so. */
TEST(kill_leftovers) {
  /* Prefixes of this test run alone: the scan looks at every process. */
  char prefix[32], mine_id[48], other_id[48];
  snprintf(prefix, sizeof prefix, "test%d-", (int)getpid());
  snprintf(mine_id, sizeof mine_id, "%s1-1", prefix);
  snprintf(other_id, sizeof other_id, "test%dx-1-1", (int)getpid());
  pid_t mine = start("left-mine", mine_id, 0, "true");
  pid_t other_dir = start("left-other", other_id, 0, "true");
  pid_t plain = start("left-plain", NULL, 0, "true");
  CHECK_EQ(ten__tree_kill_leftovers(prefix, 2000), 1);
  pid_t gone[] = {mine};
  CHECK(all_gone(gone, 1));
  CHECK(alive(other_dir));
  CHECK(alive(plain));
  CHECK_EQ(ten__tree_kill_leftovers(prefix, 2000), 0); /* nothing left: nothing to do */
  kill(other_dir, SIGKILL);
  kill(plain, SIGKILL);
  pid_t rest[] = {other_dir, plain};
  CHECK(all_gone(rest, 2));
}

int main(void) {
  if (!mkdtemp(dir)) {
    CHECK(!"no temp dir");
    return test_report();
  }
  /* As ten is: what an instance's tree leaves when a parent exits comes here. */
  CHECK_EQ(prctl(PR_SET_CHILD_SUBREAPER, 1UL, 0UL, 0UL, 0UL), 0);
  RUN(children);
  RUN(signal_tree);
  RUN(kill_leftovers);
  /* Whatever a failed check left: end it, so no process outlives the test. */
  size_t count = 0;
  pid_t *kids = ten__tree_children(getpid(), &count);
  for (size_t i = 0; i < count; i++) ten__tree_signal_adopted(kids[i], SIGKILL);
  free(kids);
  CHECK_EQ(count, 0);
  while (waitpid(-1, NULL, 0) > 0) {
  }
  CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
