-- Record a batch of activities in one or more periods, atomically (key schema: keys.py; the
-- grouping, and why it equals recording the activities one by one: BatchGroups in
-- redis_plan.py).
--
-- One section per period, KEYS and ARGV holding the sections one after the other.
-- KEYS of a section: moved, buckets, left, counts, then (hll, out, back) per bucket of the
--   batch.
-- ARGV of a section: its number of buckets, the list of ids moved in the batch, then per
--   bucket in KEYS order: its code, "1" if ids were added to it (it joins the bucket
--   registry), "1" if ids were moved out of it (it joins "left"), and its three id lists
--   "check", "out" and "back".
-- A list is its length n followed by its n ids, or -n followed by one argument holding the
-- n ids joined by "\n" (cheaper to send; used when no id contains "\n").
-- Every id of a bucket's lists goes into its HLL. "check" ids were added before any move of
-- theirs in the batch: those already in "moved" are corrected as track.lua corrects an add.
-- Then the batch's moves are recorded, then "out" ids end in the bucket's out set (moved out
-- last) and "back" ids in its back set (added last, after a move). If the period was
-- collapsed with a retention, its keys get the deadline stored in its counts hash, as in
-- track.lua.

local pos = 1
local function next_list()
  local n = tonumber(ARGV[pos])
  local list = {}
  if n < 0 then
    local joined, from = ARGV[pos + 1], 1
    for i = 1, -n - 1 do
      local at = string.find(joined, '\n', from, true)
      list[i] = string.sub(joined, from, at - 1)
      from = at + 1
    end
    list[-n] = string.sub(joined, from)
    pos = pos + 2
  else
    for i = 1, n do
      list[i] = ARGV[pos + i]
    end
    pos = pos + 1 + n
  end
  return list
end

-- Read the sections (no writes yet), noting the type each key must have.
local sections, expected = {}, {}
local k = 1
while k <= #KEYS do
  local section = {
    first = k, moved = KEYS[k], registry = KEYS[k + 1], left = KEYS[k + 2], counts = KEYS[k + 3],
    groups = {},
  }
  expected[k], expected[k + 1], expected[k + 2], expected[k + 3] = 'set', 'set', 'set', 'hash'
  local buckets = tonumber(ARGV[pos])
  pos = pos + 1
  section.moved_ids = next_list()
  k = k + 4
  for _ = 1, buckets do
    local g = {hll = KEYS[k], out = KEYS[k + 1], back = KEYS[k + 2]}
    expected[k], expected[k + 1], expected[k + 2] = 'string', 'set', 'set'
    g.code, g.registered, g.left = ARGV[pos], ARGV[pos + 1] == '1', ARGV[pos + 2] == '1'
    pos = pos + 3
    g.check = next_list()
    g.out_ids = next_list()
    g.back_ids = next_list()
    section.groups[#section.groups + 1] = g
    k = k + 3
  end
  section.last = k - 1
  sections[#sections + 1] = section
end

local problem = foreign_key_error(function(i)
  return expected[i]
end)
if problem then
  return problem
end

-- unpack() has a stack limit: send long lists in slices.
local SLICE = 2000
local function each_slice(command, key, list)
  for from = 1, #list, SLICE do
    redis.call(command, key, unpack(list, from, math.min(from + SLICE - 1, #list)))
  end
end

local function record(section)
  local moved, groups = section.moved, section.groups

  -- The HLLs and the bucket registries only grow: their order does not matter.
  local codes, left = {}, {}
  for _, g in ipairs(groups) do
    each_slice('PFADD', g.hll, g.check)
    each_slice('PFADD', g.hll, g.out_ids)
    each_slice('PFADD', g.hll, g.back_ids)
    if g.registered then
      codes[#codes + 1] = g.code
    end
    if g.left then
      left[#left + 1] = g.code
    end
  end
  each_slice('SADD', section.registry, codes)
  each_slice('SADD', section.left, left)

  -- Adds before any move in the batch: correct those of ids moved before the batch. The
  -- moved set is small (it grows with id changes, not users): read it once unless the batch
  -- is smaller.
  local moved_size = redis.call('SCARD', moved)
  if moved_size > 0 then
    local known = nil
    local total = 0
    for _, g in ipairs(groups) do
      total = total + #g.check
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
        for _, id in ipairs(g.check) do
          if known[id] then
            found[#found + 1] = id
          end
        end
      else
        for from = 1, #g.check, SLICE do
          local to = math.min(from + SLICE - 1, #g.check)
          local flags = redis.call('SMISMEMBER', moved, unpack(g.check, from, to))
          for j = 1, #flags do
            if flags[j] == 1 then
              found[#found + 1] = g.check[from + j - 1]
            end
          end
        end
      end
      each_slice('SREM', g.out, found)
      each_slice('SADD', g.back, found)
    end
  end

  -- The batch's moves, then where each moved id ends in each bucket it touched.
  each_slice('SADD', moved, section.moved_ids)
  for _, g in ipairs(groups) do
    each_slice('SADD', g.out, g.out_ids)
    each_slice('SREM', g.back, g.out_ids)
    each_slice('SREM', g.out, g.back_ids)
    each_slice('SADD', g.back, g.back_ids)
  end

  local deadline = redis.call('HGET', section.counts, '@expires')
  if deadline then
    local at = math.floor(tonumber(deadline))
    for i = section.first, section.last do
      if KEYS[i] ~= section.counts then
        redis.call('EXPIREAT', KEYS[i], at)
      end
    end
  end
end

for _, section in ipairs(sections) do
  record(section)
end
return 0
