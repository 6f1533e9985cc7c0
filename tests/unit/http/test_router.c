/* test_router.c: Host header -> root / service / instance / unknown / bad. */
#include "test.h"
#include "http/router.h"
#include "util/common.h"

#define BAD      TEN_ROUTE_BAD
#define UNKNOWN  TEN_ROUTE_UNKNOWN
#define ROOT     TEN_ROUTE_ROOT
#define SERVICE  TEN_ROUTE_SERVICE
#define INSTANCE TEN_ROUTE_INSTANCE

typedef struct route_case {
  const char *host;
  ten_route_kind_t kind;
  const char *service; /* expected span, or NULL */
  const char *id;
  const char *norm; /* expected normalised host when not BAD, or NULL to skip */
} route_case_t;

static void run_cases(const route_case_t *cases, size_t n, const char *domain) {
  for (size_t i = 0; i < n; i++) {
    const route_case_t *c = &cases[i];
    ten_route_t r;
    memset(&r, 0x5a, sizeof r); /* every field must be written */
    ten_route_host(c->host, strlen(c->host), domain, strlen(domain), &r);
    if (r.kind != c->kind)
      fprintf(stderr, "  host \"%s\" (domain %s): got %s, want %s\n", c->host, domain,
              ten_route_kind_name(r.kind), ten_route_kind_name(c->kind));
    CHECK_EQ(r.kind, c->kind);
    if (r.kind != c->kind) continue;

    if (c->service) {
      CHECK(r.service && r.service_len == strlen(c->service) &&
            memcmp(r.service, c->service, r.service_len) == 0);
      /* The spans point into the normalised copy, not the caller's buffer. */
      CHECK(r.service >= r.host && r.service + r.service_len <= r.host + r.host_len);
    } else {
      CHECK(r.service == NULL && r.service_len == 0);
    }
    if (c->id) {
      CHECK(r.id && r.id_len == strlen(c->id) && memcmp(r.id, c->id, r.id_len) == 0);
      CHECK(r.id == r.host);
    } else {
      CHECK(r.id == NULL && r.id_len == 0);
    }
    if (c->kind == BAD) {
      CHECK_EQ(r.host_len, 0);
    } else if (c->norm) {
      CHECK_STR(r.host, c->norm);
      CHECK_EQ(r.host_len, strlen(c->norm));
    }
  }
}

