/* logfile.h: where an instance's stdout and stderr go for now:
 * {logs_dir}/{service}-{id}.log, appended to across restarts. (The SQLite
 * log pipeline replaces this; its interface is the same pair of fds.)
 */
#ifndef TEN_OBS_LOGFILE_H
#define TEN_OBS_LOGFILE_H

#include "util/common.h"

/* Opens (creating logs_dir if needed) the log of service:id for appending.
 * Returns an fd (O_CLOEXEC) or a negative errno. */
int ten_logfile_open(const char *logs_dir, const char *service, const char *id);

#endif
