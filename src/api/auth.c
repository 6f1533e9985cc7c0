#include "api/auth.h"

#include <argon2.h>
#include <arpa/inet.h>
#include <mbedtls/sha256.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>

#include "obs/db.h"
#include "obs/metrics.h"
#include "util/json.h"
#include "util/log.h"
#include "util/map.h"
#include "util/time.h"

#define TOKEN_PREFIX "ten_"
#define SECRET_BYTES 32
#define CACHE_TTL_MS 60000
#define CACHE_MAX 4096
/* OWASP's Argon2id baseline: 19 MiB, 2 passes, 1 lane. */
#define ARGON2_T 2
#define ARGON2_M 19456
#define ARGON2_P 1
/* Failed attempts an address may make per window before it waits. */
#define FAIL_LIMIT 10
#define FAIL_WINDOW_MS 60000
#define FAIL_BLOCK_MS 60000
#define FAIL_TABLE_MAX 10000

typedef struct cached {
  uint64_t expires_ms;
  ten_auth_identity_t id;
} cached_t;

typedef struct failures {
  uint64_t window_start_ms;
  unsigned count;
  uint64_t blocked_until_ms;
} failures_t;

struct ten_auth {
  uv_loop_t *loop;
  char *db_path;
  ten_map_t cache;    /* sha256(token) (32 bytes) -> cached_t* */
  ten_map_t failures; /* client address -> failures_t* */
  ten_map_t inflight; /* sha256(token) -> verify_t* being verified now */
  ten_map_t ids;      /* token ids in the table as last read -> (void *)1 */
  uint64_t ids_generation; /* the change the ids were read after */
  size_t address_max;  /* addresses remembered at most */
  uint64_t generation; /* bumped on every change: late verifications are not cached */
  unsigned pending;    /* threadpool work in flight */
  bool freeing;
  ten_auth_stats_t stats;
};

/* One Argon2 verification on the threadpool. Requests that bring the same
 * token while it runs wait on it instead of starting their own: a busy
 * client whose cache entry expired costs one verification, not one per
 * request in flight. */
typedef struct verify {
  uv_work_t work;
  ten_auth_t *auth;
  uint64_t generation;
  char *token;
  unsigned char digest[32];
  bool ran_argon2; /* the id was found: its hash was checked */
  bool valid;
  ten_auth_identity_t id;
  ten_auth_check_t *waiters;
} verify_t;

/* One request waiting for a verification. */
struct ten_auth_check {
  ten_auth_cb cb;
  void *ctx;
  bool cancelled;
  char ip[48];
  ten_auth_check_t *next;
};

/* ------------------------------------------------------------ helpers */

bool ten_auth_is_loopback(const char *ip) {
  return strncmp(ip, "127.", 4) == 0 || strcmp(ip, "::1") == 0 ||
         strncmp(ip, "::ffff:127.", 11) == 0;
}

static void sha256(const char *s, size_t len, unsigned char out[32]) {
  mbedtls_sha256_ret((const unsigned char *)s, len, out, 0);
}

static void hex(const unsigned char *in, size_t len, char *out) {
  static const char digits[] = "0123456789abcdef";
  for (size_t i = 0; i < len; i++) {
    out[2 * i] = digits[in[i] >> 4];
    out[2 * i + 1] = digits[in[i] & 15];
  }
  out[2 * len] = '\0';
}

/* "ten_<8 hex>_<secret>" (not NUL-terminated): the row id, or false if it
 * is not shaped so. */
