/* test_json.c: the strict JSON parser, the writer, and the getters. */
#include "test.h"
#include "util/json.h"

#include <math.h>
#include <stdlib.h>
#include <uv.h>

/* Parses a NUL-terminated literal; returns the tree or NULL. */
static ten_json_t *parse(const char *text) {
  ten_json_t *v = NULL;
  ten_err_t err;
  int rc = ten_json_parse(text, strlen(text), &v, &err);
  return rc == 0 ? v : NULL;
}

/* True when `text` is rejected with UV_EINVAL, an error message and no tree. */
static int rejects(const char *text, size_t len) {
  ten_json_t *v = (ten_json_t *)1;
  ten_err_t err;
  err.msg[0] = '\0';
  int rc = ten_json_parse(text, len, &v, &err);
  if (rc == 0) ten_json_free(v);
  return rc == UV_EINVAL && v == NULL && strstr(err.msg, "invalid JSON at byte") != NULL;
}

#define REJECTS(lit) rejects(lit, strlen(lit))

/* ---------------------------------------------------------------- scalars */

TEST(scalars) {
  ten_json_t *v;
  CHECK((v = parse("null")) && v->type == TEN_JSON_NULL);
  ten_json_free(v);
  CHECK((v = parse("true")) && v->type == TEN_JSON_BOOL && v->boolean);
  ten_json_free(v);
  CHECK((v = parse("false")) && v->type == TEN_JSON_BOOL && !v->boolean);
  ten_json_free(v);
  CHECK((v = parse("\"hi\"")) && v->type == TEN_JSON_STRING && v->string_len == 2);
  if (v) CHECK_STR(v->string, "hi");
  ten_json_free(v);
  /* The empty string: string_len 0 and, like every string, NUL-terminated
   * (checked byte-wise: printing an unterminated one would overrun). */
  CHECK((v = parse("\"\"")) && v->type == TEN_JSON_STRING && v->string_len == 0);
  if (v) CHECK_EQ(v->string[0], '\0');
  ten_json_free(v);
  /* ... and the empty key. */
  v = parse("{\"\":1}");
  CHECK(v && v->count == 1 && v->keys[0][0] == '\0');
  CHECK(ten_json_get(v, "") != NULL);
  ten_json_free(v);
  CHECK((v = parse(" \t\r\n 7 \n\t")) && v->type == TEN_JSON_NUMBER && v->number == 7);
  ten_json_free(v);
}

TEST(numbers) {
  static const struct {
    const char *text;
    double want;
  } cases[] = {
      {"0", 0},           {"-0", 0},         {"1", 1},          {"-1", -1},
      {"42", 42},         {"123456789", 123456789},             {"0.5", 0.5},
      {"-0.25", -0.25},   {"3.14159", 3.14159}, {"1e3", 1000},  {"1E3", 1000},
      {"1e+3", 1000},     {"1e-3", 0.001},   {"-2.5e2", -250},  {"0e0", 0},
      {"9007199254740993", 9007199254740992.0},                 {"1.0", 1},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    ten_json_t *v = parse(cases[i].text);
    CHECK(v && v->type == TEN_JSON_NUMBER);
    if (v && v->number != cases[i].want)
      fprintf(stderr, "  number %s parsed as %.17g\n", cases[i].text, v->number);
    CHECK(v && v->number == cases[i].want);
    ten_json_free(v);
  }
  ten_json_t *v = parse("-0");
  CHECK(v && signbit(v->number));
  ten_json_free(v);
}

TEST(bad_numbers) {
  static const char *const bad[] = {
      "01",  "-01", "00", "+1", "-",  ".5",  "1.",   "1.e3", "1e",   "1e+",  "1e-",
      "0x10", "1 2", "--1", "- 1", "NaN", "Infinity", "-Infinity", "1.5.2", "1e5e5", "0.-1",
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    if (!REJECTS(bad[i])) fprintf(stderr, "  accepted bad number %s\n", bad[i]);
    CHECK(REJECTS(bad[i]));
  }
}

/* ---------------------------------------------------------------- strings */

