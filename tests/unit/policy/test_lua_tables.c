/* test_lua_tables.c: tenement's table.insert/remove/move/concat/sort
 * (policy/lua_tables.c) against stock Lua's, on random lists and
 * arguments: the same results, errors, final contents, and the same reads
 * and writes in the same order where a metatable can watch them. Then what
 * the manual leaves open and is checked by property instead: sort's
 * results on ties, and its cost on an input built to defeat it. */
#include "lua_pair.h"
#include "test.h"

/* Each case is generated from its seed by the driver, in Lua, with
 * math.random (the same generator in both states). Lists are plain tables
 * or proxies whose metamethods log every access into the transcript. */
static const char driver[] =
    "local D = {}\n"
    "local R = math.random\n"
    "local log\n"
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
    /* A list: plain, or a proxy that logs every access to its store. */
    "local function new_list(values, proxied)\n"
    "  if not proxied then return values, values end\n"
    "  local proxy = setmetatable({}, {\n"
    "    __index = function(_, k) log = log .. ' r' .. show(k); return values[k] end,\n"
    "    __newindex = function(_, k, v) log = log .. ' w' .. show(k) .. '=' .. show(v); "
    "values[k] = v end,\n"
    "    __len = function() log = log .. ' #'; return #values end,\n"
    "  })\n"
    "  return proxy, values\n"
    "end\n"
    "local function contents(store, n)\n"
    "  local out = '{'\n"
    "  for i = -1, n + 3 do\n"
    "    if rawget(store, i) ~= nil then out = out .. i .. '=' .. show(rawget(store, i)) .. ' ' "
    "end\n"
    "  end\n"
    "  return out .. '}'\n"
    "end\n"
    "local function any_value()\n"
    "  local kind = R(6)\n"
    "  if kind == 1 then return R(-3, 9) elseif kind == 2 then return R(-3, 9) + 0.5\n"
    "  elseif kind == 3 then return 's' .. R(0, 9) elseif kind == 4 then return R(2) == 1\n"
    "  elseif kind == 5 then return R(-100, 100) else return ('x'):rep(R(0, 3)) end\n"
    "end\n"
    "local function position(n)\n"
    "  local k = R(12)\n"
    "  if k == 1 then return math.maxinteger elseif k == 2 then return math.mininteger end\n"
    "  return R(-2, n + 3)\n"
    "end\n"
    /* Values sort can order: all numbers (no integer equals a float) or all
     * strings. */
    "local function sortable(n)\n"
    "  local t, kind = {}, R(3)\n"
    "  for i = 1, n do\n"
    "    if kind == 1 then t[i] = R(-20, 20) elseif kind == 2 then t[i] = R(2) == 1 and "
    "R(-9, 9) or R(-9, 9) + 0.5\n"
    "    else t[i] = ('ab'):sub(R(2), R(2)) .. R(0, 9) end\n"
    "  end\n"
    "  return t\n"
    "end\n"
    "local ops = {}\n"
    "function ops.insert(list, n)\n"
    "  local k = R(5)\n"
    "  if k == 1 then return table.insert(list, any_value()) end\n"
    "  if k == 2 then return table.insert(list) end\n"
    "  if k == 3 then return table.insert(list, 1, 2, 3) end\n"
    "  return table.insert(list, position(n), any_value())\n"
    "end\n"
    "function ops.remove(list, n)\n"
    "  if R(3) == 1 then return table.remove(list) end\n"
    "  return table.remove(list, position(n))\n"
    "end\n"
    "function ops.move(list, n, other)\n"
    "  local k = R(10)\n"
    "  if k == 1 then return table.move(list, 1, math.maxinteger, 2) end\n"
    "  if k == 2 then return table.move(list, -1, math.maxinteger, 1) end\n"
    "  if k == 3 then return table.move(list, math.mininteger, -1, 1) end\n"
    "  if k == 4 then return table.move(list, 1, 2, math.maxinteger) end\n"
    "  local f, e, t = R(-2, n + 2), R(-2, n + 2), R(-2, n + 3)\n"
    "  if k == 5 then return table.move(list, f, e, t, other) end\n"
    "  if k == 6 then return table.move(list, f, e, t, list) end\n"
    "  return table.move(list, f, e, t)\n"
    "end\n"
    "function ops.concat(list, n)\n"
    "  local seps = { '', ',', ', ', 7, 2.5 }\n"
    "  local sep, k = seps[R(#seps)], R(6)\n"
    "  if k == 1 then return table.concat(list) end\n"
    "  if k == 2 then return table.concat(list, sep) end\n"
    "  if k == 3 then return table.concat(list, sep, R(-1, n + 2)) end\n"
    "  if k == 4 then return table.concat(list, {}, 1, 2) end\n"
    "  return table.concat(list, sep, R(-1, n + 2), R(-1, n + 2))\n"
    "end\n"
    /* A list of numbers or strings only: concat reaches its end. */
    "function ops.concat_strings(list, n, _, store)\n"
    "  for i = 1, n do if type(store[i]) ~= 'number' then rawset(store, i, 's' .. i) end end\n"
    "  return table.concat(list, ',', 1, n)\n"
    "end\n"
    "function D.lists(seed)\n"
    "  math.randomseed(seed)\n"
    "  log = ''\n"
    "  local n = R(0, 12)\n"
    "  local values = {}\n"
    "  for i = 1, n do values[i] = any_value() end\n"
    "  local list, store = new_list(values, R(2) == 1)\n"
    "  local other, other_store = new_list({ 'o1', 'o2' }, R(2) == 1)\n"
    "  local out = ''\n"
    "  local names = { 'insert', 'remove', 'move', 'concat', 'concat_strings' }\n"
    "  for _ = 1, 4 do\n"
    "    local name = names[R(#names)]\n"
    "    local len = rawlen(store)\n"
    "    out = out .. name .. ': ' .. results(pcall(ops[name], list, len, other, store))\n"
    "    out = out .. ' ' .. contents(store, len) .. contents(other_store, 2) .. log .. '\\n'\n"
    "    log = ''\n"
    "  end\n"
    "  return out\n"
    "end\n"
    /* sort: the result in full, when no two elements are equal or equal
     * elements cannot be told apart. */
    "function D.sort(seed)\n"
    "  math.randomseed(seed)\n"
    "  log = ''\n"
    "  local n = R(0, 40)\n"
    "  local values = sortable(n)\n"
    "  local list = new_list(values, R(2) == 1)\n"
    "  local k, ok, err = R(4)\n"
    "  if k == 1 then ok, err = pcall(table.sort, list)\n"
    "  elseif k == 2 then ok, err = pcall(table.sort, list, function(a, b) return a > b end)\n"
    "  elseif k == 3 then ok, err = pcall(table.sort, list, nil)\n"
    "  else ok, err = pcall(table.sort, list, 'by') end\n"
    "  local out = results(ok, err) .. ' '\n"
    "  for i = 1, n do out = out .. show(values[i]) .. ' ' end\n"
    "  return out\n"
    "end\n"
    /* sort with ties between elements that differ: the keys in order and
     * the same elements, in whatever order among equals. */
    "function D.sort_ties(seed)\n"
    "  math.randomseed(seed)\n"
    "  local n = R(0, 60)\n"
    "  local values, ids = {}, {}\n"
    "  for i = 1, n do values[i] = { key = R(0, 5), id = i } end\n"
    "  local ok, err = pcall(table.sort, values, function(a, b) return a.key < b.key end)\n"
    "  local out = results(ok, err) .. ' '\n"
    "  for i = 1, n do out = out .. values[i].key .. ' '; ids[values[i].id] = true end\n"
    "  for i = 1, n do if not ids[i] then out = out .. 'lost ' .. i end end\n"
    "  return out\n"
    "end\n"
    /* Elements that cannot be compared: both refuse. (Which pair is
     * compared first, and so the message's operand order, is the
     * algorithm's.) */
    "function D.sort_mixed(seed)\n"
    "  math.randomseed(seed)\n"
    "  local values = sortable(R(2, 20))\n"
    "  values[R(#values)] = R(2) == 1 and {} or true\n"
    "  local ok, err = pcall(table.sort, values)\n"
    "  return tostring(ok) .. ' ' .. tostring(err:sub(1, 18) == 'attempt to compare')\n"
    "end\n"
    "return D\n";