static bool token_id(const char *token, size_t len, char id[9]) {
  size_t n = sizeof TOKEN_PREFIX - 1;
  if (len < n + 10 || memcmp(token, TOKEN_PREFIX, n) != 0 || token[n + 8] != '_') return false;
  for (int i = 0; i < 8; i++) {
    char c = token[n + i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    id[i] = c;
  }
  id[8] = '\0';
  return true;
}

static bool split_token(const char *token, char id[9], const char **secret) {
  if (!token_id(token, strlen(token), id)) return false;
  *secret = token + sizeof TOKEN_PREFIX - 1 + 9;
  return true;
}

/* ------------------------------------------------------------ token rows */

typedef struct row_lookup {
  const char *want_id;   /* find by id, or */
  const char *want_name; /* by name */
  char id[16];
  char *hash, *name, *tenant;
  int64_t created;
  size_t count;
  bool found;
} row_lookup_t;

static void parse_row(const char *key, const char *value, row_lookup_t *out) {
  ten_json_t *doc;
  if (ten_json_parse(value, strlen(value), &doc, NULL)) return;
  const char *hash = ten_json_get_str(doc, "hash");
  const char *name = ten_json_get_str(doc, "name");
  const char *tenant = ten_json_get_str(doc, "tenant");
  double created = 0;
  ten_json_get_num(doc, "created", &created);
  snprintf(out->id, sizeof out->id, "%s", key + strlen("token:"));
  out->hash = hash ? ten_xstrdup(hash) : NULL;
  out->name = name ? ten_xstrdup(name) : NULL;
  out->tenant = tenant ? ten_xstrdup(tenant) : NULL;
  out->created = (int64_t)created;
  out->found = true;
  ten_json_free(doc);
}

static void on_row(void *ctx, const char *key, const char *value) {
  row_lookup_t *l = ctx;
  l->count++;
  if (l->found) return;
  const char *id = key + strlen("token:");
  if (l->want_id && strcmp(id, l->want_id) == 0) {
    parse_row(key, value, l);
    return;
  }
  if (l->want_name) {
    ten_json_t *doc;
    if (ten_json_parse(value, strlen(value), &doc, NULL)) return;
    const char *name = ten_json_get_str(doc, "name");
    bool match = name && strcmp(name, l->want_name) == 0;
    ten_json_free(doc);
    if (match) parse_row(key, value, l);
  }
}

static void lookup_free(row_lookup_t *l) {
  free(l->hash);
  free(l->name);
  free(l->tenant);
}

/* ------------------------------------------------------------ administration */

static bool valid_tenant(const char *s) {
  size_t len = strlen(s);
  if (len == 0 || len > 63 || s[0] == '-') return false;
  for (size_t i = 0; i < len; i++)
    if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= '0' && s[i] <= '9') || s[i] == '-'))
      return false;
  return true;
}

int ten_auth_token_gen(const char *db_path, const char *name, const char *tenant, char *token,
                       size_t token_len, ten_err_t *err) {
  if (!name || !*name || strlen(name) > 63)
    return ten_errf(err, UV_EINVAL, "a token name must be 1-63 characters");
  if (tenant && !valid_tenant(tenant))
    return ten_errf(err, UV_EINVAL, "'%s' is not a valid instance id for --tenant", tenant);
  row_lookup_t l = {.want_name = name};
  int rc = ten_db_file_config_scan(db_path, "token:", on_row, &l, err);
  if (rc) return rc;
  bool taken = l.found;
  lookup_free(&l);
  if (taken) return ten_errf(err, UV_EEXIST, "a token named '%s' exists (revoke it first)", name);

  unsigned char raw[4 + SECRET_BYTES + 16];
  if (getrandom(raw, sizeof raw, 0) != (ssize_t)sizeof raw)
    return ten_errf(err, UV_EIO, "cannot read random bytes");
  char id[9];
  hex(raw, 4, id);
  char secret[2 * SECRET_BYTES + 1];
  hex(raw + 4, SECRET_BYTES, secret);
  int n = snprintf(token, token_len, TOKEN_PREFIX "%s_%s", id, secret);
  if (n < 0 || (size_t)n >= token_len) return ten_errf(err, UV_EINVAL, "token buffer too small");

  char encoded[256];
  int arc = argon2id_hash_encoded(ARGON2_T, ARGON2_M, ARGON2_P, secret, strlen(secret),
                                  raw + 4 + SECRET_BYTES, 16, 32, encoded, sizeof encoded);
  if (arc != ARGON2_OK) return ten_errf(err, UV_EIO, "argon2: %s", argon2_error_message(arc));

  ten_buf_t value = TEN_BUF_INIT;
  ten_jw_t w;
  ten_jw_init(&w, &value);
  ten_jw_obj(&w);
  ten_jw_kstr(&w, "name", name);
  ten_jw_kstr(&w, "hash", encoded);
  ten_jw_kstr(&w, "tenant", tenant);
  ten_jw_kint(&w, "created", ten_wall_ms());
  ten_jw_obj_end(&w);
  char key[32];
  snprintf(key, sizeof key, "token:%s", id);
  rc = ten_db_file_config_set(db_path, key, value.data, err);
  ten_buf_free(&value);
  explicit_bzero(secret, sizeof secret);
  return rc;
}

typedef struct list_ctx {
  void (*fn)(void *ctx, const ten_auth_token_info_t *t);
  void *ctx;
} list_ctx_t;

static void on_list_row(void *ctx, const char *key, const char *value) {
  list_ctx_t *lc = ctx;
  row_lookup_t l = {0};
  parse_row(key, value, &l);
  if (l.found) {
    ten_auth_token_info_t t = {l.id, l.name ? l.name : "?", l.tenant, l.created};
    lc->fn(lc->ctx, &t);
  }
  lookup_free(&l);
}

