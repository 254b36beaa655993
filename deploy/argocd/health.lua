-- Argo CD health check for warehouse-operator.io/WarehouseConnection.
--
--   Suspended    spec.suspend is true: no tests run (status keeps its last values)
--   Progressing  no status yet, status describes an older generation, a test is pending
--                (Reconciling=True) or phase is Pending
--   Degraded     Stalled=True (needs a change by a person) or Ready=False (phase Failed)
--   Healthy      Ready=True for the current generation (phase Connected)
--
-- Uses only the base library, as Argo CD's Lua sandbox provides.
local hs = {}

local function condition(status, kind)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == kind then
      return c
    end
  end
  return nil
end

local function say(cond, fallback)
  if cond ~= nil and cond.message ~= nil and cond.message ~= "" then
    return cond.message
  end
  return fallback
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "Tests are suspended (spec.suspend)"
  return hs
end

local status = obj.status
if status == nil or (status.phase == nil and status.conditions == nil) then
  hs.status = "Progressing"
  hs.message = "Waiting for the first test"
  return hs
end

local generation = nil
if obj.metadata ~= nil then
  generation = obj.metadata.generation
end
if generation ~= nil and status.observedGeneration ~= nil and status.observedGeneration ~= generation then
  hs.status = "Progressing"
  hs.message = "Waiting for a test of generation " .. tostring(generation)
  return hs
end

-- a condition that is True decides the health, the first of these that is
local decisive = {
  {"Stalled", "Degraded", "Cannot succeed without a change to the connection or its Secret"},
  {"Reconciling", "Progressing", "A test is pending"},
}
for _, rule in ipairs(decisive) do
  local found = condition(status, rule[1])
  if found ~= nil and found.status == "True" then
    hs.status = rule[2]
    hs.message = say(found, rule[3])
    return hs
  end
end

local ready = condition(status, "Ready")
if ready ~= nil then
  if ready.status == "True" then
    hs.status = "Healthy"
    hs.message = say(ready, "Connected")
  elseif ready.status == "False" then
    hs.status = "Degraded"
    hs.message = say(ready, "The connection test failed")
  else
    hs.status = "Progressing"
    hs.message = say(ready, "Waiting for a test")
  end
  return hs
end

-- No conditions: fall back to the phase.
if status.phase == "Connected" then
  hs.status = "Healthy"
  hs.message = status.message or "Connected"
elseif status.phase == "Failed" then
  hs.status = "Degraded"
  hs.message = status.message or "The connection test failed"
else
  hs.status = "Progressing"
  hs.message = "Waiting for a test"
end
return hs
