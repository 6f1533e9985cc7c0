-- Lua policy hooks: weight, idle, route; and what happens when a hook
-- fails, returns the wrong type, or never returns.
local ten = require "ten"
local tt = require "tentest"

local CONFIG = [[
settings {
  hook_log_interval = 0, -- every failure of this spec is logged
  route = function(req)
    if req.headers["x-route"] then return req.headers["x-route"] end
    if req.headers["X-Pick"] then
      for name, value in pairs(req.headers) do
        if name == "x-pick" then return "hello:" .. value end
      end
    end
    if req.headers["x-keep"] then kept = req end
    if req.headers["x-stale"] then return kept.path end
    if req.headers["x-route-bad"] then return 42 end
    if req.path == "/explode" then error("route exploded") end
    return nil
  end,
}
service "hello" {
  command = os.getenv("HELLO_BIN"),
  health = "/health",
  weight = function(inst) return inst.id == "canary" and 10 or 90 end,
  idle = function(inst) return inst.idle_seconds > 0.5 and inst.id ~= "prod" end,
}
service "bad" {
  command = os.getenv("HELLO_BIN"),
  weight = function(inst) error("weight exploded") end,
  idle = function(inst) return "yes" end,
}
service "spin" {
  command = os.getenv("HELLO_BIN"),
  weight = function(inst) while true do end end,
}
instances { hello = { "prod", "canary" }, bad = { "b" }, spin = { "s" } }
]]

describe("hooks", function()
  local server
  setup(function()
    server = ten.start { config = CONFIG }
    for _, key in ipairs { "hello:prod", "hello:canary", "bad:b", "spin:s" } do
      assert.truthy(server:wait_state(key, "ready"), key)
    end
  end)
  teardown(function() if server then server:cleanup() end end)

  it("weight: sets each instance's share from Lua", function()
    assert.are.equal(90, server:instance("hello:prod").weight)
    assert.are.equal(10, server:instance("hello:canary").weight)
  end)

  it("idle: decides which instances stop", function()
    assert.truthy(server:wait_state("hello:canary", "stopped", 10000))
    tt.sleep(1500)
    assert.are.equal("ready", server:instance("hello:prod").state)
  end)

  it("route: picks the instance for a request, or leaves it to the Host", function()
    local resp = server:request { host = "anything.example", headers = { ["X-Route"] = "hello:prod" } }
    assert.are.equal(200, resp.status)
    assert.are.equal("prod", ten.json(resp).id)
    assert.are.equal("b", ten.json(server:get("b.bad.localhost")).id)
  end)

  it("route: reads headers in any case and iterates them with pairs", function()
    local resp = server:request { host = "anything.example", headers = { ["x-pick"] = "canary" } }
    assert.are.equal(200, resp.status)
    assert.are.equal("canary", ten.json(resp).id)
  end)

  it("route: a request kept past its call is an error, not a stale read", function()
    assert.are.equal(200, server:request { host = "prod.hello.localhost", headers = { ["X-Keep"] = "1" } }.status)
    local resp = server:request { host = "prod.hello.localhost", headers = { ["X-Stale"] = "1" } }
    assert.are.equal(200, resp.status) -- the hook failed: Host routing
    assert.are.equal("prod", ten.json(resp).id)
    assert.matches("only available during the hook call", server:log())
  end)

  it("reports a failing hook with file:line and falls back to the default", function()
    local bad = server:instance("bad:b")
    assert.are.equal(100, bad.weight) -- the service's default weight
    assert.matches("tenement.lua:%d+: weight exploded", bad.hook_errors.weight)
    assert.matches("weight hook failed.*tenement.lua:%d+: weight exploded", server:log())
    local api = ten.json(server:get("localhost", "/api/instances/bad:b"))
    assert.matches("weight exploded", api.hook_errors.weight)
  end)

  it("reports a hook returning the wrong type", function()
    local bad = ten.wait_until(5000, function()
      local i = server:instance("bad:b")
      if i.hook_errors.idle then return i end
    end)
    assert.truthy(bad)
    assert.matches("idle hook must return true or false, got string", bad.hook_errors.idle)
    assert.matches("tenement.lua:%d+", bad.hook_errors.idle)
    assert.are.equal("ready", bad.state) -- default: no idle_timeout, so it stays
  end)

  it("cuts a hook that never returns and keeps serving", function()
    local spin = server:instance("spin:s")
    assert.matches("tenement.lua:%d+: .*time limit", spin.hook_errors.weight)
    assert.are.equal(100, spin.weight)
    assert.are.equal(200, server:get("s.spin.localhost").status)
  end)

  it("routes by Host when the route hook fails or answers nonsense", function()
    local resp = server:request { host = "prod.hello.localhost", path = "/explode" }
    assert.are.equal(404, resp.status) -- hello has no /explode, but it was reached
    assert.are.equal("prod", resp.headers["x-hello-id"])
    assert.matches("route hook failed.*route exploded", server:log())
    resp = server:request { host = "prod.hello.localhost", headers = { ["X-Route-Bad"] = "1" } }
    assert.are.equal(200, resp.status)
    assert.matches("route hook must return", server:log())
  end)
end)

describe("a hook that fails on every request", function()
  it("is logged at once, then as one count per interval; every failure is counted", function()
    local server = ten.start { config = [[
      settings {
        hook_log_interval = 0.5,
        route = function(req) if req.path == "/explode" then error("route exploded") end end,
      }
      service "hello" { command = os.getenv("HELLO_BIN") }
      instances { hello = { "p" } }
    ]] }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:p", "ready"))
    local failures = 200
    for _ = 1, failures do
      assert.are.equal(404, server:request { host = "p.hello.localhost", path = "/explode" }.status)
    end
    tt.sleep(600) -- past the interval: the next failure brings the count
    assert.are.equal(404, server:request { host = "p.hello.localhost", path = "/explode" }.status)
    failures = failures + 1

    local lines, counted = 0, 0
    for line in server:log():gmatch("[^\n]*route hook failed[^\n]*") do
      lines = lines + 1
      counted = counted + (tonumber(line:match("failed (%d+) more times?")) or 1)
      assert.matches("route exploded", line)
    end
    assert.is_true(lines >= 2 and lines < failures / 10, lines .. " lines for " .. failures .. " failures")
    assert.are.equal(failures, counted) -- each failure is in the log once, as a line or a count
    local metrics = server:get("localhost", "/metrics").body
    assert.are.equal(failures, tonumber(metrics:match("\ntenement_route_hook_errors_total (%d+)")))
  end)
end)
