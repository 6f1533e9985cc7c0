/* main.c: `ten` argument parsing and command dispatch. */
#include "cli/cli.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "obs/db.h"

static const char usage_text[] =
    "usage: ten <command> [options]\n"
    "\n"
    "Server:\n"
    "  serve                 run the server (routes, supervises, serves the API)\n"
    "      --config FILE     tenement.lua to load (default: $TENEMENT_CONFIG or ./tenement.lua)\n"
    "      --port N          HTTP port (0 picks a free one and prints it)\n"
    "      --listen ADDR     address to bind (default 0.0.0.0)\n"
    "      --domain NAME     hosts are {id}.{service}.NAME (default localhost)\n"
    "      --data-dir DIR    state, sockets and logs\n"
    "\n"
    "Talking to a running server (found by --config, --data-dir or $TENEMENT_DATA_DIR):\n"
    "  ps [--json]                     list instances\n"
    "  spawn SERVICE --id ID [--no-wait]  start an instance and wait until it is ready\n"
    "  stop SERVICE:ID [--no-wait]     stop an instance (SIGTERM, then SIGKILL)\n"
    "  restart SERVICE:ID [--no-wait]  stop and start again\n"
    "  weight SERVICE:ID N             share of {service}.{domain} traffic, 0-100 (persisted)\n"
    "  reload                          load tenement.lua again and apply the difference\n"
    "  repl [-e CODE]                  Lua inside the server: ten.ps(), ten.spawn(...), ...\n"
    "  logs [SERVICE[:ID]] [-f] [--search Q] [--level L] [--since 10m] [--until T] [--limit N]\n"
    "                                  stored lines, newest last; -f follows new ones\n"
    "\n"
    "API tokens (work with or without a running server):\n"
    "  token-gen [--name NAME] [--tenant ID]  a new token, printed once (--tenant: that id only)\n"
    "  token-list                      names, tenants and creation times\n"
    "  token-revoke NAME               stops the token working at once\n"
    "\n"
    "Other:\n"
    "  config [--running]    check tenement.lua and print the effective config as JSON\n"
    "                        (--running: the config of the running server)\n"
    "  version               print the version\n"
    "  help                  this text\n"
    "\n"
    "Exit status: 0 ok, 1 error from the server, 2 usage or config error, 3 no server running.\n";

static int usage_error(const char *fmt, ...) TEN_PRINTF(1, 2);
static int usage_error(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fprintf(stderr, "ten: ");
  vfprintf(stderr, fmt, ap);
  fprintf(stderr, "\nrun `ten help` for usage\n");
  va_end(ap);
  return TEN_EXIT_USAGE;
}

static int parse_port(const char *s, int *out) {
  char *end;
  long v = strtol(s, &end, 10);
  if (!*s || *end || v < 0 || v > 65535) return -1;
  *out = (int)v;
  return 0;
}

/* Options take a value as `--opt value` or `--opt=value`. */
static int parse(int argc, char **argv, ten_cli_opts_t *o) {
  memset(o, 0, sizeof *o);
  o->port = -1;
  for (int i = 1; i < argc; i++) {
    char *a = argv[i];
    /* "-5" is a (bad) number for the command to judge, not an option. */
    if (a[0] != '-' || a[1] == '\0' || (a[1] >= '0' && a[1] <= '9')) {
      if (!o->command)
        o->command = a;
      else if (o->arg_count < (int)TEN_ARRAY_SIZE(o->args))
        o->args[o->arg_count++] = a;
      else
        return usage_error("too many arguments at '%s'", a);
      continue;
    }
    if (!strcmp(a, "--")) continue;
    char name[64];
    const char *value = NULL;
    const char *eq = strchr(a, '=');
    size_t name_len = eq ? (size_t)(eq - a) : strlen(a);
    if (name_len >= sizeof name) return usage_error("unknown option '%s'", a);
    memcpy(name, a, name_len);
    name[name_len] = '\0';
    if (eq) value = eq + 1;

    static const struct {
      const char *long_name, *short_name;
      bool takes_value;
    } known[] = {
        {"--config", "-c", true}, {"--data-dir", "-d", true}, {"--port", "-p", true},
        {"--domain", NULL, true}, {"--listen", NULL, true},   {"--id", NULL, true},
        {"--json", NULL, false},  {"--no-wait", NULL, false}, {"--running", NULL, false},
        {"--help", "-h", false},  {"--version", "-V", false}, {"--eval", "-e", true},
        {"--follow", "-f", false}, {"--search", NULL, true},  {"--level", NULL, true},
        {"--since", NULL, true},   {"--until", NULL, true},   {"--limit", "-n", true},
        {"--tail", NULL, true},    {"--name", NULL, true},    {"--tenant", NULL, true},
    };
    size_t k = 0;
    for (; k < TEN_ARRAY_SIZE(known); k++)
      if (!strcmp(name, known[k].long_name) ||
          (known[k].short_name && !strcmp(name, known[k].short_name)))
        break;
    if (k == TEN_ARRAY_SIZE(known)) return usage_error("unknown option '%s'", a);
    if (known[k].takes_value && !value) {
      if (i + 1 >= argc) return usage_error("option '%s' needs a value", name);
      value = argv[++i];
    } else if (!known[k].takes_value && value) {
      return usage_error("option '%s' takes no value", name);
    }
    const char *n = known[k].long_name;
    if (!strcmp(n, "--config"))
      o->config = value;
    else if (!strcmp(n, "--data-dir"))
      o->data_dir = value;
    else if (!strcmp(n, "--domain"))
      o->domain = value;
    else if (!strcmp(n, "--listen"))
      o->listen = value;
    else if (!strcmp(n, "--id"))
      o->id = value;
    else if (!strcmp(n, "--json"))
      o->json = true;
    else if (!strcmp(n, "--no-wait"))
      o->no_wait = true;
    else if (!strcmp(n, "--running"))
      o->running = true;
    else if (!strcmp(n, "--eval"))
      o->eval = value;
    else if (!strcmp(n, "--follow"))
      o->follow = true;
    else if (!strcmp(n, "--search"))
      o->search = value;
    else if (!strcmp(n, "--level"))
      o->level = value;
    else if (!strcmp(n, "--since"))
      o->since = value;
    else if (!strcmp(n, "--until"))
      o->until = value;
    else if (!strcmp(n, "--limit"))
      o->limit = value;
    else if (!strcmp(n, "--tail"))
      o->tail = value;
    else if (!strcmp(n, "--name"))
      o->name = value;
    else if (!strcmp(n, "--tenant"))
      o->tenant = value;
    else if (!strcmp(n, "--help"))
      o->command = "help";
    else if (!strcmp(n, "--version"))
      o->command = "version";
    else if (!strcmp(n, "--port") && parse_port(value, &o->port))
      return usage_error("--port must be a number from 0 to 65535, got '%s'", value);
  }
  return 0;
}

