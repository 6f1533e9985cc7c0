/* test_template.c: {placeholder} checking and expansion. */
#include "test.h"
#include "policy/template.h"

#include <stdlib.h>
#include <uv.h>

#define ALL   TEN_TPL_ALL
#define NOSP  (TEN_TPL_ID | TEN_TPL_SERVICE | TEN_TPL_DATA_DIR) /* socket/directory rows */
#define NONE  0u

TEST(check_accepts) {
  static const struct {
    const char *tpl;
    unsigned allowed;
  } ok[] = {
      {"", NONE},
      {"plain text", NONE},
      {"app --id {id}", TEN_TPL_ID},
      {"{id}{service}{data_dir}{socket}{port}", ALL},
      {"{data_dir}/run/{service}-{id}.sock", NOSP},
      {"{{", NONE},
      {"}}", NONE},
      {"{{id}}", NONE}, /* a literal "{id}", not a placeholder */
      {"{{{id}}}", TEN_TPL_ID},
      {"json: {{\"a\": 1}}", NONE},
      {"{port}", TEN_TPL_PORT},
      {"a{id}b{id}c", TEN_TPL_ID},
      {"%s %n $HOME", NONE},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(ok); i++) {
    ten_err_t err = {{0}};
    int rc = ten_template_check(ok[i].tpl, ok[i].allowed, &err);
    if (rc) fprintf(stderr, "  \"%s\" rejected: %s\n", ok[i].tpl, err.msg);
    CHECK_EQ(rc, 0);
  }
}

TEST(check_rejects) {
  static const struct {
    const char *tpl;
    unsigned allowed;
    const char *words[2]; /* the message must contain these */
  } bad[] = {
      {"{user}", ALL, {"unknown placeholder {user}", "{id} {service} {data_dir} {socket} {port}"}},
      {"x {ID}", ALL, {"unknown placeholder {ID}", NULL}}, /* names are case-sensitive */
      {"{}", ALL, {"unknown placeholder {}", NULL}},
      {"{ id}", ALL, {"unknown placeholder { id}", NULL}},
      {"{id }", ALL, {"unknown placeholder {id }", NULL}},
      {"{idx}", ALL, {"unknown placeholder {idx}", NULL}},
      {"{i}", ALL, {"unknown placeholder {i}", NULL}},
      {"{port}", NOSP, {"unavailable placeholder {port}", "(here: {id} {service} {data_dir})"}},
      {"{socket}", NOSP, {"unavailable placeholder {socket}", NULL}},
      {"{id}", NONE, {"unavailable placeholder {id}", "(here: )"}},
      {"ok {id} then {port}", TEN_TPL_ID, {"unavailable placeholder {port}", "(here: {id})"}},
      {"{id", ALL, {"unclosed '{'", "'{{'"}},
      {"abc {", ALL, {"unclosed '{'", NULL}},
      {"{{{", ALL, {"unclosed '{'", NULL}},
      {"}", ALL, {"unmatched '}'", "'}}'"}},
      {"a}b", ALL, {"unmatched '}'", NULL}},
      {"{id}}", ALL, {"unmatched '}'", NULL}},
      {"}}}", ALL, {"unmatched '}'", NULL}},
      {"{{id}", ALL, {"unmatched '}'", NULL}}, /* "{{" is literal, then "id}" */
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    ten_err_t err = {{0}};
    int rc = ten_template_check(bad[i].tpl, bad[i].allowed, &err);
    if (rc != UV_EINVAL) fprintf(stderr, "  \"%s\" accepted\n", bad[i].tpl);
    CHECK_EQ(rc, UV_EINVAL);
    for (int w = 0; w < 2; w++)
      if (bad[i].words[w]) CHECK_CONTAINS(err.msg, bad[i].words[w]);
  }
  /* A NULL err is allowed. */
  CHECK_EQ(ten_template_check("{nope}", ALL, NULL), UV_EINVAL);
}

