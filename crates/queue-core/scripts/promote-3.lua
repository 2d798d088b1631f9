--[[
  Moves a delayed job to waiting now (Bull 4 promote-5.lua).

  KEYS[1] delayed   KEYS[2] meta-paused   KEYS[3] priority
  ARGV[1] base key "P:Q:"   ARGV[2] job id   ARGV[3] token
  Returns 1 done, -1 not delayed.
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
if rcall("ZREM", KEYS[1], id) == 0 then
  return -1
end
local priority = tonumber(rcall("HGET", base .. id, "priority")) or 0
pushWaiting(base, waitingList(base), id, priority, false)
rcall("PUBLISH", base .. "waiting@" .. ARGV[3], id)
rcall("HSET", base .. id, "delay", 0)
return 1
