-- Read task records: ARGV[6] a waiter's inbox channel ('' = none), ARGV[7] how many of the ids
-- that follow are waited for (they come first), then ARGV[8..] the ids. Returns per id {the
-- fields named below, in that order (false where unset), yields}; {} for an unknown id. A
-- waited task that is not terminal yet gets the inbox added to its `w` field in this same
-- step, so its terminal write pushes to it (see push_later). The field list is
-- RECORD_FIELDS in taskflow/redis.py.
local inbox = ARGV[6]
local watched = 7 + tonumber(ARGV[7])
local out = {}
for j = 8, #ARGV do
  local id = ARGV[j]
  local r = rkey(id)
  local v = redis.call('HMGET', r, 'msg', 'st', 'att', 'sa', 'fa', 'res', 'err', 'prog', 'cr',
    'rx', 'tok', 'wid', 'w', 'y')
  local st = v[2]
  if not st then
    out[#out + 1] = {}
  else
    local ys = {}
    if v[14] then ys = redis.call('LRANGE', ykey(id), 0, -1) end
    out[#out + 1] = {v, ys}
    if j <= watched and not TERMINAL[st] then
      local w = v[13]
      if not w then
        redis.call('HSET', r, 'w', inbox)
      elseif not string.find(',' .. w .. ',', ',' .. inbox .. ',', 1, true) then
        redis.call('HSET', r, 'w', w .. ',' .. inbox)
      end
    end
  end
end
return out
