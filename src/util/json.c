#include "util/json.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

/* ---------------------------------------------------------------- writer */

void ten_jw_init(ten_jw_t *w, ten_buf_t *out) {
  memset(w, 0, sizeof *w);
  w->out = out;
}

/* Separator before a value: a comma unless first in its container or
 * directly after a key. */
static void before_value(ten_jw_t *w) {
  if (w->_after_key) {
    w->_after_key = false;
    return;
  }
  if (w->depth > 0 && w->depth <= TEN_JW_MAX_DEPTH) {
    if (w->_has_items[w->depth - 1]) ten_buf_putc(w->out, ',');
    w->_has_items[w->depth - 1] = true;
  }
}

static void open_container(ten_jw_t *w, char c) {
  before_value(w);
  ten_buf_putc(w->out, c);
  if (w->depth < TEN_JW_MAX_DEPTH) w->_has_items[w->depth] = false;
  w->depth++;
}

static void close_container(ten_jw_t *w, char c) {
  ten_buf_putc(w->out, c);
  if (w->depth > 0) w->depth--;
}

void ten_jw_obj(ten_jw_t *w) { open_container(w, '{'); }
void ten_jw_obj_end(ten_jw_t *w) { close_container(w, '}'); }
void ten_jw_arr(ten_jw_t *w) { open_container(w, '['); }
void ten_jw_arr_end(ten_jw_t *w) { close_container(w, ']'); }

void ten_jw_key(ten_jw_t *w, const char *key) {
  before_value(w);
  ten_json_quote(w->out, key, strlen(key));
  ten_buf_putc(w->out, ':');
  w->_after_key = true;
}

void ten_json_quote(ten_buf_t *out, const char *s, size_t len) {
  static const char hex[] = "0123456789abcdef";
  ten_buf_reserve(out, len + 2);
  ten_buf_putc(out, '"');
  size_t run = 0; /* start of the current run of bytes needing no escape */
  for (size_t i = 0; i < len; i++) {
    unsigned char c = (unsigned char)s[i];
    if (c >= 0x20 && c != '"' && c != '\\') continue;
    ten_buf_append(out, s + run, i - run);
    run = i + 1;
    switch (c) {
    case '"': ten_buf_append(out, "\\\"", 2); break;
    case '\\': ten_buf_append(out, "\\\\", 2); break;
    case '\n': ten_buf_append(out, "\\n", 2); break;
    case '\r': ten_buf_append(out, "\\r", 2); break;
    case '\t': ten_buf_append(out, "\\t", 2); break;
    default: {
      char esc[6] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15]};
      ten_buf_append(out, esc, 6);
    }
    }
  }
  ten_buf_append(out, s + run, len - run);
  ten_buf_putc(out, '"');
}

void ten_jw_str(ten_jw_t *w, const char *s) {
  if (!s) {
    ten_jw_null(w);
    return;
  }
  ten_jw_strn(w, s, strlen(s));
}

void ten_jw_strn(ten_jw_t *w, const char *s, size_t len) {
  before_value(w);
  ten_json_quote(w->out, s, len);
}

void ten_jw_int(ten_jw_t *w, int64_t v) {
  before_value(w);
  ten_buf_printf(w->out, "%lld", (long long)v);
}

void ten_jw_num(ten_jw_t *w, double v) {
  before_value(w);
  if (!isfinite(v)) {
    ten_buf_puts(w->out, "null");
  } else if (fabs(v) < 1e15 && v == (double)(int64_t)v) { /* range first: the cast is UB beyond */
    ten_buf_printf(w->out, "%lld", (long long)v);
  } else {
    ten_buf_printf(w->out, "%.15g", v);
  }
}

void ten_jw_bool(ten_jw_t *w, bool v) {
  before_value(w);
  ten_buf_puts(w->out, v ? "true" : "false");
}

void ten_jw_null(ten_jw_t *w) {
  before_value(w);
  ten_buf_puts(w->out, "null");
}

