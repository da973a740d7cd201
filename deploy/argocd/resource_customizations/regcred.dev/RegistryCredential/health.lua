-- Argo CD health of a regcred.dev RegistryCredential, read from the status the operator writes:
-- status.observedGeneration and kstatus-style conditions (Ready always; Reconciling=True while
-- the operator is still working, Stalled=True while a person must act), status.failures.
-- Runs without Lua's string library, as Argo CD runs scripts from argocd-cm.
local hs = {}

local function condition(status, type)
  if status == nil or status.conditions == nil then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if c.type == type then
      return c
    end
  end
  return nil
end

local function described(c)
  if c.message ~= nil and c.message ~= "" then
    return c.reason .. ": " .. c.message
  end
  return c.reason
end

if obj.spec ~= nil and obj.spec.suspend == true then
  hs.status = "Suspended"
  hs.message = "spec.suspend is true: the operator makes no changes"
  return hs
end

if obj.metadata.deletionTimestamp ~= nil then
  hs.status = "Progressing"
  hs.message = "Being deleted: the operator is removing its copies and ServiceAccount entries"
  return hs
end

local status = obj.status
local ready = condition(status, "Ready")
if ready == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to report status"
  return hs
end

local generation = obj.metadata.generation
if generation ~= nil then
  local observed = status.observedGeneration
  if ready.observedGeneration ~= nil and (observed == nil or ready.observedGeneration < observed) then
    observed = ready.observedGeneration
  end
  if observed == nil or observed < generation then
    hs.status = "Progressing"
    hs.message = "Waiting for the operator to act on generation " .. generation
    return hs
  end
end

if ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message
  return hs
end

local stalled = condition(status, "Stalled")
if stalled ~= nil and stalled.status == "True" then
  hs.status = "Degraded"
  hs.message = described(stalled)
  return hs
end

if status.failures ~= nil and #status.failures > 0 then
  hs.status = "Degraded"
  hs.message = described(ready)
  return hs
end

local reconciling = condition(status, "Reconciling")
if reconciling ~= nil and reconciling.status == "True" then
  hs.status = "Progressing"
  hs.message = ready.message
  return hs
end

hs.status = "Degraded"
hs.message = described(ready)
return hs
