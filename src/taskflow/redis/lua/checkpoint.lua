-- Named checkpoint values of running tasks (Storage.save_checkpoints): ARGV[6] = count, then
-- per entry: id, token, name, value. Each is kept in the task's hash `c:<id>` (same slot as its
-- record; deleted with it by cleanup.lua) if the task runs under that token. Claims, retries
-- and releases leave that hash alone. Returns per entry 1 or 0.
local n = tonumber(ARGV[6])
local out = {}
local b = 7
for _ = 1, n do
  local id, tok = ARGV[b], ARGV[b + 1]
  local t = hmget_named(rkey(id), {'st', 'tok'})
  if t.st == 'running' and t.tok == tok then
    redis.call('HSET', ckey(id), ARGV[b + 2], ARGV[b + 3])
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
  b = b + 4
end
return out
