#include "policy/template.h"

#include "util/buf.h"

#include <stdio.h>
#include <string.h>
#include <uv.h>

static const struct {
  const char *name;
  unsigned bit;
} placeholders[] = {
    {"id", TEN_TPL_ID},         {"service", TEN_TPL_SERVICE}, {"data_dir", TEN_TPL_DATA_DIR},
    {"socket", TEN_TPL_SOCKET}, {"port", TEN_TPL_PORT},
};

static unsigned lookup(const char *name, size_t len) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(placeholders); i++)
    if (strlen(placeholders[i].name) == len && memcmp(placeholders[i].name, name, len) == 0)
      return placeholders[i].bit;
  return 0;
}

static void known_list(unsigned allowed, char *out, size_t outlen) {
  out[0] = '\0';
  for (size_t i = 0; i < TEN_ARRAY_SIZE(placeholders); i++) {
    if (!(allowed & placeholders[i].bit)) continue;
    size_t used = strlen(out);
    snprintf(out + used, outlen - used, "%s{%s}", used ? " " : "", placeholders[i].name);
  }
}

int ten_template_check(const char *tpl, unsigned allowed, ten_err_t *err) {
  char known[128];
  for (const char *p = tpl; *p; p++) {
    if (*p == '}') {
      if (p[1] == '}') {
        p++;
        continue;
      }
      return ten_errf(err, UV_EINVAL, "unmatched '}' (write '}}' for a literal brace)");
    }
    if (*p != '{') continue;
    if (p[1] == '{') {
      p++;
      continue;
    }
    const char *close = strchr(p, '}');
    if (!close) return ten_errf(err, UV_EINVAL, "unclosed '{' (write '{{' for a literal brace)");
    size_t len = (size_t)(close - p - 1);
    unsigned bit = lookup(p + 1, len);
    if (!bit || !(allowed & bit)) {
      known_list(allowed, known, sizeof known);
      return ten_errf(err, UV_EINVAL, "%s placeholder {%.*s} (here: %s)",
                      bit ? "unavailable" : "unknown", (int)len, p + 1, known);
    }
    p = close;
  }
  return 0;
}

static const char *value_of(unsigned bit, const ten_template_vars_t *v) {
  switch (bit) {
  case TEN_TPL_ID: return v->id;
  case TEN_TPL_SERVICE: return v->service;
  case TEN_TPL_DATA_DIR: return v->data_dir;
  case TEN_TPL_SOCKET: return v->socket;
  case TEN_TPL_PORT: return v->port;
  }
  return NULL;
}

char *ten_template_expand(const char *tpl, const ten_template_vars_t *vars) {
  ten_buf_t out = TEN_BUF_INIT;
  ten_buf_reserve(&out, strlen(tpl) + 64);
  for (const char *p = tpl; *p; p++) {
    if ((*p == '{' && p[1] == '{') || (*p == '}' && p[1] == '}')) {
      ten_buf_putc(&out, *p++);
      continue;
    }
    const char *close = *p == '{' ? strchr(p, '}') : NULL;
    const char *value = close ? value_of(lookup(p + 1, (size_t)(close - p - 1)), vars) : NULL;
    if (!value) {
      ten_buf_putc(&out, *p);
      continue;
    }
    ten_buf_puts(&out, value);
    p = close;
  }
  return ten_buf_steal(&out);
}
