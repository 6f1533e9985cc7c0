-- Weighted pools: {service}.{domain} by smooth weighted round robin, live
-- weights that persist, weight 0 out of the pool, sleeping members woken.
local ten = require "ten"
local tt = require "tentest"

local function shares(server, host, n)
  local conn = ten.connect(server.port)
  local seen = {}
  for _ = 1, n do
    local resp = ten.request(server.port, { conn = conn, host = host })
    assert.are.equal(200, resp.status)
    local id = ten.json(resp).id
    seen[id] = (seen[id] or 0) + 1
  end
  conn:close()
  return seen
end

describe("weighted pools", function()
  local server

  setup(function()
    server = ten.start { config = ten.hello_config { service = "idle_timeout = 0,",
      extra = 'instances { hello = { "big", "small" } }' } }
    assert.truthy(server:wait_state("hello:big", "ready"))
    assert.truthy(server:wait_state("hello:small", "ready"))
  end)

  teardown(function() if server then server:cleanup() end end)

  it("splits 10,000 requests 90/10 within one percentage point", function()
    assert.are.equal(0, (server:ten("weight", "hello:big", "90")))
    assert.are.equal(0, (server:ten("weight", "hello:small", "10")))
    local seen = shares(server, "hello.localhost", 10000)
    local big = (seen.big or 0) / 100
    local small = (seen.small or 0) / 100
    assert.is_true(math.abs(big - 90) <= 1, ("big got %.2f%%"):format(big))
    assert.is_true(math.abs(small - 10) <= 1, ("small got %.2f%%"):format(small))
  end)

  it("shows weights in ten ps", function()
    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("WEIGHT", out)
    assert.matches("hello:big%s+ready%s+%d+%s+%S+%s+%d+%s+90", out)
    assert.are.equal(10, server:instance("hello:small").weight)
  end)

  it("takes a weight-0 instance out of the pool without stopping it", function()
    assert.are.equal(0, (server:ten("weight", "hello:small", "0")))
    local seen = shares(server, "hello.localhost", 200)
    assert.is_nil(seen.small)
    assert.are.equal(200, seen.big)
    assert.are.equal("ready", server:instance("hello:small").state)
    -- still reachable by its own name
    assert.are.equal("small", ten.json(server:get("small.hello.localhost")).id)
  end)

  it("wakes a stopped member with weight > 0", function()
    assert.are.equal(0, (server:ten("weight", "hello:small", "50")))
    local pid = server:instance("hello:small").pid
    tt.kill(pid, "TERM") -- a clean exit: stopped, not held by an operator
    assert.truthy(server:wait_state("hello:small", "stopped"))
    local seen = shares(server, "hello.localhost", 20)
    assert.is_true((seen.small or 0) > 0, "the stopped member was not woken")
    assert.are.equal("ready", server:instance("hello:small").state)
  end)

  it("rejects bad weights and changes nothing", function()
    for _, args in ipairs { { "hello:big", "101" }, { "hello:big", "-1" }, { "hello:big", "x" } } do
      local code, _, err = server:ten("weight", args[1], args[2])
      assert.are.equal(2, code)
      assert.matches("0 to 100", err)
    end
    local code, _, err = server:ten("weight", "hello:nope", "5")
    assert.are.equal(1, code)
    assert.matches("unknown instance", err)
    assert.are.equal(90, server:instance("hello:big").weight)
  end)

  it("keeps weights across a restart of ten", function()
    local data_dir = server.data_dir
    local how, code = server:stop("TERM")
    assert.are.equal(0, code)
    -- the same data dir, a new process
    local again = ten.start { config = ten.hello_config {
      extra = 'instances { hello = { "big", "small" } }' }, data_dir = data_dir }
    finally(function() again:cleanup() end)
    assert.truthy(again:wait_state("hello:big", "ready"))
    assert.are.equal(90, again:instance("hello:big").weight)
    assert.are.equal(50, again:instance("hello:small").weight)
  end)
end)
