--[[
  Moves one failed job back to waiting (Bull 4 reprocessJob-6.lua, job.retry()).

  KEYS[1] job hash   KEYS[2] meta-paused
  ARGV[1] base key "P:Q:"   ARGV[2] job id   ARGV[3] now ms   ARGV[4] token
  Returns 1 done, 0 no such job, -1 locked, -2 not failed.
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
if rcall("EXISTS", KEYS[1]) == 0 then
  return 0
end
if rcall("EXISTS", base .. id .. ":lock") == 1 then
  return -1
end
if rcall("ZREM", base .. "failed", id) == 0 then
  return -2
end
rcall("HDEL", KEYS[1], "finishedOn", "processedOn", "failedReason")
rcall("HSET", KEYS[1], "retriedOn", ARGV[3])
local ok, opts = pcall(cjson.decode, rcall("HGET", KEYS[1], "opts") or "{}")
-- Bull's job.retry() ignores priority.
pushWaiting(base, waitingList(base), id, 0, ok and type(opts) == "table" and opts["lifo"] == true)
rcall("PUBLISH", base .. "waiting@" .. ARGV[4], id)
return 1
