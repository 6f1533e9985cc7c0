/* lua_tables.c: table.insert, remove, move, concat and sort, bounded by the
 * running call's deadline.
 *
 * Lua's own versions loop in C over a range the caller chooses: a __len
 * metamethod can claim 2^62 elements, move takes any integers, and the
 * metamethods they call may be C functions, which run no count hook. Here
 * every element read, written or compared counts one step (tenL_spend), so
 * such a loop ends with the call's time-limit error.
 *
 * Written from the Lua 5.4 manual (§6.6), with the behaviour of the stock
 * library kept wherever a program can see it: results, the order in which
 * elements are read and written (metamethods see it), and error messages.
 * The one designed difference is sort's algorithm, which the manual leaves
 * open: an introsort (below), deterministic, where Lua's quicksort picks
 * random pivots on large arrays. Equal elements may end in another order
 * (the manual: "the sort algorithm is not stable"). pack and unpack stay
 * Lua's: the stack bounds their ranges.
 */
#include "policy/lua.h"
#include "policy/lua_internal.h"

#include <lauxlib.h>
#include <limits.h>

/* ------------------------------------------------------------ lists */

/* What a function does with its list: a value that is not a table is
 * accepted if its metatable provides what is needed (as Lua's does). */
enum { USE_READ = 1, USE_WRITE = 2, USE_LENGTH = 4 };

static bool has_metafield(lua_State *L, const char *name) {
  lua_pushstring(L, name);
  bool present = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 1);
  return present;
}

static void check_list(lua_State *L, int arg, int uses) {
  if (lua_type(L, arg) == LUA_TTABLE) return;
  bool usable = false;
  if (lua_getmetatable(L, arg)) {
    usable = (!(uses & USE_READ) || has_metafield(L, "__index")) &&
             (!(uses & USE_WRITE) || has_metafield(L, "__newindex")) &&
             (!(uses & USE_LENGTH) || has_metafield(L, "__len"));
    lua_pop(L, 1);
  }
  if (!usable) luaL_checktype(L, arg, LUA_TTABLE); /* raises "table expected, got ..." */
}

static lua_Integer list_length(lua_State *L, int arg, int uses) {
  check_list(L, arg, uses | USE_LENGTH);
  return luaL_len(L, arg);
}

/* list[to] = list[from], one step of the call. */
static void copy_element(lua_State *L, int list, lua_Integer from, lua_Integer to) {
  tenL_spend(L, 1);
  lua_geti(L, list, from);
  lua_seti(L, list, to);
}

/* Integer arithmetic that wraps like Lua's instead of overflowing. */
static lua_Integer wrapping_add(lua_Integer a, lua_Integer b) {
  return (lua_Integer)((lua_Unsigned)a + (lua_Unsigned)b);
}

/* 1 <= pos <= limit, in one comparison that also refuses what wrapped. */
static bool position_within(lua_Integer pos, lua_Integer limit) {
  return (lua_Unsigned)pos - 1u < (lua_Unsigned)limit;
}

/* ------------------------------------------------------------ insert, remove */

/* table.insert(list, [pos,] value) */
static int table_insert(lua_State *L) {
  lua_Integer first_free = wrapping_add(list_length(L, 1, USE_READ | USE_WRITE), 1);
  lua_Integer pos;
  switch (lua_gettop(L)) {
  case 2: pos = first_free; break;
  case 3:
    pos = luaL_checkinteger(L, 2);
    luaL_argcheck(L, position_within(pos, first_free), 2, "position out of bounds");
    /* Open a gap at pos, from the end down so nothing is overwritten. */
    for (lua_Integer i = first_free; i > pos; i--) copy_element(L, 1, i - 1, i);
    break;
  default: return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos); /* the value, on top */
  return 0;
}

