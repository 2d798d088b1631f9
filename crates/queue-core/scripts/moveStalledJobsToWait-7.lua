--[[
  Recovers jobs whose worker stopped renewing their lock (Bull 4 moveStalledJobsToWait-7.lua),
  looking at one slice of `active` per call. Bull's does the whole check in one call:
    1. if stalled-check exists, nothing; else set it for the stalled interval;
    2. every id marked in `stalled` at the last check that is still active and has no lock
       is moved back to waiting (or failed, once it stalled more than the max count);
    3. `stalled` is replaced by every id now in `active`: the marks for the next check.
  Here call "start" does step 1, then the caller walks `active` from its tail with calls
  "recover" (step 2; the marks left are then unlinked) and "mark" (step 3), passing back the
  phase, skip and cursor each call returns, until the phase is "done". Step 2 is skipped when
  nothing is marked. An interrupted check leaves a consistent queue: jobs not yet looked at
  are recovered one check later.
  Unlike Bull's, a job hash with missing or unparseable opts cannot break the check for the
  queue: its removeOnFail is treated as absent, and an id without a hash is dropped.

  KEYS[1] stalled   KEYS[2] wait   KEYS[3] active   KEYS[4] failed   KEYS[5] stalled-check
  KEYS[6] meta-paused   KEYS[7] paused
  ARGV[1] max stalled count   ARGV[2] base key   ARGV[3] now ms   ARGV[4] stalled interval ms
  ARGV[5] phase: "start", "recover" or "mark"   ARGV[6] slice: most active entries to look at
  ARGV[7] skip: entries at the tail of `active` already looked at   ARGV[8] cursor: the one of them nearest the head
  ARGV[9] keep slice: most old failed jobs a removeOnFail policy deletes in this call
  Returns {failed ids, recovered ids, next phase ("recover", "mark" or "done"), skip, cursor}.
]]
local rcall = redis.call
local base = ARGV[2]
local phase = ARGV[5]
local slice = tonumber(ARGV[6])
local skip = tonumber(ARGV[7])
local cursor = ARGV[8]
local now = tonumber(ARGV[3])
local failed, recovered = {}, {}

if phase == "start" then
  if rcall("EXISTS", KEYS[5]) == 1 then
    return {failed, recovered, "done", 0, ""}
  end
  rcall("SET", KEYS[5], ARGV[3], "PX", ARGV[4])
  phase = "recover"
end
if phase == "recover" and rcall("SCARD", KEYS[1]) == 0 then
  -- Nothing marked (or every mark cleared by a renewal): straight to marking.
  phase, skip, cursor = "mark", 0, ""
end

local ids, first
ids, first, skip = listWindow(KEYS[3], skip, cursor, slice)

if phase == "mark" then
  for from = 1, #ids, 5000 do
    rcall("SADD", KEYS[1], unpack(ids, from, math.min(from + 4999, #ids)))
  end
  if first == 0 then
    return {failed, recovered, "done", 0, ""}
  end
  return {failed, recovered, "mark", skip + #ids, ids[1]}
end

local maxStalled = tonumber(ARGV[1])
local marked = 0
for i = #ids, 1, -1 do
  local id = ids[i]
  local jobKey = base .. id
  if rcall("SISMEMBER", KEYS[1], id) == 1 and rcall("EXISTS", jobKey .. ":lock") == 0 then
    rcall("LSET", KEYS[3], first + i - 1, "")
    marked = marked + 1
    if rcall("EXISTS", jobKey) == 0 then
      -- An id without a hash: nothing to recover.
    elseif rcall("HINCRBY", jobKey, "stalledCounter", 1) > maxStalled then
      local ok, opts = pcall(cjson.decode, rcall("HGET", jobKey, "opts") or "{}")
      if not ok or type(opts) ~= "table" then opts = {} end
      rcall("ZADD", KEYS[4], now, id)
      rcall("HMSET", jobKey, "failedReason", "job stalled more than allowable limit", "finishedOn", now)
      releaseDebounce(base, jobKey)
      rcall("PUBLISH", KEYS[4], '{"jobId":' .. cjson.encode(id) .. ', "val": "job stalled more than maxStalledCount"}')
      local removeOnFail = opts["removeOnFail"]
      local keepSlice = tonumber(ARGV[9])
      if type(removeOnFail) == "number" then
        keepFinished(base, KEYS[4], now, nil, removeOnFail, keepSlice)
      elseif removeOnFail == true then
        removeJobKeys(base, id)
        rcall("ZREM", KEYS[4], id)
      elseif type(removeOnFail) == "table" then
        keepFinished(base, KEYS[4], now, tonumber(removeOnFail["age"]), tonumber(removeOnFail["count"]), keepSlice)
      end
      failed[#failed + 1] = id
    else
      rcall("RPUSH", waitingList(base), id)
      rcall("PUBLISH", KEYS[1] .. "@", id)
      recovered[#recovered + 1] = id
    end
  else
    skip = skip + 1
    cursor = id
  end
end
dropMarked(KEYS[3], marked)
if first == 0 then
  -- Every active job was looked at: the marks left are of jobs alive or gone.
  rcall("UNLINK", KEYS[1])
  return {failed, recovered, "mark", 0, ""}
end
if skip == 0 then cursor = "" end
return {failed, recovered, "recover", skip, cursor}
