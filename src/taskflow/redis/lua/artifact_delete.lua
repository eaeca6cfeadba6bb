-- Delete an artifact: drop its head; its chunks stay a while for readers in progress.
-- KEYS[1] the head hash, KEYS[2] the chunks hash of the version the caller saw in the head.
-- ARGV: the head's upload id the caller saw, seconds the chunks stay.
-- Returns 1 (deleted), 0 (no artifact), -1 (the head changed: read it and call again).
local seen = redis.call('HGET', KEYS[1], 'sid')
if not seen then return 0 end
if seen ~= ARGV[1] then return -1 end
redis.call('DEL', KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
