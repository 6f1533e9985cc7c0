-- Reload cycles under load: a service is removed and restored many times
-- while clients keep asking for it. The invariants: every live child of
-- ten is the process of exactly one instance `ten ps` shows, and every pid
-- `ten ps` shows is a live child of ten; nothing is used after it is freed
-- (the ASan build of this spec checks that); SIGTERM still ends ten, with
-- exit status 0 and no process of any instance left.
local ten = require "ten"
local tt = require "tentest"

local DRAIN, STOP = 1, 2 -- drain_timeout and stop_timeout, seconds
local CYCLES = 12

local function config(with_cycle)
  local parts = {
    ("settings { drain_timeout = %d }"):format(DRAIN),
    ('service "keep" { command = os.getenv("HELLO_BIN"), health = "/health", stop_timeout = %d }')
      :format(STOP),
  }
  local declared = { 'keep = { "k1" }' }
  if with_cycle then
    parts[#parts + 1] = ('service "cycle" { command = os.getenv("HELLO_BIN"), stop_timeout = %d }')
      :format(STOP)
    declared[#declared + 1] = 'cycle = { "c1", "c2" }'
  end
  parts[#parts + 1] = "instances { " .. table.concat(declared, ", ") .. " }"
  return table.concat(parts, "\n") .. "\n"
end

local function set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

-- The pids of ten's live children and the pids `ten ps` reports; equal once
-- nothing is starting or stopping.
local function tracked_and_children(server)
  local tracked = {}
  for _, inst in ipairs(server:ps()) do
    if inst.pid then tracked[#tracked + 1] = inst.pid end
  end
  local children = {}
  for _, pid in ipairs(tt.children(server.pid)) do
    if tt.alive(pid) then children[#children + 1] = pid end
  end
  table.sort(tracked)
  table.sort(children)
  return tracked, children
end

local function describe_pids(list)
  local out = {}
  for _, pid in ipairs(list) do
    local cmd = (tt.read_file("/proc/" .. pid .. "/cmdline") or "?"):gsub("%z", " ")
    out[#out + 1] = pid .. " (" .. cmd .. ")"
  end
  return table.concat(out, ", ")
end

describe("reload cycles", function()
  it("remove/restore under load keeps every child tracked, and SIGTERM still ends ten", function()
    local undo = ten.cleanups()
    finally(function() undo:run() end)
    local server = ten.start { config = config(true) }
    undo:add(function() server:cleanup() end)
    undo:add(function() ten.kill_instance_processes(server.data_dir) end)
    for _, key in ipairs { "keep:k1", "cycle:c1", "cycle:c2" } do
      assert.truthy(server:wait_state(key, "ready"), key)
    end
    local hammer = ten.hammer(server.port,
      { "c1.cycle.localhost", "c2.cycle.localhost", "cycle.localhost", "k1.keep.localhost" })
    undo:add(function() hammer:stop() end)

    for cycle = 1, CYCLES do
      -- A request in flight keeps c1 draining after the removal, so the
      -- requests that follow find it stopping (not yet gone).
      local slow = ten.connect(server.port)
      slow:send("GET /sleep?ms=150 HTTP/1.1\r\nHost: c1.cycle.localhost\r\nConnection: close\r\n\r\n")
      tt.write_file(server.config_path, config(false))
      local code, _, err = server:ten("reload")
      assert.are.equal(0, code, err)
      for _ = 1, 3 do server:get("c1.cycle.localhost") end
      tt.write_file(server.config_path, config(true))
      code, _, err = server:ten("reload")
      assert.are.equal(0, code, err)
      for _ = 1, 3 do server:get("c1.cycle.localhost") end
      ten.read_response(slow)
      slow:close()
      assert.are.equal(200, server:get("k1.keep.localhost").status, "cycle " .. cycle)
    end
    local counts = hammer:stop()
    assert.truthy((counts["200"] or 0) > 0, "the hammer got no answer")

    -- Restored and declared: both instances run again, and every child of
    -- ten is one of theirs (or keep's).
    for _, key in ipairs { "keep:k1", "cycle:c1", "cycle:c2" } do
      assert.truthy(server:wait_state(key, "ready"), key .. " is not running again:\n" .. server:log())
    end
    local tracked, children
    local settled = ten.wait_until(10000, function()
      tracked, children = tracked_and_children(server)
      return #tracked == #children and #tracked == 3 and
        table.concat(tracked, " ") == table.concat(children, " ")
    end)
    assert.truthy(settled, ("ten ps tracks %s; ten's live children are %s"):format(
      describe_pids(tracked), describe_pids(children)))
    local before = set(ten.instance_processes(server.data_dir))
    for _, pid in ipairs(tracked) do assert.truthy(before[pid]) end

    -- SIGTERM: drain, stop, exit 0, within the bound the settings give.
    local how, code = server:stop("TERM", (DRAIN + STOP + 10) * 1000)
    assert.are.equal("exited", how, "ten did not exit after SIGTERM:\n" .. server:log())
    assert.are.equal(0, code, server:log())
    assert.are.same({}, ten.instance_processes(server.data_dir))
  end)
end)