void ten_jw_raw(ten_jw_t *w, const char *json, size_t len) {
  before_value(w);
  ten_buf_append(w->out, json, len);
}

void ten_jw_kstr(ten_jw_t *w, const char *key, const char *s) {
  ten_jw_key(w, key);
  ten_jw_str(w, s);
}

void ten_jw_kint(ten_jw_t *w, const char *key, int64_t v) {
  ten_jw_key(w, key);
  ten_jw_int(w, v);
}

void ten_jw_knum(ten_jw_t *w, const char *key, double v) {
  ten_jw_key(w, key);
  ten_jw_num(w, v);
}

void ten_jw_kbool(ten_jw_t *w, const char *key, bool v) {
  ten_jw_key(w, key);
  ten_jw_bool(w, v);
}

/* ---------------------------------------------------------------- parser */

typedef struct parser {
  const char *p;
  const char *start;
  const char *end;
  ten_err_t *err;
} parser_t;

static int fail(parser_t *ps, const char *what) {
  return ten_errf(ps->err, UV_EINVAL, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->start),
                  what);
}

static void skip_ws(parser_t *ps) {
  while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
    ps->p++;
}

static bool literal(parser_t *ps, const char *word) {
  size_t n = strlen(word);
  if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0) return false;
  ps->p += n;
  return true;
}

static int hex4(parser_t *ps, unsigned *out) {
  if (ps->end - ps->p < 4) return fail(ps, "short \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    char c = *ps->p++;
    v <<= 4;
    if (c >= '0' && c <= '9')
      v |= (unsigned)(c - '0');
    else if (c >= 'a' && c <= 'f')
      v |= (unsigned)(c - 'a' + 10);
    else if (c >= 'A' && c <= 'F')
      v |= (unsigned)(c - 'A' + 10);
    else
      return fail(ps, "bad hex digit in \\u escape");
  }
  *out = v;
  return 0;
}

static void put_utf8(ten_buf_t *b, unsigned cp) {
  char o[4];
  size_t n;
  if (cp < 0x80) {
    o[0] = (char)cp;
    n = 1;
  } else if (cp < 0x800) {
    o[0] = (char)(0xC0 | (cp >> 6));
    o[1] = (char)(0x80 | (cp & 0x3F));
    n = 2;
  } else if (cp < 0x10000) {
    o[0] = (char)(0xE0 | (cp >> 12));
    o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F));
    n = 3;
  } else {
    o[0] = (char)(0xF0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[3] = (char)(0x80 | (cp & 0x3F));
    n = 4;
  }
  ten_buf_append(b, o, n);
}

static int parse_string(parser_t *ps, char **out, size_t *out_len) {
  ps->p++; /* opening quote */
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_reserve(&b, 16);
  for (;;) {
    if (ps->p >= ps->end) {
      ten_buf_free(&b);
      return fail(ps, "unterminated string");
    }
    unsigned char c = (unsigned char)*ps->p;
    if (c == '"') {
      ps->p++;
      break;
    }
    if (c < 0x20) {
      ten_buf_free(&b);
      return fail(ps, "control character in string");
    }
    if (c != '\\') {
      const char *run = ps->p;
      while (ps->p < ps->end && *ps->p != '"' && *ps->p != '\\' && (unsigned char)*ps->p >= 0x20)
        ps->p++;
      ten_buf_append(&b, run, (size_t)(ps->p - run));
      continue;
    }
    ps->p++;
    if (ps->p >= ps->end) {
      ten_buf_free(&b);
      return fail(ps, "unterminated escape");
    }
    char e = *ps->p++;
    switch (e) {
    case '"': ten_buf_putc(&b, '"'); break;
    case '\\': ten_buf_putc(&b, '\\'); break;
    case '/': ten_buf_putc(&b, '/'); break;
    case 'b': ten_buf_putc(&b, '\b'); break;
    case 'f': ten_buf_putc(&b, '\f'); break;
    case 'n': ten_buf_putc(&b, '\n'); break;
    case 'r': ten_buf_putc(&b, '\r'); break;
    case 't': ten_buf_putc(&b, '\t'); break;
    case 'u': {
      unsigned cp;
      int rc = hex4(ps, &cp);
      if (rc == 0 && cp >= 0xD800 && cp <= 0xDBFF) {
        unsigned lo;
        if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u') {
          rc = fail(ps, "lone high surrogate");
        } else {
          ps->p += 2;
          rc = hex4(ps, &lo);
          if (rc == 0 && (lo < 0xDC00 || lo > 0xDFFF)) rc = fail(ps, "bad low surrogate");
          if (rc == 0) cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
      } else if (rc == 0 && cp >= 0xDC00 && cp <= 0xDFFF) {
        rc = fail(ps, "lone low surrogate");
      }
      if (rc) {
        ten_buf_free(&b);
        return rc;
      }
      put_utf8(&b, cp);
      break;
    }
    default: ten_buf_free(&b); return fail(ps, "bad escape");
    }
  }
  *out_len = b.len;
  *out = ten_buf_steal(&b);
  return 0;
}

