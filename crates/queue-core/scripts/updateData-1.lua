--[[
  Replaces a job's data (Bull 4 updateData-1.lua).

  KEYS[1] job hash
  ARGV[1] data JSON
  Returns 1, or -1 when the job does not exist.
]]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return -1
end
redis.call("HSET", KEYS[1], "data", ARGV[1])
return 1
