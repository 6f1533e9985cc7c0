/* auth.h: bearer tokens for the API.
 *
 * A token is "ten_<id>_<secret>" (8 hex digits naming its row, 256 random
 * bits). Only an Argon2id hash of it is stored, in tenement.db's config
 * table ("token:<id>" -> {"name","hash","tenant","created"}). Verifying a
 * hash is deliberately slow, so it runs on the threadpool; a verified
 * token is cached (keyed by its SHA-256, for a minute), and requests that
 * bring a token while it is being verified wait for that one verification.
 * Any change to the tokens (`ten token-revoke`) empties the cache at once.
 * The loop knows which ids exist (re-read on every change): a token whose
 * id does not exist is refused at once and never costs a verification.
 *
 * A tenant token acts only on instances whose id is its tenant. While no
 * token exists the API answers only on loopback.
 *
 * Throttling, per client address, with two budgets a window (a minute;
 * once one is spent, the address waits a minute, answered 429 with
 * Retry-After):
 *   - TEN_AUTH_FAIL_LIMIT failed attempts of any kind. Past it, what can
 *     be refused without Argon2 is: no token, a malformed one, one whose
 *     id no token has.
 *   - TEN_AUTH_FAIL_LIMIT failed Argon2 verifications, counted while they
 *     run: an address has that many slots, a verification takes one, a
 *     failed one keeps it for the window, a successful one gives it back.
 *     Requests that find every slot taken wait for one (they are not
 *     refused while the verifications in flight may still succeed); once
 *     all are spent, the address gets no more verifications.
 * A token that verifies is never refused for its address's failures: it
 * is answered from the cache at once, or verified in one of the slots.
 * The one exception is the price of the Argon2 budget: from an address
 * that spent it (someone there knows a real id and keeps guessing its
 * secret), only tokens verified in the last minute (from anywhere) pass.
 * Requests that bring a token already being verified join that
 * verification and cost no slot. The table of addresses is bounded: when
 * it is full, the least recently used address is forgotten (addresses
 * with verifications in flight stay: the table exceeds its bound only by
 * those).
 *
 * The token functions (gen, list, revoke) work on the file directly, with
 * or without a running server. Everything else is loop-thread only.
 */
#ifndef TEN_API_AUTH_H
#define TEN_API_AUTH_H

#include <uv.h>

#include "util/buf.h"
#include "util/common.h"

#define TEN_TENANT_MAX 64
/* Failed attempts, and failed Argon2 verifications, an address may make
 * in a minute (see above). */
#define TEN_AUTH_FAIL_LIMIT 10

typedef struct ten_auth ten_auth_t;

typedef struct ten_auth_identity {
  bool admin;                  /* false: a tenant token */
  char tenant[TEN_TENANT_MAX]; /* the instance id a tenant token is for */
  char name[64];
} ten_auth_identity_t;

typedef enum ten_auth_outcome {
  TEN_AUTH_OK,
  TEN_AUTH_MISSING,     /* no or malformed Authorization header: 401 */
  TEN_AUTH_INVALID,     /* a token that is not (or no longer) valid: 401 */
  TEN_AUTH_THROTTLED,   /* too many failures from this address: 429 */
  TEN_AUTH_LOOPBACK,    /* no token exists yet and the client is not local: 403 */
} ten_auth_outcome_t;

typedef struct ten_auth_check ten_auth_check_t;
typedef void (*ten_auth_cb)(void *ctx, ten_auth_outcome_t outcome, const ten_auth_identity_t *id,
                            int retry_after);

ten_auth_t *ten_auth_new(uv_loop_t *loop, const char *db_path, ten_err_t *err);
void ten_auth_free(ten_auth_t *a);
/* The token table changed: empties the cache now, re-reads the token ids
 * (on the threadpool), then calls done (may be NULL) once they are in use
 * (or could not be read: the old ones stay, the table still decides). */
void ten_auth_changed(ten_auth_t *a, void (*done)(void *ctx), void *ctx);
/* How many tokens exist (as of the last read). */
size_t ten_auth_token_count(const ten_auth_t *a);

/* Checks `Authorization` (may be NULL) for a request from client_ip. The
 * callback runs at once when the answer is known (cache, throttle, bad
 * header or token, unknown id) and returns NULL; otherwise later, and the returned check can be
 * cancelled (the request went away: the callback will not run). */
ten_auth_check_t *ten_auth_check(ten_auth_t *a, const char *header, size_t header_len,
                                 const char *client_ip, ten_auth_cb cb, void *ctx);
void ten_auth_cancel(ten_auth_check_t *check);

/* ---- token administration, synchronous, on the database file ---- */

/* Creates a token and prints nothing: `token` receives it (the only time it
 * exists in clear). tenant NULL = admin. */
int ten_auth_token_gen(const char *db_path, const char *name, const char *tenant, char *token,
                       size_t token_len, ten_err_t *err);
typedef struct ten_auth_token_info {
  const char *id, *name, *tenant;
  int64_t created_ms;
} ten_auth_token_info_t;
int ten_auth_token_list(const char *db_path, void (*fn)(void *ctx, const ten_auth_token_info_t *t),
                        void *ctx, ten_err_t *err);
int ten_auth_token_revoke(const char *db_path, const char *name, ten_err_t *err);

/* Is this address loopback (127/8, ::1, ::ffff:127.x)? */
bool ten_auth_is_loopback(const char *ip);

/* ---- what the checks cost: /metrics, and tests that count ---- */

typedef struct ten_auth_stats {
  uint64_t verifications;     /* Argon2 verifications run (the expensive part) */
  uint64_t failures;          /* attempts that failed: wrong, unknown or malformed tokens */
  uint64_t throttled;         /* answers THROTTLED */
  uint64_t addresses_evicted; /* forgotten to make room for another address */
  size_t addresses;           /* client addresses remembered now */
} ten_auth_stats_t;

void ten_auth_stats(const ten_auth_t *a, ten_auth_stats_t *out);
/* The tenement_auth_* families, in Prometheus text. */
void ten_auth_metrics(const ten_auth_t *a, ten_buf_t *out);

/* Tests only: how many client addresses are remembered (default 10000). */
void ten__auth_set_address_max(ten_auth_t *a, size_t max);

#endif
