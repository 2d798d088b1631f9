--[[
  Moves delayed jobs that are due to waiting (Bull 4 updateDelaySet-6.lua).

  KEYS[1] delayed   KEYS[2] wait   KEYS[3] paused   KEYS[4] meta-paused   KEYS[5] priority
  ARGV[1] base key   ARGV[2] now ms   ARGV[3] token
  Returns the score of the next delayed job (due * 4096 + n) as a string, or false.
]]
local rcall = redis.call
local base = ARGV[1]
local ids = rcall("ZRANGEBYSCORE", KEYS[1], 0, tonumber(ARGV[2]) * 4096, "LIMIT", 0, 1000)
if #ids > 0 then
  rcall("ZREM", KEYS[1], unpack(ids))
  local target = waitingList(base)
  for _, id in ipairs(ids) do
    local jobKey = base .. id
    if rcall("EXISTS", jobKey) == 1 then
      rcall("LREM", base .. "active", 0, id)
      -- Promotion ignores lifo, as Bull's does.
      pushWaiting(base, target, id, tonumber(rcall("HGET", jobKey, "priority")) or 0, false)
      rcall("PUBLISH", base .. "waiting@" .. ARGV[3], id)
      rcall("HSET", jobKey, "delay", 0)
    end
  end
end
local nextJob = rcall("ZRANGE", KEYS[1], 0, 0, "WITHSCORES")
if nextJob[2] then
  rcall("PUBLISH", KEYS[1], tonumber(nextJob[2]) / 4096)
  return nextJob[2]
end
return false
