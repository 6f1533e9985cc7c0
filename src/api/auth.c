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
/* What an address may fail in a window before it is refused, and for how
 * long it is refused then. */
#define FAIL_LIMIT TEN_AUTH_FAIL_LIMIT
#define FAIL_WINDOW_MS 60000
#define FAIL_BLOCK_MS 60000
#define ADDRESS_MAX 10000

typedef struct cached {
  uint64_t expires_ms;
  ten_auth_identity_t id;
} cached_t;

typedef struct verify verify_t;
typedef struct address address_t;

/* What one client address did lately (the policy is in auth.h). An
 * address with verifications running or waiting is busy and stays; the
 * others are in the idle list, most recently used first, and the least
 * recently used one is forgotten when a new address needs its room. */
struct address {
  address_t *newer, *older; /* the idle list, while `listed` */
  bool listed;
  uint64_t window_start_ms;
  uint64_t blocked_until_ms;
  unsigned failures;            /* failed attempts in this window */
  unsigned verify_failures;     /* failed Argon2 verifications it started, this window */
  unsigned verifying;           /* Argon2 verifications it started, running now */
  verify_t *queue, *queue_tail; /* verifications waiting for one of its slots */
  char ip[];
};

struct ten_auth {
  uv_loop_t *loop;
  char *db_path;
  ten_map_t cache;         /* sha256(token) (32 bytes) -> cached_t* */
  ten_map_t ids;           /* token ids in the table as last read -> (void *)1 */
  uint64_t ids_generation; /* the change the ids were read after */
  ten_map_t addresses;     /* client address -> address_t* */
  address_t *idle_newest, *idle_oldest;
  size_t address_max;  /* more only while every address is busy */
  ten_map_t inflight;  /* sha256(token) -> the verify_t a request with it joins */
  uint64_t generation; /* bumped on every change: late verifications are not cached */
  unsigned pending;    /* threadpool work in flight */
  bool freeing;
  ten_auth_stats_t stats;
};

/* One Argon2 verification of one token, charged to the address whose
 * request started it. Requests that bring the same token while it runs
 * wait on it instead of starting their own: a busy client whose cache
 * entry expired costs one verification, not one per request in flight. */
struct verify {
  uv_work_t work;
  ten_auth_t *auth;
  address_t *owner;
  verify_t *next_queued;
  bool running; /* on the threadpool (else waiting in owner's queue) */
  uint64_t generation;
  char *token;
  unsigned char digest[32];
  bool ran_argon2; /* the id was found: its hash was checked */
  bool valid;
  ten_auth_identity_t id;
  ten_auth_check_t *waiters;
};

