-- Measure the buckets of one period and build its aggregates (key schema and values: keys.py).
--
-- KEYS: reg, chg, counts. The sketches are named by appending a bucket's code to ARGV[1],
-- the period's sketch key prefix (they share the period's hash tag, hence its slot).
-- ARGV: the sketch key prefix, the number of buckets to measure (-1: every bucket tracked in
-- the period) and their codes, the number of aggregates, then per aggregate its code, its
-- number of sources and their codes (in the caller's order: an aggregate may use one made
-- before it, in this call or an earlier one).
--
-- Returns one of:
--   {"empty", T}              nothing was written in the period (or its keys expired)
--   {"final"}                 its counts' "@expires" has passed: they are final
--   {"clash", code}           an aggregate is named like a raw bucket of the period
--   {"cycle", code}           an aggregate's sources lead back to itself
--   {"stored", T}             measured and stored, atomically (no client corrections)
--   {"measured", T, D, values, pending, records}: the client computes the corrections of
--     the pending aggregates (code, estimate, indices of its raw sources joined by ","),
--     from the records (chg as HGETALL), and stores values and its own with store.lua.
-- values: code, "count,estimate", ... T: the server time of the measurement (microseconds;
-- the client's later reads for the rolling windows ending on the period are after it).
--
-- A bucket's count is its estimate minus "@out:<index>". An aggregate's sketch is rebuilt
-- from its raw sources' sketches (aggregates among its sources are expanded); its
-- correction is known here when at most one of its raw sources has change records (then it
-- is that bucket's "@out"), otherwise it needs the records (corrections.union_subtracted).
-- Nothing is written before every key has been probed and every sketch read.

local reg, chg, counts, prefix = KEYS[1], KEYS[2], KEYS[3], ARGV[1]

for _, key in ipairs({reg, chg, counts}) do
  local kind = redis.call('TYPE', key).ok
  if kind ~= 'hash' and kind ~= 'none' then
    refuse(key, 'a ' .. kind .. ', not a hash')
  end
end
if problem then
  return redis.error_reply(problem)
end

local time = redis.call('TIME')
local measured_at = time[1] .. string.format('%06d', tonumber(time[2]))
local expires = redis.call('HGET', counts, '@expires')
if expires and tonumber(expires) <= tonumber(time[1]) then
  return {'final'}
end

local fields = redis.call('HGETALL', reg)
if #fields == 0 then
  return {'empty', measured_at}
end
local states, meta = {}, {}
for i = 1, #fields, 2 do
  if string.sub(fields[i], 1, 1) == '@' then
    meta[fields[i]] = fields[i + 1]
  else
    states[fields[i]] = fields[i + 1]
  end
end
local deadline = meta['@deadline']
if not deadline then
  return redis.error_reply('ERR activity-tracker key ' .. reg .. ' has no @deadline field')
end
local function is_aggregate(code)
  local state = states[code]
  return state ~= nil and string.sub(state, 1, 1) == 'a'
end
local function index_of(code)
  return math.floor(tonumber(states[code]) / 2)
end

-- The request.
local measured = {}
local count, at = tonumber(ARGV[2]), 3
if count < 0 then
  for code, state in pairs(states) do
    if not is_aggregate(code) and tonumber(state) % 2 == 1 then
      measured[#measured + 1] = code
    end
  end
else
  for i = 1, count do
    measured[i] = ARGV[at + i - 1]
  end
  at = at + count
end
-- A requested bucket that is an aggregate is rebuilt from its stored definition.
local aggregates, buckets = {}, {}
for _, code in ipairs(measured) do
  if is_aggregate(code) then
    local sources = {}
    for source in string.gmatch(string.sub(states[code], 2), '[^\n]+') do
      sources[#sources + 1] = source
    end
    aggregates[#aggregates + 1] = {code = code, sources = sources}
  else
    buckets[#buckets + 1] = code
  end
end
for _ = 1, tonumber(ARGV[at]) do
  local code, sources = ARGV[at + 1], {}
  for i = 1, tonumber(ARGV[at + 2]) do
    sources[i] = ARGV[at + 2 + i]
  end
  at = at + 2 + #sources
  if states[code] and not is_aggregate(code) then
    return {'clash', code}
  end
  aggregates[#aggregates + 1] = {code = code, sources = sources}
end

-- Each aggregate's raw sources (codes with a state), with the definitions of this call.
local function expand(code, seen, raw)
  if not is_aggregate(code) then
    if states[code] then
      raw[code] = true
    end
    return true
  end
  if seen[code] then
    return false
  end
  seen[code] = true
  for source in string.gmatch(string.sub(states[code], 2), '[^\n]+') do
    if not expand(source, seen, raw) then
      return false
    end
  end
  seen[code] = nil
  return true
end
for _, a in ipairs(aggregates) do
  states[a.code] = 'a' .. table.concat(a.sources, '\n')
  a.raw = {}
  if not expand(a.code, {}, a.raw) then
    return {'cycle', a.code}
  end
end

-- Probe every sketch involved, and read every sketch measured or merged (PFCOUNT fails on a
-- corrupt one).
local estimates = {}
local function read_raw(code)
  local key = prefix .. code
  if estimates[code] == nil then
    probe_hll(key)
    local reply = redis.pcall('PFCOUNT', key)
    if type(reply) == 'table' then
      fail('INVALIDOBJ activity-tracker key ' .. key .. ' holds a corrupt HyperLogLog: ' .. reply.err)
    end
    estimates[code] = reply
  end
end
for _, code in ipairs(buckets) do
  if states[code] then
    read_raw(code)
  end
end
for _, a in ipairs(aggregates) do
  probe_hll(prefix .. a.code)
  for code in pairs(a.raw) do
    read_raw(code)
  end
end
if problem then
  return redis.error_reply(problem)
end

-- Measure: buckets, then aggregates (their sketches rebuilt, their definitions registered).
local function out_of(code)
  local index = index_of(code)
  return index > 0 and (tonumber(meta['@out:' .. index]) or 0) or 0
end
local values, pending = {}, {}
local function value(code, corrected, estimate)
  values[#values + 1] = code
  values[#values + 1] = math.max(0, corrected) .. ',' .. estimate
end
for _, code in ipairs(buckets) do
  if states[code] then
    value(code, estimates[code] - out_of(code), estimates[code])
  else
    value(code, 0, 0)
  end
end
local definitions = {}
for _, a in ipairs(aggregates) do
  local key = prefix .. a.code
  local sources, indexed = {}, {}
  for code in pairs(a.raw) do
    sources[#sources + 1] = prefix .. code
    if index_of(code) > 0 then
      indexed[#indexed + 1] = code
    end
  end
  -- PFMERGE counts an existing destination as a source: start afresh (an empty sketch from
  -- PFADD, which fakeredis also takes without elements).
  redis.call('DEL', key)
  redis.call('PFADD', key)
  each_slice('PFMERGE', key, sources)
  redis.call('EXPIREAT', key, deadline)
  local estimate = redis.call('PFCOUNT', key)
  if #indexed == 0 then
    value(a.code, estimate, estimate)
  elseif #indexed == 1 then
    value(a.code, estimate - out_of(indexed[1]), estimate)
  else
    local indices = {}
    for i, code in ipairs(indexed) do
      indices[i] = index_of(code)
    end
    pending[#pending + 1] = a.code
    pending[#pending + 1] = estimate
    pending[#pending + 1] = table.concat(indices, ',')
  end
  definitions[#definitions + 1] = a.code
  definitions[#definitions + 1] = states[a.code]
end
each_slice('HSET', reg, definitions)

if #pending == 0 then
  values[#values + 1] = '@measured'
  values[#values + 1] = measured_at
  values[#values + 1] = '@expires'
  values[#values + 1] = deadline
  each_slice('HSET', counts, values)
  return {'stored', measured_at}
end
return {'measured', measured_at, deadline, values, pending, redis.call('HGETALL', chg)}
