/* serve.c: `ten serve` wires the subsystems together and owns the loop.
 *
 * Start: config -> data dir + lock -> hypervisor -> HTTP listener -> control
 * socket -> API -> declared instances. Stop (SIGTERM/SIGINT): the listener
 * closes and requests in flight finish (drain_timeout), then every instance
 * is stopped, then the control socket closes; the loop ends with no handle
 * left (uv_loop_close must succeed) and the exit status is 0.
 */
#include "api/api.h"
#include "api/auth.h"
#include "cli/logs_cmd.h"
#include "cli/cli.h"
#include "ctl/commands.h"
#include "ctl/ctl.h"
#include "ctl/repl.h"
#include "http/server.h"
#include "hv/hv.h"
#include "obs/db.h"
#include "obs/logs.h"
#include "util/log.h"
#include "util/time.h"

#include <libgen.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <uv.h>

typedef struct server {
  uv_loop_t loop;
  const ten_cli_opts_t *opts; /* how the config is found again on reload */
  ten_config_t *config;
  ten_db_t *db;
  ten_logs_t *logs;
  ten_auth_t *auth;
  ten_repl_t *repl;
  uv_fs_event_t watch; /* the config file's folder */
  uv_timer_t reload_timer; /* debounces editor writes */
  bool watching;
  char *config_name; /* the file's name within the watched folder */
  ten_hv_t hv;
  ten_http_server_t *http;
  ten_ctl_t *ctl;
  ten_ctl_commands_t *commands;
  ten_api_t *api;
  uv_signal_t sig_term, sig_int, sig_hup;
  int signals_open;
  int lock_fd;
  bool stopping;
  int exit_code;
} server_t;

/* ------------------------------------------------------------ set-up */

static int mkdir_p(const char *path, mode_t mode) {
  char *copy = ten_xstrdup(path);
  int rc = 0;
  for (char *p = copy + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char saved = *p;
    *p = '\0';
    if (mkdir(copy, mode) < 0 && errno != EEXIST) rc = -errno;
    *p = saved;
    if (rc || !saved) break;
  }
  free(copy);
  return rc;
}

static int prepare_data_dir(server_t *s) {
  const char *dir = s->config->settings.data_dir;
  int rc = mkdir_p(dir, 0755);
  char *run = ten_xasprintf("%s/run", dir);
  if (rc == 0) rc = mkdir_p(run, 0755);
  free(run);
  if (rc) {
    fprintf(stderr, "ten: cannot create data dir %s: %s\n", dir, strerror(-rc));
    return TEN_EXIT_ERROR;
  }
  /* One server per data dir. flock goes away with the process, even after
   * kill -9, so a crashed server never blocks the next one. */
  char *lock = ten_xasprintf("%s/ten.lock", dir);
  s->lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  free(lock);
  if (s->lock_fd < 0) {
    fprintf(stderr, "ten: cannot open the lock in %s: %s\n", dir, strerror(errno));
    return TEN_EXIT_ERROR;
  }
  if (flock(s->lock_fd, LOCK_EX | LOCK_NB) < 0) {
    fprintf(stderr, "ten: another ten serve is already running with data dir %s\n", dir);
    return TEN_EXIT_ERROR;
  }
  char pid[32];
  int n = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
  if (ftruncate(s->lock_fd, 0) == 0 && write(s->lock_fd, pid, (size_t)n) < 0) {
    /* The pid in the lock file is informational only. */
  }
  return TEN_EXIT_OK;
}

static int open_output(void *ctx, const ten_instance_t *inst, int *out_fd, int *err_fd) {
  server_t *s = ctx;
  return ten_logs_capture(s->logs, inst->service, inst->id, out_fd, err_fd);
}

static ten_db_options_t db_options(const ten_settings_t *set) {
  ten_db_options_t o = {set->log_retention_days, set->log_max_rows, 0, set->log_rotate_interval};
  return o;
}

static ten_logs_options_t logs_options(const ten_settings_t *set) {
  ten_logs_options_t o = {(size_t)set->log_ring_lines, (size_t)set->log_max_line};
  return o;
}

/* Every state change goes to the events table. */
static void record_event(void *ctx, ten_instance_t *inst, ten_instance_state_t from,
                         ten_instance_state_t to) {
  server_t *s = ctx;
  if (to == TEN_INST_STATE_COUNT) return;
  char detail[600];
  snprintf(detail, sizeof detail, "%s -> %s%s%.500s", ten_instance_state_name(from),
           ten_instance_state_name(to), inst->reason[0] ? ": " : "", inst->reason);
  ten_db_event(s->db, ten_wall_ms(), inst->service, inst->id, ten_instance_state_name(to), detail);
}

