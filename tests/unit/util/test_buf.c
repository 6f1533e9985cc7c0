/* test_buf.c: the growable byte buffer. */
#include "test.h"
#include "util/buf.h"

#include <stdlib.h>

/* The invariant every operation keeps: data[len] == '\0' once data exists. */
static int terminated(const ten_buf_t *b) {
  return b->data && b->len < b->cap && b->data[b->len] == '\0';
}

TEST(append_and_puts) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_append(&b, "abc", 3);
  CHECK_EQ(b.len, 3);
  CHECK_STR(b.data, "abc");
  CHECK(terminated(&b));
  ten_buf_puts(&b, "def");
  ten_buf_putc(&b, '!');
  CHECK_STR(b.data, "abcdef!");
  CHECK_EQ(b.len, 7);
  ten_buf_append(&b, "", 0);
  ten_buf_append(&b, NULL, 0);
  CHECK_EQ(b.len, 7);
  CHECK(terminated(&b));
  /* Binary content with NUL bytes is kept by length. */
  ten_buf_append(&b, "x\0y", 3);
  CHECK_EQ(b.len, 10);
  CHECK(memcmp(b.data + 7, "x\0y", 3) == 0);
  CHECK(terminated(&b));
  ten_buf_free(&b);
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
  ten_buf_free(&b); /* twice is harmless */
}

/* Appending zero bytes to a fresh buffer still yields "" (not NULL). */
TEST(empty_content_is_terminated) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_append(&b, "", 0);
  CHECK(terminated(&b));
  CHECK_STR(b.data, "");
  ten_buf_free(&b);

  /* buf.h: "The content is always NUL-terminated so it can be printed."
   * ten_buf_reserve on a fresh buffer allocates; the content is empty. */
  ten_buf_reserve(&b, 16);
  CHECK(b.cap >= 17);
  CHECK(terminated(&b));
  char *s = ten_buf_steal(&b);
  CHECK(s && s[0] == '\0');
  free(s);
}

TEST(growth) {
  ten_buf_t b = TEN_BUF_INIT;
  int ok = 0;
  for (int i = 0; i < 100000; i++) {
    ten_buf_putc(&b, (char)('a' + i % 26));
    ok += terminated(&b) && b.len == (size_t)i + 1;
  }
  CHECK_EQ(ok, 100000);
  int same = 1;
  for (int i = 0; i < 100000; i++) same &= b.data[i] == (char)('a' + i % 26);
  CHECK(same);
  /* Capacity is a power of two from 64. */
  CHECK((b.cap & (b.cap - 1)) == 0 && b.cap >= 64);
  size_t cap = b.cap;
  ten_buf_reserve(&b, 0);
  CHECK_EQ(b.cap, cap);
  ten_buf_reserve(&b, cap); /* needs room for cap more bytes + NUL */
  CHECK(b.cap >= b.len + cap + 1);
  ten_buf_free(&b);
}

TEST(printf) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_printf(&b, "%d-%s", 42, "x");
  CHECK_STR(b.data, "42-x");
  CHECK_EQ(b.len, 4);
  ten_buf_printf(&b, "%s", "");
  CHECK_EQ(b.len, 4);
  CHECK(terminated(&b));
  ten_buf_printf(&b, "|%05.1f|%c|%%", 3.14159, 'z');
  CHECK_STR(b.data, "42-x|003.1|z|%");

  /* Output far longer than the spare room: the second vsnprintf pass. */
  char *big = malloc(100001);
  memset(big, 'q', 100000);
  big[100000] = '\0';
  ten_buf_reset(&b);
  ten_buf_printf(&b, "<%s>", big);
  CHECK_EQ(b.len, 100002);
  CHECK(b.data[0] == '<' && b.data[100001] == '>' && b.data[50000] == 'q');
  CHECK(terminated(&b));
  /* Exactly filling the spare room, over and over at every length. */
  int ok = 0;
  for (size_t n = 0; n < 300; n++) {
    ten_buf_t c = TEN_BUF_INIT;
    ten_buf_append(&c, "ab", 2);
    ten_buf_printf(&c, "%.*s", (int)n, big);
    ten_buf_printf(&c, "%s", "yz");
    ok += c.len == n + 4 && terminated(&c) && c.data[n + 2] == 'y' && c.data[1] == 'b';
    ten_buf_free(&c);
  }
  CHECK_EQ(ok, 300);
  free(big);

  /* Width from the argument list: va_list is reused correctly. */
  ten_buf_reset(&b);
  ten_buf_printf(&b, "%*d|%s", 200, 7, "end");
  CHECK_EQ(b.len, 204);
  CHECK_STR(b.data + 199, "7|end");
  ten_buf_free(&b);
}

TEST(consume) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_puts(&b, "hello world");
  ten_buf_consume(&b, 0);
  CHECK_STR(b.data, "hello world");
  ten_buf_consume(&b, 6);
  CHECK_STR(b.data, "world");
  CHECK_EQ(b.len, 5);
  CHECK(terminated(&b));
  ten_buf_consume(&b, 4);
  CHECK_STR(b.data, "d");
  ten_buf_consume(&b, 1);
  CHECK_EQ(b.len, 0);
  CHECK_STR(b.data, "");
  ten_buf_puts(&b, "abc");
  ten_buf_consume(&b, 1000); /* more than there is */
  CHECK_EQ(b.len, 0);
  CHECK_STR(b.data, "");
  ten_buf_t fresh = TEN_BUF_INIT;
  ten_buf_consume(&fresh, 5); /* on a buffer with no memory */
  ten_buf_reset(&fresh);
  CHECK(fresh.data == NULL && fresh.len == 0);
  ten_buf_free(&b);
}

TEST(reset_keeps_memory) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_puts(&b, "some content");
  char *mem = b.data;
  size_t cap = b.cap;
  ten_buf_reset(&b);
  CHECK_EQ(b.len, 0);
  CHECK(b.data == mem && b.cap == cap);
  CHECK_STR(b.data, "");
  ten_buf_puts(&b, "new");
  CHECK_STR(b.data, "new");
  ten_buf_free(&b);
}

TEST(steal) {
  ten_buf_t b = TEN_BUF_INIT;
  ten_buf_puts(&b, "mine now");
  char *s = ten_buf_steal(&b);
  CHECK_STR(s, "mine now");
  CHECK(b.data == NULL && b.len == 0 && b.cap == 0);
  free(s);
  /* Stealing from an empty buffer gives an empty string to free. */
  s = ten_buf_steal(&b);
  CHECK_STR(s, "");
  free(s);
  /* The buffer is reusable after a steal. */
  ten_buf_puts(&b, "again");
  CHECK_STR(b.data, "again");
  s = ten_buf_steal(&b);
  CHECK_STR(s, "again");
  free(s);
  /* After a reset the stolen string is empty. */
  ten_buf_puts(&b, "gone");
  ten_buf_reset(&b);
  s = ten_buf_steal(&b);
  CHECK_STR(s, "");
  free(s);
}

int main(void) {
  RUN(append_and_puts);
  RUN(empty_content_is_terminated);
  RUN(growth);
  RUN(printf);
  RUN(consume);
  RUN(reset_keeps_memory);
  RUN(steal);
  return test_report();
}
