/* test_auth.c: API tokens (src/api/auth.h): generation and storage (only a
 * hash on disk), listing, revocation, and checking on a real uv loop:
 * verification on the threadpool, the cache, throttling per address (with
 * verifications in flight counted, tokens that verify never refused, and a
 * bounded table of addresses), the loopback rule, and cancellation. */
#include "test.h"
#include "test_loop.h"
#include "api/auth.h"
#include "util/log.h"

#include <ctype.h>
#include <ftw.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- fixtures */

static char dir[] = "/tmp/ten-unit-auth-XXXXXX";
static char db_path[256];
static uv_loop_t loop;

/* The last callback of a check. */
static struct {
  int calls;
  ten_auth_outcome_t outcome;
  bool has_id;
  ten_auth_identity_t id;
  int retry_after;
} got;

static void on_auth(void *ctx, ten_auth_outcome_t outcome, const ten_auth_identity_t *id,
                    int retry_after) {
  (void)ctx;
  got.calls++;
  got.outcome = outcome;
  got.has_id = id != NULL;
  if (id) got.id = *id;
  else memset(&got.id, 0, sizeof got.id);
  got.retry_after = retry_after;
}

/* Runs a check to its end. *sync says whether the answer came at once. */
static ten_auth_outcome_t check(ten_auth_t *a, const char *header, const char *ip, bool *sync) {
  memset(&got, 0, sizeof got);
  ten_auth_check_t *c =
      ten_auth_check(a, header, header ? strlen(header) : 0, ip, on_auth, NULL);
  bool at_once = got.calls == 1;
  CHECK(at_once == (c == NULL)); /* NULL exactly when the callback already ran */
  if (!at_once) uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(got.calls, 1);
  if (sync) *sync = at_once;
  return got.outcome;
}

static char bearer_admin[256], bearer_tenant[256], admin_token[128], tenant_token[128];

static bool is_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!isxdigit((unsigned char)s[i]) || isupper((unsigned char)s[i])) return false;
  return true;
}

/* Does `needle` occur anywhere in the file's bytes? */
static bool file_contains(const char *path, const char *needle) {
  FILE *f = fopen(path, "rb");
  if (!f) return false;
  size_t cap = 1 << 20, len = 0;
  char *data = malloc(cap);
  size_t n;
  while ((n = fread(data + len, 1, cap - len, f)) > 0) {
    len += n;
    if (len == cap) data = realloc(data, cap *= 2);
  }
  fclose(f);
  bool found = memmem(data, len, needle, strlen(needle)) != NULL;
  free(data);
  return found;
}

/* ---------------------------------------------------------------- tokens */

