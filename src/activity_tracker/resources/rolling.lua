-- Store the rolling windows ending on one day, computed from reads made after server time T
-- (the time of that day's collapse measurement), each unless the window stored was computed
-- after a later measurement (a compare-and-set per field; key schema and values: keys.py).
--
-- KEYS: counts. ARGV: T (microseconds), then field, "count,estimate" pairs; each is stored
-- as "count,estimate,T". Returns how many windows were stored.

local counts, measured_at = KEYS[1], tonumber(ARGV[1])
local stored = 0
for i = 2, #ARGV, 2 do
  local value = redis.call('HGET', counts, ARGV[i])
  local at = value and tonumber(string.match(value, '^[^,]*,[^,]*,(%d+)$'))
  if not at or at < measured_at then
    redis.call('HSET', counts, ARGV[i], ARGV[i + 1] .. ',' .. ARGV[1])
    stored = stored + 1
  end
end
return stored
