/* test_config.c: loading tenement.lua into a ten_config_t, its errors,
 * overrides, the JSON dump, refcounting, and ten_schema_suggest. */
#include "test.h"
#include "policy/config.h"
#include "policy/schema.h"
#include "util/json.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

/* Writes text to a fresh /tmp file; returns its path (caller unlinks, frees). */
static char *write_temp(const char *text) {
  char *path = ten_xstrdup("/tmp/ten-unit-config-XXXXXX");
  int fd = mkstemp(path);
  if (fd < 0) {
    perror("mkstemp");
    exit(1);
  }
  size_t len = strlen(text);
  if (write(fd, text, len) != (ssize_t)len) {
    perror("write");
    exit(1);
  }
  close(fd);
  return path;
}

static void remove_temp(char *path) {
  unlink(path);
  free(path);
}

/* ---------------------------------------------------------------- defaults */

TEST(defaults_without_a_file) {
  setenv("TENEMENT_DATA_DIR", "/tmp/ten-unit-state", 1);
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load(NULL, NULL, &c, &err), 0);
  if (!c) return;
  CHECK(c->path == NULL);
  CHECK_STR(c->settings.domain, "localhost");
  CHECK_STR(c->settings.listen, "0.0.0.0");
  CHECK_EQ(c->settings.port, 8080);
  CHECK_STR(c->settings.data_dir, "/tmp/ten-unit-state");
  CHECK(c->settings.drain_timeout == 10);
  CHECK_EQ(c->settings.upstream_keepalive, 32);
  CHECK(c->settings.upstream_timeout == 60);
  CHECK_EQ(c->service_count, 0);
  CHECK_EQ(c->instance_count, 0);
  CHECK(c->L == NULL);
  CHECK(ten_config_service(c, "api", 3) == NULL);
  ten_config_unref(c);

  /* No TENEMENT_DATA_DIR: the per-user default. */
  unsetenv("TENEMENT_DATA_DIR");
  CHECK_EQ(ten_config_load(NULL, NULL, &c, &err), 0);
  char *def = ten_config_default_data_dir();
  CHECK_STR(c->settings.data_dir, def);
  CHECK(def[0] == '/');
  free(def);
  ten_config_unref(c);

  /* A relative TENEMENT_DATA_DIR is made absolute against the cwd. */
  setenv("TENEMENT_DATA_DIR", "rel-state", 1);
  CHECK_EQ(ten_config_load(NULL, NULL, &c, &err), 0);
  char cwd[PATH_MAX], want[PATH_MAX + 16];
  CHECK(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(want, sizeof want, "%s/rel-state", cwd);
  CHECK_STR(c->settings.data_dir, want);
  ten_config_unref(c);
  setenv("TENEMENT_DATA_DIR", "/tmp/ten-unit-state", 1);
}

/* ---------------------------------------------------------------- a full file */

static const char full_config[] =
    "-- a complete tenement.lua\n"
    "local n = 0\n"
    "for i = 1, 10 do n = n + i end\n"
    "settings {\n"
    "  domain = \"Example.COM.\",\n"
    "  listen = \"127.0.0.1\",\n"
    "  port = 9090,\n"
    "  data_dir = \"state\",\n"
    "  drain_timeout = 2.5,\n"
    "  upstream_keepalive = 8,\n"
    "  upstream_timeout = n,\n"
    "}\n"
    "service \"api\" {\n"
    "  command = \"app --id {id} --sock {socket}\",\n"
    "  health = \"/health\",\n"
    "  restart = \"always\",\n"
    "  env = { ZED = \"last\", ALPHA = \"{service}-{id}\", MIDDLE = 42 },\n"
    "  start_timeout = 5,\n"
    "  stop_timeout = 1.5,\n"
    "  backoff_initial = 0.25,\n"
    "  backoff_max = 8,\n"
    "  max_restarts = 3,\n"
    "  stable_after = 60,\n"
    "}\n"
    "service \"web\" {\n"
    "  command = \"web --port {port}\",\n"
    "  port = \"auto\",\n"
    "  directory = \"{data_dir}/{service}\",\n"
    "}\n"
    "instances { web = \"one\", api = { \"prod\", \"staging\" } }\n";

