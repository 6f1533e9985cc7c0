/* conn.h: internals shared by the HTTP files — server.c (the listener),
 * conn.c (a client connection), request.c (what a request asks for),
 * local.c (answers of ten's own) and proxy.c (the upstream side). Not for
 * other subsystems: they use server.h.
 *
 * A client connection runs one exchange at a time. Parsing pauses when a
 * request head is complete (so the proxy can get an upstream ready before
 * body bytes flow) and when the request is complete (so pipelined requests
 * wait their turn). Bytes are forwarded from the iobuf they were read into.
 */
#ifndef TEN_HTTP_CONN_H
#define TEN_HTTP_CONN_H

#include "http/iobuf.h"
#include "http/router.h"
#include "http/server.h"
#include "http/strict.h"

#include <llhttp.h>

/* Stop reading from a peer while this much is queued for the other side;
 * resume under the low mark. While anything is queued, reads go into small
 * buffers. So one direction of an exchange holds at most a large buffer's
 * worth (64 KB) in ten, however slowly the other side reads: like haproxy's
 * two buffers, a few tens of KB per connection. The kernel's socket buffers
 * do the rest. */
#define TEN_HTTP_HIGH_WATER (32 * 1024)
#define TEN_HTTP_LOW_WATER  (16 * 1024)

#define TEN_HTTP_MAX_HEADERS    100
#define TEN_HTTP_MAX_HEAD       (60 * 1024) /* the most max_header_size may be */
#define TEN_HTTP_LOCAL_BODY_MAX (1024 * 1024)
#define TEN_HTTP_DISCARD_MAX    (1024 * 1024)

/* Writes gathered during one turn of the loop and sent as one writev: a
 * response head and its body go out in one system call. */
#define TEN_WBATCH_MAX 16
typedef struct ten__wbatch {
  ten_iobuf_t *bufs[TEN_WBATCH_MAX]; /* one reference each */
  uv_buf_t iov[TEN_WBATCH_MAX];
  unsigned count;
  size_t bytes;
} ten__wbatch_t;

/* false when full (flush, then add again). */
bool ten__wbatch_add(ten__wbatch_t *b, ten_iobuf_t *buf, const char *data, size_t len);
/* Writes the batch: 1 when it was all written at once (cb will not run),
 * 0 when (the rest) went to uv_write (cb gets the total later), or a
 * negative error. The batch is empty after. */
int ten__wbatch_flush(ten__wbatch_t *b, uv_stream_t *stream, void (*cb)(void *, int, size_t),
                      void *owner);
void ten__wbatch_drop(ten__wbatch_t *b);

/* A header is two spans in the head arena. */
typedef struct ten__header {
  uint32_t name_off, name_len;
  uint32_t value_off, value_len;
} ten__header_t;

/* A parsed message head (request or response), copied into `arena` as it
 * streams in, bounded by `limit` (at most TEN_HTTP_MAX_HEAD). */
typedef struct ten__head {
  ten_buf_t arena;
  uint32_t target_off, target_len; /* request URL or response reason */
  ten__header_t headers[TEN_HTTP_MAX_HEADERS];
  unsigned count;
  int last; /* 0 none, 1 field, 2 value: a field after a value starts a header */
  uint32_t limit; /* bytes allowed; 0 means TEN_HTTP_MAX_HEAD */
  bool too_large;
  bool target_too_large; /* the request target alone did not fit (414) */
  bool too_many;
} ten__head_t;

/* Where llhttp_execute stopped in [start, start + avail]. Its error position
 * is stale after an empty call (finishing a bodiless message) or a call on
 * a parser already in error: then it is not trusted. */
static inline const char *ten__parse_stop(const llhttp_t *p, llhttp_errno_t err, const char *start,
                                          size_t avail) {
  const char *pos = err == HPE_OK ? start + avail : llhttp_get_error_pos(p);
  uintptr_t at = (uintptr_t)pos, lo = (uintptr_t)start; /* pos may point anywhere */
  return at >= lo && at <= lo + avail ? pos : start + avail;
}

