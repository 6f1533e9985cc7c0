/* lua_strings.c: string.find, match, gmatch, gsub and rep, bounded by the
 * running call's deadline.
 *
 * Lua's pattern matcher runs in C, where no count hook reaches it: a
 * pattern like ".-.-.-b" over 100 KB backtracks for minutes. These
 * functions match with lua_pattern.c, which counts its steps, and count
 * their own loops too (each escape in a replacement string, each copy
 * string.rep makes), so they end with the call's time-limit error.
 *
 * Written from the Lua 5.4 manual (§6.4); results, errors and their
 * messages are stock Lua's (tests/unit/policy/test_lua_patterns.c checks
 * them against it). A pattern is compiled once per call (once per
 * iterator for gmatch), not once per position tried. A plain find, or a
 * pattern without special characters, uses memmem: linear time.
 * string.rep builds its result by doubling copies instead of one copy per
 * repetition.
 */
#include "policy/lua.h"
#include "policy/lua_internal.h"
#include "policy/lua_pattern.h"

#include <ctype.h>
#include <lauxlib.h>
#include <limits.h>
#include <string.h>

#define INLINE_ITEMS 16 /* patterns up to this many items need no allocation */

/* ------------------------------------------------------------ compiling */

/* A pattern compiled for one call of find, match or gsub: in `inline_items`
 * if it fits, else in a userdata left on the stack for the call. */
typedef struct compiled {
  ten_pattern_item_t *items;
  size_t count;
  ten_pattern_item_t inline_items[INLINE_ITEMS];
} compiled_t;

static void compile_for_call(lua_State *L, const char *pattern, size_t len, compiled_t *out) {
  out->items = out->inline_items;
  out->count = ten__pattern_compile(L, pattern, len, out->items, INLINE_ITEMS);
  if (out->count <= INLINE_ITEMS) return;
  out->items = lua_newuserdatauv(L, out->count * sizeof(ten_pattern_item_t), 0);
  ten__pattern_compile(L, pattern, len, out->items, out->count);
}

/* ------------------------------------------------------------ find, match */

/* init as a 0-based offset: negative counts from the end; before the
 * start is the start. May be past the end. */
static size_t start_offset(lua_Integer init, size_t len) {
  if (init > 0) return (size_t)init - 1;
  if (init == 0 || init < -(lua_Integer)len) return 0;
  return len - (size_t)-init;
}

/* Lua's rule: find takes a pattern with none of these as plain text. (So
 * find("a)", "a)") finds it where match calls the pattern malformed.) */
static bool has_specials(const char *p, size_t len) {
  static const char specials[] = "^$*+?.([%-";
  for (size_t i = 0; i < len; i++)
    if (memchr(specials, p[i], sizeof specials - 1)) return true;
  return false;
}

static int find_or_match(lua_State *L, bool find) {
  size_t len, pattern_len;
  const char *subject = luaL_checklstring(L, 1, &len);
  const char *pattern = luaL_checklstring(L, 2, &pattern_len);
  size_t start = start_offset(luaL_optinteger(L, 3, 1), len);
  if (start > len) {
    luaL_pushfail(L);
    return 1;
  }
  if (find && (lua_toboolean(L, 4) || !has_specials(pattern, pattern_len))) {
    const char *at = memmem(subject + start, len - start, pattern, pattern_len);
    if (!at) {
      luaL_pushfail(L);
      return 1;
    }
    lua_pushinteger(L, (at - subject) + 1);
    lua_pushinteger(L, (lua_Integer)((size_t)(at - subject) + pattern_len));
    return 2;
  }
  bool anchored = pattern_len > 0 && *pattern == '^';
  if (anchored) pattern++, pattern_len--;
  compiled_t compiled;
  compile_for_call(L, pattern, pattern_len, &compiled);
  ten_pattern_matcher_t m;
  ten__pattern_matcher_init(&m, L, subject, len, compiled.items, compiled.count);
  const char *s = subject + start;
  do {
    const char *e = ten__pattern_match(&m, s);
    if (!e) continue;
    if (!find) return ten__pattern_push_captures(&m, s, e, true);
    lua_pushinteger(L, (s - subject) + 1);
    lua_pushinteger(L, e - subject);
    return 2 + ten__pattern_push_captures(&m, NULL, NULL, false);
  } while (s++ < m.subject_end && !anchored);
  luaL_pushfail(L);
  return 1;
}

