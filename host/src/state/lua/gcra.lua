-- GCRA rate-limit check, atomic and in one round trip (called with EVALSHA).
-- KEYS[1]: the key's theoretical arrival time (TAT), in microseconds of the server clock.
-- ARGV[1]: emission interval in µs (window / requests); ARGV[2]: tolerance in µs
-- (interval × burst); ARGV[3]: cost in units.
-- Returns {allowed (0/1), remaining, reset ms, retry-after ms}.
-- The server's clock (TIME) is used, so every gateway sharing this Redis agrees on "now".
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval * cost
local allow_at = new_tat - tolerance
if now < allow_at then
  local remaining = math.max(0, math.floor((now + tolerance - tat) / interval))
  return {0, remaining, math.ceil((tat - now) / 1000), math.ceil((allow_at - now) / 1000)}
end
local ttl_ms = math.ceil((new_tat - now) / 1000) + 1
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', ttl_ms)
local remaining = math.max(0, math.floor((now + tolerance - new_tat) / interval))
return {1, remaining, math.ceil((new_tat - now) / 1000), 0}