int ten_auth_token_list(const char *db_path, void (*fn)(void *ctx, const ten_auth_token_info_t *t),
                        void *ctx, ten_err_t *err) {
  list_ctx_t lc = {fn, ctx};
  return ten_db_file_config_scan(db_path, "token:", on_list_row, &lc, err);
}

int ten_auth_token_revoke(const char *db_path, const char *name, ten_err_t *err) {
  row_lookup_t l = {.want_name = name};
  int rc = ten_db_file_config_scan(db_path, "token:", on_row, &l, err);
  if (rc) return rc;
  if (!l.found) {
    lookup_free(&l);
    return ten_errf(err, UV_ENOENT, "no token named '%s'", name);
  }
  char key[32];
  snprintf(key, sizeof key, "token:%s", l.id);
  lookup_free(&l);
  return ten_db_file_config_set(db_path, key, NULL, err);
}

/* ------------------------------------------------------------ the server side */

static void collect_id(void *ctx, const char *key, const char *value) {
  (void)value;
  const char *id = key + strlen("token:");
  ten_map_put(ctx, id, strlen(id), (void *)1);
}

ten_auth_t *ten_auth_new(uv_loop_t *loop, const char *db_path, ten_err_t *err) {
  ten_auth_t *a = ten_xcalloc(1, sizeof *a);
  a->loop = loop;
  a->db_path = ten_xstrdup(db_path);
  a->address_max = FAIL_TABLE_MAX;
  /* Before the loop runs: the one synchronous read. */
  if (ten_db_file_config_scan(db_path, "token:", collect_id, &a->ids, err)) {
    ten_auth_free(a);
    return NULL;
  }
  return a;
}

static void clear_cache(ten_auth_t *a) {
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&a->cache, &it, &e);) free(e->value);
  ten_map_free(&a->cache);
}

static void clear_failures(ten_auth_t *a) {
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&a->failures, &it, &e);) free(e->value);
  ten_map_free(&a->failures);
}

void ten_auth_free(ten_auth_t *a) {
  if (!a) return;
  clear_cache(a);
  clear_failures(a);
  ten_map_free(&a->ids);
  ten_map_free(&a->inflight); /* the verifications own themselves */
  if (a->pending) {
    /* Work still on the threadpool frees itself and then us. */
    a->freeing = true;
    return;
  }
  free(a->db_path);
  free(a);
}

size_t ten_auth_token_count(const ten_auth_t *a) { return a->ids.count; }

static void release_pending(ten_auth_t *a) {
  if (--a->pending == 0 && a->freeing) {
    free(a->db_path);
    free(a);
  }
}

/* ---- re-reading the token ids ---- */

typedef struct reread {
  uv_work_t work;
  ten_auth_t *auth;
  uint64_t generation;
  ten_map_t ids;
  int rc;
  ten_err_t err;
  void (*done)(void *ctx);
  void *done_ctx;
} reread_t;

static void reread_work(uv_work_t *w) {
  reread_t *r = ten_container_of(w, reread_t, work);
  r->rc = ten_db_file_config_scan(r->auth->db_path, "token:", collect_id, &r->ids, &r->err);
}

static void reread_done(uv_work_t *w, int status) {
  reread_t *r = ten_container_of(w, reread_t, work);
  ten_auth_t *a = r->auth;
  if (!a->freeing) {
    if (status < 0 || r->rc) {
      ten_log(TEN_LOG_WARN, "auth: cannot re-read the tokens: %s",
              status < 0 ? uv_strerror(status) : r->err.msg);
    } else if (r->generation > a->ids_generation) { /* re-reads may finish out of order */
      ten_map_free(&a->ids);
      a->ids = r->ids;
      a->ids_generation = r->generation;
      r->ids = (ten_map_t)TEN_MAP_INIT;
    }
    if (r->done) r->done(r->done_ctx);
  }
  ten_map_free(&r->ids);
  free(r);
  release_pending(a);
}

void ten_auth_changed(ten_auth_t *a, void (*done)(void *ctx), void *ctx) {
  /* Revocation takes effect now: nothing verified earlier is trusted. */
  clear_cache(a);
  a->generation++;
  reread_t *r = ten_xcalloc(1, sizeof *r);
  r->auth = a;
  r->generation = a->generation;
  r->done = done;
  r->done_ctx = ctx;
  a->pending++;
  int rc = uv_queue_work(a->loop, &r->work, reread_work, reread_done);
  if (rc < 0) {
    a->pending--;
    free(r);
    ten_log(TEN_LOG_WARN, "auth: cannot re-read the tokens: %s", uv_strerror(rc));
    if (done) done(ctx);
  }
}