TEST(full_config) {
  char *path = write_temp(full_config);
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  int rc = ten_config_load(path, NULL, &c, &err);
  if (rc) fprintf(stderr, "  load failed: %s\n", err.msg);
  CHECK_EQ(rc, 0);
  if (!c) {
    remove_temp(path);
    return;
  }
  CHECK_STR(c->path, path);
  CHECK(c->L != NULL);
  const ten_settings_t *s = &c->settings;
  CHECK_STR(s->domain, "example.com"); /* lower-cased, trailing dot dropped */
  CHECK_STR(s->listen, "127.0.0.1");
  CHECK_EQ(s->port, 9090);
  CHECK_STR(s->data_dir, "/tmp/state"); /* relative to the file's folder */
  CHECK(s->drain_timeout == 2.5);
  CHECK_EQ(s->upstream_keepalive, 8);
  CHECK(s->upstream_timeout == 55); /* computed by plain Lua */

  CHECK_EQ(c->service_count, 2);
  const ten_service_conf_t *api = ten_config_service(c, "api", 3);
  const ten_service_conf_t *web = ten_config_service(c, "web", 3);
  CHECK(api && web && api == &c->services[0] && web == &c->services[1]);
  CHECK(ten_config_service(c, "ap", 2) == NULL);
  CHECK(ten_config_service(c, "apix", 3) == api); /* a (ptr, len) slice */
  CHECK(ten_config_service(c, "nope", 4) == NULL);
  if (!api || !web) goto out;

  CHECK_STR(api->name, "api");
  CHECK_EQ(api->line, 13);
  CHECK_STR(api->command, "app --id {id} --sock {socket}");
  CHECK(api->directory == NULL);
  CHECK_STR(api->socket, "{data_dir}/run/{service}-{id}.sock");
  CHECK(!api->port_auto);
  CHECK_STR(api->health, "/health");
  CHECK_EQ(api->restart, TEN_RESTART_ALWAYS);
  CHECK(api->start_timeout == 5 && api->stop_timeout == 1.5);
  CHECK(api->backoff_initial == 0.25 && api->backoff_max == 8);
  CHECK_EQ(api->max_restarts, 3);
  CHECK(api->stable_after == 60);
  /* env is sorted by name; numbers become strings. */
  CHECK_EQ(api->env_count, 3);
  if (api->env_count == 3) {
    CHECK_STR(api->env[0].name, "ALPHA");
    CHECK_STR(api->env[0].value, "{service}-{id}");
    CHECK_STR(api->env[1].name, "MIDDLE");
    CHECK_STR(api->env[1].value, "42");
    CHECK_STR(api->env[2].name, "ZED");
    CHECK_STR(api->env[2].value, "last");
  }

  CHECK_STR(web->name, "web");
  CHECK_EQ(web->line, 25);
  CHECK(web->port_auto);
  CHECK(web->socket == NULL);
  CHECK_STR(web->directory, "{data_dir}/{service}");
  CHECK(web->health == NULL);
  CHECK_EQ(web->env_count, 0);
  /* documented defaults */
  CHECK_EQ(web->restart, TEN_RESTART_ON_FAILURE);
  CHECK(web->start_timeout == 30 && web->stop_timeout == 10);
  CHECK(web->backoff_initial == 0.5 && web->backoff_max == 30);
  CHECK_EQ(web->max_restarts, 5);
  CHECK(web->stable_after == 30);

  /* instances: sorted by service, then in list order */
  CHECK_EQ(c->instance_count, 3);
  if (c->instance_count == 3) {
    CHECK_STR(c->instances[0].service, "api");
    CHECK_STR(c->instances[0].id, "prod");
    CHECK_STR(c->instances[1].service, "api");
    CHECK_STR(c->instances[1].id, "staging");
    CHECK_STR(c->instances[2].service, "web");
    CHECK_STR(c->instances[2].id, "one");
  }
  CHECK_STR(ten_restart_policy_name(TEN_RESTART_ON_FAILURE), "on-failure");
  CHECK_STR(ten_restart_policy_name(TEN_RESTART_ALWAYS), "always");
  CHECK_STR(ten_restart_policy_name(TEN_RESTART_NEVER), "never");
out:
  ten_config_unref(c);
  remove_temp(path);
}

