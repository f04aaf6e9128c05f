-- Argo CD health for trainwright.io/CapacityPlan. Argo CD runs this without Lua's
-- string and math libraries: only base functions, tables and `..` are used.
local hs = {}

local function planned_condition()
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Planned" then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to size the CapacityPlan"
  return hs
end

local generation = obj.metadata.generation
local observed = obj.status.observedGeneration
if generation ~= nil and observed ~= nil and observed < generation then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to act on generation " .. generation ..
    " (status describes generation " .. observed .. ")"
  return hs
end

local phase = obj.status.phase
local planned = planned_condition()
if phase == "Planned" and obj.status.recommendation ~= nil then
  hs.status = "Healthy"
  hs.message = obj.status.message or (planned ~= nil and planned.message) or "Planned"
elseif phase == "Infeasible" or phase == "Failed" then
  hs.status = "Degraded"
  if planned ~= nil and planned.reason ~= nil then
    hs.message = planned.reason .. ": " .. (planned.message or obj.status.message or phase)
  else
    hs.message = phase .. ": " .. (obj.status.message or "the operator could not size it")
  end
else
  -- Pending, or Planned without a recommendation yet.
  hs.status = "Progressing"
  hs.message = obj.status.message or "Waiting for the operator to size the CapacityPlan"
end
return hs
