/* test_lua_patterns.c: tenement's string.find/match/gmatch/gsub/rep
 * (policy/lua_strings.c) against stock Lua's. Random patterns from a small
 * grammar (literals, classes, sets, quantifiers, anchors, captures,
 * position captures, %b, %f, back-references, and now and then something
 * malformed or too deep) over random subjects, with random init, plain,
 * replacement strings, tables, functions and counts: both must answer
 * the same, or fail with the same message. Deterministic: one seed. */
#include "lua_pair.h"
#include "test.h"

#include <stdint.h>

/* Runs every function on one (subject, pattern) and writes down what came
 * back, what a replacement table was asked and what a replacement
 * function was called with. */
static const char driver[] =
    "local D = {}\n"
    "local function show(v)\n"
    "  local t = math.type(v) or type(v)\n"
    "  if t == 'string' then return string.format('%q', v) end\n"
    "  if t == 'float' then return string.format('%a', v) end\n"
    "  if t == 'integer' or t == 'nil' or t == 'boolean' then return tostring(v) end\n"
    "  return t\n"
    "end\n"
    "local function results(ok, ...)\n"
    "  local out = ok and 'ok' or 'error'\n"
    "  for i = 1, select('#', ...) do out = out .. ' ' .. show((select(i, ...))) end\n"
    "  return out\n"
    "end\n"
    "local function each_match(s, p, init)\n"
    "  local out, it = '', string.gmatch(s, p, init)\n"
    "  for _ = 1, 60 do\n"
    "    local found = table.pack(it())\n"
    "    if found.n == 0 then return out end\n"
    "    out = out .. results(true, table.unpack(found, 1, found.n)) .. '; '\n"
    "  end\n"
    "  return out .. '...'\n"
    "end\n"
    "function D.patterns(s, p, init, repl, max)\n"
    "  local out = ''\n"
    "  local function add(what, ...) out = out .. what .. ': ' .. results(...) .. '\\n' end\n"
    "  add('find', pcall(string.find, s, p))\n"
    "  add('find init', pcall(string.find, s, p, init))\n"
    "  add('find plain', pcall(string.find, s, p, init, true))\n"
    "  add('match', pcall(string.match, s, p))\n"
    "  add('match init', pcall(string.match, s, p, init))\n"
    "  add('gmatch', pcall(each_match, s, p))\n"
    "  add('gmatch init', pcall(each_match, s, p, init))\n"
    "  add('gsub', pcall(string.gsub, s, p, repl))\n"
    "  add('gsub max', pcall(string.gsub, s, p, repl, max))\n"
    "  local asked = ''\n"
    "  local lookup = setmetatable({}, { __index = function(_, k)\n"
    "    asked = asked .. show(k) .. ' '\n"
    "    local pick = #tostring(k) % 5\n"
    "    if pick == 0 then return false elseif pick == 1 then return k .. '!'\n"
    "    elseif pick == 2 then return 7 elseif pick == 3 then return 0.5 end\n"
    "  end })\n"
    "  add('gsub table', pcall(string.gsub, s, p, lookup))\n"
    "  out = out .. 'asked: ' .. asked .. '\\n'\n"
    "  local calls, count = '', 0\n"
    "  local function replace(...)\n"
    "    count = count + 1\n"
    "    calls = calls .. results(true, ...) .. '; '\n"
    "    if count == 9 then return {} end\n"
    "    local pick = (select('#', ...) + count) % 4\n"
    "    if pick == 0 then return nil elseif pick == 1 then return (...) .. '<'\n"
    "    elseif pick == 2 then return count end\n"
    "    return false\n"
    "  end\n"
    "  add('gsub function', pcall(string.gsub, s, p, replace, max + 6))\n"
    "  out = out .. 'calls: ' .. calls .. '\\n'\n"
    "  add('gsub number', pcall(string.gsub, s, p, 42, max))\n"
    "  return out\n"
    "end\n"
    "function D.rep(s, n, sep)\n"
    "  return results(pcall(string.rep, s, n)) .. ' / ' .. results(pcall(string.rep, s, n, sep))\n"
    "end\n"
    /* Not rep('', huge): stock Lua loops that many times (test_hooks'
     * rep_empty has ours answer at once). */
    "function D.bad_arguments()\n"
    "  local out = ''\n"
    "  local calls = {\n"
    "    { string.find }, { string.find, 'a' }, { string.find, 'a', {} }, { string.find, {}, 'a' "
    "},\n"
    "    { string.find, 'a', 'a', 1.5 }, { string.find, 'a', 'a', '2' }, { string.find, 1234, 23 "
    "},\n"
    "    { string.match, 'a' }, { string.match, 'a', 'a', 'x' }, { string.gmatch, 'a' },\n"
    "    { string.gmatch, 'a', 'a', {} }, { string.gsub, 'a', 'a' }, { string.gsub, 'a', 'a', true "
    "},\n"
    "    { string.gsub, 'a', 'a', nil, 'x' }, { string.gsub, 'a', 'a', 'b', 1.5 },\n"
    "    { string.gsub, 12, 2, 3 }, { string.gsub, 'a', 'a', {}, 'n' }, { string.rep },\n"
    "    { string.rep, 'x' }, { string.rep, 'x', 2.5 }, { string.rep, 'x', 2, {} },\n"
    "    { string.rep, 'x', 1 << 31 }, { string.rep, 'xy', 1 << 30, ',' },\n"
    "    { string.rep, 'x', math.maxinteger }, { string.rep, 'x', math.mininteger },\n"
    "    { string.find, 'abc', 'b', math.mininteger }, { string.find, 'abc', 'b', math.maxinteger "
    "},\n"
    "    { string.find, 'abc', '', math.maxinteger, true }, { string.match, 'abc', 'c', -1 },\n"
    "    { string.gsub, 'abc', '', '-', math.maxinteger }, { string.gsub, 'abc', '', '-', "
    "math.mininteger },\n"
    "    { each_match, 'abc', '.', math.mininteger }, { each_match, 'abc', '.', math.maxinteger "
    "},\n"
    "    { each_match, 'abc', '', 4 }, { each_match, 'abc', '', 5 }, { each_match, 'a^b', '^b' },\n"
    "  }\n"
    "  for _, c in ipairs(calls) do out = out .. results(pcall(table.unpack(c, 1, 5))) .. '\\n' "
    "end\n"
    "  local ok, err = pcall(string.gsub, 'abc', '%w', '%1')\n"
    "  out = out .. results(ok, err) .. '\\n'\n"
    "  out = out .. results(pcall(function() return ('x'):find('x', 1, true) end)) .. '\\n'\n"
    "  return out\n"
    "end\n"
    "return D\n";

