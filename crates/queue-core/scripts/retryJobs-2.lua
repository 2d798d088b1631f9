--[[
  Moves up to ARGV[2] failed jobs back to waiting (Bull 4 retryJobs-5.lua).

  KEYS[1] failed   KEYS[2] meta-paused
  ARGV[1] base key "P:Q:"   ARGV[2] batch size   ARGV[3] token
  Returns the number of failed jobs still left.
]]
local rcall = redis.call
local base = ARGV[1]
local ids = rcall("ZRANGE", KEYS[1], 0, tonumber(ARGV[2]) - 1)
local target = waitingList(base)
for _, id in ipairs(ids) do
  rcall("HDEL", base .. id, "finishedOn", "processedOn", "failedReason")
  rcall("ZREM", KEYS[1], id)
  rcall("LPUSH", target, id)
end
if #ids > 0 then
  rcall("PUBLISH", base .. "waiting@" .. ARGV[3], ids[#ids])
end
return rcall("ZCARD", KEYS[1])
