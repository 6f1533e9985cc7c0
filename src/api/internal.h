/* internal.h: what api.c (routing, auth, instances, metrics) and streams.c
 * (logs, live streams, events) share. */
#ifndef TEN_API_INTERNAL_H
#define TEN_API_INTERNAL_H

#include "api/api.h"

typedef struct ten__call ten__call_t;
typedef void (*ten__call_fn)(ten__call_t *call);

/* One authenticated API request, alive until it is answered or its
 * connection goes away. */
struct ten__call {
  ten_api_t *api;
  ten_http_request_t *req; /* NULL once the connection has gone */
  ten__call_fn handler;
  ten_auth_check_t *check;
  ten_auth_identity_t id;
  void (*on_gone)(ten__call_t *call); /* the handler's cleanup when the client leaves */
  void *state;                       /* the handler's */
};

typedef struct ten__stream ten__stream_t;

struct ten_api {
  ten_http_server_t *http;
  ten_hv_t *hv;
  ten_logs_t *logs;
  ten_db_t *db;
  ten_auth_t *auth;
  uint64_t started_ms;
  ten__stream_t *streams; /* open SSE streams */
  bool closing;
};

/* Answers and frees the call. */
void ten__call_json(ten__call_t *call, int status, const ten_buf_t *json);
void ten__call_error(ten__call_t *call, int status, const char *message, const char *detail);
/* Frees a call whose answer went out another way (a stream that ended). */
void ten__call_free(ten__call_t *call);
/* A tenant token may touch only instances whose id is its tenant. */
bool ten__call_may_see(const ten__call_t *call, const char *instance_id);

/* Query string value (percent-decoded into out); false when absent. */
bool ten__query_get(ten_http_request_t *req, const char *name, char *out, size_t out_len);

/* streams.c */
void ten__api_logs(ten__call_t *call);
void ten__api_logs_stream(ten__call_t *call);
void ten__api_events(ten__call_t *call);
void ten__streams_init(ten_api_t *api);
void ten__streams_close(ten_api_t *api);

#endif
