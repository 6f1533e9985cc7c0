-- tenement.dsl: the words a tenement.lua is written in.
--
-- `settings { ... }`, `service "name" { ... }` and `instances { ... }` only
-- collect what the file declares, with the line each declaration is on.
-- Checking the values against the schema is the C side's job
-- (src/policy/schema.c), so one table drives validation, defaults, the
-- `ten config` dump and the reload diff. Mistakes of shape that only the
-- DSL can see (a service without a body, settings given twice) are raised
-- here, at the user's line.

local M = {}

local NAME_PATTERN = "^[a-z0-9][a-z0-9-]*$"
local MAX_NAME = 63

local function caller_line(level)
  local info = debug.getinfo(level + 1, "l")
  return info and info.currentline or 0
end

local function valid_name(name)
  return type(name) == "string" and #name <= MAX_NAME and name:match(NAME_PATTERN) ~= nil
end
M.valid_name = valid_name

-- Returns env, decl: the environment to run a tenement.lua in (`env` with
-- the DSL's words added; the server passes its sandbox, see
-- src/policy/sandbox.c), and the table its declarations are collected into:
--   decl.settings  = { line = n, fields = {...} } or nil
--   decl.services  = { { name = "api", line = n, fields = {...} }, ... } (file order)
--   decl.instances = { { service = "api", id = "prod", line = n }, ... }
--   decl.instances_line = the line of the first `instances` call, or nil
function M.new(env)
  local decl = { services = {}, instances = {} }
  local by_name = {}
  local pending = {} -- services named but never given a body

  env = env or setmetatable({}, { __index = _G }) -- outside the server: specs

  function env.settings(fields)
    local line = caller_line(2)
    if type(fields) ~= "table" then
      error("settings expects a table: settings { domain = ..., port = ... }", 2)
    end
    if decl.settings then
      error(("settings given twice (first at line %d)"):format(decl.settings.line), 2)
    end
    decl.settings = { line = line, fields = fields }
  end

  function env.service(name)
    local line = caller_line(2)
    if type(name) ~= "string" then
      error("service expects a name: service \"api\" { ... }", 2)
    end
    if not valid_name(name) then
      error(("service name %q must be 1-%d characters of a-z, 0-9 and '-', starting with a letter or digit")
        :format(name, MAX_NAME), 2)
    end
    if by_name[name] then
      error(("service %q is defined twice (first at line %d)"):format(name, by_name[name].line), 2)
    end
    local entry = { name = name, line = line }
    by_name[name] = entry
    pending[name] = entry
    return function(fields)
      if type(fields) ~= "table" then
        error(("service %q expects a table: service %q { command = ... }"):format(name, name), 2)
      end
      entry.fields = fields
      pending[name] = nil
      decl.services[#decl.services + 1] = entry
    end
  end

  function env.instances(list)
    local line = caller_line(2)
    if type(list) ~= "table" then
      error("instances expects a table: instances { api = { \"prod\" } }", 2)
    end
    decl.instances_line = decl.instances_line or line
    -- Sorted so the start order does not depend on hash order.
    local services = {}
    for svc in pairs(list) do
      if type(svc) ~= "string" then
        error("instances: keys must be service names, e.g. instances { api = { \"prod\" } }", 2)
      end
      services[#services + 1] = svc
    end
    table.sort(services)
    for _, svc in ipairs(services) do
      local ids = list[svc]
      if type(ids) == "string" then ids = { ids } end
      if type(ids) ~= "table" then
        error(("instances: %s must be a list of ids, e.g. %s = { \"prod\" }"):format(svc, svc), 2)
      end
      for i, id in ipairs(ids) do
        if not valid_name(id) then
          error(("instances: %s[%d] = %q is not a valid id (1-%d characters of a-z, 0-9 and '-')")
            :format(svc, i, tostring(id), MAX_NAME), 2)
        end
        decl.instances[#decl.instances + 1] = { service = svc, id = id, line = line }
      end
    end
  end

  function decl.unfinished()
    for name, entry in pairs(pending) do
      return ("service %q has no body: write service %q { command = ... }"):format(name, name),
        entry.line
    end
  end

  return env, decl
end

-- The line a key is written on, searching the file from a block's first line
-- on; falls back to the block's line. Used so an error about a key points at
-- that key rather than at the start of its block. Only keys directly inside
-- the block count (not `port` inside `env = { port = ... }`), and comments
-- and string contents are ignored.
function M.key_line(source, block_line, key)
  if type(source) ~= "string" or type(key) ~= "string" then return block_line end
  local pattern = "^" .. key:gsub("%p", "%%%0") .. "%s*=[^=]"
  local n, depth, opened = 0, 0, false
  for text in (source .. "\n"):gmatch("(.-)\r?\n") do
    n = n + 1
    if n >= block_line then
      text = text:gsub('"[^"]*"', '""'):gsub("'[^']*'", "''"):gsub("%-%-.*$", "") .. " "
      for i = 1, #text do
        local ch = text:sub(i, i)
        if ch == "{" then
          depth, opened = depth + 1, true
        elseif ch == "}" then
          depth = depth - 1
          if opened and depth == 0 then return block_line end
        elseif depth == 1 and (i == 1 or not text:sub(i - 1, i - 1):match("[%w_]"))
          and text:find(pattern, i) then
          return n
        end
      end
    end
  end
  return block_line
end

return M