static int str_find(lua_State *L) { return find_or_match(L, true); }
static int str_match(lua_State *L) { return find_or_match(L, false); }

/* ------------------------------------------------------------ gmatch */

/* The iterator's state, with its compiled pattern. The subject and the
 * pattern it points into are the iterator's other upvalues. */
typedef struct gmatch_state {
  const char *subject;
  size_t len;
  const char *next;     /* where the next search starts */
  const char *last_end; /* where the last match ended: no empty match there */
  size_t item_count;
  ten_pattern_item_t items[];
} gmatch_state_t;

static int gmatch_next(lua_State *L) {
  gmatch_state_t *g = lua_touserdata(L, lua_upvalueindex(3));
  ten_pattern_matcher_t m;
  ten__pattern_matcher_init(&m, L, g->subject, g->len, g->items, g->item_count);
  for (const char *s = g->next; s <= m.subject_end; s++) {
    const char *e = ten__pattern_match(&m, s);
    if (e && e != g->last_end) {
      g->next = g->last_end = e;
      return ten__pattern_push_captures(&m, s, e, true);
    }
  }
  return 0;
}

/* gmatch(s, pattern [, init]). A leading '^' anchors nothing here: it
 * would stop the iteration, so it matches itself. */
static int str_gmatch(lua_State *L) {
  size_t len, pattern_len;
  const char *subject = luaL_checklstring(L, 1, &len);
  const char *pattern = luaL_checklstring(L, 2, &pattern_len);
  size_t start = start_offset(luaL_optinteger(L, 3, 1), len);
  if (start > len) start = len + 1; /* no match, not even an empty one at the end */
  lua_settop(L, 2);
  size_t count = ten__pattern_compile(L, pattern, pattern_len, NULL, 0);
  gmatch_state_t *g = lua_newuserdatauv(L, sizeof *g + count * sizeof(ten_pattern_item_t), 0);
  ten__pattern_compile(L, pattern, pattern_len, g->items, count);
  g->subject = subject;
  g->len = len;
  g->next = subject + start;
  g->last_end = NULL;
  g->item_count = count;
  lua_pushcclosure(L, gmatch_next, 3);
  return 1;
}

/* ------------------------------------------------------------ gsub */

/* Appends the replacement string repl for the match s..e: "%0" is the
 * match, "%1".."%9" its captures, "%%" a percent sign. */
static void add_expanded(ten_pattern_matcher_t *m, luaL_Buffer *b, const char *repl,
                         size_t repl_len, const char *s, const char *e) {
  const char *p = repl, *end = repl + repl_len;
  for (;;) {
    ten__pattern_spend(m, 1);
    const char *percent = memchr(p, '%', (size_t)(end - p));
    if (!percent) break;
    luaL_addlstring(b, p, (size_t)(percent - p));
    p = percent + 1;
    unsigned char c = p < end ? (unsigned char)*p++ : 0;
    if (c == '%') {
      luaL_addchar(b, '%');
    } else if (c == '0') {
      luaL_addlstring(b, s, (size_t)(e - s));
    } else if (isdigit(c)) {
      const char *text;
      size_t len;
      if (ten__pattern_capture(m, c - '1', s, e, &text, &len))
        luaL_addlstring(b, text, len);
      else
        luaL_addvalue(b); /* a position */
    } else {
      luaL_error(m->L, "invalid use of '%c' in replacement string", '%');
    }
  }
  luaL_addlstring(b, p, (size_t)(end - p));
}

/* Appends what replaces the match s..e: a string expanded, or the value of
 * a table or function (false or nil keep the match). */
static void add_replacement(ten_pattern_matcher_t *m, luaL_Buffer *b, const char *s, const char *e,
                            int repl_type) {
  lua_State *L = m->L;
  if (repl_type == LUA_TTABLE) {
    ten__pattern_push_capture(m, 0, s, e);
    lua_gettable(L, 3);
  } else { /* LUA_TFUNCTION */
    lua_pushvalue(L, 3);
    int n = ten__pattern_push_captures(m, s, e, true);
    lua_call(L, n, 1);
  }
  if (!lua_toboolean(L, -1)) {
    lua_pop(L, 1);
    luaL_addlstring(b, s, (size_t)(e - s));
  } else if (!lua_isstring(L, -1)) {
    luaL_error(L, "invalid replacement value (a %s)", luaL_typename(L, -1));
  } else {
    luaL_addvalue(b);
  }
}