static const ten_template_vars_t vars = {
    .id = "prod",
    .service = "api",
    .data_dir = "/var/lib/ten",
    .socket = "/var/lib/ten/run/api-prod.sock",
    .port = "",
};

TEST(expand) {
  static const struct {
    const char *tpl;
    const char *want;
  } cases[] = {
      {"plain", "plain"},
      {"{id}", "prod"},
      {"app --name {service}-{id}", "app --name api-prod"},
      {"{data_dir}/run/{service}-{id}.sock", "/var/lib/ten/run/api-prod.sock"},
      {"SOCKET={socket}", "SOCKET=/var/lib/ten/run/api-prod.sock"},
      {"port={port};", "port=;"},
      {"{{id}}", "{id}"},
      {"{{{id}}}", "{prod}"},
      {"{{", "{"},
      {"}}", "}"},
      {"{{}}", "{}"},
      {"json {{\"id\": \"{id}\"}}", "json {\"id\": \"prod\"}"},
      {"{id}{id}{id}", "prodprodprod"},
      /* Unchecked input: unknown placeholders and stray braces stay verbatim. */
      {"{user}", "{user}"},
      {"{}", "{}"},
      {"{id", "{id"},
      {"a}b", "a}b"},
      {"{ {id}", "{ prod"}, /* "{ " is literal text, then {id} */
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    char *out = ten_template_expand(cases[i].tpl, &vars);
    CHECK_STR(out, cases[i].want);
    free(out);
  }
}

/* The empty template expands to "" (checked byte-wise: printing an
 * unterminated result would overrun the allocation). */
TEST(expand_empty) {
  char *out = ten_template_expand("", &vars);
  CHECK(out != NULL);
  if (out) CHECK_EQ(out[0], '\0');
  free(out);
}

/* Values are inserted as they are: braces in a value are not expanded. */
TEST(expand_values_verbatim) {
  ten_template_vars_t v = {"{service}", "svc", "/d", "", "8080"};
  char *out = ten_template_expand("{id}/{port}", &v);
  CHECK_STR(out, "{service}/8080");
  free(out);

  /* A NULL value keeps the placeholder as written. */
  ten_template_vars_t partial = {"x", NULL, NULL, NULL, NULL};
  out = ten_template_expand("{id}:{service}:{socket}", &partial);
  CHECK_STR(out, "x:{service}:{socket}");
  free(out);

  /* Long values and long templates grow the output. */
  char big[5000];
  memset(big, 'v', sizeof big - 1);
  big[sizeof big - 1] = '\0';
  ten_template_vars_t long_vars = {big, "s", "/d", "", ""};
  out = ten_template_expand("<{id}|{id}>", &long_vars);
  CHECK(out && strlen(out) == 2 * (sizeof big - 1) + 3);
  CHECK(out && out[0] == '<' && out[sizeof big] == '|');
  free(out);
}

/* Whatever passes the check expands with every placeholder replaced. */
TEST(check_then_expand) {
  static const char *const tpls[] = {
      "{data_dir}/{service}/{id}",
      "exec app --port {port} --socket {socket}",
      "{{literal}} {id}",
  };
  ten_template_vars_t v = {"i", "s", "/d", "/d/s.sock", "1234"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(tpls); i++) {
    CHECK_EQ(ten_template_check(tpls[i], ALL, NULL), 0);
    char *out = ten_template_expand(tpls[i], &v);
    CHECK(out && !strstr(out, "{id}") && !strstr(out, "{port}") && !strstr(out, "{data_dir}"));
    free(out);
  }
  char *out = ten_template_expand(tpls[2], &v);
  CHECK_STR(out, "{literal} i");
  free(out);
}

int main(void) {
  RUN(check_accepts);
  RUN(check_rejects);
  RUN(expand);
  RUN(expand_empty);
  RUN(expand_values_verbatim);
  RUN(check_then_expand);
  return test_report();
}
