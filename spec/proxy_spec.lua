-- The proxy's HTTP/1.1 correctness, limits and timeouts, through the real
-- binary: the example app for the request side, a canned-response peer
-- (spec/support/canned.lua) for responses no well-behaved app would send.
local ten = require "ten"
local tt = require "tentest"
local ws = require "ws"
local socket = require "socket"

local CANNED = "lua5.4 " .. ten.source_dir .. "/spec/support/canned.lua"

-- Reads until the peer closes; true if it closed (EOF or reset) in time.
local function closed_by_peer(conn, timeout)
  conn:settimeout(timeout or 10)
  while true do
    local data, err, partial = conn:receive(4096)
    if not data then return err == "closed" or (err ~= "timeout" and err ~= nil), partial end
  end
end

local function fd_count(pid)
  local n = 0
  local p = io.popen("ls /proc/" .. pid .. "/fd 2>/dev/null")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

describe("proxy", function()
  local server, canned_dir

  setup(function()
    canned_dir = assert(tt.mkdtemp("ten-canned-"))
    local responses = {
      ["no-length.close"] = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end",
      ["early-hints"] = "HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" ..
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfinal",
      ["trailers"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" ..
        "5\r\nhello\r\n0\r\nX-Sum: 42\r\n\r\n",
      ["hop"] = "HTTP/1.1 200 OK\r\nConnection: X-Secret, keep-alive\r\nX-Secret: 1\r\n" ..
        "Keep-Alive: timeout=5\r\nProxy-Authenticate: Basic\r\nX-Normal: yes\r\nContent-Length: 2\r\n\r\nok",
      ["garbage.close"] = "this is not http\r\n\r\n",
      ["cl-te.close"] = "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
      ["cut.close"] = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly ten b",
      ["bad-chunk.close"] = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n",
    }
    for name, data in pairs(responses) do assert(tt.write_file(canned_dir .. "/" .. name, data)) end
    server = ten.start { env = { CANNED_DIR = canned_dir }, config = ([[
      settings {
        max_header_size = 4096, max_body_size = "200m", max_connections = 20,
        header_timeout = 0.5, keepalive_timeout = 1, upstream_timeout = 0.5,
      }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      service "canned" { command = %q, health = "/health" }
      instances { hello = { "a" }, canned = { "c" } }
    ]]):format(CANNED) }
    assert.truthy(server:wait_state("hello:a", "ready"))
    assert.truthy(server:wait_state("canned:c", "ready"))
  end)

  teardown(function()
    if server then server:cleanup() end
    if canned_dir then tt.rm_rf(canned_dir) end
  end)

  local function get(host, path, opts)
    opts = opts or {}
    opts.host, opts.path = host, path
    return server:request(opts)
  end

  describe("responses", function()
    it("never forwards a chunked body whose framing is bad, and cuts the connection", function()
      local conn = ten.connect(server.port)
      conn:send("GET /bad-chunk.close HTTP/1.1\r\nHost: c.canned.localhost\r\n\r\n")
      local closed, partial = closed_by_peer(conn)
      conn:close()
      assert.is_true(closed)
      assert.is_nil((partial or ""):find("abc", 1, true))
    end)

    it("passes a body delimited by the connection close, then closes", function()
      local resp = get("c.canned.localhost", "/no-length.close")
      assert.are.equal(200, resp.status)
      assert.are.equal("until the end", resp.body)
      assert.are.equal("close", resp.headers.connection)
    end)

    it("passes 1xx responses through before the final one", function()
      local conn = ten.connect(server.port)
      conn:send("GET /early-hints HTTP/1.1\r\nHost: c.canned.localhost\r\n\r\n")
      local hints = ten.read_response(conn)
      assert.are.equal(103, hints.status)
      assert.are.equal("</a.css>; rel=preload", hints.headers.link)
      local final = ten.read_response(conn)
      assert.are.equal(200, final.status)
      assert.are.equal("final", final.body)
      conn:close()
    end)

    it("forwards chunked bodies with their trailers", function()
      local conn = ten.connect(server.port)
      conn:send("GET /trailers HTTP/1.1\r\nHost: c.canned.localhost\r\nConnection: close\r\n\r\n")
      local raw = conn:receive("*a")
      conn:close()
      assert.matches("5\r\nhello\r\n0\r\nX%-Sum: 42\r\n\r\n$", raw)
    end)

    it("drops hop-by-hop response headers and the ones Connection names", function()
      local resp = get("c.canned.localhost", "/hop")
      assert.are.equal(200, resp.status)
      assert.are.equal("yes", resp.headers["x-normal"])
      assert.is_nil(resp.headers["x-secret"])
      assert.is_nil(resp.headers["keep-alive"])
      assert.is_nil(resp.headers["proxy-authenticate"])
    end)

    it("answers an invalid response with 502", function()
      assert.are.equal(502, get("c.canned.localhost", "/garbage.close").status)
      assert.are.equal(502, get("c.canned.localhost", "/cl-te.close").status)
    end)

    it("cuts the client off when the instance dies mid-response", function()
      local conn = ten.connect(server.port)
      conn:send("GET /cut.close HTTP/1.1\r\nHost: c.canned.localhost\r\n\r\n")
      local status = conn:receive("*l")
      assert.matches("200", status)
      local data, err, partial = conn:receive("*a")
      local got = (data or partial or ""):match("\r\n\r\n(.*)$") or ""
      assert.is_true(#got < 1000, "a cut response must not look complete")
      conn:close()
    end)
  end)

  describe("requests", function()
    it("honours Expect: 100-continue end to end", function()
      local conn = ten.connect(server.port)
      conn:send("POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nExpect: 100-continue\r\n" ..
        "Content-Length: 11\r\n\r\n")
      local interim = ten.read_response(conn)
      assert.are.equal(100, interim.status)
      conn:send("hello world")
      local resp = ten.read_response(conn)
      assert.are.equal(200, resp.status)
      assert.are.equal("hello world", resp.body)
      conn:close()
    end)

    it("re-frames what it forwards: its own Content-Length, or chunked with its own chunks", function()
      local h = ten.json(server:request { host = "a.hello.localhost", path = "/echo", method = "POST",
        headers = { ["Content-Length"] = "005", ["X-Echo-Headers"] = "1" }, body = "hello" })
      assert.are.equal("5", h["content-length"])
      assert.is_nil(h["transfer-encoding"])
      h = ten.json(server:request { host = "a.hello.localhost", path = "/echo", method = "POST",
        headers = { ["Transfer-Encoding"] = "chunked", ["X-Echo-Headers"] = "1" },
        body = "5;ext=\"x\"\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n" })
      assert.are.equal("chunked", h["transfer-encoding"])
      assert.is_nil(h["content-length"])
      local resp = server:request { host = "a.hello.localhost", path = "/echo", method = "POST",
        headers = { ["Transfer-Encoding"] = "chunked" }, body = "05;a=b\r\nhello\r\n0000\r\n\r\n" }
      assert.are.equal("hello", resp.body)
    end)

    it("routes an absolute-form target by its authority and forwards it in origin form", function()
      local conn = ten.connect(server.port)
      conn:send("GET http://a.hello.localhost/headers?x=1 HTTP/1.1\r\nHost: elsewhere.localhost\r\n" ..
        "Connection: close\r\n\r\n")
      local h = ten.json(ten.read_response(conn))
      conn:close()
      assert.are.equal("/headers?x=1", h.url)
      assert.are.equal("a.hello.localhost", h.host)
    end)

    it("forwards a chunked request body with trailers", function()
      local resp = server:request { host = "a.hello.localhost", path = "/echo", method = "POST",
        headers = { ["Transfer-Encoding"] = "chunked" },
        body = "5\r\nhello\r\n6\r\n world\r\n0\r\nX-Check: 1\r\n\r\n" }
      assert.are.equal(200, resp.status)
      assert.are.equal("hello world", resp.body)
    end)

    it("tunnels a WebSocket both ways and closes cleanly", function()
      local conn = ten.connect(server.port)
      local status, headers = ws.handshake(conn, "a.hello.localhost")
      assert.are.equal(101, status)
      assert.are.equal("websocket", headers.upgrade:lower())
      assert.is_string(headers["sec-websocket-accept"])
      for _, msg in ipairs { "hi", string.rep("x", 300), string.rep("y", 70000) } do
        ws.send(conn, 1, msg)
        local op, payload = ws.receive(conn)
        assert.are.equal(1, op)
        assert.are.equal(msg, payload)
      end
      assert.are.equal(1, server:instance("hello:a").active) -- the tunnel keeps it busy
      ws.send(conn, 8, string.pack(">I2", 1000))
      local op = ws.receive(conn)
      assert.are.equal(8, op)
      assert.is_true(closed_by_peer(conn))
      conn:close()
      assert.truthy(ten.wait_until(5000, function() return server:instance("hello:a").active == 0 end))
    end)
  end)

  describe("smuggling", function()
    local cases = {
      { "Content-Length with Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { "two different Content-Lengths",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 4\r\nContent-Length: 5\r\n\r\nhello" },
      { "malformed Content-Length",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: +4\r\n\r\nabcd" },
      { "Transfer-Encoding not ending in chunked",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n" },
      { "an unknown Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: xchunked\r\n\r\n0\r\n\r\n", 501 },
      { "an invalid chunk size",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n" },
      { "bare LF line endings", "GET / HTTP/1.1\nHost: a.hello.localhost\n\n" },
      { "obs-fold", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nX-A: 1\r\n  2\r\n\r\n" },
      { "whitespace before the colon", "GET / HTTP/1.1\r\nHost : a.hello.localhost\r\n\r\n" },
      { "a request line with spaces in the target", "GET /a b HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n" },
      { "a Connection header naming Content-Length",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nConnection: keep-alive, Content-Length\r\n" ..
        "Content-Length: 44\r\n\r\nGET /headers HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n" },
      { "a Connection header naming Transfer-Encoding",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nConnection: Transfer-Encoding\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { "a Connection header naming Host",
        "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nConnection: host\r\n\r\n" },
      { "a bare CR after the last header", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n\rX: y\r\n\r\n" },
      { "a bare CR inside a header line", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nX: 1\rY: 2\r\n\r\n" },
      { "an empty header name", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n: nameless\r\n\r\n" },
      { "chunk data not followed by CRLF",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabcXX0\r\n\r\n" },
      { "obs-fold in a trailer",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nX: 1\r\n 2\r\n\r\n" },
      { "Transfer-Encoding in HTTP/1.0",
        "POST /echo HTTP/1.0\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { "two Transfer-Encoding headers",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n" ..
        "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" },
      { "a coding besides chunked",
        "POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n", 501 },
      { "HTTP/2.0 in an HTTP/1 request line", "GET / HTTP/2.0\r\nHost: a.hello.localhost\r\n\r\n", 505 },
      { "HTTP/1.2", "GET / HTTP/1.2\r\nHost: a.hello.localhost\r\n\r\n", 505 },
      { "HTTP/0.9", "GET / HTTP/0.9\r\nHost: a.hello.localhost\r\n\r\n", 505 },
      { "an absolute-form target with user information",
        "GET http://user@a.hello.localhost/ HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n" },
    }
    for _, case in ipairs(cases) do
      local status = case[3] or 400
      it(("refuses %s with %d and closes"):format(case[1], status), function()
        local conn = ten.connect(server.port)
        -- A smuggled second request rides along: it must never be answered.
        conn:send(case[2] .. "GET /smuggled HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
        local resp = ten.read_response(conn)
        assert.are.equal(status, resp.status)
        assert.are.equal("close", resp.headers.connection)
        assert.is_true(closed_by_peer(conn))
        conn:close()
      end)
    end
  end)

  describe("strict framing across segments", function()
    -- The second piece of each arrives in a later TCP segment.
    local split_cases = {
      { "an obs-fold", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\nX-A: 1\r\n", " 2\r\n\r\n" },
      { "a CR whose next byte is not LF", "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n\r", "X: y\r\n\r\n" },
      { "chunk data followed by other bytes",
        "POST /headers HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc",
        "XX0\r\n\r\n" },
    }
    for _, case in ipairs(split_cases) do
      it("refuses " .. case[1] .. " with 400", function()
        local conn = ten.connect(server.port)
        conn:send(case[2])
        tt.sleep(50)
        conn:send(case[3] .. "GET /smuggled HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
        local resp = ten.read_response(conn)
        assert.are.equal(400, resp.status)
        assert.is_true(closed_by_peer(conn))
        conn:close()
      end)
    end
  end)

  describe("limits", function()
    it("answers a request target over the limit with 414", function()
      local resp = get("a.hello.localhost", "/" .. string.rep("t", 5000))
      assert.are.equal(414, resp.status)
    end)

    it("answers a head over max_header_size with 431", function()
      local resp = server:request { host = "a.hello.localhost", headers = { ["X-Big"] = string.rep("b", 5000) } }
      assert.are.equal(431, resp.status)
    end)

    it("refuses a Content-Length over max_body_size with 413 before reading it", function()
      local conn = ten.connect(server.port)
      conn:send("POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 300000000\r\n\r\n")
      local resp = ten.read_response(conn) -- no body byte was sent
      assert.are.equal(413, resp.status)
      assert.are.equal(200 * 1024 * 1024, ten.json(resp).max_body_size)
      assert.is_true(closed_by_peer(conn))
      conn:close()
    end)

    it("stops a chunked body that grows over max_body_size with 413", function()
      local small = ten.start { config = [[
        settings { max_body_size = "100k" }
        service "hello" { command = os.getenv("HELLO_BIN") }
        instances { hello = { "s" } }
      ]] }
      finally(function() small:cleanup() end)
      assert.truthy(small:wait_state("hello:s", "ready"))
      local conn = ten.connect(small.port)
      -- /headers answers only once the whole body is in, so the 413 comes first.
      conn:send("POST /headers HTTP/1.1\r\nHost: s.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n")
      local chunk = ("%x\r\n%s\r\n"):format(16384, string.rep("z", 16384))
      for _ = 1, 10 do
        if not conn:send(chunk) then break end
      end
      local resp = ten.read_response(conn)
      assert.are.equal(413, resp.status)
      conn:close()
      -- a body under the limit still goes through
      resp = small:request { host = "s.hello.localhost", path = "/echo", method = "POST",
        body = string.rep("k", 50000) }
      assert.are.equal(200, resp.status)
      assert.are.equal(50000, #resp.body)
    end)

    it("refuses connections over max_connections without hurting open ones", function()
      local held = {}
      finally(function() for _, c in ipairs(held) do c:close() end end)
      local busy
      for _ = 1, 30 do
        local c = ten.connect(server.port)
        c:send("GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        local resp = ten.read_response(c)
        if resp.status == 503 then
          busy = resp
          c:close()
          break
        end
        held[#held + 1] = c
      end
      assert.truthy(busy, "no connection was refused")
      assert.are.equal("too many connections", ten.json(busy).error)
      -- every connection already open still works
      for _, c in ipairs(held) do
        c:send("GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
        assert.are.equal(200, ten.read_response(c).status)
      end
    end)
  end)

  describe("timeouts", function()
    it("answers a slowloris head with 408 and closes", function()
      local conn = ten.connect(server.port)
      conn:send("GET / HTTP/1.1\r\nHost: a.hello")
      local resp = ten.read_response(conn)
      assert.are.equal(408, resp.status)
      assert.is_true(closed_by_peer(conn))
      conn:close()
    end)

    it("closes idle keep-alive connections", function()
      local conn = ten.connect(server.port)
      local resp = ten.request(server.port, { conn = conn, host = "a.hello.localhost" })
      assert.are.equal(200, resp.status)
      assert.is_true(closed_by_peer(conn, 10))
      conn:close()
    end)

    it("answers 504 when the instance does not answer within upstream_timeout", function()
      local resp = get("a.hello.localhost", "/sleep?ms=3000")
      assert.are.equal(504, resp.status)
      assert.are.equal("hello:a", ten.json(resp).instance)
      -- other requests were not held up meanwhile, and the instance still serves
      assert.are.equal(200, get("a.hello.localhost", "/").status)
    end)

    it("answers 502 when the instance's socket refuses connections", function()
      local code = server:ten("spawn", "hello", "--id", "gone")
      assert.are.equal(0, code)
      local sock = server:instance("hello:gone").socket
      os.remove(sock) -- the process runs, but nothing can connect any more
      local resp = get("gone.hello.localhost", "/")
      assert.are.equal(502, resp.status)
      assert.are.equal("cannot connect to the instance", ten.json(resp).error)
    end)
  end)

  describe("disconnects and backpressure", function()
    it("closes the upstream connection when the client leaves mid-request", function()
      local pid = server:instance("hello:a").pid
      local before = fd_count(pid)
      for _ = 1, 5 do
        local conn = ten.connect(server.port)
        conn:send("POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 100000\r\n\r\n" ..
          string.rep("p", 1000))
        tt.sleep(20)
        conn:close()
      end
      -- the app sees its connections closed (none was pooled half-used)
      assert.truthy(ten.wait_until(5000, function() return fd_count(pid) <= before end),
        ("app fds: %d before, %d after"):format(before, fd_count(pid)))
      assert.are.equal(200, get("a.hello.localhost", "/").status)
    end)

    it("does not buffer a large response for a client that reads slowly", function()
      local conn = ten.connect(server.port)
      conn:send("GET /bytes?n=300000000 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
      conn:receive(1000)
      tt.sleep(1500) -- not reading: ten must stop reading the app, not buffer
      local rss = server:rss_kb()
      conn:close()
      if not ten.sanitized then
        assert.is_true(rss < 20 * 1024, ("ten RSS %d KiB while a client stalled"):format(rss))
      end
    end)

    it("does not buffer an upload for an app that reads slowly", function()
      local pid = server:instance("hello:a").pid
      tt.kill(pid, "STOP")
      finally(function() tt.kill(pid, "CONT") end)
      local conn = ten.connect(server.port)
      local total = 100 * 1024 * 1024
      conn:send("POST /echo HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: " .. total .. "\r\n\r\n")
      conn:settimeout(0)
      local sent, block = 0, string.rep("u", 65536)
      local deadline = tt.now_ms() + 1500
      while tt.now_ms() < deadline do
        local n, err, partial = conn:send(block)
        sent = sent + (n or partial or 0)
        if err == "timeout" then tt.sleep(10) end
      end
      local rss = server:rss_kb()
      conn:close()
      if not ten.sanitized then
        assert.is_true(rss < 20 * 1024, ("ten RSS %d KiB while the app was stopped"):format(rss))
      end
      assert.is_true(sent < total / 4, ("the client sent %d bytes to a stopped app"):format(sent))
    end)
  end)

  describe("forwarding headers", function()
    it("keeps X-Forwarded-* only from trusted proxies", function()
      local resp = server:request { host = "a.hello.localhost", path = "/headers",
        headers = { ["X-Forwarded-Proto"] = "https", ["X-Forwarded-Host"] = "evil.example",
          ["X-Real-IP"] = "6.6.6.6", ["X-Forwarded-For"] = "1.2.3.4" } }
      local seen = ten.json(resp)
      assert.are.equal("http", seen["x-forwarded-proto"])
      assert.are.equal("a.hello.localhost", seen["x-forwarded-host"])
      assert.are.equal("127.0.0.1", seen["x-real-ip"])
      assert.are.equal("1.2.3.4, 127.0.0.1", seen["x-forwarded-for"])

      local trusting = ten.start { config = [[
        settings { trusted_proxies = { "127.0.0.1/32" } }
        service "hello" { command = os.getenv("HELLO_BIN") }
        instances { hello = { "t" } }
      ]] }
      finally(function() trusting:cleanup() end)
      assert.truthy(trusting:wait_state("hello:t", "ready"))
      resp = trusting:request { host = "t.hello.localhost", path = "/headers",
        headers = { ["X-Forwarded-Proto"] = "https", ["X-Forwarded-For"] = "9.9.9.9, 10.1.1.1" } }
      seen = ten.json(resp)
      assert.are.equal("https", seen["x-forwarded-proto"])
      assert.are.equal("10.1.1.1", seen["x-real-ip"]) -- rightmost untrusted
      assert.are.equal("9.9.9.9, 10.1.1.1, 127.0.0.1", seen["x-forwarded-for"])
    end)
  end)
end)