/* One request waiting for a verification. */
struct ten_auth_check {
  ten_auth_cb cb;
  void *ctx;
  bool cancelled;
  ten_auth_check_t *next;
  char ip[]; /* the client's address */
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
  a->address_max = ADDRESS_MAX;
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

/* Frees a verification that never ran, and its waiters, calling no one. */
static void free_verify(verify_t *v) {
  for (ten_auth_check_t *c = v->waiters, *next; c; c = next) {
    next = c->next;
    free(c);
  }
  explicit_bzero(v->token, strlen(v->token));
  free(v->token);
  free(v);
}

static void clear_addresses(ten_auth_t *a) {
  ten_map_entry_t *e;
  for (size_t it = 0; ten_map_next(&a->addresses, &it, &e);) {
    address_t *ad = e->value;
    for (verify_t *v = ad->queue, *next; v; v = next) {
      next = v->next_queued;
      free_verify(v);
    }
    free(ad);
  }
  ten_map_free(&a->addresses);
  a->idle_newest = a->idle_oldest = NULL;
}

void ten_auth_free(ten_auth_t *a) {
  if (!a) return;
  clear_cache(a);
  clear_addresses(a);
  ten_map_free(&a->ids);
  ten_map_free(&a->inflight); /* running verifications own themselves */
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

/* ---- what each address did ---- */

static bool address_busy(const address_t *ad) { return ad->verifying || ad->queue; }

static void idle_remove(ten_auth_t *a, address_t *ad) {
  if (!ad->listed) return;
  if (ad->newer)
    ad->newer->older = ad->older;
  else
    a->idle_newest = ad->older;
  if (ad->older)
    ad->older->newer = ad->newer;
  else
    a->idle_oldest = ad->newer;
  ad->newer = ad->older = NULL;
  ad->listed = false;
}

static void forget(ten_auth_t *a, address_t *ad) {
  idle_remove(a, ad);
  ten_map_del(&a->addresses, ad->ip, strlen(ad->ip));
  free(ad);
}

/* The record of ip (NULL if there is none and !create), its window
 * brought up to date. The caller ends with place(). */
static address_t *address_of(ten_auth_t *a, const char *ip, bool create) {
  size_t len = strlen(ip);
  address_t *ad = ten_map_get(&a->addresses, ip, len);
  if (!ad) {
    if (!create) return NULL;
    while (a->addresses.count >= a->address_max && a->idle_oldest) {
      forget(a, a->idle_oldest);
      a->stats.addresses_evicted++;
    }
    ad = ten_xcalloc(1, sizeof *ad + len + 1);
    memcpy(ad->ip, ip, len + 1);
    ten_map_put(&a->addresses, ad->ip, len, ad);
  }
  uint64_t now = ten_now_ms();
  if (ad->blocked_until_ms <= now && now - ad->window_start_ms >= FAIL_WINDOW_MS) {
    ad->window_start_ms = now;
    ad->failures = ad->verify_failures = 0;
    ad->blocked_until_ms = 0;
  }
  return ad;
}

/* Done with ad for now: it becomes the most recently used idle address,
 * stays out of the list while busy, or is forgotten if it has nothing
 * against it (a client whose token verified). */
static void place(ten_auth_t *a, address_t *ad) {
  idle_remove(a, ad);
  if (address_busy(ad)) return;
  if (ad->failures == 0 && ad->verify_failures == 0 && ad->blocked_until_ms == 0) {
    forget(a, ad);
    return;
  }
  ad->older = a->idle_newest;
  if (a->idle_newest)
    a->idle_newest->newer = ad;
  else
    a->idle_oldest = ad;
  a->idle_newest = ad;
  ad->listed = true;
}

/* Seconds until ad may try again, or 0. */
static int blocked_for(const address_t *ad) {
  uint64_t now = ten_now_ms();
  if (!ad || ad->blocked_until_ms <= now) return 0;
  return (int)((ad->blocked_until_ms - now + 999) / 1000);
}

static void block(address_t *ad, const char *what, unsigned count, const char *then) {
  ad->blocked_until_ms = ten_now_ms() + FAIL_BLOCK_MS;
  ten_log(TEN_LOG_WARN, "auth: %s failed %u %s: for %d s %s", ad->ip, count, what,
          FAIL_BLOCK_MS / 1000, then);
}

static void failed_attempt(ten_auth_t *a, address_t *ad) {
  a->stats.failures++;
  if (++ad->failures == FAIL_LIMIT && !blocked_for(ad))
    block(ad, "times", FAIL_LIMIT, "only tokens whose id exists are checked from it");
}

static void failed_verification(address_t *ad) {
  if (++ad->verify_failures == FAIL_LIMIT)
    block(ad, "token verifications", FAIL_LIMIT, "only tokens verified already pass from it");
}

/* ---- verifying ---- */

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
      l.hash) {
    v->ran_argon2 = true;
    if (argon2id_verify(l.hash, secret, strlen(secret)) == ARGON2_OK) {
      v->valid = true;
      v->id.admin = l.tenant == NULL;
      snprintf(v->id.tenant, sizeof v->id.tenant, "%s", l.tenant ? l.tenant : "");
      snprintf(v->id.name, sizeof v->id.name, "%s", l.name ? l.name : "");
    }
  }
  lookup_free(&l);
}

static void verify_done(uv_work_t *w, int status);

/* Answers v's waiters with outcome (without counting anything) and frees
 * v: for verifications that do not run. */