TEST(lists_agree_with_stock_lua) {
  lua_pair_t pair;
  CHECK_EQ(lua_pair_open(&pair, driver), 0);
  int differences = 0;
  for (lua_Integer seed = 1; seed <= 4000 && differences < 5; seed++) {
    char what[64];
    snprintf(what, sizeof what, "lists, seed %lld", (long long)seed);
    differences += !lua_pair_agree(&pair, what, "lists", &PAIR_INT(seed), 1);
  }
  CHECK_EQ(differences, 0);
  lua_pair_close(&pair);
}

TEST(sort_agrees_with_stock_lua) {
  lua_pair_t pair;
  CHECK_EQ(lua_pair_open(&pair, driver), 0);
  int differences = 0;
  static const char *const kinds[] = {"sort", "sort_ties", "sort_mixed"};
  for (size_t k = 0; k < TEN_ARRAY_SIZE(kinds); k++) {
    for (lua_Integer seed = 1; seed <= 1000 && differences < 5; seed++) {
      char what[64];
      snprintf(what, sizeof what, "%s, seed %lld", kinds[k], (long long)seed);
      differences += !lua_pair_agree(&pair, what, kinds[k], &PAIR_INT(seed), 1);
    }
  }
  CHECK_EQ(differences, 0);
  lua_pair_close(&pair);
}