TEST(escapes) {
  static const struct {
    const char *text;
    const char *want;
    size_t want_len;
  } cases[] = {
      {"\"a\\\"b\"", "a\"b", 3},
      {"\"\\\\\"", "\\", 1},
      {"\"\\/\"", "/", 1},
      {"\"\\b\\f\\n\\r\\t\"", "\b\f\n\r\t", 5},
      {"\"\\u0041\"", "A", 1},
      {"\"\\u00e9\"", "\xc3\xa9", 2},          /* é: two bytes */
      {"\"\\u20AC\"", "\xe2\x82\xac", 3},      /* €: three bytes, upper-case hex */
      {"\"\\uD83D\\uDE00\"", "\xf0\x9f\x98\x80", 4}, /* 😀: a surrogate pair */
      {"\"\\ud834\\udd1e\"", "\xf0\x9d\x84\x9e", 4}, /* 𝄞 */
      {"\"\\uDBFF\\uDFFF\"", "\xf4\x8f\xbf\xbf", 4}, /* U+10FFFF */
      {"\"\\u0000x\"", "\0x", 2},              /* a NUL byte, kept by length */
      {"\"caf\xc3\xa9\"", "caf\xc3\xa9", 5},   /* raw UTF-8 passes through */
      {"\"a\\nb\\u0020c\"", "a\nb c", 5},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    ten_json_t *v = parse(cases[i].text);
    CHECK(v && v->type == TEN_JSON_STRING);
    if (!v) {
      fprintf(stderr, "  rejected %s\n", cases[i].text);
      continue;
    }
    CHECK_EQ(v->string_len, cases[i].want_len);
    CHECK(memcmp(v->string, cases[i].want, cases[i].want_len) == 0);
    CHECK_EQ(v->string[v->string_len], '\0');
    ten_json_free(v);
  }
}

TEST(bad_strings) {
  static const char *const bad[] = {
      "\"abc",              /* unterminated */
      "\"\\",               /* unterminated escape */
      "\"\\x\"",            /* unknown escape */
      "\"\\U0041\"",        /* escapes are case-sensitive */
      "\"\\u12\"",          /* short \u */
      "\"\\u12G4\"",        /* bad hex digit */
      "\"\\uD800\"",        /* lone high surrogate */
      "\"\\uD800x\"",       /* high surrogate followed by text */
      "\"\\uD800\\n\"",     /* high surrogate followed by another escape */
      "\"\\uD800\\u0041\"", /* high surrogate + non-low */
      "\"\\uD800\\uD800\"", /* two highs */
      "\"\\uDC00\"",        /* lone low surrogate */
      "\"\\uDFFF\\uD800\"", /* reversed pair */
      "\"a\tb\"",           /* raw control characters */
      "\"a\nb\"",
      "\"\x01\"",
      "\"\x1f\"",
      "'single'",
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    if (!REJECTS(bad[i])) fprintf(stderr, "  accepted bad string #%zu\n", i);
    CHECK(REJECTS(bad[i]));
  }
  CHECK(rejects("\"a\0b\"", 5)); /* a raw NUL inside a string */
}

/* ---------------------------------------------------------------- containers */

TEST(containers) {
  ten_json_t *v = parse(" { \"a\" : [1, {\"b\": null}, [], {}] , \"c\":\"d\",\"e\":true } ");
  CHECK(v && v->type == TEN_JSON_OBJECT && v->count == 3);
  if (!v) return;
  CHECK_STR(v->keys[0], "a");
  CHECK_STR(v->keys[1], "c");
  CHECK_STR(v->keys[2], "e");
  const ten_json_t *a = ten_json_get(v, "a");
  CHECK(a && a->type == TEN_JSON_ARRAY && a->count == 4);
  if (a && a->count == 4) {
    CHECK(a->items[0].type == TEN_JSON_NUMBER && a->items[0].number == 1);
    CHECK(a->items[1].type == TEN_JSON_OBJECT && a->items[1].count == 1);
    CHECK(ten_json_get(&a->items[1], "b") && ten_json_get(&a->items[1], "b")->type == TEN_JSON_NULL);
    CHECK(a->items[2].type == TEN_JSON_ARRAY && a->items[2].count == 0);
    CHECK(a->items[3].type == TEN_JSON_OBJECT && a->items[3].count == 0);
  }
  ten_json_free(v);

  /* Many items: the arrays grow. */
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_putc(&b, '[');
  for (int i = 0; i < 1000; i++) ten_buf_printf(&b, "%s%d", i ? "," : "", i);
  ten_buf_putc(&b, ']');
  v = parse(b.data);
  CHECK(v && v->count == 1000 && v->items[999].number == 999);
  ten_json_free(v);
  ten_buf_reset(&b);
  ten_buf_putc(&b, '{');
  for (int i = 0; i < 100; i++) ten_buf_printf(&b, "%s\"k%d\":%d", i ? "," : "", i, i);
  ten_buf_putc(&b, '}');
  v = parse(b.data);
  double n = 0;
  CHECK(v && v->count == 100 && ten_json_get_num(v, "k77", &n) && n == 77);
  ten_json_free(v);
  ten_buf_free(&b);

  /* Duplicate keys are kept; get returns the first. */
  v = parse("{\"k\":1,\"k\":2}");
  CHECK(v && v->count == 2 && ten_json_get_num(v, "k", &n) && n == 1);
  ten_json_free(v);
}

