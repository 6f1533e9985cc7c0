/* common.h: small shared definitions every subsystem uses.
 *
 * Error convention: functions return 0 on success or a negative errno-style
 * code (the same space as libuv's UV_E* codes). Where a person will read the
 * error, the caller also passes a ten_err_t that receives a full sentence.
 * Small fixed allocations abort on out-of-memory (ten_xmalloc and friends);
 * sizes that come from the network must use plain malloc and fail the request.
 */
#ifndef TEN_UTIL_COMMON_H
#define TEN_UTIL_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define ten_container_of(ptr, type, member) ((type *)((char *)(ptr)-offsetof(type, member)))
#define TEN_ARRAY_SIZE(a)                   (sizeof(a) / sizeof((a)[0]))
#define TEN_MIN(a, b)                       ((a) < (b) ? (a) : (b))
#define TEN_MAX(a, b)                       ((a) > (b) ? (a) : (b))

#if defined(__GNUC__)
#define TEN_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define ten_likely(x)         __builtin_expect(!!(x), 1)
#define ten_unlikely(x)       __builtin_expect(!!(x), 0)
#else
#define TEN_PRINTF(fmt, args)
#define ten_likely(x)   (x)
#define ten_unlikely(x) (x)
#endif

/* A human-readable error: filled by the callee, printed by whoever reports. */
typedef struct ten_err {
  char msg[1024];
} ten_err_t;

/* Sets err->msg (if err is not NULL) and returns code, so callers can write
 * `return ten_errf(err, UV_EINVAL, "...")`. */
int ten_errf(ten_err_t *err, int code, const char *fmt, ...) TEN_PRINTF(3, 4);

void *ten_xmalloc(size_t size);
void *ten_xcalloc(size_t count, size_t size);
void *ten_xrealloc(void *ptr, size_t size);
char *ten_xstrdup(const char *s);
char *ten_xstrndup(const char *s, size_t len);
char *ten_xasprintf(const char *fmt, ...) TEN_PRINTF(1, 2);

/* Case-insensitive ASCII comparison of a length-delimited string with a
 * NUL-terminated literal, as HTTP header names need. */
bool ten_strieq(const char *s, size_t len, const char *lit);

#endif