/* gsub(s, pattern, repl [, n]) */
static int str_gsub(lua_State *L) {
  size_t len, pattern_len, repl_len = 0;
  const char *subject = luaL_checklstring(L, 1, &len);
  const char *pattern = luaL_checklstring(L, 2, &pattern_len);
  int repl_type = lua_type(L, 3);
  lua_Integer max = luaL_optinteger(L, 4, (lua_Integer)len + 1);
  luaL_argexpected(L,
                   repl_type == LUA_TNUMBER || repl_type == LUA_TSTRING ||
                       repl_type == LUA_TFUNCTION || repl_type == LUA_TTABLE,
                   3, "string/function/table");
  const char *repl = NULL;
  if (repl_type == LUA_TNUMBER || repl_type == LUA_TSTRING) repl = lua_tolstring(L, 3, &repl_len);
  bool anchored = pattern_len > 0 && *pattern == '^';
  if (anchored) pattern++, pattern_len--;
  compiled_t compiled;
  compile_for_call(L, pattern, pattern_len, &compiled);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  ten_pattern_matcher_t m;
  ten__pattern_matcher_init(&m, L, subject, len, compiled.items, compiled.count);
  const char *s = subject, *last_end = NULL;
  lua_Integer replaced = 0;
  while (replaced < max) {
    const char *e = ten__pattern_match(&m, s);
    if (e && e != last_end) { /* no empty match right where the last one ended */
      replaced++;
      if (repl)
        add_expanded(&m, &b, repl, repl_len, s, e);
      else
        add_replacement(&m, &b, s, e, repl_type);
      s = last_end = e;
    } else if (s < m.subject_end) {
      luaL_addchar(&b, *s++);
    } else {
      break;
    }
    if (anchored) break;
  }
  luaL_addlstring(&b, s, (size_t)(m.subject_end - s));
  luaL_pushresult(&b);
  lua_pushinteger(L, replaced);
  return 2;
}

/* ------------------------------------------------------------ rep */

/* rep(s, n [, sep]): s, then n - 1 times sep and s. The result repeats
 * one unit, sep .. s, after the first s, so it is built by copying what is
 * already built: log2(n) copies, counted, instead of n. */
static int str_rep(lua_State *L) {
  size_t len, sep_len;
  const char *s = luaL_checklstring(L, 1, &len);
  lua_Integer n = luaL_checkinteger(L, 2);
  const char *sep = luaL_optlstring(L, 3, "", &sep_len);
  if (n <= 0 || len + sep_len == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  /* Lua's limit: a result of more than INT_MAX bytes is refused. */
  if (len + sep_len < len || len + sep_len > (size_t)INT_MAX / (lua_Unsigned)n)
    return luaL_error(L, "resulting string too large");
  size_t unit = sep_len + len, tail_len = unit * (size_t)(n - 1), total = len + tail_len;
  luaL_Buffer b;
  char *out = luaL_buffinitsize(L, &b, total);
  memcpy(out, s, len);
  char *tail = out + len;
  if (n > 1) {
    memcpy(tail, sep, sep_len);
    memcpy(tail + sep_len, s, len);
    for (size_t built = unit; built < tail_len;) {
      size_t chunk = TEN_MIN(built, tail_len - built);
      tenL_spend(L, chunk / 4096 + 1);
      memcpy(tail + built, tail, chunk);
      built += chunk;
    }
  }
  luaL_pushresultsize(&b, total);
  return 1;
}

/* ------------------------------------------------------------ registration */

void ten__lua_bound_strings(lua_State *L) {
  ten__pattern_init(); /* before any state can match */
  static const luaL_Reg bounded[] = {{"find", str_find},     {"match", str_match},
                                     {"gmatch", str_gmatch}, {"gsub", str_gsub},
                                     {"rep", str_rep},       {NULL, NULL}};
  luaL_setfuncs(L, bounded, 0);
}
