-- Measure the buckets of one period and build its aggregates (key schema: keys.py).
--
-- ARGV[1] seconds to keep the raw keys ("" keeps them for good), ARGV[2] number of buckets
-- to measure, ARGV[3] number of aggregates, ARGV[4..] the number of sources of each aggregate.
-- KEYS: moved, buckets, left, then a triple (hll, out, back) per bucket to measure, then per
-- aggregate its own triple followed by one triple per source, then triples that only get
-- their expiry set.
-- Returns {estimate, moved out} per measured bucket, then per aggregate.

local retention = ARGV[1]
local measured = tonumber(ARGV[2])
local aggregates = tonumber(ARGV[3])

local refused = foreign_key_error(function(i)
  if i > 3 and (i - 4) % 3 == 0 then
    return 'string'
  end
  return 'set'
end)
if refused then
  return refused
end

local results = {}
local function measure(hll, out)
  results[#results + 1] = redis.call('PFCOUNT', hll)
  results[#results + 1] = redis.call('SCARD', out)
end

local k = 4
for _ = 1, measured do
  measure(KEYS[k], KEYS[k + 1])
  k = k + 3
end

for a = 1, aggregates do
  local hll, out, back = KEYS[k], KEYS[k + 1], KEYS[k + 2]
  local hlls, outs, backs = {}, {}, {}
  for s = 1, tonumber(ARGV[3 + a]) do
    local src = k + 3 * s
    hlls[s], outs[s], backs[s] = KEYS[src], KEYS[src + 1], KEYS[src + 2]
  end
  -- PFMERGE counts an existing destination as a source: start afresh so that a re-collapse
  -- reflects exactly the sources' current sketches.
  redis.call('DEL', hll, out, back)
  redis.call('PFMERGE', hll, unpack(hlls))
  redis.call('SUNIONSTORE', back, unpack(backs))
  redis.call('SUNIONSTORE', out, unpack(outs))
  redis.call('SDIFFSTORE', out, out, back)
  measure(hll, out)
  k = k + 3 * (#hlls + 1)
end

for i = 1, #KEYS do
  if retention == '' then
    redis.call('PERSIST', KEYS[i])
  else
    redis.call('EXPIRE', KEYS[i], retention)
  end
end
return results