static int parse_number(parser_t *ps, double *out) {
  const char *s = ps->p;
  const char *p = s;
  if (p < ps->end && *p == '-') p++;
  if (p >= ps->end) return fail(ps, "bad number");
  if (*p == '0') {
    p++;
  } else if (*p >= '1' && *p <= '9') {
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  } else {
    return fail(ps, "bad number");
  }
  if (p < ps->end && *p == '.') {
    p++;
    if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "bad fraction");
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  if (p < ps->end && (*p == 'e' || *p == 'E')) {
    p++;
    if (p < ps->end && (*p == '+' || *p == '-')) p++;
    if (p >= ps->end || *p < '0' || *p > '9') return fail(ps, "bad exponent");
    while (p < ps->end && *p >= '0' && *p <= '9') p++;
  }
  /* strtod needs a terminated copy: the input is not NUL-terminated. */
  char tmp[64];
  size_t n = (size_t)(p - s);
  if (n >= sizeof tmp) return fail(ps, "number too long");
  memcpy(tmp, s, n);
  tmp[n] = '\0';
  *out = strtod(tmp, NULL);
  ps->p = p;
  return 0;
}

static int parse_value(parser_t *ps, ten_json_t *v, int depth);

static int parse_array(parser_t *ps, ten_json_t *v, int depth) {
  ps->p++;
  v->type = TEN_JSON_ARRAY;
  size_t cap = 0;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == ']') {
    ps->p++;
    return 0;
  }
  for (;;) {
    if (v->count == cap) {
      cap = cap ? cap * 2 : 4;
      v->items = ten_xrealloc(v->items, cap * sizeof *v->items);
    }
    ten_json_t *item = &v->items[v->count++];
    memset(item, 0, sizeof *item); /* counted first so a failure frees it */
    int rc = parse_value(ps, item, depth + 1);
    if (rc) return rc;
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unterminated array");
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p == ']') {
      ps->p++;
      return 0;
    }
    return fail(ps, "expected ',' or ']'");
  }
}

static int parse_object(parser_t *ps, ten_json_t *v, int depth) {
  ps->p++;
  v->type = TEN_JSON_OBJECT;
  size_t cap = 0;
  skip_ws(ps);
  if (ps->p < ps->end && *ps->p == '}') {
    ps->p++;
    return 0;
  }
  for (;;) {
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != '"') return fail(ps, "expected a string key");
    if (v->count == cap) {
      cap = cap ? cap * 2 : 4;
      v->items = ten_xrealloc(v->items, cap * sizeof *v->items);
      v->keys = ten_xrealloc(v->keys, cap * sizeof *v->keys);
    }
    size_t key_len;
    char *key;
    int rc = parse_string(ps, &key, &key_len);
    if (rc) return rc;
    skip_ws(ps);
    if (ps->p >= ps->end || *ps->p != ':') {
      free(key);
      return fail(ps, "expected ':'");
    }
    ps->p++;
    ten_json_t *item = &v->items[v->count];
    memset(item, 0, sizeof *item);
    v->keys[v->count] = key;
    rc = parse_value(ps, item, depth + 1);
    v->count++; /* counted even on failure so the key and partial item are freed */
    if (rc) return rc;
    skip_ws(ps);
    if (ps->p >= ps->end) return fail(ps, "unterminated object");
    if (*ps->p == ',') {
      ps->p++;
      continue;
    }
    if (*ps->p == '}') {
      ps->p++;
      return 0;
    }
    return fail(ps, "expected ',' or '}'");
  }
}

