-- Argo CD health for trainwright.io/ModelExport. Argo CD runs this without Lua's
-- string and math libraries: only base functions, tables and `..` are used.
local hs = {}

local function failed_condition()
  if obj.status == nil or obj.status.conditions == nil then
    return nil
  end
  for _, c in ipairs(obj.status.conditions) do
    if c.type == "Failed" and c.status == "True" then
      return c
    end
  end
  return nil
end

if obj.status == nil or obj.status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to start the export"
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
  hs.message = obj.status.message or "Export finished"
elseif phase == "Failed" then
  hs.status = "Degraded"
  local failed = failed_condition()
  if failed ~= nil and failed.reason ~= nil then
    hs.message = failed.reason .. ": " .. (failed.message or obj.status.message or "export failed")
  else
    hs.message = "Failed: " .. (obj.status.message or "export failed")
  end
else
  -- Pending and Running.
  hs.status = "Progressing"
  hs.message = obj.status.message or ("Export " .. phase)
end
return hs