/* ---- failed attempts, per address ---- */

static failures_t *failures_of(ten_auth_t *a, const char *ip, bool create) {
  failures_t *f = ten_map_get(&a->failures, ip, strlen(ip));
  if (f || !create) return f;
  if (a->failures.count >= a->address_max) {
    /* Forget addresses whose window and block are over. */
    uint64_t now = ten_now_ms();
    ten_map_entry_t *e;
    for (size_t it = 0; ten_map_next(&a->failures, &it, &e);) {
      failures_t *old = e->value;
      if (old->blocked_until_ms < now && now - old->window_start_ms > FAIL_WINDOW_MS) {
        free(ten_map_del(&a->failures, e->key, e->key_len));
      }
    }
    if (a->failures.count >= a->address_max) return NULL; /* under attack from everywhere */
  }
  f = ten_xcalloc(1, sizeof *f);
  ten_map_put(&a->failures, ip, strlen(ip), f);
  return f;
}

static int blocked_for(ten_auth_t *a, const char *ip) {
  failures_t *f = failures_of(a, ip, false);
  uint64_t now = ten_now_ms();
  if (!f || f->blocked_until_ms <= now) return 0;
  return (int)((f->blocked_until_ms - now + 999) / 1000);
}

static void record_failure(ten_auth_t *a, const char *ip) {
  a->stats.failures++;
  failures_t *f = failures_of(a, ip, true);
  if (!f) return;
  uint64_t now = ten_now_ms();
  if (now - f->window_start_ms > FAIL_WINDOW_MS) {
    f->window_start_ms = now;
    f->count = 0;
  }
  if (++f->count >= FAIL_LIMIT) {
    f->blocked_until_ms = now + FAIL_BLOCK_MS;
    f->count = 0;
    ten_log(TEN_LOG_WARN, "auth: %s failed %d times: refused for %d s", ip, FAIL_LIMIT,
            FAIL_BLOCK_MS / 1000);
  }
}

/* ---- checking ---- */

static void verify_work(uv_work_t *w) {
  verify_t *v = ten_container_of(w, verify_t, work);
  char id[9];
  const char *secret;
  if (!split_token(v->token, id, &secret)) return;
  /* The table, not the loop's list of ids, decides: a revocation may not
   * have reached that list yet. */
  row_lookup_t l = {.want_id = id};
  ten_err_t err;
  if (ten_db_file_config_scan(v->auth->db_path, "token:", on_row, &l, &err) == 0 && l.found &&
      l.hash && (v->ran_argon2 = true) &&
      argon2id_verify(l.hash, secret, strlen(secret)) == ARGON2_OK) {
    v->valid = true;
    v->id.admin = l.tenant == NULL;
    snprintf(v->id.tenant, sizeof v->id.tenant, "%s", l.tenant ? l.tenant : "");
    snprintf(v->id.name, sizeof v->id.name, "%s", l.name ? l.name : "");
  }
  lookup_free(&l);
}

static void verify_done(uv_work_t *w, int status) {
  verify_t *v = ten_container_of(w, verify_t, work);
  ten_auth_t *a = v->auth;
  if (!a->freeing) {
    if (v->ran_argon2) a->stats.verifications++;
    if (ten_map_get(&a->inflight, (const char *)v->digest, sizeof v->digest) == v)
      ten_map_del(&a->inflight, (const char *)v->digest, sizeof v->digest);
    if (v->valid && v->generation == a->generation) {
      if (a->cache.count >= CACHE_MAX) clear_cache(a);
      cached_t *entry = ten_xcalloc(1, sizeof *entry);
      entry->expires_ms = ten_now_ms() + CACHE_TTL_MS;
      entry->id = v->id;
      free(ten_map_put(&a->cache, (const char *)v->digest, sizeof v->digest, entry));
    }
  }
  for (ten_auth_check_t *c = v->waiters, *next; c; c = next) {
    next = c->next;
    if (!a->freeing) {
      if (!v->valid) record_failure(a, c->ip); /* each request was an attempt */
      if (!c->cancelled)
        c->cb(c->ctx, v->valid ? TEN_AUTH_OK : TEN_AUTH_INVALID, v->valid ? &v->id : NULL, 0);
    }
    free(c);
  }
  explicit_bzero(v->token, strlen(v->token));
  free(v->token);
  free(v);
  release_pending(a);
}

