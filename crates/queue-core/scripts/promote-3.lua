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
local target = base .. "wait"
if rcall("EXISTS", KEYS[2]) == 1 then
  target = base .. "paused"
end
local priority = tonumber(rcall("HGET", base .. id, "priority")) or 0
if priority > 0 then
  rcall("ZADD", KEYS[3], priority, id)
  local ahead = rcall("ZCOUNT", KEYS[3], 0, priority)
  local len = rcall("LLEN", target)
  local pivot = rcall("LINDEX", target, len - (ahead - 1))
  if pivot then
    rcall("LINSERT", target, "BEFORE", pivot, id)
  else
    rcall("RPUSH", target, id)
  end
else
  rcall("LPUSH", target, id)
end
rcall("PUBLISH", base .. "waiting@" .. ARGV[3], id)
rcall("HSET", base .. id, "delay", 0)
return 1
