-- Record one activity in one or more periods, atomically (key schema: keys.py).
--
-- ARGV[1] "1" when an id is added, ARGV[2] "1" when an old id is moved out,
-- ARGV[3] the id, ARGV[4] the code of its bucket, ARGV[5] the old id.
-- KEYS, for each period in turn:
--   moved, [old hll, old out, old back] when moving out, [buckets, hll, out, back] when adding.
-- The move out happens before the add, as in the exact-set model.

local adds = ARGV[1] == '1'
local discards = ARGV[2] == '1'
local id, bucket_code, old_id = ARGV[3], ARGV[4], ARGV[5]
local stride = 1 + (discards and 3 or 0) + (adds and 4 or 0)

local refused = foreign_key_error(function(i)
  local offset = (i - 1) % stride
  if (discards and offset == 1) or (adds and offset == stride - 3) then
    return 'string'
  end
  return 'set'
end)
if refused then
  return refused
end

for base = 0, #KEYS - 1, stride do
  local moved = KEYS[base + 1]
  local next_key = base + 2
  if discards then
    local hll, out, back = KEYS[next_key], KEYS[next_key + 1], KEYS[next_key + 2]
    next_key = next_key + 3
    -- Adding the old id to the HLL keeps "out" a subset of what the HLL counts, so that
    -- moving an id that was never tracked changes no count.
    redis.call('PFADD', hll, old_id)
    redis.call('SADD', moved, old_id)
    redis.call('SADD', out, old_id)
    redis.call('SREM', back, old_id)
  end
  if adds then
    local buckets, hll, out, back = KEYS[next_key], KEYS[next_key + 1], KEYS[next_key + 2], KEYS[next_key + 3]
    redis.call('PFADD', hll, id)
    redis.call('SADD', buckets, bucket_code)
    if redis.call('SISMEMBER', moved, id) == 1 then
      redis.call('SREM', out, id)
      redis.call('SADD', back, id)
    end
  end
end
return 0
