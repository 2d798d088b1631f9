--[[
  Removes a job and every trace of it, unless a worker holds its lock (Bull 4 removeJob-11.lua).

  KEYS[1] job hash
  ARGV[1] base key "P:Q:"   ARGV[2] job id
  Returns 1 removed, 0 locked, -1 no such job. An id left in a list or set without its hash
  (an orphan, which breaks Node's stalled check) is removed too, and counts as removed.
]]
local rcall = redis.call
local base = ARGV[1]
local id = ARGV[2]
if rcall("EXISTS", base .. id .. ":lock") == 1 then
  return 0
end
local exists = rcall("EXISTS", KEYS[1]) == 1
local removed = 0
for _, list in ipairs({"active", "wait", "paused"}) do
  removed = removed + rcall("LREM", base .. list, 0, id)
end
for _, set in ipairs({"delayed", "completed", "failed", "priority"}) do
  removed = removed + rcall("ZREM", base .. set, id)
end
if not exists then
  if removed > 0 then return 1 end
  return -1
end
local limited = rcall("HGET", base .. "limiter:index", id)
if limited then
  rcall("SREM", limited, id)
  rcall("HDEL", base .. "limiter:index", id)
end
local deid = rcall("HGET", KEYS[1], "deid")
if deid then
  local owner = rcall("GET", base .. "de:" .. deid)
  if owner == id then
    rcall("DEL", base .. "de:" .. deid)
  end
end
rcall("DEL", KEYS[1], base .. id .. ":logs")
return 1
