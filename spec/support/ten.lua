-- spec/support/ten.lua: drive a real `ten` from busted specs.
--
-- Every server runs the real binary on a temp dir and a free loopback port,
-- with the real example app. `ten.start{...}` returns a server; call
-- `server:cleanup()` in a `finally` or teardown: it kills whatever is still
-- running (by pid), fails the spec if a sanitizer reported anything, and
-- removes the temp dir.

local tt = require "tentest"
local socket = require "socket"

local M = {}

M.bin = assert(os.getenv("TEN_BIN"), "TEN_BIN is not set (run the specs through ctest)")
M.hello = assert(os.getenv("TEN_HELLO_BIN"), "TEN_HELLO_BIN is not set")
M.source_dir = os.getenv("TEN_SOURCE_DIR") or "."
M.sanitized = os.getenv("TEN_SANITIZED") == "1"

tt.signal_ignore("PIPE")

local Server = {}
Server.__index = Server

local function read(path)
  return tt.read_file(path) or ""
end

local function wait_until(timeout_ms, fn)
  local deadline = tt.now_ms() + timeout_ms
  repeat
    local v = fn()
    if v then return v end
    tt.sleep(10)
  until tt.now_ms() > deadline
  return nil
end
M.wait_until = wait_until

-- Fails if a sanitizer wrote a report into the text.
function M.assert_no_sanitizer_report(text, what)
  for _, marker in ipairs { "ERROR: AddressSanitizer", "ERROR: LeakSanitizer", "runtime error:" } do
    if text:find(marker, 1, true) then
      error(("%s: sanitizer report:\n%s"):format(what, text), 2)
    end
  end
end

