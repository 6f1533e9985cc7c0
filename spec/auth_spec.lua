-- API tokens: the CLI that makes and revokes them, bearer auth on every
-- /api route, tenant tokens that see only their own instances (logs and
-- live streams included), per-address throttling, and the loopback-only
-- API until a token exists.
local ten = require "ten"
local tt = require "tentest"
local socket = require "socket"

-- One request with an optional bearer token, from an optional local
-- address (127.0.0.2 is loopback too, but a different client to ten).
local function call(server, opts)
  local conn = assert(socket.tcp())
  conn:settimeout(30)
  if opts.from then assert(conn:bind(opts.from, 0)) end
  assert(conn:connect(opts.to or "127.0.0.1", server.port))
  local headers = { Authorization = opts.token and ("Bearer " .. opts.token) or opts.authorization }
  local resp = ten.request(server.port, { conn = conn, method = opts.method, path = opts.path,
    host = "localhost", headers = headers, body = opts.body })
  conn:close()
  return resp
end

local function token_gen(server, ...)
  local code, out, err = server:ten("token-gen", ...)
  assert.are.equal(0, code, err)
  return (out:gsub("%s+$", "")), err
end

-- Reads Server-Sent Events from an open stream for `ms`; returns the text.
local function read_stream(conn, ms)
  local text = ""
  local deadline = socket.gettime() + ms / 1000
  while socket.gettime() < deadline do
    conn:settimeout(math.max(0.01, deadline - socket.gettime()))
    local size = conn:receive("*l")
    if not size then break end
    local n = tonumber(size, 16)
    if n and n > 0 then
      text = text .. (conn:receive(n) or "")
      conn:receive("*l")
    end
  end
  return text
end

local function open_stream(server, path, token)
  local conn = ten.connect(server.port)
  conn:send(("GET %s HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n\r\n"):format(path, token))
  local head = assert(conn:receive("*l"))
  repeat local h = conn:receive("*l") until h == "" or h == nil
  return conn, tonumber(head:match("^HTTP/1%.1 (%d+)"))
end

-- A non-loopback address of this machine, or nil.
local function outside_address()
  local p = io.popen("hostname -I 2>/dev/null")
  local out = p:read("*a") or ""
  p:close()
  for addr in out:gmatch("%S+") do
    if addr:match("^%d+%.%d+%.%d+%.%d+$") and not addr:match("^127%.") then return addr end
  end
end

