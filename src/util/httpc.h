/* httpc.h: a minimal asynchronous HTTP/1.1 client for probes.
 *
 * Connects to a unix socket or a TCP port on 127.0.0.1 and, if a path is
 * given, sends `GET path` and reads the status line. The callback runs
 * exactly once, unless the probe was cancelled first; after it returns the
 * probe is gone. Used by the hypervisor for readiness and health checks (it
 * must not depend on the HTTP server). Loop thread only.
 */
#ifndef TEN_UTIL_HTTPC_H
#define TEN_UTIL_HTTPC_H

#include "util/common.h"

#include <uv.h>

typedef struct ten_httpc ten_httpc_t;

/* result: 0 when connected and no path was asked; the HTTP status (100-599)
 * when a path was; a negative UV_E* code on failure (UV_ETIMEDOUT, ...). */
typedef void (*ten_httpc_cb)(void *ctx, int result);

typedef struct ten_httpc_target {
  const char *socket_path; /* unix socket, or NULL */
  int port;                /* TCP port on 127.0.0.1 when socket_path is NULL */
} ten_httpc_target_t;

/* Returns the probe (to cancel it) or NULL with *rc set when it could not
 * even start (then the callback is not called). */
ten_httpc_t *ten_httpc_get(uv_loop_t *loop, const ten_httpc_target_t *target, const char *path,
                           uint64_t timeout_ms, ten_httpc_cb cb, void *ctx, int *rc);
/* The callback will not run; resources are freed asynchronously. */
void ten_httpc_cancel(ten_httpc_t *probe);

#endif
