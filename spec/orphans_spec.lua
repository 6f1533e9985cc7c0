-- Orphans: every process of an instance, grandchildren included, dies with
-- the instance and with ten, whatever shape its command has: a shell that
-- backgrounds the app, a pipeline, a helper that left the process group
-- (setsid) and one whose parent exited so it was re-parented. After
-- kill -9 of ten, what it left is killed by the next ten on the same data
-- dir, before that one starts the instance again.
--
-- "The processes of the instances" are found by their environment
-- (TENEMENT_DATA_DIR), wherever they were re-parented to: see
-- ten.instance_processes.
local ten = require "ten"
local tt = require "tentest"

local SHAPES = {
  { name = "a shell that backgrounds the app and waits", command = "{hello} & wait" },
  { name = "a pipeline", command = "{hello} | cat" },
  { name = "a helper in its own session", command = "setsid sleep 300 & exec {hello}" },
  { name = "a helper re-parented when its parent exits",
    command = "(setsid sleep 300 &); exec {hello}" },
}

local function config(command)
  return ([[
settings { drain_timeout = 1 }
service "app" {
  command = (%q):gsub("{hello}", os.getenv("HELLO_BIN")),
  health = "/health",
  stop_timeout = 2,
}
instances { app = { "a" } }
]]):format(command)
end

local function describe_pids(list)
  local out = {}
  for _, pid in ipairs(list) do
    local cmd = (tt.read_file("/proc/" .. pid .. "/cmdline") or "?"):gsub("%z", " ")
    out[#out + 1] = pid .. " (" .. cmd .. ")"
  end
  return table.concat(out, ", ")
end

-- Waits until no process of the data dir's instances is left.
local function none_left(data_dir, timeout_ms)
  local left
  local ok = ten.wait_until(timeout_ms or 5000, function()
    left = ten.instance_processes(data_dir)
    return #left == 0
  end)
  return ok, describe_pids(left or {})
end

-- Starts ten on the shape's command; returns the server and the processes
-- of its instance once it is ready.
local function start(undo, shape, data_dir)
  local server = ten.start { config = config(shape.command), data_dir = data_dir }
  undo:add(function() server:cleanup() end)
  assert.truthy(server:wait_state("app:a", "ready"), server:log())
  return server, ten.instance_processes(server.data_dir)
end

describe("orphans", function()
  for _, shape in ipairs(SHAPES) do
    describe(shape.name, function()
      it("stopping the instance, and ten's SIGTERM exit, leave no process of it", function()
        local undo = ten.cleanups()
        finally(function() undo:run() end)
        local server, procs = start(undo, shape, nil)
        undo:add(function() ten.kill_instance_processes(server.data_dir) end)
        assert.truthy(#procs >= 2, "expected a process tree: " .. describe_pids(procs))

        local code, _, err = server:ten("stop", "app:a")
        assert.are.equal(0, code, err)
        assert.truthy(server:wait_state("app:a", "stopped"))
        local gone, left = none_left(server.data_dir)
        assert.truthy(gone, "left after the stop: " .. left)

        code, _, err = server:ten("spawn", "app", "--id", "a")
        assert.are.equal(0, code, err)
        assert.truthy(server:wait_state("app:a", "ready"))
        local how, status = server:stop("TERM", 30000)
        assert.are.equal("exited", how)
        assert.are.equal(0, status, server:log())
        gone, left = none_left(server.data_dir)
        assert.truthy(gone, "left after ten exited: " .. left)
      end)

      it("after kill -9 of ten, the next ten on the data dir kills what was left", function()
        local undo = ten.cleanups()
        finally(function() undo:run() end)
        local first, procs = start(undo, shape, nil)
        local data_dir = first.data_dir
        undo:add(function() ten.kill_instance_processes(data_dir) end)
        local leader = first:instance("app:a").pid
        first:stop("KILL")
        -- Its direct child dies with it (PR_SET_PDEATHSIG); the rest of the
        -- tree does not: that is what the next ten has to find.
        assert.truthy(tt.wait_gone(leader, 5000))
        local left = ten.instance_processes(data_dir)
        assert.truthy(#left > 0, "nothing survived kill -9: the shape tests nothing")
        for _, pid in ipairs(left) do
          local known = false
          for _, p in ipairs(procs) do known = known or p == pid end
          assert.truthy(known, "a process of the first run that was not there before: " .. pid)
        end

        -- The first server's temp dir goes with its cleanup: keep the data dir.
        local second = ten.start { config = config(shape.command), data_dir = data_dir }
        undo:add(function() second:cleanup() end)
        for _, pid in ipairs(left) do
          assert.truthy(tt.wait_gone(pid, 5000),
            "still running after the next ten started: " .. describe_pids { pid })
        end
        assert.truthy(second:wait_state("app:a", "ready"), second:log())
        assert.are.equal(200, second:get("a.app.localhost").status)
        -- It says what it killed (not each one: in a pipeline, killing the
        -- app may end the rest before ten gets to them).
        local named = 0
        for _, pid in ipairs(left) do
          if second:log():find("killed pid " .. pid .. " ", 1, true) then named = named + 1 end
        end
        assert.truthy(named > 0, "the log names nothing it killed:\n" .. second:log())
        -- What runs now is the second ten's, and all of it is.
        local mine = {}
        for _, pid in ipairs(tt.descendants(second.pid)) do mine[pid] = true end
        for _, pid in ipairs(ten.instance_processes(data_dir)) do
          assert.truthy(mine[pid], "not a descendant of the running ten: " .. describe_pids { pid })
        end
      end)
    end)
  end
end)
