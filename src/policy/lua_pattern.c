/* lua_pattern.c: Lua 5.4 patterns, compiled and matched with a step
 * budget (see lua_pattern.h).
 *
 * Written from the Lua 5.4 manual, §6.4.1. What a program can see is stock
 * Lua's: matches and captures; the order in which alternatives are tried,
 * which decides the match found; the errors, their messages and the moment
 * they are raised, so a malformed part of a pattern is compiled into an
 * item that raises once matching reaches it; and the nesting limit
 * ("pattern too complex" past MAX_NESTING alternatives open at once),
 * counted where Lua counts it, so the same patterns pass.
 */
#include "policy/lua_pattern.h"

#include "policy/lua.h"

#include <ctype.h>
#include <lauxlib.h>
#include <pthread.h>
#include <string.h>

#define MAX_NESTING     200  /* alternatives open at once before "pattern too complex" */
#define STEPS_PER_CHECK 1024 /* between two looks at the clock */

/* ------------------------------------------------------------ byte classes
 *
 * A class (%a), a set ([a-z%d]) or a frontier's set is turned into a
 * ten_byte_set_t when the pattern is compiled, so that testing a subject
 * byte is one lookup. */

static void set_add(ten_byte_set_t *set, unsigned char c) {
  set->bits[c >> 6] |= (uint64_t)1 << (c & 63);
}

static bool set_has(const ten_byte_set_t *set, unsigned char c) {
  return (set->bits[c >> 6] >> (c & 63)) & 1;
}

static void set_add_all(ten_byte_set_t *to, const ten_byte_set_t *from) {
  for (int i = 0; i < 4; i++) to->bits[i] |= from->bits[i];
}

static void set_invert(ten_byte_set_t *set) {
  for (int i = 0; i < 4; i++) set->bits[i] = ~set->bits[i];
}

/* The letters of %a, %c, ... ("z", NUL, is not in the manual, but Lua
 * 5.4 still accepts it). */
static const char class_letters[] = "acdglpsuwxz";
#define CLASS_COUNT (sizeof class_letters - 1)

/* What each class holds, and which class a letter after '%' names (-1:
 * none; upper case: the complement), taken from <ctype.h> once, as Lua
 * asks it every time: in the process's locale, which ten never changes
 * from "C". */
static ten_byte_set_t named_classes[CLASS_COUNT];
static signed char class_of_letter[256];
static bool letter_complements[256];
static pthread_once_t named_classes_once = PTHREAD_ONCE_INIT;

static bool ctype_says(char letter, int c) {
  switch (letter) {
  case 'a': return isalpha(c);
  case 'c': return iscntrl(c);
  case 'd': return isdigit(c);
  case 'g': return isgraph(c);
  case 'l': return islower(c);
  case 'p': return ispunct(c);
  case 's': return isspace(c);
  case 'u': return isupper(c);
  case 'w': return isalnum(c);
  case 'x': return isxdigit(c);
  default: return c == 0; /* z */
  }
}

static void make_named_classes(void) {
  for (size_t i = 0; i < CLASS_COUNT; i++)
    for (int c = 0; c < 256; c++)
      if (ctype_says(class_letters[i], c)) set_add(&named_classes[i], (unsigned char)c);
  for (int c = 0; c < 256; c++) {
    const char *at = memchr(class_letters, tolower(c), CLASS_COUNT);
    class_of_letter[c] = at ? (signed char)(at - class_letters) : -1;
    letter_complements[c] = isupper(c);
  }
}

void ten__pattern_init(void) { pthread_once(&named_classes_once, make_named_classes); }

/* The bytes of class %letter in *set; false if the letter names no class
 * (then "%letter" is the letter itself). */
static bool named_class(unsigned char letter, ten_byte_set_t *set) {
  int index = class_of_letter[letter];
  if (index < 0) return false;
  *set = named_classes[index];
  if (letter_complements[letter]) set_invert(set);
  return true;
}