ten_auth_check_t *ten_auth_check(ten_auth_t *a, const char *header, size_t header_len,
                                 const char *client_ip, ten_auth_cb cb, void *ctx) {
  bool loopback = ten_auth_is_loopback(client_ip);
  if (a->ids.count == 0) {
    /* No token yet: the API is the local operator's only. */
    if (loopback) {
      ten_auth_identity_t local = {.admin = true, .name = "loopback"};
      cb(ctx, TEN_AUTH_OK, &local, 0);
    } else {
      cb(ctx, TEN_AUTH_LOOPBACK, NULL, 0);
    }
    return NULL;
  }
  int wait = blocked_for(a, client_ip);
  if (wait) {
    a->stats.throttled++;
    cb(ctx, TEN_AUTH_THROTTLED, NULL, wait);
    return NULL;
  }
  static const char scheme[] = "Bearer ";
  if (!header || header_len <= sizeof scheme - 1 ||
      strncasecmp(header, scheme, sizeof scheme - 1) != 0) {
    cb(ctx, TEN_AUTH_MISSING, NULL, 0);
    return NULL;
  }
  const char *token = header + sizeof scheme - 1;
  size_t token_len = header_len - (sizeof scheme - 1);
  while (token_len && *token == ' ') token++, token_len--;
  if (token_len == 0) {
    cb(ctx, TEN_AUTH_MISSING, NULL, 0); /* "Bearer " and nothing: no attempt made */
    return NULL;
  }
  if (token_len > 200) {
    record_failure(a, client_ip);
    cb(ctx, TEN_AUTH_INVALID, NULL, 0);
    return NULL;
  }
  unsigned char digest[32];
  sha256(token, token_len, digest);
  cached_t *hit = ten_map_get(&a->cache, (const char *)digest, sizeof digest);
  if (hit && hit->expires_ms > ten_now_ms()) {
    cb(ctx, TEN_AUTH_OK, &hit->id, 0);
    return NULL;
  }
  char id[9];
  if (!token_id(token, token_len, id) || !ten_map_get(&a->ids, id, strlen(id))) {
    record_failure(a, client_ip); /* no id, no verification */
    cb(ctx, TEN_AUTH_INVALID, NULL, 0);
    return NULL;
  }
  ten_auth_check_t *c = ten_xcalloc(1, sizeof *c);
  c->cb = cb;
  c->ctx = ctx;
  snprintf(c->ip, sizeof c->ip, "%s", client_ip);
  verify_t *v = ten_map_get(&a->inflight, (const char *)digest, sizeof digest);
  /* A verification started before a revocation may have read the old
   * table: requests after it start their own. */
  if (v && v->generation == a->generation) {
    c->next = v->waiters;
    v->waiters = c;
    return c;
  }
  v = ten_xcalloc(1, sizeof *v);
  v->auth = a;
  v->generation = a->generation;
  v->token = ten_xstrndup(token, token_len);
  memcpy(v->digest, digest, sizeof digest);
  v->waiters = c;
  a->pending++;
  if (uv_queue_work(a->loop, &v->work, verify_work, verify_done) < 0) {
    a->pending--;
    free(v->token);
    free(v);
    free(c);
    cb(ctx, TEN_AUTH_INVALID, NULL, 0);
    return NULL;
  }
  ten_map_put(&a->inflight, (const char *)digest, sizeof digest, v);
  return c;
}

void ten_auth_cancel(ten_auth_check_t *c) {
  if (c) c->cancelled = true;
}

/* ------------------------------------------------------------ stats */

void ten_auth_stats(const ten_auth_t *a, ten_auth_stats_t *out) {
  *out = a->stats;
  out->addresses = a->failures.count;
}

void ten_auth_metrics(const ten_auth_t *a, ten_buf_t *out) {
  ten_auth_stats_t st;
  ten_auth_stats(a, &st);
  ten_metric_single(out, "tenement_auth_verifications_total", "counter",
                    "Argon2id token verifications run.", (double)st.verifications);
  ten_metric_single(out, "tenement_auth_failures_total", "counter",
                    "API requests with a wrong, unknown or malformed token.", (double)st.failures);
  ten_metric_single(out, "tenement_auth_throttled_total", "counter",
                    "API requests answered 429 for an address's failed attempts.",
                    (double)st.throttled);
  ten_metric_single(out, "tenement_auth_addresses", "gauge",
                    "Client addresses whose recent attempts are remembered.", (double)st.addresses);
}

void ten__auth_set_address_max(ten_auth_t *a, size_t max) { a->address_max = max; }
