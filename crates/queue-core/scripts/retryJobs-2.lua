--[[
  Moves up to a slice of failed jobs back to waiting (Bull 4 retryJobs-5.lua); the caller calls
  again until none is left.

  KEYS[1] failed   KEYS[2] meta-paused
  ARGV[1] base key "P:Q:"   ARGV[2] slice: most jobs to move in this call   ARGV[3] token
  Returns {jobs moved, failed jobs still left}.
]]
local rcall = redis.call
local base = ARGV[1]
local ids = rcall("ZRANGE", KEYS[1], 0, tonumber(ARGV[2]) - 1)
local target = waitingList(base)
for _, id in ipairs(ids) do
  rcall("HDEL", base .. id, "finishedOn", "processedOn", "failedReason")
  rcall("LPUSH", target, id)
end
if #ids > 0 then
  rcall("ZREMRANGEBYRANK", KEYS[1], 0, #ids - 1)
  rcall("PUBLISH", base .. "waiting@" .. ARGV[3], ids[#ids])
end
return {#ids, rcall("ZCARD", KEYS[1])}
