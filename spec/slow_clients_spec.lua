-- Slow and hostile clients (issue 8, section 5): a body that trickles in, a
-- client that never reads its answer, a flood over max_connections. Each
-- must cost ten a bounded time and a bounded amount of memory, and leave
-- nothing behind.
local ten = require "ten"
local tt = require "tentest"
local socket = require "socket"

-- Reads until the peer closes (EOF or reset); returns what arrived.
local function read_until_closed(conn, timeout)
  conn:settimeout(timeout or 10)
  local got = {}
  while true do
    local data, err, partial = conn:receive(4096)
    got[#got + 1] = data or partial
    if not data then return table.concat(got), err end
  end
end

local function health(server)
  return ten.json(server:get("localhost", "/health"))
end

local function metric(server, name, labels)
  local text = server:get("localhost", "/metrics").body
  for line in text:gmatch("[^\n]+") do
    if line:sub(1, #name + #labels) == name .. labels then
      return tonumber(line:match(" ([%d%.e+-]+)$"))
    end
  end
end

describe("slow clients", function()
  local server

  setup(function()
    server = ten.start { config = [[
      settings { body_timeout = 1, client_timeout = 1, send_timeout = 1, max_connections = 40 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "a" } }
    ]] }
    assert.truthy(server:wait_state("hello:a", "ready"))
  end)

  teardown(function() if server then server:cleanup() end end)

  it("cuts a body that trickles in under client_timeout once body_timeout is over", function()
    local conn = ten.connect(server.port)
    conn:send("POST /headers HTTP/1.1\r\nHost: a.hello.localhost\r\nContent-Length: 1000\r\n\r\n")
    -- A byte every 200 ms: never silent for client_timeout (1 s). Stop after
    -- 8 s: body_timeout is 1 s, so ten must have given up long before.
    local answer, got = nil, ""
    for _ = 1, 40 do
      local ok = conn:send("x")
      conn:settimeout(0.2)
      local data, err, partial = conn:receive("*a")
      got = got .. (data or partial or "")
      if not ok or err == "closed" then
        answer = got
        break
      end
    end
    conn:close()
    assert.truthy(answer, "ten kept reading a trickling body past body_timeout")
    assert.truthy(answer:match("^HTTP/1.1 408"), answer)
    assert.truthy(ten.wait_until(5000, function() return server:instance("hello:a").active == 0 end))
    assert.is_true(metric(server, "tenement_client_timeouts_total", '{kind="body"}') >= 1)
  end)

  it("answers a request whose body stops arriving with 408 once the body deadline passes", function()
    local conn = ten.connect(server.port)
    conn:send("POST /headers HTTP/1.1\r\nHost: a.hello.localhost\r\nTransfer-Encoding: chunked\r\n\r\n" ..
      "5\r\nhello\r\n")
    for _ = 1, 3 do conn:send("1\r\nx\r\n"); tt.sleep(300) end
    local text = read_until_closed(conn, 10)
    conn:close()
    assert.truthy(text:match("^HTTP/1.1 408"), text)
  end)

  it("cuts a client that never reads its answer, and releases the instance", function()
    local before = metric(server, "tenement_client_timeouts_total", '{kind="send"}') or 0
    local conns = {}
    for i = 1, 5 do
      local conn = ten.connect(server.port)
      conn:send("GET /bytes?n=200000000 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
      conns[i] = conn
    end
    -- Nobody reads. Within a few send_timeouts every one is cut.
    local cut = ten.wait_until(15000, function()
      return (metric(server, "tenement_client_timeouts_total", '{kind="send"}') or 0) >= before + 5
    end)
    for _, conn in ipairs(conns) do conn:close() end
    assert.truthy(cut, "a client that read nothing was not cut off")
    assert.truthy(ten.wait_until(5000, function() return server:instance("hello:a").active == 0 end))
    assert.truthy(ten.wait_until(5000, function() return health(server).http.connections_open == 1 end))
  end)
end)

describe("a client that reads slowly", function()
  it("costs ten a bounded buffer, not the response", function()
    if ten.sanitized then return end -- RSS under ASan measures the sanitizer
    local server = ten.start { config = [[
      settings { send_timeout = 600 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "a" } }
    ]] }
    local fds = {}
    finally(function()
      for _, fd in ipairs(fds) do tt.release(fd) end
      server:cleanup()
    end)
    assert.truthy(server:wait_state("hello:a", "ready"))
    for _ = 1, 5 do server:get("a.hello.localhost", "/bytes?n=1000000") end -- warm buffers
    local before = server:rss_kb()
    local clients = 100
    for i = 1, clients do
      fds[i] = tt.hold(server.port, "GET /bytes?n=100000000 HTTP/1.1\r\nHost: a.hello.localhost\r\n\r\n")
    end
    -- Every exchange reaches the state where the client's socket is full
    -- and ten has stopped reading the instance: RSS stops growing.
    local last, stable = 0, 0
    ten.wait_until(20000, function()
      local rss = server:rss_kb()
      if math.abs(rss - last) < 64 then stable = stable + 1 else stable = 0 end
      last = rss
      return stable >= 50
    end)
    local per_client = (server:rss_kb() - before) / clients
    assert.is_true(per_client < 96, ("each stalled client costs %.0f KiB"):format(per_client))
  end)
end)

describe("over max_connections", function()
  it("answers every refused client with a 503 it can read, never a reset", function()
    local server = ten.start { config = [[
      settings { max_connections = 4 }
      service "hello" { command = os.getenv("HELLO_BIN"), health = "/health" }
      instances { hello = { "a" } }
    ]] }
    local held = {}
    finally(function()
      for _, conn in ipairs(held) do conn:close() end
      server:cleanup()
    end)
    assert.truthy(server:wait_state("hello:a", "ready"))
    for i = 1, 4 do held[i] = ten.connect(server.port) end
    tt.sleep(100)
    local refused, resets = 0, 0
    for _ = 1, 30 do
      -- The request is in ten's receive buffer when it refuses: a hard close
      -- would make the kernel answer with a reset instead of a FIN.
      local text, how = tt.exchange(server.port,
        "GET / HTTP/1.1\r\nHost: a.hello.localhost\r\n" .. string.rep("X-Pad: 1\r\n", 50) .. "\r\n")
      if text:match("^HTTP/1.1 503") and text:find("too many connections", 1, true) then
        refused = refused + 1
      end
      if how ~= "eof" then resets = resets + 1 end
    end
    assert.are.equal(30, refused)
    assert.are.equal(0, resets)
  end)
end)