TEST(token_gen) {
  ten_err_t err;
  CHECK_EQ(ten_auth_token_gen(db_path, "ops", NULL, admin_token, sizeof admin_token, &err), 0);
  /* ten_<8 hex>_<64 hex> */
  CHECK_EQ(strlen(admin_token), 4 + 8 + 1 + 64);
  CHECK(strncmp(admin_token, "ten_", 4) == 0);
  CHECK(is_hex(admin_token + 4, 8));
  CHECK_EQ(admin_token[12], '_');
  CHECK(is_hex(admin_token + 13, 64));

  CHECK_EQ(ten_auth_token_gen(db_path, "acme-ci", "acme", tenant_token, sizeof tenant_token, &err),
           0);
  CHECK_EQ(strlen(tenant_token), 77);
  CHECK(strcmp(admin_token, tenant_token) != 0);
  CHECK(strncmp(admin_token + 13, tenant_token + 13, 64) != 0);
  snprintf(bearer_admin, sizeof bearer_admin, "Bearer %s", admin_token);
  snprintf(bearer_tenant, sizeof bearer_tenant, "Bearer %s", tenant_token);

  /* Only a hash reaches the disk: neither secret, nor any token, is in the
   * file (or its WAL, if one is left). The id is: it names the row. */
  char wal[300];
  snprintf(wal, sizeof wal, "%s-wal", db_path);
  const char *secrets[] = {admin_token + 13, tenant_token + 13, admin_token, tenant_token};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(secrets); i++) {
    CHECK(!file_contains(db_path, secrets[i]));
    CHECK(!file_contains(wal, secrets[i]));
    /* Not even half of it. */
    char half[40];
    snprintf(half, sizeof half, "%.32s", secrets[i] + (i < 2 ? 0 : 13));
    CHECK(!file_contains(db_path, half));
    CHECK(!file_contains(wal, half));
  }
  char id[9];
  snprintf(id, sizeof id, "%.8s", admin_token + 4);
  CHECK(file_contains(db_path, id) || file_contains(wal, id));
  CHECK(file_contains(db_path, "argon2id") || file_contains(wal, "argon2id"));

  /* Errors. */
  char other[128];
  err.msg[0] = '\0';
  CHECK_EQ(ten_auth_token_gen(db_path, "ops", NULL, other, sizeof other, &err), UV_EEXIST);
  CHECK_CONTAINS(err.msg, "ops");
  CHECK_EQ(ten_auth_token_gen(db_path, "ops", "acme", other, sizeof other, &err), UV_EEXIST);
  static const char *const bad_tenants[] = {"", "Acme", "-acme", "ac me", "acme_1", "a.b", "a:b",
                                            "0123456789012345678901234567890123456789012345678901234567890123"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bad_tenants); i++) {
    int rc = ten_auth_token_gen(db_path, "t", bad_tenants[i], other, sizeof other, &err);
    if (rc != UV_EINVAL) fprintf(stderr, "  tenant \"%s\" accepted\n", bad_tenants[i]);
    CHECK_EQ(rc, UV_EINVAL);
  }
  CHECK_EQ(ten_auth_token_gen(db_path, "", NULL, other, sizeof other, &err), UV_EINVAL);
  char long_name[80];
  memset(long_name, 'n', 64);
  long_name[64] = '\0';
  CHECK_EQ(ten_auth_token_gen(db_path, long_name, NULL, other, sizeof other, &err), UV_EINVAL);
  /* Too small a buffer: an error, and no token row left behind. */
  char small[20];
  CHECK(ten_auth_token_gen(db_path, "small", NULL, small, sizeof small, &err) < 0);
}

typedef struct listed {
  int count;
  char name[4][64], tenant[4][64], id[4][16];
  int64_t created[4];
} listed_t;

static void on_token(void *ctx, const ten_auth_token_info_t *t) {
  listed_t *l = ctx;
  if (l->count == 4) return;
  snprintf(l->name[l->count], sizeof l->name[0], "%s", t->name);
  snprintf(l->tenant[l->count], sizeof l->tenant[0], "%s", t->tenant ? t->tenant : "(admin)");
  snprintf(l->id[l->count], sizeof l->id[0], "%s", t->id);
  l->created[l->count] = t->created_ms;
  l->count++;
}

static int find_listed(const listed_t *l, const char *name) {
  for (int i = 0; i < l->count; i++)
    if (!strcmp(l->name[i], name)) return i;
  return -1;
}

TEST(token_list) {
  ten_err_t err;
  listed_t l = {0};
  CHECK_EQ(ten_auth_token_list(db_path, on_token, &l, &err), 0);
  CHECK_EQ(l.count, 2); /* the failed attempts left nothing */
  int ops = find_listed(&l, "ops"), acme = find_listed(&l, "acme-ci");
  CHECK(ops >= 0 && acme >= 0);
  if (ops < 0 || acme < 0) return;
  CHECK_STR(l.tenant[ops], "(admin)");
  CHECK_STR(l.tenant[acme], "acme");
  char id[9];
  snprintf(id, sizeof id, "%.8s", admin_token + 4);
  CHECK_STR(l.id[ops], id);
  snprintf(id, sizeof id, "%.8s", tenant_token + 4);
  CHECK_STR(l.id[acme], id);
  CHECK(l.created[ops] > 1600000000000LL); /* wall-clock ms */
  CHECK(l.created[acme] >= l.created[ops]);

  /* An empty database lists nothing. */
  char empty[300];
  snprintf(empty, sizeof empty, "%s/empty.db", dir);
  listed_t none = {0};
  CHECK_EQ(ten_auth_token_list(empty, on_token, &none, &err), 0);
  CHECK_EQ(none.count, 0);
}

/* ---------------------------------------------------------------- checks */

static ten_auth_t *auth;

