-- A plugin kv write, atomic and in one round trip (called with EVALSHA).
-- KEYS[1]: the value's key; KEYS[2]: the namespace index, a sorted set of the namespace's
-- keys scored by expiry in ms of the server clock (+inf: never). Both keys carry the
-- namespace as their hash tag, so they live in one cluster slot.
-- ARGV[1]: op (set | cas | incr | del); ARGV[2]: TTL in ms (0: none); ARGV[3]: most keys in
-- the namespace; ARGV[4]: the value (set, cas) or delta (incr); ARGV[5]: for cas, '1' when a
-- current value is expected (ARGV[6]) and '0' when the key must be absent.
-- Returns 1/0 (set, cas, del) or the new counter as a decimal string (incr, saturating at
-- the i64 bounds); errors QUOTA and NOTANUMBER.
local op = ARGV[1]
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[2])
if op == 'del' then
  redis.call('ZREM', KEYS[2], KEYS[1])
  return redis.call('DEL', KEYS[1])
end
local cur = redis.call('GET', KEYS[1])
if op == 'cas' then
  if ARGV[5] == '1' then
    if cur ~= ARGV[6] then return 0 end
  elseif cur then
    return 0
  end
end
if op == 'incr' and cur then
  if not string.match(cur, '^%-?%d+$') then return redis.error_reply('NOTANUMBER') end
  local r = redis.pcall('INCRBY', KEYS[1], ARGV[4])
  if type(r) == 'table' and r.err then
    if not string.find(r.err, 'overflow') then return r end
    -- Saturate, as the embedded store does (the TTL is kept).
    local bound = '9223372036854775807'
    if string.sub(ARGV[4], 1, 1) == '-' then bound = '-9223372036854775808' end
    redis.call('SET', KEYS[1], bound, 'KEEPTTL')
  end
  -- The counter as a string: Lua numbers are doubles, which round values past 2^53.
  return redis.call('GET', KEYS[1])
end
if not cur then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  if redis.call('ZSCORE', KEYS[2], KEYS[1]) == false
      and redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[3]) then
    return redis.error_reply('QUOTA')
  end
end
if ttl > 0 then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ttl)
  redis.call('ZADD', KEYS[2], now + ttl, KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[4])
  redis.call('ZADD', KEYS[2], '+inf', KEYS[1])
end
if op == 'incr' then return redis.call('GET', KEYS[1]) end
return 1
