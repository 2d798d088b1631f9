--[[
  Sets a job's progress and publishes it (Bull 4 updateProgress-2.lua).

  KEYS[1] job hash
  ARGV[1] progress channel   ARGV[2] job id   ARGV[3] progress JSON
  Returns 1, or -1 when the job does not exist.
]]
if redis.call("EXISTS", KEYS[1]) == 0 then
  return -1
end
redis.call("HSET", KEYS[1], "progress", ARGV[3])
redis.call("PUBLISH", ARGV[1], '{"jobId":' .. cjson.encode(ARGV[2]) .. ',"progress":' .. ARGV[3] .. '}')
return 1
