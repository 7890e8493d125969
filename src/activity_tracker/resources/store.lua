-- Store the counts of one period measured at server time T, unless counts measured later are
-- stored already (compare-and-set; key schema and values: keys.py).
--
-- KEYS: counts. ARGV: T (microseconds), the deadline D of the period's raw keys, then
-- code, "count,estimate" pairs. Returns 1 if stored, 0 if refused.

local counts = KEYS[1]
local stored = redis.call('HGET', counts, '@measured')
if stored and tonumber(stored) >= tonumber(ARGV[1]) then
  return 0
end
local SLICE = 2000
redis.call('HSET', counts, '@measured', ARGV[1], '@expires', ARGV[2])
for from = 3, #ARGV, SLICE do
  redis.call('HSET', counts, unpack(ARGV, from, math.min(from + SLICE - 1, #ARGV)))
end
return 1