/* The test of one subject byte. */
typedef enum byte_test { BYTE_LITERAL, BYTE_ANY, BYTE_IN_SET } byte_test_t;

static bool byte_matches(const ten_byte_class_t *cls, unsigned char c) {
  switch (cls->test) {
  case BYTE_LITERAL: return c == cls->byte;
  case BYTE_ANY: return true;
  default: return set_has(&cls->set, c);
  }
}

/* ------------------------------------------------------------ compiled patterns */

typedef enum item_kind {
  ITEM_SINGLE,    /* one byte of a class, maybe repeated */
  ITEM_OPEN,      /* ( */
  ITEM_POSITION,  /* () */
  ITEM_CLOSE,     /* ) */
  ITEM_BALANCED,  /* %bxy */
  ITEM_FRONTIER,  /* %f[set] */
  ITEM_BACKREF,   /* %1 .. %9 */
  ITEM_END,       /* $ at the end of the pattern */
  ITEM_MALFORMED, /* the pattern is wrong here: an error once reached */
} item_kind_t;

typedef enum pattern_error {
  ERR_ENDS_WITH_PERCENT,
  ERR_MISSING_BRACKET,
  ERR_BALANCE_ARGUMENTS,
  ERR_FRONTIER_BRACKET,
  ERR_TOO_MANY_CAPTURES,
  ERR_NOTHING_TO_CLOSE,
  ERR_CAPTURE_INDEX,
} pattern_error_t;

/* Lua's messages, as luaL_error formats (the argument: the capture digit). */
static const char *const error_formats[] = {
    [ERR_ENDS_WITH_PERCENT] = "malformed pattern (ends with '%%')",
    [ERR_MISSING_BRACKET] = "malformed pattern (missing ']')",
    [ERR_BALANCE_ARGUMENTS] = "malformed pattern (missing arguments to '%%b')",
    [ERR_FRONTIER_BRACKET] = "missing '[' after '%%f' in pattern",
    [ERR_TOO_MANY_CAPTURES] = "too many captures",
    [ERR_NOTHING_TO_CLOSE] = "invalid pattern capture",
    [ERR_CAPTURE_INDEX] = "invalid capture index %%%d",
};

typedef struct compiler {
  const char *p, *end;       /* what is left of the pattern */
  ten_pattern_item_t *items; /* room for `capacity` items; the rest are only counted */
  size_t capacity, count;
  int captures;                       /* opened so far: the index of the next one */
  int open[TEN_PATTERN_MAX_CAPTURES]; /* indices of the captures still open, innermost last */
  int open_count;
  ten_pattern_item_t scratch; /* where items beyond the capacity are built */
} compiler_t;

static ten_pattern_item_t *add_item(compiler_t *c, item_kind_t kind) {
  ten_pattern_item_t *it = c->count < c->capacity ? &c->items[c->count] : &c->scratch;
  c->count++;
  it->kind = (unsigned char)kind;
  it->repeat = 0;
  return it;
}

static ten_pattern_item_t *add_error(compiler_t *c, pattern_error_t error) {
  ten_pattern_item_t *it = add_item(c, ITEM_MALFORMED);
  it->error = (unsigned char)error;
  return it;
}

/* Parses the set whose '[' is at p into cls; returns what follows its
 * ']', or NULL if it has none. A ']' right after "[" or "[^" is a member,
 * and so is any byte after a '%'. Members are "%x" (a class, or the byte
 * x), "x-y" (a range of bytes as written) or a byte. */
