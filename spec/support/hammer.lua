-- hammer.lua PORT STOP_FILE OUT_FILE HOST...: load for specs, as a process
-- of its own so it runs while the spec does something else (busted is one
-- thread). GETs "/" on each HOST in turn, one connection per request, until
-- STOP_FILE exists; then writes "status count" lines to OUT_FILE ("error"
-- counts requests that got no response) and exits 0.
-- Start it with ten.hammer (spec/support/ten.lua).
local socket = require "socket"

local port, stop_file, out_file = tonumber(arg[1]), arg[2], arg[3]
local hosts = { table.unpack(arg, 4) }
assert(port and stop_file and out_file and #hosts > 0,
  "usage: hammer.lua PORT STOP_FILE OUT_FILE HOST...")

local function stopped()
  local f = io.open(stop_file, "r")
  if f then f:close() end
  return f ~= nil
end

local function get(host)
  local conn = socket.tcp()
  conn:settimeout(10)
  local ok = conn:connect("127.0.0.1", port)
  if not ok then conn:close() return "error" end
  conn:send(("GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"):format(host))
  local line = conn:receive("*l")
  conn:receive("*a")
  conn:close()
  return line and line:match("^HTTP/%d%.%d (%d%d%d)") or "error"
end

local counts, i = {}, 0
while not stopped() do
  i = i + 1
  local status = get(hosts[(i - 1) % #hosts + 1])
  counts[status] = (counts[status] or 0) + 1
end
local out = assert(io.open(out_file, "w"))
for status, n in pairs(counts) do out:write(status, " ", n, "\n") end
out:close()
