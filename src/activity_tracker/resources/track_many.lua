-- Record a batch of activities in one or more periods, atomically (key schema and values:
-- keys.py; the grouping, and why it equals recording the activities one by one:
-- BatchGroups in redis_plan.py).
--
-- ARGV starts with the id runs of the batch, each sent once however many buckets and periods
-- take it: their number, then per run its length n and its n ids, one argument each (so that
-- they reach PFADD without being split or copied here). Then one section per period, KEYS
-- and ARGV holding the sections one after the other.
-- KEYS: a scratch key (see below), then per section: reg, chg, then the sketch of each bucket
-- of the batch.
-- ARGV of a section: the proposed deadline D, the number of buckets, then per bucket in KEYS
--   order: its code, its flags (1: ids were added to it, 2: ids were moved out of it), the
--   number of id runs going into its sketch and their numbers, and its "checks": the 8-byte
--   hashes, concatenated, of the ids added to it before any move of theirs in the batch that
--   the batch never moves. Then "known": -1, or the number of ids with records ("@moved")
--   the client saw last; then it knows which ids have records, sends no checks but one entry
--   for each checked id with records, and the section is refused if "@moved" changed since.
--   Then the number of entries, and one argument per id moved in the batch (or checked with
--   records): its hash followed by 3-byte operations (bucket number * 4 + kind), kind 0 an
--   add before its first move in the batch, 1 a bucket whose last operation since that move
--   is a move out, 2 one where it is an add.
-- Nothing is written unless every section can be: the reply is {1, section, bucket number}
-- when a bucket written to is an aggregate in that section's period, {2, section} when the
-- client's "known" is out of date, else {0, then each section's "@moved" after the batch}.
--
-- A long run going into several sketches (a day's ids: into the daily sketch, and the weekly,
-- monthly... ones) is added once, to the scratch key (an empty dense sketch), which is then
-- merged into each of them (a sketch's registers are those of its set, so this is what
-- adding the ids to each gives) and deleted; unless the scratch key exists (or the client is
-- fakeredis, whose sketches are sets): then each sketch gets the ids.
--
-- Records are only read where they can matter: the checks only when the period has id
-- changes ("@moved"), in one HGET per shard touched, or in one HGETALL when the period has
-- fewer ids with records than the batch has checks. In the common case (registered buckets,
-- no id changes, or changes the client knows of) a section is one HMGET and its PFADDs.

local runs = {}
local pos = 2
for r = 1, tonumber(ARGV[1]) do
  local n = tonumber(ARGV[pos])
  runs[r] = {pos + 1, pos + n, targets = {}}
  pos = pos + 1 + n
end
-- Shorter runs go into each sketch: merging costs about as much as adding a few hundred ids
-- (and would make a small, sparse sketch dense: a sketch taking this many ids is dense).
local MERGED_FROM = 2048
-- An empty dense sketch, as Redis lays it out: "HYLL", encoding 0 (dense), 3 unused bytes,
-- an 8-byte cached count, 16,384 6-bit registers. The scratch key starts as one, as adding
-- ids to a new (sparse) sketch costs several times more until it turns dense.
local EMPTY_DENSE_SKETCH_SIZE = 16 + 16384 * 6 / 8

local function add_run(key, run)
  for from = run[1], run[2], SLICE do
    redis.call('PFADD', key, unpack(ARGV, from, math.min(from + SLICE - 1, run[2])))
  end
end

