/* fuzz_request: the request parser (llhttp with our callbacks, limits and
 * strict scanners), the head checks (framing, absolute form) and the Host
 * router, on arbitrary bytes split at an arbitrary point (as two reads
 * would deliver them). */
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "http/conn.h"

static uv_loop_t loop;
static ten_http_server_t server;
static ten_config_t *config;

static void setup(void) {
  static bool done;
  if (done) return;
  done = true;
  uv_loop_init(&loop);
  ten_err_t err;
  static const char source[] =
      "settings { domain = \"example.com\", trusted_proxies = { \"127.0.0.1\", \"10.0.0.0/8\" },"
      " max_header_size = 4096, max_body_size = 1000 }\ninstances {}";
  if (ten_config_load_source("fuzz.lua", source, sizeof source - 1, NULL, &config, &err)) abort();
  server.loop = &loop;
  server.config = config;
}

static void run(ten__conn_t *c, const char *data, size_t len) {
  static const char nothing[1];
  const char *p = data, *end = data + len;
  bool resume = false;
  for (int guard = 0; guard < 10000 && (p < end || resume); guard++) {
    const char *start = p < end ? p : nothing;
    size_t avail = (size_t)(end - p);
    resume = false;
    const char *stop;
    llhttp_errno_t e = ten__request_execute(c, start, avail, &stop);
    if (e == HPE_OK) {
      p = end;
      continue;
    }
    if (e != HPE_PAUSED && e != HPE_PAUSED_UPGRADE) return;
    if (avail) p = stop;
    llhttp_resume(&c->parser);
    if (c->pause == TEN_PAUSE_HEAD) {
      if (ten__request_head_check(c)) return; /* refused: nothing more is parsed */
      c->mode = TEN_MODE_DISCARD;
      resume = true;
    } else if (c->pause == TEN_PAUSE_DONE) {
      if (e == HPE_PAUSED_UPGRADE) return;
      c->mode = TEN_MODE_HEAD;
      ten__request_reset_scan(c);
    }
  }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  setup();
  ten__conn_t *c = calloc(1, sizeof *c);
  c->server = &server;
  uv_timer_init(&loop, &c->timer);
  snprintf(c->client_ip, sizeof c->client_ip, "127.0.0.1");
  llhttp_init(&c->parser, HTTP_REQUEST, ten__request_settings());
  c->parser.data = c;
  c->mode = TEN_MODE_HEAD;
  ten__request_reset_scan(c);
  /* The first byte picks where the input is split into two reads. */
  size_t split = size ? data[0] % (size + 1) : 0;
  const char *text = (const char *)data + (size ? 1 : 0);
  size_t len = size ? size - 1 : 0;
  if (split > len) split = len;
  char *first = malloc(split + 1), *second = malloc(len - split + 1);
  memcpy(first, text, split);
  memcpy(second, text + split, len - split);
  run(c, first, split);
  run(c, second, len - split);
  free(first);
  free(second);
  uv_close((uv_handle_t *)&c->timer, NULL);
  uv_run(&loop, UV_RUN_NOWAIT);
  ten_buf_free(&c->head.arena);
  free(c);
  return 0;
}