TEST(check_valid) {
  ten_err_t err;
  auth = ten_auth_new(&loop, db_path, &err);
  CHECK(auth != NULL);
  if (!auth) return;
  CHECK_EQ(ten_auth_token_count(auth), 2);
  bool sync;
  ten_auth_stats_t st;
  /* First time: verified on the threadpool. */
  CHECK_EQ(check(auth, bearer_admin, "10.1.1.1", &sync), TEN_AUTH_OK);
  CHECK(!sync);
  ten_auth_stats(auth, &st);
  CHECK_EQ(st.verifications, 1);
  CHECK(got.has_id);
  CHECK(got.id.admin);
  CHECK_STR(got.id.name, "ops");
  CHECK_STR(got.id.tenant, "");
  /* Then from the cache, at once, from any address. */
  CHECK_EQ(check(auth, bearer_admin, "10.1.1.1", &sync), TEN_AUTH_OK);
  CHECK(sync);
  CHECK(got.id.admin);
  CHECK_STR(got.id.name, "ops");
  CHECK_EQ(check(auth, bearer_admin, "192.168.0.9", &sync), TEN_AUTH_OK);
  CHECK(sync);
  ten_auth_stats(auth, &st);
  CHECK_EQ(st.verifications, 1); /* the cache answered */
  /* The scheme is case-insensitive. */
  char lower[256];
  snprintf(lower, sizeof lower, "bearer %s", admin_token);
  CHECK_EQ(check(auth, lower, "10.1.1.1", &sync), TEN_AUTH_OK);

  /* A tenant token: not admin, its tenant set. */
  CHECK_EQ(check(auth, bearer_tenant, "10.1.1.1", &sync), TEN_AUTH_OK);
  CHECK(!sync);
  CHECK(!got.id.admin);
  CHECK_STR(got.id.tenant, "acme");
  CHECK_STR(got.id.name, "acme-ci");
  CHECK_EQ(check(auth, bearer_tenant, "10.1.1.1", &sync), TEN_AUTH_OK);
  CHECK(sync);
  CHECK(!got.id.admin);
  CHECK_STR(got.id.tenant, "acme");
}

TEST(check_rejected) {
  if (!auth) return;
  bool sync;
  /* A valid id with a wrong secret. */
  char wrong[256];
  snprintf(wrong, sizeof wrong, "%s", bearer_admin);
  size_t n = strlen(wrong);
  wrong[n - 1] = wrong[n - 1] == '0' ? '1' : '0';
  CHECK_EQ(check(auth, wrong, "10.2.2.2", &sync), TEN_AUTH_INVALID);
  CHECK(!got.has_id);
  /* A well-formed token whose id does not exist. */
  char unknown[256];
  snprintf(unknown, sizeof unknown, "Bearer ten_%s_%s",
           strncmp(admin_token + 4, "00000000", 8) ? "00000000" : "11111111", admin_token + 13);
  CHECK_EQ(check(auth, unknown, "10.2.2.2", &sync), TEN_AUTH_INVALID);
  /* Not shaped like a token at all. */
  CHECK_EQ(check(auth, "Bearer hunter2", "10.2.2.2", &sync), TEN_AUTH_INVALID);
  /* The right token with something after it is not the right token. */
  char extra[300];
  snprintf(extra, sizeof extra, "%sx", bearer_admin);
  CHECK_EQ(check(auth, extra, "10.2.2.2", &sync), TEN_AUTH_INVALID);

  /* No usable header: MISSING, at once. */
  CHECK_EQ(check(auth, NULL, "10.2.2.2", &sync), TEN_AUTH_MISSING);
  CHECK(sync);
  CHECK_EQ(check(auth, "", "10.2.2.2", &sync), TEN_AUTH_MISSING);
  CHECK_EQ(check(auth, "Basic xyz", "10.2.2.2", &sync), TEN_AUTH_MISSING);
  CHECK(sync);
  CHECK_EQ(check(auth, "Bearer", "10.2.2.2", &sync), TEN_AUTH_MISSING);
  CHECK_EQ(check(auth, "Bearer ", "10.2.2.2", &sync), TEN_AUTH_MISSING);
  CHECK_EQ(check(auth, admin_token, "10.2.2.2", &sync), TEN_AUTH_MISSING); /* no scheme */
  CHECK(!got.has_id);
}

