/* json.h: a JSON writer that appends to a ten_buf_t, and a strict parser
 * into a small tree.
 *
 * The parser accepts exactly RFC 8259 JSON (no comments, no trailing commas),
 * nests at most TEN_JSON_MAX_DEPTH deep, and on bad input returns UV_EINVAL
 * with the byte offset and reason in err. It never reads past len, so it is
 * safe on network input (the control socket fuzz target drives it).
 */
#ifndef TEN_UTIL_JSON_H
#define TEN_UTIL_JSON_H

#include "util/buf.h"

/* ---- writer ---- */

#define TEN_JW_MAX_DEPTH 32

typedef struct ten_jw {
  ten_buf_t *out;
  int depth;
  bool _after_key;
  bool _has_items[TEN_JW_MAX_DEPTH];
} ten_jw_t;

void ten_jw_init(ten_jw_t *w, ten_buf_t *out);
void ten_jw_obj(ten_jw_t *w);     /* { */
void ten_jw_obj_end(ten_jw_t *w); /* } */
void ten_jw_arr(ten_jw_t *w);     /* [ */
void ten_jw_arr_end(ten_jw_t *w); /* ] */
void ten_jw_key(ten_jw_t *w, const char *key);
void ten_jw_str(ten_jw_t *w, const char *s); /* NULL writes null */
void ten_jw_strn(ten_jw_t *w, const char *s, size_t len);
void ten_jw_int(ten_jw_t *w, int64_t v);
void ten_jw_num(ten_jw_t *w, double v); /* non-finite writes null */
void ten_jw_bool(ten_jw_t *w, bool v);
void ten_jw_null(ten_jw_t *w);
/* Appends already-encoded JSON as one value. */
void ten_jw_raw(ten_jw_t *w, const char *json, size_t len);

/* key + value shorthands */
void ten_jw_kstr(ten_jw_t *w, const char *key, const char *s);
void ten_jw_kint(ten_jw_t *w, const char *key, int64_t v);
void ten_jw_knum(ten_jw_t *w, const char *key, double v);
void ten_jw_kbool(ten_jw_t *w, const char *key, bool v);

/* Appends s as a quoted, escaped JSON string. */
void ten_json_quote(ten_buf_t *out, const char *s, size_t len);

/* ---- parser ---- */

#define TEN_JSON_MAX_DEPTH 64

typedef enum ten_json_type {
  TEN_JSON_NULL,
  TEN_JSON_BOOL,
  TEN_JSON_NUMBER,
  TEN_JSON_STRING,
  TEN_JSON_ARRAY,
  TEN_JSON_OBJECT,
} ten_json_type_t;

typedef struct ten_json ten_json_t;
struct ten_json {
  ten_json_type_t type;
  bool boolean;
  double number;
  char *string; /* NUL-terminated; may contain NUL bytes: see string_len */
  size_t string_len;
  /* arrays and objects: count children; objects also have keys[i] */
  size_t count;
  ten_json_t *items;
  char **keys;
};

int ten_json_parse(const char *text, size_t len, ten_json_t **out, ten_err_t *err);
void ten_json_free(ten_json_t *v);

/* Object member by key, or NULL. */
const ten_json_t *ten_json_get(const ten_json_t *obj, const char *key);
/* Member as a string, or NULL when absent or not a string. */
const char *ten_json_get_str(const ten_json_t *obj, const char *key);
/* Member as a number; returns false when absent or not a number. */
bool ten_json_get_num(const ten_json_t *obj, const char *key, double *out);
bool ten_json_get_bool(const ten_json_t *obj, const char *key, bool *out);

#endif
