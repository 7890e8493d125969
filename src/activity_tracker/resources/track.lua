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
-- the id was moved in the period. A bucket's HLL is probed until the bucket is in the
-- period's registry: it is registered by the same atomic call that first writes its HLL, so
-- from then on the HLL is ours (were someone to overwrite it later, Redis would refuse the
-- PFADD, leaving it untouched, and the call would fail).
--
-- This runs once per event: it is kept to the fewest calls (three per period for an add of
-- a registered bucket) and no tables.

local adds = ARGV[1] == '1'
local discards = ARGV[2] == '1'
local id, bucket_code, old_id = ARGV[3], ARGV[4], ARGV[5]
local stride = 1 + (discards and 3 or 0) + (adds and 4 or 0)
local add_at = discards and 5 or 2 -- offset of "buckets" within a period's keys

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

-- First pass: probe every key to be written; remember per period (by its first key's index)
-- whether the bucket is registered and whether the id was moved.
local registered, was_moved = {}, {}
for base = 1, #KEYS, stride do
  if discards then
    probe_hll(KEYS[base + 1])
    probe_set(KEYS[base + 2], old_id)
    probe_set(KEYS[base + 3], old_id)
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
  else
    probe_set(KEYS[base], old_id)
  end
end
if problem then
  return redis.error_reply(problem)
end

-- Second pass: write.
for base = 1, #KEYS, stride do
  if discards then
    -- Adding the old id to the HLL keeps "out" a subset of what the HLL counts, so that
    -- moving an id that was never tracked changes no count.
    redis.call('PFADD', KEYS[base + 1], old_id)
    redis.call('SADD', KEYS[base], old_id)
    redis.call('SADD', KEYS[base + 2], old_id)
    redis.call('SREM', KEYS[base + 3], old_id)
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
end
return 0
