-- Periodic health checks: a ready instance whose health path fails
-- health_failures times in a row is restarted, and ps shows it.
local ten = require "ten"

describe("health checks", function()
  it("restarts an instance whose health checks keep failing", function()
    local server = ten.start { config = ten.hello_config { service = [[
      health_interval = 0.2, health_failures = 2,]], extra = 'instances { hello = { "h" } }' } }
    finally(function() server:cleanup() end)
    local before = server:wait_state("hello:h", "ready")
    assert.truthy(before)
    assert.are.equal("ok", before.health)
    local resp = server:request { host = "h.hello.localhost", path = "/health/fail", method = "POST" }
    assert.are.equal(200, resp.status)
    local after = ten.wait_until(10000, function()
      local i = server:instance("hello:h")
      if i.state == "ready" and i.pid ~= before.pid then return i end
    end)
    assert.truthy(after, "not restarted")
    assert.are.equal("ok", after.health)
    assert.are.equal(1, after.restarts)
    assert.matches("health check /health failed 2 times in a row", server:log())
    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("hello:h%s+ready.-ok", out)
  end)
end)
