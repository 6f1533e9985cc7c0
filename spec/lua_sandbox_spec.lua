-- Lua that cannot hang, exhaust or kill ten: hostile hooks keep failing
-- alone while the server answers everything else; hostile config files are
-- refused by `ten config` and by reload, and the running config stays.
local ten = require "ten"
local tt = require "tentest"

-- Bodies of hostile Lua, each run inside a hook or a config file. Those
-- that escaped before the sandbox come last in the file order of a run,
-- after the ones that only misbehave (os.exit would end the server).
local HOSTILE = {
  { name = "io.open", words = "io.open is not available",
    code = 'io.open(os.getenv("PWNED"), "w"):write("x")' },
  { name = "os.execute", words = "os.execute is not available", code = 'os.execute("true")' },
  { name = "package.loadlib", words = "package.loadlib is not available",
    code = 'package.loadlib("libc.so.6", "abort")' },
  { name = "load of bytecode", words = "attempt to load a binary chunk",
    code = 'assert(load("\\27LuaT\\0\\25\\147\\r\\n\\26\\n"))' },
  { name = "string.dump", words = "string.dump is not available",
    code = 'string.dump(function() end)' },
  { name = "collectgarbage(\"stop\")", words = 'collectgarbage("stop") is not available',
    code = 'collectgarbage("stop")' },
  { name = "os.exit", words = "os.exit is not available", code = "os.exit(0)" },
  { name = "debug.sethook", words = "debug.sethook is not available",
    code = "debug.sethook() while true do end" },
  { name = "a pcall loop", words = "time limit",
    code = "while true do pcall(function() while true do end end) end" },
  { name = "a pathological pattern", words = "time limit",
    code = 'string.rep("a", 1e5):find(".-.-.-.-b")' },
  { name = "string.rep of gigabytes", words = "memory limit",
    code = 'local s = string.rep("x", 1 << 30)' },
}

local function metric(server, series)
  local body = server:get("localhost", "/metrics").body
  local v = body:match("\n" .. series:gsub("%p", "%%%0") .. " ([%d%.e%+]+)")
  return v and tonumber(v)
end