/* ------------------------------------------------------------ the grammar */

typedef struct rng {
  uint64_t state;
} rng_t;

static uint64_t next_random(rng_t *r) { /* xorshift64* */
  r->state ^= r->state >> 12;
  r->state ^= r->state << 25;
  r->state ^= r->state >> 27;
  return r->state * 2685821657736338717ull;
}

static int below(rng_t *r, int n) { return (int)(next_random(r) % (uint64_t)n); }

static const char *pick(rng_t *r, const char *const *choices, size_t n) {
  return choices[below(r, (int)n)];
}
#define PICK(r, choices) pick(r, choices, TEN_ARRAY_SIZE(choices))

typedef struct text {
  char buf[1024];
  size_t len;
  int repeats; /* of a pattern: how many more of its items may repeat */
} text_t;

static void put(text_t *t, const char *s, size_t n) {
  if (t->len + n > sizeof t->buf) return;
  memcpy(t->buf + t->len, s, n);
  t->len += n;
}
static void puts_(text_t *t, const char *s) { put(t, s, strlen(s)); }
static void putc_(text_t *t, char c) { put(t, &c, 1); }

/* Subject bytes: mostly what the literals ask for, and some that no
 * pattern here names (NUL, a byte above 127). */
static const char common_bytes[] = "aaaabbbcc ";
static const char other_bytes[] = "()[]1209.-%$^xyzAB\t\n\0\xff";

