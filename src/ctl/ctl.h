/* ctl.h: the control socket, {data_dir}/ten.sock.
 *
 * JSON lines: a client writes one request object per line,
 *   {"cmd": "ps", "args": {...}}
 * and gets one reply line per request, in order,
 *   {"ok": true, "result": ...}   or   {"ok": false, "error": "..."}
 * A command may answer later (spawn waits for readiness); the next request
 * on that connection waits for it. The socket is mode 0600 and a peer must
 * have our uid (or be root): checked with SO_PEERCRED on every connection.
 * Loop thread only.
 *
 * A connection costs ten bounded memory whatever the client sends: input
 * not yet answered is at most TEN_CTL_MAX_LINE bytes (a longer line, or
 * more requests queued behind one being answered, get an error line and
 * the connection is closed), and once replies holding more than
 * TEN_CTL_MAX_UNREAD bytes wait for the client to read them, its requests
 * are neither read nor run until it does.
 */
#ifndef TEN_CTL_CTL_H
#define TEN_CTL_CTL_H

#include "util/buf.h"
#include "util/common.h"
#include "util/json.h"

#include <uv.h>

#define TEN_CTL_MAX_LINE   (1024 * 1024)
#define TEN_CTL_MAX_UNREAD (1024 * 1024)

typedef struct ten_ctl ten_ctl_t;
typedef struct ten_ctl_req ten_ctl_req_t;

/* args is the request's "args" object (an empty object when absent). The
 * handler must eventually call exactly one of the reply functions. */
typedef void (*ten_ctl_cmd_fn)(void *ctx, ten_ctl_req_t *req, const ten_json_t *args);

/* Binds socket_path (removing a stale socket; refusing if a live server
 * answers on it). On failure *out is still set: close and free it. */
int ten_ctl_new(uv_loop_t *loop, const char *socket_path, ten_ctl_t **out, ten_err_t *err);
void ten_ctl_register(ten_ctl_t *ctl, const char *cmd, ten_ctl_cmd_fn fn, void *ctx);

/* result_json: an encoded JSON value, or NULL for null. */
void ten_ctl_reply_ok(ten_ctl_req_t *req, const char *result_json, size_t len);
void ten_ctl_reply_error(ten_ctl_req_t *req, const char *fmt, ...) TEN_PRINTF(2, 3);
/* Sends one line of an answer that is still going (`ten logs -f`): the
 * client reads such lines until the final reply. */
void ten_ctl_send_line(ten_ctl_req_t *req, const char *json, size_t len);
/* The event loop the control socket runs on. */
uv_loop_t *ten_ctl_loop(const ten_ctl_t *ctl);

/* False once the client that sent req has gone (the reply is dropped). */
bool ten_ctl_req_alive(const ten_ctl_req_t *req);
/* Called when the client disconnects before the reply (to drop waits); the
 * handler must still reply once, which frees req (the reply is dropped). */
void ten_ctl_req_on_cancel(ten_ctl_req_t *req, void (*fn)(void *ctx), void *ctx);

/* Decodes one request line: the command name and args. Used by the server
 * and by the fuzz target; never reads past len. */
int ten_ctl_decode(const char *line, size_t len, ten_json_t **doc, const char **cmd,
                   const ten_json_t **args, ten_err_t *err);

/* Stops listening, closes connections (pending replies are dropped), removes
 * the socket file, then calls done. */
void ten_ctl_close(ten_ctl_t *ctl, void (*done)(void *ctx), void *ctx);
/* After the close callback. */
void ten_ctl_free(ten_ctl_t *ctl);

#endif