-- opts.config: text of a tenement.lua (written to the temp dir), or nil
-- opts.args: extra arguments to `ten serve`; opts.env: extra environment;
-- opts.data_dir: reuse a data dir (default: a new one in the temp dir)
function M.start(opts)
  opts = opts or {}
  local dir = assert(tt.mkdtemp("ten-spec-"))
  local self = setmetatable({ dir = dir, data_dir = opts.data_dir or (dir .. "/data"),
    stdout = dir .. "/stdout", stderr = dir .. "/stderr" }, Server)
  if opts.config then
    self.config_path = dir .. "/tenement.lua"
    assert(tt.write_file(self.config_path, opts.config))
  end
  local argv = { M.bin, "serve", "--port", "0", "--listen", "127.0.0.1", "--data-dir", self.data_dir }
  if self.config_path then
    argv[#argv + 1] = "--config"
    argv[#argv + 1] = self.config_path
  end
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local env = { HELLO_BIN = M.hello }
  for k, v in pairs(opts.env or {}) do env[k] = v end
  self.pid = assert(tt.spawn { argv = argv, env = env, env_inherit = true, stdout = self.stdout,
    stderr = self.stderr })
  local port = wait_until(15000, function()
    local p = read(self.stdout):match("listening on http://[%d%.]+:(%d+)")
    if p then return tonumber(p) end
    if not tt.alive(self.pid) then return false end
  end)
  if not port then
    local how, code = tt.wait(self.pid, 1000)
    local out = read(self.stdout) .. read(self.stderr)
    self:cleanup()
    error(("ten serve did not start (%s %s):\n%s"):format(tostring(how), tostring(code), out), 2)
  end
  self.port = port
  return self
end

-- Busted keeps one `finally` per test (a second one replaces the first),
-- so a test with several things to undo registers a list once:
--   local undo = ten.cleanups(); finally(function() undo:run() end)
--   undo:add(function() server:cleanup() end)
-- run() undoes in reverse order, all of them, then raises the first error.
local Cleanups = {}
Cleanups.__index = Cleanups
function Cleanups:add(fn) self[#self + 1] = fn end
function Cleanups:run()
  local first
  for i = #self, 1, -1 do
    local ok, err = pcall(self[i])
    if not ok and not first then first = err end
    self[i] = nil
  end
  if first then error(first, 0) end
end
function M.cleanups() return setmetatable({}, Cleanups) end

-- Runs the `ten` CLI against this server's data dir.
-- Returns exit code, stdout, stderr.
function Server:ten(...)
  local args = { "--data-dir", self.data_dir }
  for _, a in ipairs { ... } do args[#args + 1] = a end
  return M.run(args)
end

-- Runs `ten ARGS...`; returns exit code, stdout, stderr.
function M.run(args, env)
  local dir = assert(tt.mkdtemp("ten-cli-"))
  local argv = { M.bin }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local pid = assert(tt.spawn { argv = argv, env = env or {}, env_inherit = true,
    stdout = dir .. "/out", stderr = dir .. "/err" })
  local how, code = tt.wait(pid, 60000)
  if not how then
    tt.kill(pid, "KILL")
    tt.wait(pid, 5000)
    tt.rm_rf(dir)
    error("ten " .. table.concat(args, " ") .. " did not finish")
  end
  local out, err = read(dir .. "/out"), read(dir .. "/err")
  tt.rm_rf(dir)
  M.assert_no_sanitizer_report(err, "ten " .. (args[1] or ""))
  if how == "signaled" then code = 128 + code end
  return code, out, err
end

-- JSON as Lua values specs can compare: null becomes nil, whole numbers
-- become integers (cjson decodes every number as a float).
local function clean(v)
  local cjson = require "cjson"
  if v == cjson.null then return nil end
  if math.type(v) == "float" and math.tointeger(v) then return math.tointeger(v) end
  if type(v) == "table" then
    local out = {}
    for k, x in pairs(v) do out[k] = clean(x) end
    return out
  end
  return v
end

function Server:ps()
  local code, out, err = self:ten("ps", "--json")
  assert(code == 0, "ten ps failed: " .. err)
  local list = clean(require("cjson").decode(out))
  local by_key = {}
  for _, inst in ipairs(list) do by_key[inst.service .. ":" .. inst.id] = inst end
  return list, by_key
end

function Server:instance(key)
  local _, by_key = self:ps()
  return by_key[key]
end

-- Waits until instance `key` is in `state` (or fn(inst) is true).
function Server:wait_state(key, state, timeout_ms)
  return wait_until(timeout_ms or 15000, function()
    local inst = self:instance(key)
    if inst and inst.state == state then return inst end
  end)
end

function Server:rss_kb()
  return tt.rss_kb(self.pid)
end

-- Sends a signal and waits for the exit: returns how ("exited"/"signaled"), code.
function Server:stop(sig, timeout_ms)
  tt.kill(self.pid, sig or "TERM")
  local how, code = tt.wait(self.pid, timeout_ms or 60000)
  if how then self.exited = true end
  return how, code
end

function Server:log()
  return read(self.stdout) .. read(self.stderr)
end

function Server:cleanup()
  if not self.exited and self.pid then
    -- A graceful stop first: ten removes what it made for its instances
    -- (cgroups, mounts); SIGKILL only if it does not end in time.
    tt.kill(self.pid, "TERM")
    local how, why = tt.wait(self.pid, 20000)
    if not how and why == "timeout" then
      tt.kill(self.pid, "KILL")
      tt.wait(self.pid, 10000)
    end
    self.exited = true
  end
  local stderr = read(self.stderr)
  tt.rm_rf(self.dir)
  M.assert_no_sanitizer_report(stderr, "ten serve")
end

-- ---------------------------------------------------------------- HTTP

local function read_chunked(conn)
  local parts = {}
  while true do
    local line = assert(conn:receive("*l"))
    local size = tonumber(line:match("^%x+"), 16)
    if not size then error("bad chunk size line: " .. line) end
    if size == 0 then
      repeat line = assert(conn:receive("*l")) until line == ""
      return table.concat(parts)
    end
    parts[#parts + 1] = assert(conn:receive(size))
    assert(conn:receive("*l"))
  end
end

-- Reads one response from conn. method is needed to know HEAD has no body.
function M.read_response(conn, method)
  local status_line, err = conn:receive("*l")
  if not status_line then return nil, err end
  local version, status = status_line:match("^HTTP/(%d%.%d) (%d%d%d)")
  if not status then return nil, "bad status line: " .. status_line end
  local headers = {}
  while true do
    local line = assert(conn:receive("*l"))
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.-)%s*$")
    name = name:lower()
    headers[name] = headers[name] and (headers[name] .. ", " .. value) or value
  end
  status = tonumber(status)
  local body = ""
  if method == "HEAD" or status == 204 or status == 304 or status < 200 then
    body = ""
  elseif headers["transfer-encoding"] and headers["transfer-encoding"]:lower():find("chunked") then
    body = read_chunked(conn)
  elseif headers["content-length"] then
    local n = tonumber(headers["content-length"])
    body = n > 0 and assert(conn:receive(n)) or ""
  else
    local rest, e, partial = conn:receive("*a")
    body = rest or partial or ""
  end
  return { status = status, headers = headers, body = body, version = version }
end

function M.connect(port, timeout)
  local conn = assert(socket.tcp())
  conn:settimeout(timeout or 30)
  assert(conn:connect("127.0.0.1", port))
  return conn
end

-- One request on a new connection (or on opts.conn). opts: method, path,
-- host, headers (table), body. Returns the response table.
function M.request(port, opts)
  local conn = opts.conn or M.connect(port)
  local method = opts.method or "GET"
  local lines = { ("%s %s HTTP/1.1"):format(method, opts.path or "/") }
  lines[#lines + 1] = "Host: " .. (opts.host or "localhost")
  for k, v in pairs(opts.headers or {}) do lines[#lines + 1] = k .. ": " .. v end
  if opts.body and not (opts.headers and (opts.headers["Transfer-Encoding"] or opts.headers["Content-Length"])) then
    lines[#lines + 1] = "Content-Length: " .. #opts.body
  end
  if not opts.conn and not opts.keep then lines[#lines + 1] = "Connection: close" end
  assert(conn:send(table.concat(lines, "\r\n") .. "\r\n\r\n" .. (opts.body or "")))
  local resp, err = M.read_response(conn, method)
  if not opts.conn and not opts.keep then conn:close() end
  if not resp then error("no response: " .. tostring(err), 2) end
  return resp, conn
end

function Server:request(opts)
  return M.request(self.port, opts)
end

function Server:get(host, path)
  return M.request(self.port, { host = host, path = path or "/" })
end

-- The JSON body of a response (null -> nil, whole numbers -> integers).
function M.json(resp)
  return clean(require("cjson").decode(resp.body))
end

-- A config for the example app: extra is Lua appended to the service block.
function M.hello_config(opts)
  opts = opts or {}
  return ([[
settings { domain = %q }
service "hello" {
  command = os.getenv("HELLO_BIN"),
  health = "/health",
  restart = %q,
  backoff_initial = 0.05,
  %s
}
%s
]]):format(opts.domain or "localhost", opts.restart or "on-failure", opts.service or "",
    opts.extra or "")
end

-- ---------------------------------------------------------------- processes

-- Background load: a separate process GETs each host in turn until stopped.
-- ten.hammer(port, { "a.hello.localhost", ... }) returns h; h:stop() stops
-- it and returns { [status or "error"] = count }. Register h:stop() as a
-- cleanup too (stopping twice is fine).
local Hammer = {}
Hammer.__index = Hammer
function M.hammer(port, hosts)
  local dir = assert(tt.mkdtemp("ten-hammer-"))
  local argv = { os.getenv("LUA54") or "lua5.4", M.source_dir .. "/spec/support/hammer.lua",
    tostring(port), dir .. "/stop", dir .. "/out" }
  for _, h in ipairs(hosts) do argv[#argv + 1] = h end
  local pid = assert(tt.spawn { argv = argv, env = {}, env_inherit = true, stderr = dir .. "/err" })
  return setmetatable({ pid = pid, dir = dir }, Hammer)
end
function Hammer:stop()
  if self.counts then return self.counts end
  tt.write_file(self.dir .. "/stop", "")
  local how = tt.wait(self.pid, 30000)
  if not how then
    tt.kill(self.pid, "KILL")
    tt.wait(self.pid, 5000)
  end
  self.counts = {}
  for status, n in (read(self.dir .. "/out")):gmatch("(%w+) (%d+)") do self.counts[status] = tonumber(n) end
  local err = read(self.dir .. "/err")
  tt.rm_rf(self.dir)
  if not how then error("the hammer did not stop") end
  if err ~= "" then error("the hammer failed: " .. err) end
  return self.counts
end

-- Every live process started for an instance of a `ten` with this data dir,
-- wherever it is in the process tree now (their environment says
-- TENEMENT_DATA_DIR=data_dir; a process that cleared its environment is not
-- found). Sorted pids.
function M.instance_processes(data_dir)
  local marker = "TENEMENT_DATA_DIR=" .. data_dir .. "\0"
  local pids = {}
  local ls = assert(io.popen("exec ls /proc"))
  for name in ls:lines() do
    local pid = tonumber(name)
    if pid and tt.alive(pid) then
      local environ = tt.read_file("/proc/" .. pid .. "/environ")
      if environ and ("\0" .. environ):find("\0" .. marker, 1, true) then pids[#pids + 1] = pid end
    end
  end
  ls:close()
  table.sort(pids)
  return pids
end

-- Kills (SIGKILL) every process M.instance_processes finds: the cleanup for
-- specs whose subject is processes that escaped ten.
function M.kill_instance_processes(data_dir)
  for _, pid in ipairs(M.instance_processes(data_dir)) do tt.kill(pid, "KILL") end
end

return M
