/* upstream.h: the proxy's internals, shared by proxy.c (where a request
 * goes), upstream.c (one connection to an instance and the exchange on it),
 * upstream_pool.c (per-instance idle connections and request metrics) and
 * forward.c (what ten sends onward: the request re-serialized for the
 * instance, the response head rewritten for the client). Loop thread only.
 */
#ifndef TEN_HTTP_UPSTREAM_H
#define TEN_HTTP_UPSTREAM_H

#include "http/conn.h"
#include "obs/metrics.h"

#define POOL_IDLE_TIMEOUT_MS 60000
/* Beyond upstream_keepalive, an idle connection lingers this long instead
 * of closing at once: under a burst wider than the pool (1000 clients, 32
 * kept) every request would otherwise pay a connect and a close. After the
 * burst the surplus goes quietly. Never more than POOL_SURPLUS_MAX idle. */
#define POOL_SURPLUS_LINGER_MS 2000
#define POOL_SURPLUS_MAX 1024

typedef struct ten__pool pool_t;

#define METRIC_CODES 24

struct ten__pool {
  ten_http_server_t *server;
  ten_instance_t *inst;  /* NULL once the instance is gone */
  /* Request metrics of the instance: its series go when it goes. */
  struct {
    int code;
    uint64_t count;
  } codes[METRIC_CODES];
  unsigned ncodes;
  uint64_t other_codes;
  ten_histogram_t duration;
  ten__upstream_t *idle; /* most recently used first */
  unsigned idle_count;
  unsigned upstreams;  /* upstreams that point here */
  pool_t *next, *prev; /* the proxy's list */
};

struct ten__upstream {
  union {
    uv_handle_t handle;
    uv_stream_t stream;
    uv_pipe_t pipe;
    uv_tcp_t tcp;
  } h;
  uv_timer_t timer;
  uv_connect_t connect_req;
  int open_handles;
  pool_t *pool;
  ten__conn_t *client;
  ten__upstream_t *next_idle, *prev_idle;

  llhttp_t parser;
  ten__head_t head; /* the response head being parsed */
  ten__pause_t pause;
  bool resume_pending;
  ten_iobuf_t *rbuf;
  size_t rpos, rlen;

  ten_iobuf_t *request_head; /* kept until the response starts, for a retry */
  size_t request_head_len;

  ten__wbatch_t out;    /* request bytes gathered, written after each parse */
  ten_iobuf_t *frame;   /* chunk sizes and CRLFs ten writes (re-chunking) */
  uint32_t frame_used;
  bool chunked;         /* the request body is re-chunked */
  bool resp_chunked;    /* the response body is chunked: checked before it is forwarded */
  ten_strict_chunked_t body_scan;
  const char *body_scan_pos; /* response bytes before this are checked */
  const char *strict_error;  /* why the response was refused */
  size_t write_pending;
  uint64_t deadline_ms; /* loop time the timer's phase ends (see up_arm) */
  size_t last_read;     /* picks the next read buffer's size */
  bool connected;
  bool reused; /* came from the pool: may have been closed under us */
  bool reading;
  bool closing;
  bool in_pool;
  bool head_sent; /* the final response head went to the client */
  bool resp_done;
  bool req_sent;  /* every request byte was queued */
  bool body_sent; /* some request body bytes were queued */
  bool got_bytes; /* the upstream sent something for this exchange */
  bool dechunk;   /* HTTP/1.0 client: forward the de-chunked body */
  bool retried;
  bool tunnel;     /* after a 101: raw bytes both ways */
  bool up_eof;     /* tunnel: the instance closed its side */
  bool client_eof; /* tunnel: the client closed its side */
};

/* Appends to a fixed buffer; remembers if anything did not fit. */
typedef struct head_writer {
  char *p, *end;
  bool overflow;
} head_writer_t;

/* ---- upstream_pool.c */

pool_t *ten__pool_of(ten_http_server_t *s, ten_instance_t *inst);
/* Frees the pool once its instance is gone and no upstream points at it. */
void ten__pool_maybe_free(pool_t *p);
/* One finished request of the instance: counted by status, timed (once). */
void ten__pool_record(pool_t *p, ten__conn_t *c, int status);
void ten__pool_record_inst(ten__conn_t *c, ten_instance_t *inst, int status);
/* Keeps an upstream whose exchange ended cleanly for the next request. */
void ten__pool_put_idle(ten__upstream_t *up);
void ten__pool_remove_idle(ten__upstream_t *up);

/* ---- upstream.c */

const llhttp_settings_t *ten__response_settings(void);
ten__upstream_t *ten__up_new(pool_t *p);
int ten__up_connect(ten__upstream_t *up);
void ten__up_close(ten__upstream_t *up);
/* Sends the request head; body bytes may flow after it. */
void ten__up_send_head(ten__upstream_t *up);
/* Fails the exchange: an error response if nothing was sent yet, else the
 * client connection is cut so it cannot mistake a partial response. */
void ten__up_fail(ten__upstream_t *up, int status, const char *message, int uv_err);
void ten__instance_detail(ten_buf_t *out, const ten_instance_t *inst);

/* ---- forward.c */

/* Builds the head sent upstream straight into b; false if it does not fit. */
bool ten__build_request_head(ten__conn_t *c, ten_iobuf_t *b, size_t *out_len);
void ten__write_response_head(head_writer_t *w, ten__upstream_t *up, int status, bool switching,
                              bool interim, bool client_http10);

#endif
