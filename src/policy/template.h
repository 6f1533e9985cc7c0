/* template.h: `{name}` placeholders in command, socket, directory and env.
 *
 * Known names: {id} {service} {data_dir} {socket} {port}; `{{` and `}}`
 * write literal braces. Templates are checked when the config loads (an
 * unknown or unavailable placeholder is a config error) and expanded when an
 * instance spawns.
 */
#ifndef TEN_POLICY_TEMPLATE_H
#define TEN_POLICY_TEMPLATE_H

#include "util/common.h"

enum {
  TEN_TPL_ID = 1u << 0,
  TEN_TPL_SERVICE = 1u << 1,
  TEN_TPL_DATA_DIR = 1u << 2,
  TEN_TPL_SOCKET = 1u << 3,
  TEN_TPL_PORT = 1u << 4,
  TEN_TPL_ALL = 0x1f,
};

typedef struct ten_template_vars {
  const char *id;
  const char *service;
  const char *data_dir;
  const char *socket; /* "" in port mode */
  const char *port;   /* "" in socket mode */
} ten_template_vars_t;

/* 0 if every placeholder in tpl is in `allowed`; otherwise UV_EINVAL with a
 * message naming the placeholder. */
int ten_template_check(const char *tpl, unsigned allowed, ten_err_t *err);
/* The expanded string (caller frees). Assumes the template was checked;
 * unknown placeholders are kept verbatim. */
char *ten_template_expand(const char *tpl, const ten_template_vars_t *vars);

#endif
