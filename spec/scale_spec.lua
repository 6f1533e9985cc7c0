-- Scale to zero: idle instances stop, the next request wakes them, waiting
-- requests share one start and never see a half-started app; instances
-- per customer on demand, guarded; socket activation.
local ten = require "ten"
local tt = require "tentest"
local ws = require "ws"
local socket = require "socket"

-- Sends requests on separate connections before reading any answer.
local function concurrent(port, host, path, n)
  local conns = {}
  for i = 1, n do
    conns[i] = ten.connect(port)
    conns[i]:send(("GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n"):format(path or "/", host))
  end
  local responses = {}
  for i = 1, n do
    responses[i] = ten.read_response(conns[i])
    conns[i]:close()
  end
  return responses
end

local function count(log, pattern)
  local n = 0
  for _ in log:gmatch(pattern) do n = n + 1 end
  return n
end

describe("scale to zero", function()
  it("stops an idle instance and wakes it on the next request", function()
    local server = ten.start { config = ten.hello_config {
      service = "idle_timeout = 0.5,", extra = 'instances { hello = { "z" } }' } }
    finally(function() server:cleanup() end)
    local first = server:wait_state("hello:z", "ready")
    assert.truthy(first)
    local stopped = server:wait_state("hello:z", "stopped", 10000)
    assert.truthy(stopped, "not stopped for idleness")
    assert.is_true(stopped.idle_stopped)
    assert.is_false(tt.alive(first.pid))
    local resp = server:get("z.hello.localhost")
    assert.are.equal(200, resp.status)
    local woken = server:instance("hello:z")
    assert.are.equal("ready", woken.state)
    assert.are_not.equal(first.pid, woken.pid)
    assert.are.equal(woken.pid, ten.json(resp).pid)
  end)

  it("counts an open stream or WebSocket as activity", function()
    local server = ten.start { config = ten.hello_config {
      service = "idle_timeout = 0.5,", extra = 'instances { hello = { "s" } }' } }
    finally(function() server:cleanup() end)
    local inst = server:wait_state("hello:s", "ready")
    -- a slow stream lasting ~2 s, four idle timeouts long
    local conn = ten.connect(server.port)
    conn:send("GET /stream?n=20&size=10&interval_ms=100 HTTP/1.1\r\nHost: s.hello.localhost\r\n\r\n")
    local resp = ten.read_response(conn)
    conn:close()
    assert.are.equal(200, resp.status)
    assert.are.equal(200, #resp.body)
    assert.are.equal(inst.pid, server:instance("hello:s").pid, "stopped while streaming")
    -- a WebSocket open and quiet for 1.5 s
    local wsc = ten.connect(server.port)
    assert.are.equal(101, (ws.handshake(wsc, "s.hello.localhost")))
    tt.sleep(1500)
    ws.send(wsc, 1, "still here")
    local _, payload = ws.receive(wsc)
    assert.are.equal("still here", payload)
    assert.are.equal(inst.pid, server:instance("hello:s").pid, "stopped under an open WebSocket")
    wsc:close()
    assert.truthy(server:wait_state("hello:s", "stopped", 10000))
  end)

  it("shares one start among concurrent requests and releases them when ready", function()
    local server = ten.start { config = ten.hello_config { service = [[
      idle_timeout = 60, env = { HELLO_START_DELAY_MS = "300" },]],
      extra = 'instances { hello = { "c" } }' } }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:c", "ready"))
    assert.are.equal(0, (server:ten("stop", "hello:c")))
    assert.are.equal(0, (server:ten("restart", "hello:c"))) -- restart un-holds it
    assert.are.equal(0, (server:ten("repl", "-e", 'ten.stop("hello:c")')))
    assert.truthy(server:wait_state("hello:c", "stopped"))
    -- an operator's stop holds: traffic does not wake it
    assert.are.equal(502, server:get("c.hello.localhost").status)
    -- an idle stop does not: make it look idle-stopped through a restart + idle
    server:ten("restart", "hello:c")
    assert.truthy(server:wait_state("hello:c", "ready"))
    local log_before = server:log()
    tt.kill(server:instance("hello:c").pid, "TERM") -- exits 0: stopped, not held
    assert.truthy(server:wait_state("hello:c", "stopped"))
    local responses = concurrent(server.port, "c.hello.localhost", "/", 20)
    local pids = {}
    for _, r in ipairs(responses) do
      assert.are.equal(200, r.status) -- never a 502 from an app not listening yet
      pids[ten.json(r).pid] = true
    end
    local n = 0
    for _ in pairs(pids) do n = n + 1 end
    assert.are.equal(1, n, "all requests must be served by one start")
    local starts = count(server:log():sub(#log_before + 1), "hello:c stopped %-> starting")
    assert.are.equal(1, starts)
  end)

  it("answers 503 with Retry-After when the start takes longer than wake_timeout", function()
    local server = ten.start { config = ten.hello_config { service = [[
      wake_timeout = 0.3, start_timeout = 10, spawn_on_demand = true,
      env = { HELLO_START_DELAY_MS = "2000" },]] } }
    finally(function() server:cleanup() end)
    local resp = server:get("slow.hello.localhost")
    assert.are.equal(503, resp.status)
    assert.are.equal("1", resp.headers["retry-after"])
    assert.matches("did not start in time", ten.json(resp).error)
    -- the start goes on, and later requests are served
    assert.truthy(server:wait_state("hello:slow", "ready", 10000))
    assert.are.equal(200, server:get("slow.hello.localhost").status)
  end)

  it("answers 503 when more requests wait than wake_queue allows", function()
    local server = ten.start { config = ten.hello_config { service = [[
      wake_queue = 2, spawn_on_demand = true, env = { HELLO_START_DELAY_MS = "500" },]] } }
    finally(function() server:cleanup() end)
    local responses = concurrent(server.port, "q.hello.localhost", "/", 6)
    local ok, busy = 0, 0
    for _, r in ipairs(responses) do
      if r.status == 200 then ok = ok + 1 end
      if r.status == 503 then
        busy = busy + 1
        assert.are.equal("1", r.headers["retry-after"])
      end
    end
    assert.are.equal(2, ok)
    assert.are.equal(4, busy)
  end)

  it("404s an instance that was never spawned unless the service spawns on demand", function()
    local server = ten.start { config = ten.hello_config {} }
    finally(function() server:cleanup() end)
    assert.are.equal(404, server:get("never.hello.localhost").status)
    assert.is_nil(server:instance("hello:never"))
  end)

  describe("spawn_on_demand", function()
    local server
    setup(function()
      server = ten.start { config = [[
        service "cust" {
          command = os.getenv("HELLO_BIN"),
          health = "/health",
          spawn_on_demand = true,
          id_pattern = "^c[0-9]+$",
          max_instances = 3,
          spawn_rate = 1000,
          admit = function(id, req) return req.headers["x-tenant-key"] == "open-sesame" end,
        }
        service "limited" {
          command = os.getenv("HELLO_BIN"), spawn_on_demand = true, spawn_rate = 2,
        }
      ]] }
    end)
    teardown(function() if server then server:cleanup() end end)

    local function get(id, key)
      return server:request { host = id .. ".cust.localhost",
        headers = key and { ["X-Tenant-Key"] = key } or nil }
    end

    it("creates one instance per new id on its first request", function()
      local resp = get("c1", "open-sesame")
      assert.are.equal(200, resp.status)
      assert.are.equal("c1", ten.json(resp).id)
      local inst = server:instance("cust:c1")
      assert.is_true(inst.on_demand)
      assert.are.equal(inst.pid, ten.json(get("c1", "open-sesame")).pid)
    end)

    it("refuses ids that do not match id_pattern, or the admit hook refuses", function()
      local resp = get("x1", "open-sesame")
      assert.are.equal(404, resp.status)
      assert.matches("id_pattern", ten.json(resp).reason)
      resp = get("c2", "wrong")
      assert.are.equal(404, resp.status)
      assert.matches("admit", ten.json(resp).reason)
      assert.is_nil(server:instance("cust:x1"))
      assert.is_nil(server:instance("cust:c2"))
    end)

    it("stops at max_instances", function()
      assert.are.equal(200, get("c2", "open-sesame").status)
      assert.are.equal(200, get("c3", "open-sesame").status)
      local resp = get("c4", "open-sesame")
      assert.are.equal(404, resp.status)
      assert.matches("max_instances", ten.json(resp).reason)
      local list = server:ps()
      local n = 0
      for _, i in ipairs(list) do if i.service == "cust" then n = n + 1 end end
      assert.are.equal(3, n)
    end)

    it("rate-limits creations", function()
      local ok, refused = 0, 0
      for i = 1, 6 do
        local resp = server:get("r" .. i .. ".limited.localhost")
        if resp.status == 200 then ok = ok + 1 else refused = refused + 1 end
      end
      assert.are.equal(2, ok)
      assert.are.equal(4, refused)
    end)
  end)

  it("passes a socket it bound itself to an app with activation = \"socket\"", function()
    local server = ten.start { config = [[
      service "act" { command = os.getenv("HELLO_BIN"), activation = "socket",
                      idle_timeout = 0.5, spawn_on_demand = true }
    ]] }
    finally(function() server:cleanup() end)
    local resp = server:get("one.act.localhost")
    assert.are.equal(200, resp.status)
    -- A request in flight keeps it from idling out while its environment is read.
    local busy = ten.connect(server.port)
    busy:send("GET /sleep?ms=2000 HTTP/1.1\r\nHost: one.act.localhost\r\n\r\n")
    assert.truthy(ten.wait_until(5000, function() return server:instance("act:one").active > 0 end))
    local inst = server:instance("act:one")
    local environ = tt.read_file("/proc/" .. inst.pid .. "/environ")
    busy:close()
    assert.truthy(environ:find("LISTEN_FDS=1", 1, true))
    assert.truthy(environ:find("LISTEN_PID=" .. inst.pid .. "\0", 1, true))
    -- The socket outlives the process: after an idle stop, it still exists
    -- and a request wakes the app behind it.
    assert.truthy(server:wait_state("act:one", "stopped", 10000))
    assert.truthy(tt.stat(inst.socket))
    assert.are.equal(200, server:get("one.act.localhost").status)
  end)
end)
