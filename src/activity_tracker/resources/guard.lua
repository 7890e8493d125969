-- Shared by the scripts (prepended to each): refuse to touch a key holding someone else's data.
--
-- expected_type(i) names the type KEYS[i] must have when it exists: 'string' for a
-- HyperLogLog, 'set' otherwise. Returns an error reply naming the first foreign key, or nil.
local function foreign_key_error(expected_type)
  for i = 1, #KEYS do
    local expected = expected_type(i)
    local actual = redis.call('TYPE', KEYS[i]).ok
    if actual == 'string' and expected == 'string' and redis.call('GETRANGE', KEYS[i], 0, 3) ~= 'HYLL' then
      actual = 'string that is not a HyperLogLog'
    end
    if actual ~= 'none' and actual ~= expected then
      return redis.error_reply('WRONGTYPE activity-tracker key ' .. KEYS[i] .. ' holds a ' .. actual)
    end
  end
  return nil
end
