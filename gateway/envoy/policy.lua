-- SONIC gateway policy, run by Envoy on every request after jwt_authn.
--
-- It decides one thing: may this request take the fast path (straight to a Triton backend)?
-- Only when it is certain: a token whose signature Envoy verified with the vetted keys AND that the
-- gateway's own validator accepted for inference (every profile rule; verdicts cached per token),
-- a model the token may use, nothing in the request Envoy cannot check cheaply. Anything else goes
-- to the Python frontend, which gives the authoritative answer (401/403/404 with a useful message).
-- x-sonic-model and x-sonic-fast are the gateway's own marks (the only headers its routes match on):
-- whatever a client sent under those names is removed first, so it can never mark its own request.

local AUTH = --@AUTH@
local CONTROL_CLUSTER = --@CONTROL_CLUSTER@
local MAX_TIMEOUT_MS = --@MAX_TIMEOUT_MS@
local RATE_LIMITED = --@RATE_LIMITED@
local GRPC_INFER = "/inference.GRPCInferenceService/ModelInfer"

-- The gateway's own marks, the only headers routes match on: whatever a client sent under these
-- names is removed (true when there was one). Looked up by name: cheaper than walking every header.
local MARKS = { "x-sonic-model", "x-sonic-fast" }
local function strip_internal(headers)
  local found = false
  for _, name in ipairs(MARKS) do
    if headers:get(name) ~= nil then
      headers:remove(name)
      found = true
    end
  end
  return found
end

-- Verdicts of the Python validator (the authority on tokens), cached per worker by the exact
-- Authorization value until the token expires: each token costs one loopback call per worker.
local VERDICTS, VERDICT_COUNT = {}, 0
local MAX_VERDICTS = 10000

