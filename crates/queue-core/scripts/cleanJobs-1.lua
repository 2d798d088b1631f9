--[[
  Removes jobs of one state older than a cutoff, skipping locked jobs (Bull 4 cleanJobsInSet-3.lua),
  looking at one slice of the state per call: a walk from the oldest end that the caller
  continues with the returned cursor until it reports the state done. A job's age is its first
  present field of finishedOn, processedOn, timestamp, compared as numbers (Bull compares them
  as strings). A member without a hash (an orphan) is removed too.

  KEYS[1] the state's list or zset
  ARGV[1] base key "P:Q:"   ARGV[2] cutoff ms   ARGV[3] most jobs to remove in this call
  ARGV[4] "list" or "zset"   ARGV[5] "1" when the state is completed or failed (zset scored by finishedOn)
  ARGV[6] slice: most entries to look at in this call
  ARGV[7] cursor: the last entry looked at and kept ("" to start)
  ARGV[8] cursor position: for a list, the entries at its tail looked at and kept; for a zset, the cursor's score
  Returns {removed ids, cursor, cursor position, 1 when the whole state has been looked at else 0, entries looked at}.
]]
local rcall = redis.call
local key = KEYS[1]
local base = ARGV[1]
local cutoff = tonumber(ARGV[2])
local limit = tonumber(ARGV[3])
local finished = ARGV[5] == "1"
local slice = tonumber(ARGV[6])
local cursor = ARGV[7]
local removed = {}
local looked = 0

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
  if not finished then
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
  return t == nil or t <= cutoff
end

if ARGV[4] == "list" then
  local ids, first, skip = listWindow(key, tonumber(ARGV[8]), cursor, slice)
  local done = first == 0
  local marked = 0
  -- Oldest entries sit at the tail.
  for i = #ids, 1, -1 do
    if #removed >= limit then
      done = false
      break
    end
    local id = ids[i]
    looked = looked + 1
    if id ~= "" and eligible(id) then
      rcall("LSET", key, first + i - 1, "")
      marked = marked + 1
      removeJob(id)
      removed[#removed + 1] = id
    else
      skip = skip + 1
      cursor = id
    end
  end
  dropMarked(key, marked)
  if skip == 0 then cursor = "" end
  return {removed, cursor, tostring(skip), done and 1 or 0, looked}
end

local start = 0
local at = ARGV[8]
if cursor ~= "" then
  local rank = rcall("ZRANK", key, cursor)
  if rank then
    start = rank + 1
  else
    -- The cursor left the set: start at its score (ties are looked at again).
    start = rcall("ZCOUNT", key, "-inf", "(" .. at)
  end
end
local entries = rcall("ZRANGE", key, start, start + slice - 1, "WITHSCORES")
local done = #entries < 2 * slice
for i = 1, #entries, 2 do
  local id, score = entries[i], entries[i + 1]
  -- Completed and failed sets are scored by finishedOn: past the cutoff, every job is younger.
  if finished and tonumber(score) > cutoff then
    done = true
    break
  end
  if #removed >= limit then
    done = false
    break
  end
  looked = looked + 1
  if eligible(id) then
    rcall("ZREM", key, id)
    removeJob(id)
    removed[#removed + 1] = id
  else
    cursor, at = id, score
  end
end
return {removed, cursor, at, done and 1 or 0, looked}
