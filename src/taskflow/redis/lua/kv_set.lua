-- Compare-and-set one record of the key-value space. KEYS[1] values hash, KEYS[2] versions
-- hash; ARGV: key, value, expected version ('' = any, '0' = must not exist).
-- Returns the new version, or false if the expectation failed.
local key, value, expect = ARGV[1], ARGV[2], ARGV[3]
local current = tonumber(redis.call('HGET', KEYS[2], key) or '0')
if expect ~= '' and tonumber(expect) ~= current then return false end
redis.call('HSET', KEYS[1], key, value)
redis.call('HSET', KEYS[2], key, current + 1)
return current + 1
