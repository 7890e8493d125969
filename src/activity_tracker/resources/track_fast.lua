-- The common case of track.lua, which runs before anything else of it: an add (mode "1") to
-- a bucket ids were added to before, in every period, of an id without change records there.
-- Per period it is one HMGET of the registry (also its type probe), one HGET of the id's
-- shard when the period has id changes (also the type probe of chg), and one PFADD. It comes
-- before the helpers track.lua shares with the other scripts because defining them costs
-- more server time than this case's own work. Anything else (a move, a bucket not tracked
-- yet or an aggregate, a fresh period, an id with records, a key of the wrong type) falls
-- through to track.lua, which reads again and decides. ARGV and KEYS: see track.lua.

if ARGV[1] == '1' then
  local periods = #KEYS / 3
  local code, id, hash = ARGV[2], ARGV[4 + periods], ARGV[5 + periods]
  local shard = nil
  local common = true
  for base = 0, #KEYS - 3, 3 do
    local read = redis.pcall('HMGET', KEYS[base + 1], code, '@deadline', '@moved')
    local state = not read.err and tonumber(read[1])
    if not (state and state % 2 == 1 and read[2]) then
      common = false
      break
    end
    if read[3] then
      -- The shard of the id hash, as common.lua's shard_of computes it.
      shard = shard or tostring((string.byte(hash, 1) * 256 + string.byte(hash, 2)) % 1024)
      local blob = redis.pcall('HGET', KEYS[base + 2], shard)
      if type(blob) == 'table' or (blob and string.find(blob, hash, 1, true)) then
        common = false
        break
      end
    end
  end
  if common then
    for base = 3, #KEYS, 3 do
      redis.call('PFADD', KEYS[base], id)
    end
    return 0
  end
end