static void drop_verify(ten_auth_t *a, verify_t *v, ten_auth_outcome_t outcome) {
  if (ten_map_get(&a->inflight, (const char *)v->digest, sizeof v->digest) == v)
    ten_map_del(&a->inflight, (const char *)v->digest, sizeof v->digest);
  int wait = 0;
  if (outcome == TEN_AUTH_THROTTLED) {
    wait = blocked_for(v->owner);
    if (wait == 0) wait = 1;
  }
  for (ten_auth_check_t *c = v->waiters; c; c = c->next) {
    if (c->cancelled) continue;
    if (outcome == TEN_AUTH_THROTTLED) a->stats.throttled++;
    c->cb(c->ctx, outcome, NULL, wait);
  }
  free_verify(v);
}

/* Puts v on the threadpool, in one of its owner's slots; false if it
 * could not (v is answered and gone). */
static bool start_verify(ten_auth_t *a, verify_t *v) {
  v->running = true;
  v->owner->verifying++;
  a->pending++;
  int rc = uv_queue_work(a->loop, &v->work, verify_work, verify_done);
  if (rc < 0) {
    ten_log(TEN_LOG_ERROR, "auth: cannot queue a verification: %s", uv_strerror(rc));
    a->pending--;
    v->owner->verifying--;
    drop_verify(a, v, TEN_AUTH_INVALID);
    return false;
  }
  return true;
}

static bool all_cancelled(const verify_t *v) {
  for (const ten_auth_check_t *c = v->waiters; c; c = c->next)
    if (!c->cancelled) return false;
  return true;
}

/* Starts what waits in ad's queue as its slots free up; once ad has
 * failed FAIL_LIMIT verifications, what waits is refused. */
static void pump(ten_auth_t *a, address_t *ad) {
  while (ad->queue) {
    bool spent = ad->verify_failures >= FAIL_LIMIT;
    if (!spent && ad->verifying + ad->verify_failures >= FAIL_LIMIT) return;
    verify_t *v = ad->queue;
    ad->queue = v->next_queued;
    if (!ad->queue) ad->queue_tail = NULL;
    if (spent || all_cancelled(v))
      drop_verify(a, v, TEN_AUTH_THROTTLED);
    else
      start_verify(a, v);
  }
}

static void verify_done(uv_work_t *w, int status) {
  verify_t *v = ten_container_of(w, verify_t, work);
  ten_auth_t *a = v->auth;
  if (a->freeing) {
    free_verify(v);
    release_pending(a);
    return;
  }
  if (status < 0) v->valid = false;
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
  address_t *owner = v->owner;
  owner->verifying--;
  if (!v->valid && v->ran_argon2) failed_verification(owner);
  if (!v->valid) {
    for (ten_auth_check_t *c = v->waiters; c; c = c->next) { /* each request was an attempt */
      address_t *ad = address_of(a, c->ip, true);
      failed_attempt(a, ad);
      if (ad != owner) place(a, ad);
    }
  }
  pump(a, owner);
  place(a, owner);
  /* Callers hear last, when the books are straight. */
  for (ten_auth_check_t *c = v->waiters, *next; c; c = next) {
    next = c->next;
    if (!c->cancelled)
      c->cb(c->ctx, v->valid ? TEN_AUTH_OK : TEN_AUTH_INVALID, v->valid ? &v->id : NULL, 0);
    free(c);
  }
  v->waiters = NULL;
  free_verify(v);
  release_pending(a);
}

/* ---- checking ---- */

/* Answers what needs no Argon2: `outcome`, a failed attempt if `failed`,
 * or THROTTLED if the address has failed too often. */