local function parse_verdict(body)
  local lines = {}
  for line in string.gmatch(body or "", "[^\n]+") do lines[#lines + 1] = line end
  if lines[1] == "no" then return { ok = false, expires = os.time() + (tonumber(lines[2]) or 5) } end
  if lines[1] ~= "ok" or tonumber(lines[2]) == nil then return nil end
  local groups = {}
  for i = 5, #lines do groups[lines[i]] = true end
  return { ok = true, expires = tonumber(lines[2]), issuer = lines[3] or "", subject = lines[4] or "", groups = groups }
end

-- The caller, when the gateway's validator accepts the token for inference; else nil.
local function principal(handle, authorization)
  -- Envoy's jwt_authn verified the signature with the keys the control plane vetted.
  local jwt = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.jwt_authn")
  if jwt == nil or jwt["jwt_header"] == nil then return nil end
  if authorization == nil or #authorization > 8300 then return nil end
  local now = os.time()
  local verdict = VERDICTS[authorization]
  if verdict == nil or verdict.expires <= now then
    local headers, body = handle:httpCall(CONTROL_CLUSTER, {
      [":method"] = "POST", [":path"] = "/internal/verify", [":authority"] = "sonic-control",
      ["content-type"] = "text/plain",
    }, authorization, 2000)
    if headers == nil or headers[":status"] ~= "200" then return nil end
    verdict = parse_verdict(body)
    if verdict == nil then return nil end
    if VERDICT_COUNT >= MAX_VERDICTS then VERDICTS, VERDICT_COUNT = {}, 0 end
    VERDICTS[authorization] = verdict
    VERDICT_COUNT = VERDICT_COUNT + 1
  end
  if not verdict.ok or verdict.expires <= now then return nil end
  return verdict
end

-- Protobuf varint at 1-based position pos of string s (nil when truncated or too long).
local function varint(s, pos)
  local result, scale = 0, 1
  for i = pos, math.min(#s, pos + 9) do
    local b = string.byte(s, i)
    result = result + (b % 128) * scale
    if b < 128 then return result, i + 1 end
    scale = scale * 128
  end
  return nil
end

-- Calls visit(field, wire, start, length) for each field of the message body[start, start+length)
-- (0-based offsets into the buffered body); returns false when the bytes are not protobuf.
-- Only keys and lengths are read: tensor bytes are skipped, never copied.
local function walk(body, start, length, visit)
  local pos, limit = start, start + length
  while pos < limit do
    local head = body:getBytes(pos, math.min(20, limit - pos))
    local key, next = varint(head, 1)
    if key == nil then return false end
    local field, wire = math.floor(key / 8), key % 8
    local size
    if wire == 0 then
      local _, after = varint(head, next)
      if after == nil then return false end
      size = 0; next = after
    elseif wire == 1 then size = 8
    elseif wire == 5 then size = 4
    elseif wire == 2 then
      size, next = varint(head, next)
      if size == nil then return false end
    else return false end
    local value_start = pos + next - 1
    if field == 0 or value_start + size > limit then return false end
    if visit(field, wire, value_start, size) == false then return false end
    pos = value_start + size
  end
  return true
end

-- A ModelInfer the fast path may forward: uncompressed, well-formed, and no per-tensor parameters
-- (a shared-memory region is named there; the Python path refuses those with a clear message).
-- A small message is copied out once and walked in Lua (one call into Envoy, not one per field);
-- a large one is walked in Envoy's buffer, reading only keys and lengths.
local SMALL = 65536
local StringBuffer = {}
StringBuffer.__index = StringBuffer
function StringBuffer:getBytes(pos, n) return string.sub(self.s, pos + 1, pos + n) end

local function grpc_body_ok(handle)
  local body = handle:body()
  if body == nil or body:length() < 5 then return false end
  if body:length() <= SMALL then body = setmetatable({ s = body:getBytes(0, body:length()) }, StringBuffer) end
  local prefix = body:getBytes(0, 5)
  if string.byte(prefix, 1) ~= 0 then return false end
  local b2, b3, b4, b5 = string.byte(prefix, 2, 5)
  local length = ((b2 * 256 + b3) * 256 + b4) * 256 + b5
  if 5 + length ~= handle:body():length() then return false end
  return walk(body, 5, length, function(field, wire, start, size)
    if (field == 5 or field == 6) and wire == 2 then
      local params = field == 5 and 4 or 2
      return walk(body, start, size, function(f, w) return f ~= params end)
    end
    return true
  end)
end

-- Model and version of an inference request, or nil for anything else.
local function target(handle, headers)
  local path = headers:get(":path")
  if path == GRPC_INFER then
    local fields = handle:streamInfo():dynamicMetadata():get("envoy.filters.http.grpc_field_extraction")
    if fields == nil then return nil end
    local name, version = fields["model_name"], fields["model_version"]
    if type(name) == "table" then name = name[1] end
    if type(version) == "table" then version = version[1] end
    if version == nil then version = "" end
    local shape = fields["inputs.shape"]
    if type(shape) == "table" and tonumber(shape[1]) ~= nil then
      handle:streamInfo():dynamicMetadata():set("sonic", "batch", tonumber(shape[1]))
    end
    return name, version
  end
  local m, v = string.match(path, "^/v2/models/([^/?%%]+)/versions/([^/?%%]+)/infer$")
  if m ~= nil then return m, v end
  m = string.match(path, "^/v2/models/([^/?%%]+)/infer$")
  if m ~= nil then return m, "" end
  return nil
end

-- Checks of the request itself that only the REST path needs: shared-memory parameters and
-- escapes are left to the Python frontend, which parses JSON properly.
local function rest_body_ok(handle, header_length)
  local body = handle:body()
  if body == nil then return false end
  local size = body:length()
  local json_size = size
  if header_length ~= nil then
    json_size = tonumber(header_length)
    if json_size == nil or json_size < 0 or json_size > size then return false end
  end
  if json_size > 1048576 then return false end
  local json = body:getBytes(0, json_size)
  if string.find(json, "\\", 1, true) or string.find(json, "shared_memory", 1, true) then return false end
  local batch = string.match(json, '"shape"%s*:%s*%[%s*(%d+)')
  if batch ~= nil then handle:streamInfo():dynamicMetadata():set("sonic", "batch", tonumber(batch)) end
  return true
end

local function allowed(groups, route_groups)
  if route_groups == nil then return true end
  for _, g in ipairs(route_groups) do
    if groups[g] then return true end
  end
  return false
end

-- The model's rules (on its fast route) allow this caller and version.
local function decide(handle, who, version)
  local policy = handle:metadata():get("policy")
  if policy == nil or not allowed(who.groups, policy["groups"]) then return false end
  if version == "" then return true end
  for _, v in ipairs(policy["versions"] or {}) do
    if v == version then return true end
  end
  return false
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- A route chosen (by an earlier filter) while a client's x-sonic-* headers were present is void.
  if strip_internal(headers) then handle:clearRouteCache() end
  local model, version = target(handle, headers)
  if model == nil or string.find(model, "[%c]") then return end
  -- A deadline the client sent (sonic_client's sonic-timeout-ms) bounds the fast path too.
  local timeout = tonumber(headers:get("sonic-timeout-ms") or "")
  if timeout ~= nil and timeout >= 1 and timeout < MAX_TIMEOUT_MS then
    headers:replace("x-envoy-upstream-rq-timeout-ms", tostring(math.floor(timeout)))
  end
  -- The body first: handle:body() must run before anything else yields (httpCall), and header
  -- objects taken before a yield are stale after it.
  local body_ok
  if headers:get(":path") == GRPC_INFER then
    body_ok = grpc_body_ok(handle)
  else
    -- A compressed body cannot be checked here: the Python path decompresses and checks it.
    local encoding = headers:get("content-encoding")
    body_ok = (encoding == nil or encoding == "identity")
      and rest_body_ok(handle, headers:get("inference-header-content-length"))
  end
  headers = handle:headers()
  if not body_ok then return end
  local who
  if AUTH then
    who = principal(handle, headers:get("authorization"))
    headers = handle:headers()
    if who == nil then return end
  else
    who = { issuer = "", subject = "anonymous", groups = {} }
  end
  -- Provisionally on the model's fast route, whose metadata holds its rules: any refusal (or error)
  -- takes both marks off again, so the request falls back to the Python path.
  headers:add("x-sonic-model", model)
  headers:add("x-sonic-fast", "1")
  handle:clearRouteCache()
  local ran, ok = pcall(decide, handle, who, version)
  if not (ran and ok) then
    headers:remove("x-sonic-model")
    headers:remove("x-sonic-fast")
    handle:clearRouteCache()
    return
  end
  -- Taking the fast path: the client's token is not for the facility (which gets its own).
  headers:remove("authorization")
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set("sonic", "model", model)
  meta:set("sonic", "version", version)
  meta:set("sonic", "subject", who.subject)
  meta:set("sonic", "issuer", who.issuer)
  if RATE_LIMITED then
    -- What the rate-limit service charges (strings: Envoy's descriptor entries are text).
    local groups = {}
    for g, _ in pairs(who.groups) do groups[#groups + 1] = g end
    table.sort(groups)
    local batch = meta:get("sonic")["batch"]
    meta:set("sonic", "rl_groups", #groups > 0 and table.concat(groups, " ") or "-")
    meta:set("sonic", "rl_inferences", tostring(math.floor(tonumber(batch) or 0)))
    meta:set("sonic", "rl_bytes", tostring(handle:body():length()))
  end
end