/* ------------------------------------------------------------ shutdown */

static void on_signal_closed(uv_handle_t *h) {
  server_t *s = h->data;
  s->signals_open--;
}

static void on_ctl_closed(void *ctx) {
  server_t *s = ctx;
  if (s->watching) {
    uv_close((uv_handle_t *)&s->watch, on_signal_closed);
    s->signals_open++;
  }
  uv_close((uv_handle_t *)&s->reload_timer, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_term, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_int, on_signal_closed);
  uv_close((uv_handle_t *)&s->sig_hup, on_signal_closed);
}

static void on_logs_closed(void *ctx) {
  server_t *s = ctx;
  if (s->commands) ten_ctl_commands_cancel(s->commands);
  if (s->ctl)
    ten_ctl_close(s->ctl, on_ctl_closed, s);
  else
    on_ctl_closed(s);
}

static void on_hv_stopped(ten_hv_t *hv) {
  server_t *s = ten_container_of(hv, server_t, hv);
  ten_log(TEN_LOG_INFO, "serve: every instance has stopped");
  /* Their last lines are read to the end and handed to the writer. */
  ten_logs_close(s->logs, on_logs_closed, s);
}

static void on_http_drained(ten_http_server_t *http, void *ctx) {
  server_t *s = ctx;
  ten_hv_shutdown(&s->hv, on_hv_stopped);
}

static void begin_shutdown(server_t *s, const char *why) {
  if (s->stopping) return;
  s->stopping = true;
  ten_api_close(s->api); /* live streams end now; they never finish by themselves */
  ten_log(TEN_LOG_INFO, "serve: %s: stopping (in-flight requests get %g s)", why,
          s->config->settings.drain_timeout);
  if (s->http)
    ten_http_shutdown(s->http, on_http_drained, s);
  else
    ten_hv_shutdown(&s->hv, on_hv_stopped);
}

/* ------------------------------------------------------------ reload */

/* Loads tenement.lua again (same flags) and applies it as a diff. A config
 * that does not load changes nothing. */
static int reload(void *ctx, ten_buf_t *summary, ten_err_t *err) {
  server_t *s = ctx;
  if (s->stopping) return ten_errf(err, UV_ECANCELED, "the server is shutting down");
  const char *path = ten_cli_config_path(s->opts);
  ten_config_overrides_t ovr = {s->opts->domain, s->opts->listen, s->opts->port,
                                s->opts->data_dir};
  ten_config_t *next;
  if (ten_config_load(path, &ovr, &next, err)) {
    ten_log(TEN_LOG_ERROR, "serve: reload failed, the running config stays: %s", err->msg);
    return UV_EINVAL;
  }
  /* What only takes effect at start keeps its running value. */
  free(next->settings.data_dir);
  next->settings.data_dir = ten_xstrdup(s->config->settings.data_dir);
  ten_hv_apply_config(&s->hv, next, summary);
  ten_http_set_config(s->http, next);
  ten_db_options_t dbo = db_options(&next->settings);
  ten_db_set_options(s->db, &dbo);
  ten_logs_options_t lo = logs_options(&next->settings);
  ten_logs_set_options(s->logs, &lo);
  ten_config_unref(s->config);
  s->config = next;
  ten_log(TEN_LOG_INFO, "serve: reloaded %s: %.*s", path ? path : "(defaults)",
          summary->len && summary->data[summary->len - 1] == '\n' ? (int)summary->len - 1
                                                                   : (int)summary->len,
          summary->data ? summary->data : "");
  return 0;
}

static void reload_and_log(server_t *s, const char *why) {
  ten_buf_t summary = TEN_BUF_INIT;
  ten_err_t err;
  ten_log(TEN_LOG_INFO, "serve: %s: reloading the config", why);
  reload(s, &summary, &err);
  ten_buf_free(&summary);
}

static void cmd_reload(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  server_t *s = ctx;
  ten_buf_t summary = TEN_BUF_INIT;
  ten_err_t err;
  if (reload(s, &summary, &err)) {
    ten_ctl_reply_error(req, "%s", err.msg);
  } else {
    ten_buf_t out = TEN_BUF_INIT;
    ten_jw_t w;
    ten_jw_init(&w, &out);
    ten_jw_obj(&w);
    ten_jw_kstr(&w, "summary", summary.data ? summary.data : "");
    ten_jw_obj_end(&w);
    ten_ctl_reply_ok(req, out.data, out.len);
    ten_buf_free(&out);
  }
  ten_buf_free(&summary);
}

