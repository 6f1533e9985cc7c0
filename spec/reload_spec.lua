-- Hot reload: ten reload, SIGHUP and a changed file apply the new config
-- as a diff; a config that does not load changes nothing; listeners,
-- unchanged instances and their open connections are never disturbed.
local ten = require "ten"
local tt = require "tentest"
local ws = require "ws"

local function config(opts)
  opts = opts or {}
  local parts = { 'settings { upstream_timeout = 30 }' }
  parts[#parts + 1] = 'service "keep" { command = os.getenv("HELLO_BIN"), health = "/health" }'
  parts[#parts + 1] = ('service "change" { command = os.getenv("HELLO_BIN"), health = "/health", env = { V = %q } }')
    :format(opts.version or "1")
  if not opts.drop_gone then
    parts[#parts + 1] = 'service "gone" { command = os.getenv("HELLO_BIN") }'
  end
  if opts.fresh then
    parts[#parts + 1] = 'service "fresh" { command = os.getenv("HELLO_BIN") }'
  end
  local inst = { 'keep = { "k1" }', 'change = { "c1", "c2" }' }
  if not opts.drop_gone then inst[#inst + 1] = 'gone = { "g1" }' end
  if opts.fresh then inst[#inst + 1] = 'fresh = { "f1" }' end
  parts[#parts + 1] = "instances { " .. table.concat(inst, ", ") .. " }"
  return table.concat(parts, "\n") .. "\n"
end

local function env_of(pid)
  local environ = tt.read_file("/proc/" .. pid .. "/environ") or ""
  return environ:match("%zV=([^%z]*)") or environ:match("^V=([^%z]*)")
end

-- `ten reload`'s summary. The file watcher may have applied the new file
-- first (it reloads 200 ms after a write): then `ten reload` finds "no
-- changes" and the summary is in ten's log, where the watcher's reload
-- wrote it. Either way this is what the reload of that file said.
local function reload_summary(server, log_before)
  local code, out, err = server:ten("reload")
  if code ~= 0 then return code, out, err end
  if out:match("^no changes") then out = out .. server:log():sub(log_before + 1) end
  return code, out, err
end

describe("reload", function()
  local server

  before_each(function()
    server = ten.start { config = config() }
    for _, key in ipairs { "keep:k1", "change:c1", "change:c2", "gone:g1" } do
      assert.truthy(server:wait_state(key, "ready"), key)
    end
  end)

  after_each(function() if server then server:cleanup() end end)

  it("applies a diff with ten reload and says what changed", function()
    local keep = server:instance("keep:k1")
    local c1, c2 = server:instance("change:c1"), server:instance("change:c2")
    local gone = server:instance("gone:g1")
    -- A WebSocket through the unchanged service stays open across the reload.
    local sock = ten.connect(server.port)
    assert.are.equal(101, (ws.handshake(sock, "k1.keep.localhost")))

    local log_before = #server:log()
    tt.write_file(server.config_path, config { version = "2", drop_gone = true, fresh = true })
    local code, out, err = reload_summary(server, log_before)
    assert.are.equal(0, code, err)
    assert.matches("service fresh added", out)
    assert.matches("service gone removed", out)
    assert.matches("service change: env changed: running instances restart one at a time", out)
    assert.matches("started fresh:f1", out)

    -- changed: both restarted with the new environment, one after the other
    for _, key in ipairs { "change:c1", "change:c2" } do
      local inst = ten.wait_until(15000, function()
        local i = server:instance(key)
        if i.state == "ready" and i.pid ~= (key == "change:c1" and c1.pid or c2.pid) then return i end
      end)
      assert.truthy(inst, key .. " was not restarted")
      assert.are.equal("2", env_of(inst.pid))
    end
    local log = server:log():sub(log_before + 1)
    local first_ready = log:find("change:c%d starting %-> ready")
    local second_drain = select(2, log:find("change:c%d ready %-> draining.-change:c%d ready %-> draining"))
    assert.truthy(first_ready and second_drain and first_ready < second_drain,
      "instances must restart one at a time:\n" .. log)

    -- removed: drained, stopped and forgotten
    assert.truthy(tt.wait_gone(gone.pid, 10000))
    assert.truthy(ten.wait_until(10000, function() return server:instance("gone:g1") == nil end))
    assert.are.equal(404, server:get("g1.gone.localhost").status)
    -- added
    assert.truthy(server:wait_state("fresh:f1", "ready"))
    -- unchanged: same process, and the WebSocket still works
    assert.are.equal(keep.pid, server:instance("keep:k1").pid)
    ws.send(sock, 1, "after reload")
    local _, payload = ws.receive(sock)
    assert.are.equal("after reload", payload)
    sock:close()
  end)

  it("keeps everything as it was when the new config does not load", function()
    local before = server:ps()
    tt.write_file(server.config_path, config() .. 'service "broken" {\n  comand = "x",\n}\n')
    local code, _, err = server:ten("reload")
    assert.are.equal(1, code)
    assert.truthy(err:find(server.config_path .. ":7: service \"broken\": unknown key 'comand'", 1, true), err)
    local after = server:ps()
    assert.are.equal(#before, #after)
    for i = 1, #before do assert.are.equal(before[i].pid, after[i].pid) end
    assert.are.equal(200, server:get("k1.keep.localhost").status)
  end)

  it("refuses a truncated file; only instances {} removes every service", function()
    local before = server:ps()
    local log_before = #server:log()
    tt.write_file(server.config_path, "")
    local code, _, err = server:ten("reload")
    assert.are.equal(1, code)
    assert.truthy(err:find(server.config_path .. ": declares no service", 1, true), err)
    -- The file watcher saw the empty file too, and refused it as well.
    assert.truthy(ten.wait_until(10000, function()
      return server:log():sub(log_before + 1):find("config file changed.*reload failed.*declares no service")
    end), server:log():sub(log_before + 1))
    local after = server:ps()
    assert.are.equal(#before, #after)
    for i = 1, #before do assert.are.equal(before[i].pid, after[i].pid) end
    assert.are.equal(200, server:get("k1.keep.localhost").status)

    log_before = #server:log()
    tt.write_file(server.config_path, "settings { upstream_timeout = 30 }\ninstances {}\n")
    local out
    code, out, err = reload_summary(server, log_before)
    assert.are.equal(0, code, err)
    assert.matches("service keep removed", out)
    assert.truthy(ten.wait_until(15000, function() return #server:ps() == 0 end))
  end)

  it("reloads on SIGHUP and when the file changes", function()
    tt.write_file(server.config_path, config { fresh = true })
    tt.kill(server.pid, "HUP")
    assert.truthy(server:wait_state("fresh:f1", "ready"), "SIGHUP did not reload")
    -- no signal, no command: the file watcher notices
    tt.write_file(server.config_path, config { fresh = true, drop_gone = true })
    assert.truthy(ten.wait_until(10000, function() return server:instance("gone:g1") == nil end),
      "the file change was not noticed")
  end)

  it("drops no request to an unchanged service while the config is rewritten", function()
    local keep_conn = ten.connect(server.port)
    local failures, total = {}, 0
    for round = 1, 6 do
      tt.write_file(server.config_path, config { version = tostring(round), fresh = round % 2 == 0 })
      if round % 2 == 0 then tt.kill(server.pid, "HUP") else server:ten("reload") end
      local deadline = tt.now_ms() + 400
      while tt.now_ms() < deadline do
        total = total + 1
        -- keep-alive and fresh connections both
        local ok, resp = pcall(ten.request, server.port, total % 2 == 0 and { conn = keep_conn,
          host = "k1.keep.localhost" } or { host = "k1.keep.localhost" })
        if not ok or resp.status ~= 200 then failures[#failures + 1] = ok and resp.status or resp end
        -- the changing service keeps answering too, through its restarts
        local r2 = server:get("c1.change.localhost")
        if r2.status ~= 200 then failures[#failures + 1] = "change: " .. r2.status end
      end
    end
    keep_conn:close()
    assert.is_true(total > 100)
    assert.are.same({}, failures)
  end)
end)
