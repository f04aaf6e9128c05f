-- Argo CD health for trainwright.io/TrainingJob. Argo CD runs this without Lua's
-- string and math libraries: only base functions, tables and `..` are used.
local hs = {}

local function condition(type_)
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == type_ then
      return c
    end
  end
  return nil
end

local function message_of(types, default)
  for _, type_ in ipairs(types) do
    local c = condition(type_)
    if c ~= nil and c.message ~= nil and c.message ~= "" then
      return c.message
    end
  end
  if obj.status ~= nil and obj.status.message ~= nil and obj.status.message ~= "" then
    return obj.status.message
  end
  return default
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to plan the TrainingJob"
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
if phase == "Succeeded" then
  hs.status = "Healthy"
  hs.message = message_of({"Succeeded"}, "Training finished")
elseif phase == "Failed" then
  hs.status = "Degraded"
  hs.message = message_of({"Failed"}, "Training failed")
elseif phase == "Suspended" then
  hs.status = "Suspended"
  hs.message = message_of({"Suspended"}, "Suspended by spec.suspend")
elseif phase == "Queued" then
  hs.status = "Progressing"
  hs.message = message_of({"Queued", "Running", "Planned"}, phase)
elseif phase == "Running" or phase == "Planned" then
  hs.status = "Progressing"
  hs.message = message_of({"Running", "Planned"}, phase)
else
  -- Pending, or a phase newer than this script: still on its way.
  hs.status = "Progressing"
  hs.message = message_of({"Planned"}, "Waiting for the operator to plan the TrainingJob")
end
return hs
