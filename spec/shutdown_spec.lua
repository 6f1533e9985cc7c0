-- No child outlives `ten serve`: not after SIGTERM (graceful, exit 0), not
-- after SIGKILL (the kernel kills them through PR_SET_PDEATHSIG).
local ten = require "ten"
local tt = require "tentest"

local function start_three()
  local server = ten.start { config = ten.hello_config {
    extra = 'instances { hello = { "a", "b", "c" } }' } }
  local pids = {}
  for _, id in ipairs { "a", "b", "c" } do
    local inst = server:wait_state("hello:" .. id, "ready")
    assert.truthy(inst)
    pids[#pids + 1] = inst.pid
  end
  return server, pids
end

describe("shutdown", function()
  it("SIGTERM finishes requests in flight, stops every child and exits 0", function()
    local server, pids = start_three()
    finally(function() server:cleanup() end)
    -- A slow request is in flight when the signal arrives: it still completes.
    local conn = ten.connect(server.port)
    conn:send("GET /sleep?ms=300 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
    tt.sleep(50)
    tt.kill(server.pid, "TERM")
    local resp = ten.read_response(conn)
    assert.are.equal(200, resp.status)
    assert.are.equal("close", resp.headers["connection"])
    conn:close()
    local how, code = tt.wait(server.pid, 30000)
    server.exited = true
    assert.are.equal("exited", how)
    assert.are.equal(0, code, server:log())
    for _, pid in ipairs(pids) do assert.is_true(tt.wait_gone(pid, 5000), "pid " .. pid) end
    assert.is_nil(tt.stat(server.data_dir .. "/ten.sock"))
  end)

  it("SIGINT is the same as SIGTERM", function()
    local server, pids = start_three()
    finally(function() server:cleanup() end)
    local how, code = server:stop("INT")
    assert.are.equal("exited", how)
    assert.are.equal(0, code)
    for _, pid in ipairs(pids) do assert.is_true(tt.wait_gone(pid, 5000)) end
  end)

  it("SIGKILL of ten takes every child with it", function()
    local server, pids = start_three()
    finally(function() server:cleanup() end)
    local how, code = server:stop("KILL")
    assert.are.equal("signaled", how)
    assert.are.equal(9, code)
    for _, pid in ipairs(pids) do assert.is_true(tt.wait_gone(pid, 5000), "pid " .. pid) end
    -- The next server on the same data dir starts cleanly.
    local code2, _, err = ten.run { "ps", "--data-dir", server.data_dir }
    assert.are.equal(3, code2, err)
  end)

  it("refuses new connections once stopping", function()
    local server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "a" } }' } }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:a", "ready"))
    local conn = ten.connect(server.port)
    conn:send("GET /sleep?ms=500 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
    tt.sleep(50)
    tt.kill(server.pid, "TERM")
    tt.sleep(100)
    local socket = require "socket"
    local probe = socket.tcp()
    probe:settimeout(2)
    local ok = probe:connect("127.0.0.1", server.port)
    probe:close()
    assert.is_nil(ok)
    assert.are.equal(200, ten.read_response(conn).status)
    conn:close()
    local how, code = tt.wait(server.pid, 30000)
    server.exited = true
    assert.are.equal(0, code)
  end)
end)
