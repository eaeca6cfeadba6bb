-- Read task records: ARGV[6] a waiter's inbox channel ('' = none), ARGV[7] how many of the ids
-- that follow are waited for (they come first), then ARGV[8..] the ids. Returns per id {hash
-- fields flat, yields}. A waited task that is not terminal yet gets the inbox added to its `w`
-- field in this same step, so its terminal write pushes to it (see push_later).
local inbox = ARGV[6]
local watched = 7 + tonumber(ARGV[7])
local out = {}
for j = 8, #ARGV do
  local id = ARGV[j]
  local r = rkey(id)
  local flat = redis.call('HGETALL', r)
  local st, w, y = nil, nil, nil
  for k = 1, #flat, 2 do
    local name = flat[k]
    if name == 'st' then
      st = flat[k + 1]
    elseif name == 'w' then
      w = flat[k + 1]
    elseif name == 'y' then
      y = true
    end
  end
  local ys = {}
  if y then ys = redis.call('LRANGE', ykey(id), 0, -1) end
  out[#out + 1] = {flat, ys}
  if j <= watched and st and not TERMINAL[st] then
    if not w then
      redis.call('HSET', r, 'w', inbox)
    elseif not string.find(',' .. w .. ',', ',' .. inbox .. ',', 1, true) then
      redis.call('HSET', r, 'w', w .. ',' .. inbox)
    end
  end
end
return out
