-- Bodies stream through in both directions without being buffered whole.
local ten = require "ten"
local tt = require "tentest"

local MB = 1024 * 1024

-- Deterministic, incompressible-looking test data.
local function make_file(path, size)
  local parts, seed = {}, 12345
  local block = {}
  for i = 1, 4096 do
    seed = (seed * 1103515245 + 12345) % 2147483648
    block[i] = string.char(seed % 256)
  end
  block = table.concat(block)
  local n = 0
  local f = assert(io.open(path, "wb"))
  while n < size do
    local piece = block .. string.format("%016d", n)
    f:write(piece)
    n = n + #piece
  end
  f:close()
  return n
end

describe("streaming", function()
  local server

  setup(function()
    server = ten.start { config = ten.hello_config { extra = 'instances { hello = { "up" } }' } }
    assert.truthy(server:wait_state("hello:up", "ready"))
  end)

  teardown(function()
    if server then server:cleanup() end
  end)

  for _, framing in ipairs { "content-length", "chunked" } do
    it("echoes a 50 MB upload byte for byte (" .. framing .. ") with ten's RSS under 20 MB", function()
      local dir = assert(tt.mkdtemp("ten-echo-"))
      finally(function() tt.rm_rf(dir) end)
      local input, output = dir .. "/in", dir .. "/out"
      local size = make_file(input, 50 * MB)
      local argv = { "curl", "-sS", "--fail", "-o", output, "-H", "Host: up.hello.localhost",
        "--data-binary", "@" .. input, "http://127.0.0.1:" .. server.port .. "/echo" }
      if framing == "chunked" then
        table.insert(argv, 3, "-H")
        table.insert(argv, 4, "Transfer-Encoding: chunked")
      end
      local pid = assert(tt.spawn { argv = argv, stderr = dir .. "/err" })
      local peak = 0
      local how, code
      repeat
        peak = math.max(peak, server:rss_kb() or 0)
        how, code = tt.wait(pid, 20)
      until how
      assert.are.equal("exited", how)
      assert.are.equal(0, code, tt.read_file(dir .. "/err"))
      local got = assert(tt.stat(output))
      assert.are.equal(size, got.size)
      assert.is_true(tt.read_file(input) == tt.read_file(output), "echoed bytes differ")
      if not ten.sanitized then
        assert.is_true(peak < 20 * 1024, ("ten RSS peaked at %d KiB"):format(peak))
      end
    end)
  end

  it("passes a chunked response through with its chunks intact", function()
    local resp = server:request { host = "up.hello.localhost", path = "/stream?n=7&size=100" }
    assert.are.equal(200, resp.status)
    assert.are.equal("chunked", resp.headers["transfer-encoding"])
    assert.are.equal(700, #resp.body)
  end)

  it("answers HEAD without a body and keeps the connection usable", function()
    local conn = ten.connect(server.port)
    local resp = ten.request(server.port, { conn = conn, method = "HEAD", host = "up.hello.localhost",
      path = "/bytes?n=5000" })
    assert.are.equal(200, resp.status)
    assert.are.equal("5000", resp.headers["content-length"])
    resp = ten.request(server.port, { conn = conn, host = "up.hello.localhost", path = "/bytes?n=5000" })
    assert.are.equal(5000, #resp.body)
    conn:close()
  end)

  it("serves a 1 MB response whole", function()
    local resp = server:request { host = "up.hello.localhost", path = "/bytes?n=1048576" }
    assert.are.equal(200, resp.status)
    assert.are.equal(1048576, #resp.body)
  end)
end)
