-- Argo CD health of a catalogsync.io CatalogApp. The controller follows kstatus: Ready is
-- always there once it has seen the app, Reconciling and Stalled only while True. A
-- Ready app whose last run stopped on a limit or failed needs a person: Degraded, so
-- Argo CD notifications fire. Written for Argo CD's default sandbox: base and table
-- libraries only (no string).
local hs = {}

local function condition(type)
  for _, c in ipairs(obj.status.conditions or {}) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function describe(c)
  if c.message == nil or c.message == "" then
    return c.reason
  end
  return c.reason .. ": " .. c.message
end

-- The later of the last synchronization run and the last provisioning run.
local function last_run()
  local import, provision = obj.status.lastRun, obj.status.lastProvisioningRun
  if import == nil or provision == nil then
    return import or provision
  end
  if (provision.completionTime or "") > (import.completionTime or "") then
    return provision
  end
  return import
end

if obj.status == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the catalogsync controller"
  return hs
end

-- A status older than the spec says nothing about the spec yet.
local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the catalogsync controller to observe generation " .. tostring(generation)
  return hs
end

local stalled = condition("Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(stalled)
  return hs
end

local reconciling = condition("Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = describe(reconciling)
  return hs
end

local ready = condition("Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the Ready condition"
  return hs
end
if ready.status ~= "True" then
  hs.status = "Degraded"
  hs.message = describe(ready)
  return hs
end

if obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = ready.message
  return hs
end

-- The message says which limit to raise, and where.
local limit = condition("LimitExceeded")
if limit ~= nil and limit.status == "True" then
  hs.status = "Degraded"
  hs.message = describe(limit)
  return hs
end

local run = last_run()
if run ~= nil and run.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = "The last run " .. run.name .. " failed: " .. (run.message or run.reason or "no message")
  return hs
end

hs.status = "Healthy"
hs.message = ready.message
return hs