static const char *parse_set(const char *p, const char *end, ten_byte_class_t *cls) {
  const char *q = p + 1;
  bool negated = q < end && *q == '^';
  if (negated) q++;
  const char *members = q;
  for (;;) {
    if (q >= end) return NULL;
    if (*q++ == '%' && q < end) q++;
    if (q < end && *q == ']') break;
  }
  const char *members_end = q;
  cls->test = BYTE_IN_SET;
  memset(&cls->set, 0, sizeof cls->set);
  for (const char *m = members; m < members_end;) {
    if (*m == '%') {
      ten_byte_set_t named;
      if (named_class((unsigned char)m[1], &named))
        set_add_all(&cls->set, &named);
      else
        set_add(&cls->set, (unsigned char)m[1]);
      m += 2;
    } else if (m + 2 < members_end && m[1] == '-') {
      for (int b = (unsigned char)m[0]; b <= (unsigned char)m[2]; b++)
        set_add(&cls->set, (unsigned char)b);
      m += 3;
    } else {
      set_add(&cls->set, (unsigned char)*m++);
    }
  }
  if (negated) set_invert(&cls->set);
  return members_end + 1;
}

static bool is_repeat(char c) { return c == '?' || c == '*' || c == '+' || c == '-'; }

/* Parses one byte class at c->p into `it`: ".", "%x", "[set]" or a
 * literal byte. If it is malformed, `it` becomes the error and false is
 * returned. */
static bool parse_byte_class(compiler_t *c, ten_pattern_item_t *it) {
  const char *p = c->p;
  ten_byte_class_t *cls = &it->cls;
  switch (*p) {
  case '.':
    cls->test = BYTE_ANY;
    c->p = p + 1;
    return true;
  case '%':
    if (p + 1 == c->end) {
      it->kind = ITEM_MALFORMED;
      it->error = ERR_ENDS_WITH_PERCENT;
      return false;
    }
    /* %a..%z name classes; % before anything else is that byte itself. */
    cls->test = named_class((unsigned char)p[1], &cls->set) ? BYTE_IN_SET : BYTE_LITERAL;
    cls->byte = (unsigned char)p[1];
    c->p = p + 2;
    return true;
  case '[':
    c->p = parse_set(p, c->end, cls);
    if (!c->p) {
      it->kind = ITEM_MALFORMED;
      it->error = ERR_MISSING_BRACKET;
      return false;
    }
    return true;
  default:
    cls->test = BYTE_LITERAL;
    cls->byte = (unsigned char)*p;
    c->p = p + 1;
    return true;
  }
}

static bool capture_is_open(const compiler_t *c, int index) {
  for (int i = 0; i < c->open_count; i++)
    if (c->open[i] == index) return true;
  return false;
}

static bool compile_open(compiler_t *c) {
  if (c->captures == TEN_PATTERN_MAX_CAPTURES) {
    add_error(c, ERR_TOO_MANY_CAPTURES);
    return false;
  }
  bool position = c->p + 1 < c->end && c->p[1] == ')';
  ten_pattern_item_t *it = add_item(c, position ? ITEM_POSITION : ITEM_OPEN);
  it->capture = (unsigned char)c->captures;
  if (!position) c->open[c->open_count++] = c->captures;
  c->captures++;
  c->p += position ? 2 : 1;
  return true;
}

static bool compile_close(compiler_t *c) {
  if (c->open_count == 0) {
    add_error(c, ERR_NOTHING_TO_CLOSE);
    return false;
  }
  add_item(c, ITEM_CLOSE)->capture = (unsigned char)c->open[--c->open_count];
  c->p++;
  return true;
}

/* %b, %f and %1-%9; false if c->p holds none of them. */
static bool compile_special_escape(compiler_t *c, bool *ok) {
  const char *p = c->p, *end = c->end;
  *ok = false;
  if (p + 1 == end) return false;
  if (p[1] == 'b') {
    if (end - p < 4) {
      add_error(c, ERR_BALANCE_ARGUMENTS);
      return true;
    }
    ten_pattern_item_t *it = add_item(c, ITEM_BALANCED);
    it->open = (unsigned char)p[2];
    it->close = (unsigned char)p[3];
    c->p = p + 4;
  } else if (p[1] == 'f') {
    if (p + 2 == end || p[2] != '[') {
      add_error(c, ERR_FRONTIER_BRACKET);
      return true;
    }
    ten_pattern_item_t *it = add_item(c, ITEM_FRONTIER);
    c->p = parse_set(p + 2, end, &it->cls);
    if (!c->p) {
      it->kind = ITEM_MALFORMED;
      it->error = ERR_MISSING_BRACKET;
      return true;
    }
  } else if (isdigit((unsigned char)p[1])) {
    /* Only a capture opened and closed before can be matched again. */
    int index = p[1] - '1';
    if (index < 0 || index >= c->captures || capture_is_open(c, index)) {
      add_error(c, ERR_CAPTURE_INDEX)->digit = index + 1;
      return true;
    }
    add_item(c, ITEM_BACKREF)->capture = (unsigned char)index;
    c->p = p + 2;
  } else {
    return false;
  }
  *ok = true;
  return true;
}