static void gen_set(rng_t *r, text_t *t) {
  static const char *const members[] = {"a",  "b",  "c", "a-c", "0-9", "%a", "%d", "%s", "%W",
                                        "%]", "%-", "-", ".",   "(",   ")",  "^",  "%%", "x-"};
  putc_(t, '[');
  if (below(r, 3) == 0) putc_(t, '^');
  if (below(r, 8) == 0) putc_(t, ']'); /* first: a member, not the end */
  for (int n = 1 + below(r, 3); n > 0; n--) puts_(t, PICK(r, members));
  putc_(t, ']');
}

/* One byte class, optionally repeated. */
static void gen_single(rng_t *r, text_t *t) {
  static const char *const literals[] = {"a", "b", "c", "a", "b", " ",   "1",
                                         "x", "]", "^", "$", "-", "\xff"};
  static const char *const classes[] = {"%a", "%c", "%d", "%g", "%l", "%p", "%s",   "%u",
                                        "%w", "%x", "%A", "%D", "%S", "%W", "%.",   "%%",
                                        "%(", "%)", "%[", "%-", "%q", "%Z", "%\xff"};
  static const char *const repeats[] = {"", "", "", "*", "+", "-", "?"};
  switch (below(r, 6)) {
  case 0:
  case 1: puts_(t, PICK(r, literals)); break;
  case 2: putc_(t, '.'); break;
  case 3:
  case 4: puts_(t, PICK(r, classes)); break;
  default: gen_set(r, t); break;
  }
  /* Stock Lua's matcher cannot be stopped: the test keeps the work of
   * backtracking small (at most subject length ^ repeats per start). */
  const char *repeat = PICK(r, repeats);
  if (*repeat && t->repeats > 0) {
    t->repeats--;
    puts_(t, repeat);
  }
}

static void gen_items(rng_t *r, text_t *t, int depth, int *captures);

static void gen_item(rng_t *r, text_t *t, int depth, int *captures) {
  static const char *const balances[] = {"%b()", "%bab", "%b[]", "%baa", "%b\xff-"};
  static const char *const frontiers[] = {"%f[%w]", "%f[%W]", "%f[a]",
                                          "%f[^a]", "%f[%z]", "%f[%s]"};
  static const char *const malformed[] = {"[",   "[a", "[^",  "[]",   "%",  "(",  ")",  "%b",
                                          "%ba", "%f", "%fa", "%f[a", "%0", "%9", "[%", "[a-"};
  int kind = below(r, 80);
  if (kind < 48) {
    gen_single(r, t);
  } else if (kind < 58 && depth < 3) {
    putc_(t, '(');
    ++*captures;
    gen_items(r, t, depth + 1, captures);
    putc_(t, ')');
  } else if (kind < 62) {
    puts_(t, "()");
    ++*captures;
  } else if (kind < 66) {
    puts_(t, PICK(r, balances));
  } else if (kind < 70) {
    puts_(t, PICK(r, frontiers));
  } else if (kind < 78) {
    /* Mostly a capture that exists (it may still be open), now and then
     * one that does not. */
    if (!*captures && below(r, 8)) {
      gen_single(r, t);
      return;
    }
    int n = *captures && below(r, 8) ? *captures : 9;
    putc_(t, '%');
    putc_(t, (char)('1' + below(r, n)));
  } else {
    puts_(t, PICK(r, malformed));
  }
}

static void gen_items(rng_t *r, text_t *t, int depth, int *captures) {
  for (int n = below(r, depth ? 3 : 4); n >= 0; n--) gen_item(r, t, depth, captures);
}

static void gen_pattern(rng_t *r, text_t *t) {
  int captures = 0;
  t->len = 0;
  t->repeats = 3;
  if (below(r, 40) == 0) {
    /* Long and deep: the nesting limit ("pattern too complex") and the
     * capture limit ("too many captures") are behaviour too. Each of these
     * units can match empty, so the first try succeeds: no backtracking. */
    static const char *const deep[] = {"a?", "a*", "a-", "(a?)", "()", "[ab]?", "%a*"};
    const char *unit = PICK(r, deep);
    for (int n = 150 + below(r, 100); n > 0; n--) puts_(t, unit);
    return;
  }
  if (below(r, 4) == 0) putc_(t, '^');
  gen_items(r, t, 0, &captures);
  if (below(r, 4) == 0) putc_(t, '$');
}

