-- Argo CD health check for the catalogsync.io kinds (IdentityDomain, CatalogApp,
-- SyncPolicy, SyncRun), modelled on Flux's: suspended -> Suspended,
-- Ready=True -> Healthy, Reconciling -> Progressing, anything else -> Degraded.
-- A status older than the spec (observedGeneration < generation) is Progressing,
-- so a change is never shown Healthy before the controller has seen it.
-- SyncRuns have no Ready condition: their phase decides.
local hs = {}

local function condition(obj, type)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "suspended (spec.suspend)"
  return hs
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "waiting for the catalogsync controller"
  return hs
end

if obj.kind == "SyncRun" then
  local phase = obj.status.phase or "Pending"
  hs.message = obj.status.message or phase
  if phase == "Succeeded" then
    hs.status = "Healthy"
  elseif phase == "Pending" or phase == "Running" then
    hs.status = "Progressing"
  elseif phase == "Cancelled" then
    hs.status = "Suspended"
  else -- Failed, LimitExceeded
    hs.status = "Degraded"
  end
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "waiting for the controller to observe generation " .. tostring(generation)
  return hs
end

local ready = condition(obj, "Ready")
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or ready.reason
  -- Healthy, but say when the last run stopped on a limit: it needs a person.
  local limit = condition(obj, "LimitExceeded")
  if limit ~= nil and limit.status == "True" then
    hs.message = limit.message
  end
  return hs
end

local reconciling = condition(obj, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = reconciling.message or reconciling.reason
  return hs
end

hs.status = "Degraded"
if ready ~= nil then
  hs.message = (ready.reason or "") .. ": " .. (ready.message or "")
else
  hs.message = "no Ready condition yet"
end
return hs
