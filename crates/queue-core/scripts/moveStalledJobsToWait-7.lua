--[[
  Recovers jobs whose worker stopped renewing their lock (Bull 4 moveStalledJobsToWait-7.lua).
  Unlike Bull's, a job hash with missing or unparseable opts cannot break the check for the queue:
  its removeOnFail is treated as absent, and an id without a hash is dropped.

  KEYS[1] stalled   KEYS[2] wait   KEYS[3] active   KEYS[4] failed   KEYS[5] stalled-check
  KEYS[6] meta-paused   KEYS[7] paused
  ARGV[1] max stalled count   ARGV[2] base key   ARGV[3] now ms   ARGV[4] stalled interval ms
  Returns {failed ids, recovered ids}.
]]
local rcall = redis.call
local base = ARGV[2]
if rcall("EXISTS", KEYS[5]) == 1 then
  return {{}, {}}
end
rcall("SET", KEYS[5], ARGV[3], "PX", ARGV[4])

local now = tonumber(ARGV[3])

local failed, recovered = {}, {}
local candidates = rcall("SMEMBERS", KEYS[1])
if #candidates > 0 then
  rcall("DEL", KEYS[1])
  local maxStalled = tonumber(ARGV[1])
  for _, id in ipairs(candidates) do
    local jobKey = base .. id
    if rcall("EXISTS", jobKey .. ":lock") == 0 and rcall("LREM", KEYS[3], 1, id) > 0 then
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
        if type(removeOnFail) == "number" then
          keepFinished(base, KEYS[4], now, nil, removeOnFail)
        elseif removeOnFail == true then
          removeJobKeys(base, id)
          rcall("ZREM", KEYS[4], id)
        elseif type(removeOnFail) == "table" then
          keepFinished(base, KEYS[4], now, tonumber(removeOnFail["age"]), tonumber(removeOnFail["count"]))
        end
        failed[#failed + 1] = id
      else
        rcall("RPUSH", waitingList(base), id)
        rcall("PUBLISH", KEYS[1] .. "@", id)
        recovered[#recovered + 1] = id
      end
    end
  end
end

local active = rcall("LRANGE", KEYS[3], 0, -1)
for from = 1, #active, 5000 do
  rcall("SADD", KEYS[1], unpack(active, from, math.min(from + 4999, #active)))
end
return {failed, recovered}
