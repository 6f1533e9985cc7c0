-- tenement.lua: defaults, templating, and one clear file:line message (exit
-- status 2) for every kind of mistake, from both `ten config` and `ten serve`.
local ten = require "ten"
local tt = require "tentest"
local cjson = require "cjson"

local function with_config(text, fn)
  local dir = assert(tt.mkdtemp("ten-config-"))
  local path = dir .. "/tenement.lua"
  assert(tt.write_file(path, text))
  local ok, err = pcall(fn, path, dir)
  tt.rm_rf(dir)
  if not ok then error(err, 0) end
end

-- Each case: a config, the line the message must name, and words it must contain.
local bad = {
  { name = "unknown key in a service", line = 3, words = { "unknown key 'comand'", "did you mean 'command'" },
    config = 'service "api" {\n  health = "/health",\n  comand = "x",\n}\n' },
  { name = "unknown key in settings", line = 2, words = { "settings", "unknown key 'prot'", "'port'" },
    config = 'settings {\n  prot = 8080,\n}\n' },
  { name = "wrong type", line = 3, words = { "'idle_timeout' must be a number of seconds", "\"soon\"" },
    config = 'service "api" {\n  command = "x",\n  idle_timeout = "soon",\n}\n' },
  { name = "wrong type for a known key", line = 3, words = { "'start_timeout' must be a number", "\"soon\"" },
    config = 'service "api" {\n  command = "x",\n  start_timeout = "soon",\n}\n' },
  { name = "integer out of range", line = 1, words = { "'port' must be an integer from 0 to 65535", "70000" },
    config = 'settings { port = 70000 }\n' },
  { name = "bad enum", line = 2, words = { "'restart' must be one of", "\"sometimes\"" },
    config = 'service "api" {\n  restart = "sometimes", command = "x",\n}\n' },
  { name = "missing command", line = 1, words = { "service \"api\"", "'command' is required" },
    config = 'service "api" {\n  health = "/health",\n}\n' },
  { name = "duplicate service", line = 2, words = { "service \"api\" is defined twice", "first at line 1" },
    config = 'service "api" { command = "x" }\nservice "api" { command = "y" }\n' },
  { name = "syntax error", line = 3, words = { "'}' expected" },
    config = 'service "api" {\n  command = "x"\n  health = "/h"\n' },
  { name = "runtime error", line = 2, words = { "attempt to call a nil value", "servce" },
    config = 'local x = 1\nservce "api" { command = "x" }\n' },
  { name = "unknown placeholder", line = 2, words = { "unknown placeholder {user}", "{id}" },
    config = 'service "api" {\n  command = "app --name {user}",\n}\n' },
  { name = "placeholder not available in socket", line = 3, words = { "'socket'", "{port}" },
    config = 'service "api" {\n  command = "x",\n  socket = "/run/{port}.sock",\n}\n' },
  { name = "bad env", line = 3, words = { "env N must be a string or number" },
    config = 'service "api" {\n  command = "x",\n  env = { N = true },\n}\n' },
  { name = "socket and port", line = 1, words = { "either 'socket' or 'port'" },
    config = 'service "api" { command = "x", socket = "/tmp/a.sock", port = "auto" }\n' },
  { name = "instances of an unknown service", line = 2, words = { "unknown service 'web'" },
    config = 'service "api" { command = "x" }\ninstances { web = { "a" } }\n' },
  { name = "bad instance id", line = 2, words = { "not a valid id" },
    config = 'service "api" { command = "x" }\ninstances { api = { "Bad_Id" } }\n' },
  { name = "bad service name", line = 1, words = { "service name \"My API\"" },
    config = 'service "My API" { command = "x" }\n' },
  { name = "service without a body", line = 1, words = { "has no body" },
    config = 'service "api"\n' },
  { name = "settings twice", line = 2, words = { "settings given twice" },
    config = 'settings { port = 1 }\nsettings { port = 2 }\n' },
  { name = "runaway loop", line = 1, words = { "time limit" },
    config = 'while true do end\n' },
  { name = "a loop that catches its own timeout", line = 1, words = { "time limit" },
    config = 'while true do pcall(function() while true do end end) end\n' },
  { name = "bad domain", line = 1, words = { "'domain' must be a DNS name" },
    config = 'settings { domain = "not a domain" }\n' },
}

