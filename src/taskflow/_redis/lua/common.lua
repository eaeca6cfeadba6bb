-- Shared prelude of every taskflow script (prepended by taskflow._redis.scripts).
--
-- ARGV[1] key prefix, ARGV[2] queue, ARGV[3] now (seconds, as the caller's exact float text),
-- ARGV[4] approximate event stream length, ARGV[5] publish command (PUBLISH or SPUBLISH).
-- Every key a script touches is built from "<prefix>{<queue>}:", so all of them share the
-- queue's hash slot; KEYS[1] names one of them so that a cluster client routes the call.
-- Times are stored as the caller's text and compared with tonumber(); the server clock is
-- never read.
local P = ARGV[1]
local Q = ARGV[2]
local NOW = ARGV[3]
local NOWN = tonumber(NOW)
local MAXLEN = ARGV[4]
local PUB = ARGV[5]
local K = P .. '{' .. Q .. '}:'
local TERMINAL = {done = true, failed = true, cancelled = true, expired = true}

local function rkey(id) return K .. 't:' .. id end
local function ykey(id) return K .. 'y:' .. id end

-- Append one event to the queue's capped stream (same script = same atomic step).
local function event(id, kind, attempt, oid, detail)
  local fields = {'i', id, 'k', kind, 't', NOW, 'a', tostring(attempt or 0)}
  if oid and oid ~= '' then
    fields[#fields + 1] = 'o'
    fields[#fields + 1] = oid
  end
  if detail and detail ~= '' then
    fields[#fields + 1] = 'd'
    fields[#fields + 1] = detail
  end
  redis.call('XADD', K .. 'ev', 'MAXLEN', '~', MAXLEN, '*', unpack(fields))
end

-- Make a message claimable: one sorted set per priority level (score: due time; member:
-- zero-padded enqueue sequence + id, so ties keep enqueue order), and the set of levels.
local function ready_add(pr, score, m)
  redis.call('ZADD', K .. 'r:' .. pr, score, m)
  redis.call('ZADD', K .. 'prios', -tonumber(pr), pr)
end

local function ready_remove(pr, m)
  local rk = K .. 'r:' .. pr
  redis.call('ZREM', rk, m)
  if redis.call('EXISTS', rk) == 0 then redis.call('ZREM', K .. 'prios', pr) end
end

-- Wake idle workers of this queue (one generation bump and one message per script call).
local function wake_workers()
  redis.call('INCR', K .. 'gen')
  redis.call(PUB, K .. 'work', '1')
end

-- Whether anyone listens on this queue's "done" channel (asked once per script call), so an
-- unwatched queue pays nothing for notifications.
local WATCHED = nil
local function watched()
  if WATCHED == nil then
    local cmd = 'NUMSUB'
    if PUB == 'SPUBLISH' then cmd = 'SHARDNUMSUB' end
    WATCHED = tonumber(redis.call('PUBSUB', cmd, K .. 'done')[2]) > 0
  end
  return WATCHED
end

-- The terminal record, pushed to waiters so they need not read it back: length-prefixed
-- strings "<len>:<bytes>", counts as "<n>;": id, n, hash fields and values, n, yields.
local function packed_record(id)
  local flat = redis.call('HGETALL', rkey(id))
  local ys = redis.call('LRANGE', ykey(id), 0, -1)
  local parts = {#id, ':', id, #flat, ';'}
  for _, s in ipairs(flat) do
    parts[#parts + 1] = #s .. ':'
    parts[#parts + 1] = s
  end
  parts[#parts + 1] = #ys .. ';'
  for _, s in ipairs(ys) do
    parts[#parts + 1] = #s .. ':'
    parts[#parts + 1] = s
  end
  return table.concat(parts)
end

-- Write a terminal state once: status, outcome, indexes, event, and the waiters' notification.
local function finish(id, status, res, err, rx, attempt, oid, detail)
  local r = rkey(id)
  redis.call('HSET', r, 'st', status, 'fa', NOW)
  if res ~= '' and redis.call('HGET', r, 'nr') ~= '1' then redis.call('HSET', r, 'res', res) end
  if err ~= '' then redis.call('HSET', r, 'err', err) end
  redis.call('ZREM', K .. 'run', id)
  if status == 'failed' then redis.call('ZADD', K .. 'dead', NOW, id) end
  if rx ~= '' then
    redis.call('HSET', r, 'rx', rx)
    redis.call('ZADD', K .. 'fin', rx, id)
  end
  event(id, status, attempt, oid, detail)
  if watched() then redis.call(PUB, K .. 'done', packed_record(id)) end
end

-- Store a new task record and make it claimable (or scheduled).
local function create(id, msg, pr, due, sched, dk, dt, rt, oid, nr)
  local seq = redis.call('INCR', K .. 'seq')
  local m = string.format('%012x', seq) .. id
  local r = rkey(id)
  local st = 'queued'
  if sched == '1' then st = 'scheduled' end
  redis.call('HSET', r, 'msg', msg, 'st', st, 'att', 0, 'tok', 0, 'pr', pr, 'm', m, 'rt', rt,
    'dk', dk, 'dt', dt, 'oid', oid, 'nr', nr)
  if sched == '1' then
    redis.call('ZADD', K .. 'sched', due, id)
    event(id, 'scheduled', 0, oid, '')
  else
    ready_add(pr, due, m)
    event(id, 'queued', 0, oid, '')
  end
  if dk ~= '' then redis.call('HSET', K .. 'dedup', dk, id) end
end