static void on_auth_reread(void *ctx) { ten_ctl_reply_ok(ctx, NULL, 0); }

/* `ten token-gen` and `ten token-revoke` wrote the database: revocation
 * takes effect now, and the CLI returns once a new token is known. */
static void cmd_auth_changed(void *ctx, ten_ctl_req_t *req, const ten_json_t *args) {
  server_t *s = ctx;
  ten_auth_changed(s->auth, on_auth_reread, req);
}

static void on_reload_timer(uv_timer_t *t) { reload_and_log(t->data, "the config file changed"); }

/* Editors write files in several steps (truncate, write, rename): wait for
 * the writes to settle before reading it. */
static void on_config_event(uv_fs_event_t *h, const char *filename, int events, int status) {
  server_t *s = h->data;
  if (status < 0 || !filename || strcmp(filename, s->config_name) != 0) return;
  uv_timer_start(&s->reload_timer, on_reload_timer, 200, 0);
}

static void watch_config(server_t *s) {
  uv_timer_init(&s->loop, &s->reload_timer);
  s->reload_timer.data = s;
  if (!s->config->path) return;
  char *copy = ten_xstrdup(s->config->path);
  char *dir = ten_xstrdup(dirname(copy));
  free(copy);
  copy = ten_xstrdup(s->config->path);
  s->config_name = ten_xstrdup(basename(copy));
  free(copy);
  uv_fs_event_init(&s->loop, &s->watch);
  s->watch.data = s;
  int rc = uv_fs_event_start(&s->watch, on_config_event, dir, 0);
  if (rc < 0) {
    ten_log(TEN_LOG_WARN, "serve: cannot watch %s for changes (%s); reload with SIGHUP or `ten reload`",
            dir, uv_strerror(rc));
    uv_close((uv_handle_t *)&s->watch, NULL);
  } else {
    s->watching = true;
  }
  free(dir);
}

static void on_signal(uv_signal_t *h, int signum) {
  server_t *s = h->data;
  if (signum == SIGHUP) {
    if (!s->stopping) reload_and_log(s, "SIGHUP");
    return;
  }
  if (s->stopping) {
    ten_log(TEN_LOG_WARN, "serve: %s again: already stopping", strsignal(signum));
    return;
  }
  begin_shutdown(s, strsignal(signum));
}

/* ------------------------------------------------------------ the banner */

static void print_banner(server_t *s, int port) {
  const ten_settings_t *set = &s->config->settings;
  const char *host = strcmp(set->listen, "0.0.0.0") == 0 || strcmp(set->listen, "::") == 0
                         ? "127.0.0.1"
                         : set->listen;
  printf("ten %s: listening on http://%s:%d\n", TEN_VERSION, host, port);
  printf("  domain     %s (instances at {id}.{service}.%s)\n", set->domain, set->domain);
  printf("  config     %s\n", s->config->path ? s->config->path : "(none: defaults)");
  printf("  data dir   %s\n", set->data_dir);
  if (ten_auth_token_count(s->auth) == 0)
    printf("  api        no token exists yet: /api answers only on loopback "
           "(create one with `ten token-gen --name NAME`)\n");
  printf("  try        curl -H 'Host: %s' http://%s:%d/health\n", set->domain, host, port);
  for (size_t i = 0; i < s->config->instance_count && i < 4; i++)
    printf("             curl -H 'Host: %s.%s.%s' http://%s:%d/\n", s->config->instances[i].id,
           s->config->instances[i].service, set->domain, host, port);
  fflush(stdout);
}

/* ------------------------------------------------------------ run */

static void cleanup(server_t *s) {
  ten_repl_free(s->repl);
  ten_logs_free(s->logs);
  ten_db_close(s->db); /* flushes what was queued */
  free(s->config_name);
  ten_api_free(s->api);
  ten_auth_free(s->auth);
  ten_ctl_commands_free(s->commands);
  ten_ctl_free(s->ctl);
  ten_http_server_free(s->http);
  ten_hv_free(&s->hv);
  ten_config_unref(s->config);
  if (s->lock_fd >= 0) close(s->lock_fd);
}