TEST(throttle) {
  if (!auth) return;
  bool sync;
  /* MISSING does not count as a failed attempt. */
  for (int i = 0; i < 20; i++) check(auth, "Basic xyz", "10.8.8.8", NULL);
  CHECK_EQ(check(auth, bearer_admin, "10.8.8.8", &sync), TEN_AUTH_OK);

  /* Ten failures from one address (a too-long token is refused at once;
   * the last one goes through the threadpool). */
  char junk[300];
  memcpy(junk, "Bearer ", 7);
  memset(junk + 7, 'z', 250);
  junk[257] = '\0';
  for (int i = 0; i < 9; i++) {
    CHECK_EQ(check(auth, junk, "10.9.9.9", &sync), TEN_AUTH_INVALID);
    CHECK(sync);
  }
  char wrong[256];
  snprintf(wrong, sizeof wrong, "%s", bearer_admin);
  size_t n = strlen(wrong);
  wrong[n - 2] = wrong[n - 2] == 'a' ? 'b' : 'a';
  CHECK_EQ(check(auth, wrong, "10.9.9.9", &sync), TEN_AUTH_INVALID);
  CHECK(!sync);
  /* Now what is not a token from there waits... */
  CHECK_EQ(check(auth, junk, "10.9.9.9", &sync), TEN_AUTH_THROTTLED);
  CHECK(sync);
  CHECK(got.retry_after > 0 && got.retry_after <= 60);
  CHECK(!got.has_id);
  CHECK_EQ(check(auth, NULL, "10.9.9.9", &sync), TEN_AUTH_THROTTLED);
  /* ...but the right token does not. */
  CHECK_EQ(check(auth, bearer_admin, "10.9.9.9", &sync), TEN_AUTH_OK);
  CHECK(got.id.admin);
  /* Nobody else does. */
  CHECK_EQ(check(auth, bearer_admin, "10.9.9.10", &sync), TEN_AUTH_OK);
  CHECK_EQ(check(auth, bearer_tenant, "::1", &sync), TEN_AUTH_OK);
  /* The earlier wrong secrets from 10.2.2.2 were fewer than ten. */
  CHECK_EQ(check(auth, bearer_admin, "10.2.2.2", &sync), TEN_AUTH_OK);
}

/* ---------------------------------------------------------------- throttling */

/* The outcomes of many checks started together. */
typedef struct tally {
  int calls, ok, invalid, throttled, other;
} tally_t;

static void on_tally(void *ctx, ten_auth_outcome_t outcome, const ten_auth_identity_t *id,
                     int retry_after) {
  tally_t *t = ctx;
  (void)id, (void)retry_after;
  t->calls++;
  if (outcome == TEN_AUTH_OK)
    t->ok++;
  else if (outcome == TEN_AUTH_INVALID)
    t->invalid++;
  else if (outcome == TEN_AUTH_THROTTLED)
    t->throttled++;
  else
    t->other++;
}

/* Starts a check whose answer is counted in t (at once or later). */
static void start(ten_auth_t *a, const char *header, const char *ip, tally_t *t) {
  ten_auth_check(a, header, strlen(header), ip, on_tally, t);
}

/* "Bearer <token>" with token's id and the n-th wrong secret. */
static void wrong_secret(char *out, size_t size, const char *token, unsigned n) {
  snprintf(out, size, "Bearer ten_%.8s_%064x", token + 4, n + 1);
}

/* "Bearer <token>" with an id no token has (the n-th such). */
static void unknown_id(char *out, size_t size, unsigned n) {
  for (unsigned id = n;; id += 0x10000) {
    char hex[9];
    snprintf(hex, sizeof hex, "%08x", id);
    if (strncmp(hex, admin_token + 4, 8) && strncmp(hex, tenant_token + 4, 8)) {
      snprintf(out, size, "Bearer ten_%s_%064x", hex, 7u);
      return;
    }
  }
}

static uint64_t verifications(const ten_auth_t *a) {
  ten_auth_stats_t st;
  ten_auth_stats(a, &st);
  return st.verifications;
}

/* 200 wrong secrets for a real id, sent at once from one address: only
 * as many Argon2 verifications run as the address may fail; the rest are
 * refused once those failed. */
