/* spawn.h: starting one instance process with our own vfork + exec.
 *
 * The child gets its own process group (so a stop signals the whole tree),
 * PR_SET_PDEATHSIG so it dies with `ten` even after `kill -9`, the working
 * directory and environment it was given, stdin from /dev/null, stdout and
 * stderr on the given fds, default signal dispositions, and no other fds.
 * The parent gets a pidfd to watch the exit on the loop. Between fork and
 * exec only async-signal-safe calls are made: everything is prepared first.
 */
#ifndef TEN_HV_SPAWN_H
#define TEN_HV_SPAWN_H

#include "util/common.h"

#include <sys/types.h>

typedef struct ten_spawn_opts {
  const char *command;   /* plain words are exec'd directly (PATH searched);
                            anything else runs under /bin/sh -c */
  const char *directory; /* working directory */
  char **envp;           /* NULL-terminated "NAME=value" array */
  int stdout_fd;         /* -1: /dev/null */
  int stderr_fd;         /* -1: /dev/null */
  int listen_fd;         /* -1, or a listening socket passed as fd 3 with
                            LISTEN_FDS=1 and LISTEN_PID (socket activation) */
} ten_spawn_opts_t;

typedef struct ten_spawned {
  pid_t pid;
  int pidfd; /* owned by the caller: poll it for the exit, close it after reaping */
} ten_spawned_t;

/* 0, or a negative errno with err saying what failed (chdir, exec, ...). */
int ten_spawn(const ten_spawn_opts_t *opts, ten_spawned_t *out, ten_err_t *err);

/* Builds the environment for a child: ten's own environment without the
 * variables that describe ten's own activation, then `extra` (NAME=value
 * strings, later ones win). Free with ten_spawn_env_free. */
char **ten_spawn_env_build(char *const *extra, size_t extra_count);
void ten_spawn_env_free(char **envp);

#endif
