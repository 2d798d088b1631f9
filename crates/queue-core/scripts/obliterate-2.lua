--[[
  Deletes a paused queue and all its jobs, a batch per call (Bull 4 obliterate-2.lua).

  KEYS[1] meta-paused   KEYS[2] active
  ARGV[1] base key "P:Q:"   ARGV[2] batch size   ARGV[3] "1" to delete active jobs too
  Returns 0 done, 1 call again, -1 not paused, -2 active jobs and not forced.
]]
local rcall = redis.call
local base = ARGV[1]
local batch = tonumber(ARGV[2])
if rcall("EXISTS", KEYS[1]) == 0 then
  return -1
end
if ARGV[3] ~= "1" and rcall("LLEN", KEYS[2]) > 0 then
  return -2
end
local budget = batch

local function removeIds(ids)
  for _, id in ipairs(ids) do
    local jobKey = base .. id
    local deid = rcall("HGET", jobKey, "deid")
    if deid then
      rcall("DEL", base .. "de:" .. deid)
    end
    rcall("DEL", jobKey, jobKey .. ":logs", jobKey .. ":lock")
  end
end

for _, list in ipairs({"active", "wait", "paused"}) do
  local key = base .. list
  local ids = rcall("LRANGE", key, -budget, -1)
  removeIds(ids)
  rcall("LTRIM", key, 0, -(#ids + 1))
  budget = budget - #ids
  if budget <= 0 then return 1 end
end
for _, set in ipairs({"delayed", "completed", "failed", "priority"}) do
  local key = base .. set
  local ids = rcall("ZRANGE", key, 0, budget - 1)
  removeIds(ids)
  if #ids > 0 then
    rcall("ZREMRANGEBYRANK", key, 0, #ids - 1)
  end
  budget = budget - #ids
  if budget <= 0 then return 1 end
end
local limited = rcall("HVALS", base .. "limiter:index")
for _, key in ipairs(limited) do
  rcall("DEL", key)
end
rcall("DEL", base .. "priority", base .. "stalled-check", base .. "stalled", base .. "meta-paused", base .. "meta",
  base .. "id", base .. "repeat", base .. "metrics:completed", base .. "metrics:completed:data",
  base .. "metrics:failed", base .. "metrics:failed:data", base .. "limiter", base .. "limiter:index",
  base .. "limiter:limited")
return 0
