-- Unit specs for lua/tenement/repl.lua: readable printing and compiling.
local repl = require "tenement.repl"

describe("tenement.repl", function()
  describe("format", function()
    it("prints scalars as Lua would read them", function()
      assert.are.equal('"hi"', repl.format("hi"))
      assert.are.equal("42", repl.format(42))
      assert.are.equal("true", repl.format(true))
      assert.are.equal("nil", repl.format(nil))
      assert.are.equal("{}", repl.format({}))
    end)

    it("prints tables with sorted keys, arrays in order", function()
      assert.are.equal('{\n  a = 1,\n  b = "x"\n}', repl.format({ b = "x", a = 1 }))
      assert.are.equal("{\n  10,\n  20\n}", repl.format({ 10, 20 }))
      assert.are.equal('{\n  ["a key"] = 1\n}', repl.format({ ["a key"] = 1 }))
    end)

    it("nests, and survives cycles and depth", function()
      local t = { inner = { x = 1 } }
      assert.are.equal("{\n  inner = {\n    x = 1\n  }\n}", repl.format(t))
      local cyclic = {}
      cyclic.self = cyclic
      assert.matches("<cycle>", repl.format(cyclic))
      local deep = {}
      local cur = deep
      for _ = 1, 20 do cur.next = {}; cur = cur.next end
      assert.matches("{%.%.%.}", repl.format(deep))
    end)
  end)

  describe("compile", function()
    local env = setmetatable({}, { __index = _G })

    it("treats an expression as one and a statement as one", function()
      local fn = assert(repl.compile(env, "1 + 1"))
      assert.are.equal(2, fn())
      fn = assert(repl.compile(env, "y = 3"))
      fn()
      assert.are.equal(3, env.y)
    end)

    it("tells an incomplete chunk from a wrong one", function()
      local fn, err, incomplete = repl.compile(env, "for i = 1, 3 do")
      assert.is_nil(fn)
      assert.is_true(incomplete)
      fn, err, incomplete = repl.compile(env, "1 +* 2")
      assert.is_nil(fn)
      assert.is_false(incomplete)
      assert.is_string(err)
    end)
  end)

  it("formats several results one per line", function()
    assert.are.equal("1\n\"a\"", repl.results(1, "a"))
    assert.are.equal("", repl.results())
  end)
end)