static void answer_now(ten_auth_t *a, const char *ip, ten_auth_outcome_t outcome, bool failed,
                       ten_auth_cb cb, void *ctx) {
  address_t *ad = address_of(a, ip, failed);
  int wait = blocked_for(ad);
  if (!wait && failed) failed_attempt(a, ad);
  if (ad) place(a, ad);
  if (wait) {
    a->stats.throttled++;
    cb(ctx, TEN_AUTH_THROTTLED, NULL, wait);
  } else {
    cb(ctx, outcome, NULL, 0);
  }
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
  static const char scheme[] = "Bearer ";
  if (!header || header_len <= sizeof scheme - 1 ||
      strncasecmp(header, scheme, sizeof scheme - 1) != 0) {
    answer_now(a, client_ip, TEN_AUTH_MISSING, false, cb, ctx);
    return NULL;
  }
  const char *token = header + sizeof scheme - 1;
  size_t token_len = header_len - (sizeof scheme - 1);
  while (token_len && *token == ' ') token++, token_len--;
  if (token_len == 0) { /* "Bearer " and nothing: no attempt made */
    answer_now(a, client_ip, TEN_AUTH_MISSING, false, cb, ctx);
    return NULL;
  }
  if (token_len > 200) {
    answer_now(a, client_ip, TEN_AUTH_INVALID, true, cb, ctx);
    return NULL;
  }
  unsigned char digest[32];
  sha256(token, token_len, digest);
  cached_t *hit = ten_map_get(&a->cache, (const char *)digest, sizeof digest);
  if (hit && hit->expires_ms > ten_now_ms()) {
    cb(ctx, TEN_AUTH_OK, &hit->id, 0); /* never throttled: it verified */
    return NULL;
  }
  char id[9];
  if (!token_id(token, token_len, id) || !ten_map_get(&a->ids, id, strlen(id))) {
    answer_now(a, client_ip, TEN_AUTH_INVALID, true, cb, ctx);
    return NULL;
  }

  /* A token whose id exists: only Argon2 can tell. */
  address_t *ad = address_of(a, client_ip, true);
  verify_t *v = ten_map_get(&a->inflight, (const char *)digest, sizeof digest);
  /* Joining costs no verification, so it needs no slot; but one started
   * before a revocation may have read the old table, and one waiting for
   * another address's slot may never run. */
  bool join = v && v->generation == a->generation && (v->running || v->owner == ad);
  if (!join && ad->verify_failures >= FAIL_LIMIT) {
    int wait = blocked_for(ad);
    place(a, ad);
    a->stats.throttled++;
    cb(ctx, TEN_AUTH_THROTTLED, NULL, wait > 0 ? wait : 1);
    return NULL;
  }
  size_t ip_len = strlen(client_ip);
  ten_auth_check_t *c = ten_xcalloc(1, sizeof *c + ip_len + 1);
  c->cb = cb;
  c->ctx = ctx;
  memcpy(c->ip, client_ip, ip_len + 1);
  if (join) {
    c->next = v->waiters;
    v->waiters = c;
    place(a, ad);
    return c;
  }
  v = ten_xcalloc(1, sizeof *v);
  v->auth = a;
  v->owner = ad;
  v->generation = a->generation;
  v->token = ten_xstrndup(token, token_len);
  memcpy(v->digest, digest, sizeof digest);
  v->waiters = c;
  ten_map_put(&a->inflight, (const char *)digest, sizeof digest, v);
  bool started = true;
  if (ad->verifying + ad->verify_failures < FAIL_LIMIT) {
    started = start_verify(a, v);
  } else {
    /* Its slots are taken by verifications that may yet succeed. */
    if (ad->queue_tail)
      ad->queue_tail->next_queued = v;
    else
      ad->queue = v;
    ad->queue_tail = v;
  }
  place(a, ad);
  return started ? c : NULL;
}

void ten_auth_cancel(ten_auth_check_t *c) {
  if (c) c->cancelled = true;
}

/* ------------------------------------------------------------ stats */

void ten_auth_stats(const ten_auth_t *a, ten_auth_stats_t *out) {
  *out = a->stats;
  out->addresses = a->addresses.count;
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
                    "Client addresses whose recent failures are remembered.", (double)st.addresses);
  ten_metric_single(out, "tenement_auth_addresses_evicted_total", "counter",
                    "Addresses forgotten, least recently used first, to make room for others.",
                    (double)st.addresses_evicted);
}

void ten__auth_set_address_max(ten_auth_t *a, size_t max) { a->address_max = max; }
