#include "obs/logfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>

int ten_logfile_open(const char *logs_dir, const char *service, const char *id) {
  if (mkdir(logs_dir, 0750) < 0 && errno != EEXIST) return -errno;
  char path[4096];
  int n = snprintf(path, sizeof path, "%s/%s-%s.log", logs_dir, service, id);
  if (n < 0 || (size_t)n >= sizeof path) return -ENAMETOOLONG;
  int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
  return fd < 0 ? -errno : fd;
}
