-- Record a batch of activities in one period, atomically (key schema: keys.py; the grouping
-- and why it equals recording them one by one: BatchGroups in redis_plan.py).
--
-- KEYS: moved, buckets, then (hll, out, back) per bucket of the batch.
-- ARGV: the number of ids moved in the batch, those ids, then per bucket of KEYS in turn:
--   its code, "1" if ids were added to it (it joins the bucket registry), the sizes of its
--   three id lists "check", "out" and "back", then those lists.
-- Every id of a bucket's lists goes into its HLL. "check" ids were added before any move of
-- theirs in the batch: those already in "moved" are corrected as track.lua corrects an add.
-- Then the batch's moves are recorded, then "out" ids end in the bucket's out set (moved out
-- last) and "back" ids in its back set (added last, after a move).

local problem = foreign_key_error(function(i)
  if i > 2 and (i - 3) % 3 == 0 then
    return 'string'
  end
  return 'set'
end)
if problem then
  return problem
end

-- unpack() has a stack limit: send long lists in slices.
local SLICE = 2000
local function each_slice(command, key, first, last)
  for from = first, last, SLICE do
    redis.call(command, key, unpack(ARGV, from, math.min(from + SLICE - 1, last)))
  end
end
local function each_slice_of(command, key, list)
  for from = 1, #list, SLICE do
    redis.call(command, key, unpack(list, from, math.min(from + SLICE - 1, #list)))
  end
end

local moved, registry = KEYS[1], KEYS[2]
local moved_count = tonumber(ARGV[1])
local moved_first = 2
local pos = moved_first + moved_count

local groups = {}
for k = 3, #KEYS, 3 do
  local check, out, back = tonumber(ARGV[pos + 2]), tonumber(ARGV[pos + 3]), tonumber(ARGV[pos + 4])
  local first = pos + 5
  groups[#groups + 1] = {
    hll = KEYS[k], out = KEYS[k + 1], back = KEYS[k + 2],
    code = ARGV[pos], registered = ARGV[pos + 1] == '1',
    check_first = first, check_last = first + check - 1,
    out_first = first + check, out_last = first + check + out - 1,
    back_first = first + check + out, back_last = first + check + out + back - 1,
  }
  pos = first + check + out + back
end

-- The HLLs and the bucket registry only grow: their order does not matter.
local codes = {}
for _, g in ipairs(groups) do
  each_slice('PFADD', g.hll, g.check_first, g.back_last)
  if g.registered then
    codes[#codes + 1] = g.code
  end
end
if #codes > 0 then
  each_slice_of('SADD', registry, codes)
end

-- Adds before any move in the batch: correct those of ids moved before the batch. The moved
-- set is small (it grows with id changes, not users); read it once unless the batch is
-- smaller.
local moved_size = redis.call('SCARD', moved)
if moved_size > 0 then
  local known = nil
  local total = 0
  for _, g in ipairs(groups) do
    total = total + g.check_last - g.check_first + 1
  end
  if moved_size <= total then
    known = {}
    for _, id in ipairs(redis.call('SMEMBERS', moved)) do
      known[id] = true
    end
  end
  for _, g in ipairs(groups) do
    local found = {}
    if known then
      for i = g.check_first, g.check_last do
        if known[ARGV[i]] then
          found[#found + 1] = ARGV[i]
        end
      end
    else
      for from = g.check_first, g.check_last, SLICE do
        local to = math.min(from + SLICE - 1, g.check_last)
        local flags = redis.call('SMISMEMBER', moved, unpack(ARGV, from, to))
        for j = 1, #flags do
          if flags[j] == 1 then
            found[#found + 1] = ARGV[from + j - 1]
          end
        end
      end
    end
    if #found > 0 then
      each_slice_of('SREM', g.out, found)
      each_slice_of('SADD', g.back, found)
    end
  end
end

-- The batch's moves, then where each moved id ends in each bucket it touched.
if moved_count > 0 then
  each_slice('SADD', moved, moved_first, moved_first + moved_count - 1)
end
for _, g in ipairs(groups) do
  if g.out_last >= g.out_first then
    each_slice('SADD', g.out, g.out_first, g.out_last)
    each_slice('SREM', g.back, g.out_first, g.out_last)
  end
  if g.back_last >= g.back_first then
    each_slice('SREM', g.out, g.back_first, g.back_last)
    each_slice('SADD', g.back, g.back_first, g.back_last)
  end
end
return 0
