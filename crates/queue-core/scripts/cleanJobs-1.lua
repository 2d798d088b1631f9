--[[
  Removes jobs of one state older than a cutoff (Bull 4 cleanJobsInSet-3.lua), skipping locked
  jobs. A job's age is its first present field of finishedOn, processedOn, timestamp, compared as
  numbers (Bull compares them as strings).

  KEYS[1] the state's list or zset
  ARGV[1] base key "P:Q:"   ARGV[2] cutoff ms   ARGV[3] limit (0 = no limit)   ARGV[4] "list" or "zset"
  ARGV[5] "1" when the state is completed or failed (zset scored by finishedOn)
  Returns the removed ids.
]]
local rcall = redis.call
local base = ARGV[1]
local cutoff = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local removed = {}

local function age(id)
  local fields = rcall("HMGET", base .. id, "finishedOn", "processedOn", "timestamp")
  for _, v in ipairs(fields) do
    if v then return tonumber(v) end
  end
  return nil
end

local function removeJob(id)
  -- A job that never finishes never frees its debounce slot: free it here (Bull does the
  -- same for every state but completed and failed, whose slots were freed when they finished).
  if ARGV[5] ~= "1" then
    local deid = rcall("HGET", base .. id, "deid")
    if deid and rcall("GET", base .. "de:" .. deid) == id then
      rcall("DEL", base .. "de:" .. deid)
    end
  end
  rcall("ZREM", base .. "priority", id)
  local limited = rcall("HGET", base .. "limiter:index", id)
  if limited then
    rcall("SREM", limited, id)
    rcall("HDEL", base .. "limiter:index", id)
  end
  rcall("DEL", base .. id, base .. id .. ":logs")
end

local function eligible(id)
  if rcall("EXISTS", base .. id .. ":lock") == 1 then return false end
  local t = age(id)
  -- A member without a hash is an orphan: clean it too.
  return t == nil or t <= cutoff
end

if ARGV[4] == "list" then
  local ids = rcall("LRANGE", KEYS[1], 0, -1)
  -- Oldest entries sit at the tail.
  for i = #ids, 1, -1 do
    if limit > 0 and #removed >= limit then break end
    local id = ids[i]
    if id ~= "" and eligible(id) then
      rcall("LSET", KEYS[1], i - 1, "")
      removeJob(id)
      removed[#removed + 1] = id
    end
  end
  if #removed > 0 then
    rcall("LREM", KEYS[1], 0, "")
  end
else
  local ids
  if ARGV[5] == "1" then
    if limit > 0 then
      ids = rcall("ZRANGEBYSCORE", KEYS[1], 0, cutoff, "LIMIT", 0, limit)
    else
      ids = rcall("ZRANGEBYSCORE", KEYS[1], 0, cutoff)
    end
  else
    ids = rcall("ZRANGE", KEYS[1], 0, -1)
  end
  for _, id in ipairs(ids) do
    if limit > 0 and #removed >= limit then break end
    if eligible(id) then
      rcall("ZREM", KEYS[1], id)
      removeJob(id)
      removed[#removed + 1] = id
    end
  end
end
return removed
