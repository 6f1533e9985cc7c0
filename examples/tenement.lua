-- examples/tenement.lua: the demo config. Run it with
--   ten serve --config examples/tenement.lua
-- then: curl -H 'Host: prod.hello.localhost' http://127.0.0.1:8080/
--
-- HELLO_BIN points at the example app (examples/hello); the README's demo
-- command and the test suite set it. Plain Lua: read the environment,
-- compute values, loop over lists.

local hello = os.getenv("HELLO_BIN") or "hello"

settings {
  domain = os.getenv("TEN_DOMAIN") or "localhost",
  port = 8080,
}

service "hello" {
  command = hello,                  -- learns its socket from $SOCKET
  health = "/health",               -- ready only once this answers 2xx
  restart = "on-failure",
  env = { GREETING = "hello from {service}:{id}" },
}

instances { hello = { "prod", "staging" } }