void ten__head_reset(ten__head_t *h);
int ten__head_append(ten__head_t *h, int kind, const char *at, size_t len);
const char *ten__head_get(const ten__head_t *h, const char *name, size_t *len);
static inline const char *ten__head_str(const ten__head_t *h, uint32_t off) {
  return h->arena.data + off;
}

/* Hop-by-hop headers (RFC 9110 7.6.1) plus the ones the Connection header
 * names: never forwarded. */
bool ten__is_hop_by_hop(const ten__head_t *h, const char *name, size_t len);

typedef enum ten__mode {
  TEN_MODE_HEAD,    /* reading a request head */
  TEN_MODE_LOCAL,   /* a local handler; the body is collected for it */
  TEN_MODE_PROXY,   /* forwarding to an upstream */
  TEN_MODE_DISCARD, /* answered already; the rest of the request body is skipped */
  TEN_MODE_TUNNEL,  /* after a 101: bytes flow both ways untouched */
} ten__mode_t;

typedef enum ten__pause {
  TEN_PAUSE_NONE,
  TEN_PAUSE_HEAD,
  TEN_PAUSE_DONE,
} ten__pause_t;

typedef struct ten__upstream ten__upstream_t;

struct ten__conn {
  uv_tcp_t tcp; /* first: the handle's data is the conn */
  uv_timer_t timer;
  ten_http_server_t *server;
  struct ten__conn *next, *prev; /* the server's list */
  int open_handles;

  llhttp_t parser;
  ten_iobuf_t *rbuf; /* bytes read but not parsed yet (only while paused) */
  size_t rpos, rlen;
  ten__pause_t pause;
  bool resume_pending; /* a head was parsed: run the parser once more */

  ten__mode_t mode;
  ten__head_t head;
  ten_route_t route;
  size_t discarded;
  size_t local_body_off; /* local mode: body starts here in the arena */
  const ten_service_conf_t *svc;
  ten_instance_t *inst;
  ten__upstream_t *up;

  bool req_done;  /* the whole request has been parsed */
  bool resp_done; /* the whole response has been queued */
  bool keep_alive;
  bool resp_started; /* a response head went to the client */
  bool blocked;      /* parsing waits (for an upstream, or for the response) */
  bool processing;   /* inside conn_process: do not re-enter it */
  bool reading;
  bool closing;
  bool client_eof;
  bool in_flight; /* counted in requests_in_flight */
  ten_strict_head_t head_scan;     /* strict rules over the head's bytes */
  ten_strict_chunked_t body_scan;  /* ... and over a chunked body's */
  const char *body_scan_pos;       /* body bytes before this are scanned */
  const char *strict_error;        /* why the bytes were refused (400) */
  bool body_chunked;               /* the request body is chunked */
  uint64_t body_length;            /* its Content-Length, if it has one */
  int64_t body_bytes;     /* request body bytes seen (max_body_size) */
  bool body_too_large;

  size_t write_pending; /* bytes queued to the client (batched or in flight) */
  ten__wbatch_t out;    /* gathered this loop turn, not yet handed to libuv */
  struct ten__conn *next_dirty, *prev_dirty;
  bool dirty;           /* on the server's flush list */
  unsigned writes;      /* write requests in flight */
  bool drained;         /* written at once below the low-water mark: tell
                           the proxy on the flush pass, not mid-callback */
  bool refused;       /* over max_connections: answered 503, lingering */
  char client_ip[48]; /* the peer */
  char real_ip[48];   /* the client, looking through trusted proxies */
  bool peer_trusted;  /* the peer is in settings.trusted_proxies */
  bool upgrade;       /* the request asks for a protocol upgrade */
  uint64_t deadline_ms;       /* loop time the timer's phase ends (see conn.c); 0 none */
  uint64_t body_deadline_ms;  /* the whole request body must be in by then (body_timeout) */
  uint64_t body_paused_ms;    /* since when ten has not been reading the body (not counted) */
  uint64_t send_deadline_ms;  /* the client must have read some of its answer by then */
  void (*local_close_fn)(void *ctx); /* an unfinished local answer learns of a close */
  void *local_close_ctx;
  bool streaming;             /* a local handler streams its answer */
  uint64_t start_ns;          /* when the request head was complete */
  int resp_status;            /* the final status sent, once known */
  bool recorded;              /* counted in the instance's metrics */
  size_t last_read;           /* picks the next read buffer's size */
  ten_hv_waiter_t waiter;     /* queued while its instance wakes up */
  ten_instance_t *waiting_for; /* the instance it waits for, or NULL */
};
typedef struct ten__conn ten__conn_t;

