#include "api/api.h"

#include "util/json.h"
#include "util/time.h"

#include <stdlib.h>
#include <string.h>

struct ten_api {
  ten_http_server_t *http;
  ten_hv_t *hv;
  uint64_t started_ms;
};

static void get_health(void *ctx, ten_http_request_t *req) {
  ten_api_t *api = ctx;
  unsigned counts[TEN_INST_STATE_COUNT];
  ten_hv_count(api->hv, counts);
  unsigned total = 0;
  for (int i = 0; i < TEN_INST_STATE_COUNT; i++) total += counts[i];

  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "status", "ok");
  ten_jw_kstr(&w, "version", TEN_VERSION);
  ten_jw_knum(&w, "uptime", (double)(ten_now_ms() - api->started_ms) / 1000.0);
  ten_jw_key(&w, "instances");
  ten_jw_obj(&w);
  ten_jw_kint(&w, "total", total);
  for (int i = 0; i < TEN_INST_STATE_COUNT; i++)
    ten_jw_kint(&w, ten_instance_state_name((ten_instance_state_t)i), counts[i]);
  ten_jw_obj_end(&w);
  const ten_http_stats_t *st = ten_http_stats(api->http);
  ten_jw_key(&w, "http");
  ten_jw_obj(&w);
  ten_jw_kint(&w, "connections_open", (int64_t)st->connections_open);
  ten_jw_kint(&w, "requests_total", (int64_t)st->requests_total);
  ten_jw_kint(&w, "requests_in_flight", (int64_t)st->requests_in_flight);
  ten_jw_obj_end(&w);
  ten_jw_obj_end(&w);
  ten_buf_putc(&out, '\n');
  ten_http_respond_json(req, 200, &out);
  ten_buf_free(&out);
}

static void get_instances(void *ctx, ten_http_request_t *req) {
  ten_api_t *api = ctx;
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_hv_to_json(api->hv, &w);
  ten_buf_putc(&out, '\n');
  ten_http_respond_json(req, 200, &out);
  ten_buf_free(&out);
}

/* Decodes %XX escapes (a ':' may arrive as %3A); false on a bad escape. */
static bool url_decode(const char *in, size_t len, char *out, size_t outlen) {
  size_t o = 0;
  for (size_t i = 0; i < len; i++) {
    if (o + 1 >= outlen) return false;
    char c = in[i];
    if (c == '%') {
      if (i + 2 >= len) return false;
      char hex[3] = {in[i + 1], in[i + 2], 0};
      char *end;
      long v = strtol(hex, &end, 16);
      if (*end || v <= 0) return false;
      c = (char)v;
      i += 2;
    }
    out[o++] = c;
  }
  out[o] = '\0';
  return true;
}

static void get_instance(void *ctx, ten_http_request_t *req) {
  ten_api_t *api = ctx;
  static const char prefix[] = "/api/instances/";
  size_t len;
  const char *path = ten_http_req_path(req, &len);
  char key[256];
  if (!url_decode(path + sizeof prefix - 1, len - (sizeof prefix - 1), key, sizeof key) ||
      !strchr(key, ':')) {
    ten_http_respond_error(req, 400, "address an instance as /api/instances/{service}:{id}", NULL);
    return;
  }
  ten_instance_t *inst = ten_hv_find_key(api->hv, key);
  if (!inst) {
    ten_buf_t detail = TEN_BUF_INIT;
    ten_buf_puts(&detail, "\"instance\":");
    ten_json_quote(&detail, key, strlen(key));
    ten_http_respond_error(req, 404, "no such instance", detail.data);
    ten_buf_free(&detail);
    return;
  }
  ten_buf_t out = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &out);
  ten_instance_to_json(inst, &w);
  ten_buf_putc(&out, '\n');
  ten_http_respond_json(req, 200, &out);
  ten_buf_free(&out);
}

ten_api_t *ten_api_new(ten_http_server_t *http, ten_hv_t *hv) {
  ten_api_t *api = ten_xcalloc(1, sizeof *api);
  api->http = http;
  api->hv = hv;
  api->started_ms = ten_now_ms();
  ten_http_handle(http, "GET", "/health", false, get_health, api);
  ten_http_handle(http, "GET", "/api/instances", false, get_instances, api);
  ten_http_handle(http, "GET", "/api/instances/", true, get_instance, api);
  return api;
}

void ten_api_free(ten_api_t *api) { free(api); }
