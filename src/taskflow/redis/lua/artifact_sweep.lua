-- Remove the chunks of an abandoned upload, unless it was committed (its writer died between
-- the commit and leaving the staging set). KEYS[1] the head hash, KEYS[2] the upload's chunks.
-- ARGV: the upload id. Returns 1 if the upload was a leftover, 0 if it was committed.
if redis.call('HGET', KEYS[1], 'sid') == ARGV[1] then return 0 end
redis.call('UNLINK', KEYS[2])
return 1