static int parse_value(parser_t *ps, ten_json_t *v, int depth) {
  skip_ws(ps);
  if (ps->p >= ps->end) return fail(ps, "unexpected end of input");
  /* depth counts the containers around this value: at most
   * TEN_JSON_MAX_DEPTH arrays or objects may nest. */
  if ((*ps->p == '{' || *ps->p == '[') && depth >= TEN_JSON_MAX_DEPTH)
    return fail(ps, "nested too deeply");
  switch (*ps->p) {
  case '{': return parse_object(ps, v, depth);
  case '[': return parse_array(ps, v, depth);
  case '"': v->type = TEN_JSON_STRING; return parse_string(ps, &v->string, &v->string_len);
  case 't':
    if (!literal(ps, "true")) return fail(ps, "bad literal");
    v->type = TEN_JSON_BOOL;
    v->boolean = true;
    return 0;
  case 'f':
    if (!literal(ps, "false")) return fail(ps, "bad literal");
    v->type = TEN_JSON_BOOL;
    return 0;
  case 'n':
    if (!literal(ps, "null")) return fail(ps, "bad literal");
    v->type = TEN_JSON_NULL;
    return 0;
  default: v->type = TEN_JSON_NUMBER; return parse_number(ps, &v->number);
  }
}

int ten_json_parse(const char *text, size_t len, ten_json_t **out, ten_err_t *err) {
  parser_t ps = {text, text, text + len, err};
  ten_json_t *root = ten_xcalloc(1, sizeof *root);
  int rc = parse_value(&ps, root, 0);
  if (rc == 0) {
    skip_ws(&ps);
    if (ps.p != ps.end) rc = fail(&ps, "trailing characters");
  }
  if (rc) {
    ten_json_free(root);
    *out = NULL;
    return rc;
  }
  *out = root;
  return 0;
}

static void free_children(ten_json_t *v) {
  for (size_t i = 0; i < v->count; i++) {
    free_children(&v->items[i]);
    if (v->keys) free(v->keys[i]);
  }
  free(v->items);
  free(v->keys);
  free(v->string);
}

void ten_json_free(ten_json_t *v) {
  if (!v) return;
  free_children(v);
  free(v);
}

const ten_json_t *ten_json_get(const ten_json_t *obj, const char *key) {
  if (!obj || obj->type != TEN_JSON_OBJECT) return NULL;
  for (size_t i = 0; i < obj->count; i++)
    if (strcmp(obj->keys[i], key) == 0) return &obj->items[i];
  return NULL;
}

const char *ten_json_get_str(const ten_json_t *obj, const char *key) {
  const ten_json_t *v = ten_json_get(obj, key);
  return v && v->type == TEN_JSON_STRING ? v->string : NULL;
}

bool ten_json_get_num(const ten_json_t *obj, const char *key, double *out) {
  const ten_json_t *v = ten_json_get(obj, key);
  if (!v || v->type != TEN_JSON_NUMBER) return false;
  *out = v->number;
  return true;
}

bool ten_json_get_bool(const ten_json_t *obj, const char *key, bool *out) {
  const ten_json_t *v = ten_json_get(obj, key);
  if (!v || v->type != TEN_JSON_BOOL) return false;
  *out = v->boolean;
  return true;
}