/* Runs Lua code in a tenL state; 0 if it ran without error. */
static int run_ours(const char *code) {
  lua_State *L = tenL_newstate(TEN_LUA_MEMORY_LIMIT);
  ten_err_t err = {{0}};
  int rc = luaL_loadstring(L, code);
  if (rc == LUA_OK) {
    rc = tenL_pcall(L, 0, 0, &tenL_config_limit, &err);
  } else {
    snprintf(err.msg, sizeof err.msg, "%s", lua_tostring(L, -1));
  }
  if (rc) fprintf(stderr, "  %s\n", err.msg);
  tenL_close(L);
  return rc;
}

/* An order function that is no order is reported, not followed out of the
 * list; and what sort leaves behind is still the list's elements. */
TEST(sort_refuses_an_invalid_order_function) {
  CHECK_EQ(run_ours("for n = 4, 60 do\n"
                    "  local t = {}\n"
                    "  for i = 1, n do t[i] = i % 7 end\n"
                    "  local ok, err = pcall(table.sort, t, function() return true end)\n"
                    "  assert(not ok and err:find('invalid order function for sorting'), n)\n"
                    "  local count = {}\n"
                    "  for i = 1, n do count[t[i]] = (count[t[i]] or 0) + 1 end\n"
                    "  for v = 0, 6 do assert((count[v] or 0) == n // 7 + (v >= 1 and v <= n % 7 "
                    "and 1 or 0)) end\n"
                    "end\n"),
           0);
}

/* McIlroy's adversary ("A Killer Adversary for Quicksort", 1999) answers
 * each comparison so as to make the pivot the worst it can be: a plain
 * quicksort then compares n^2/2 times. The heapsort that takes over
 * keeps it to O(n log n) comparisons (counted, not timed). */
TEST(sort_of_a_killer_adversary_stays_n_log_n) {
  CHECK_EQ(run_ours("local n = 2000\n"
                    "local gas, solid, candidate, comparisons = n + 1, 0, nil, 0\n"
                    "local value, list = {}, {}\n"
                    "for i = 1, n do value[i] = gas; list[i] = i end\n"
                    "local function freeze(x) value[x] = solid; solid = solid + 1 end\n"
                    "table.sort(list, function(x, y)\n"
                    "  comparisons = comparisons + 1\n"
                    "  if value[x] == gas and value[y] == gas then\n"
                    "    if x == candidate then freeze(x) else freeze(y) end\n"
                    "  end\n"
                    "  if value[x] == gas then candidate = x elseif value[y] == gas then "
                    "candidate = y end\n"
                    "  return value[x] < value[y]\n"
                    "end)\n"
                    "for i = 2, n do assert(value[list[i - 1]] <= value[list[i]]) end\n"
                    "local log2n = math.log(n, 2)\n"
                    "assert(comparisons < 8 * n * log2n, comparisons)\n"),
           0);
}

int main(void) {
  RUN(lists_agree_with_stock_lua);
  RUN(sort_agrees_with_stock_lua);
  RUN(sort_refuses_an_invalid_order_function);
  RUN(sort_of_a_killer_adversary_stays_n_log_n);
  return test_report();
}
