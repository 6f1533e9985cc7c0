-- Logs survive kill -9 of ten: every line ten has read from an app (a
-- partial last line included) is in tenement.db exactly once after the
-- next start, however many lines were still on their way to SQLite.
local ten = require "ten"
local sql = require "tensql"

local APPS = { "a1", "a2", "a3", "a4" }
local LINES = 50000 -- per app: 200,000 in all, as in issue 8

local function metric(server, name)
  local resp = server:get("localhost", "/metrics")
  assert.are.equal(200, resp.status)
  return tonumber(resp.body:match("\n" .. name .. " ([%d%.e+]+)"))
end

-- A restarted ten replays what the last one left; this waits until it is
-- all committed.
local function wait_ingested(server)
  assert.truthy(ten.wait_until(60000, function()
    return metric(server, "tenement_log_lines_pending") == 0
  end), "lines are still pending")
end

-- The stored messages of each hello instance, oldest first, read from
-- tenement.db.
local function stored(server)
  local rows = assert(sql.query(server.data_dir .. "/tenement.db",
    "SELECT instance, message FROM logs WHERE service = 'hello' ORDER BY id"))
  local by_id = {}
  for _, id in ipairs(APPS) do by_id[id] = {} end
  for _, row in ipairs(rows) do
    local messages = by_id[row[1]]
    messages[#messages + 1] = row[2]
  end
  return by_id
end

local function expected(id, i)
  return ("hello log line %d service=hello id=%s"):format(i, id)
end

-- What an app's stored lines say: n complete lines numbered 1..n, each
-- once, and possibly the piece of line n+1 that ten had read when it was
-- killed. Anything else is reported.
local function check_prefix(id, messages)
  local n, cut, problems = 0, nil, {}
  for _, m in ipairs(messages) do
    if m:find("^hello log line") then
      if m == expected(id, n + 1) then
        n = n + 1
      elseif not cut and expected(id, n + 1):sub(1, #m) == m then
        cut = m
      else
        problems[#problems + 1] = ("after line %d: %q"):format(n, m)
      end
    end
  end
  assert.are.same({}, problems, id .. ": lines missing, repeated or out of order")
  return n, cut
end

-- Sends GET /log?n=... to every app at once; returns the connections.
local function flood(server, n)
  local conns = {}
  for _, id in ipairs(APPS) do
    local conn = ten.connect(server.port)
    conn:send(("GET /log?n=%d HTTP/1.1\r\nHost: %s.hello.localhost\r\n\r\n"):format(n, id))
    conns[#conns + 1] = conn
  end
  return conns
end

local function start_apps(undo, data_dir)
  local server = ten.start { config = ten.hello_config {
    extra = ('instances { hello = { "%s" } }'):format(table.concat(APPS, '", "')) },
    data_dir = data_dir }
  undo:add(function() server:cleanup() end)
  for _, id in ipairs(APPS) do assert.truthy(server:wait_state("hello:" .. id, "ready")) end
  return server
end

local function restart(undo, data_dir, config)
  local server = ten.start { config = config or ten.hello_config {}, data_dir = data_dir }
  undo:add(function() server:cleanup() end)
  wait_ingested(server)
  return server
end

-- A restarted ten, once it has stored what the last one left.
local function recovered(undo, data_dir)
  local server = restart(undo, data_dir)
  assert.are.equal(0, metric(server, "tenement_log_lines_dropped_total"))
  return server
end

describe("logs after kill -9 of ten", function()
  it("keeps every line the apps wrote, exactly once", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local server = start_apps(undo)
    local conns = flood(server, LINES)
    for _, conn in ipairs(conns) do
      local resp = ten.read_response(conn)
      conn:close()
      assert.are.equal(200, resp.status)
    end
    -- Every line is out of the apps; kill ten as soon as it has read them
    -- (four start lines and the flood), before it stores them.
    local total = #APPS * (LINES + 1)
    assert.truthy(ten.wait_until(30000, function()
      return metric(server, "tenement_log_lines_total") >= total
    end), "ten did not read every line")
    server:stop("KILL")

    local again = recovered(undo, server.data_dir)
    local messages = stored(again)
    for _, id in ipairs(APPS) do
      local n, cut = check_prefix(id, messages[id])
      assert.are.equal(LINES, n, id .. ": complete lines stored")
      assert.is_nil(cut)
    end
  end)

  it("mid-flood keeps every line ten had read, and the cut one once", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local server = start_apps(undo)
    local conns = flood(server, LINES)
    undo:add(function() for _, conn in ipairs(conns) do conn:close() end end)
    -- Half way through: the apps are still writing.
    local read_before_kill = ten.wait_until(30000, function()
      local n = metric(server, "tenement_log_lines_total")
      if n >= #APPS * LINES / 2 then return n end
    end)
    assert.truthy(read_before_kill, "the flood did not start")
    server:stop("KILL")

    local again = recovered(undo, server.data_dir)
    local messages, complete = stored(again), 0
    for _, id in ipairs(APPS) do complete = complete + check_prefix(id, messages[id]) end
    -- Lines read before the kill (the four start lines aside) are stored.
    assert.is_true(complete >= read_before_kill - #APPS,
      ("%d lines stored of the %d read before the kill"):format(complete, read_before_kill - #APPS))
  end)

  it("brings a partial last line back once, across crashes, with ids in order", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local config = [[
service "drip" {
  command = "printf 'first\nsecond\nno newline yet'; exec sleep 600",
  restart = "never",
}
]]
    local server = ten.start { config = config }
    undo:add(function() server:cleanup() end)
    assert.are.equal(0, (server:ten("spawn", "drip", "--id", "d", "--no-wait")))
    -- One write carries both lines and the partial one: once two lines
    -- are read, so is the partial line.
    assert.truthy(ten.wait_until(10000, function()
      return metric(server, "tenement_log_lines_total") >= 2
    end))
    server:stop("KILL") -- the app goes with it (PR_SET_PDEATHSIG)

    local function lines_of(s)
      local body = ten.json(s:get("localhost", "/api/logs?service=drip&limit=1000"))
      local out = {}
      for i = #body.lines, 1, -1 do out[#out + 1] = body.lines[i] end -- oldest first
      return out
    end
    local function messages(lines)
      local m = {}
      for _, l in ipairs(lines) do m[#m + 1] = l.message end
      return m
    end

    local second = restart(undo, server.data_dir, config)
    local lines = lines_of(second)
    assert.are.same({ "first", "second", "no newline yet" }, messages(lines))
    for i = 2, #lines do assert.is_true(lines[i].id > lines[i - 1].id) end
    -- Killed again once that is stored: the next start brings nothing twice.
    second:stop("KILL")
    local third = restart(undo, server.data_dir, config)
    assert.are.same(lines, lines_of(third))
    -- New lines continue after the recovered ones.
    assert.are.equal(0, (third:ten("spawn", "drip", "--id", "e", "--no-wait")))
    assert.truthy(ten.wait_until(10000, function() return #lines_of(third) >= 5 end))
    local after = lines_of(third)
    for i = #lines + 1, #after do assert.is_true(after[i].id > lines[#lines].id) end
  end)
end)
