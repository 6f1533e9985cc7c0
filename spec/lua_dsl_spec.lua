-- Unit specs for lua/tenement/dsl.lua: what a tenement.lua declares is
-- collected with its lines; mistakes of shape are raised at the user's line.
local dsl = require "tenement.dsl"

local function run(source)
  local env, decl = dsl.new()
  local chunk = assert(load(source, "=tenement.lua", "t", env))
  local ok, err = pcall(chunk)
  return ok, err, decl
end

describe("tenement.dsl", function()
  it("collects settings, services and instances with their lines", function()
    local ok, err, decl = run([[
settings { domain = "example.com" }

service "api" {
  command = "app",
}
service "web" { command = "web" }
instances { web = { "a" }, api = { "prod", "staging" } }
]])
    assert.is_true(ok, err)
    assert.are.equal("example.com", decl.settings.fields.domain)
    assert.are.equal(1, decl.settings.line)
    assert.are.equal(2, #decl.services)
    assert.are.equal("api", decl.services[1].name)
    assert.are.equal(3, decl.services[1].line)
    assert.are.equal("web", decl.services[2].name)
    assert.are.equal(6, decl.services[2].line)
    -- instances sorted by service so start order is stable
    local keys = {}
    for _, i in ipairs(decl.instances) do keys[#keys + 1] = i.service .. ":" .. i.id end
    assert.are.same({ "api:prod", "api:staging", "web:a" }, keys)
    assert.is_nil(decl.unfinished())
  end)

  it("accepts a single id as a string", function()
    local ok, _, decl = run('service "a" { command = "x" }\ninstances { a = "one" }')
    assert.is_true(ok)
    assert.are.equal("one", decl.instances[1].id)
  end)

  local mistakes = {
    { 'service "a" { command = "x" }\nservice "a" { command = "y" }', 2, "defined twice %(first at line 1%)" },
    { 'settings { port = 1 }\nsettings { port = 2 }', 2, "settings given twice" },
    { 'service "Bad Name" { }', 1, "service name" },
    { 'service(42)', 1, "service expects a name" },
    { 'service "a" "b"', 1, "expects a table" },
    { 'settings "x"', 1, "settings expects a table" },
    { 'instances { a = { "Bad_Id" } }', 1, "not a valid id" },
    { 'instances { a = 5 }', 1, "must be a list of ids" },
    { 'instances "a"', 1, "instances expects a table" },
  }
  for _, m in ipairs(mistakes) do
    it("raises at the user's line: " .. m[3], function()
      local ok, err = run(m[1])
      assert.is_false(ok)
      assert.matches("^tenement.lua:" .. m[2] .. ": ", err)
      assert.matches(m[3], err)
    end)
  end

  it("notices a service without a body", function()
    local ok, _, decl = run('service "lonely"')
    assert.is_true(ok)
    local msg, line = decl.unfinished()
    assert.matches("has no body", msg)
    assert.are.equal(1, line)
  end)

  describe("key_line", function()
    local source = table.concat({
      'service "api" {',          -- 1
      '  -- port = "auto" later', -- 2
      '  command = "x",',         -- 3
      '  env = { port = "1" },',  -- 4
      '  port = "nope",',         -- 5
      '}',                        -- 6
      'service "web" {',          -- 7
      '  port = 1,',              -- 8
      '}',                        -- 9
    }, "\n")

    it("finds the key directly inside the block", function()
      assert.are.equal(3, dsl.key_line(source, 1, "command"))
      assert.are.equal(5, dsl.key_line(source, 1, "port"))
      assert.are.equal(4, dsl.key_line(source, 1, "env"))
    end)

    it("does not look past the block or into nested tables and comments", function()
      assert.are.equal(1, dsl.key_line(source, 1, "health"))
      assert.are.equal(8, dsl.key_line(source, 7, "port"))
    end)

    it("finds an entry inside a nested table when started there", function()
      assert.are.equal(4, dsl.key_line(source, 4, "port"))
    end)
  end)
end)