describe("config", function()
  for _, case in ipairs(bad) do
    it("reports " .. case.name .. " with file:line and exit status 2", function()
      with_config(case.config, function(path)
        for _, cmd in ipairs { "config", "serve" } do
          local code, out, err = ten.run { cmd, "--config", path, "--port", "0",
            "--data-dir", path .. ".data" }
          assert.are.equal(2, code, cmd .. ": " .. out .. err)
          local prefix = path .. ":" .. case.line .. ":"
          assert.are.equal(prefix, err:sub(6, 5 + #prefix), cmd .. ": " .. err)
          for _, w in ipairs(case.words) do
            assert.truthy(err:find(w, 1, true), ("%s: %q not in %q"):format(cmd, w, err))
          end
          assert.is_nil(tt.stat(path .. ".data"), "a failed start must not create the data dir")
        end
      end)
    end)
  end

  it("runs with no config file at all, on documented defaults", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local dir = assert(tt.mkdtemp("ten-config-"))
    undo:add(function() tt.rm_rf(dir) end)
    local code, out = ten.run({ "config" }, { TENEMENT_DATA_DIR = dir .. "/state" })
    assert.are.equal(0, code)
    local c = cjson.decode(out)
    assert.are.equal("localhost", c.settings.domain)
    assert.are.equal(8080, c.settings.port)
    assert.are.equal(dir .. "/state", c.settings.data_dir)
    assert.are.same({}, c.instances)

    local server = ten.start {}
    undo:add(function() server:cleanup() end)
    local resp = server:get("localhost", "/health")
    assert.are.equal(200, resp.status)
    assert.truthy(tt.stat(server.data_dir .. "/ten.sock"))
  end)

  -- An editor that truncates, then writes, leaves such files for a moment.
  it("refuses a file that declares no service unless it says instances {}", function()
    for _, text in ipairs { "", "\n\n", "-- tenement.lua\n", "local x = 1\n", "settings { port = 9000 }\n" } do
      with_config(text, function(path)
        for _, cmd in ipairs { "config", "serve" } do
          local code, out, err = ten.run { cmd, "--config", path, "--port", "0",
            "--data-dir", path .. ".data" }
          assert.are.equal(2, code, ("%s of %q: %s%s"):format(cmd, text, out, err))
          local want = "ten: " .. path .. ": declares no service"
          assert.are.equal(want, err:sub(1, #want), err)
          assert.truthy(err:find("instances {}", 1, true), err)
          assert.is_nil(tt.stat(path .. ".data"), "a failed start must not create the data dir")
        end
      end)
    end
    for _, text in ipairs { "instances {}\n", "settings { port = 9000 }\ninstances {}\n" } do
      with_config(text, function(path)
        local code, out, err = ten.run { "config", "--config", path }
        assert.are.equal(0, code, err)
        local c = cjson.decode(out)
        assert.are.same({}, c.instances)
        assert.is_nil(next(c.services))
      end)
    end
  end)

  it("prints the effective config with defaults filled in", function()
    with_config([[
      settings { domain = "Example.COM.", port = 9000, data_dir = "state" }
      service "api" { command = "app --uds {socket}", env = { A = 1, B = "{id}" } }
      instances { api = { "prod", "staging" } }
    ]], function(path, dir)
      local code, out, err = ten.run { "config", "--config", path }
      assert.are.equal(0, code, err)
      local c = cjson.decode(out)
      assert.are.equal("example.com", c.settings.domain)
      assert.are.equal(9000, c.settings.port)
      assert.are.equal(dir .. "/state", c.settings.data_dir) -- relative to the file
      local api = c.services.api
      assert.are.equal("app --uds {socket}", api.command)
      assert.are.equal("{data_dir}/run/{service}-{id}.sock", api.socket)
      assert.are.equal("on-failure", api.restart)
      assert.are.same({ A = "1", B = "{id}" }, api.env)
      assert.are.equal(2, #c.instances)
      -- flags override the file
      code, out = ten.run { "config", "--config", path, "--port", "7000", "--domain", "x.test" }
      assert.are.equal(0, code)
      c = cjson.decode(out)
      assert.are.equal(7000, c.settings.port)
      assert.are.equal("x.test", c.settings.domain)
    end)
  end)

  it("rejects a bad --domain and a missing config file", function()
    local code, _, err = ten.run { "config", "--domain", "bad domain!" }
    assert.are.equal(2, code)
    assert.matches("%-%-domain", err)
    code, _, err = ten.run { "config", "--config", "/nonexistent/tenement.lua" }
    assert.are.equal(2, code)
    assert.matches("/nonexistent/tenement.lua: cannot read config", err)
  end)
end)
