-- The hypervisor: restart policies, backoff, failed state, stop and restart.
local ten = require "ten"
local tt = require "tentest"

local function start(restart, extra_service)
  local server = ten.start { config = ten.hello_config { restart = restart,
    service = extra_service or "", extra = 'instances { hello = { "one" } }' } }
  if not server:wait_state("hello:one", "ready") then
    local log = server:log()
    server:cleanup()
    error("hello:one did not become ready:\n" .. log, 2)
  end
  return server
end

describe("supervision", function()
  it("leaves a SIGKILLed instance down with restart = never: requests get 502", function()
    local server = start("never")
    finally(function() server:cleanup() end)
    local pid = server:instance("hello:one").pid
    assert.is_true(tt.kill(pid, "KILL"))
    local inst = server:wait_state("hello:one", "failed")
    assert.truthy(inst)
    assert.matches("signal 9", inst.reason)
    local resp = server:get("one.hello.localhost")
    assert.are.equal(502, resp.status)
    local body = ten.json(resp)
    assert.are.equal("hello:one", body.instance)
    assert.are.equal("failed", body.state)
  end)

  it("brings a SIGKILLed instance back with restart = on-failure and counts the restart", function()
    local server = start("on-failure")
    finally(function() server:cleanup() end)
    local old = server:instance("hello:one").pid
    assert.is_true(tt.kill(old, "KILL"))
    local inst = ten.wait_until(15000, function()
      local i = server:instance("hello:one")
      if i.state == "ready" and i.pid ~= old then return i end
    end)
    assert.truthy(inst)
    assert.are.equal(1, inst.restarts)
    assert.matches("signal 9", inst.last_exit)
    local resp = server:get("one.hello.localhost")
    assert.are.equal(200, resp.status)
    assert.are.equal(inst.pid, ten.json(resp).pid)
    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("hello:one%s+ready%s+%d+%s+%S+%s+1", out)
  end)

  it("does not restart a clean exit with on-failure, but does with always", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local server = start("on-failure")
    undo:add(function() server:cleanup() end)
    assert.are.equal(200, server:get("one.hello.localhost").status)
    server:request { host = "one.hello.localhost", path = "/exit?code=0" }
    local inst = server:wait_state("hello:one", "stopped")
    assert.truthy(inst)
    assert.matches("status 0", inst.last_exit)

    local always = start("always")
    undo:add(function() always:cleanup() end)
    local old = always:instance("hello:one").pid
    always:request { host = "one.hello.localhost", path = "/exit?code=0" }
    assert.truthy(ten.wait_until(15000, function()
      local i = always:instance("hello:one")
      return i.state == "ready" and i.pid ~= old
    end))
  end)

  it("gives up after max_restarts consecutive crashes and says why", function()
    local server = ten.start { config = ten.hello_config { service = [[
      max_restarts = 2, backoff_initial = 0.01, backoff_max = 0.05,
      env = { HELLO_FAIL_START = "1" },]] } }
    finally(function() server:cleanup() end)
    local code, _, err = server:ten("spawn", "hello", "--id", "bad")
    assert.are.equal(1, code)
    assert.matches("hello:bad", err)
    local inst = server:wait_state("hello:bad", "failed")
    assert.truthy(inst)
    assert.matches("gave up after 3 crashes", inst.reason)
    assert.matches("status 1", inst.reason)
    assert.are.equal(2, inst.restarts)
  end)

  it("kills a start that is not ready within start_timeout and reports it", function()
    local server = ten.start { config = ten.hello_config { restart = "never", service = [[
      start_timeout = 0.3, env = { HELLO_START_DELAY_MS = "30000" },]] } }
    finally(function() server:cleanup() end)
    local code, _, err = server:ten("spawn", "hello", "--id", "slow")
    assert.are.equal(1, code)
    assert.matches("not ready after 0.3 s", err)
    local inst = server:wait_state("hello:slow", "failed")
    assert.truthy(inst)
    assert.is_nil(inst.pid)
  end)

  it("waits for health before ready", function()
    local server = ten.start { config = ten.hello_config { restart = "never", service = [[
      start_timeout = 0.5, env = { HELLO_UNHEALTHY = "1" },]] } }
    finally(function() server:cleanup() end)
    local code, _, err = server:ten("spawn", "hello", "--id", "sick")
    assert.are.equal(1, code)
    assert.matches("health check /health answered 503", err)
  end)

  it("escalates to SIGKILL when an app ignores SIGTERM past stop_timeout", function()
    local server = ten.start { config = [[
      service "stubborn" {
        command = "trap '' TERM; while :; do sleep 0.05; done",
        stop_timeout = 0.2,
        start_timeout = 60,
      }
    ]] }
    finally(function() server:cleanup() end)
    -- Never listens, so it stays `starting`; the shell ignores SIGTERM.
    assert.are.equal(0, (server:ten("spawn", "stubborn", "--id", "x", "--no-wait")))
    local pid = server:instance("stubborn:x").pid
    local code, out = server:ten("stop", "stubborn:x")
    assert.are.equal(0, code)
    assert.matches("signal 9", out)
    assert.is_false(tt.alive(pid))
  end)

  it("gives the app its environment and working directory", function()
    local server = ten.start { config = ten.hello_config { service = [[
      directory = "{data_dir}",
      env = { GREETING = "hi {service}:{id}", DB = "{data_dir}/{id}/app.db" },]] } }
    finally(function() server:cleanup() end)
    assert.are.equal(0, (server:ten("spawn", "hello", "--id", "envy")))
    local pid = server:instance("hello:envy").pid
    local environ = tt.read_file("/proc/" .. pid .. "/environ")
    local env = {}
    for k, v in environ:gmatch("([^=%z]+)=([^%z]*)") do env[k] = v end
    assert.are.equal("hi hello:envy", env.GREETING)
    assert.are.equal(server.data_dir .. "/envy/app.db", env.DB)
    assert.are.equal("hello", env.TENEMENT_SERVICE)
    assert.are.equal("envy", env.TENEMENT_ID)
    assert.are.equal(server.data_dir .. "/run/hello-envy.sock", env.SOCKET)
    assert.is_nil(env.PORT)
    assert.are.equal(tt.pgid(pid), pid) -- its own process group
  end)

  it("runs a port = \"auto\" service over TCP", function()
    local server = ten.start { config = [[
      service "web" { command = os.getenv("HELLO_BIN"), port = "auto", health = "/health" }
      instances { web = { "tcp" } }
    ]] }
    finally(function() server:cleanup() end)
    local inst = server:wait_state("web:tcp", "ready")
    assert.truthy(inst)
    assert.is_number(inst.port)
    local resp = server:get("tcp.web.localhost")
    assert.are.equal(200, resp.status)
    assert.are.equal("tcp", ten.json(resp).id)
  end)

  it("captures each instance's output into the logs", function()
    local server = start("on-failure")
    finally(function() server:cleanup() end)
    server:request { host = "one.hello.localhost", path = "/log?n=3" }
    local out = ten.wait_until(5000, function()
      local code, o = server:ten("logs", "hello:one")
      if code == 0 and o:find("hello log line 3", 1, true) then return o end
    end)
    assert.truthy(out)
    assert.matches("hello:one info  hello log line 2", out)
  end)
end)
