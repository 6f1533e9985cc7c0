-- Specs for tests/support/tentest.c, the process-control module the other
-- specs rely on. Every process started here is killed by pid in after_each.
local tt = require "tentest"

local SH, SLEEP, ENV, CAT = "/bin/sh", "/bin/sleep", "/usr/bin/env", "/bin/cat"

local function until_true(fn, timeout_ms)
  local deadline = tt.now_ms() + (timeout_ms or 5000)
  repeat
    local v = fn()
    if v then return v end
    tt.sleep(5)
  until tt.now_ms() > deadline
  return nil
end

local function contains(list, x)
  for _, v in ipairs(list) do if v == x then return true end end
  return false
end

describe("tentest", function()
  local pids, dir

  local function track(pid)
    assert.is_number(pid)
    pids[#pids + 1] = pid
    return pid
  end

  local function spawn(opts)
    local pid, err = tt.spawn(opts)
    assert(pid, err)
    return track(pid)
  end

  before_each(function()
    pids = {}
    dir = assert(tt.mkdtemp("ten-spec-"))
  end)

  after_each(function()
    for i = #pids, 1, -1 do
      local pid = pids[i]
      if tt.alive(pid) then tt.kill(pid, "KILL") end
      tt.wait_gone(pid, 5000)
    end
    tt.reap()
    assert(tt.rm_rf(dir))
  end)

  describe("spawn and wait", function()
    it("runs a command with stdout to a file and reports the exit code", function()
      local pid = spawn { argv = { SH, "-c", "echo hi; exit 3" }, stdout = dir .. "/out" }
      assert.same({ "exited", 3 }, { tt.wait(pid, 10000) })
      assert.equal("hi\n", tt.read_file(dir .. "/out"))
    end)

    it("appends to stdout/stderr files and reads stdin from a file", function()
      assert(tt.write_file(dir .. "/in", "abc"))
      assert(tt.write_file(dir .. "/out", "old\n"))
      local pid = spawn { argv = { SH, "-c", "cat; echo err >&2" }, stdin = dir .. "/in",
                          stdout = dir .. "/out", stderr = dir .. "/err" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("old\nabc", tt.read_file(dir .. "/out"))
      assert.equal("err\n", tt.read_file(dir .. "/err"))
      assert.equal(420, tt.stat(dir .. "/err").mode) -- 0644
    end)

    it("gives the child /dev/null as stdin by default", function()
      local pid = spawn { argv = { CAT }, stdout = dir .. "/out" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("", tt.read_file(dir .. "/out"))
    end)

    it("passes argv through unchanged, numbers included", function()
      local pid = spawn { argv = { SH, "-c", 'printf "%s|" "$@"', "zero", "a b", 42, "" },
                          stdout = dir .. "/out" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("a b|42||", tt.read_file(dir .. "/out"))
    end)

    it("searches PATH when argv[1] has no slash", function()
      local pid = spawn { argv = { "true" } }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
    end)

    it("reports exec, chdir and open failures as nil, message", function()
      local pid, err = tt.spawn { argv = { "/nonexistent/tentest-binary" } }
      assert.is_nil(pid)
      assert.equal("exec /nonexistent/tentest-binary: No such file or directory", err)
      pid, err = tt.spawn { argv = { SLEEP, "30" }, cwd = dir .. "/missing" }
      assert.is_nil(pid)
      assert.equal("chdir " .. dir .. "/missing: No such file or directory", err)
      pid, err = tt.spawn { argv = { SLEEP, "30" }, stdout = dir .. "/missing/out" }
      assert.is_nil(pid)
      assert.matches("^open .*/missing/out: No such file or directory$", err)
      assert.equal(0, tt.reap()) -- failed children were already reaped
    end)

    it("raises on bad arguments", function()
      assert.has_error(function() tt.spawn() end)
      assert.has_error(function() tt.spawn { argv = {} } end)
      assert.has_error(function() tt.spawn { argv = { SH }, env = "x" } end)
      assert.has_error(function() tt.spawn { argv = { SH }, env = { [1] = "x" } } end)
      assert.has_error(function() tt.kill(0, "TERM") end)
      assert.has_error(function() tt.kill(-1, "TERM") end)
      assert.has_error(function() tt.kill(tt.getpid(), "NOPE") end)
      assert.has_error(function() tt.killpg(1, "TERM") end)
    end)

    it("replaces the environment, or extends it with env_inherit", function()
      local pid = spawn { argv = { ENV }, env = { FOO = "bar" }, stdout = dir .. "/replaced" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("FOO=bar\n", tt.read_file(dir .. "/replaced"))

      pid = spawn { argv = { ENV }, env = {}, stdout = dir .. "/empty" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("", tt.read_file(dir .. "/empty"))

      local home = os.getenv("HOME")
      pid = spawn { argv = { ENV }, env = { FOO = "bar", PATH = "/tentest/bin" }, env_inherit = true,
                    stdout = dir .. "/inherited" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      local out = tt.read_file(dir .. "/inherited")
      assert.matches("\nFOO=bar\n", "\n" .. out)
      assert.matches("\nPATH=/tentest/bin\n", "\n" .. out)
      local _, npath = ("\n" .. out):gsub("\nPATH=", "")
      assert.equal(1, npath)
      if home then assert.truthy(("\n" .. out):find("\nHOME=" .. home .. "\n", 1, true)) end
    end)

    it("inherits the environment when env is nil", function()
      local pid = spawn { argv = { ENV }, stdout = dir .. "/out" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      local path = os.getenv("PATH")
      if path then
        assert.truthy(("\n" .. tt.read_file(dir .. "/out")):find("\nPATH=" .. path .. "\n", 1, true))
      end
    end)

    it("runs in cwd", function()
      local pid = spawn { argv = { SH, "-c", "echo x > rel.txt" }, cwd = dir }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("x\n", tt.read_file(dir .. "/rel.txt"))
    end)

    it("leaks no file descriptors beyond 0, 1, 2 into the child", function()
      local held = assert(io.open(dir .. "/held", "w")) -- a non-CLOEXEC fd in this process
      local pid = spawn { argv = { SLEEP, "30" } }
      held:close()
      local ls = assert(io.popen("ls /proc/" .. pid .. "/fd"))
      local fds = {}
      for fd in ls:lines() do fds[#fds + 1] = tonumber(fd) end
      ls:close()
      table.sort(fds)
      assert.same({ 0, 1, 2 }, fds)
    end)

    it("kills, reports the signal, and knows when a process is gone", function()
      local pid = spawn { argv = { SLEEP, "30" } }
      assert.is_true(tt.alive(pid))
      assert.is_true(tt.rss_kb(pid) > 0)
      assert.equal(tt.getpid(), tt.ppid(pid))
      assert.truthy(contains(tt.children(tt.getpid()), pid))
      assert.same({ nil, "timeout" }, { tt.wait(pid) })
      assert.same({ nil, "timeout" }, { tt.wait(pid, 30) })
      assert.is_true(tt.kill(pid, "TERM"))
      assert.same({ "signaled", 15 }, { tt.wait(pid, 10000) })
      assert.is_false(tt.alive(pid))
      local ok, err = tt.wait(pid, 0)
      assert.is_nil(ok)
      assert.matches("^ECHILD", err)
      ok, err = tt.kill(pid, "TERM")
      assert.is_nil(ok)
      assert.matches("No such process", err)
      assert.is_nil((tt.rss_kb(pid)))
      assert.is_nil((tt.ppid(pid)))
    end)

    it("accepts signals by number, name and SIG-name", function()
      for _, sig in ipairs { 9, "KILL", "SIGKILL" } do
        local pid = spawn { argv = { SLEEP, "30" } }
        assert.is_true(tt.kill(pid, sig))
        assert.same({ "signaled", 9 }, { tt.wait(pid, 10000) })
      end
      assert.equal(15, tt.signals.TERM)
      local pid = spawn { argv = { SLEEP, "30" } }
      assert.is_true(tt.kill(pid, 0)) -- existence check
      assert.is_true(tt.kill(pid, "STOP"))
      assert.is_true(tt.kill(pid, "CONT"))
      assert.is_true(tt.kill(pid, "USR1"))
      assert.same({ "signaled", 10 }, { tt.wait(pid, 10000) })
    end)

    it("refuses to wait for a process that is not our child", function()
      local ok, err = tt.wait(tt.getpid(), 10)
      assert.is_nil(ok)
      assert.matches("^ECHILD", err)
    end)
  end)

  describe("process tree", function()
    it("puts the child in a new session with setsid, and in ours otherwise", function()
      local pid = spawn { argv = { SLEEP, "30" }, setsid = true }
      assert.equal(pid, tt.pgid(pid))
      local pid2 = spawn { argv = { SLEEP, "30" } }
      assert.equal(tt.pgid(tt.getpid()), tt.pgid(pid2))
    end)

    it("finds children and descendants, and killpg reaches them all", function()
      -- as subreaper the orphaned sleeps become our children, so we reap them
      assert.is_true(tt.subreaper(true))
      finally(function() tt.subreaper(false) end)
      local pid = spawn { argv = { SH, "-c", "sleep 30 & sleep 30 & wait" }, setsid = true }
      local desc = until_true(function()
        local d = tt.descendants(pid)
        return #d == 2 and d
      end)
      assert.truthy(desc, "two sleeps did not show up")
      for _, d in ipairs(desc) do
        track(d)
        assert.equal(pid, tt.ppid(d))
        assert.equal(pid, tt.pgid(d))
      end
      table.sort(desc)
      local kids = tt.children(pid)
      table.sort(kids)
      assert.same(desc, kids)
      assert.same({}, tt.children(desc[1]))
      assert.truthy(contains(tt.descendants(tt.getpid()), desc[1]))

      assert.is_true(tt.killpg(pid, "TERM"))
      assert.same({ "signaled", 15 }, { tt.wait(pid, 10000) })
      for _, d in ipairs(desc) do assert.is_true(tt.wait_gone(d, 10000)) end
    end)

    it("adopts orphans as subreaper", function()
      assert.is_true(tt.subreaper(true))
      finally(function() tt.subreaper(false) end)
      local sh = spawn { argv = { SH, "-c", "sleep 30 & echo $! > " .. dir .. "/pid" } }
      assert.same({ "exited", 0 }, { tt.wait(sh, 10000) })
      local orphan = track(assert(tonumber(tt.read_file(dir .. "/pid"))))
      assert.equal(tt.getpid(), tt.ppid(orphan))
      assert.is_true(tt.kill(orphan, "TERM"))
      assert.same({ "signaled", 15 }, { tt.wait(orphan, 10000) })
    end)

    it("wait_gone reaps our own zombies and times out on live processes", function()
      local pid = spawn { argv = { SLEEP, "30" } }
      assert.is_false(tt.wait_gone(pid, 20))
      tt.kill(pid, "KILL")
      assert.is_true(tt.wait_gone(pid, 10000))
      assert.matches("^ECHILD", select(2, tt.wait(pid)))
    end)

    it("reap collects every exited child", function()
      tt.reap()
      local list = {}
      for i = 1, 3 do list[i] = spawn { argv = { "/bin/true" } } end
      for _, pid in ipairs(list) do
        assert.truthy(until_true(function() return not tt.alive(pid) end)) -- zombie
      end
      assert.equal(3, tt.reap())
      assert.equal(0, tt.reap())
    end)
  end)

  describe("temp dirs", function()
    it("mkdtemp makes a private directory under the temp dir", function()
      local root = (os.getenv("TMPDIR") or "/tmp"):gsub("/+$", "")
      if root == "" or root:sub(1, 1) ~= "/" then root = "/tmp" end
      assert.equal(root .. "/ten-spec-", dir:sub(1, #root + 10))
      assert.equal(#root + 16, #dir)
      local st = tt.stat(dir)
      assert.equal("dir", st.type)
      assert.equal(448, st.mode) -- 0700
      assert.equal(tt.getuid(), st.uid)
      assert.has_error(function() tt.mkdtemp("a/b") end)
    end)

    it("rm_rf removes a tree without following symlinks", function()
      local keep = assert(tt.mkdtemp("ten-spec-keep-"))
      finally(function() tt.rm_rf(keep) end)
      assert(tt.write_file(keep .. "/precious", "x"))
      local victim = dir .. "/victim"
      local pid = spawn { argv = { SH, "-c", "mkdir -p v/a/b && echo 1 > v/a/b/f && ln -s " .. keep ..
                                   " v/link && ln -s " .. keep .. "/precious v/a/flink && chmod 0500 v/a/b" ..
                                   " && mv v victim" }, cwd = dir }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal("link", tt.stat(victim .. "/link").type)
      assert.is_true(tt.rm_rf(victim .. "/"))
      assert.is_nil(tt.stat(victim))
      assert.equal("x", tt.read_file(keep .. "/precious"))
      assert.is_true(tt.rm_rf(victim)) -- already gone: fine
    end)

    it("rm_rf refuses dangerous paths", function()
      local refused = { "/", "", "relative/path", "/etc", "/usr/lib", "/tmp", "/tmp/", "/tmp/..",
                        "/tmp/../etc", "/tmp/./x", "/tmp//x", dir .. "/../" }
      for _, p in ipairs(refused) do
        local ok, err = tt.rm_rf(p)
        assert.is_nil(ok, p)
        assert.matches("^rm_rf: refusing", err)
      end
      -- a symlinked parent that leaves the temp dir is caught too
      local pid = spawn { argv = { "/bin/ln", "-s", "/usr", dir .. "/usr" } }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      local ok, err = tt.rm_rf(dir .. "/usr/tentest-not-there")
      assert.is_nil(ok)
      assert.matches("outside", err)
      assert.is_true(tt.rm_rf(dir .. "/usr")) -- removes the link, not /usr
      assert.equal("dir", tt.stat("/usr").type)
    end)
  end)

  describe("files", function()
    it("write_file/read_file are binary-safe", function()
      local data = "a\0b\255\n" .. string.rep("z", 100000)
      assert.is_true(tt.write_file(dir .. "/bin", data))
      assert.equal(data, tt.read_file(dir .. "/bin"))
      assert.equal(#data, tt.stat(dir .. "/bin").size)
      assert(tt.write_file(dir .. "/bin", "short"))
      assert.equal("short", tt.read_file(dir .. "/bin"))
      local ok, err = tt.read_file(dir .. "/nope")
      assert.is_nil(ok)
      assert.matches("No such file or directory", err)
      ok, err = tt.write_file(dir .. "/no/such", "x")
      assert.is_nil(ok)
      assert.matches("No such file or directory", err)
    end)

    it("chmod and stat", function()
      local f = dir .. "/f"
      assert(tt.write_file(f, "12345"))
      local st = tt.stat(f)
      assert.equal("file", st.type)
      assert.equal(5, st.size)
      assert.equal(tt.getuid(), st.uid)
      assert.is_true(tt.chmod(f, tonumber("600", 8)))
      assert.equal(384, tt.stat(f).mode)
      assert.is_true(tt.chmod(f, "0751"))
      assert.equal(tonumber("751", 8), tt.stat(f).mode)
      assert.has_error(function() tt.chmod(f, "9") end)
      local ok, err = tt.stat(dir .. "/nope")
      assert.is_nil(ok)
      assert.matches("No such file or directory", err)
      assert.is_nil((tt.chmod(dir .. "/nope", 420)))
      assert.equal("other", tt.stat("/dev/null").type)
    end)

    it("stat reports unix sockets", function()
      local ok, unix = pcall(require, "socket.unix")
      if not ok then return end
      local s = assert(unix())
      finally(function() s:close() end)
      assert(s:bind(dir .. "/sock"))
      assert.equal("socket", tt.stat(dir .. "/sock").type)
    end)
  end)

  describe("misc", function()
    it("free_port returns a bindable port", function()
      local port = tt.free_port()
      assert.is_true(math.type(port) == "integer" and port > 0 and port < 65536)
      local ok, socket = pcall(require, "socket")
      if ok then
        local srv = assert(socket.bind("127.0.0.1", port))
        srv:close()
      end
    end)

    it("sleep and now_ms", function()
      local t0 = tt.now_ms()
      tt.sleep(20)
      assert.is_true(tt.now_ms() - t0 >= 19)
      tt.sleep(0)
      assert.has_error(function() tt.sleep(-1) end)
    end)

    it("getpid and getuid", function()
      local pid = spawn { argv = { SH, "-c", "echo $PPID; id -u" }, stdout = dir .. "/out" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      assert.equal(tt.getpid() .. "\n" .. tt.getuid() .. "\n", tt.read_file(dir .. "/out"))
    end)

    it("signal_ignore/signal_default change our disposition; children get defaults", function()
      local function ignored(status, sig) -- SigIgn is a hex mask, bit n-1 for signal n
        return tonumber(status:match("SigIgn:%s*(%x+)"), 16) & (1 << (sig - 1)) ~= 0
      end
      assert.is_true(tt.signal_ignore("PIPE")) -- left on, as specs writing to sockets want
      assert.is_true(ignored(tt.read_file("/proc/self/status"), 13))
      assert.is_true(tt.signal_ignore("SIGUSR2"))
      finally(function() tt.signal_default("USR2") end)
      assert.is_true(ignored(tt.read_file("/proc/self/status"), 12))
      local pid = spawn { argv = { CAT, "/proc/self/status" }, stdout = dir .. "/out" }
      assert.same({ "exited", 0 }, { tt.wait(pid, 10000) })
      local child = tt.read_file(dir .. "/out")
      assert.is_false(ignored(child, 12))
      assert.is_false(ignored(child, 13))
      assert.is_true(tt.signal_default("USR2"))
      assert.is_false(ignored(tt.read_file("/proc/self/status"), 12))
      assert.is_nil((tt.signal_ignore("KILL")))
      assert.has_error(function() tt.signal_ignore("BOGUS") end)
    end)
  end)
end)
