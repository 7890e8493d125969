-- Record one activity in one or more periods, atomically (key schema: keys.py).
--
-- ARGV[1] "1" when an id is added, ARGV[2] "1" when an old id is moved out,
-- ARGV[3] the id, ARGV[4] the code of its bucket, ARGV[5] the old id.
-- KEYS, for each period in turn:
--   moved, [old hll, old out, old back] when moving out, [buckets, hll, out, back] when adding.
-- The move out happens before the add, as in the exact-set model.
--
-- Nothing is written unless every key that will be written holds our kind of data (or
-- nothing): each key is first probed with one read that fails on someone else's data, and
-- the reads the writes need anyway (is the id in "moved"? is the bucket registered?) are
-- those probes. The "out"/"back" sets of an add are only probed, and only written, when
-- the id was moved in the period.

local adds = ARGV[1] == '1'
local discards = ARGV[2] == '1'
local id, bucket_code, old_id = ARGV[3], ARGV[4], ARGV[5]
local stride = 1 + (discards and 3 or 0) + (adds and 4 or 0)

local problem = nil  -- the first key found holding someone else's data
local function refuse(key, what)
  problem = problem or ('WRONGTYPE activity-tracker key ' .. key .. ' holds ' .. what)
end

-- A set probe: SISMEMBER, which fails on a key of another type.
local function probe_set(key, member)
  local reply = redis.pcall('SISMEMBER', key, member)
  if type(reply) == 'table' and reply.err then
    refuse(key, 'a value that is not a set')
  end
  return reply == 1
end

-- A HyperLogLog probe: its first bytes are "HYLL", or the key does not exist.
local function probe_hll(key)
  local head = redis.pcall('GETRANGE', key, 0, 3)
  if type(head) == 'table' and head.err then
    refuse(key, 'a value that is not a string')
  end
  if head ~= 'HYLL' and (head ~= '' or redis.call('EXISTS', key) == 1) then
    refuse(key, 'a string that is not a HyperLogLog')
  end
end

-- First pass: probe every key to be written, and remember what the writes need to know.
local plans = {}
for base = 0, #KEYS - 1, stride do
  local plan = {moved = KEYS[base + 1]}
  local k = base + 2
  if discards then
    plan.old_hll, plan.old_out, plan.old_back = KEYS[k], KEYS[k + 1], KEYS[k + 2]
    k = k + 3
    probe_hll(plan.old_hll)
    probe_set(plan.old_out, old_id)
    probe_set(plan.old_back, old_id)
  end
  if adds then
    plan.buckets, plan.hll, plan.out, plan.back = KEYS[k], KEYS[k + 1], KEYS[k + 2], KEYS[k + 3]
    probe_hll(plan.hll)
    plan.registered = probe_set(plan.buckets, bucket_code)
    -- Moved in this period before, or by this very call.
    plan.was_moved = probe_set(plan.moved, id) or (discards and id == old_id)
    if plan.was_moved then
      probe_set(plan.out, id)
      probe_set(plan.back, id)
    end
  elseif discards then
    probe_set(plan.moved, old_id)
  end
  plans[#plans + 1] = plan
end
if problem then
  return redis.error_reply(problem)
end

-- Second pass: write.
for _, plan in ipairs(plans) do
  if discards then
    -- Adding the old id to the HLL keeps "out" a subset of what the HLL counts, so that
    -- moving an id that was never tracked changes no count.
    redis.call('PFADD', plan.old_hll, old_id)
    redis.call('SADD', plan.moved, old_id)
    redis.call('SADD', plan.old_out, old_id)
    redis.call('SREM', plan.old_back, old_id)
  end
  if adds then
    redis.call('PFADD', plan.hll, id)
    if not plan.registered then
      redis.call('SADD', plan.buckets, bucket_code)
    end
    if plan.was_moved then
      redis.call('SREM', plan.out, id)
      redis.call('SADD', plan.back, id)
    end
  end
end
return 0
