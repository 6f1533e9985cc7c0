/* Unit tests for http/strict.c: the rules over raw head and chunked-body
 * bytes, and the property that matters across TCP segments: the verdict
 * does not depend on where the bytes are split. */
#include "test.h"

#include "http/strict.h"
#include "util/common.h"

#include <stdlib.h>

/* NULL if the whole head is acceptable and complete, else the message. */
static const char *head_verdict(const char *p, size_t n, size_t split) {
  ten_strict_head_t s;
  ten_strict_head_init(&s);
  const char *bad = ten_strict_head_scan(&s, p, split);
  if (!bad) bad = ten_strict_head_scan(&s, p + split, n - split);
  if (!bad && !s.done) bad = "incomplete";
  return bad;
}

static const char *chunked_verdict(const char *p, size_t n, size_t split) {
  ten_strict_chunked_t s;
  ten_strict_chunked_init(&s);
  const char *bad = ten_strict_chunked_scan(&s, p, split);
  if (!bad) bad = ten_strict_chunked_scan(&s, p + split, n - split);
  if (!bad && !s.done) bad = "incomplete";
  return bad;
}

typedef struct scase {
  const char *text;
  bool ok;
} scase_t;

static const scase_t heads[] = {
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
    {"\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", true}, /* an empty line first is allowed */
    {"GET / HTTP/1.1\r\n\r\n", true},
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n b\r\n\r\n", false},  /* obs-fold */
    {"GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n\tb\r\n\r\n", false}, /* obs-fold, tab */
    {"GET / HTTP/1.1\r\nHost: a\r\n\rX: y\r\n\r\n", false},      /* bare CR ends the head for llhttp */
    {"GET / HTTP/1.1\r\nX: a\rY: b\r\n\r\n", false},             /* bare CR in a line */
    {"GET / HTTP/1.1\r\n: x\r\nHost: a\r\n\r\n", false},         /* empty name */
    {"GET / HTTP/1.1\nHost: a\n\n", false},                      /* LF alone */
    {"GET / HTTP/1.1\r\nHost: a\n\r\n", false},
    {"GET / HTTP/1.1\r\n Host: a\r\n\r\n", false},               /* whitespace before the first field */
    {"GET / HTTP/1.1\r\nHost: a\r\n\r", false},                  /* unfinished */
    {"GET / HTTP/1.1\r\nHost: a\r\n\r\nX", false},               /* bytes after the end */
};

static const scase_t bodies[] = {
    {"0\r\n\r\n", true},
    {"3\r\nabc\r\n0\r\n\r\n", true},
    {"3;ext=1\r\nabc\r\n0;last\r\n\r\n", true},
    {"A\r\n0123456789\r\n0\r\nX-Trailer: 1\r\nY: 2\r\n\r\n", true},
    {"00000003\r\nabc\r\n0\r\n\r\n", true},
    {"3\r\nabcXX0\r\n\r\n", false},               /* data not followed by CRLF */
    {"3\r\nabc\n0\r\n\r\n", false},
    {"3\r\nabc\r0\r\n\r\n", false},
    {"zz\r\nabc\r\n0\r\n\r\n", false},            /* not hex */
    {"\r\nabc\r\n0\r\n\r\n", false},              /* no size */
    {"3 \r\nabc\r\n0\r\n\r\n", false},            /* space after the size */
    {"3\nabc\r\n0\r\n\r\n", false},               /* LF alone */
    {"ffffffffffffffffff\r\n", false},            /* too many digits */
    {"3;x=\x01\r\nabc\r\n0\r\n\r\n", false},     /* control character in an extension */
    {"0\r\nX-T: 1\r\n 2\r\n\r\n", false},         /* obs-fold in a trailer */
    {"0\r\n: x\r\n\r\n", false},                  /* empty trailer name */
    {"0\r\nX-T: 1\rY\r\n\r\n", false},            /* bare CR in a trailer */
    {"0\r\n\r\nX", false},                        /* bytes after the end */
    {"0\r\n\r", false},                           /* unfinished */
};

TEST(head_cases) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(heads); i++) {
    const char *bad = head_verdict(heads[i].text, strlen(heads[i].text), 0);
    if ((bad == NULL) != heads[i].ok) fprintf(stderr, "head case %zu: %s\n", i, bad ? bad : "accepted");
    CHECK((bad == NULL) == heads[i].ok);
  }
}

TEST(chunked_cases) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bodies); i++) {
    const char *bad = chunked_verdict(bodies[i].text, strlen(bodies[i].text), 0);
    if ((bad == NULL) != bodies[i].ok)
      fprintf(stderr, "chunked case %zu: %s\n", i, bad ? bad : "accepted");
    CHECK((bad == NULL) == bodies[i].ok);
  }
}

/* The fold that arrives in a later segment, the CR whose LF is in the next
 * read: every split point gives the verdict of the whole. */
TEST(verdict_does_not_depend_on_the_split) {
  for (size_t i = 0; i < TEN_ARRAY_SIZE(heads); i++) {
    size_t n = strlen(heads[i].text);
    bool whole = head_verdict(heads[i].text, n, 0) == NULL;
    for (size_t split = 0; split <= n; split++)
      CHECK((head_verdict(heads[i].text, n, split) == NULL) == whole);
  }
  for (size_t i = 0; i < TEN_ARRAY_SIZE(bodies); i++) {
    size_t n = strlen(bodies[i].text);
    bool whole = chunked_verdict(bodies[i].text, n, 0) == NULL;
    for (size_t split = 0; split <= n; split++)
      CHECK((chunked_verdict(bodies[i].text, n, split) == NULL) == whole);
  }
}

/* Random bodies of random chunks, fed byte by byte: always accepted, and
 * done exactly at the end. */
TEST(random_well_formed_bodies) {
  unsigned seed = 7;
  for (int round = 0; round < 200; round++) {
    char body[4096];
    size_t len = 0;
    int chunks = (int)(rand_r(&seed) % 6);
    for (int k = 0; k < chunks; k++) {
      unsigned size = 1 + (unsigned)rand_r(&seed) % 200;
      len += (size_t)snprintf(body + len, sizeof body - len, "%x\r\n", size);
      for (unsigned b = 0; b < size; b++) body[len++] = (char)(rand_r(&seed) % 256);
      body[len++] = '\r';
      body[len++] = '\n';
    }
    len += (size_t)snprintf(body + len, sizeof body - len, "0\r\n\r\n");
    ten_strict_chunked_t s;
    ten_strict_chunked_init(&s);
    for (size_t i = 0; i < len; i++) {
      CHECK(ten_strict_chunked_scan(&s, body + i, 1) == NULL);
      CHECK(s.done == (i == len - 1));
    }
  }
}

int main(void) {
  RUN(head_cases);
  RUN(chunked_cases);
  RUN(verdict_does_not_depend_on_the_split);
  RUN(random_well_formed_bodies);
  return test_report();
}
