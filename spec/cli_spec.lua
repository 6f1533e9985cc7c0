-- The CLI against a running server over the control socket: ps, spawn,
-- stop, restart; exit codes 0 / 1 / 2 / 3; bad input changes nothing.
local ten = require "ten"
local tt = require "tentest"
local cjson = require "cjson"

describe("cli", function()
  local server

  setup(function()
    server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "a" } }' } }
    assert.truthy(server:wait_state("hello:a", "ready"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  it("ps --json lists instances with their fields", function()
    local code, out = server:ten("ps", "--json")
    assert.are.equal(0, code)
    local list = cjson.decode(out)
    assert.are.equal(1, #list)
    local a = list[1]
    for _, k in ipairs { "service", "id", "state", "pid", "socket", "uptime", "restarts" } do
      assert.are_not.equal(nil, a[k], k)
    end
  end)

  it("ps prints a readable table", function()
    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("INSTANCE%s+STATE%s+PID", out)
    assert.matches("hello:a%s+ready", out)
  end)

  it("spawn starts a new instance and answers once it is ready", function()
    local code, out, err = server:ten("spawn", "hello", "--id", "b")
    assert.are.equal(0, code, err)
    assert.matches("hello:b ready in %d+ ms %(pid %d+%)", out)
    assert.are.equal(200, server:get("b.hello.localhost").status)
  end)

  it("stop stops an instance and waits for its exit", function()
    assert.are.equal(0, (server:ten("spawn", "hello", "--id", "c")))
    local pid = server:instance("hello:c").pid
    local code, out = server:ten("stop", "hello:c")
    assert.are.equal(0, code)
    assert.matches("hello:c stopped", out)
    assert.is_false(tt.alive(pid))
    assert.are.equal("stopped", server:instance("hello:c").state)
    assert.are.equal(502, server:get("c.hello.localhost").status)
  end)

  it("restart replaces the process and serves again", function()
    local old = server:instance("hello:a").pid
    local code, out = server:ten("restart", "hello:a")
    assert.are.equal(0, code)
    assert.matches("hello:a ready", out)
    local inst = server:instance("hello:a")
    assert.are_not.equal(old, inst.pid)
    assert.is_false(tt.alive(old))
    assert.are.equal(inst.pid, ten.json(server:get("a.hello.localhost")).pid)
  end)

  it("restart starts a stopped instance", function()
    assert.are.equal(0, (server:ten("spawn", "hello", "--id", "d")))
    assert.are.equal(0, (server:ten("stop", "hello:d")))
    local code = server:ten("restart", "hello:d")
    assert.are.equal(0, code)
    assert.are.equal("ready", server:instance("hello:d").state)
  end)

  -- Each: arguments, exit code, words in the message. None may change anything.
  local errors = {
    { { "spawn", "nosuch", "--id", "x" }, 1, "unknown service 'nosuch'" },
    { { "spawn", "hello", "--id", "a" }, 1, "hello:a is already running" },
    { { "spawn", "hello", "--id", "Bad_Id" }, 1, "invalid id 'Bad_Id'" },
    { { "stop", "hello:nope" }, 1, "unknown instance 'hello:nope'" },
    { { "restart", "nosuch:x" }, 1, "unknown instance 'nosuch:x'" },
    { { "stop", "hello" }, 2, "is not SERVICE:ID" },
    { { "spawn", "hello" }, 2, "usage: ten spawn SERVICE --id ID" },
    { { "ps", "--bogus" }, 2, "unknown option '--bogus'" },
    { { "frobnicate" }, 2, "unknown command 'frobnicate'" },
    { { "stop" }, 2, "usage: ten stop SERVICE:ID" },
  }
  for _, case in ipairs(errors) do
    it("ten " .. table.concat(case[1], " ") .. " -> exit " .. case[2], function()
      local before = server:ps()
      local code, _, err = server:ten(table.unpack(case[1]))
      assert.are.equal(case[2], code)
      assert.truthy(err:find(case[3], 1, true), err)
      local after = server:ps()
      assert.are.equal(#before, #after)
      for i = 1, #before do
        assert.are.equal(before[i].pid, after[i].pid)
        assert.are.equal(before[i].state, after[i].state)
      end
    end)
  end

  it("stop of a stopped instance is an error and changes nothing", function()
    assert.are.equal(0, (server:ten("spawn", "hello", "--id", "e")))
    assert.are.equal(0, (server:ten("stop", "hello:e")))
    local code, _, err = server:ten("stop", "hello:e")
    assert.are.equal(1, code)
    assert.matches("not running", err)
  end)

  it("config --running prints the server's config", function()
    local code, out = server:ten("config", "--running")
    assert.are.equal(0, code)
    assert.are.equal("localhost", cjson.decode(out).settings.domain)
  end)

  it("exits 3 with advice when no server is running", function()
    local dir = assert(tt.mkdtemp("ten-cli-"))
    finally(function() tt.rm_rf(dir) end)
    for _, args in ipairs { { "ps" }, { "stop", "a:b" }, { "spawn", "a", "--id", "b" } } do
      table.insert(args, "--data-dir")
      table.insert(args, dir)
      local code, _, err = ten.run(args)
      assert.are.equal(3, code)
      assert.matches("no server is running", err)
      assert.matches("ten serve", err)
    end
    local code = ten.run({ "ps" }, { TENEMENT_DATA_DIR = dir })
    assert.are.equal(3, code)
  end)

  it("finds the server through TENEMENT_DATA_DIR and --config", function()
    local code = ten.run({ "ps" }, { TENEMENT_DATA_DIR = server.data_dir })
    assert.are.equal(0, code)
    local cfg = server.dir .. "/via-config.lua"
    tt.write_file(cfg, ("settings { data_dir = %q }\ninstances {}"):format(server.data_dir))
    code = ten.run { "ps", "--config", cfg }
    assert.are.equal(0, code)
  end)

  it("answers bad control-socket input with an error line and keeps serving", function()
    local unix = require "socket.unix"
    local c = assert(unix())
    assert(c:connect(server.data_dir .. "/ten.sock"))
    c:settimeout(10)
    for _, line in ipairs { "not json", "[1,2]", '{"cmd":5}', '{"cmd":"nope"}',
      '{"cmd":"spawn","args":[]}', '{"cmd":"spawn","args":{"service":"hello"}}' } do
      assert(c:send(line .. "\n"))
      local line = assert(c:receive("*l"))
      local reply = cjson.decode(line)
      assert.is_false(reply.ok)
      assert.is_string(reply.error)
    end
    assert(c:send('{"cmd":"ping"}\n'))
    local pong = assert(c:receive("*l"))
    assert.is_true(cjson.decode(pong).ok)
    c:close()
  end)

  it("makes the control socket private to its owner", function()
    local st = tt.stat(server.data_dir .. "/ten.sock")
    assert.are.equal("socket", st.type)
    assert.are.equal(tonumber("600", 8), st.mode & tonumber("777", 8))
  end)

  it("refuses a second server on the same data dir", function()
    local code, _, err = ten.run { "serve", "--port", "0", "--data-dir", server.data_dir }
    assert.are.equal(1, code)
    assert.matches("already running", err)
    assert.are.equal(0, (server:ten("ps")))
  end)

  it("ten help and ten version", function()
    local code, out = ten.run { "help" }
    assert.are.equal(0, code)
    assert.matches("usage: ten", out)
    code, out = ten.run { "version" }
    assert.are.equal(0, code)
    assert.matches("^ten %d+%.%d+%.%d+", out)
    code = ten.run {}
    assert.are.equal(2, code)
  end)
end)