describe("hostile hooks", function()
  it("fail alone: the server answers, ten ps works and SIGTERM exits 0", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local evil = {}
    for i, case in ipairs(HOSTILE) do
      evil[#evil + 1] = ("  [%q] = function() %s end,"):format(case.name, case.code)
    end
    local pwned = os.tmpname()
    os.remove(pwned)
    undo:add(function() os.remove(pwned) end)
    local server = ten.start { env = { PWNED = pwned }, config = table.concat({
      "local evil = {",
      table.concat(evil, "\n"),
      "}",
      "settings {",
      "  hook_log_interval = 0, -- every failure, so each case finds its own line",
      "  route = function(req)",
      '    local f = evil[req.headers["x-evil"] or ""]',
      "    if f then f() end",
      "  end,",
      "}",
      'service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }',
      'service "spin" {',
      '  command = os.getenv("HELLO_BIN"),',
      "  idle = function() while true do pcall(function() while true do end end) end end,",
      "}",
      'instances { hello = { "prod" }, spin = { "s" } }',
    }, "\n") }
    undo:add(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:prod", "ready"))

    for i, case in ipairs(HOSTILE) do
      local resp = ten.request(server.port, { host = "prod.hello.localhost",
        headers = { ["X-Evil"] = case.name } })
      assert.are.equal(200, resp.status, case.name) -- the hook failed: routed by Host
      assert.are.equal("prod", resp.headers["x-hello-id"], case.name)
      assert.are.equal(i, metric(server, "tenement_route_hook_errors_total"), case.name)
      assert.truthy(server:log():find(case.words, 1, true), case.name .. ": no '" .. case.words .. "' in the log")
      assert.are.equal(200, server:get("prod.hello.localhost").status, case.name)
    end
    assert.is_nil(tt.stat(pwned), "io.open wrote a file")

    -- The idle hook of spin:s spins every second and is cut off each time.
    local spin = ten.wait_until(10000, function()
      local inst = server:instance("spin:s")
      if inst.hook_errors.idle then return inst end
    end)
    assert.truthy(spin)
    assert.matches("tenement.lua:%d+: .*time limit", spin.hook_errors.idle)
    assert.are.equal("ready", spin.state)

    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("hello:prod", out)
    local how, status = server:stop("TERM")
    assert.are.equal("exited", how)
    assert.are.equal(0, status)
  end)
end)

describe("hostile config files", function()
  local server
  setup(function()
    server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "k" } }' } }
    assert.truthy(server:wait_state("hello:k", "ready"))
  end)
  teardown(function() if server then server:cleanup() end end)

  local cases = {}
  for _, case in ipairs(HOSTILE) do cases[#cases + 1] = case end
  -- What a non-atomic save leaves behind: the whole file.
  cases[#cases + 1] = { name = "an empty file", code = "", whole = true, words = "declares no service" }
  cases[#cases + 1] = { name = "a file of comments", code = "-- soon\n", whole = true,
    words = "declares no service" }
  cases[#cases + 1] = { name = "settings alone", code = 'settings { domain = "localhost" }',
    whole = true, words = "instances {}" }

  for _, case in ipairs(cases) do
    it("refuses " .. case.name .. " with ten config (exit 2) and on reload", function()
      local dir = assert(tt.mkdtemp("ten-sandbox-"))
      finally(function() tt.rm_rf(dir) end)
      local path = dir .. "/tenement.lua"
      local text = case.whole and case.code or (case.code .. "\n" .. ten.hello_config())
      assert(tt.write_file(path, text))
      local code, out, err = ten.run({ "config", "--config", path },
        { PWNED = dir .. "/pwned", HELLO_BIN = ten.hello })
      assert.are.equal(2, code, out .. err)
      assert.truthy(err:find(case.words, 1, true), err)
      assert.is_nil(tt.stat(dir .. "/pwned"))

      local before = server:instance("hello:k")
      assert(tt.write_file(server.config_path, text))
      code, out, err = server:ten("reload")
      assert.are.equal(1, code, out .. err)
      assert.truthy(err:find(case.words, 1, true), err)
      local after = server:instance("hello:k")
      assert.are.equal(before.pid, after.pid)
      assert.are.equal("ready", after.state)
      assert.are.equal(200, server:get("k.hello.localhost").status)
    end)
  end

  it("accepts what the sandbox offers", function()
    local dir = assert(tt.mkdtemp("ten-sandbox-"))
    finally(function() tt.rm_rf(dir) end)
    local path = dir .. "/tenement.lua"
    assert(tt.write_file(path, [[
      local words = {}
      for w in ("a b c"):gmatch("%a") do words[#words + 1] = w:upper() end
      assert(table.concat(words, ",") == "A,B,C")
      assert(math.floor(2.5) == 2 and utf8.char(72) == "H" and #tostring(os.time()) > 0)
      assert(os.date("!%Y", 0) == "1970" and os.clock() >= 0 and os.getenv("HOME"))
      assert(select(2, pcall(error, "x", 0)) == "x" and debug.traceback("t"):find("^t"))
      assert(coroutine.wrap(function() coroutine.yield(1) end)() == 1)
      assert(load("return 1 + 1")() == 2 and _G.settings == settings)
      assert(collectgarbage("count") > 0)
      assert(string.format("%5.1f", 1) == "  1.0" and ("x"):rep(3, "-") == "x-x-x")
      local t = table.move({ 1, 2, 3 }, 1, 3, 1, {})
      table.sort(t, function(a, b) return a > b end)
      assert(table.unpack(t) == 3 and #t == 3 and table.remove(t) == 1)
      settings { domain = "localhost" }
      service "api" { command = "app" }
    ]]))
    local code, out, err = ten.run { "config", "--config", path }
    assert.are.equal(0, code, out .. err)
  end)
end)