TEST(throttle_counts_attempts_in_flight) {
  ten_err_t err;
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  enum { N = 200 };
  tally_t t = {0};
  char header[160];
  for (unsigned i = 0; i < N; i++) {
    wrong_secret(header, sizeof header, admin_token, i);
    start(a, header, "10.20.0.1", &t);
  }
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(t.calls, N);
  CHECK_EQ(verifications(a), TEN_AUTH_FAIL_LIMIT);
  CHECK_EQ(t.invalid, TEN_AUTH_FAIL_LIMIT);
  CHECK_EQ(t.throttled, N - TEN_AUTH_FAIL_LIMIT);
  CHECK_EQ(t.ok + t.other, 0);
  /* Another address has its own budget. */
  wrong_secret(header, sizeof header, admin_token, N);
  CHECK_EQ(check(a, header, "10.20.0.2", NULL), TEN_AUTH_INVALID);
  CHECK_EQ(verifications(a), TEN_AUTH_FAIL_LIMIT + 1);
  ten_auth_free(a);
}

/* Requests whose tokens verify are never refused for their address's
 * failures; and refusing them never costs an Argon2 verification the
 * address has not earned. */
TEST(valid_token_never_throttled) {
  ten_err_t err;
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  bool sync;
  char header[160];

  /* Ten tokens whose id does not exist: refused at once, no Argon2. */
  for (unsigned i = 0; i < TEN_AUTH_FAIL_LIMIT; i++) {
    unknown_id(header, sizeof header, i);
    CHECK_EQ(check(a, header, "10.30.0.1", &sync), TEN_AUTH_INVALID);
    CHECK(sync);
  }
  CHECK_EQ(verifications(a), 0);
  /* That address is now refused garbage and unknown ids... */
  unknown_id(header, sizeof header, 99);
  CHECK_EQ(check(a, header, "10.30.0.1", &sync), TEN_AUTH_THROTTLED);
  CHECK(sync);
  CHECK(got.retry_after > 0 && got.retry_after <= 60);
  CHECK_EQ(check(a, "Bearer hunter2", "10.30.0.1", &sync), TEN_AUTH_THROTTLED);
  /* ...but the right token, never verified before, is verified and let in. */
  CHECK_EQ(check(a, bearer_admin, "10.30.0.1", &sync), TEN_AUTH_OK);
  CHECK(!sync);
  CHECK(got.id.admin);
  CHECK_EQ(verifications(a), 1);
  CHECK_EQ(check(a, bearer_admin, "10.30.0.1", &sync), TEN_AUTH_OK); /* cached */
  CHECK(sync);
  /* A wrong secret for a real id is verified too: it may be the one. */
  wrong_secret(header, sizeof header, tenant_token, 0);
  CHECK_EQ(check(a, header, "10.30.0.1", &sync), TEN_AUTH_INVALID);
  CHECK_EQ(verifications(a), 2);

  /* An address that failed its ten verifications gets no more of them... */
  for (unsigned i = 0; i < TEN_AUTH_FAIL_LIMIT; i++) {
    wrong_secret(header, sizeof header, admin_token, i);
    CHECK_EQ(check(a, header, "10.30.0.2", &sync), TEN_AUTH_INVALID);
  }
  CHECK_EQ(verifications(a), 2 + TEN_AUTH_FAIL_LIMIT);
  wrong_secret(header, sizeof header, admin_token, 100);
  CHECK_EQ(check(a, header, "10.30.0.2", &sync), TEN_AUTH_THROTTLED);
  CHECK(sync);
  /* ...not even for a right token nobody verified yet (that would be a
   * way around the limit)... */
  CHECK_EQ(check(a, bearer_tenant, "10.30.0.2", &sync), TEN_AUTH_THROTTLED);
  CHECK(sync);
  CHECK_EQ(verifications(a), 2 + TEN_AUTH_FAIL_LIMIT);
  /* ...but a token verified already passes at once. */
  CHECK_EQ(check(a, bearer_admin, "10.30.0.2", &sync), TEN_AUTH_OK);
  CHECK(sync);
  /* Once verified elsewhere, the tenant's token passes there too. */
  CHECK_EQ(check(a, bearer_tenant, "10.30.0.3", &sync), TEN_AUTH_OK);
  CHECK_EQ(check(a, bearer_tenant, "10.30.0.2", &sync), TEN_AUTH_OK);
  CHECK(sync);
  ten_auth_free(a);
}

/* Tokens that verify, many at once from one address (a proxy in front of
 * many clients): all are let in, none waits for a 429. */
