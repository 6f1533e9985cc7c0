/* lua_pattern.h: Lua 5.4 patterns (manual §6.4.1) for lua_strings.c.
 *
 * A pattern is compiled into an array of items, then matched against a
 * subject by backtracking over them. The matcher counts its work, one step
 * per item tried and per byte scanned or compared, and asks
 * tenL_check_time every so many steps: a pathological pattern ends with
 * the running call's time-limit error.
 *
 * Errors are Lua errors, raised with stock Lua's messages at the moment
 * stock Lua raises them: a malformed part of a pattern once matching
 * reaches it, a bad capture index once it is asked for. Nothing here
 * allocates; compiled items point into the pattern string, and captures
 * into the subject, which the caller keeps alive. Loop thread only, as
 * every Lua state of ten.
 */
#ifndef TEN_POLICY_LUA_PATTERN_H
#define TEN_POLICY_LUA_PATTERN_H

#include <lua.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define TEN_PATTERN_MAX_CAPTURES 32 /* LUA_MAXCAPTURES of Lua 5.4 */

/* The bytes one pattern item accepts, a bit each. */
typedef struct ten_byte_set {
  uint64_t bits[4];
} ten_byte_set_t;

/* How one subject byte is tested: against a byte, any, or a set. */
typedef struct ten_byte_class {
  unsigned char test; /* lua_pattern.c's byte_test_t */
  unsigned char byte;
  ten_byte_set_t set;
} ten_byte_class_t;

/* One element of a compiled pattern: a byte class with its repeat, a
 * capture's start or end, %b, %f, a back-reference, the final $, or the
 * error the pattern has at that point. Fields are lua_pattern.c's. */
typedef struct ten_pattern_item {
  unsigned char kind;
  char repeat; /* 0, '?', '*', '+' or '-' */
  unsigned char capture;
  unsigned char error;
  int digit;
  unsigned char open, close;
  ten_byte_class_t cls;
} ten_pattern_item_t;

typedef struct ten_pattern_capture {
  const char *start;
  ptrdiff_t len; /* or one of lua_pattern.c's markers: still open, a position */
} ten_pattern_capture_t;

/* Matching one compiled pattern against one subject; lives on the C stack
 * of one call. */
typedef struct ten_pattern_matcher {
  lua_State *L; /* errors are raised here */
  const char *subject, *subject_end;
  const ten_pattern_item_t *items;
  size_t item_count;
  int level; /* captures opened on the path being tried */
  ten_pattern_capture_t captures[TEN_PATTERN_MAX_CAPTURES];
  size_t steps_left; /* before the next look at the clock */
} ten_pattern_matcher_t;

/* Once per process, before anything is compiled: reads <ctype.h> for the
 * classes %a, %d, ... Safe to call again, from any thread. */
void ten__pattern_init(void);

/* Compiles pattern (without the '^' that anchors find, match and gsub:
 * callers strip it) into at most `capacity` items and returns how many it
 * takes, which may be more: then call again with room for all. */
size_t ten__pattern_compile(lua_State *L, const char *pattern, size_t len,
                            ten_pattern_item_t *items, size_t capacity);

void ten__pattern_matcher_init(ten_pattern_matcher_t *m, lua_State *L, const char *subject,
                               size_t len, const ten_pattern_item_t *items, size_t item_count);

/* The end of the match that starts at s, or NULL; the captures of the
 * match stay in m until the next call. */
const char *ten__pattern_match(ten_pattern_matcher_t *m, const char *s);

/* Capture i of the match s..e; capture 0 of a pattern without captures is
 * the whole match. A text capture is put in *text and *len and true is
 * returned; a position capture is pushed as an integer and false is
 * returned. */
bool ten__pattern_capture(ten_pattern_matcher_t *m, int i, const char *s, const char *e,
                          const char **text, size_t *len);
void ten__pattern_push_capture(ten_pattern_matcher_t *m, int i, const char *s, const char *e);
/* Pushes every capture (with none, the whole match if whole_if_none) and
 * returns how many. */
int ten__pattern_push_captures(ten_pattern_matcher_t *m, const char *s, const char *e,
                               bool whole_if_none);

/* Counts steps of work done for this match outside the matcher (gsub's
 * replacement strings). */
void ten__pattern_spend(ten_pattern_matcher_t *m, size_t steps);

#endif
