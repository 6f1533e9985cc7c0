-- /metrics: Prometheus text that counts what really happened, passes
-- `promtool check metrics`, and forgets instances that are gone.
local ten = require "ten"
local tt = require "tentest"

local function scrape(server)
  local resp = server:get("localhost", "/metrics")
  assert.are.equal(200, resp.status)
  assert.matches("^text/plain; version=0.0.4", resp.headers["content-type"])
  return resp.body
end

local function value(text, series)
  local escaped = series:gsub("%p", "%%%0")
  local v = text:match("\n" .. escaped .. " ([%d%.e%+%-]+)")
  return v and tonumber(v)
end

local function promtool()
  for _, p in ipairs { "/usr/bin/promtool", "/usr/local/bin/promtool" } do
    if tt.stat(p) then return p end
  end
end

describe("metrics", function()
  local server
  setup(function()
    server = ten.start { config = ten.hello_config { extra = [[
      service "gone" { command = os.getenv("HELLO_BIN") }
      instances { hello = { "m" }, gone = { "g" } }]] } }
    assert.truthy(server:wait_state("hello:m", "ready"))
    assert.truthy(server:wait_state("gone:g", "ready"))
  end)
  teardown(function() if server then server:cleanup() end end)

  it("counts requests by instance and code, with durations", function()
    for _ = 1, 17 do assert.are.equal(200, server:get("m.hello.localhost").status) end
    for _ = 1, 3 do assert.are.equal(404, server:get("m.hello.localhost", "/nope").status) end
    local text = scrape(server)
    assert.are.equal(17, value(text, 'tenement_requests_total{service="hello",instance="m",code="200"}'))
    assert.are.equal(3, value(text, 'tenement_requests_total{service="hello",instance="m",code="404"}'))
    assert.are.equal(20, value(text, 'tenement_request_duration_seconds_count{service="hello",instance="m"}'))
    assert.are.equal(20, value(text, 'tenement_request_duration_seconds_bucket{service="hello",instance="m",le="+Inf"}'))
    assert.are.equal(1, value(text, 'tenement_instance_up{service="hello",instance="m"}'))
    assert.is_true(value(text, "tenement_connections") >= 1)
    assert.is_true(value(text, "process_resident_memory_bytes") > 0)
    assert.is_not_nil(value(text, "process_cpu_seconds_total"))
  end)

  it("counts log lines, restarts, cold starts and upstream errors", function()
    server:request { host = "m.hello.localhost", path = "/log?n=40" }
    local text = ten.wait_until(5000, function()
      local t = scrape(server)
      if value(t, "tenement_log_lines_total") >= 40 then return t end
    end)
    assert.truthy(text)
    assert.are.equal(0, value(text, "tenement_log_lines_dropped_total"))
    assert.are.equal(0, (server:ten("restart", "hello:m")))
    text = scrape(server)
    assert.are.equal(1, value(text, 'tenement_instance_restarts_total{service="hello",instance="m"}'))
    -- a stopped (not held) instance woken by a request is a cold start
    tt.kill(server:instance("hello:m").pid, "TERM")
    assert.truthy(server:wait_state("hello:m", "stopped"))
    assert.are.equal(200, server:get("m.hello.localhost").status)
    text = scrape(server)
    assert.are.equal(1, value(text, 'tenement_instance_cold_starts_total{service="hello",instance="m"}'))
    assert.are.equal(1, value(text, 'tenement_instance_wake_duration_seconds_count{service="hello"}'))
    assert.are.equal(0, (server:ten("stop", "gone:g")))
    assert.are.equal(502, server:get("g.gone.localhost").status)
    text = scrape(server)
    assert.are.equal(1, value(text, 'tenement_upstream_errors_total{kind="not_running"}'))
  end)

  it("passes promtool check metrics", function()
    local tool = promtool()
    assert.truthy(tool, "promtool is missing (Debian package prometheus; .ci/deps installs it)")
    local dir = assert(tt.mkdtemp("ten-metrics-"))
    finally(function() tt.rm_rf(dir) end)
    tt.write_file(dir .. "/metrics", scrape(server))
    local pid = assert(tt.spawn { argv = { "/bin/sh", "-c", tool .. " check metrics < " .. dir .. "/metrics" },
      stdout = dir .. "/out", stderr = dir .. "/err" })
    local how, code = tt.wait(pid, 30000)
    assert.are.equal("exited", how)
    local report = (tt.read_file(dir .. "/out") or "") .. (tt.read_file(dir .. "/err") or "")
    assert.are.equal(0, code, report)
    assert.are.equal("", report)
  end)

  it("drops the series of an instance that no longer exists", function()
    assert.matches('instance="g"', scrape(server))
    local config = ten.hello_config { extra = 'instances { hello = { "m" } }' }
    tt.write_file(server.config_path, config)
    assert.are.equal(0, (server:ten("reload")))
    assert.truthy(ten.wait_until(10000, function() return server:instance("gone:g") == nil end))
    local text = scrape(server)
    assert.is_nil(text:find('service="gone"', 1, true))
    assert.matches('instance="m"', text)
  end)
end)