/* Adds the item at c->p; false once an error item ended the pattern. */
static bool compile_item(compiler_t *c) {
  bool ok;
  switch (*c->p) {
  case '(': return compile_open(c);
  case ')': return compile_close(c);
  case '$':
    if (c->p + 1 != c->end) break; /* elsewhere, the byte '$' */
    add_item(c, ITEM_END);
    c->p++;
    return true;
  case '%':
    if (compile_special_escape(c, &ok)) return ok;
    break;
  default: break;
  }
  ten_pattern_item_t *it = add_item(c, ITEM_SINGLE);
  if (!parse_byte_class(c, it)) return false;
  if (c->p < c->end && is_repeat(*c->p)) it->repeat = *c->p++;
  return true;
}

/* Compiles pattern into at most `capacity` items; returns how many it
 * has, which may be more: then call again with room for all. */
size_t ten__pattern_compile(lua_State *L, const char *pattern, size_t len,
                            ten_pattern_item_t *items, size_t capacity) {
  compiler_t c; /* not zeroed: only these fields are read before written */
  c.p = pattern;
  c.end = pattern + len;
  c.items = items;
  c.capacity = capacity;
  c.count = 0;
  c.captures = 0;
  c.open_count = 0;
  while (c.p < c.end && compile_item(&c))
    if ((c.count & (STEPS_PER_CHECK - 1)) == 0) tenL_spend(L, STEPS_PER_CHECK);
  return c.count;
}

/* ------------------------------------------------------------ matching */

/* A capture's length while it is open, and for a position capture. */
#define CAPTURE_OPEN     (-1)
#define CAPTURE_POSITION (-2)

void ten__pattern_matcher_init(ten_pattern_matcher_t *m, lua_State *L, const char *subject,
                               size_t len, const ten_pattern_item_t *items, size_t item_count) {
  m->L = L;
  m->subject = subject;
  m->subject_end = subject + len;
  m->items = items;
  m->item_count = item_count;
  m->level = 0;
  m->steps_left = STEPS_PER_CHECK;
}

static void spend(ten_pattern_matcher_t *m, size_t steps) {
  if (m->steps_left > steps) {
    m->steps_left -= steps;
    return;
  }
  m->steps_left = STEPS_PER_CHECK;
  tenL_check_time(m->L);
}

void ten__pattern_spend(ten_pattern_matcher_t *m, size_t steps) { spend(m, steps); }

static bool single_at(const ten_pattern_matcher_t *m, const ten_pattern_item_t *it, const char *s) {
  return s < m->subject_end && byte_matches(&it->cls, (unsigned char)*s);
}

/* How many bytes from s on match the item's class. */
static size_t run_length(ten_pattern_matcher_t *m, const ten_pattern_item_t *it, const char *s) {
  size_t n = 0;
  if (it->cls.test == BYTE_ANY) {
    n = (size_t)(m->subject_end - s);
  } else {
    while (s + n < m->subject_end && byte_matches(&it->cls, (unsigned char)s[n])) n++;
  }
  spend(m, n);
  return n;
}