TEST(localhost) {
  static const route_case_t cases[] = {
      {"localhost", ROOT, NULL, NULL, "localhost"},
      {"localhost:8080", ROOT, NULL, NULL, "localhost"},
      {"localhost:", ROOT, NULL, NULL, "localhost"}, /* port = *DIGIT */
      {"LOCALHOST", ROOT, NULL, NULL, "localhost"},
      {"LocalHost:80", ROOT, NULL, NULL, "localhost"},
      {"localhost.", ROOT, NULL, NULL, "localhost"},
      {"localhost.:8080", ROOT, NULL, NULL, "localhost"},
      {"api.localhost", SERVICE, "api", NULL, "api.localhost"},
      {"API.LocalHost:3000", SERVICE, "api", NULL, "api.localhost"},
      {"api.localhost.", SERVICE, "api", NULL, "api.localhost"},
      {"my-api2.localhost", SERVICE, "my-api2", NULL, NULL},
      {"a.localhost", SERVICE, "a", NULL, NULL},
      {"9.localhost", SERVICE, "9", NULL, NULL},
      {"prod.api.localhost", INSTANCE, "api", "prod", "prod.api.localhost"},
      {"Prod.Api.Localhost:65535", INSTANCE, "api", "prod", "prod.api.localhost"},
      {"x-1.a-b.localhost.", INSTANCE, "a-b", "x-1", NULL},
      /* deeper names are not ours */
      {"a.b.c.localhost", UNKNOWN, NULL, NULL, "a.b.c.localhost"},
      {"x.prod.api.localhost:80", UNKNOWN, NULL, NULL, NULL},
      /* other domains and suffix tricks */
      {"example.com", UNKNOWN, NULL, NULL, NULL},
      {"evillocalhost", UNKNOWN, NULL, NULL, NULL},
      {"api.evillocalhost", UNKNOWN, NULL, NULL, NULL},
      {"localhost.evil", UNKNOWN, NULL, NULL, NULL},
      {"localhost.evil.com", UNKNOWN, NULL, NULL, NULL},
      {"a.blocalhost", UNKNOWN, NULL, NULL, NULL},
      {"localhos", UNKNOWN, NULL, NULL, NULL},
      {"calhost", UNKNOWN, NULL, NULL, NULL},
      {"host", UNKNOWN, NULL, NULL, NULL},
      /* empty labels */
      {".localhost", UNKNOWN, NULL, NULL, NULL},
      {"..localhost", UNKNOWN, NULL, NULL, NULL},
      {"a..localhost", UNKNOWN, NULL, NULL, NULL},
      {".a.localhost", UNKNOWN, NULL, NULL, NULL},
      {"localhost..", UNKNOWN, NULL, NULL, NULL},
      /* labels must be [a-z0-9-], not starting or ending with '-' */
      {"-api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"api-.localhost", UNKNOWN, NULL, NULL, NULL},
      {"-.localhost", UNKNOWN, NULL, NULL, NULL},
      {"prod.-api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"-prod.api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"prod-.api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"my_api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"api%20.localhost", UNKNOWN, NULL, NULL, NULL},
      {"api*.localhost", UNKNOWN, NULL, NULL, NULL},
      /* IP addresses are valid hosts but not ours */
      {"127.0.0.1", UNKNOWN, NULL, NULL, "127.0.0.1"},
      {"127.0.0.1:8080", UNKNOWN, NULL, NULL, "127.0.0.1"},
      {"[::1]", UNKNOWN, NULL, NULL, "[::1]"},
      {"[::1]:8080", UNKNOWN, NULL, NULL, "[::1]"},
      {"[2001:DB8::1]:443", UNKNOWN, NULL, NULL, "[2001:db8::1]"},
      /* malformed */
      {"", BAD, NULL, NULL, NULL},
      {":80", BAD, NULL, NULL, NULL},
      {":", BAD, NULL, NULL, NULL},
      {".", BAD, NULL, NULL, NULL},
      {".:80", BAD, NULL, NULL, NULL},
      {"localhost:99999x", BAD, NULL, NULL, NULL},
      {"localhost:123456", BAD, NULL, NULL, NULL},
      {"localhost:80a", BAD, NULL, NULL, NULL},
      {"localhost:-1", BAD, NULL, NULL, NULL},
      {"localhost:8080:80", BAD, NULL, NULL, NULL},
      {"localhost: 80", BAD, NULL, NULL, NULL},
      {"local host", BAD, NULL, NULL, NULL},
      {" localhost", BAD, NULL, NULL, NULL},
      {"localhost ", BAD, NULL, NULL, NULL},
      {"api.localhost\t", BAD, NULL, NULL, NULL},
      {"local\rhost", BAD, NULL, NULL, NULL},
      {"local\nhost", BAD, NULL, NULL, NULL},
      {"\x01localhost", BAD, NULL, NULL, NULL},
      {"localhost\x7f", BAD, NULL, NULL, NULL},
      {"caf\xc3\xa9.localhost", BAD, NULL, NULL, NULL},
      {"user@localhost", BAD, NULL, NULL, NULL},
      {"@localhost", BAD, NULL, NULL, NULL},
      {"localhost/", BAD, NULL, NULL, NULL},
      {"localhost/path", BAD, NULL, NULL, NULL},
      {"api.localhost\\x", BAD, NULL, NULL, NULL},
      {"[::1", BAD, NULL, NULL, NULL},
      {"[::1]x", BAD, NULL, NULL, NULL},
      {"[::1]:80x", BAD, NULL, NULL, NULL},
      {"[::1]:", UNKNOWN, NULL, NULL, "[::1]"},
  };
  run_cases(cases, TEN_ARRAY_SIZE(cases), "localhost");
}

TEST(example_com) {
  static const route_case_t cases[] = {
      {"example.com", ROOT, NULL, NULL, "example.com"},
      {"EXAMPLE.COM.:443", ROOT, NULL, NULL, "example.com"},
      {"api.example.com", SERVICE, "api", NULL, "api.example.com"},
      {"prod.api.example.com", INSTANCE, "api", "prod", NULL},
      {"a.b.c.example.com", UNKNOWN, NULL, NULL, NULL},
      {"com", UNKNOWN, NULL, NULL, NULL},
      {"example.co", UNKNOWN, NULL, NULL, NULL},
      {"xexample.com", UNKNOWN, NULL, NULL, NULL},
      {"api.xexample.com", UNKNOWN, NULL, NULL, NULL},
      {"exampleXcom", UNKNOWN, NULL, NULL, NULL},
      {"api.exampleXcom", UNKNOWN, NULL, NULL, NULL},
      {"example.com.evil", UNKNOWN, NULL, NULL, NULL},
      {"api.example.com.evil.com", UNKNOWN, NULL, NULL, NULL},
      {"localhost", UNKNOWN, NULL, NULL, NULL},
      {"api.localhost", UNKNOWN, NULL, NULL, NULL},
      {"[::1]:8080", UNKNOWN, NULL, NULL, NULL},
      {"example.com/", BAD, NULL, NULL, NULL},
      {"", BAD, NULL, NULL, NULL},
  };
  run_cases(cases, TEN_ARRAY_SIZE(cases), "example.com");
}

/* Labels up to 63 characters, hosts up to 255. */
TEST(lengths) {
  char host[600];
  ten_route_t r;
  /* A 63-character service label is fine; 64 is not a DNS label. */
  memset(host, 'a', 63);
  strcpy(host + 63, ".localhost");
  ten_route_host(host, strlen(host), "localhost", 9, &r);
  CHECK_EQ(r.kind, SERVICE);
  CHECK_EQ(r.service_len, 63);
  memset(host, 'a', 64);
  strcpy(host + 64, ".localhost");
  ten_route_host(host, strlen(host), "localhost", 9, &r);
  CHECK_EQ(r.kind, UNKNOWN);
  memset(host, 'b', 64);
  host[64] = '.';
  memset(host + 65, 'a', 3);
  strcpy(host + 68, ".localhost");
  ten_route_host(host, strlen(host), "localhost", 9, &r);
  CHECK_EQ(r.kind, UNKNOWN); /* 64-character id */

  /* Exactly 255 characters: classified; 256 or more: bad. */
  memset(host, 'x', sizeof host);
  ten_route_host(host, 255, "localhost", 9, &r);
  CHECK_EQ(r.kind, UNKNOWN);
  CHECK_EQ(r.host_len, 255);
  CHECK_EQ(r.host[255], '\0');
  ten_route_host(host, 256, "localhost", 9, &r);
  CHECK_EQ(r.kind, BAD);
  ten_route_host(host, sizeof host, "localhost", 9, &r);
  CHECK_EQ(r.kind, BAD);
  /* 255 plus a port or a trailing dot still fits. */
  memcpy(host + 255, ":8080", 5);
  ten_route_host(host, 260, "localhost", 9, &r);
  CHECK_EQ(r.kind, UNKNOWN);
  host[255] = '.';
  ten_route_host(host, 256, "localhost", 9, &r);
  CHECK_EQ(r.kind, UNKNOWN);
  /* A 300-character name under our domain is bad, not a service. */
  memset(host, 'a', 300);
  strcpy(host + 300, ".localhost");
  ten_route_host(host, strlen(host), "localhost", 9, &r);
  CHECK_EQ(r.kind, BAD);
}

/* The host is a (ptr, len) slice: bytes past len are not part of it. */
TEST(slices) {
  ten_route_t r;
  const char *buf = "prod.api.localhost\r\nX-Other: y";
  ten_route_host(buf, 18, "localhost", 9, &r);
  CHECK_EQ(r.kind, INSTANCE);
  CHECK_EQ(r.host_len, 18);
  ten_route_host(buf, 19, "localhost", 9, &r);
  CHECK_EQ(r.kind, BAD);
  /* A domain given as a slice too. */
  ten_route_host("api.example.com", 15, "example.com.evil", 11, &r);
  CHECK_EQ(r.kind, SERVICE);
  ten_route_host("a", 0, "localhost", 9, &r);
  CHECK_EQ(r.kind, BAD);
}

/* router.h: host is "normalised host, NUL-terminated". A BAD route has no
 * host (host_len 0), so host must read as "" too; it must never be left
 * holding an unterminated partial copy of the rejected value. */
TEST(bad_leaves_empty_host) {
  static const char *const bad[] = {"local host", "user@localhost", "localhost/x", "caf\xc3.x"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad); i++) {
    ten_route_t r;
    memset(&r, 0x5a, sizeof r);
    ten_route_host(bad[i], strlen(bad[i]), "localhost", 9, &r);
    CHECK_EQ(r.kind, BAD);
    CHECK_EQ(r.host_len, 0);
    CHECK(memchr(r.host, '\0', sizeof r.host) != NULL);
    if (r.host[0] != '\0')
      fprintf(stderr, "  BAD route for \"%s\" left host = \"%.*s...\"\n", bad[i], 5, r.host);
    CHECK_EQ(r.host[0], '\0');
  }
}

TEST(kind_names) {
  CHECK_STR(ten_route_kind_name(BAD), "bad");
  CHECK_STR(ten_route_kind_name(UNKNOWN), "unknown");
  CHECK_STR(ten_route_kind_name(ROOT), "root");
  CHECK_STR(ten_route_kind_name(SERVICE), "service");
  CHECK_STR(ten_route_kind_name(INSTANCE), "instance");
  CHECK_STR(ten_route_kind_name((ten_route_kind_t)99), "?");
}

int main(void) {
  RUN(localhost);
  RUN(example_com);
  RUN(lengths);
  RUN(slices);
  RUN(bad_leaves_empty_host);
  RUN(kind_names);
  return test_report();
}
