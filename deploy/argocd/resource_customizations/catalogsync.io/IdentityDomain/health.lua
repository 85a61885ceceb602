-- Argo CD health of a catalogsync.io IdentityDomain. The controller follows kstatus: Ready is
-- always there once it has seen the object, Reconciling and Stalled only while True.
-- Written for Argo CD's default sandbox: base and table libraries only (no string).
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
elseif ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
else
  hs.status = "Degraded"
  hs.message = describe(ready)
end
return hs
