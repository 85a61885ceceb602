-- Argo CD health of a catalogsync.io SyncRun, from status.phase. A run that stopped on a
-- limit or failed needs a person: Degraded. A cancelled run (the app suspended,
-- synchronization turned off, or replaced by a newer run) ended without doing what was
-- committed: Degraded too, with a message that starts with "cancelled", as kstatus reads
-- it (Stalled, reason Cancelled) so that Argo CD and Flux agree. Suspended would say
-- "waiting to resume", which a cancelled run never does. A Stalled=True condition is
-- Degraded. Written for Argo CD's default sandbox: base and table libraries only.
local hs = {}

local function stalled()
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == "Stalled" and c.status == "True" then
      return c
    end
  end
  return nil
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the catalogsync controller"
  return hs
end

local phase = obj.status.phase or "Pending"
local message = obj.status.message or ""

if phase == "Failed" or phase == "LimitExceeded" then
  hs.status = "Degraded"
  hs.message = phase .. ": " .. message
  return hs
end

if phase == "Cancelled" then
  hs.status = "Degraded"
  if message == "" then
    message = "cancelled"
  end
  hs.message = message
  return hs
end

local stall = stalled()
if stall ~= nil then
  hs.status = "Degraded"
  hs.message = stall.reason .. ": " .. (stall.message or "")
  return hs
end

if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message
else -- Pending, Running
  hs.status = "Progressing"
  hs.message = phase .. ": " .. message
  if message == "" then
    hs.message = phase
  end
end
return hs
