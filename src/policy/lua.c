#include "policy/lua.h"

#include "policy/lua_internal.h"
#include "util/log.h"

#include <lauxlib.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <uv.h>

const tenL_limit_t tenL_config_limit = {"config evaluation", 1000};
const tenL_limit_t tenL_hook_limit = {"hook call", 100};
const tenL_limit_t tenL_repl_limit = {"REPL chunk", 2000};

/* C loops count this many steps between two reads of the clock. */
#define STEPS_PER_CHECK 1024

/* The deadline of the call running now (tenL_pcall nests). */
typedef struct call_clock {
  uint64_t deadline_ns; /* UINT64_MAX when no call runs */
  const tenL_limit_t *limit;
  bool expired; /* past the deadline: raise at every instruction */
} call_clock_t;

/* What a state needs besides Lua's own: the allocator's ud, and reached
 * from every thread of the state through the extra space (coroutines copy
 * the main thread's), so the count hook needs no global. */
typedef struct state_ctl {
  size_t mem_used, mem_limit;
  call_clock_t clock;
  size_t steps_left; /* tenL_spend's countdown to the next clock read */
  lua_State *main;
} state_ctl_t;

_Static_assert(sizeof(state_ctl_t *) <= LUA_EXTRASPACE, "LUA_EXTRASPACE too small");

/* The registry slot of the running call's time-limit message: made once
 * when the deadline passes, raised again from there without allocating. */
static const char expired_key;
/* The registry's weak set of coroutines that died of a time-limit error
 * raised by the count hook (see ten__lua_stopped). */
static const char stopped_key;

static state_ctl_t *ctl_of(lua_State *L) { return *(state_ctl_t **)lua_getextraspace(L); }

/* Coarse: a few ms of resolution is plenty for limits of 100 ms and more,
 * and it costs a few ns, which matters per hook call. */
static uint64_t now_ns(void) {
  struct timespec ts;
  if (clock_gettime(CLOCK_MONOTONIC_COARSE, &ts) != 0) return uv_hrtime(); /* a kernel without it */
  return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ------------------------------------------------------------ memory */

static void *limited_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  state_ctl_t *ctl = ud;
  size_t old = ptr ? osize : 0; /* without ptr, osize is the kind of object */
  if (nsize == 0) {
    free(ptr);
    ctl->mem_used -= old;
    return NULL;
  }
  /* Only growth is refused: Lua needs shrinking and freeing to succeed. */
  if (nsize > old && nsize - old > ctl->mem_limit - ctl->mem_used) return NULL;
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  ctl->mem_used = ctl->mem_used - old + nsize;
  return p;
}

/* ------------------------------------------------------------ time */

static void count_hook(lua_State *L, lua_Debug *ar);

static void set_count(lua_State *L, int every) {
  if (lua_gethookcount(L) != every) lua_sethook(L, count_hook, LUA_MASKCOUNT, every);
}

/* Marks the running call expired, with a message naming `where` (the
 * user's "file:line: ", or ""). */
static void expire(lua_State *L, const char *where) {
  state_ctl_t *ctl = ctl_of(L);
  ctl->clock.expired = true;
  lua_pushfstring(L, "%s%s exceeded its time limit of %d ms", where, ctl->clock.limit->what,
                  ctl->clock.limit->ms);
  lua_rawsetp(L, LUA_REGISTRYINDEX, &expired_key);
}

/* Lua leaves hooks off in a thread whose hook raised an error until a
 * pcall in that thread catches it. A coroutine that dies of it keeps them
 * off: sandbox.c will not run its __close handlers. */
static void mark_stopped(lua_State *L) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &stopped_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    lua_newtable(L);
    lua_createtable(L, 0, 1);
    lua_pushliteral(L, "k");
    lua_setfield(L, -2, "__mode");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &stopped_key);
  }
  lua_pushthread(L);
  lua_pushboolean(L, 1);
  lua_rawset(L, -3);
  lua_pop(L, 1);
}

bool ten__lua_stopped(lua_State *L, lua_State *co) {
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &stopped_key) != LUA_TTABLE) {
    lua_pop(L, 1);
    return false;
  }
  lua_pushthread(co);
  lua_xmove(co, L, 1);
  bool stopped = lua_rawget(L, -2) != LUA_TNIL;
  lua_pop(L, 2);
  return stopped;
}

bool ten__lua_expired(lua_State *L) { return ctl_of(L)->clock.expired; }

/* From now on every instruction of this thread and of the main one (which
 * a coroutine returns to) raises: whatever catches the error can run no
 * further than its next instruction. */
static int raise_expired(lua_State *L, bool from_hook) {
  state_ctl_t *ctl = ctl_of(L);
  set_count(L, 1);
  if (ctl->main != L) {
    set_count(ctl->main, 1);
    if (from_hook) mark_stopped(L);
  }
  if (lua_rawgetp(L, LUA_REGISTRYINDEX, &expired_key) != LUA_TSTRING) {
    lua_pop(L, 1);
    lua_pushliteral(L, "time limit exceeded");
  }
  return lua_error(L);
}

static void count_hook(lua_State *L, lua_Debug *ar) {
  state_ctl_t *ctl = ctl_of(L);
  if (!ctl->clock.expired) {
    if (now_ns() < ctl->clock.deadline_ns) {
      set_count(L, TEN_LUA_HOOK_EVERY); /* a coroutine left fast by an earlier call */
      return;
    }
    char where[LUA_IDSIZE + 24] = "";
    if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
      snprintf(where, sizeof where, "%s:%d: ", ar->short_src, ar->currentline);
    expire(L, where);
  }
  raise_expired(L, true);
}