TEST(many_valid_tokens_at_once) {
  ten_err_t err;
  enum { N = 2 * TEN_AUTH_FAIL_LIMIT };
  static char tokens[N][128], headers[N][160];
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "proxied-%d", i);
    CHECK_EQ(ten_auth_token_gen(db_path, name, "acme", tokens[i], sizeof tokens[i], &err), 0);
    snprintf(headers[i], sizeof headers[i], "Bearer %s", tokens[i]);
  }
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  tally_t t = {0};
  for (int i = 0; i < N; i++) start(a, headers[i], "10.40.0.1", &t);
  /* One more, waiting behind them, whose client leaves: it never runs. */
  char header[160];
  wrong_secret(header, sizeof header, admin_token, 0);
  ten_auth_cancel(ten_auth_check(a, header, strlen(header), "10.40.0.1", on_tally, &t));
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(t.ok, N);
  CHECK_EQ(t.calls, N);
  CHECK_EQ(verifications(a), N);
  ten_auth_free(a);
  for (int i = 0; i < N; i++) {
    char name[32];
    snprintf(name, sizeof name, "proxied-%d", i);
    CHECK_EQ(ten_auth_token_revoke(db_path, name, &err), 0);
  }
}

/* A full table of addresses forgets the one used longest ago: it never
 * stops counting failures. */
TEST(address_table_evicts_oldest) {
  ten_err_t err;
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  ten__auth_set_address_max(a, 3);
  char header[160];
  unknown_id(header, sizeof header, 1);
  for (unsigned i = 0; i + 1 < TEN_AUTH_FAIL_LIMIT; i++) check(a, header, "10.50.0.1", NULL);
  CHECK_EQ(check(a, header, "10.50.0.2", NULL), TEN_AUTH_INVALID);
  CHECK_EQ(check(a, header, "10.50.0.3", NULL), TEN_AUTH_INVALID);
  /* 10.50.0.1's tenth failure: refused from now on. */
  CHECK_EQ(check(a, header, "10.50.0.1", NULL), TEN_AUTH_INVALID);
  CHECK_EQ(check(a, header, "10.50.0.1", NULL), TEN_AUTH_THROTTLED);
  /* The table is full. New addresses push out the oldest (.2, then .3),
   * and are counted like any other. */
  for (unsigned i = 0; i < TEN_AUTH_FAIL_LIMIT; i++)
    CHECK_EQ(check(a, header, "10.50.0.4", NULL), TEN_AUTH_INVALID);
  CHECK_EQ(check(a, header, "10.50.0.4", NULL), TEN_AUTH_THROTTLED);
  CHECK_EQ(check(a, header, "10.50.0.5", NULL), TEN_AUTH_INVALID);
  CHECK_EQ(check(a, header, "10.50.0.1", NULL), TEN_AUTH_THROTTLED);
  ten_auth_stats_t st;
  ten_auth_stats(a, &st);
  CHECK_EQ(st.addresses, 3);
  CHECK_EQ(st.addresses_evicted, 2);
  ten_auth_free(a);
}

/* The loop knows which token ids exist from the last read of the table:
 * a new token is known once ten_auth_changed says so; a revoked one that
 * it still lists is refused by the table, without Argon2. */
static void on_flag(void *ctx) { *(bool *)ctx = true; }

TEST(changed_rereads_ids) {
  ten_err_t err;
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  char late[128], bearer_late[160];
  CHECK_EQ(ten_auth_token_gen(db_path, "late", NULL, late, sizeof late, &err), 0);
  snprintf(bearer_late, sizeof bearer_late, "Bearer %s", late);
  bool sync, reread = false;
  CHECK_EQ(check(a, bearer_late, "10.60.0.1", &sync), TEN_AUTH_INVALID); /* not heard of yet */
  CHECK(sync);
  size_t before = ten_auth_token_count(a);
  ten_auth_changed(a, on_flag, &reread);
  CHECK(!reread); /* on the threadpool */
  CHECK(test_run_until(&loop, &reread, 10));
  CHECK_EQ(ten_auth_token_count(a), before + 1);
  CHECK_EQ(check(a, bearer_late, "10.60.0.1", &sync), TEN_AUTH_OK);
  CHECK(!sync);
  uint64_t ran = verifications(a);
  /* Revoked, and the loop not told: the table refuses it (the cache, too,
   * must be told, as the revoke test shows). */
  CHECK_EQ(ten_auth_token_revoke(db_path, "late", &err), 0);
  ten_auth_changed(a, NULL, NULL);
  CHECK_EQ(check(a, bearer_late, "10.60.0.1", &sync), TEN_AUTH_INVALID);
  CHECK(!sync); /* the table said so */
  CHECK_EQ(verifications(a), ran);
  CHECK_EQ(ten_auth_token_count(a), before);
  ten_auth_free(a);
}