struct ten_http_server {
  uv_loop_t *loop;
  uv_tcp_t listener;
  bool listening;
  ten_hv_t *hv;
  ten_config_t *config;
  ten_http_stats_t stats;
  ten__conn_t *conns;
  struct handler {
    char *method;
    char *path;
    bool prefix;
    ten_http_handler_fn fn;
    void *ctx;
  } * handlers;
  size_t handler_count;
  bool shutting_down;
  uv_timer_t drain_timer;
  void (*shutdown_cb)(ten_http_server_t *s, void *ctx);
  void *shutdown_ctx;
  int open_handles; /* listener + drain timer + flusher */
  uv_check_t flusher;      /* after each loop turn's I/O: flush batched writes */
  struct ten__conn *dirty; /* connections with batched writes */
  char route_hook_error[512]; /* the route hook's last failure */
  unsigned refused_lingering;  /* refused connections still closing gracefully */
};

static inline uint64_t ten__ms_of(double seconds) {
  return seconds <= 0 ? 1 : (uint64_t)(seconds * 1000.0);
}
#define TEN__SETTINGS(c)          (&(c)->server->config->settings)
#define TEN__KEEPALIVE_TIMEOUT_MS ten__ms_of(TEN__SETTINGS(c)->keepalive_timeout)
#define TEN__HEADER_TIMEOUT_MS    ten__ms_of(TEN__SETTINGS(c)->header_timeout)
#define TEN__BODY_TIMEOUT_MS      ten__ms_of(TEN__SETTINGS(c)->client_timeout)

/* ---- conn.c: the connection */

/* Moves the deadline of the connection's phase (lazily: see conn.c);
 * disarm: the phase has none (the body and send deadlines still count). */
void ten__conn_arm(ten__conn_t *c, uint64_t ms);
void ten__conn_disarm(ten__conn_t *c);
/* A request body begins: it must be complete within body_timeout. */
void ten__conn_arm_body_deadline(ten__conn_t *c);
/* Some byte of a request arrived on this connection (it is not idle). */
bool ten__conn_request_started(const ten__conn_t *c);
/* Closes now; pending writes are cancelled. */
void ten__conn_close(ten__conn_t *c);
/* Closes the handles only (a connection that never started). */
void ten__conn_close_handles(ten__conn_t *c);
/* Tells an unfinished local answer that its connection is going. */
void ten__conn_notify_local_close(ten__conn_t *c);
/* Closes after what is queued has been written (FIN, then linger). */
void ten__conn_finish(ten__conn_t *c);
/* Copies bytes into iobufs and queues them to the client. */
void ten__conn_write_copy(ten__conn_t *c, const char *data, size_t len);
/* Both halves of the exchange are done: next request, or close. */
void ten__conn_exchange_maybe_done(ten__conn_t *c);
/* Runs the parse loop on what has been read (not re-entrant: a nested
 * call returns at once and the outer loop continues). */
void ten__conn_process(ten__conn_t *c);

/* ---- request.c: what a request asks for */

/* A complete request head: check it and decide where it goes. */
void ten__request_head(ten__conn_t *c);
/* llhttp refused the bytes: answer with the fitting status and close. */
void ten__request_parse_error(ten__conn_t *c, llhttp_errno_t err);
/* Queues a whole response (head and body) of ten's own. */
void ten__respond(ten__conn_t *c, int status, const char *content_type, const char *body,
                  size_t len, const char *extra_headers);
/* {"error": message, ...detail_json}\n */
void ten__error_body(ten_buf_t *out, const char *message, const char *detail_json);

/* ---- local.c: answers of ten's own */

/* The request is complete: run the handler registered for its path. */
void ten__local_run(ten__conn_t *c);

/* ---- server.c */