static int expect_args(const ten_cli_opts_t *o, int min, int max, const char *form) {
  if (o->arg_count < min || o->arg_count > max) {
    fprintf(stderr, "ten: usage: ten %s\n", form);
    return TEN_EXIT_USAGE;
  }
  return 0;
}

int main(int argc, char **argv) {
  ten_db_global_init();
  ten_cli_opts_t o;
  int rc = parse(argc, argv, &o);
  if (rc) return rc;
  const char *cmd = o.command ? o.command : "help";
  if (!strcmp(cmd, "help")) {
    fputs(usage_text, stdout);
    return o.command ? TEN_EXIT_OK : TEN_EXIT_USAGE;
  }
  if (!strcmp(cmd, "version")) {
    printf("ten %s\n", TEN_VERSION);
    return TEN_EXIT_OK;
  }
  if (!strcmp(cmd, "serve"))
    return (rc = expect_args(&o, 0, 0, "serve [--config F] [--port N] ...")) ? rc
                                                                             : ten_cli_serve(&o);
  if (!strcmp(cmd, "config"))
    return (rc = expect_args(&o, 0, 0, "config [--config F] [--running]")) ? rc
                                                                           : ten_cli_config(&o);
  if (!strcmp(cmd, "ps")) return (rc = expect_args(&o, 0, 0, "ps [--json]")) ? rc : ten_cli_ps(&o);
  if (!strcmp(cmd, "spawn"))
    return (rc = expect_args(&o, 1, 1, "spawn SERVICE --id ID")) ? rc : ten_cli_spawn(&o);
  if (!strcmp(cmd, "stop"))
    return (rc = expect_args(&o, 1, 1, "stop SERVICE:ID")) ? rc : ten_cli_stop(&o);
  if (!strcmp(cmd, "restart"))
    return (rc = expect_args(&o, 1, 1, "restart SERVICE:ID")) ? rc : ten_cli_restart(&o);
  if (!strcmp(cmd, "weight"))
    return (rc = expect_args(&o, 2, 2, "weight SERVICE:ID N")) ? rc : ten_cli_weight(&o);
  if (!strcmp(cmd, "reload"))
    return (rc = expect_args(&o, 0, 0, "reload")) ? rc : ten_cli_reload(&o);
  if (!strcmp(cmd, "logs"))
    return (rc = expect_args(&o, 0, 1, "logs [SERVICE[:ID]] [-f] [--search Q] [--level L] [--since 10m]"))
               ? rc
               : ten_cli_logs(&o);
  if (!strcmp(cmd, "token-gen"))
    return (rc = expect_args(&o, 0, 0, "token-gen [--name NAME] [--tenant ID]")) ? rc
                                                                                : ten_cli_token_gen(&o);
  if (!strcmp(cmd, "token-list"))
    return (rc = expect_args(&o, 0, 0, "token-list")) ? rc : ten_cli_token_list(&o);
  if (!strcmp(cmd, "token-revoke"))
    return (rc = expect_args(&o, 1, 1, "token-revoke NAME")) ? rc : ten_cli_token_revoke(&o);
  if (!strcmp(cmd, "repl"))
    return (rc = expect_args(&o, 0, 0, "repl [-e CODE]")) ? rc : ten_cli_repl(&o);
  return usage_error("unknown command '%s'", cmd);
}
