/* fuzz_config: tenement.lua evaluation and schema validation on arbitrary
 * text. The instruction budget bounds runaway loops; the file never leaves
 * memory. Functions that touch the system (os.execute, io.open) are the
 * operator's to call; inputs that reach them are skipped. */
#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#include "policy/config.h"

/* Does `word` occur as a whole identifier (not inside a longer name)? */
static bool has_word(const uint8_t *data, size_t size, const char *word) {
  size_t n = strlen(word);
  for (size_t i = 0; i + n <= size; i++) {
    if (memcmp(data + i, word, n) != 0) continue;
    bool before = i > 0 && (isalnum(data[i - 1]) || data[i - 1] == '_');
    bool after = i + n < size && (isalnum(data[i + n]) || data[i + n] == '_');
    if (!before && !after) return true;
  }
  return false;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  /* This target is about the loader, not about running arbitrary programs:
   * inputs that reach the os/io libraries, load code, or build huge strings
   * (string.rep is one instruction, so the budget cannot bound it) are skipped. */
  static const char *const banned[] = {"os", "io", "require", "load", "dofile", "loadfile",
                                       "rep", "_G", "_ENV", "package", "debug", "collectgarbage"};
  for (size_t i = 0; i < sizeof banned / sizeof *banned; i++)
    if (has_word(data, size, banned[i])) return 0;
  ten_config_t *c = NULL;
  ten_err_t err;
  ten_config_overrides_t ovr = {NULL, NULL, -1, "/nonexistent/fuzz"};
  if (ten_config_load_source("fuzz.lua", (const char *)data, size, &ovr, &c, &err) == 0) {
    ten_buf_t out = TEN_BUF_INIT;
    ten_config_to_json(c, &out);
    ten_buf_free(&out);
    ten_config_unref(c);
  }
  return 0;
}