/* An empty file is a valid config with nothing in it. */
/* An editor that truncates, then writes, leaves such files for a moment: a
 * file that declares no service is refused unless it says `instances {}`. */
TEST(empty_file) {
  static const char *const refused[] = {"", "\n\n", "-- soon\n", "local x = 1\n",
                                        "settings { port = 9000 }\n"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(refused); i++) {
    char *path = write_temp(refused[i]);
    ten_config_t *c = (ten_config_t *)&c; /* must be reset to NULL */
    ten_err_t err = {{0}};
    CHECK_EQ(ten_config_load(path, NULL, &c, &err), UV_EINVAL);
    CHECK(c == NULL);
    char want[128];
    snprintf(want, sizeof want, "%s: declares no service", path);
    CHECK(strncmp(err.msg, want, strlen(want)) == 0);
    CHECK_CONTAINS(err.msg, "instances {}");
    remove_temp(path);
  }
  static const char *const explicit_empty[] = {"instances {}\n",
                                               "settings { port = 9000 }\ninstances {}\n"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(explicit_empty); i++) {
    char *path = write_temp(explicit_empty[i]);
    ten_config_t *c = NULL;
    ten_err_t err;
    CHECK_EQ(ten_config_load(path, NULL, &c, &err), 0);
    CHECK(c && c->service_count == 0 && c->instance_count == 0);
    if (c) CHECK_STR(c->settings.domain, "localhost");
    ten_config_unref(c);
    remove_temp(path);
  }
}

/* Values the file made with metatables are read raw: a __len that claims
 * 2^40 entries allocated by it (an abort), one that loops hung the load. */
TEST(metatables_in_values) {
  static const char *const configs[] = {
      "settings { trusted_proxies = setmetatable({}, { __len = function() return 1 << 40 end }) }\n"
      "instances {}\n",
      "settings { trusted_proxies = setmetatable({}, { __len = function() while true do end end "
      "}) }\ninstances {}\n",
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(configs); i++) {
    char *path = write_temp(configs[i]);
    ten_config_t *c = NULL;
    ten_err_t err = {{0}};
    CHECK_EQ(ten_config_load(path, NULL, &c, &err), 0);
    if (c) CHECK_EQ(c->settings.trusted_proxy_count, 0);
    ten_config_unref(c);
    remove_temp(path);
  }
}

/* The memory limit of the config's state is an error naming the file. */
TEST(memory_limit) {
  char *path = write_temp("local s = string.rep('x', 1 << 30)\ninstances {}\n");
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load(path, NULL, &c, &err), UV_EINVAL);
  CHECK(c == NULL);
  char want[128];
  snprintf(want, sizeof want, "%s: config evaluation reached the memory limit", path);
  CHECK(strncmp(err.msg, want, strlen(want)) == 0);
  if (strncmp(err.msg, want, strlen(want)) != 0) fprintf(stderr, "  message: %s\n", err.msg);
  remove_temp(path);
}

/* ---------------------------------------------------------------- errors */

typedef struct bad_case {
  const char *name;
  const char *config;
  int line;              /* the line the message must name */
  const char *words[2];  /* and words it must contain */
} bad_case_t;