/* The end of a balanced run starting at s (an `open` byte), or NULL. */
static const char *balanced_end(ten_pattern_matcher_t *m, const ten_pattern_item_t *it,
                                const char *s) {
  if (s >= m->subject_end || (unsigned char)*s != it->open) return NULL;
  int depth = 1;
  for (const char *q = s + 1; q < m->subject_end; q++) {
    /* close first: with %bxx the second x closes */
    if ((unsigned char)*q == it->close) {
      if (--depth == 0) {
        spend(m, (size_t)(q - s));
        return q + 1;
      }
    } else if ((unsigned char)*q == it->open) {
      depth++;
    }
  }
  spend(m, (size_t)(m->subject_end - s));
  return NULL;
}

static const char *match_from(ten_pattern_matcher_t *m, size_t k, const char *s, int nesting);

/* Items k + 1 on, after item k matched `count` bytes from s, for count
 * from most to least: greedy * and +. */
static const char *match_greedy(ten_pattern_matcher_t *m, size_t k, const char *s, size_t count,
                                size_t least, int nesting) {
  for (size_t n = count + 1; n-- > least;) {
    const char *e = match_from(m, k + 1, s + n, nesting + 1);
    if (e) return e;
  }
  return NULL;
}

/* Items k + 1 on, after item k matched as few bytes from s as will do:
 * lazy -. */
static const char *match_lazy(ten_pattern_matcher_t *m, size_t k, const char *s, int nesting) {
  for (;;) {
    const char *e = match_from(m, k + 1, s, nesting + 1);
    if (e) return e;
    if (!single_at(m, &m->items[k], s)) return NULL;
    s++;
  }
}

static const char *match_capture_open(ten_pattern_matcher_t *m, size_t k, const char *s,
                                      int nesting, ptrdiff_t len) {
  const ten_pattern_item_t *it = &m->items[k];
  m->captures[it->capture] = (ten_pattern_capture_t){s, len};
  m->level = it->capture + 1;
  const char *e = match_from(m, k + 1, s, nesting + 1);
  if (!e) m->level = it->capture;
  return e;
}

static const char *match_capture_close(ten_pattern_matcher_t *m, size_t k, const char *s,
                                       int nesting) {
  ten_pattern_capture_t *cap = &m->captures[m->items[k].capture];
  cap->len = s - cap->start;
  const char *e = match_from(m, k + 1, s, nesting + 1);
  if (!e) cap->len = CAPTURE_OPEN;
  return e;
}

static const char *match_backref(ten_pattern_matcher_t *m, const ten_pattern_item_t *it,
                                 const char *s) {
  const ten_pattern_capture_t *cap = &m->captures[it->capture];
  if (cap->len < 0) return NULL; /* a position: no text to match */
  size_t len = (size_t)cap->len;
  spend(m, len);
  if ((size_t)(m->subject_end - s) < len || memcmp(cap->start, s, len) != 0) return NULL;
  return s + len;
}

/* Item k, repeated (?, *, + or -), then the rest from s: decides the
 * match (true, *end its end or NULL), or finds that the only way on is
 * with the item matching nothing, which the caller takes without nesting
 * (false). */
static bool match_repeat(ten_pattern_matcher_t *m, size_t k, const char *s, int nesting,
                         const char **end) {
  const ten_pattern_item_t *it = &m->items[k];
  switch (it->repeat) {
  case '?':
    if (!single_at(m, it, s)) return false;
    *end = match_from(m, k + 1, s + 1, nesting + 1);
    return *end != NULL; /* else without it */
  case '-':
    if (!single_at(m, it, s)) return false;
    *end = match_lazy(m, k, s, nesting);
    return true;
  default: { /* '*', '+' */
    size_t count = run_length(m, it, s);
    size_t least = it->repeat == '+' ? 1 : 0;
    if (count == 0 && least == 0) return false;
    *end = count < least ? NULL : match_greedy(m, k, s, count, least, nesting);
    return true;
  }
  }
}

static bool at_frontier(const ten_pattern_matcher_t *m, const ten_pattern_item_t *it,
                        const char *s) {
  /* Outside the subject is "\0", on both sides. */
  unsigned char before = s == m->subject ? 0 : (unsigned char)s[-1];
  unsigned char at = s < m->subject_end ? (unsigned char)*s : 0;
  return !byte_matches(&it->cls, before) && byte_matches(&it->cls, at);
}

