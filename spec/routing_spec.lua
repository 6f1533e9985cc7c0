-- Routing by Host against the root domain: instances answer for themselves,
-- the root domain serves /health and the API, anything else is a clear 404.
local ten = require "ten"

describe("routing", function()
  local server

  setup(function()
    server = ten.start { config = ten.hello_config {
      extra = 'instances { hello = { "alpha", "beta" } }' } }
    assert.truthy(server:wait_state("hello:alpha", "ready"))
    assert.truthy(server:wait_state("hello:beta", "ready"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("routes {id}.{service}.{domain} to that instance", function()
    for _, id in ipairs { "alpha", "beta" } do
      local resp = server:get(id .. ".hello.localhost")
      assert.are.equal(200, resp.status)
      local body = ten.json(resp)
      assert.are.equal(id, body.id)
      assert.are.equal("hello", body.service)
      assert.are.equal(server:instance("hello:" .. id).pid, body.pid)
    end
  end)

  it("ignores the port and the case of the Host header", function()
    local resp = server:get("ALPHA.Hello.LocalHost:" .. server.port)
    assert.are.equal(200, resp.status)
    assert.are.equal("alpha", ten.json(resp).id)
  end)

  it("answers an unknown host with a 404 naming the host", function()
    for _, host in ipairs { "example.com", "a.b.c.localhost", "localhost.evil" } do
      local resp = server:get(host)
      assert.are.equal(404, resp.status)
      assert.are.equal("application/json", resp.headers["content-type"])
      assert.are.equal(host:lower(), ten.json(resp).host)
    end
  end)

  it("answers an instance that does not exist with a 404", function()
    local resp = server:get("gamma.hello.localhost")
    assert.are.equal(404, resp.status)
    local body = ten.json(resp)
    assert.are.equal("no such instance", body.error)
    assert.are.equal("gamma", body.id)
    resp = server:get("x.nosuch.localhost")
    assert.are.equal(404, resp.status)
    assert.are.equal("no such service", ten.json(resp).error)
  end)

  it("routes the service host across the pool", function()
    local seen = {}
    for _ = 1, 10 do
      local resp = server:get("hello.localhost")
      assert.are.equal(200, resp.status)
      seen[ten.json(resp).id] = true
    end
    assert.is_true(seen.alpha and seen.beta)
    assert.are.equal(404, server:get("nosuch.localhost").status)
  end)

  it("rejects a request without Host, or with two", function()
    local conn = ten.connect(server.port)
    conn:send("GET / HTTP/1.1\r\n\r\n")
    local resp = ten.read_response(conn)
    assert.are.equal(400, resp.status)
    conn:close()
    conn = ten.connect(server.port)
    conn:send("GET / HTTP/1.1\r\nHost: alpha.hello.localhost\r\nHost: beta.hello.localhost\r\n\r\n")
    resp = ten.read_response(conn)
    assert.are.equal(400, resp.status)
    conn:close()
  end)

  it("serves /health on the root domain", function()
    local resp = server:get("localhost", "/health")
    assert.are.equal(200, resp.status)
    local body = ten.json(resp)
    assert.are.equal("ok", body.status)
    assert.is_string(body.version)
    assert.is_number(body.uptime)
    assert.are.equal(2, body.instances.total)
    assert.are.equal(2, body.instances.ready)
  end)

  it("lists instances at /api/instances and one at /api/instances/{svc}:{id}", function()
    local resp = server:get("localhost", "/api/instances")
    assert.are.equal(200, resp.status)
    local list = ten.json(resp)
    assert.are.equal(2, #list)
    for _, inst in ipairs(list) do
      assert.are.equal("hello", inst.service)
      assert.are.equal("ready", inst.state)
      assert.is_number(inst.pid)
      assert.is_string(inst.socket)
      assert.is_number(inst.uptime)
      assert.are.equal(0, inst.restarts)
    end
    resp = server:get("localhost", "/api/instances/hello:beta")
    assert.are.equal(200, resp.status)
    assert.are.equal("beta", ten.json(resp).id)
    resp = server:get("localhost", "/api/instances/hello%3Aalpha")
    assert.are.equal("alpha", ten.json(resp).id)
    resp = server:get("localhost", "/api/instances/hello:nope")
    assert.are.equal(404, resp.status)
    resp = server:get("localhost", "/nope")
    assert.are.equal(404, resp.status)
  end)

  it("keeps connections alive and answers pipelined requests in order", function()
    local conn = ten.connect(server.port)
    local batch = {}
    for i = 1, 10 do
      local id = i % 2 == 0 and "alpha" or "beta"
      batch[#batch + 1] = ("GET / HTTP/1.1\r\nHost: %s.hello.localhost\r\n\r\n"):format(id)
    end
    batch[#batch + 1] = "GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n"
    assert(conn:send(table.concat(batch)))
    for i = 1, 10 do
      local resp = ten.read_response(conn)
      assert.are.equal(200, resp.status)
      assert.are.equal(i % 2 == 0 and "alpha" or "beta", ten.json(resp).id)
    end
    assert.are.equal("ok", ten.json(ten.read_response(conn)).status)
    conn:close()
  end)

  it("sets X-Forwarded-For, -Proto and -Host for the app", function()
    local resp = server:request { host = "alpha.hello.localhost", path = "/headers",
      headers = { ["X-Forwarded-For"] = "203.0.113.9", Connection = "close, X-Drop-Me",
        ["X-Drop-Me"] = "1", ["Keep-Alive"] = "timeout=5" } }
    assert.are.equal(200, resp.status)
    local seen = ten.json(resp)
    assert.are.equal("203.0.113.9, 127.0.0.1", seen["x-forwarded-for"])
    assert.are.equal("http", seen["x-forwarded-proto"])
    assert.are.equal("alpha.hello.localhost", seen["x-forwarded-host"])
    assert.are.equal("alpha.hello.localhost", seen["host"])
    assert.is_nil(seen["x-drop-me"])
    assert.is_nil(seen["keep-alive"])
    assert.is_nil(seen["connection"])
  end)
end)