static const bad_case_t bad_cases[] = {
    {"unknown key, did you mean", "service \"api\" {\n  health = \"/health\",\n  comand = \"x\",\n}\n",
     3, {"unknown key 'comand'", "(did you mean 'command'?)"}},
    {"unknown settings key", "settings {\n  prot = 8080,\n}\n", 2,
     {"settings: unknown key 'prot'", "did you mean 'port'"}},
    {"unknown key, no hint", "service \"api\" { command = \"x\", zzzzzzzz = 1 }\n", 1,
     {"unknown key 'zzzzzzzz'", "service \"api\""}},
    {"wrong type", "service \"api\" {\n  command = \"x\",\n  start_timeout = \"soon\",\n}\n", 3,
     {"'start_timeout' must be a number of seconds", "got \"soon\""}},
    {"string expected", "settings { listen = 80 }\n", 1, {"'listen' must be a string", "got 80"}},
    {"empty string", "settings { listen = \"\" }\n", 1, {"'listen' must be a non-empty", NULL}},
    {"integer out of range", "settings { port = 70000 }\n", 1,
     {"'port' must be an integer from 0 to 65535", "got 70000"}},
    {"negative integer", "settings { port = -1 }\n", 1, {"'port' must be an integer", "-1"}},
    {"float for an integer", "settings { port = 80.5 }\n", 1, {"'port' must be an integer", NULL}},
    {"seconds out of range", "settings {\n  drain_timeout = 3601,\n}\n", 2,
     {"'drain_timeout' must be a number of seconds from 0 to 3600", "3601"}},
    {"NaN seconds", "service \"api\" { command = \"x\", stop_timeout = 0/0 }\n", 1,
     {"'stop_timeout' must be a number", NULL}},
    {"bad enum", "service \"api\" {\n  restart = \"sometimes\", command = \"x\",\n}\n", 2,
     {"'restart' must be one of \"on-failure\", \"always\", \"never\"", "got \"sometimes\""}},
    {"missing command", "service \"api\" {\n  health = \"/health\",\n}\n", 1,
     {"service \"api\"", "'command' is required"}},
    {"duplicate service", "service \"api\" { command = \"x\" }\nservice \"api\" { command = \"y\" }\n",
     2, {"service \"api\" is defined twice", "first at line 1"}},
    {"syntax error", "service \"api\" {\n  command = \"x\"\n  health = \"/h\"\n", 3, {"'}' expected", NULL}},
    {"runtime error", "local x = 1\nservce \"api\" { command = \"x\" }\n", 2,
     {"attempt to call a nil value", "servce"}},
    {"error()", "\n\nerror(\"custom failure\")\n", 3, {"custom failure", NULL}},
    {"runaway loop", "while true do end\n", 1, {"time limit of 1000 ms", NULL}},
    {"runaway loop later", "local a = 1\n\nwhile true do a = a + 1 end\n", 3, {"time limit", NULL}},
    {"loop catching its timeout", "while true do\n  pcall(function() while true do end end)\nend\n", 2,
     {"config evaluation exceeded its time limit", NULL}},
    {"pathological pattern", "\nlocal s = ('a'):rep(1e5):find('.-.-.-.-b')\n", 2, {"time limit", NULL}},
    {"os.exit", "os.exit(3)\n", 1, {"os.exit is not available", NULL}},
    {"io", "local f = io.open('/etc/hostname')\n", 1, {"io.open is not available", NULL}},
    {"unknown placeholder", "service \"api\" {\n  command = \"app --name {user}\",\n}\n", 2,
     {"unknown placeholder {user}", "{id}"}},
    {"unavailable placeholder", "service \"api\" {\n  command = \"x\",\n  socket = \"/run/{port}.sock\",\n}\n",
     3, {"'socket'", "unavailable placeholder {port}"}},
    {"unclosed brace", "service \"api\" { command = \"x {id\" }\n", 1, {"unclosed '{'", NULL}},
    {"bad env value", "service \"api\" {\n  command = \"x\",\n  env = { N = true },\n}\n", 3,
     {"env N must be a string or number", NULL}},
    {"bad env name", "service \"api\" {\n  command = \"x\",\n  env = { [\"1X\"] = \"v\" },\n}\n", 3,
     {"'env' keys must be variable names", NULL}},
    {"env not a table", "service \"api\" { command = \"x\", env = \"A=1\" }\n", 1,
     {"'env' must be a table", NULL}},
    {"bad health path", "service \"api\" { command = \"x\", health = \"health\" }\n", 1,
     {"'health' must be a URL path", NULL}},
    {"bad port value", "service \"api\" { command = \"x\", port = 8080 }\n", 1,
     {"'port' must be \"auto\"", NULL}},
    {"socket and port", "service \"api\" { command = \"x\", socket = \"/tmp/a.sock\", port = \"auto\" }\n", 1,
     {"either 'socket' or 'port'", NULL}},
    {"positional value", "settings { \"oops\" }\n", 1, {"every value needs a key", NULL}},
    {"instances of an unknown service", "service \"api\" { command = \"x\" }\ninstances { web = { \"a\" } }\n",
     2, {"unknown service 'web'", NULL}},
    {"instance listed twice", "service \"api\" { command = \"x\" }\ninstances { api = { \"a\", \"a\" } }\n",
     2, {"api:a is listed twice", NULL}},
    {"bad instance id", "service \"api\" { command = \"x\" }\ninstances { api = { \"Bad_Id\" } }\n", 2,
     {"not a valid id", NULL}},
    {"bad service name", "service \"My API\" { command = \"x\" }\n", 1, {"service name \"My API\"", NULL}},
    {"service without a body", "\nservice \"api\"\n", 2, {"has no body", NULL}},
    {"settings twice", "settings { port = 1 }\nsettings { port = 2 }\n", 2, {"settings given twice", NULL}},
    {"bad domain", "settings { domain = \"not a domain\" }\n", 1, {"'domain' must be a DNS name", NULL}},
    {"domain label with '-'", "settings { domain = \"-bad.com\" }\n", 1, {"'domain' must be a DNS name", NULL}},
};

