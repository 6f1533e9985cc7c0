-- Hostile input: a barrage of malformed and oversized requests, then proof
-- that ten still serves, holds no leftover connection or request, and (in
-- the ASan build) leaked nothing by the time it exits.
local ten = require "ten"
local tt = require "tentest"
local socket = require "socket"

local function garbage(seed, n)
  local out = {}
  for i = 1, n do
    seed = (seed * 1103515245 + 12345) % 2147483648
    out[i] = string.char(seed % 256)
  end
  return table.concat(out)
end

local payloads = {
  garbage(1, 100), garbage(2, 5000), garbage(3, 70000),
  "\0\0\0\0\r\n\r\n",
  "GET / HTTP/1.1\r\n\r\n",
  "GET / HTTP/9.9\r\nHost: a.hello.localhost\r\n\r\n",
  "BREW / HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n",
  "GET " .. string.rep("/a", 40000) .. " HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n",
  "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n" .. string.rep("X-A: b\r\n", 500) .. "\r\n",
  "GET / HTTP/1.1\r\nHost: " .. string.rep("a", 300) .. ".hello.localhost\r\n\r\n",
  "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 99999999999999999999\r\n\r\n",
  "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff\r\n",
  "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
  "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nX: \1\2\3\r\n\r\n",
  "CONNECT a.hello.localhost:443 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n",
  "GET /ws HTTP/1.1\r\nHost: a.hello.localhost\r\nConnection: Upgrade\r\nUpgrade: nonsense\r\n\r\n" .. garbage(4, 1000),
  string.rep("GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n", 2000),
  "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n", -- then the client vanishes
}

describe("hostile input", function()
  it("survives a barrage and keeps serving with nothing left over", function()
    local server = ten.start { config = [[
      settings { header_timeout = 1, client_timeout = 1 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "a" } }
    ]] }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:a", "ready"))
    local rss_before = server:rss_kb()

    for round = 1, 3 do
      for i, p in ipairs(payloads) do
        local conn = ten.connect(server.port, 5)
        conn:send(p)
        if (i + round) % 2 == 0 then
          conn:receive("*a") -- read whatever ten answers until it closes
        end
        conn:close() -- half of them hang up without reading
      end
    end

    -- Normal traffic is unaffected.
    for _ = 1, 20 do
      local resp = server:get("a.hello.localhost")
      assert.are.equal(200, resp.status)
    end
    local echo = server:request { host = "a.hello.localhost", path = "/echo", method = "POST",
      body = string.rep("e", 100000) }
    assert.are.equal(100000, #echo.body)

    -- Nothing lingers: only the connection asking is open, nothing in flight.
    local health = ten.wait_until(10000, function()
      local h = ten.json(server:get("localhost", "/health"))
      if h.http.connections_open == 1 and h.http.requests_in_flight == 1 then return h end
    end)
    assert.truthy(health, "connections or requests were left open")
    assert.are.equal(0, server:instance("hello:a").active)
    if not ten.sanitized then
      local grown = server:rss_kb() - rss_before
      assert.is_true(grown < 8 * 1024, ("RSS grew by %d KiB"):format(grown))
    end

    -- And it exits cleanly (under ASan: with no leak reported).
    local how, code = server:stop("TERM")
    assert.are.equal("exited", how)
    assert.are.equal(0, code)
  end)
end)
