/* tree.h: the processes of an instance's tree, found through /proc.
 *
 * Without cgroups (issue 9 adds them; with them a cgroup is the tree), an
 * instance's tree is: the process group its leader leads; the leader's
 * descendants that left that group (setsid); and the processes `ten`
 * adopted as child subreaper (their parent exited) whose environment
 * carries the instance's run id, TENEMENT_RUN, with their descendants.
 * A process that clears its environment and leaves the group after its
 * parent died is not found here: only a cgroup holds on to it.
 *
 * Never a process that is not ours: a pid is only signalled through a
 * pidfd opened before it was checked (its parent, or its run id), so a
 * pid reused in between is never hit. Loop thread; each call reads a few
 * small /proc files per process of the tree.
 */
#ifndef TEN_HV_TREE_H
#define TEN_HV_TREE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/* The variable every process of an instance inherits: its run id,
 * "<data dir hash>-<ten's pid>-<sequence>" (see proc.c). */
#define TEN_RUN_VAR "TENEMENT_RUN"

/* Is pid tracked (a leader watched by a pidfd)? Its own tree is not ours
 * to signal. */
typedef bool (*ten_tree_tracked_fn)(void *ctx, pid_t pid);

/* Sends sig to the tree of `leader`, which must not be reaped yet (until
 * then its pid names its group and cannot be reused), and whose run id is
 * `run_id`. Adopted children for which tracked() says yes are skipped.
 * Returns how many processes outside the leader's group were signalled. */
int ten__tree_signal(pid_t leader, const char *run_id, ten_tree_tracked_fn tracked, void *ctx,
                     int sig);

/* Sends sig to pid, a child of this process, and to all its descendants. */
int ten__tree_signal_adopted(pid_t pid, int sig);

/* The children of pid (of all its threads). malloc'd; *count set; NULL
 * with *count 0 when it has none or is gone. */
pid_t *ten__tree_children(pid_t pid, size_t *count);

/* The value of TENEMENT_RUN in pid's environment, into out; false if it
 * has none, or pid is gone or not readable (not ours). */
bool ten__tree_run_id(pid_t pid, char *out, size_t len);

/* Start-up: kills (SIGKILL) every process whose run id starts with
 * `prefix` (an earlier run on the same data dir), except this process and
 * its ancestors, logs each with the instance it belonged to, and waits up
 * to wait_ms for them to exit. Returns how many it killed. */
int ten__tree_kill_leftovers(const char *prefix, int wait_ms);

#endif