static void init_signal(server_t *s, uv_signal_t *h, int signum) {
  uv_signal_init(&s->loop, h);
  h->data = s;
  uv_signal_start(h, on_signal, signum);
  s->signals_open++;
}

int ten_cli_serve(const ten_cli_opts_t *o) {
  const char *level = getenv("TEN_LOG_LEVEL");
  if (level && ten_log_level_parse(level) >= 0)
    ten_log_set_level((ten_log_level_t)ten_log_level_parse(level));
  signal(SIGPIPE, SIG_IGN);

  server_t s;
  memset(&s, 0, sizeof s);
  s.lock_fd = -1;
  s.opts = o;
  int rc = ten_cli_load_config(o, &s.config);
  if (rc) return rc;
  if ((rc = prepare_data_dir(&s))) {
    cleanup(&s);
    return rc;
  }
  if ((rc = uv_loop_init(&s.loop)) < 0) {
    fprintf(stderr, "ten: cannot create the event loop: %s\n", uv_strerror(rc));
    cleanup(&s);
    return TEN_EXIT_ERROR;
  }
  ten_err_t err;
  char *db_path = ten_xasprintf("%s/tenement.db", s.config->settings.data_dir);
  ten_db_options_t dbo = db_options(&s.config->settings);
  if (ten_db_open(db_path, &dbo, &s.db, &err)) {
    fprintf(stderr, "ten: %s\n", err.msg);
    free(db_path);
    uv_loop_close(&s.loop);
    cleanup(&s);
    return TEN_EXIT_ERROR;
  }
  s.auth = ten_auth_new(&s.loop, db_path, &err);
  free(db_path);
  if (!s.auth) {
    fprintf(stderr, "ten: %s\n", err.msg);
    ten_db_close(s.db);
    s.db = NULL;
    uv_loop_close(&s.loop);
    cleanup(&s);
    return TEN_EXIT_ERROR;
  }
  ten_hv_init(&s.hv, &s.loop, s.config);
  ten_hv_kill_leftovers(&s.hv); /* before any instance of ours runs */
  ten_logs_options_t lo = logs_options(&s.config->settings);
  s.logs = ten_logs_new(&s.loop, s.db, &lo);
  ten_hv_set_output(&s.hv, open_output, &s);
  ten_hv_observe(&s.hv, record_event, &s);
  ten_hv_set_db(&s.hv, s.db);
  init_signal(&s, &s.sig_term, SIGTERM);
  init_signal(&s, &s.sig_int, SIGINT);
  init_signal(&s, &s.sig_hup, SIGHUP);

  ten_http_server_new(&s.loop, &s.hv, s.config, &s.http, &err);
  watch_config(&s);
  if (ten_http_listen(s.http, &err)) {
    fprintf(stderr, "ten: %s\n", err.msg);
    s.exit_code = TEN_EXIT_ERROR;
    begin_shutdown(&s, "start-up failed");
  } else {
    char *sock = ten_xasprintf("%s/ten.sock", s.config->settings.data_dir);
    if (ten_ctl_new(&s.loop, sock, &s.ctl, &err)) {
      fprintf(stderr, "ten: %s\n", err.msg);
      s.exit_code = TEN_EXIT_ERROR;
      begin_shutdown(&s, "start-up failed");
    } else {
      s.commands = ten_ctl_commands_new(s.ctl, &s.hv);
      ten_ctl_register(s.ctl, "reload", cmd_reload, &s);
      s.repl = ten_repl_new(s.ctl, &s.hv, reload, &s);
      ten_api_deps_t deps = {s.http, &s.hv, s.logs, s.db, s.auth};
      s.api = ten_api_new(&deps);
      ten_ctl_register(s.ctl, "auth-changed", cmd_auth_changed, &s);
      ten_logs_cmd_register(s.ctl, s.logs, s.db);
      print_banner(&s, ten_http_port(s.http));
      ten_hv_start_declared(&s.hv);
    }
    free(sock);
  }

  uv_run(&s.loop, UV_RUN_DEFAULT);
  rc = uv_loop_close(&s.loop);
  if (rc) {
    ten_log(TEN_LOG_ERROR, "serve: a libuv handle was left open at exit (%s)", uv_strerror(rc));
    if (s.exit_code == 0) s.exit_code = TEN_EXIT_ERROR;
  }
  cleanup(&s);
  ten_log(TEN_LOG_INFO, "serve: stopped");
  return s.exit_code;
}
