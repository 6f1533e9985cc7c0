-- ws.lua: a minimal WebSocket client (RFC 6455) for specs: handshake over
-- an existing TCP connection, masked frames out, frames in.
local M = {}

local function key()
  local chars = {}
  for i = 1, 16 do chars[i] = string.char(math.random(0, 255)) end
  -- base64 of 16 random bytes
  local b64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  local s = table.concat(chars)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local c1 = (n >> 18) & 63
    local c2 = (n >> 12) & 63
    local c3 = (n >> 6) & 63
    local c4 = n & 63
    out[#out + 1] = b64:sub(c1 + 1, c1 + 1) .. b64:sub(c2 + 1, c2 + 1) ..
      (b and b64:sub(c3 + 1, c3 + 1) or "=") .. (c and b64:sub(c4 + 1, c4 + 1) or "=")
  end
  return table.concat(out)
end

-- Sends the upgrade request; returns the status line's code and headers.
function M.handshake(conn, host, path)
  assert(conn:send(("GET %s HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" ..
    "Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"):format(path or "/ws", host, key())))
  local status = assert(conn:receive("*l"))
  local headers = {}
  while true do
    local line = assert(conn:receive("*l"))
    if line == "" then break end
    local k, v = line:match("^([^:]+):%s*(.*)$")
    headers[k:lower()] = v
  end
  return tonumber(status:match("^HTTP/1%.1 (%d+)")), headers
end

function M.send(conn, opcode, payload)
  local n = #payload
  local head
  if n < 126 then
    head = string.pack(">BB", 0x80 | opcode, 0x80 | n)
  elseif n < 65536 then
    head = string.pack(">BBI2", 0x80 | opcode, 0x80 | 126, n)
  else
    head = string.pack(">BBI8", 0x80 | opcode, 0x80 | 127, n)
  end
  local mask = { math.random(0, 255), math.random(0, 255), math.random(0, 255), math.random(0, 255) }
  local out = {}
  for i = 1, n do out[i] = string.char(payload:byte(i) ~ mask[(i - 1) % 4 + 1]) end
  assert(conn:send(head .. string.char(table.unpack(mask)) .. table.concat(out)))
end

-- Returns opcode, payload of the next frame.
function M.receive(conn)
  local b = assert(conn:receive(2))
  local opcode, len = b:byte(1) & 15, b:byte(2) & 127
  if len == 126 then
    len = string.unpack(">I2", assert(conn:receive(2)))
  elseif len == 127 then
    len = string.unpack(">I8", assert(conn:receive(8)))
  end
  local payload = len > 0 and assert(conn:receive(len)) or ""
  return opcode, payload
end

return M