/* Freed with verifications running and waiting: nobody is called back,
 * nothing leaks (the sanitizer run checks). */
TEST(free_with_work_queued) {
  ten_err_t err;
  ten_auth_t *a = ten_auth_new(&loop, db_path, &err);
  CHECK(a != NULL);
  if (!a) return;
  tally_t t = {0};
  char header[160];
  for (unsigned i = 0; i < TEN_AUTH_FAIL_LIMIT + 3; i++) {
    wrong_secret(header, sizeof header, admin_token, i);
    start(a, header, "10.70.0.1", &t);
  }
  ten_auth_free(a);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(t.calls, 0);
}

static int cancelled_calls;
static void on_cancelled(void *ctx, ten_auth_outcome_t outcome, const ten_auth_identity_t *id,
                         int retry_after) {
  (void)ctx, (void)outcome, (void)id, (void)retry_after;
  cancelled_calls++;
}

TEST(revoke) {
  if (!auth) return;
  ten_err_t err;
  bool sync;
  CHECK_EQ(ten_auth_token_revoke(db_path, "acme-ci", &err), 0);
  CHECK_EQ(ten_auth_token_revoke(db_path, "acme-ci", &err), UV_ENOENT);
  CHECK_EQ(ten_auth_token_revoke(db_path, "nobody", &err), UV_ENOENT);
  CHECK_CONTAINS(err.msg, "nobody");
  listed_t l = {0};
  CHECK_EQ(ten_auth_token_list(db_path, on_token, &l, &err), 0);
  CHECK_EQ(l.count, 1);

  /* Until the server hears of it, the cache still answers... */
  CHECK_EQ(check(auth, bearer_tenant, "10.3.3.3", &sync), TEN_AUTH_OK);
  CHECK(sync);
  /* ...and once it has, the revoked token is refused at once. */
  ten_auth_changed(auth, NULL, NULL);
  CHECK_EQ(check(auth, bearer_tenant, "10.3.3.3", &sync), TEN_AUTH_INVALID);
  CHECK(!got.has_id);
  CHECK_EQ(ten_auth_token_count(auth), 1); /* recounted on the threadpool */
  /* The other token is verified again (the cache was emptied), still valid. */
  CHECK_EQ(check(auth, bearer_admin, "10.3.3.3", &sync), TEN_AUTH_OK);
  CHECK(!sync);
  CHECK_EQ(check(auth, bearer_admin, "10.3.3.3", &sync), TEN_AUTH_OK);
  CHECK(sync);

  /* A cancelled check never calls back. */
  ten_auth_changed(auth, NULL, NULL);
  cancelled_calls = 0;
  ten_auth_check_t *c =
      ten_auth_check(auth, bearer_admin, strlen(bearer_admin), "10.4.4.4", on_cancelled, NULL);
  CHECK(c != NULL);
  ten_auth_cancel(c);
  ten_auth_cancel(NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(cancelled_calls, 0);
  /* (Its verification still filled the cache.) */
  CHECK_EQ(check(auth, bearer_admin, "10.4.4.4", &sync), TEN_AUTH_OK);

  /* Revoking the last token: back to loopback only. */
  CHECK_EQ(ten_auth_token_revoke(db_path, "ops", &err), 0);
  ten_auth_changed(auth, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(ten_auth_token_count(auth), 0);
  CHECK_EQ(check(auth, bearer_admin, "10.1.1.1", &sync), TEN_AUTH_LOOPBACK);
  CHECK_EQ(check(auth, NULL, "127.0.0.1", &sync), TEN_AUTH_OK);
  CHECK(got.id.admin);

  /* Freeing with a verification in flight: the callback never comes. */
  CHECK_EQ(ten_auth_token_gen(db_path, "ops2", NULL, admin_token, sizeof admin_token, &err), 0);
  snprintf(bearer_admin, sizeof bearer_admin, "Bearer %s", admin_token);
  ten_auth_changed(auth, NULL, NULL);
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(ten_auth_token_count(auth), 1);
  cancelled_calls = 0;
  c = ten_auth_check(auth, bearer_admin, strlen(bearer_admin), "10.5.5.5", on_cancelled, NULL);
  CHECK(c != NULL);
  ten_auth_free(auth);
  auth = NULL;
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(cancelled_calls, 0);
}

TEST(no_tokens_loopback_only) {
  ten_err_t err;
  char empty[300];
  snprintf(empty, sizeof empty, "%s/none.db", dir);
  ten_auth_t *a = ten_auth_new(&loop, empty, &err);
  CHECK(a != NULL);
  if (!a) return;
  CHECK_EQ(ten_auth_token_count(a), 0);
  bool sync;
  static const char *const local[] = {"127.0.0.1", "127.1.2.3", "::1", "::ffff:127.0.0.1"};
  for (size_t i = 0; i < TEN_ARRAY_SIZE(local); i++) {
    CHECK_EQ(check(a, NULL, local[i], &sync), TEN_AUTH_OK);
    CHECK(sync);
    CHECK(got.has_id && got.id.admin);
  }
  CHECK_EQ(check(a, NULL, "10.0.0.5", &sync), TEN_AUTH_LOOPBACK);
  CHECK(sync);
  CHECK(!got.has_id);
  CHECK_EQ(check(a, bearer_admin, "10.0.0.5", &sync), TEN_AUTH_LOOPBACK);
  CHECK_EQ(check(a, NULL, "::ffff:10.0.0.5", &sync), TEN_AUTH_LOOPBACK);
  ten_auth_free(a);

  /* A database that cannot be read: no auth object, an error. */
  char nowhere[300];
  snprintf(nowhere, sizeof nowhere, "%s/missing/x.db", dir);
  err.msg[0] = '\0';
  CHECK(ten_auth_new(&loop, nowhere, &err) == NULL);
  CHECK(err.msg[0] != '\0');
}

TEST(is_loopback) {
  static const struct {
    const char *ip;
    bool loopback;
  } cases[] = {
      {"127.0.0.1", true},        {"127.255.255.254", true}, {"127.0.1.1", true},
      {"::1", true},              {"::ffff:127.0.0.1", true}, {"::ffff:127.9.9.9", true},
      {"10.0.0.5", false},        {"128.0.0.1", false},       {"1.127.0.0", false},
      {"12.7.0.1", false},        {"1270.0.0.1", false},      {"::2", false},
      {"::10", false},            {"::ffff:10.0.0.1", false}, {"fe80::1", false},
      {"0.0.0.0", false},         {"", false},                {"localhost", false},
      {"::ffff:128.0.0.1", false}, {"192.168.1.127", false},
  };
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    bool is = ten_auth_is_loopback(cases[i].ip);
    if (is != cases[i].loopback) fprintf(stderr, "  \"%s\"\n", cases[i].ip);
    CHECK(is == cases[i].loopback);
  }
}

int main(void) {
  ten_log_set_level(TEN_LOG_ERROR);
  if (!mkdtemp(dir)) {
    perror("mkdtemp");
    return 1;
  }
  snprintf(db_path, sizeof db_path, "%s/tenement.db", dir);
  CHECK_EQ(uv_loop_init(&loop), 0);
  RUN(token_gen);
  RUN(token_list);
  RUN(check_valid);
  RUN(check_rejected);
  RUN(throttle);
  RUN(throttle_counts_attempts_in_flight);
  RUN(valid_token_never_throttled);
  RUN(many_valid_tokens_at_once);
  RUN(address_table_evicts_oldest);
  RUN(changed_rereads_ids);
  RUN(free_with_work_queued);
  RUN(revoke);
  RUN(no_tokens_loopback_only);
  RUN(is_loopback);
  ten_auth_free(auth); /* NULL unless a test stopped early */
  uv_run(&loop, UV_RUN_DEFAULT);
  CHECK_EQ(uv_loop_close(&loop), 0);
  CHECK_EQ(test_rm_rf(dir), 0);
  return test_report();
}