TEST(errors) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad_cases); i++) {
    const bad_case_t *b = &bad_cases[i];
    char *path = write_temp(b->config);
    ten_config_t *c = (ten_config_t *)&c; /* must be reset to NULL */
    ten_err_t err = {{0}};
    int rc = ten_config_load(path, NULL, &c, &err);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%d:", path, b->line);
    int ok = rc == UV_EINVAL && c == NULL && strncmp(err.msg, prefix, strlen(prefix)) == 0;
    for (int w = 0; w < 2; w++) ok = ok && (!b->words[w] || strstr(err.msg, b->words[w]));
    if (!ok)
      fprintf(stderr, "  %s: rc %d, message \"%s\" (want prefix %s)\n", b->name, rc, err.msg, prefix);
    CHECK(ok);
    if (rc == 0) ten_config_unref(c);
    remove_temp(path);
  }
}

TEST(missing_file) {
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load("/nonexistent/tenement.lua", NULL, &c, &err), UV_ENOENT);
  CHECK(c == NULL);
  CHECK_CONTAINS(err.msg, "/nonexistent/tenement.lua: cannot read config");
  /* A directory is not a config file. */
  CHECK(ten_config_load("/tmp", NULL, &c, &err) < 0);
  CHECK(c == NULL);
}

/* Lua names chunks by at most LUA_IDSIZE (60) characters; messages must
 * still start with the path as given, like the schema errors do. */
