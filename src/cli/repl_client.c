/* repl_client.c: `ten repl`, the client side. Lines are read with libedit
 * (history in ~/.ten_history) when it is there, sent as {"cmd":"eval"} over
 * the control socket, and the server's answer printed. A chunk the server
 * calls incomplete ("<eof>" expected) is continued on the next line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "util/json.h"

#ifdef TEN_HAVE_LIBEDIT
#include <editline/readline.h>
#endif

#define PROMPT "ten> "
#define PROMPT_MORE ">>   "

static char *read_input(const char *prompt) {
#ifdef TEN_HAVE_LIBEDIT
  if (isatty(STDIN_FILENO)) return readline(prompt);
#endif
  if (isatty(STDIN_FILENO)) {
    fputs(prompt, stdout);
    fflush(stdout);
  }
  ten_buf_t line = TEN_BUF_INIT;
  int c;
  while ((c = getchar()) != EOF && c != '\n') ten_buf_putc(&line, (char)c);
  if (c == EOF && line.len == 0) {
    ten_buf_free(&line);
    return NULL;
  }
  return ten_buf_steal(&line);
}

/* Evaluates code; 0 printed a result, 1 an error, 2 needs more lines, or
 * an exit code >= 3 for a connection problem. */
static int eval(int fd, const char *code) {
  ten_buf_t req = TEN_BUF_INIT;
  ten_buf_puts(&req, "{\"cmd\":\"eval\",\"args\":{\"code\":");
  ten_json_quote(&req, code, strlen(code));
  ten_buf_puts(&req, "}}\n");
  int rc = ten_cli_send(fd, req.data, req.len);
  ten_buf_free(&req);
  if (rc) return TEN_EXIT_NO_SERVER;
  ten_json_t *doc;
  if ((rc = ten_cli_receive(fd, &doc))) return rc;
  bool ok = false;
  ten_json_get_bool(doc, "ok", &ok);
  if (!ok) {
    const char *msg = ten_json_get_str(doc, "error");
    fprintf(stderr, "error: %s\n", msg ? msg : "?");
    ten_json_free(doc);
    return 1;
  }
  const ten_json_t *result = ten_json_get(doc, "result");
  bool incomplete = false;
  ten_json_get_bool(result, "incomplete", &incomplete);
  if (incomplete) {
    ten_json_free(doc);
    return 2;
  }
  const char *output = ten_json_get_str(result, "output");
  const char *value = ten_json_get_str(result, "result");
  if (output && *output) fputs(output, stdout);
  if (value && *value) printf("%s\n", value);
  fflush(stdout);
  ten_json_free(doc);
  return 0;
}

int ten_cli_repl(const ten_cli_opts_t *o) {
  int fd;
  int rc = ten_cli_connect(o, &fd);
  if (rc) return rc;
  if (o->eval) {
    rc = eval(fd, o->eval);
    close(fd);
    if (rc == 2) {
      fprintf(stderr, "error: the code is incomplete\n");
      return TEN_EXIT_ERROR;
    }
    return rc;
  }

  char history[4096] = "";
  const char *home = getenv("HOME");
  if (home) snprintf(history, sizeof history, "%s/.ten_history", home);
#ifdef TEN_HAVE_LIBEDIT
  if (history[0]) read_history(history);
#endif
  if (isatty(STDIN_FILENO))
    printf("tenement REPL: Lua inside the running server. ten.ps(), ten.spawn(\"svc\", \"id\"),\n"
           "ten.stop(\"svc:id\"), ten.weight(\"svc:id\", n), ten.config(), ten.reload(). Ctrl-D quits.\n");
  ten_buf_t chunk = TEN_BUF_INIT;
  for (;;) {
    char *line = read_input(chunk.len ? PROMPT_MORE : PROMPT);
    if (!line) break;
    if (!chunk.len && !*line) {
      free(line);
      continue;
    }
    if (chunk.len) ten_buf_putc(&chunk, '\n');
    ten_buf_puts(&chunk, line);
    free(line);
    rc = eval(fd, chunk.data);
    if (rc == 2) continue; /* keep reading the chunk */
#ifdef TEN_HAVE_LIBEDIT
    add_history(chunk.data);
#endif
    ten_buf_reset(&chunk);
    if (rc >= TEN_EXIT_NO_SERVER) {
      fprintf(stderr, "ten: the server went away\n");
      break;
    }
  }
  if (isatty(STDIN_FILENO)) putchar('\n');
#ifdef TEN_HAVE_LIBEDIT
  if (history[0]) write_history(history);
#endif
  ten_buf_free(&chunk);
  close(fd);
  return rc >= TEN_EXIT_NO_SERVER ? TEN_EXIT_ERROR : TEN_EXIT_OK;
}