TEST(bad_documents) {
  static const char *const bad[] = {
      "",         "   ",         "[1,]",          "{\"a\":1,}",   "[,1]",       "{,}",
      "[1 2]",    "{\"a\" 1}",   "{\"a\":}",      "{a:1}",        "{'a':1}",    "{1:2}",
      "[1] // c", "/* c */ 1",   "# c\n1",        "tru",          "True",       "nul",
      "nulll",    "undefined",   "hello",         "[",            "]",          "{",
      "}",        "[}",          "{]",            "{\"a\"}",      "{\"a\":1 \"b\":2}",
      "1 1",      "[] []",       "\"a\" \"b\"",   "\xef\xbb\xbf{}", "[\x0b]",  "\f1",
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    if (!REJECTS(bad[i])) fprintf(stderr, "  accepted bad document \"%s\"\n", bad[i]);
    CHECK(REJECTS(bad[i]));
  }
}

/* Every proper prefix of a valid document is invalid, and parsing it reads
 * no byte past the prefix (ASan checks: each prefix is its own allocation). */
TEST(truncated_prefixes) {
  static const char doc[] =
      "{\"name\":\"caf\\u00e9 \\uD83D\\uDE00\",\"n\":[-1.5e+3,0,true,false,null],"
      "\"o\":{\"a\":{},\"b\":[]},\"s\":\"\\\"\\\\\\/\\b\\f\\n\\r\\t\"}";
  size_t len = strlen(doc);
  ten_json_t *whole = parse(doc);
  CHECK(whole != NULL);
  ten_json_free(whole);
  int all_rejected = 1;
  for (size_t n = 0; n < len; n++) {
    char *copy = malloc(n ? n : 1);
    memcpy(copy, doc, n);
    if (!rejects(copy, n)) {
      fprintf(stderr, "  prefix of length %zu accepted\n", n);
      all_rejected = 0;
    }
    free(copy);
  }
  CHECK(all_rejected);
}

/* The parser honours len and never needs a NUL terminator. */
TEST(slice_of_larger_buffer) {
  const char *big = "[1,2,3]garbage that is not JSON";
  ten_json_t *v = NULL;
  ten_err_t err;
  CHECK_EQ(ten_json_parse(big, 7, &v, &err), 0);
  CHECK(v && v->type == TEN_JSON_ARRAY && v->count == 3);
  ten_json_free(v);
  CHECK(rejects(big, 8));

  /* Numbers, literals and strings ending exactly at the slice end, in
   * heap buffers with no terminator, so reading past len is caught. */
  static const char *const exact[] = {"12345", "-0.5e10", "true", "null", "\"str\"", "{}"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(exact); i++) {
    size_t n = strlen(exact[i]);
    char *copy = malloc(n);
    memcpy(copy, exact[i], n);
    v = NULL;
    CHECK_EQ(ten_json_parse(copy, n, &v, &err), 0);
    CHECK(v != NULL);
    ten_json_free(v);
    free(copy);
  }
  /* "12" followed by "3" outside the slice parses as 12. */
  v = NULL;
  CHECK_EQ(ten_json_parse("123", 2, &v, &err), 0);
  CHECK(v && v->number == 12);
  ten_json_free(v);
}

/* depth containers nested around `inner`: "[[[0]]]" or {"a":{"a":{"a":0}}}. */
static int parse_nested(int depth, bool objects, const char *inner) {
  ten_buf_t b = TEN_BUF_INIT;
  for (int i = 0; i < depth; i++) ten_buf_puts(&b, objects ? "{\"a\":" : "[");
  ten_buf_puts(&b, inner);
  for (int i = 0; i < depth; i++) ten_buf_putc(&b, objects ? '}' : ']');
  ten_json_t *v = NULL;
  ten_err_t err;
  int rc = ten_json_parse(b.data, b.len, &v, &err);
  if (rc != 0) CHECK_CONTAINS(err.msg, "nested too deeply");
  ten_json_free(v);
  ten_buf_free(&b);
  return rc;
}

