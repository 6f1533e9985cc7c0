-- canned.lua: a deliberately simple HTTP peer for specs of the response
-- side of the proxy. It listens on $SOCKET and answers `GET /NAME` with the
-- raw bytes of $CANNED_DIR/NAME, exactly as written (so a spec can send
-- what a well-behaved app never would). A NAME ending in ".close" closes
-- the connection after sending. /health answers 200. One connection at a
-- time, keep-alive otherwise.
local socket = require "socket"
local unix = require "socket.unix"

local path = assert(os.getenv("SOCKET"), "SOCKET is not set")
local dir = assert(os.getenv("CANNED_DIR"), "CANNED_DIR is not set")
os.remove(path)
local server = assert(unix())
assert(server:bind(path))
assert(server:listen(64))

local function read_file(name)
  local f = io.open(dir .. "/" .. name, "rb")
  if not f then return nil end
  local data = f:read("a")
  f:close()
  return data
end

local function serve(conn)
  while true do
    local line = conn:receive("*l")
    if not line then return end
    local name = line:match("^%u+ /([^ ?]*)")
    repeat
      local header = conn:receive("*l")
      if not header then return end
    until header == ""
    if name == "health" then
      conn:send("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    else
      local data = name and read_file(name)
      if not data then
        conn:send("HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n")
      else
        conn:send(data)
        if name:match("%.close$") then return end
      end
    end
  end
end

while true do
  local conn = server:accept()
  if conn then
    conn:settimeout(30)
    serve(conn)
    conn:close()
  end
end
