--[[
  Moves delayed jobs that are due to waiting, at most a slice per call (Bull 4 updateDelaySet-6.lua,
  which takes 1000). Also "promote all", with "+inf" as the highest score.
  Unlike Bull's, it does not LREM each id from `active`, a scan of the whole active list per job:
  no path of ours or of Bull 4.16.5 leaves a delayed id in `active`.

  KEYS[1] delayed   KEYS[2] wait   KEYS[3] paused   KEYS[4] meta-paused   KEYS[5] priority
  ARGV[1] base key   ARGV[2] highest score to promote (now ms * 4096, or "+inf")   ARGV[3] token
  ARGV[4] slice: most jobs to promote in this call
  Returns {jobs promoted, the score of the next delayed job (due * 4096 + n) as a string or nil}.
]]
local rcall = redis.call
local base = ARGV[1]
local ids = rcall("ZRANGEBYSCORE", KEYS[1], 0, ARGV[2], "LIMIT", 0, tonumber(ARGV[4]))
if #ids > 0 then
  rcall("ZREM", KEYS[1], unpack(ids))
  local target = waitingList(base)
  for _, id in ipairs(ids) do
    local jobKey = base .. id
    if rcall("EXISTS", jobKey) == 1 then
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
  return {#ids, nextJob[2]}
end
return {#ids, false}
