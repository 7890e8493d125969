-- Record one activity in one or more periods, atomically (key schema: keys.py).
--
-- ARGV[1] "1" when an id is added, ARGV[2] "1" when an old id is moved out,
-- ARGV[3] the id, ARGV[4] the code of its bucket, ARGV[5] the old id, ARGV[6] the code of
-- its bucket.
-- KEYS, for each period in turn: moved, counts, [old hll, old out, old back, left] when
--   moving out, [buckets, hll, out, back] when adding.
-- The move out happens before the add, as in the exact-set model.
--
-- Expiry: a collapse with a retention sets it on every raw key it knows of and writes the
-- moment in the counts hash ("@expires"). A call that may create a raw key (a move, a bucket
-- not yet registered, an id moved before) reads that moment and gives the period's keys it
-- writes the same deadline, so keys written after a collapse do not outlive the others (and
-- after the deadline, they are gone at once: the counts are final).
--
-- Nothing is written unless every key that will be written holds our kind of data (or
-- nothing): each key is first probed with one read that fails on someone else's data, and
-- the reads the writes need anyway (is the id in "moved"? is the bucket registered?) are
-- those probes. The "out"/"back" sets of an add are only probed, and only written, when
-- the id was moved in the period. A bucket's HLL is probed until the bucket is in the
-- period's registry: it is registered by the same atomic call that first writes its HLL, so
-- from then on the HLL is ours (were someone to overwrite it later, Redis would refuse the
-- PFADD, leaving it untouched, and the call would fail).
--
-- This runs once per event: it is kept to the fewest calls (three per period for an add of
-- a registered bucket) and few tables.

local adds = ARGV[1] == '1'
local discards = ARGV[2] == '1'
local id, bucket_code, old_id, old_code = ARGV[3], ARGV[4], ARGV[5], ARGV[6]
local stride = 2 + (discards and 4 or 0) + (adds and 4 or 0)
local add_at = discards and 7 or 3 -- offset of "buckets" within a period's keys

local problem = nil -- the first key found holding someone else's data
local function refuse(key, what)
  problem = problem or ('WRONGTYPE activity-tracker key ' .. key .. ' holds ' .. what)
end

-- A set probe: SISMEMBER, which fails on a key of another type.
local function probe_set(key, member)
  local reply = redis.pcall('SISMEMBER', key, member)
  if type(reply) == 'table' then
    refuse(key, 'a value that is not a set')
    return false
  end
  return reply == 1
end

-- A HyperLogLog probe: its first bytes are "HYLL", or the key does not exist.
local function probe_hll(key)
  local head = redis.pcall('GETRANGE', key, 0, 3)
  if type(head) == 'table' then
    refuse(key, 'a value that is not a string')
  elseif head ~= 'HYLL' and (head ~= '' or redis.call('EXISTS', key) == 1) then
    refuse(key, 'a string that is not a HyperLogLog')
  end
end

-- The deadline of a collapsed period's raw keys, or false; HGET fails on a key of another type.
local function probe_deadline(key)
  local reply = redis.pcall('HGET', key, '@expires')
  if type(reply) == 'table' and reply.err then
    refuse(key, 'a value that is not a hash')
    return false
  end
  return reply
end

-- First pass: probe every key to be written; remember per period (by its first key's index)
-- whether the bucket is registered, whether the id was moved, and the period's deadline.
local registered, was_moved, deadline = {}, {}, {}
for base = 1, #KEYS, stride do
  local creates = discards
  if discards then
    probe_hll(KEYS[base + 2])
    probe_set(KEYS[base + 3], old_id)
    probe_set(KEYS[base + 4], old_id)
    probe_set(KEYS[base + 5], old_code)
  end
  if adds then
    local at = base + add_at - 1
    local known = probe_set(KEYS[at], bucket_code)
    if not known then
      probe_hll(KEYS[at + 1])
    end
    -- Moved in this period before, or by this very call.
    local moved = probe_set(KEYS[base], id) or (discards and id == old_id)
    if moved then
      probe_set(KEYS[at + 2], id)
      probe_set(KEYS[at + 3], id)
    end
    registered[base], was_moved[base] = known, moved
    creates = creates or not known or moved
  else
    probe_set(KEYS[base], old_id)
  end
  deadline[base] = creates and probe_deadline(KEYS[base + 1])
end
if problem then
  return redis.error_reply(problem)
end

-- Second pass: write.
for base = 1, #KEYS, stride do
  if discards then
    -- Adding the old id to the HLL keeps "out" a subset of what the HLL counts, so that
    -- moving an id that was never tracked changes no count.
    redis.call('PFADD', KEYS[base + 2], old_id)
    redis.call('SADD', KEYS[base], old_id)
    redis.call('SADD', KEYS[base + 3], old_id)
    redis.call('SREM', KEYS[base + 4], old_id)
    redis.call('SADD', KEYS[base + 5], old_code)
  end
  if adds then
    local at = base + add_at - 1
    redis.call('PFADD', KEYS[at + 1], id)
    if not registered[base] then
      redis.call('SADD', KEYS[at], bucket_code)
    end
    if was_moved[base] then
      redis.call('SREM', KEYS[at + 2], id)
      redis.call('SADD', KEYS[at + 3], id)
    end
  end
  if deadline[base] then
    local at = math.floor(tonumber(deadline[base]))
    redis.call('EXPIREAT', KEYS[base], at)
    for i = base + 2, base + stride - 1 do
      redis.call('EXPIREAT', KEYS[i], at)
    end
  end
end
return 0
