/* schema.h: every config option, one row each (name, type, bounds, default,
 * target field, what a change means on reload, one line of documentation).
 *
 * The same rows drive validation of tenement.lua, the defaults, the
 * `ten config` JSON dump and, on reload, the diff of two configs. Adding an
 * option is adding a row and a struct field.
 */
#ifndef TEN_POLICY_SCHEMA_H
#define TEN_POLICY_SCHEMA_H

#include "util/json.h"

#include <lua.h>

typedef enum ten_opt_type {
  TEN_OPT_STRING,    /* any non-empty string */
  TEN_OPT_TEMPLATE,  /* string with {placeholders}, checked against .placeholders */
  TEN_OPT_DOMAIN,    /* a DNS name, stored lower-case without a trailing dot */
  TEN_OPT_PATH,      /* a path; relative ones are taken from the config's folder */
  TEN_OPT_HTTP_PATH, /* an absolute URL path, e.g. "/health" */
  TEN_OPT_INT,       /* integer in [min, max] */
  TEN_OPT_SECONDS,   /* number of seconds in [min, max] */
  TEN_OPT_NUMBER,    /* any number in [min, max] (a double field) */
  TEN_OPT_BOOL,
  TEN_OPT_ENUM, /* one of .choices; stored as the index (an enum value) */
  TEN_OPT_ENV,  /* table of NAME = template string (or number) */
  TEN_OPT_AUTO,      /* the string "auto" only; stored as bool */
  TEN_OPT_SIZE,      /* bytes: an integer, or "512k", "10m", "1g" (int64_t) */
  TEN_OPT_FUNC,      /* a Lua function, kept as a registry ref (int; LUA_NOREF if absent) */
  TEN_OPT_WEIGHT,    /* 0-100 (int) or a function: an int field, then its ref (int) */
  TEN_OPT_REGEX,     /* a POSIX extended regular expression (checked to compile) */
  TEN_OPT_CIDRS,     /* list like { "10.0.0.0/8" } (ten_cidr_t array, then a size_t count) */
} ten_opt_type_t;

enum {
  TEN_OPT_REQUIRED = 1u << 0,
  /* A change applies only by restarting the service's instances. */
  TEN_OPT_RESTARTS = 1u << 1,
  /* Only read at start: a reload that changes it is reported and ignored. */
  TEN_OPT_STARTUP = 1u << 2,
};

typedef struct ten_option {
  const char *name;
  ten_opt_type_t type;
  size_t offset; /* into ten_settings_t or ten_service_conf_t */
  double min, max;
  double def_num;
  const char *def_str;
  const char *const *choices; /* NULL-terminated, for TEN_OPT_ENUM */
  unsigned placeholders;      /* for TEN_OPT_TEMPLATE */
  unsigned flags;
  const char *doc;
} ten_option_t;

extern const ten_option_t ten_settings_options[];
extern const ten_option_t ten_service_options[];

/* Where a block came from, for messages: "path:line: <what>: ...". */
typedef struct ten_schema_ctx {
  const char *path;     /* display name of the file */
  const char *source;   /* its text, to find the line a key is on */
  const char *base_dir; /* folder relative paths are resolved against */
  int line;             /* the block's line */
  char what[96];        /* e.g. `service "api"` or `settings` */
  lua_State *L;         /* holds tenement.dsl for key lines */
} ten_schema_ctx_t;

/* Validates the Lua table at `index` against `opts` and fills `target`
 * (defaults for absent keys). Returns 0, or UV_EINVAL with err naming
 * path:line, the block and the key. On failure `target` may be half-filled:
 * free it with ten_schema_free. */
int ten_schema_apply(const ten_option_t *opts, ten_schema_ctx_t *ctx, int index, void *target,
                     ten_err_t *err);
/* Fills every option of `target` with its default. */
void ten_schema_defaults(const ten_option_t *opts, void *target);
/* Frees the strings and tables the options own in `target`. */
void ten_schema_free(const ten_option_t *opts, void *target);
/* Writes each option as a JSON key/value into the object being written. */
void ten_schema_to_json(const ten_option_t *opts, const void *target, ten_jw_t *w);
/* True if option `o` differs between a and b. */
bool ten_schema_differs(const ten_option_t *o, const void *a, const void *b);

/* Levenshtein-closest option name within distance 2, or NULL. */
const char *ten_schema_suggest(const ten_option_t *opts, const char *name);

#endif
