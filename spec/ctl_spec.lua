-- The control socket under a client that writes more than it waits for:
-- input queued behind a request being answered (a `logs` follow) is
-- bounded, the flooding connection gets an error line and is closed, and
-- the server keeps serving everyone else.
local ten = require "ten"
local tt = require "tentest"
local cjson = require "cjson"
local unix = require "socket.unix"

local MAX_QUEUED = 1024 * 1024 -- TEN_CTL_MAX_LINE: input a connection may hold

local function ctl_connect(server)
  local c = assert(unix())
  assert(c:connect(server.data_dir .. "/ten.sock"))
  c:settimeout(20)
  return c
end

-- Reads reply lines until one that is not a follow's {"line": ...}.
local function final_reply(c)
  while true do
    local line, err = c:receive("*l")
    if not line then return nil, err end
    local doc = cjson.decode(line)
    if doc.line == nil then return doc end
  end
end

describe("control socket", function()
  local server
  setup(function()
    server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "a" } }' } }
    assert.truthy(server:wait_state("hello:a", "ready"))
  end)
  teardown(function() server:cleanup() end)

  it("bounds what a client sends behind a pending follow, and closes it with an error line", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local c = ctl_connect(server)
    undo:add(function() c:close() end)
    assert(c:send('{"cmd":"logs","args":{"follow":true,"service":"hello","id":"a","tail":0}}\n'))
    local rss_before = server:rss_kb()
    -- 300 MiB of well-formed requests queued behind the follow.
    local chunk = string.rep('{"cmd":"ping"}\n', (1024 * 1024) // 15)
    local sent, send_err = 0, nil
    for _ = 1, 300 do
      local n, err, partial = c:send(chunk)
      if not n then
        sent, send_err = sent + (partial or 0), err
        break
      end
      sent = sent + n
    end
    local rss_after = server:rss_kb()
    -- ten stopped taking input long before 300 MiB: the send failed...
    assert.truthy(send_err, ("ten accepted all %d bytes"):format(sent))
    assert.truthy(sent < 64 * 1024 * 1024, ("ten accepted %d bytes"):format(sent))
    -- ...and its memory did not grow with what was sent.
    assert.truthy(rss_after - rss_before < 64 * 1024,
      ("ten's RSS grew by %d KiB"):format(rss_after - rss_before))
    -- The follow ends with an error that says why.
    local reply = assert(final_reply(c))
    assert.is_false(reply.ok)
    assert.matches(tostring(MAX_QUEUED), reply.error)
    assert.matches("being answered", reply.error)
    -- Everyone else is served: a command, and a new follow that follows.
    local code, out = server:ten("ps")
    assert.are.equal(0, code)
    assert.matches("hello:a", out)
    local f = ctl_connect(server)
    undo:add(function() f:close() end)
    assert(f:send('{"cmd":"logs","args":{"follow":true,"service":"hello","id":"a","tail":0}}\n'))
    server:request { host = "a.hello.localhost", path = "/log?n=1" }
    local line = assert(f:receive("*l"))
    assert.truthy(cjson.decode(line).line, line)
  end)

  it("stops reading a client that sends requests and does not read the replies", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local c = ctl_connect(server)
    undo:add(function() c:close() end)
    local rss_before = server:rss_kb()
    -- Each ping asks for a reply twice its size. ten answers while it can
    -- write; once the replies back up it stops reading, so the sends stall
    -- (the short timeout only ends the flood; nothing here measures time).
    local ping = '{"cmd":"ping"}\n'
    local chunk = string.rep(ping, (1024 * 1024) // #ping)
    c:settimeout(2)
    local sent = 0
    for _ = 1, 300 do
      local n, err, partial = c:send(chunk)
      if not n then
        sent = sent + (partial or 0)
        assert.are.equal("timeout", err)
        break
      end
      sent = sent + n
    end
    local rss_after = server:rss_kb()
    assert.truthy(sent < 64 * 1024 * 1024, ("ten accepted %d bytes"):format(sent))
    assert.truthy(rss_after - rss_before < 64 * 1024,
      ("ten's RSS grew by %d KiB"):format(rss_after - rss_before))
    -- Nothing is lost: every whole request sent gets exactly one reply, in order.
    c:settimeout(20)
    local whole = sent // #ping
    for i = 1, whole do
      local line, err = c:receive("*l")
      assert(line, ("reply %d of %d: %s"):format(i, whole, tostring(err)))
      if line ~= '{"ok":true,"result":"pong"}' then
        error(("reply %d of %d: %s"):format(i, whole, line))
      end
    end
  end)

  it("refuses a request line longer than the bound, with an error line", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local c = ctl_connect(server)
    undo:add(function() c:close() end)
    c:send('{"cmd":"ping","args":{"pad":"' .. string.rep("x", MAX_QUEUED + 100000))
    local reply = cjson.decode((assert(c:receive("*l"))))
    assert.is_false(reply.ok)
    assert.matches("request line longer than " .. MAX_QUEUED, reply.error)
  end)

  it("still answers requests pipelined behind a pending one", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local c = ctl_connect(server)
    undo:add(function() c:close() end)
    -- A query answers later (on the threadpool); three pings wait behind it.
    assert(c:send('{"cmd":"logs","args":{"service":"hello","id":"a"}}\n' ..
      string.rep('{"cmd":"ping"}\n', 3)))
    local first = cjson.decode((assert(c:receive("*l"))))
    assert.is_true(first.ok)
    assert.truthy(first.result.lines)
    for _ = 1, 3 do
      local reply = cjson.decode((assert(c:receive("*l"))))
      assert.is_true(reply.ok)
    end
  end)
end)
