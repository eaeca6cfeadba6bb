-- Read task records: ARGV[6..] ids. Returns per id {hash fields flat, yields}.
local out = {}
for j = 6, #ARGV do
  local id = ARGV[j]
  out[#out + 1] = {redis.call('HGETALL', rkey(id)), redis.call('LRANGE', ykey(id), 0, -1)}
end
return out
