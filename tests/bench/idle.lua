-- tests/bench/idle.lua: hold N idle keep-alive connections open on a proxy.
--
--   lua5.4 idle.lua HOST PORT VHOST N
--
-- Opens N connections to HOST:PORT one after another, sends one
-- `GET / HTTP/1.1` (Host: VHOST) on each and reads the whole response
-- (Content-Length or chunked), keeping the connection open.  Then it prints
--
--   ready N
--
-- and waits for a line on stdin.  On "check" it sends one more GET on every
-- connection and prints "checked alive=A dead=D" (a connection the proxy has
-- dropped in the meantime counts as dead); on EOF or anything else it just
-- closes everything.  Errors go to stderr as "idle: ..." with exit status 1.
--
-- Needs lua-socket (Debian: lua-socket; the project's .ci/deps installs it).
-- Sockets are blocking with a timeout; luasocket waits with poll(2), so fds
-- above FD_SETSIZE are fine.

local socket = require "socket"

local host, port, vhost, n = arg[1], tonumber(arg[2]), arg[3], tonumber(arg[4])
if not (host and port and vhost and n) then
  io.stderr:write("usage: lua5.4 idle.lua HOST PORT VHOST N\n")
  os.exit(2)
end

local TIMEOUT = 15
local request = ("GET / HTTP/1.1\r\nHost: %s\r\nUser-Agent: ten-bench-idle\r\n\r\n"):format(vhost)

local function fail(fmt, ...)
  io.stderr:write("idle: " .. fmt:format(...) .. "\n")
  os.exit(1)
end

-- One request/response on connection c.  Returns the status code, or nil and
-- a reason.
local function get(c)
  local ok, err = c:send(request)
  if not ok then return nil, "send: " .. tostring(err) end
  local line
  line, err = c:receive("*l")
  if not line then return nil, "status line: " .. tostring(err) end
  local status = tonumber(line:match("^HTTP/1%.%d (%d%d%d)"))
  if not status then return nil, "bad status line: " .. line end
  local len, chunked, close = nil, false, false
  while true do
    local h
    h, err = c:receive("*l")
    if not h then return nil, "headers: " .. tostring(err) end
    if h == "" then break end
    local k, v = h:match("^([^:]+):%s*(.-)%s*$")
    if k then
      k = k:lower()
      if k == "content-length" then len = tonumber(v)
      elseif k == "transfer-encoding" and v:lower():find("chunked", 1, true) then chunked = true
      elseif k == "connection" and v:lower():find("close", 1, true) then close = true
      end
    end
  end
  if chunked then
    while true do
      local sz
      sz, err = c:receive("*l")
      if not sz then return nil, "chunk size: " .. tostring(err) end
      local size = tonumber(sz:match("^%x+"), 16)
      if not size then return nil, "bad chunk size: " .. sz end
      if size == 0 then
        repeat  -- trailers up to the empty line
          sz, err = c:receive("*l")
          if not sz then return nil, "trailer: " .. tostring(err) end
        until sz == ""
        break
      end
      local _, e = c:receive(size + 2)
      if e then return nil, "chunk: " .. tostring(e) end
    end
  elseif len then
    if len > 0 then
      local _, e = c:receive(len)
      if e then return nil, "body: " .. tostring(e) end
    end
  else
    return nil, "response without Content-Length or chunked body"
  end
  if close then return nil, "proxy answered Connection: close" end
  return status
end

local conns = {}
for i = 1, n do
  local c = socket.tcp()
  c:settimeout(TIMEOUT)
  local ok, err = c:connect(host, port)
  if not ok then fail("connection %d/%d: connect: %s", i, n, tostring(err)) end
  local status
  status, err = get(c)
  if status ~= 200 then
    fail("connection %d/%d: %s", i, n, status and ("status " .. status) or err)
  end
  conns[i] = c
end

io.stdout:write(("ready %d\n"):format(n))
io.stdout:flush()

local cmd = io.read("l")
if cmd == "check" then
  local alive, dead, first = 0, 0, nil
  for i, c in ipairs(conns) do
    local status, err = get(c)
    if status == 200 then
      alive = alive + 1
    else
      dead = dead + 1
      first = first or ("connection %d: %s"):format(i, status and ("status " .. status) or err)
    end
  end
  io.stdout:write(("checked alive=%d dead=%d%s\n"):format(alive, dead,
    first and (" first: " .. first) or ""))
  io.stdout:flush()
end
for _, c in ipairs(conns) do c:close() end
