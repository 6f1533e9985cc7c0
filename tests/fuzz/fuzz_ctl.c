/* fuzz_ctl: the control socket's request decoder (JSON lines). */
#include <stdlib.h>

#include "ctl/ctl.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  ten_json_t *doc = NULL;
  const char *cmd;
  const ten_json_t *args;
  ten_err_t err;
  if (ten_ctl_decode((const char *)data, size, &doc, &cmd, &args, &err) == 0) {
    /* Walk what a command handler would read. */
    (void)ten_json_get_str(args, "service");
    (void)ten_json_get_str(args, "instance");
    bool b;
    (void)ten_json_get_bool(args, "wait", &b);
  }
  ten_json_free(doc);
  return 0;
}