/* table.remove(list [, pos]) */
static int table_remove(lua_State *L) {
  lua_Integer size = list_length(L, 1, USE_READ | USE_WRITE);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  /* Besides 1..size, size + 1 is allowed, and the default pos of an empty
   * list (0). Stock Lua names argument #1 in this message; so do we. */
  if (pos != size)
    luaL_argcheck(L, position_within(pos, wrapping_add(size, 1)), 1, "position out of bounds");
  lua_geti(L, 1, pos); /* the result */
  for (; pos < size; pos++) copy_element(L, 1, pos + 1, pos);
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/* ------------------------------------------------------------ move */

/* table.move(a1, f, e, t [, a2]): a2[t..] = a1[f..e], ranges may overlap. */
static int table_move(lua_State *L) {
  lua_Integer first = luaL_checkinteger(L, 2);
  lua_Integer last = luaL_checkinteger(L, 3);
  lua_Integer dest = luaL_checkinteger(L, 4);
  int target = lua_isnoneornil(L, 5) ? 1 : 5;
  check_list(L, 1, USE_READ);
  check_list(L, target, USE_WRITE);
  if (last >= first) {
    /* The count, last - first + 1, must be a Lua integer, and so must the
     * last destination index. */
    luaL_argcheck(L, first > 0 || last < LUA_MAXINTEGER + first, 3, "too many elements to move");
    lua_Integer count = last - first + 1;
    luaL_argcheck(L, dest <= LUA_MAXINTEGER - count + 1, 4, "destination wrap around");
    /* A destination inside the source range, past its start, must be
     * filled from the end if it is the same list, or the copy overwrites
     * what it has yet to read. Lists are told apart with ==, whose __eq
     * runs only when the ranges overlap, as in Lua. */
    bool from_the_end =
        dest > first && dest <= last && (target == 1 || lua_compare(L, 1, target, LUA_OPEQ));
    for (lua_Integer k = 0; k < count; k++) {
      lua_Integer offset = from_the_end ? count - 1 - k : k;
      tenL_spend(L, 1);
      lua_geti(L, 1, first + offset);
      lua_seti(L, target, dest + offset);
    }
  }
  lua_pushvalue(L, target);
  return 1;
}

/* ------------------------------------------------------------ concat */

static void add_element(lua_State *L, luaL_Buffer *b, lua_Integer i) {
  tenL_spend(L, 1);
  lua_geti(L, 1, i);
  if (!lua_isstring(L, -1))
    luaL_error(L, "invalid value (%s) at index %I in table for 'concat'", luaL_typename(L, -1),
               (LUAI_UACINT)i);
  luaL_addvalue(b);
}

/* table.concat(list [, sep [, i [, j]]]) */
static int table_concat(lua_State *L) {
  lua_Integer last = list_length(L, 1, USE_READ);
  size_t sep_len;
  const char *sep = luaL_optlstring(L, 2, "", &sep_len);
  lua_Integer i = luaL_optinteger(L, 3, 1);
  last = luaL_optinteger(L, 4, last);
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  if (i <= last) {
    /* Stops at last without computing last + 1, which may not exist. */
    for (; i < last; i++) {
      add_element(L, &b, i);
      luaL_addlstring(&b, sep, sep_len);
    }
    add_element(L, &b, last);
  }
  luaL_pushresult(&b);
  return 1;
}

/* ------------------------------------------------------------ sort
 *
 * Introsort: quicksort with a median-of-three pivot, down to ranges of
 * three elements, sorted directly; when a range has been split more than
 * twice log2(n) times (an input that defeats the pivot choice), heapsort
 * finishes it, so no input costs more than O(n log n) comparisons.
 *
 * The list stays in the table: elements are read and written with
 * lua_geti/lua_seti, which respect metamethods. The partition's scans are
 * stopped by the pivot and by the median's low element; an order function
 * that gets past those stops (one saying a < a, say) carries a scan to the
 * edge of its range, where it is reported, as Lua does, instead of being
 * followed out of the range.
 */

typedef struct sorter {
  lua_State *L;
  bool by_function; /* argument 2 is the order function; else the < operator */
} sorter_t;

#define LIST 1 /* the list's stack index */

/* Whether the value at stack index a sorts before the one at b. */
static bool sorts_before(sorter_t *s, int a, int b) {
  lua_State *L = s->L;
  tenL_spend(L, 1);
  if (!s->by_function) return lua_compare(L, a, b, LUA_OPLT);
  a = lua_absindex(L, a);
  b = lua_absindex(L, b);
  lua_pushvalue(L, 2);
  lua_pushvalue(L, a);
  lua_pushvalue(L, b);
  lua_call(L, 2, 1);
  bool before = lua_toboolean(L, -1);
  lua_pop(L, 1);
  return before;
}

/* Pushes list[i]. */
static void push_element(sorter_t *s, lua_Integer i) {
  tenL_spend(s->L, 1);
  lua_geti(s->L, LIST, i);
}

/* list[i] = the value on top, popped. */
static void store_element(sorter_t *s, lua_Integer i) {
  tenL_spend(s->L, 1);
  lua_seti(s->L, LIST, i);
}

static void swap_elements(sorter_t *s, lua_Integer i, lua_Integer j) {
  push_element(s, i);
  push_element(s, j);
  store_element(s, i);
  store_element(s, j);
}

/* Puts list[i] and list[j] (i < j) in order. */
static void order_pair(sorter_t *s, lua_Integer i, lua_Integer j) {
  push_element(s, i);
  push_element(s, j);
  if (sorts_before(s, -1, -2)) {
    store_element(s, i);
    store_element(s, j);
  } else {
    lua_pop(s->L, 2);
  }
}

static void sort_at_most_three(sorter_t *s, lua_Integer lo, lua_Integer hi) {
  if (hi <= lo) return;
  order_pair(s, lo, lo + 1);
  if (hi == lo + 1) return;
  order_pair(s, lo + 1, hi);
  order_pair(s, lo, lo + 1);
}

static void invalid_order(sorter_t *s) { luaL_error(s->L, "invalid order function for sorting"); }

/* Splits lo..hi (four elements or more) around a pivot and returns the
 * pivot's final index: all before it sort no later than it, all after it
 * no earlier. */
static lua_Integer partition(sorter_t *s, lua_Integer lo, lua_Integer hi) {
  lua_State *L = s->L;
  lua_Integer mid = lo + (hi - lo) / 2;
  /* Median of three: list[lo] <= list[mid] <= list[hi]. Then the median,
   * the pivot, waits at hi - 1 (stopping the left-to-right scan) and
   * list[lo] stops the right-to-left one. */
  order_pair(s, lo, mid);
  order_pair(s, mid, hi);
  order_pair(s, lo, mid);
  swap_elements(s, mid, hi - 1);
  push_element(s, hi - 1); /* the pivot, kept on the stack at -1 */
  lua_Integer left = lo, right = hi - 1;
  for (;;) {
    /* Leaves list[left] on the stack: a candidate to swap. */
    for (;;) {
      push_element(s, ++left);
      if (!sorts_before(s, -1, -2)) break;
      if (left == hi - 1) invalid_order(s); /* not even the pivot stopped it */
      lua_pop(L, 1);
    }
    for (;;) {
      push_element(s, --right);
      if (!sorts_before(s, -3, -1)) break;
      if (right == lo) invalid_order(s);
      lua_pop(L, 1);
    }
    if (right <= left) break;
    store_element(s, left); /* list[right]'s value, on top */
    store_element(s, right);
  }
  lua_pop(L, 3); /* the last two candidates and the pivot */
  swap_elements(s, left, hi - 1);
  return left;
}

/* Heapsort of lo..hi: the root of the heap is lo, the children of node k
 * (counted from 0) are 2k + 1 and 2k + 2. */
static void sift_down(sorter_t *s, lua_Integer lo, lua_Integer node, lua_Integer count) {
  for (;;) {
    lua_Integer child = 2 * node + 1;
    if (child >= count) return;
    if (child + 1 < count) {
      push_element(s, lo + child);
      push_element(s, lo + child + 1);
      if (sorts_before(s, -2, -1)) child++;
      lua_pop(s->L, 2);
    }
    push_element(s, lo + node);
    push_element(s, lo + child);
    if (!sorts_before(s, -2, -1)) {
      lua_pop(s->L, 2);
      return;
    }
    store_element(s, lo + node);
    store_element(s, lo + child);
    node = child;
  }
}

static void heap_sort(sorter_t *s, lua_Integer lo, lua_Integer hi) {
  lua_Integer count = hi - lo + 1;
  for (lua_Integer node = count / 2; node-- > 0;) sift_down(s, lo, node, count);
  for (lua_Integer end = count - 1; end > 0; end--) {
    swap_elements(s, lo, lo + end);
    sift_down(s, lo, 0, end);
  }
}

static void intro_sort(sorter_t *s, lua_Integer lo, lua_Integer hi, int splits_left) {
  while (hi - lo >= 3) {
    if (splits_left-- == 0) {
      heap_sort(s, lo, hi);
      return;
    }
    lua_Integer p = partition(s, lo, hi);
    /* Recursing into the smaller side keeps the C stack to log2(n) frames. */
    if (p - lo < hi - p) {
      intro_sort(s, lo, p - 1, splits_left);
      lo = p + 1;
    } else {
      intro_sort(s, p + 1, hi, splits_left);
      hi = p - 1;
    }
  }
  sort_at_most_three(s, lo, hi);
}

/* table.sort(list [, comp]) */
static int table_sort(lua_State *L) {
  lua_Integer n = list_length(L, LIST, USE_READ | USE_WRITE);
  if (n < 2) return 0;
  luaL_argcheck(L, n < INT_MAX, 1, "array too big");
  if (!lua_isnoneornil(L, 2)) luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_settop(L, 2); /* the sort needs 6 more slots, of the 20 Lua grants a C function */
  int log2n = 0;
  for (lua_Integer m = n; m > 1; m >>= 1) log2n++;
  sorter_t s = {.L = L, .by_function = !lua_isnil(L, 2)};
  intro_sort(&s, 1, n, 2 * log2n);
  return 0;
}

/* ------------------------------------------------------------ registration */

void ten__lua_bound_tables(lua_State *L) {
  static const luaL_Reg bounded[] = {{"concat", table_concat}, {"insert", table_insert},
                                     {"remove", table_remove}, {"move", table_move},
                                     {"sort", table_sort},     {NULL, NULL}};
  luaL_setfuncs(L, bounded, 0);
}
