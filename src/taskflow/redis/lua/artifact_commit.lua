-- Make a finished artifact upload visible, replacing the version before it, in one step.
-- KEYS[1] the artifact's head hash (sid, size, sha, n), KEYS[2] the upload's chunks hash,
-- KEYS[3] the chunks hash of the version the caller saw in the head (KEYS[2] if none).
-- ARGV: upload id, the head's upload id the caller saw ('' = none), chunks, size, sha256,
-- seconds the replaced version stays for readers in progress.
-- Returns 1 (done), 0 (the head changed since the caller read it: read it and call again),
-- -1 (chunks are missing: `sweep_partial` removed the upload as abandoned).
local seen = redis.call('HGET', KEYS[1], 'sid') or ''
if seen ~= ARGV[2] then return 0 end
if redis.call('HLEN', KEYS[2]) ~= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], 'sid', ARGV[1], 'n', ARGV[3], 'size', ARGV[4], 'sha', ARGV[5])
redis.call('PERSIST', KEYS[2])
if seen ~= '' then redis.call('EXPIRE', KEYS[3], ARGV[6]) end
return 1
