-- Logs: every line an instance writes reaches tenement.db (searchable),
-- the ring, and live subscribers; levels, long lines, partial last lines;
-- paging, streaming with resume, rotation, and surviving restarts of ten.
local ten = require "ten"
local tt = require "tentest"
local cjson = require "cjson"

-- A service whose command prints what a spec needs, then stays up (so its
-- pipes stay open only as long as the spec wants: it exits after).
local PRINTER = [[
service "printer" {
  command = "printf 'plain line\nWARN careful now\n{{\"level\":\"debug\",\"msg\":\"json says debug\"}}\n'; printf 'to stderr\nINFO fine on stderr\n' >&2; printf '%0600d\n' 7; printf 'last without newline'",
  restart = "never",
}
]]

local function api(server, path)
  local resp = server:get("localhost", path)
  assert.are.equal(200, resp.status, resp.body)
  return ten.json(resp)
end

-- Polls /api/logs until `fn(lines)` is satisfied.
local function wait_logs(server, path, fn)
  return ten.wait_until(10000, function()
    local body = api(server, path)
    if fn(body.lines, body) then return body end
  end)
end

describe("logs", function()
  it("captures, levels, splits and keeps the last partial line", function()
    local server = ten.start { config = "settings { log_max_line = 256 }\n" .. PRINTER }
    finally(function() server:cleanup() end)
    assert.are.equal(0, (server:ten("spawn", "printer", "--id", "p", "--no-wait")))
    -- it exits at once (never ready): its lines are still all there
    local body = wait_logs(server, "/api/logs?service=printer&limit=100", function(lines)
      for _, l in ipairs(lines) do if l.message == "last without newline" then return true end end
    end)
    assert.truthy(body, "the partial last line never arrived")
    local by_message = {}
    for _, l in ipairs(body.lines) do by_message[l.message] = l end
    assert.are.equal("info", by_message["plain line"].level)
    assert.are.equal("stdout", by_message["plain line"].stream)
    assert.are.equal("warn", by_message["WARN careful now"].level)
    assert.are.equal("debug", by_message['{"level":"debug","msg":"json says debug"}'].level)
    assert.are.equal("error", by_message["to stderr"].level)
    assert.are.equal("stderr", by_message["to stderr"].stream)
    assert.are.equal("info", by_message["INFO fine on stderr"].level)
    -- 600 digits cut into 256 + 256 + 88, nothing lost
    local pieces = {}
    for _, l in ipairs(body.lines) do
      if l.message:match("^%d+$") then pieces[#pieces + 1] = l end
    end
    table.sort(pieces, function(a, b) return a.id < b.id end)
    assert.are.equal(3, #pieces)
    assert.are.equal(256, #pieces[1].message)
    assert.are.equal(88, #pieces[3].message)
    assert.are.equal(string.rep("0", 599) .. "7",
      pieces[1].message .. pieces[2].message .. pieces[3].message)
  end)

  describe("with a running app", function()
    local server
    setup(function()
      server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "a", "b" } }' } }
      assert.truthy(server:wait_state("hello:a", "ready"))
      assert.truthy(server:wait_state("hello:b", "ready"))
      server:request { host = "a.hello.localhost", path = "/log?n=250" }
      server:request { host = "b.hello.localhost", path = "/log?n=5&stream=stderr" }
      assert.truthy(wait_logs(server, "/api/logs?id=a&search=250", function(lines) return #lines == 1 end))
    end)
    teardown(function() if server then server:cleanup() end end)

    it("filters by service, id, level and full-text search", function()
      local body = api(server, "/api/logs?service=hello&id=b&level=error")
      assert.are.equal(5, #body.lines)
      for _, l in ipairs(body.lines) do assert.are.equal("b", l.instance) end
      body = api(server, "/api/logs?search=" .. "%22line%2017%22")
      assert.are.equal(1, #body.lines)
      assert.matches("hello log line 17 ", body.lines[1].message)
      -- FTS5 query syntax, not SQL: '=' is an error, reported as such
      local resp = server:get("localhost", "/api/logs?search=line%20AND%20id%3Db")
      assert.are.equal(400, resp.status)
      assert.matches("bad search", ten.json(resp).error)
      body = api(server, "/api/logs?search=stderr%20OR%20service&id=b")
      assert.is_true(#body.lines >= 5)
    end)

    it("pages newest first with a cursor and no duplicates", function()
      local seen, cursor, pages = {}, nil, 0
      repeat
        local body = api(server, "/api/logs?id=a&limit=100" .. (cursor and ("&cursor=" .. cursor) or ""))
        pages = pages + 1
        local last
        for _, l in ipairs(body.lines) do
          assert.is_nil(seen[l.id], "duplicate id " .. l.id)
          if last then assert.is_true(l.id < last) end
          seen[l.id], last = true, l.id
        end
        cursor = body.next_cursor
      until not cursor
      local n = 0
      for _ in pairs(seen) do n = n + 1 end
      assert.are.equal(251, n) -- 250 lines and hello's start line
      assert.are.equal(3, pages)
    end)

    it("takes since and until, and refuses nonsense with 400", function()
      assert.are.equal(0, #api(server, "/api/logs?until=1").lines)
      assert.is_true(#api(server, "/api/logs?since=1h").lines > 0)
      for _, q in ipairs { "level=loud", "since=yesterday", "limit=0", "limit=5000", "search=%22unclosed" } do
        local resp = server:get("localhost", "/api/logs?" .. q)
        assert.are.equal(400, resp.status, q)
      end
    end)

    it("ten logs shows stored lines with the same filters", function()
      local code, out = server:ten("logs", "hello:b", "--level", "error")
      assert.are.equal(0, code)
      local n = 0
      for line in out:gmatch("[^\n]+") do
        n = n + 1
        assert.matches("hello:b error hello log line %d", line)
      end
      assert.are.equal(5, n)
      code, out = server:ten("logs", "hello", "--search", '"line 123"', "--limit", "10")
      assert.are.equal(0, code)
      assert.matches("hello:a info  hello log line 123 ", out)
      code = server:ten("logs", "hello:a", "--since", "soon")
      assert.are.equal(2, code)
    end)

    it("ten logs -f prints recent lines, then new ones as they come", function()
      local undo = ten.cleanups()
      finally(function() undo:run() end)
      local dir = assert(tt.mkdtemp("ten-follow-"))
      undo:add(function() tt.rm_rf(dir) end)
      local pid = assert(tt.spawn { argv = { ten.bin, "logs", "hello:b", "-f", "--tail", "2",
        "--data-dir", server.data_dir }, stdout = dir .. "/out", stderr = dir .. "/err",
        env_inherit = true, env = {} })
      undo:add(function() tt.kill(pid, "TERM"); tt.wait(pid, 5000) end)
      assert.truthy(ten.wait_until(5000, function()
        return (tt.read_file(dir .. "/out") or ""):find("hello log line 5", 1, true)
      end), "the tail of the ring was not shown")
      server:request { host = "b.hello.localhost", path = "/log?n=1&size=40" }
      assert.truthy(ten.wait_until(5000, function()
        local out = tt.read_file(dir .. "/out") or ""
        local n = 0
        for _ in out:gmatch("\n") do n = n + 1 end
        return n >= 3
      end), "a new line did not follow")
    end)

    it("streams lines as Server-Sent Events and resumes from Last-Event-ID", function()
      local conn = ten.connect(server.port)
      conn:send("GET /api/logs/stream?service=hello&id=a HTTP/1.1\r\nHost: localhost\r\n\r\n")
      local head = assert(conn:receive("*l"))
      assert.matches("200", head)
      repeat local h = conn:receive("*l") until h == ""
      server:request { host = "a.hello.localhost", path = "/log?n=3" }
      -- read SSE events out of the chunked body
      local events, buffer = {}, ""
      conn:settimeout(5)
      while #events < 3 do
        local size = tonumber(assert(conn:receive("*l")), 16)
        buffer = buffer .. assert(conn:receive(size))
        conn:receive("*l")
        for id, data in buffer:gmatch("id: (%d+)\nevent: log\ndata: ([^\n]+)\n\n") do
          events[#events + 1] = { id = tonumber(id), line = cjson.decode(data) }
        end
        buffer = buffer:gsub("id: %d+\nevent: log\ndata: [^\n]+\n\n", "")
      end
      conn:close()
      assert.are.equal("hello log line 1 service=hello id=a", events[1].line.message)
      -- resume: what came after the first event, from the database
      local resumed = ten.connect(server.port)
      resumed:send(("GET /api/logs/stream?service=hello&id=a HTTP/1.1\r\nHost: localhost\r\n" ..
        "Last-Event-ID: %d\r\n\r\n"):format(events[1].id))
      repeat local h = resumed:receive("*l") until h == ""
      local got, text = {}, ""
      resumed:settimeout(5)
      while #got < 2 do
        local size = tonumber(assert(resumed:receive("*l")), 16)
        text = text .. assert(resumed:receive(size))
        resumed:receive("*l")
        got = {}
        for id in text:gmatch("id: (%d+)\n") do got[#got + 1] = tonumber(id) end
      end
      resumed:close()
      assert.are.equal(events[2].id, got[1])
      assert.are.equal(events[3].id, got[2])
    end)

    it("streams state changes on /api/events", function()
      local conn = ten.connect(server.port)
      conn:send("GET /api/events HTTP/1.1\r\nHost: localhost\r\n\r\n")
      repeat local h = conn:receive("*l") until h == ""
      assert.are.equal(0, (server:ten("restart", "hello:b")))
      local text = ""
      conn:settimeout(5)
      while not text:find('"to":"ready"', 1, true) do
        local size = tonumber(assert(conn:receive("*l")), 16)
        text = text .. assert(conn:receive(size))
        conn:receive("*l")
      end
      conn:close()
      assert.matches('"id":"b","from":"ready","to":"draining"', text)
      assert.matches("event: state", text)
    end)
  end)

  it("keeps lines across a SIGTERM and a SIGKILL of ten", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "k" } }' } }
    undo:add(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:k", "ready"))
    server:request { host = "k.hello.localhost", path = "/log?n=50" }
    assert.are.equal(0, select(2, server:stop("TERM")))
    local again = ten.start { config = ten.hello_config { extra = 'instances { hello = { "k" } }' },
      data_dir = server.data_dir }
    undo:add(function() again:cleanup() end)
    assert.truthy(again:wait_state("hello:k", "ready"))
    assert.are.equal(1, #api(again, "/api/logs?search=%22line%2050%22").lines)
    again:request { host = "k.hello.localhost", path = "/log?n=7&size=50" }
    tt.sleep(600) -- more than one batch period: the batch is committed
    again:stop("KILL")
    local third = ten.start { config = ten.hello_config {}, data_dir = server.data_dir }
    undo:add(function() third:cleanup() end)
    local lines = api(third, "/api/logs?id=k&limit=1000").lines
    local found = 0
    for _, l in ipairs(lines) do if l.message:find("^hello log line") then found = found + 1 end end
    assert.are.equal(57, found)
    -- ids continue after the stored ones: nothing is overwritten
    third:ten("spawn", "hello", "--id", "k")
    assert.truthy(ten.wait_until(5000, function()
      return #api(third, "/api/logs?id=k&limit=1000").lines > #lines
    end))
  end)

  it("rotates by age (log_retention_days) and keeps the index consistent", function()
    -- 0.00003 days is about 2.6 s
    local server = ten.start { config = [[
      settings { log_retention_days = 0.00003, log_rotate_interval = 0.2 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "old" } }]] }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:old", "ready"))
    server:request { host = "old.hello.localhost", path = "/log?n=20" }
    assert.truthy(wait_logs(server, "/api/logs?id=old&search=%22line%2020%22", function(lines)
      return #lines == 1
    end), "the lines were not stored")
    -- they age out: gone from the table and from the search alike
    assert.truthy(ten.wait_until(15000, function()
      return #api(server, "/api/logs?id=old&search=hello").lines == 0
        and #api(server, "/api/logs?id=old&limit=1000").lines == 0
    end), "old lines were not rotated away")
    -- new lines are kept
    server:request { host = "old.hello.localhost", path = "/log?n=3" }
    assert.truthy(wait_logs(server, "/api/logs?id=old&search=%22line%203%22", function(lines)
      return #lines == 1
    end))
  end)

  it("rotates by row cap and keeps the index consistent", function()
    local server = ten.start { config = [[
      settings { log_max_rows = 100, log_rotate_interval = 0.2 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "r" } }]] }
    finally(function() server:cleanup() end)
    assert.truthy(server:wait_state("hello:r", "ready"))
    server:request { host = "r.hello.localhost", path = "/log?n=300" }
    local body = wait_logs(server, "/api/logs?id=r&limit=1000", function(lines)
      if #lines > 100 then return false end
      for _, l in ipairs(lines) do if l.message:find("line 300 ", 1, true) then return true end end
    end)
    assert.truthy(body, "rows were not rotated")
    -- the newest lines stay, the oldest went, and search agrees with the table
    assert.truthy(ten.wait_until(5000, function()
      return #api(server, "/api/logs?search=%22line%20300%22").lines == 1
    end), "the newest line is not searchable")
    assert.are.equal(0, #api(server, "/api/logs?search=%22line%2010%22").lines)
  end)
end)
