-- Our tree holds our own code: third-party libraries (Lua, libuv, sqlite,
-- ...) come from Debian packages and are linked, never copied in, not even
-- with attribution. A copied file betrays itself by its notice.
describe("the source tree", function()
  it("carries no third-party copyright or licence notice", function()
    local root = assert(os.getenv("TEN_SOURCE_DIR"), "TEN_SOURCE_DIR is not set")
    local dirs = {}
    for _, dir in ipairs { "src", "lua", "tests", "examples", "dashboard/src" } do
      local f = io.open(root .. "/" .. dir)
      if f then
        f:close()
        dirs[#dirs + 1] = "'" .. root .. "/" .. dir .. "'"
      end
    end
    -- The words are split so that this file does not match itself.
    local words = "Copy" .. "right|Lua\\.org|PUC-" .. "Rio|Licen[cs]ed under|SPDX-Licen" .. "se"
    local grep = io.popen("grep -rIlE '" .. words .. "' " .. table.concat(dirs, " ") .. " 2>/dev/null")
    local found = grep:read("a")
    grep:close()
    assert.are.equal("", found)
  end)
end)
