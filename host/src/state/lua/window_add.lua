-- The hybrid rate limiter's reconciliation of one key (one round trip per key per interval).
-- KEYS[1]: the key's counter for one fixed window; ARGV[1]: requests this node admitted
-- since its last reconciliation; ARGV[2]: the counter's lifetime in ms.
-- Returns the window's total over every node.
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return n
