-- Read task records: ARGV[6] a waiter's inbox channel ('' = none), ARGV[7] how many of the ids
-- that follow are waited for (they come first), ARGV[8] what to read, then ARGV[9..] the ids.
-- A waited task that is not terminal yet gets the inbox added to its `w` field in this same
-- step, so its terminal write pushes to it (see push_later).
-- 'record' returns per id {the fields named below, in that order (false where unset),
-- yields}, {} for an unknown id; the field list is RECORD_FIELDS in taskflow/redis/_codec.py.
-- 'outcome' returns a flat list, per id: status (false: unknown id), result, error, result
-- expiry (OUTCOME_FIELDS in taskflow/redis/_codec.py).
-- A task whose queued form cannot be read (see fail_unreadable in common.lua) is read as
-- 'queued' with no message (its record shows it undecodable); a waiter registers in the `w`
-- field of its hash (the form is left as it is), and the claim that meets it fails it and
-- pushes the failure there.
local inbox = ARGV[6]
local watched = 8 + tonumber(ARGV[7])
local light = ARGV[8] == 'outcome'
local out = {}

-- Add the inbox to the `w` field (read as `w`) of task `id`, in its queued form (fields `x`,
-- sequence digits `seq`; see QF in common.lua) if it has one, else in its hash record.
local function register(id, w, x, seq)
  if w and string.find(',' .. w .. ',', ',' .. inbox .. ',', 1, true) then return end
  local all = w and (w .. ',' .. inbox) or inbox
  if x then
    x[QF.w] = all
    redis.call('SET', qkey(id), seq .. cmsgpack.pack(x))
  else
    redis.call('HSET', rkey(id), 'w', all)
  end
end

-- The fields read, in the order of the reply (as OUTCOME_FIELDS / RECORD_FIELDS); `w` is read
-- for `register`, not returned.
local OUTCOME = {'st', 'res', 'err', 'rx'}
local RECORD = {'msg', 'st', 'att', 'sa', 'fa', 'res', 'err', 'prog', 'cr', 'rx', 'tok', 'wid',
  'w', 'y', 'n', 'pr', 'rt', 'oid', 'dk', 'nr'}
local READ_OUTCOME = {'st', 'res', 'err', 'rx', 'w'}

if light then
  local n = 0
  for j = 9, #ARGV do
    local id = ARGV[j]
    local t, x, seq = load(id, READ_OUTCOME)
    if t.bad then t = {st = 'queued', w = t.w} end
    for k, name in ipairs(OUTCOME) do out[n + k] = t[name] or false end
    n = n + #OUTCOME
    if j <= watched and t.st and not TERMINAL[t.st] then register(id, t.w, x, seq) end
  end
  return out
end

for j = 9, #ARGV do
  local id = ARGV[j]
  local t, x, seq = load(id, RECORD)
  if t.bad then
    local values = {}
    for k, name in ipairs(RECORD) do values[k] = name == 'st' and 'queued' or false end
    out[#out + 1] = {values, {}}
    if j <= watched then register(id, t.w, nil, nil) end
  elseif not t.st then
    out[#out + 1] = {}
  else
    local values = {}
    for k, name in ipairs(RECORD) do values[k] = t[name] or false end
    local ys = {}
    if t.y then ys = redis.call('LRANGE', ykey(id), 0, -1) end
    out[#out + 1] = {values, ys}
    if j <= watched and not TERMINAL[t.st] then register(id, t.w, x, seq) end
  end
end
return out