describe("auth", function()
  describe("token CLI", function()
    it("makes, lists and revokes tokens with no server running", function()
      local dir = assert(tt.mkdtemp("ten-auth-"))
      finally(function() tt.rm_rf(dir) end)
      local data = dir .. "/data"
      local code, out, err = ten.run { "token-gen", "--name", "ci", "--data-dir", data }
      assert.are.equal(0, code, err)
      local token = out:gsub("%s+$", "")
      -- ten_<8 hex id>_<secret of at least 256 bits>
      local id, secret = token:match("^ten_(%x%x%x%x%x%x%x%x)_(%S+)$")
      assert.truthy(id, token)
      assert.truthy(#secret >= 43, "the secret is shorter than 256 bits: " .. secret)
      assert.matches("shown only now", err)
      code, out = ten.run { "token-list", "--data-dir", data }
      assert.are.equal(0, code)
      assert.matches("ci%s+" .. id .. "%s+%(admin%)", out)
      -- only the hash is stored: the secret is nowhere in the database
      local db = assert(io.open(data .. "/tenement.db", "rb")):read("*a")
      assert.falsy(db:find(secret, 1, true))
      code, out, err = ten.run { "token-gen", "--name", "ci", "--data-dir", data }
      assert.are.equal(1, code)
      assert.matches("exists", err)
      code, out, err = ten.run { "token-revoke", "nobody", "--data-dir", data }
      assert.are.equal(1, code)
      assert.matches("nobody", err)
      assert.are.equal(0, (ten.run { "token-revoke", "ci", "--data-dir", data }))
      code, out = ten.run { "token-list", "--data-dir", data }
      assert.falsy(out:find("ci ", 1, true))
    end)
  end)

  describe("with an admin token", function()
    local server, token
    setup(function()
      server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "a" } }' } }
      token = token_gen(server, "--name", "admin")
      assert.truthy(server:wait_state("hello:a", "ready"))
    end)
    teardown(function() server:cleanup() end)

    it("answers 401 with WWW-Authenticate when the token is missing or wrong", function()
      for _, path in ipairs { "/api/instances", "/api/instances/hello:a", "/api/logs",
        "/api/logs/stream", "/api/events", "/api/nothing-here" } do
        local resp = call(server, { path = path })
        assert.are.equal(401, resp.status, path)
        assert.matches("^Bearer", resp.headers["www-authenticate"])
        assert.truthy(ten.json(resp).error)
      end
      local wrong = token:sub(1, -2) .. (token:sub(-1) == "A" and "B" or "A")
      local resp = call(server, { path = "/api/instances", token = wrong })
      assert.are.equal(401, resp.status)
      assert.matches("^Bearer", resp.headers["www-authenticate"])
      assert.are.equal(401, call(server, { path = "/api/instances", authorization = "Basic eDp5" }).status)
      assert.are.equal(401, call(server, { path = "/api/instances", token = "ten_garbage" }).status)
    end)

    it("answers 200 with the right token, and leaves /health and /metrics open", function()
      local resp = call(server, { path = "/api/instances", token = token })
      assert.are.equal(200, resp.status)
      assert.are.equal("a", ten.json(resp)[1].id)
      assert.are.equal(200, call(server, { path = "/health" }).status)
      assert.are.equal(200, call(server, { path = "/metrics" }).status)
      assert.falsy(ten.json(call(server, { path = "/health" })).api_loopback_only)
    end)

    it("stops a revoked token at once, even one verified a moment ago", function()
      local second = token_gen(server, "--name", "soon-gone")
      assert.are.equal(200, call(server, { path = "/api/instances", token = second }).status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = second }).status) -- cached
      assert.are.equal(0, (server:ten("token-revoke", "soon-gone")))
      local resp = call(server, { path = "/api/instances", token = second })
      assert.are.equal(401, resp.status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = token }).status)
    end)

    it("leaves the control socket to file permissions: the CLI needs no token", function()
      local code, out = server:ten("ps")
      assert.are.equal(0, code)
      assert.matches("hello:a", out)
    end)
  end)

  describe("throttling", function()
    -- A counter from /metrics.
    local function metric(server, name)
      local body = call(server, { path = "/metrics" }).body
      return tonumber(body:match("\n" .. name .. " (%S+)"))
    end

    it("slows one address with 429 and Retry-After, but never a token that verifies", function()
      local server = ten.start { config = ten.hello_config {} }
      finally(function() server:cleanup() end)
      local token = token_gen(server, "--name", "admin")
      local id = token:match("^ten_(%x+)_")
      local bad = "ten_" .. (id == "00000000" and "11111111" or "00000000") .. "_" .. string.rep("x", 43)
      local statuses = {}
      for i = 1, 12 do statuses[i] = call(server, { path = "/api/instances", token = bad }).status end
      assert.are.equal(401, statuses[1])
      assert.are.equal(429, statuses[12])
      local throttled = call(server, { path = "/api/instances", token = bad })
      assert.are.equal(429, throttled.status)
      local retry = tonumber(throttled.headers["retry-after"])
      assert.truthy(retry and retry > 0, "no Retry-After")
      assert.matches("failed 10 times", server:log())
      -- the right token from the same address (behind one NAT, one proxy)
      -- is let in, the first time and from the cache
      assert.are.equal(200, call(server, { path = "/api/instances", token = token }).status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = token }).status)
      -- unknown ids cost no Argon2 verification: only the right token's one ran
      assert.are.equal(1, metric(server, "tenement_auth_verifications_total"))
      assert.truthy(metric(server, "tenement_auth_throttled_total") >= 2)
      -- another address is not locked out
      assert.are.equal(401, call(server, { path = "/api/instances", token = bad, from = "127.0.0.3" }).status)
      -- the open routes stay open for the throttled address
      assert.are.equal(200, call(server, { path = "/health" }).status)
    end)

    it("counts attempts in flight: 200 wrong secrets at once cost 10 verifications", function()
      local server = ten.start { config = ten.hello_config {} }
      local undo = ten.cleanups()
      finally(function() undo:run() end)
      undo:add(function() server:cleanup() end)
      local token = token_gen(server, "--name", "admin")
      local id = token:match("^ten_(%x+)_")
      -- every request is sent before any answer is read
      local conns = {}
      undo:add(function() for _, c in ipairs(conns) do c:close() end end)
      for i = 1, 200 do
        local c = assert(socket.tcp())
        c:settimeout(60)
        assert(c:bind("127.0.0.4", 0))
        assert(c:connect("127.0.0.1", server.port))
        conns[i] = c
        assert(c:send(("GET /api/instances HTTP/1.1\r\nHost: localhost\r\n" ..
          "Authorization: Bearer ten_%s_%064x\r\nConnection: close\r\n\r\n"):format(id, i)))
      end
      local counts = {}
      for _, c in ipairs(conns) do
        local resp = assert(ten.read_response(c, "GET"))
        counts[resp.status] = (counts[resp.status] or 0) + 1
      end
      assert.are.equal(10, metric(server, "tenement_auth_verifications_total"))
      assert.are.same({ [401] = 10, [429] = 190 }, counts)
      -- that address gets no more verifications, so a token nobody verified
      -- yet waits; one verified already (here, from another address) passes
      assert.are.equal(429, call(server, { path = "/api/instances", token = token, from = "127.0.0.4" }).status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = token }).status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = token, from = "127.0.0.4" }).status)
      assert.are.equal(11, metric(server, "tenement_auth_verifications_total"))
    end)
  end)

  describe("tenant tokens", function()
    local server, admin, tenant_a
    setup(function()
      server = ten.start { config = ten.hello_config { extra = [[
        service "other" { command = os.getenv("HELLO_BIN"), health = "/health" }
        instances { hello = { "a", "b" }, other = { "a" } }
      ]] } }
      admin = token_gen(server, "--name", "admin")
      tenant_a = token_gen(server, "--name", "tenant-a", "--tenant", "a")
      assert.truthy(server:wait_state("hello:a", "ready"))
      assert.truthy(server:wait_state("hello:b", "ready"))
      assert.truthy(server:wait_state("other:a", "ready"))
      server:request { host = "a.hello.localhost", path = "/log?n=3" }
      server:request { host = "b.hello.localhost", path = "/log?n=3&size=60" }
      -- wait until b's secret-ish lines are stored
      assert.truthy(ten.wait_until(10000, function()
        local resp = call(server, { path = "/api/logs?id=b&limit=100", token = admin })
        return resp.status == 200 and #ten.json(resp).lines >= 3
      end))
    end)
    teardown(function() server:cleanup() end)

    it("lists only its own instances, of any service", function()
      local resp = call(server, { path = "/api/instances", token = tenant_a })
      assert.are.equal(200, resp.status)
      local keys = {}
      for _, inst in ipairs(ten.json(resp)) do keys[#keys + 1] = inst.service .. ":" .. inst.id end
      table.sort(keys)
      assert.are.same({ "hello:a", "other:a" }, keys)
      assert.are.equal(3, #ten.json(call(server, { path = "/api/instances", token = admin })))
    end)

    it("cannot see or act on another tenant's instance, and cannot set weights", function()
      assert.are.equal(200, call(server, { path = "/api/instances/hello:a", token = tenant_a }).status)
      assert.are.equal(404, call(server, { path = "/api/instances/hello:b", token = tenant_a }).status)
      for _, action in ipairs { "restart", "stop", "start" } do
        local resp = call(server, { method = "POST", path = "/api/instances/hello:b/" .. action, token = tenant_a })
        assert.are.equal(404, resp.status, action)
      end
      assert.are.equal("ready", server:instance("hello:b").state)
      local resp = call(server, { method = "POST", path = "/api/instances/hello:a/weight",
        token = tenant_a, body = '{"weight": 10}' })
      assert.are.equal(403, resp.status)
      resp = call(server, { method = "POST", path = "/api/instances/hello:a/restart", token = tenant_a })
      assert.are.equal(202, resp.status)
      assert.truthy(server:wait_state("hello:a", "ready"))
    end)

    it("reads only its own logs, whatever the query asks", function()
      local function messages(path)
        local resp = call(server, { path = path, token = tenant_a })
        if resp.status ~= 200 then return resp.status, {} end
        local ids = {}
        for _, l in ipairs(ten.json(resp).lines) do ids[#ids + 1] = l.instance end
        return resp.status, ids
      end
      local status, ids = messages("/api/logs?limit=1000")
      assert.are.equal(200, status)
      assert.truthy(#ids >= 3)
      for _, id in ipairs(ids) do assert.are.equal("a", id) end
      for _, path in ipairs { "/api/logs?id=b", "/api/logs?service=hello&id=b",
        "/api/logs?search=%22id%3Db%22", "/api/logs?id=b&search=hello" } do
        status, ids = messages(path)
        for _, id in ipairs(ids) do assert.are.equal("a", id, path) end
        -- asking for b by name is "no such instance"; a search finds only a's lines
        if path:find("id=b", 1, true) then assert.are.equal(404, status, path) end
        local resp = call(server, { path = path, token = tenant_a })
        assert.falsy(resp.body:find("id=b", 1, true), path)
      end
      -- the admin sees b's lines through the same query
      assert.truthy(call(server, { path = "/api/logs?search=%22id%3Db%22", token = admin }).body:find("id=b", 1, true))
    end)

    it("streams only its own lines and state changes", function()
      local undo = ten.cleanups()
      finally(function() undo:run() end)
      local denied, status = open_stream(server, "/api/logs/stream?service=hello&id=b", tenant_a)
      undo:add(function() denied:close() end)
      local all = open_stream(server, "/api/logs/stream", tenant_a)
      undo:add(function() all:close() end)
      local events = open_stream(server, "/api/events", tenant_a)
      undo:add(function() events:close() end)
      server:request { host = "b.hello.localhost", path = "/log?n=5&size=70" }
      server:request { host = "a.hello.localhost", path = "/log?n=1" }
      assert.are.equal(0, (server:ten("restart", "hello:b")))
      assert.are.equal(0, (server:ten("restart", "hello:a")))
      local denied_text = status == 200 and read_stream(denied, 500) or ""
      local all_text = read_stream(all, 1000)
      local events_text = read_stream(events, 500)
      assert.falsy(denied_text:find("id=b", 1, true))
      assert.falsy(all_text:find("id=b", 1, true))
      assert.truthy(all_text:find("id=a", 1, true), "its own lines did not stream")
      assert.falsy(events_text:find('"id":"b"', 1, true))
      assert.truthy(events_text:find('"id":"a"', 1, true), "its own state changes did not stream")
      -- and resuming from an old event id does not replay b's lines either
      local resumed = ten.connect(server.port)
      undo:add(function() resumed:close() end)
      resumed:send(("GET /api/logs/stream HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer %s\r\n" ..
        "Last-Event-ID: 0\r\n\r\n"):format(tenant_a))
      repeat local h = resumed:receive("*l") until h == "" or h == nil
      local replay = read_stream(resumed, 1000)
      assert.truthy(replay:find("id=a", 1, true))
      assert.falsy(replay:find("id=b", 1, true))
    end)
  end)

  describe("before any token exists", function()
    it("answers only on loopback, and ten serve says so", function()
      local server = ten.start { config = ten.hello_config {}, args = { "--listen", "0.0.0.0" } }
      finally(function() server:cleanup() end)
      assert.matches("answers only on loopback", tt.read_file(server.stdout))
      assert.is_true(ten.json(call(server, { path = "/health" })).api_loopback_only)
      assert.are.equal(200, call(server, { path = "/api/instances" }).status)
      local outside = outside_address()
      if not outside then
        pending("this machine has no non-loopback IPv4 address")
        return
      end
      local resp = call(server, { path = "/api/instances", to = outside, from = outside })
      assert.are.equal(403, resp.status)
      assert.matches("only on loopback", ten.json(resp).error)
      assert.are.equal(200, call(server, { path = "/health", to = outside, from = outside }).status)
      -- the first token ends the loopback exception, for everyone
      local token = token_gen(server, "--name", "first")
      assert.are.equal(401, call(server, { path = "/api/instances" }).status)
      assert.are.equal(200, call(server, { path = "/api/instances", token = token, to = outside, from = outside }).status)
    end)
  end)

  describe("metrics_auth", function()
    it("closes /metrics to callers without a token", function()
      local server = ten.start { config = [[
        settings { metrics_auth = true }
        service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      ]] }
      finally(function() server:cleanup() end)
      local token = token_gen(server, "--name", "scraper")
      assert.are.equal(401, call(server, { path = "/metrics" }).status)
      local resp = call(server, { path = "/metrics", token = token })
      assert.are.equal(200, resp.status)
      assert.matches("tenement_connections", resp.body)
      assert.are.equal(200, call(server, { path = "/health" }).status)
    end)
  end)
end)
