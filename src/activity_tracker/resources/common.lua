-- Shared by the scripts (prepended to each; key schema and values: keys.py): the first
-- problem found (nothing is written once there is one), the probe of a sketch, the layout
-- of the change records, and commands with long argument lists.

local problem = nil
local function fail(message)
  problem = problem or message
end
-- A key holding someone else's data: it is left untouched.
local function refuse(key, what)
  fail('WRONGTYPE activity-tracker key ' .. key .. ' holds ' .. what)
end

-- The one HyperLogLog probe: its first bytes are "HYLL", or the key does not exist; or, with
-- a fakeredis client only (FAKEREDIS, set by the driver), it is a set: fakeredis keeps a
-- HyperLogLog as a set of its elements.
local function probe_hll(key)
  local head = redis.pcall('GETRANGE', key, 0, 3)
  if type(head) == 'table' then
    if not (FAKEREDIS and redis.call('TYPE', key).ok == 'set') then
      refuse(key, 'a value that is not a string')
    end
  elseif head ~= 'HYLL' and (head ~= '' or redis.call('EXISTS', key) == 1) then
    refuse(key, 'a string that is not a HyperLogLog')
  end
end

-- A command on a hash that is also its type probe: its reply, or nil for a key of another type.
local function hash_call(command, key, ...)
  local reply = redis.pcall(command, key, ...)
  if type(reply) == 'table' and reply.err then
    refuse(key, 'a value that is not a hash')
    return nil
  end
  return reply
end

-- unpack() has a stack limit: long lists go in slices (of whole field-value pairs).
local SLICE = 2000
local function each_slice(command, key, list)
  for from = 1, #list, SLICE do
    redis.call(command, key, unpack(list, from, math.min(from + SLICE - 1, #list)))
  end
end

-- A record is an 8-byte id hash, then index * 2 + flag (0 OUT, 1 BACK) as 2 big-endian bytes.
local function tail(index, flag)
  local value = index * 2 + flag
  return string.char(math.floor(value / 256), value % 256)
end

-- The records of hash h in a blob: {index = {at = position, flag = flag}}. A match must start
-- a record (a hash may also appear across two records).
local function records_of(blob, h)
  local found, init = {}, 1
  while true do
    local at = string.find(blob, h, init, true)
    if not at then
      return found
    end
    if (at - 1) % 10 == 0 then
      local value = string.byte(blob, at + 8) * 256 + string.byte(blob, at + 9)
      found[math.floor(value / 2)] = {at = at, flag = value % 2}
      init = at + 10
    else
      init = at + 1
    end
  end
end

-- The chg field holding the records of hash h: its shard, (h[0] * 256 + h[1]) % 1024.
local shard_names = {}
local function shard_of(h)
  local n = (string.byte(h, 1) * 256 + string.byte(h, 2)) % 1024
  local name = shard_names[n]
  if not name then
    name = tostring(n)
    shard_names[n] = name
  end
  return name
end

-- The index of a bucket in the change records: plan.states holds the registry values being
-- changed (by key), stored the value read. A bucket without one gets the next index
-- (plan.next, read from the registry plan.reg if not known yet).
local function index_in(plan, key, stored)
  local state = plan.states[key] or tonumber(stored) or 0
  local index = math.floor(state / 2)
  if index == 0 then
    plan.next = (plan.next or tonumber(redis.call('HGET', plan.reg, '@next')) or 0) + 1
    plan.next_changed = true
    index = plan.next
    if index > 65535 then
      fail('ERR activity-tracker: more than 65535 buckets with id changes in one period (' .. plan.reg .. ')')
    end
    plan.states[key] = index * 2 + state % 2
  end
  return index
end

-- Pass 2 of a period, after its PFADDs: write a plan's registry changes (plan.states by key,
-- named by code_of(key); the next index; the deadline of the period's first write), the
-- changes of its counters (plan.out: index -> change of "@out:<index>"; plan.moved: ids with
-- records for the first time), its changed shards (plan.blobs: shard, value, ...), and the
-- deadline of every key it may have created (plan.new_keys, and reg and chg).
local function write_plan(plan, code_of)
  local reg, at = plan.reg, plan.deadline
  local updates = {}
  for key, state in pairs(plan.states) do
    updates[#updates + 1] = code_of(key)
    updates[#updates + 1] = state
  end
  if plan.next_changed then
    updates[#updates + 1] = '@next'
    updates[#updates + 1] = plan.next
  end
  if plan.fresh then
    updates[#updates + 1] = '@deadline'
    updates[#updates + 1] = at
  end
  each_slice('HSET', reg, updates)
  for index, delta in pairs(plan.out) do
    if delta ~= 0 then
      redis.call('HINCRBY', reg, '@out:' .. index, delta)
    end
  end
  if plan.moved > 0 then
    redis.call('HINCRBY', reg, '@moved', plan.moved)
  end
  if #plan.blobs > 0 then
    each_slice('HSET', plan.chg, plan.blobs)
    redis.call('EXPIREAT', plan.chg, at)
  end
  if plan.fresh then
    redis.call('EXPIREAT', reg, at)
  end
  for _, key in ipairs(plan.new_keys) do
    redis.call('EXPIREAT', key, at)
  end
end
