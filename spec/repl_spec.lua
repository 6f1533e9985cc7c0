-- ten repl: Lua inside the running server, through the control socket.
local ten = require "ten"
local tt = require "tentest"

describe("repl", function()
  local server
  setup(function()
    server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "r" } }' } }
    assert.truthy(server:wait_state("hello:r", "ready"))
  end)
  teardown(function() if server then server:cleanup() end end)

  local function repl(code)
    return server:ten("repl", "-e", code)
  end

  it("evaluates expressions and prints tables as tables", function()
    local code, out = repl("1 + 2")
    assert.are.equal(0, code)
    assert.are.equal("3\n", out)
    code, out = repl("ten.ps()")
    assert.are.equal(0, code)
    assert.matches('id = "r"', out)
    assert.matches('state = "ready"', out)
    assert.matches("{\n  {\n", out)
  end)

  it("drives the server: spawn, weight, stop, config", function()
    local code, out = repl('ten.spawn("hello", "two").id')
    assert.are.equal(0, code)
    assert.are.equal('"two"\n', out)
    assert.truthy(server:wait_state("hello:two", "ready"))
    code, out = repl('ten.weight("hello:two", 30).weight')
    assert.are.equal("30\n", out)
    assert.are.equal(30, server:instance("hello:two").weight)
    code = repl('ten.stop("hello:two")')
    assert.are.equal(0, code)
    assert.truthy(server:wait_state("hello:two", "stopped"))
    code, out = repl('ten.config().settings.domain')
    assert.are.equal('"localhost"\n', out)
  end)

  it("keeps variables between chunks and captures print", function()
    assert.are.equal(0, (repl("counter = 41")))
    local code, out = repl("counter = counter + 1; print('now', counter)")
    assert.are.equal(0, code)
    assert.are.equal("now\t42\n", out)
  end)

  it("reports errors and leaves the server untouched", function()
    local before = server:instance("hello:r")
    local code, _, err = repl("error('nope')")
    assert.are.equal(1, code)
    assert.matches("nope", err)
    code, _, err = repl("ten.stop('nosuch:x')")
    assert.are.equal(1, code)
    assert.matches("unknown instance", err)
    code, _, err = repl("this is not lua")
    assert.are.equal(1, code)
    local after = server:instance("hello:r")
    assert.are.equal(before.pid, after.pid)
    assert.are.equal("ready", after.state)
  end)

  it("cannot end or stall the server", function()
    local cases = {
      { "os.exit()", "os.exit is not available" },
      { "while true do end", "time limit" },
      { "while true do pcall(function() while true do end end) end", "time limit" },
      { 'string.rep("a", 1e5):find(".-.-.-.-b")', "time limit" },
      { 'local s = string.rep("x", 1 << 30)', "memory limit" },
      { 'io.open("/etc/hostname")', "io.open is not available" },
      { 'collectgarbage("stop")', 'collectgarbage("stop") is not available' },
      { 'require("os")', "require is not available" },
    }
    for _, case in ipairs(cases) do
      local code, _, err = repl(case[1])
      assert.are.equal(1, code, case[1])
      assert.truthy(err:find(case[2], 1, true), case[1] .. ": " .. err)
      -- and the server goes on, the REPL too
      assert.are.equal(0, (server:ten("ps")), case[1])
      assert.are.equal(200, server:get("r.hello.localhost").status, case[1])
      assert.are.equal("2\n", select(2, repl("1 + 1")), case[1])
    end
  end)

  it("offers the documented set", function()
    local code, out = repl("type(ten.ps), type(string.find), type(os.time), type(debug.traceback)")
    assert.are.equal(0, code)
    assert.are.equal('"function"\n"function"\n"function"\n"function"\n', out)
  end)

  it("reads a session from stdin, continuing incomplete chunks", function()
    local dir = assert(tt.mkdtemp("ten-repl-"))
    finally(function() tt.rm_rf(dir) end)
    tt.write_file(dir .. "/in", "for i = 1, 3 do\n  print(i)\nend\nreturn 'done'\n")
    local pid = assert(tt.spawn { argv = { ten.bin, "repl", "--data-dir", server.data_dir },
      stdin = dir .. "/in", stdout = dir .. "/out", stderr = dir .. "/err", env_inherit = true, env = {} })
    local how, code = tt.wait(pid, 30000)
    assert.are.equal("exited", how)
    assert.are.equal(0, code, tt.read_file(dir .. "/err"))
    assert.are.equal('1\n2\n3\n"done"\n', tt.read_file(dir .. "/out"))
  end)

  it("is reachable only through the control socket", function()
    for _, path in ipairs { "/api/eval", "/api/repl", "/eval" } do
      local resp = server:request { host = "localhost", path = path, method = "POST", body = "1+1" }
      assert.are.equal(404, resp.status)
    end
    local st = tt.stat(server.data_dir .. "/ten.sock")
    assert.are.equal(tonumber("600", 8), st.mode & tonumber("777", 8))
  end)
end)