/* A connection was freed: the shutdown may be complete. */
void ten__server_conn_closed(ten_http_server_t *s);

/* ---- conn.c, for proxy.c */
void ten__conn_write(ten__conn_t *c, ten_iobuf_t *buf, const char *data, size_t len);
/* The proxy finished its side of the exchange (response fully queued). */
void ten__conn_response_done(ten__conn_t *c);
/* Parsing may continue (the upstream is ready for the body). */
void ten__conn_unblock(ten__conn_t *c);
/* The exchange failed after the response started: close without completing it. */
void ten__conn_abort(ten__conn_t *c);
/* A JSON error response from the proxy (before any response byte was sent). */
void ten__conn_error(ten__conn_t *c, int status, const char *message, const char *detail_json,
                     const char *extra_headers);
/* Re-evaluate whether to read from the client (after backpressure eases). */
void ten__conn_update_reading(ten__conn_t *c);
/* The upstream accepted an upgrade (101, head already queued): from now on
 * the connection is a two-way tunnel. */
void ten__conn_tunnel(ten__conn_t *c);
/* Tunnel: the upstream will send no more; half-close towards the client. */
void ten__conn_shutdown_write(ten__conn_t *c);

/* The request parser's callbacks, and the checks run on a complete head
 * (strictness, client address, route): exposed for the fuzz target. */
const llhttp_settings_t *ten__request_settings(void);
const char *ten__request_head_check(ten__conn_t *c);
/* Runs llhttp over bytes read from the client and applies the strict rules
 * (strict.h) to exactly what it consumed. Returns llhttp's status, or
 * HPE_USER with c->strict_error set; *stop is where parsing stopped. */
llhttp_errno_t ten__request_execute(ten__conn_t *c, const char *start, size_t avail,
                                    const char **stop);
/* A new message may begin on the connection: the scanners start over. */
void ten__request_reset_scan(ten__conn_t *c);

/* Arms the connection's timer for a request waiting on a waking instance. */
void ten__conn_arm_wake_timeout(ten__conn_t *c, double seconds);

/* proxy.c, for server.c */
/* The route hook, if the config has one: true and key = "service:id" when it
 * decided; false to route by Host. */
bool ten__proxy_route_hook(ten__conn_t *c, char *key, size_t key_len);
void ten__proxy_start_key(ten__conn_t *c, const char *key);
void ten__proxy_wake_timeout(ten__conn_t *c);
void ten__proxy_unwait(ten__conn_t *c);
void ten__proxy_start(ten__conn_t *c);
/* A piece of request body (payload only, or raw bytes in a tunnel): queued
 * upstream with ten's own framing; ten__proxy_flush writes what was queued. */
void ten__proxy_body(ten__conn_t *c, ten_iobuf_t *buf, const char *data, size_t len);
void ten__proxy_flush(ten__conn_t *c);
void ten__proxy_request_done(ten__conn_t *c);
/* The client went away or the exchange is being torn down. */
void ten__proxy_detach(ten__conn_t *c);
/* The client drained below the low mark: reading the upstream may resume. */
void ten__proxy_client_drained(ten__conn_t *c);
/* Request bytes queued to the upstream and not yet written. */
size_t ten__proxy_queued(const ten__conn_t *c);
/* The upstream queue is above the high mark: true while the client must wait. */
bool ten__proxy_backpressure(const ten__conn_t *c);
/* Writes what the connection gathered now instead of at the end of the
 * loop turn: for a caller that knows nothing more is coming this turn. */
void ten__conn_flush(ten__conn_t *c);

/* Tunnel: the client will send no more; half-close towards the upstream. */
void ten__proxy_tunnel_client_eof(ten__conn_t *c);
void ten__proxy_init(ten_http_server_t *s);
void ten__proxy_shutdown(ten_http_server_t *s);

/* iobuf writes: one allocation-free path for every write to a stream.
 * Returns like ten__wbatch_flush. */
typedef void (*ten__write_cb)(void *owner, int status, size_t len);
int ten__write(uv_stream_t *stream, ten_iobuf_t *buf, const char *data, size_t len,
               ten__write_cb cb, void *owner);
void ten__write_trim(void);

#endif