/* "nests at most TEN_JSON_MAX_DEPTH deep" (json.h): containers count, the
 * scalars inside the innermost one do not. */
TEST(depth_limit) {
  const int max = TEN_JSON_MAX_DEPTH;
  CHECK_EQ(parse_nested(1, false, ""), 0);
  CHECK_EQ(parse_nested(max, false, ""), 0);
  CHECK_EQ(parse_nested(max, false, "0"), 0);
  CHECK_EQ(parse_nested(max, false, "\"s\",true,null"), 0);
  CHECK_EQ(parse_nested(max - 1, true, "{}"), 0);
  CHECK_EQ(parse_nested(max, true, "1"), 0);
  CHECK_EQ(parse_nested(max + 1, false, ""), UV_EINVAL);
  CHECK_EQ(parse_nested(max + 1, false, "0"), UV_EINVAL);
  CHECK_EQ(parse_nested(max, false, "[]"), UV_EINVAL);
  CHECK_EQ(parse_nested(max, true, "{}"), UV_EINVAL);
  CHECK_EQ(parse_nested(max + 1, true, "1"), UV_EINVAL);
  CHECK_EQ(parse_nested(100000, false, ""), UV_EINVAL); /* no stack overflow */
}

/* ---------------------------------------------------------------- writer */

static void check_parses(const char *json) {
  ten_json_t *v = parse(json);
  if (!v) fprintf(stderr, "  writer output does not parse: %s\n", json);
  CHECK(v != NULL);
  ten_json_free(v);
}

TEST(writer_commas_and_keys) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &b);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "s", "x");
  ten_jw_kint(&w, "i", -42);
  ten_jw_knum(&w, "n", 1.5);
  ten_jw_kbool(&w, "b", true);
  ten_jw_key(&w, "z");
  ten_jw_null(&w);
  ten_jw_kstr(&w, "null", NULL);
  ten_jw_key(&w, "a");
  ten_jw_arr(&w);
  ten_jw_int(&w, 1);
  ten_jw_arr(&w);
  ten_jw_arr_end(&w);
  ten_jw_obj(&w);
  ten_jw_obj_end(&w);
  ten_jw_obj(&w);
  ten_jw_kint(&w, "k", 2);
  ten_jw_key(&w, "deep");
  ten_jw_obj(&w);
  ten_jw_kbool(&w, "f", false);
  ten_jw_obj_end(&w);
  ten_jw_obj_end(&w);
  ten_jw_raw(&w, "{\"r\":[1]}", 9);
  ten_jw_strn(&w, "ab\0c", 4);
  ten_jw_arr_end(&w);
  ten_jw_key(&w, "empty");
  ten_jw_obj(&w);
  ten_jw_obj_end(&w);
  ten_jw_obj_end(&w);
  CHECK_STR(b.data, "{\"s\":\"x\",\"i\":-42,\"n\":1.5,\"b\":true,\"z\":null,\"null\":null,"
                    "\"a\":[1,[],{},{\"k\":2,\"deep\":{\"f\":false}},{\"r\":[1]},\"ab\\u0000c\"],"
                    "\"empty\":{}}");
  CHECK_EQ(w.depth, 0);
  check_parses(b.data);
  ten_buf_free(&b);

  /* Top-level scalars and arrays of scalars. */
  ten_jw_init(&w, &b);
  ten_jw_arr(&w);
  ten_jw_num(&w, 3.0);
  ten_jw_num(&w, -0.125);
  ten_jw_num(&w, NAN);
  ten_jw_num(&w, INFINITY);
  ten_jw_num(&w, 1e20);
  ten_jw_int(&w, INT64_MIN);
  ten_jw_bool(&w, false);
  ten_jw_arr_end(&w);
  CHECK_STR(b.data, "[3,-0.125,null,null,1e+20,-9223372036854775808,false]");
  check_parses(b.data);
  ten_buf_free(&b);
}

TEST(quote) {
  static const struct {
    const char *in;
    size_t len;
    const char *want;
  } cases[] = {
      {"", 0, "\"\""},
      {"plain", 5, "\"plain\""},
      {"a\"b", 3, "\"a\\\"b\""},
      {"a\\b", 3, "\"a\\\\b\""},
      {"\n\r\t", 3, "\"\\n\\r\\t\""},
      {"\x01\x1f\b\f", 4, "\"\\u0001\\u001f\\u0008\\u000c\""},
      {"\0", 1, "\"\\u0000\""},
      {"/", 1, "\"/\""},
      {"\x7f", 1, "\"\x7f\""},
      {"caf\xc3\xa9", 5, "\"caf\xc3\xa9\""},
      {"end\\", 4, "\"end\\\\\""},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    ten_buf_t b = TEN_BUF_INIT;
    ten_json_quote(&b, cases[i].in, cases[i].len);
    CHECK_STR(b.data, cases[i].want);
    ten_buf_free(&b);
  }
}