/* Matches items k on against the subject from s; returns the end of the
 * match, or NULL.
 *
 * Where the pattern offers alternatives (a repeat, or a capture that must
 * be undone if the rest fails) this recurses, one level of `nesting` each,
 * in the order Lua tries them: the first success is the match. A plain
 * sequence loops instead; so does a repeated item that matched nothing
 * (Lua does not nest there either, which decides what "too complex" is). */
static const char *match_from(ten_pattern_matcher_t *m, size_t k, const char *s, int nesting) {
  if (nesting > MAX_NESTING) luaL_error(m->L, "pattern too complex");
  for (;; k++) {
    spend(m, 1);
    if (k == m->item_count) return s;
    const ten_pattern_item_t *it = &m->items[k];
    switch (it->kind) {
    case ITEM_SINGLE: {
      if (it->repeat == 0) {
        if (!single_at(m, it, s)) return NULL;
        s++;
        continue;
      }
      const char *e;
      if (match_repeat(m, k, s, nesting, &e)) return e;
      continue; /* the item matches nothing here, and may: on from s */
    }
    case ITEM_OPEN: return match_capture_open(m, k, s, nesting, CAPTURE_OPEN);
    case ITEM_POSITION: return match_capture_open(m, k, s, nesting, CAPTURE_POSITION);
    case ITEM_CLOSE: return match_capture_close(m, k, s, nesting);
    case ITEM_BALANCED:
      s = balanced_end(m, it, s);
      if (!s) return NULL;
      continue;
    case ITEM_FRONTIER:
      if (!at_frontier(m, it, s)) return NULL;
      continue;
    case ITEM_BACKREF:
      s = match_backref(m, it, s);
      if (!s) return NULL;
      continue;
    case ITEM_END:
      if (s != m->subject_end) return NULL;
      continue;
    default: /* ITEM_MALFORMED */
      luaL_error(m->L, error_formats[it->error], it->digit);
      return NULL;
    }
  }
}

/* The match starting at s, or NULL; captures from an earlier try are
 * forgotten. */
const char *ten__pattern_match(ten_pattern_matcher_t *m, const char *s) {
  m->level = 0;
  return match_from(m, 0, s, 1);
}

/* ------------------------------------------------------------ captures */

/* Capture i of the match s..e: its text in *text, *len; or false with the
 * position pushed, for a position capture. Index 0 of a pattern without
 * captures is the whole match. */
bool ten__pattern_capture(ten_pattern_matcher_t *m, int i, const char *s, const char *e,
                          const char **text, size_t *len) {
  if (i >= m->level) {
    if (i != 0) luaL_error(m->L, "invalid capture index %%%d", i + 1);
    *text = s;
    *len = (size_t)(e - s);
    return true;
  }
  const ten_pattern_capture_t *cap = &m->captures[i];
  if (cap->len == CAPTURE_OPEN) luaL_error(m->L, "unfinished capture");
  if (cap->len == CAPTURE_POSITION) {
    lua_pushinteger(m->L, (cap->start - m->subject) + 1);
    return false;
  }
  *text = cap->start;
  *len = (size_t)cap->len;
  return true;
}

void ten__pattern_push_capture(ten_pattern_matcher_t *m, int i, const char *s, const char *e) {
  const char *text;
  size_t len;
  if (ten__pattern_capture(m, i, s, e, &text, &len)) lua_pushlstring(m->L, text, len);
}

/* Pushes every capture; with none, the whole match if whole_if_none. */
int ten__pattern_push_captures(ten_pattern_matcher_t *m, const char *s, const char *e,
                               bool whole_if_none) {
  int n = m->level == 0 && whole_if_none ? 1 : m->level;
  luaL_checkstack(m->L, n, "too many captures");
  for (int i = 0; i < n; i++) ten__pattern_push_capture(m, i, s, e);
  return n;
}
