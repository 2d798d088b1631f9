--[[
  Deletes a paused queue and all its jobs, at most a slice of jobs per call (Bull 4 obliterate-2.lua).
  The keys of the queue itself go with the last call, so a queue whose obliteration was
  interrupted is still a paused queue with fewer jobs, and the next call goes on.

  KEYS[1] meta-paused   KEYS[2] active
  ARGV[1] base key "P:Q:"   ARGV[2] slice: most jobs to delete in this call   ARGV[3] "1" to delete active jobs too
  Returns -1 not paused, -2 active jobs and not forced, or {jobs deleted, 1 = call again or 0 = done}.
]]
local rcall = redis.call
local base = ARGV[1]
local slice = tonumber(ARGV[2])
if rcall("EXISTS", KEYS[1]) == 0 then
  return -1
end
if ARGV[3] ~= "1" and rcall("LLEN", KEYS[2]) > 0 then
  return -2
end
local budget = slice
local deleted = 0

local function removeIds(ids)
  for _, id in ipairs(ids) do
    local jobKey = base .. id
    local deid = rcall("HGET", jobKey, "deid")
    if deid then
      rcall("DEL", base .. "de:" .. deid)
    end
    local limited = rcall("HGET", base .. "limiter:index", id)
    if limited then
      rcall("SREM", limited, id)
      rcall("HDEL", base .. "limiter:index", id)
    end
    rcall("DEL", jobKey, jobKey .. ":logs", jobKey .. ":lock")
  end
  deleted = deleted + #ids
  budget = budget - #ids
end

for _, list in ipairs({"active", "wait", "paused"}) do
  local key = base .. list
  local ids = rcall("LRANGE", key, -budget, -1)
  removeIds(ids)
  rcall("LTRIM", key, 0, -(#ids + 1))
  if budget <= 0 then return {deleted, 1} end
end
for _, set in ipairs({"delayed", "completed", "failed", "priority"}) do
  local key = base .. set
  local ids = rcall("ZRANGE", key, 0, budget - 1)
  removeIds(ids)
  if #ids > 0 then
    rcall("ZREMRANGEBYRANK", key, 0, #ids - 1)
  end
  if budget <= 0 then return {deleted, 1} end
end
-- What is left is the queue's own keys. Jobs' limiter entries went with the jobs, so the index
-- is small; UNLINK frees large values (stalled marks, repeatables) off the main thread.
for _, key in ipairs(rcall("HVALS", base .. "limiter:index")) do
  rcall("UNLINK", key)
end
rcall("UNLINK", base .. "priority", base .. "stalled-check", base .. "stalled", base .. "meta-paused", base .. "meta",
  base .. "id", base .. "repeat", base .. "metrics:completed", base .. "metrics:completed:data",
  base .. "metrics:failed", base .. "metrics:failed:data", base .. "limiter", base .. "limiter:index",
  base .. "limiter:limited")
return {deleted, 0}
