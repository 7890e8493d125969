-- Record one activity in one or more periods, atomically (key schema and values: keys.py).
--
-- ARGV: mode ("1" add, "2" move out, "3" both), the new bucket's code, the old bucket's code,
--   the proposed deadline D of each period, then the id, its 8-byte hash, the old id, its
--   hash (the fixed part first, the id-dependent part last).
-- KEYS, for each period in turn: reg, chg, [hll of the new bucket] when adding, [hll of the
--   old bucket] when moving out.
-- Returns 0, or {which, period number} when the bucket (which: 1 new, 2 old) is an aggregate
-- in that period: then nothing was written.
--
-- Per period: move the old id out of the old bucket (into its sketch, its record for that
-- bucket OUT), then add the id (into its sketch; if the id has records in the period, its
-- record for the bucket BACK). "@out:<index>" stays the exact number of OUT records of each
-- bucket, "@moved" the number of ids with records.
--
-- Pass 1 reads and probes, pass 2 writes: nothing is written unless every key to be written
-- holds our kind of data (or nothing). The registry's HMGET is also its type probe, the
-- records' HMGET that of chg. A bucket's sketch is probed until the bucket is registered:
-- it is registered by the same call that first writes its sketch, so from then on the
-- sketch is ours (were someone to overwrite it, Redis would refuse the PFADD and the call
-- would fail).
--
-- Expiry: the period's first write stores D in the registry and sets it on every key it
-- writes; later writes read it there and set it on the keys they may create. So all raw keys
-- of a period expire together, and none ever lives without an expiry.
--
-- This runs once per event. Its common case (an add to a tracked bucket of an id without
-- records) is track_fast.lua, which runs first and returns: what is here is every other case.

local mode = ARGV[1]
local adds, moves = mode ~= '2', mode ~= '1'
local code, old_code = ARGV[2], ARGV[3]
local stride = 2 + (adds and 1 or 0) + (moves and 1 or 0)
local periods = #KEYS / stride
local id, hash, old_id, old_hash = ARGV[4 + periods], ARGV[5 + periods], ARGV[6 + periods], ARGV[7 + periods]

local function with_flag(blob, at, index, flag)
  return string.sub(blob, 1, at + 7) .. tail(index, flag) .. string.sub(blob, at + 10)
end

local fields = {code}
if moves then
  fields = {code, old_code, '@next'}
end
fields[#fields + 1] = '@deadline'
fields[#fields + 1] = '@moved'

-- Pass 1 for a period outside the common case: probe, and decide every write. Returns the
-- plan, or nil and the reply refusing the call.
local function plan_period(p, base, read)
  local reg, chg = KEYS[base + 1], KEYS[base + 2]
  local plan = {reg = reg, chg = chg, deadline = ARGV[3 + p]}
  local deadline, moved = read[#fields - 1], read[#fields]
  plan.fresh = not deadline -- the period's first write
  if deadline then
    plan.deadline = deadline
  end
  local states = {}
  states[code] = read[1]
  if moves then
    states[old_code] = read[2]
    plan.next = tonumber(read[3]) or 0
    plan.old_hll = KEYS[base + stride]
  end
  if adds then
    plan.hll = KEYS[base + 3]
  end
  for which, c in ipairs({code, old_code}) do
    local state = states[c]
    if state and string.sub(state, 1, 1) == 'a' and ((which == 1 and adds) or (which == 2 and moves)) then
      return nil, {which, p}
    end
  end
  if adds and not states[code] then
    probe_hll(plan.hll)
  end
  if moves and not states[old_code] then
    probe_hll(plan.old_hll)
  end
  if problem then
    return plan
  end
  plan.new_keys = {} -- keys this call may create
  plan.states = {} -- new registry values
  plan.out = {} -- index -> change of "@out:<index>"
  plan.moved, plan.blobs = 0, {}
  local function state_of(c)
    return plan.states[c] or tonumber(states[c]) or 0
  end
  local function index_of(c)
    return index_in(plan, c, states[c])
  end

  if moves or (adds and moved) then
    local old_shard = moves and shard_of(old_hash)
    local new_shard = adds and shard_of(hash)
    local blobs = {}
    local read_shards = {}
    if old_shard then
      read_shards[#read_shards + 1] = old_shard
    end
    if new_shard and new_shard ~= old_shard then
      read_shards[#read_shards + 1] = new_shard
    end
    local got = hash_call('HMGET', chg, unpack(read_shards)) or {}
    if problem then
      return plan
    end
    for i, s in ipairs(read_shards) do
      blobs[s] = got[i] or ''
    end
    local changed = {}
    if moves then
      local blob = blobs[old_shard]
      local found = records_of(blob, old_hash)
      if next(found) == nil then
        plan.moved = 1
      end
      local index = index_of(old_code)
      local record = found[index]
      if not record then
        blobs[old_shard] = blob .. old_hash .. tail(index, 0)
        plan.out[index] = (plan.out[index] or 0) + 1
        changed[old_shard] = true
      elseif record.flag == 1 then
        blobs[old_shard] = with_flag(blob, record.at, index, 0)
        plan.out[index] = (plan.out[index] or 0) + 1
        changed[old_shard] = true
      end
    end
    if adds then
      local blob = blobs[new_shard]
      local found = records_of(blob, hash)
      if next(found) ~= nil then
        local index = index_of(code)
        local record = found[index]
        if not record then
          blobs[new_shard] = blob .. hash .. tail(index, 1)
          changed[new_shard] = true
        elseif record.flag == 0 then
          blobs[new_shard] = with_flag(blob, record.at, index, 1)
          plan.out[index] = (plan.out[index] or 0) - 1
          changed[new_shard] = true
        end
      end
    end
    for s in pairs(changed) do
      plan.blobs[#plan.blobs + 1] = s
      plan.blobs[#plan.blobs + 1] = blobs[s]
    end
  end
  if adds and state_of(code) % 2 == 0 then
    plan.states[code] = state_of(code) + 1
  end
  -- A sketch of an unregistered bucket is created now (a fresh period registers none).
  if adds and (plan.fresh or not states[code]) then
    plan.new_keys[#plan.new_keys + 1] = plan.hll
  end
  if moves and (plan.fresh or not states[old_code]) and not (adds and old_code == code) then
    plan.new_keys[#plan.new_keys + 1] = plan.old_hll
  end
  return plan
end

-- Pass 1: read, probe, and decide every write of every period.
local plans = {}
for p = 1, periods do
  local base = (p - 1) * stride
  local read = hash_call('HMGET', KEYS[base + 1], unpack(fields)) or {}
  if problem then
    break
  end
  local plan, refusal = plan_period(p, base, read)
  if refusal then
    return refusal
  end
  if problem then
    break
  end
  plans[p] = plan
end
if problem then
  return redis.error_reply(problem)
end

-- Pass 2: write.
local function code_itself(c)
  return c
end
for _, plan in ipairs(plans) do
  if moves then
    redis.call('PFADD', plan.old_hll, old_id)
  end
  if adds then
    redis.call('PFADD', plan.hll, id)
  end
  write_plan(plan, code_itself)
end
return 0