static void gen_subject(rng_t *r, text_t *t, const text_t *pattern) {
  t->len = 0;
  if (pattern->len > 100) { /* the deep ones: a run of 'a's */
    for (int n = below(r, 260); n > 0; n--) putc_(t, 'a');
    return;
  }
  for (int n = below(r, 17); n > 0; n--) {
    if (below(r, 3))
      putc_(t, common_bytes[below(r, (int)sizeof common_bytes - 1)]);
    else
      putc_(t, other_bytes[below(r, (int)sizeof other_bytes - 1)]);
  }
}

static void gen_replacement(rng_t *r, text_t *t) {
  static const char *const parts[] = {"x", "<", "%0", "%1", "%2", "%3", "%%", "-", "%1%1"};
  static const char *const broken[] = {"%", "%a", "%\0", "%9"};
  t->len = 0;
  for (int n = below(r, 4); n > 0; n--) puts_(t, PICK(r, parts));
  if (below(r, 30) == 0) put(t, PICK(r, broken), below(r, 2) + 1);
}

/* ------------------------------------------------------------ tests */

/* Shows a case in C string syntax, for the failure message. */
static void describe(char *out, size_t size, const text_t *s, const text_t *p, int init,
                     const text_t *repl, int max) {
  size_t o = 0;
  const text_t *parts[] = {s, p, repl};
  for (size_t i = 0; i < 3 && o + 8 < size; i++) {
    out[o++] = '"';
    for (size_t k = 0; k < parts[i]->len && o + 8 < size; k++) {
      unsigned char c = (unsigned char)parts[i]->buf[k];
      if (c >= 32 && c < 127 && c != '"')
        out[o++] = (char)c;
      else
        o += (size_t)snprintf(out + o, size - o, "\\x%02x", c);
    }
    o += (size_t)snprintf(out + o, size - o, "\" ");
  }
  snprintf(out + o, size - o, "init %d max %d", init, max);
}

TEST(random_patterns_agree_with_stock_lua) {
  lua_pair_t pair;
  CHECK_EQ(lua_pair_open(&pair, driver), 0);
  rng_t r = {0x7e4e3e47u};
  int differences = 0;
  enum { CASES = 12000 };
  for (int i = 0; i < CASES && differences < 5; i++) {
    text_t pattern, subject, repl;
    gen_pattern(&r, &pattern);
    gen_subject(&r, &subject, &pattern);
    gen_replacement(&r, &repl);
    int init = below(&r, 41) - 20, max = below(&r, 6) - 1;
    lua_pair_arg_t args[] = {PAIR_STR(subject.buf, subject.len), PAIR_STR(pattern.buf, pattern.len),
                             PAIR_INT(init), PAIR_STR(repl.buf, repl.len), PAIR_INT(max)};
    char what[4096];
    describe(what, sizeof what, &subject, &pattern, init, &repl, max);
    differences += !lua_pair_agree(&pair, what, "patterns", args, 5);
  }
  CHECK_EQ(differences, 0);
  lua_pair_close(&pair);
}

/* Cases worth having for certain, whatever the generator draws. */
typedef struct chosen_case {
  const char *subject, *pattern;
  size_t subject_len, pattern_len; /* literals may hold NULs */
} chosen_case_t;
#define CASE(s, p)                                                                                 \
  { s, p, sizeof(s) - 1, sizeof(p) - 1 }