TEST(long_path_error_prefix) {
  char dir[] = "/tmp/ten-unit-a-rather-long-directory-name-for-configs-XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char path[256];
  snprintf(path, sizeof path, "%s/tenement.lua", dir);
  static const struct {
    const char *config;
    int line;
  } cases[] = {
      {"service \"api\" {\n  command = \"x\"\n  health = \"/h\"\n", 3}, /* syntax */
      {"\nservce \"api\" {}\n", 2},                                  /* runtime */
      {"settings { prot = 1 }\n", 1},                                /* schema */
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    FILE *f = fopen(path, "w");
    fputs(cases[i].config, f);
    fclose(f);
    ten_config_t *c = NULL;
    ten_err_t err = {{0}};
    CHECK_EQ(ten_config_load(path, NULL, &c, &err), UV_EINVAL);
    char prefix[300];
    snprintf(prefix, sizeof prefix, "%s:%d:", path, cases[i].line);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
      fprintf(stderr, "  message \"%s\" does not start with \"%s\"\n", err.msg, prefix);
    CHECK(strncmp(err.msg, prefix, strlen(prefix)) == 0);
  }
  unlink(path);
  rmdir(dir);
}

/* The line of a bad key is the line the key is written on, not an earlier
 * line that merely mentions it in a comment or a nested table. */
TEST(key_line_is_the_assignment) {
  static const struct {
    const char *config;
    int line;
  } cases[] = {
      {"service \"api\" {\n  command = \"x\",\n  health = \"nope\",\n}\n", 3},
      {"service \"api\" {\n  -- health = \"/x\" is optional\n  command = \"x\",\n"
       "  health = \"nope\",\n}\n", 4},
      {"service \"api\" {\n  command = \"x\",\n  env = { port = \"1\" },\n  port = 8080,\n}\n", 4},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    char *path = write_temp(cases[i].config);
    ten_config_t *c = NULL;
    ten_err_t err = {{0}};
    CHECK_EQ(ten_config_load(path, NULL, &c, &err), UV_EINVAL);
    char prefix[128];
    snprintf(prefix, sizeof prefix, "%s:%d:", path, cases[i].line);
    if (strncmp(err.msg, prefix, strlen(prefix)) != 0)
      fprintf(stderr, "  case %zu: \"%s\" does not start with \"%s\"\n", i, err.msg, prefix);
    CHECK(strncmp(err.msg, prefix, strlen(prefix)) == 0);
    remove_temp(path);
  }
}

/* ---------------------------------------------------------------- overrides */

TEST(overrides) {
  char *path = write_temp("settings { domain = \"file.example\", port = 1234, listen = \"::1\", "
                          "data_dir = \"/srv/file\" }\ninstances {}\n");
  ten_config_overrides_t o = {"Override.ORG.", "127.0.0.2", 0, "/srv/flag"};
  ten_config_t *c = NULL;
  ten_err_t err = {{0}};
  CHECK_EQ(ten_config_load(path, &o, &c, &err), 0);
  if (c) {
    CHECK_STR(c->settings.domain, "override.org");
    CHECK_STR(c->settings.listen, "127.0.0.2");
    CHECK_EQ(c->settings.port, 0);
    CHECK_STR(c->settings.data_dir, "/srv/flag");
    ten_config_unref(c);
  }
  /* Not given: the file's values stay. */
  ten_config_overrides_t none = TEN_CONFIG_OVERRIDES_NONE;
  CHECK_EQ(ten_config_load(path, &none, &c, &err), 0);
  if (c) {
    CHECK_STR(c->settings.domain, "file.example");
    CHECK_EQ(c->settings.port, 1234);
    CHECK_STR(c->settings.listen, "::1");
    CHECK_STR(c->settings.data_dir, "/srv/file");
    ten_config_unref(c);
  }
  /* A relative --data-dir is taken from the cwd, not the file's folder. */
  ten_config_overrides_t rel = {NULL, NULL, -1, "flag-dir"};
  CHECK_EQ(ten_config_load(path, &rel, &c, &err), 0);
  char cwd[PATH_MAX], want[PATH_MAX + 16];
  CHECK(getcwd(cwd, sizeof cwd) != NULL);
  snprintf(want, sizeof want, "%s/flag-dir", cwd);
  if (c) CHECK_STR(c->settings.data_dir, want);
  ten_config_unref(c);

  /* Bad overrides fail the load. */
  ten_config_overrides_t bad_domain = {"bad domain!", NULL, -1, NULL};
  c = NULL;
  CHECK_EQ(ten_config_load(path, &bad_domain, &c, &err), UV_EINVAL);
  CHECK(c == NULL);
  CHECK_CONTAINS(err.msg, "--domain bad domain!: must be a DNS name");
  ten_config_overrides_t bad_port = {NULL, NULL, 70000, NULL};
  CHECK_EQ(ten_config_load(NULL, &bad_port, &c, &err), UV_EINVAL);
  CHECK(c == NULL);
  CHECK_CONTAINS(err.msg, "--port 70000");
  ten_config_overrides_t max_port = {NULL, NULL, 65535, NULL};
  CHECK_EQ(ten_config_load(NULL, &max_port, &c, &err), 0);
  if (c) CHECK_EQ(c->settings.port, 65535);
  ten_config_unref(c);
  remove_temp(path);
}