void tenL_check_time(lua_State *L) {
  state_ctl_t *ctl = ctl_of(L);
  if (!ctl->clock.expired) {
    if (now_ns() < ctl->clock.deadline_ns) return;
    luaL_where(L, 1); /* the Lua code that called the looping C function */
    expire(L, lua_tostring(L, -1));
    lua_pop(L, 1);
  }
  raise_expired(L, false);
}

void tenL_spend(lua_State *L, size_t steps) {
  state_ctl_t *ctl = ctl_of(L);
  if (ctl->steps_left > steps) {
    ctl->steps_left -= steps;
    return;
  }
  ctl->steps_left = STEPS_PER_CHECK;
  tenL_check_time(L);
}

/* ------------------------------------------------------------ states */

static int panic(lua_State *L) {
  const char *msg = lua_tostring(L, -1);
  ten_log(TEN_LOG_ERROR, "lua: unprotected error: %s", msg ? msg : "(not a string)");
  return 0; /* Lua aborts */
}

lua_State *tenL_newstate(size_t memory_limit) {
  state_ctl_t *ctl = calloc(1, sizeof *ctl);
  if (!ctl) return NULL;
  ctl->mem_limit = memory_limit;
  ctl->clock.deadline_ns = UINT64_MAX;
  ctl->steps_left = STEPS_PER_CHECK;
  lua_State *L = lua_newstate(limited_alloc, ctl);
  if (!L) {
    free(ctl);
    return NULL;
  }
  *(state_ctl_t **)lua_getextraspace(L) = ctl;
  ctl->main = L;
  lua_atpanic(L, panic);
  lua_setwarnf(L, NULL, NULL); /* warn() has nowhere to write inside the server */
  /* Set once: coroutines inherit the hook from the thread creating them. */
  lua_sethook(L, count_hook, LUA_MASKCOUNT, TEN_LUA_HOOK_EVERY);
  lua_pushcfunction(L, ten__lua_open_libs);
  if (lua_pcall(L, 0, 0, 0) != LUA_OK) {
    ten_log(TEN_LOG_ERROR, "lua: cannot open the libraries: %s", lua_tostring(L, -1));
    tenL_close(L);
    return NULL;
  }
  return L;
}

void tenL_close(lua_State *L) {
  if (!L) return;
  state_ctl_t *ctl = ctl_of(L);
  lua_close(L);
  free(ctl);
}

/* ------------------------------------------------------------ calls */

static int traceback(lua_State *L) {
  const char *msg = lua_tostring(L, 1);
  if (!msg) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  /* Only the message: the first line already names the user's file:line,
   * and operators read these in one-line logs. */
  lua_pushstring(L, msg);
  return 1;
}

static void expired_message(lua_State *L, ten_err_t *err) {
  lua_rawgetp(L, LUA_REGISTRYINDEX, &expired_key);
  const char *msg = lua_tostring(L, -1);
  ten_errf(err, UV_EINVAL, "%s", msg ? msg : "time limit exceeded");
  lua_pop(L, 1);
}

int tenL_pcall(lua_State *L, int nargs, int nresults, const tenL_limit_t *limit, ten_err_t *err) {
  state_ctl_t *ctl = ctl_of(L);
  int base = lua_gettop(L) - nargs; /* the function's index */
  call_clock_t outer = ctl->clock;
  uint64_t now = now_ns();
  if (!outer.expired && now >= outer.deadline_ns) {
    /* Out of time already, without a hook noticing yet (inner calls keep
     * it from firing): the outer call is over too. */
    expire(L, "");
    set_count(L, 1);
    outer = ctl->clock;
  }
  if (outer.expired || !lua_checkstack(L, 1)) {
    /* An outer call is out of time: this one is abandoned before it starts. */
    if (outer.expired)
      expired_message(L, err);
    else
      ten_errf(err, UV_EINVAL, "Lua stack overflow");
    lua_settop(L, base - 1);
    return UV_EINVAL;
  }
  uint64_t deadline = now + (uint64_t)limit->ms * 1000000u;
  if (deadline < outer.deadline_ns) {
    ctl->clock.deadline_ns = deadline;
    ctl->clock.limit = limit;
  }
  lua_pushcfunction(L, traceback);
  lua_insert(L, base);
  int rc = lua_pcall(L, nargs, nresults, base);
  bool timed_out = ctl->clock.expired;
  if (rc == LUA_OK && !timed_out) {
    lua_remove(L, base);
  } else {
    if (timed_out) {
      expired_message(L, err); /* whatever error made it out, time ran out */
    } else if (rc == LUA_ERRMEM) {
      ten_errf(err, UV_EINVAL, "%s reached the memory limit of its Lua state (%zu MiB)",
               ctl->clock.limit->what, ctl->mem_limit >> 20);
    } else {
      ten_errf(err, UV_EINVAL, "%s", lua_tostring(L, -1) ? lua_tostring(L, -1) : "error");
    }
    lua_settop(L, base - 1);
    rc = UV_EINVAL;
  }
  /* A timeout at the outer call's deadline is the outer call's too: it
   * keeps the message and raises at its next instruction. */
  bool outer_expired = timed_out && now_ns() >= outer.deadline_ns;
  if (timed_out && !outer_expired) {
    lua_pushnil(L);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &expired_key);
    set_count(L, TEN_LUA_HOOK_EVERY);
  }
  ctl->clock = outer;
  ctl->clock.expired = outer_expired;
  return rc;
}

int tenL_require(lua_State *L, const char *name, ten_err_t *err) {
  lua_getglobal(L, "require");
  lua_pushstring(L, name);
  return tenL_pcall(L, 1, 1, &tenL_config_limit, err);
}
