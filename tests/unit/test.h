/* test.h: the smallest test harness that does the job.
 *
 *   TEST(name) { CHECK(x == 1); CHECK_STR(a, "b"); CHECK_EQ(n, 3); }
 *   int main(void) { RUN(name); return test_report(); }
 *
 * A failed check prints file:line and the expression, marks the test
 * failed and carries on; test_report() prints a summary and returns the
 * process exit status (0 only if every check held).
 */
#ifndef TEN_TEST_H
#define TEN_TEST_H

#include <ftw.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

static int test_failures;
static int test_checks;
static const char *test_current;

#define TEST(name) static void test_##name(void)

#define RUN(name)                                                                  \
  do {                                                                             \
    int before_ = test_failures;                                                   \
    test_current = #name;                                                          \
    test_##name();                                                                 \
    printf("%s %s\n", test_failures == before_ ? "ok  " : "FAIL", #name);          \
  } while (0)

#define CHECK(expr)                                                                \
  do {                                                                             \
    test_checks++;                                                                 \
    if (!(expr)) {                                                                 \
      test_failures++;                                                             \
      fprintf(stderr, "%s:%d: %s: CHECK(%s) failed\n", __FILE__, __LINE__,         \
              test_current, #expr);                                                \
    }                                                                              \
  } while (0)

#define CHECK_EQ(a, b)                                                             \
  do {                                                                             \
    long long a_ = (long long)(a), b_ = (long long)(b);                            \
    test_checks++;                                                                 \
    if (a_ != b_) {                                                                \
      test_failures++;                                                             \
      fprintf(stderr, "%s:%d: %s: %s == %s failed: %lld != %lld\n", __FILE__,      \
              __LINE__, test_current, #a, #b, a_, b_);                             \
    }                                                                              \
  } while (0)

#define CHECK_STR(a, b)                                                            \
  do {                                                                             \
    const char *a_ = (a), *b_ = (b);                                               \
    test_checks++;                                                                 \
    if (!a_ || !b_ || strcmp(a_, b_) != 0) {                                       \
      test_failures++;                                                             \
      fprintf(stderr, "%s:%d: %s: %s == %s failed: \"%s\" != \"%s\"\n", __FILE__,  \
              __LINE__, test_current, #a, #b, a_ ? a_ : "(null)", b_ ? b_ : "(null)"); \
    }                                                                              \
  } while (0)

/* Substring check, for messages. */
#define CHECK_CONTAINS(hay, needle)                                                \
  do {                                                                             \
    const char *h_ = (hay), *n_ = (needle);                                        \
    test_checks++;                                                                 \
    if (!h_ || !strstr(h_, n_)) {                                                  \
      test_failures++;                                                             \
      fprintf(stderr, "%s:%d: %s: \"%s\" does not contain \"%s\"\n", __FILE__,     \
              __LINE__, test_current, h_ ? h_ : "(null)", n_);                     \
    }                                                                              \
  } while (0)

static inline int test_rm_entry_(const char *path, const struct stat *st, int flag,
                                 struct FTW *ftw) {
  (void)st, (void)flag, (void)ftw;
  return remove(path);
}

/* Removes a test's temporary tree; 0 on success. */
static inline int test_rm_rf(const char *path) {
  return nftw(path, test_rm_entry_, 16, FTW_DEPTH | FTW_PHYS);
}

static inline int test_report(void) {
  printf("%d checks, %d failed\n", test_checks, test_failures);
  return test_failures ? 1 : 0;
}

#endif