TEST(chosen_patterns_agree_with_stock_lua) {
  static const chosen_case_t cases[] = {
      CASE("hello world from Lua", "%w+"),
      CASE("key = value", "(%w+)%s*=%s*(%w+)"),
      CASE("  trim  ", "^%s*(.-)%s*$"),
      CASE("f(a(b)c)d", "%b()"),
      CASE("THE (quick) fox", "%f[%a]%a+%f[%A]"),
      CASE("abcabc", "(a)(b)(c)%3%2%1"),
      CASE("abcabc", "(abc)%1"),
      CASE("x = 'it''s'", "(['\"])(.-)%1"),
      CASE("[[]]", "[]]+"),
      CASE("a]b^c-d", "[]^-]"),
      CASE("a-z", "[a-]+"),
      CASE("%a%", "[%%a]+"),
      CASE("a.b", "a.b"),
      CASE("a)", "a)"),
      CASE("a]", "a]"),
      CASE("$^", "$^"),
      CASE("^a", "^^a"),
      CASE("a$b", "a$b"),
      CASE("", ""),
      CASE("", "$"),
      CASE("abc", "()"),
      CASE("abc", "()a()"),
      CASE("abc", "((a)(b))()"),
      CASE("aaa", "a-$"),
      CASE("aaab", "a-b"),
      CASE("x\0y\0z", "%z"),
      CASE("x\0y", "[\0]"),
      CASE("x\0y", "\0"),
      CASE("\xff\xfe", "[\x80-\xff]+"),
      CASE("date 2024-01-31", "(%d+)-(%d+)-(%d+)"),
      CASE("one two  three", "%s*()%S+()"),
      CASE("unclosed", "(un"),
      CASE("closed", "clo)sed"),
      CASE("percent", "%"),
      CASE("bad set", "[a"),
      CASE("bad set", "x["),
      CASE("%b", "%b"),
      CASE("frontier", "%fx"),
      CASE("back", "(b)%2"),
      CASE("back", "%0"),
      CASE("back", "(b%1)"),
      CASE("back", "()%1"),
  };
  static const char *const repls[] = {"<%0>", "%1-%1", "%2", "%%", "x%"};
  lua_pair_t pair;
  CHECK_EQ(lua_pair_open(&pair, driver), 0);
  int differences = 0;
  for (size_t i = 0; i < TEN_ARRAY_SIZE(cases); i++) {
    for (size_t k = 0; k < TEN_ARRAY_SIZE(repls); k++) {
      const chosen_case_t *c = &cases[i];
      lua_pair_arg_t args[] = {PAIR_STR(c->subject, c->subject_len),
                               PAIR_STR(c->pattern, c->pattern_len), PAIR_INT((int)k - 2),
                               PAIR_STR(repls[k], strlen(repls[k])), PAIR_INT((int)k)};
      char what[256];
      snprintf(what, sizeof what, "case %zu: \"%s\" \"%s\" \"%s\"", i, c->subject, c->pattern,
               repls[k]);
      differences += !lua_pair_agree(&pair, what, "patterns", args, 5);
    }
  }
  CHECK_EQ(differences, 0);
  lua_pair_close(&pair);
}

TEST(rep_and_bad_arguments_agree_with_stock_lua) {
  lua_pair_t pair;
  CHECK_EQ(lua_pair_open(&pair, driver), 0);
  int differences = !lua_pair_agree(&pair, "bad arguments", "bad_arguments", NULL, 0);
  static const struct {
    const char *s;
    size_t len;
  } strings[] = {{"", 0}, {"x", 1}, {"ab", 2}, {"\0z", 2}};
  for (size_t s = 0; s < TEN_ARRAY_SIZE(strings); s++) {
    for (size_t sep = 0; sep < TEN_ARRAY_SIZE(strings); sep++) {
      for (int n = -2; n <= 9; n++) {
        lua_pair_arg_t args[] = {PAIR_STR(strings[s].s, strings[s].len), PAIR_INT(n),
                                 PAIR_STR(strings[sep].s, strings[sep].len)};
        char what[64];
        snprintf(what, sizeof what, "rep #%zu x %d sep #%zu", s, n, sep);
        differences += !lua_pair_agree(&pair, what, "rep", args, 3);
      }
    }
  }
  CHECK_EQ(differences, 0);
  lua_pair_close(&pair);
}

int main(void) {
  RUN(random_patterns_agree_with_stock_lua);
  RUN(chosen_patterns_agree_with_stock_lua);
  RUN(rep_and_bad_arguments_agree_with_stock_lua);
  return test_report();
}
