--[[
  Adds one or more jobs atomically (queue-core's own script; behaviour of Bull 4 addJob-6.lua).

  KEYS[1] wait   KEYS[2] paused   KEYS[3] meta-paused   KEYS[4] id   KEYS[5] delayed   KEYS[6] priority
  ARGV[1] base key "P:Q:"   ARGV[2] producer token   ARGV[3] number of jobs
  Then 11 ARGV per job:
    custom id ("" = generate), name, data JSON, opts JSON, timestamp ms, delay ms, priority,
    lifo ("1"/"0"), repeat key ("" = none), repeat next millis,
    repeat mode ("new" = register the repeatable, "next" = only while it is still registered)
  Returns: the job ids, one per job, in order (an existing id for a duplicate custom id, "" for a
  "next" iteration of a repeatable that was removed).
]]
local rcall = redis.call
local base = ARGV[1]
local token = ARGV[2]
local count = tonumber(ARGV[3])
local ids = {}

for i = 0, count - 1 do
  local at = 4 + i * 11
  local customId = ARGV[at]
  local repeatKey = ARGV[at + 8]
  if ARGV[at + 10] == "next" and not rcall("ZSCORE", base .. "repeat", repeatKey) then
    ids[#ids + 1] = ""
  else
  local counter = rcall("INCR", KEYS[4])
  local id = customId
  if customId == "" then
    -- A custom id made of digits may already hold the next number: skip it, never overwrite.
    while rcall("EXISTS", base .. counter) == 1 do
      counter = rcall("INCR", KEYS[4])
    end
    id = tostring(counter)
  end
  local jobKey = base .. id
  if customId ~= "" and rcall("EXISTS", jobKey) == 1 then
    rcall("PUBLISH", base .. "duplicated@" .. token, id)
  else
    local timestamp = tonumber(ARGV[at + 4])
    local delay = tonumber(ARGV[at + 5])
    local priority = tonumber(ARGV[at + 6])
    rcall("HMSET", jobKey, "name", ARGV[at + 1], "data", ARGV[at + 2], "opts", ARGV[at + 3],
      "timestamp", ARGV[at + 4], "delay", ARGV[at + 5], "priority", ARGV[at + 6])
    if repeatKey ~= "" then
      rcall("ZADD", base .. "repeat", ARGV[at + 9], repeatKey)
    end
    if delay > 0 then
      local due = timestamp + delay
      rcall("ZADD", KEYS[5], due * 4096 + (counter % 4096), id)
      rcall("PUBLISH", KEYS[5], due)
    else
      pushWaiting(base, waitingList(base), id, priority, ARGV[at + 7] == "1")
      rcall("PUBLISH", KEYS[1] .. "ing@" .. token, id)
    end
  end
  ids[#ids + 1] = id
  end
end
return ids