/* ---------------------------------------------------------------- JSON dump */

TEST(to_json) {
  char *path = write_temp(full_config);
  ten_config_t *c = NULL;
  ten_err_t err;
  CHECK_EQ(ten_config_load(path, NULL, &c, &err), 0);
  if (!c) {
    remove_temp(path);
    return;
  }
  ten_buf_t out = TEN_BUF_INIT;
  ten_config_to_json(c, &out);
  ten_json_t *j = NULL;
  CHECK_EQ(ten_json_parse(out.data, out.len, &j, &err), 0);
  if (!j) {
    fprintf(stderr, "  not JSON: %s\n", out.data);
    goto done;
  }
  CHECK_STR(ten_json_get_str(j, "path"), path);
  const ten_json_t *s = ten_json_get(j, "settings");
  double n = 0;
  CHECK_STR(ten_json_get_str(s, "domain"), "example.com");
  CHECK(ten_json_get_num(s, "port", &n) && n == 9090);
  CHECK(ten_json_get_num(s, "drain_timeout", &n) && n == 2.5);
  CHECK_STR(ten_json_get_str(s, "data_dir"), "/tmp/state");
  const ten_json_t *services = ten_json_get(j, "services");
  CHECK(services && services->type == TEN_JSON_OBJECT && services->count == 2);
  const ten_json_t *api = ten_json_get(services, "api");
  CHECK_STR(ten_json_get_str(api, "command"), "app --id {id} --sock {socket}");
  CHECK_STR(ten_json_get_str(api, "socket"), "{data_dir}/run/{service}-{id}.sock");
  CHECK_STR(ten_json_get_str(api, "restart"), "always");
  CHECK(ten_json_get(api, "port") && ten_json_get(api, "port")->type == TEN_JSON_NULL);
  CHECK(ten_json_get(api, "directory") && ten_json_get(api, "directory")->type == TEN_JSON_NULL);
  CHECK(ten_json_get_num(api, "backoff_initial", &n) && n == 0.25);
  CHECK(ten_json_get_num(api, "max_restarts", &n) && n == 3);
  const ten_json_t *env = ten_json_get(api, "env");
  CHECK(env && env->count == 3);
  CHECK_STR(ten_json_get_str(env, "ALPHA"), "{service}-{id}");
  CHECK_STR(ten_json_get_str(env, "MIDDLE"), "42");
  const ten_json_t *web = ten_json_get(services, "web");
  CHECK_STR(ten_json_get_str(web, "port"), "auto");
  CHECK(ten_json_get(web, "socket") && ten_json_get(web, "socket")->type == TEN_JSON_NULL);
  CHECK_STR(ten_json_get_str(web, "restart"), "on-failure");
  const ten_json_t *inst = ten_json_get(j, "instances");
  CHECK(inst && inst->type == TEN_JSON_ARRAY && inst->count == 3);
  if (inst && inst->count == 3) {
    CHECK_STR(ten_json_get_str(&inst->items[1], "service"), "api");
    CHECK_STR(ten_json_get_str(&inst->items[1], "id"), "staging");
  }
  /* Every option of both tables is in the dump. */
  for (const ten_option_t *o = ten_settings_options; o->name; o++) CHECK(ten_json_get(s, o->name));
  for (const ten_option_t *o = ten_service_options; o->name; o++) CHECK(ten_json_get(web, o->name));

done:
  ten_json_free(j);
  ten_buf_free(&out);

  /* The defaults-only config dumps too, with a null path. */
  ten_config_t *d = NULL;
  CHECK_EQ(ten_config_load(NULL, NULL, &d, &err), 0);
  ten_config_to_json(d, &out);
  j = NULL;
  CHECK_EQ(ten_json_parse(out.data, out.len, &j, &err), 0);
  CHECK(ten_json_get(j, "path") && ten_json_get(j, "path")->type == TEN_JSON_NULL);
  CHECK(ten_json_get(j, "instances") && ten_json_get(j, "instances")->count == 0);
  ten_json_free(j);
  ten_buf_free(&out);
  ten_config_unref(d);
  ten_config_unref(c);
  remove_temp(path);
}