/* Every byte 1..255 (and NUL) survives writer -> parser. */
TEST(round_trip) {
  char all[256];
  for (int i = 0; i < 256; i++) all[i] = (char)i;
  ten_buf_t b = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &b);
  ten_jw_obj(&w);
  ten_jw_key(&w, "bytes");
  ten_jw_strn(&w, all, 0x80); /* ASCII: the parser does not validate UTF-8 */
  ten_jw_kstr(&w, "key with \"quotes\" and \\", "v");
  ten_jw_kint(&w, "big", 9007199254740991LL);
  ten_jw_knum(&w, "frac", 0.1);
  ten_jw_knum(&w, "neg", -123.5);
  ten_jw_kbool(&w, "t", true);
  ten_jw_obj_end(&w);

  ten_json_t *v = NULL;
  ten_err_t err;
  CHECK_EQ(ten_json_parse(b.data, b.len, &v, &err), 0);
  const ten_json_t *bytes = ten_json_get(v, "bytes");
  CHECK(bytes && bytes->string_len == 0x80 && memcmp(bytes->string, all, 0x80) == 0);
  CHECK_STR(ten_json_get_str(v, "key with \"quotes\" and \\"), "v");
  double n = 0;
  CHECK(ten_json_get_num(v, "big", &n) && n == 9007199254740991.0);
  CHECK(ten_json_get_num(v, "frac", &n) && n == 0.1);
  CHECK(ten_json_get_num(v, "neg", &n) && n == -123.5);
  bool t = false;
  CHECK(ten_json_get_bool(v, "t", &t) && t);
  ten_json_free(v);
  ten_buf_free(&b);
}

/* ---------------------------------------------------------------- getters */

TEST(getters) {
  ten_json_t *v = parse("{\"s\":\"str\",\"n\":2.5,\"b\":false,\"z\":null,\"o\":{\"x\":1}}");
  CHECK(v != NULL);
  CHECK(ten_json_get(v, "o") && ten_json_get(v, "o")->type == TEN_JSON_OBJECT);
  CHECK(ten_json_get(v, "missing") == NULL);
  CHECK(ten_json_get(v, "") == NULL);
  CHECK_STR(ten_json_get_str(v, "s"), "str");
  CHECK(ten_json_get_str(v, "n") == NULL);
  CHECK(ten_json_get_str(v, "z") == NULL);
  CHECK(ten_json_get_str(v, "missing") == NULL);

  double n = -1;
  CHECK(ten_json_get_num(v, "n", &n) && n == 2.5);
  n = -1;
  CHECK(!ten_json_get_num(v, "s", &n) && n == -1); /* untouched on failure */
  CHECK(!ten_json_get_num(v, "missing", &n));
  bool b = true;
  CHECK(ten_json_get_bool(v, "b", &b) && !b);
  b = true;
  CHECK(!ten_json_get_bool(v, "z", &b) && b);
  CHECK(!ten_json_get_bool(v, "n", &b));

  /* Nested lookups go one level at a time. */
  CHECK(ten_json_get(v, "x") == NULL);
  CHECK(ten_json_get_num(ten_json_get(v, "o"), "x", &n) && n == 1);

  /* Not an object, or NULL: nothing found. */
  ten_json_t *arr = parse("[\"s\"]");
  CHECK(ten_json_get(arr, "s") == NULL);
  CHECK(ten_json_get(NULL, "s") == NULL);
  CHECK(ten_json_get_str(NULL, "s") == NULL);
  CHECK(!ten_json_get_num(NULL, "n", &n));
  CHECK(!ten_json_get_bool(NULL, "b", &b));
  ten_json_free(arr);
  ten_json_free(v);
  ten_json_free(NULL);
}

int main(void) {
  RUN(scalars);
  RUN(numbers);
  RUN(bad_numbers);
  RUN(escapes);
  RUN(bad_strings);
  RUN(containers);
  RUN(bad_documents);
  RUN(truncated_prefixes);
  RUN(slice_of_larger_buffer);
  RUN(depth_limit);
  RUN(writer_commas_and_keys);
  RUN(quote);
  RUN(round_trip);
  RUN(getters);
  return test_report();
}