-- Read one section and decide its writes (pass 1: nothing is written).
local function plan_section(first_key)
  local s = {reg = KEYS[first_key], chg = KEYS[first_key + 1], deadline = ARGV[pos]}
  local count = tonumber(ARGV[pos + 1])
  pos = pos + 2
  local buckets, fields = {}, {}
  for b = 1, count do
    local g = {hll = KEYS[first_key + 1 + b], code = ARGV[pos], flags = tonumber(ARGV[pos + 1])}
    local k = tonumber(ARGV[pos + 2])
    g.runs = {}
    for i = 1, k do
      local run = runs[tonumber(ARGV[pos + 2 + i])]
      g.runs[i] = run
      run.targets[#run.targets + 1] = g.hll
    end
    g.checks = ARGV[pos + 3 + k]
    pos = pos + 4 + k
    buckets[b], fields[b] = g, g.code
  end
  s.buckets, s.last_key = buckets, first_key + 1 + count
  local known = tonumber(ARGV[pos])
  pos = pos + 1
  local moved_entries = {}
  for e = 1, tonumber(ARGV[pos]) do
    moved_entries[e] = ARGV[pos + e]
  end
  pos = pos + 1 + #moved_entries

  fields[count + 1], fields[count + 2], fields[count + 3] = '@deadline', '@moved', '@next'
  local read = {}
  for from = 1, #fields, SLICE do
    local got = hash_call('HMGET', s.reg, unpack(fields, from, math.min(from + SLICE - 1, #fields)))
    if not got then
      return s
    end
    for i = 1, #got do
      read[from + i - 1] = got[i]
    end
  end
  local states = {}
  for b = 1, count do
    states[b] = read[b]
  end
  s.fresh = not read[count + 1]
  if read[count + 1] then
    s.deadline = read[count + 1]
  end
  local moved_count = tonumber(read[count + 2]) or 0
  if known >= 0 and known ~= moved_count then
    s.stale = true
    return s
  end
  s.next = tonumber(read[count + 3]) or 0
  for b, g in ipairs(buckets) do
    if states[b] and string.sub(states[b], 1, 1) == 'a' then
      s.refused = b
      return s
    end
    if not states[b] then
      probe_hll(g.hll)
    end
  end
  if problem then
    return s
  end

  s.states, s.out, s.moved = {}, {}, 0
  local function state_of(b)
    return s.states[b] or tonumber(states[b]) or 0
  end
  local function index_of(b)
    return index_in(s, b, states[b])
  end
  for b, g in ipairs(buckets) do
    if g.flags % 2 == 1 and state_of(b) % 2 == 0 then
      s.states[b] = state_of(b) + 1
    end
  end

  -- The records, read per shard as needed; edits kept per shard until written.
  local blobs, flips, appended = {}, {}, {}
  local function blob_of(shard)
    local blob = blobs[shard]
    if not blob then
      blob = hash_call('HGET', s.chg, shard) or ''
      blobs[shard] = blob
    end
    return blob
  end
  local function append(shard, h, index, flag)
    local list = appended[shard]
    if not list then
      list = {}
      appended[shard] = list
    end
    list[#list + 1] = h .. tail(index, flag)
    if flag == 0 then
      s.out[index] = (s.out[index] or 0) + 1
    end
  end
  local function flip(shard, at, index, flag)
    flips[shard] = flips[shard] or {}
    flips[shard][at] = tail(index, flag)
    s.out[index] = (s.out[index] or 0) + (flag == 0 and 1 or -1)
  end
  -- Make the records of h (found: {index = {at, flag}}) end with final: {index = flag}.
  local function settle(shard, h, found, final)
    for index, flag in pairs(final) do
      local old = found[index]
      if not old then
        append(shard, h, index, flag)
      elseif old.flag ~= flag then
        flip(shard, old.at, index, flag)
      end
    end
  end

  if moved_count > 0 then
    local total = 0
    for _, g in ipairs(buckets) do
      total = total + #g.checks / 8
    end
    local known = nil
    if total > moved_count then
      local all = hash_call('HGETALL', s.chg)
      if not all then
        return s
      end
      known = {}
      for i = 1, #all, 2 do
        local blob = all[i + 1]
        blobs[all[i]] = blob
        for at = 1, #blob, 10 do
          known[string.sub(blob, at, at + 7)] = true
        end
      end
    end
    for b, g in ipairs(buckets) do
      local checks = g.checks
      for at = 1, #checks, 8 do
        local h = string.sub(checks, at, at + 7)
        if not known or known[h] then
          local shard = shard_of(h)
          local blob = blob_of(shard)
          if problem then
            return s
          end
          if string.find(blob, h, 1, true) then -- most ids have no records
            local found = records_of(blob, h)
            if next(found) ~= nil then
              settle(shard, h, found, {[index_of(b)] = 1})
            end
          end
        end
      end
    end
  end

  for _, entry in ipairs(moved_entries) do
    local h = string.sub(entry, 1, 8)
    local shard = shard_of(h)
    local blob = blob_of(shard)
    if problem then
      return s
    end
    local found = string.find(blob, h, 1, true) and records_of(blob, h)
    local had = found and next(found) ~= nil
    local final = {}
    for at = 9, #entry, 3 do
      local op = (string.byte(entry, at) * 256 + string.byte(entry, at + 1)) * 256 + string.byte(entry, at + 2)
      local kind = op % 4
      if kind ~= 0 or had then -- an add before its first move counts only if it had records
        final[index_of(math.floor(op / 4) + 1)] = kind == 1 and 0 or 1
      end
    end
    if had then
      settle(shard, h, found, final)
    elseif next(final) ~= nil then
      s.moved = s.moved + 1
      for index, flag in pairs(final) do
        append(shard, h, index, flag)
      end
    end
  end

  -- The new value of each shard edited.
  s.blobs = {}
  local edited = {}
  for shard in pairs(flips) do
    edited[shard] = true
  end
  for shard in pairs(appended) do
    edited[shard] = true
  end
  for shard in pairs(edited) do
    local blob, parts = blobs[shard], {}
    local changed = flips[shard]
    if changed then
      local positions, from = {}, 1
      for at in pairs(changed) do
        positions[#positions + 1] = at
      end
      table.sort(positions)
      for _, at in ipairs(positions) do
        parts[#parts + 1] = string.sub(blob, from, at + 7)
        parts[#parts + 1] = changed[at]
        from = at + 10
      end
      blob = string.sub(blob, from)
    end
    parts[#parts + 1] = blob
    parts[#parts + 1] = table.concat(appended[shard] or {})
    s.blobs[#s.blobs + 1] = shard
    s.blobs[#s.blobs + 1] = table.concat(parts)
  end
  s.moved_after = moved_count + s.moved
  s.new_keys = {}
  for b, g in ipairs(buckets) do
    if s.fresh or not states[b] then
      s.new_keys[#s.new_keys + 1] = g.hll
    end
  end
  return s
end

-- Write one planned section (pass 2).
local function write_section(s)
  for _, g in ipairs(s.buckets) do
    for _, run in ipairs(g.runs) do
      if not run.merged then
        add_run(g.hll, run)
      end
    end
  end
  write_plan(s, function(b)
    return s.buckets[b].code
  end)
end

local sections = {}
local k = 2
while k <= #KEYS do
  local s = plan_section(k)
  if s.refused then
    return {1, #sections + 1, s.refused}
  end
  if s.stale then
    return {2, #sections + 1}
  end
  if problem then
    return redis.error_reply(problem)
  end
  sections[#sections + 1] = s
  k = s.last_key + 1
end
local scratch, empty = KEYS[1], nil
if not FAKEREDIS and redis.call('EXISTS', scratch) == 0 then
  for _, run in ipairs(runs) do
    if #run.targets > 1 and run[2] - run[1] + 1 >= MERGED_FROM then
      empty = empty or 'HYLL' .. string.rep('\0', EMPTY_DENSE_SKETCH_SIZE - 4)
      redis.call('SET', scratch, empty, 'EXAT', sections[1].deadline)
      add_run(scratch, run)
      for _, key in ipairs(run.targets) do
        redis.call('PFMERGE', key, scratch)
      end
      redis.call('DEL', scratch)
      run.merged = true
    end
  end
end
local reply = {0}
for _, s in ipairs(sections) do
  write_section(s)
  reply[#reply + 1] = s.moved_after
end
return reply