/* ---------------------------------------------------------------- refcounts */

TEST(refcounting) {
  char *path = write_temp(full_config);
  ten_config_t *c = NULL;
  ten_err_t err;
  CHECK_EQ(ten_config_load(path, NULL, &c, &err), 0);
  if (!c) {
    remove_temp(path);
    return;
  }
  CHECK_EQ(c->_refs, 1);
  CHECK(ten_config_ref(c) == c);
  ten_config_ref(c);
  CHECK_EQ(c->_refs, 3);
  const ten_service_conf_t *api = ten_config_service(c, "api", 3);
  ten_config_unref(c);
  ten_config_unref(c);
  CHECK_EQ(c->_refs, 1);
  CHECK_STR(api->command, "app --id {id} --sock {socket}"); /* still alive (ASan) */
  ten_config_unref(c); /* the last reference frees it; LeakSanitizer checks */
  ten_config_unref(NULL);
  remove_temp(path);
}

/* ---------------------------------------------------------------- suggest */

TEST(suggest) {
  static const struct {
    const ten_option_t *opts;
    const char *name;
    const char *want; /* NULL: no suggestion */
  } cases[] = {
      {ten_service_options, "comand", "command"},
      {ten_service_options, "commmand", "command"},
      {ten_service_options, "helth", "health"},
      {ten_service_options, "restrat", "restart"},
      {ten_service_options, "envv", "env"},
      {ten_service_options, "start-timeout", "start_timeout"},
      {ten_service_options, "command", "command"},
      {ten_service_options, "xyzzy", NULL},
      {ten_service_options, "cmd", NULL},
      {ten_service_options, "", NULL},
      {ten_settings_options, "prot", "port"},
      {ten_settings_options, "domian", "domain"},
      {ten_settings_options, "datadir", "data_dir"},
      {ten_settings_options, "listen_address", NULL},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    const char *got = ten_schema_suggest(cases[i].opts, cases[i].name);
    if (cases[i].want)
      CHECK_STR(got, cases[i].want);
    else
      CHECK(got == NULL);
  }
  /* Names longer than 64 characters never match (and do not overflow). */
  char long_name[200];
  memset(long_name, 'a', sizeof long_name - 1);
  long_name[sizeof long_name - 1] = '\0';
  CHECK(ten_schema_suggest(ten_service_options, long_name) == NULL);
}

int main(void) {
  RUN(defaults_without_a_file);
  RUN(full_config);
  RUN(empty_file);
  RUN(metatables_in_values);
  RUN(memory_limit);
  RUN(errors);
  RUN(missing_file);
  RUN(long_path_error_prefix);
  RUN(key_line_is_the_assignment);
  RUN(overrides);
  RUN(to_json);
  RUN(refcounting);
  RUN(suggest);
  return test_report();
}
