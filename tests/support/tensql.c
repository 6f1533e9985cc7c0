/* tensql: one read-only SQL query on an SQLite file, for busted specs that
 * check what ten stored in tenement.db without going through ten (Debian
 * has no SQLite binding for Lua 5.4).
 *
 *   local rows, err = tensql.query(path, "SELECT id, message FROM logs")
 *
 * Each row is an array of its columns (integer, number or string; a NULL
 * leaves a hole). On failure: nil, message. */
#include <lauxlib.h>
#include <lua.h>
#include <sqlite3.h>

int luaopen_tensql(lua_State *L);

static int l_query(lua_State *L) {
  const char *path = luaL_checkstring(L, 1);
  const char *sql = luaL_checkstring(L, 2);
  sqlite3 *db = NULL;
  sqlite3_stmt *st = NULL;
  int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL);
  if (rc == SQLITE_OK) {
    sqlite3_busy_timeout(db, 10000);
    rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
  }
  if (rc != SQLITE_OK) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
    sqlite3_close(db);
    return 2;
  }
  lua_newtable(L);
  lua_Integer n = 0;
  while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
    int cols = sqlite3_column_count(st);
    lua_createtable(L, cols, 0);
    for (int i = 0; i < cols; i++) {
      switch (sqlite3_column_type(st, i)) {
      case SQLITE_INTEGER: lua_pushinteger(L, sqlite3_column_int64(st, i)); break;
      case SQLITE_FLOAT: lua_pushnumber(L, sqlite3_column_double(st, i)); break;
      case SQLITE_NULL: continue;
      default:
        lua_pushlstring(L, (const char *)sqlite3_column_blob(st, i),
                        (size_t)sqlite3_column_bytes(st, i));
      }
      lua_rawseti(L, -2, i + 1);
    }
    lua_rawseti(L, -2, ++n);
  }
  if (rc != SQLITE_DONE) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    sqlite3_close(db);
    return 2;
  }
  sqlite3_finalize(st);
  sqlite3_close(db);
  return 1;
}

static const luaL_Reg funcs[] = {{"query", l_query}, {NULL, NULL}};

int luaopen_tensql(lua_State *L) {
  luaL_newlib(L, funcs);
  return 1;
}
