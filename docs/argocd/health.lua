-- Argo CD health check for Tandem resources (KnowledgeBase, AdapterTraining, HybridEndpoint, Evaluation, ServingPool).
-- Reads the kstatus conditions the operator writes: Stalled -> Degraded, Ready -> Healthy, anything
-- else (Reconciling, or status not yet written for the current generation) -> Progressing.
local hs = { status = "Progressing", message = "Waiting for the Tandem operator" }
if obj.status == nil or obj.status.conditions == nil then
  return hs
end
if obj.status.observedGeneration ~= nil and obj.metadata.generation ~= nil
    and obj.status.observedGeneration < obj.metadata.generation then
  hs.message = "The operator has not observed the latest spec yet"
  return hs
end
local ready = nil
for _, condition in ipairs(obj.status.conditions) do
  if condition.type == "Stalled" and condition.status == "True" then
    hs.status = "Degraded"
    hs.message = (condition.reason or "Stalled") .. ": " .. (condition.message or "")
    return hs
  end
  if condition.type == "Ready" then
    ready = condition
  end
end
if ready ~= nil and ready.status == "True" then
  hs.status = "Healthy"
  hs.message = ready.message or "Ready"
elseif ready ~= nil then
  hs.message = (ready.reason or "NotReady") .. ": " .. (ready.message or "")
end
return hs
