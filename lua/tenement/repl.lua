-- tenement.repl: the Lua side of `ten repl`, evaluated inside the server.
--
-- new(primitives, env) builds the environment REPL code runs in: `env`
-- (the server passes its sandbox, the same as tenement.lua gets: see
-- README, "Lua inside the server"), a `ten` table for driving the server,
-- and a `print` that is captured and sent back. compile(env, code) turns a
-- chunk into a function; results(...) formats what it returned.
-- format(value) prints values readably: tables as tables, keys sorted,
-- cycles and depth bounded.
--
-- What a chunk can use: the `ten` table below; print; the base functions
-- (pairs, pcall, tostring, load of text, ...); string, table, math, utf8,
-- coroutine; os.clock/date/difftime/getenv/time; debug.traceback. Not
-- io, os.exit and the rest of os, require, dofile, loadfile, debug's other
-- functions, collectgarbage but "collect", "count", "step", "isrunning":
-- touching them raises "<name> is not available". Variables persist
-- between chunks. Each chunk may run 2 s and the session hold 64 MiB
-- (src/policy/lua.h); past that the chunk ends with an error and the
-- server goes on.

local M = {}

local MAX_DEPTH = 6
local MAX_ITEMS = 200

local function is_identifier(s)
  return type(s) == "string" and s:match("^[%a_][%w_]*$") ~= nil
end

local function sorted_keys(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys, function(a, b)
    local ta, tb = type(a), type(b)
    if ta ~= tb then return ta < tb end
    if ta == "number" or ta == "string" then return a < b end
    return tostring(a) < tostring(b)
  end)
  return keys
end

local function format(value, indent, seen, depth)
  local t = type(value)
  if t == "string" then return ("%q"):format(value) end
  if t ~= "table" then return tostring(value) end
  if seen[value] then return "<cycle>" end
  if depth >= MAX_DEPTH then return "{...}" end
  seen[value] = true
  local keys = sorted_keys(value)
  if #keys == 0 then
    seen[value] = nil
    return "{}"
  end
  local pad = indent .. "  "
  local lines, n = {}, #value
  for i, k in ipairs(keys) do
    if i > MAX_ITEMS then
      lines[#lines + 1] = pad .. ("... (%d more)"):format(#keys - MAX_ITEMS)
      break
    end
    local v = format(value[k], pad, seen, depth + 1)
    if math.type(k) == "integer" and k >= 1 and k <= n then
      lines[#lines + 1] = pad .. v
    elseif is_identifier(k) then
      lines[#lines + 1] = pad .. k .. " = " .. v
    else
      lines[#lines + 1] = pad .. "[" .. format(k, pad, seen, depth + 1) .. "] = " .. v
    end
  end
  seen[value] = nil
  return "{\n" .. table.concat(lines, ",\n") .. "\n" .. indent .. "}"
end

function M.format(value)
  return format(value, "", {}, 0)
end

-- primitives: C functions from the server (ctl/repl.c), all taking and
-- returning plain values; errors are raised with a readable message.
function M.new(primitives, env)
  local cjson = require "cjson"
  env = env or setmetatable({}, { __index = _G }) -- outside the server: specs
  local output = {}

  local function decode(json)
    local value = cjson.decode(json)
    -- JSON null becomes nil, so `inst.pid == nil` reads naturally, and
    -- whole numbers are integers (cjson decodes every number as a float).
    local function strip(v)
      if v == cjson.null then return nil end
      if math.type(v) == "float" and math.tointeger(v) then return math.tointeger(v) end
      if type(v) == "table" then
        for k, x in pairs(v) do v[k] = strip(x) end
      end
      return v
    end
    return strip(value)
  end

  local ten = {}
  function ten.ps() return decode(primitives.ps()) end
  function ten.instance(key) return decode(primitives.instance(key)) end
  function ten.spawn(service, id) return decode(primitives.spawn(service, id)) end
  function ten.stop(key) return decode(primitives.stop(key)) end
  function ten.restart(key) return decode(primitives.restart(key)) end
  function ten.weight(key, n) return decode(primitives.weight(key, n)) end
  function ten.config() return decode(primitives.config()) end
  function ten.reload() return primitives.reload() end
  env.ten = ten

  env.print = function(...)
    local parts = {}
    for i = 1, select("#", ...) do
      local v = select(i, ...)
      parts[i] = type(v) == "string" and v or M.format(v)
    end
    output[#output + 1] = table.concat(parts, "\t")
  end

  return env, output
end

-- Compiles code as an expression first (so `1 + 1` shows 2), then as a
-- statement. Returns the function, or nil, message, incomplete.
function M.compile(env, code)
  local fn = load("return " .. code, "=repl", "t", env)
  if fn then return fn end
  local err
  fn, err = load(code, "=repl", "t", env)
  if fn then return fn end
  return nil, err, err:match("<eof>$") ~= nil
end

-- Formats the values a chunk returned, one per line; "" for none.
function M.results(...)
  local n = select("#", ...)
  local parts = {}
  for i = 1, n do parts[i] = M.format((select(i, ...))) end
  return table.concat(parts, "\n")
end

return M
