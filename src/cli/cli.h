/* cli.h: the `ten` command line. main.c parses arguments into ten_cli_opts_t
 * and runs one command; serve.c wires the server together; client.c speaks
 * the control socket for every command that talks to a running server.
 *
 * Exit codes: 0 ok, 1 error reported by the server (or a failure to start),
 * 2 usage or config error, 3 no server running.
 */
#ifndef TEN_CLI_CLI_H
#define TEN_CLI_CLI_H

#include "policy/config.h"

enum {
  TEN_EXIT_OK = 0,
  TEN_EXIT_ERROR = 1,
  TEN_EXIT_USAGE = 2,
  TEN_EXIT_NO_SERVER = 3,
};

typedef struct ten_cli_opts {
  const char *command;
  const char *args[8]; /* positional arguments after the command */
  int arg_count;
  const char *config;   /* --config */
  const char *data_dir; /* --data-dir */
  const char *domain;   /* --domain */
  const char *listen;   /* --listen */
  int port;             /* --port, -1 if not given */
  const char *id;       /* --id */
  bool json;            /* --json */
  bool no_wait;         /* --no-wait */
  bool running;         /* --running (config) */
  const char *eval;     /* -e / --eval CODE (repl) */
  bool follow;          /* -f / --follow (logs) */
  const char *search;   /* --search (logs) */
  const char *level;    /* --level (logs) */
  const char *since;    /* --since (logs) */
  const char *until;    /* --until (logs) */
  const char *limit;    /* --limit (logs) */
  const char *tail;     /* --tail (logs -f) */
  const char *name;     /* --name (token-gen) */
  const char *tenant;   /* --tenant (token-gen) */
} ten_cli_opts_t;

/* The config file to use: --config, $TENEMENT_CONFIG, ./tenement.lua if it
 * exists, or NULL (defaults only). */
const char *ten_cli_config_path(const ten_cli_opts_t *o);
/* Loads the config with the command-line overrides; prints the error and
 * returns TEN_EXIT_USAGE on failure. */
int ten_cli_load_config(const ten_cli_opts_t *o, ten_config_t **out);

int ten_cli_serve(const ten_cli_opts_t *o);
int ten_cli_config(const ten_cli_opts_t *o);
int ten_cli_ps(const ten_cli_opts_t *o);
int ten_cli_spawn(const ten_cli_opts_t *o);
int ten_cli_stop(const ten_cli_opts_t *o);
int ten_cli_restart(const ten_cli_opts_t *o);
int ten_cli_weight(const ten_cli_opts_t *o);
int ten_cli_reload(const ten_cli_opts_t *o);
int ten_cli_repl(const ten_cli_opts_t *o);
int ten_cli_logs(const ten_cli_opts_t *o);
int ten_cli_token_gen(const ten_cli_opts_t *o);
int ten_cli_token_list(const ten_cli_opts_t *o);
int ten_cli_token_revoke(const ten_cli_opts_t *o);
/* The data dir the flags name (caller frees); an exit code on error. */
int ten_cli_data_dir(const ten_cli_opts_t *o, char **out);

/* The control-socket client, for commands that need more than one
 * request: connect (exit code, message printed), send, receive a line. */
#include "util/json.h"
int ten_cli_connect(const ten_cli_opts_t *o, int *fd);
/* The same without messages (to find out whether a server runs). */
int ten_cli_connect_quiet(const ten_cli_opts_t *o, int *fd, bool quiet);
int ten_cli_send(int fd, const char *data, size_t len);
int ten_cli_receive(int fd, ten_json_t **doc);

#endif
