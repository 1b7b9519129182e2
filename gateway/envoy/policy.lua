-- SONIC gateway policy, run by Envoy on every public request.
--
-- It decides one thing: may this request take the fast path (straight to a Triton backend)?
-- Only when it is certain: a token the gateway's own validator accepted for inference (signature
-- with the keys gateway/auth vetted, every profile rule; verdicts cached per token), a model the
-- token may use, nothing in the request Envoy cannot check cheaply. Anything else goes
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
-- Only a value shaped like "Bearer <JWS compact>" is worth asking about; anything else goes to the
-- Python path, which says what is wrong with it.
local BEARER_JWS = "^[Bb][Ee][Aa][Rr][Ee][Rr] +[%w_%-]+%.[%w_%-]+%.[%w_%-]+$"

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
  if authorization == nil then return nil end
  local now = os.time()
  local verdict = VERDICTS[authorization]
  if verdict == nil or verdict.expires <= now then
    if #authorization > 8300 or not string.find(authorization, BEARER_JWS) then return nil end
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

-- Calls visit(field, wire, start, length, value) for each field of the message at [start,
-- start+length) (0-based offsets; value: a varint field's value); false when the bytes are not
-- protobuf or visit said no. read(pos, n) gives a string holding bytes [pos, pos+n) and the 1-based
-- index where they start in it. Only keys and lengths are read: tensor bytes are skipped.
local function walk(read, start, length, visit)
  local pos, limit = start, start + length
  while pos < limit do
    local s, i = read(pos, math.min(20, limit - pos))
    local key, next = varint(s, i)
    if key == nil then return false end
    local field, wire = math.floor(key / 8), key % 8
    local size, value = 0, nil
    if wire == 0 then
      value, next = varint(s, next)
      if value == nil then return false end
    elseif wire == 1 then size = 8
    elseif wire == 5 then size = 4
    elseif wire == 2 then
      size, next = varint(s, next)
      if size == nil then return false end
    else return false end
    local value_start = pos + (next - i)
    if field == 0 or value_start + size > limit then return false end
    if visit(field, wire, value_start, size, value) == false then return false end
    pos = value_start + size
  end
  return true
end

-- A tensor's parameters entry (a map entry: key, value) that may name a shared-memory region: Triton
-- reads one only from the keys "shared_memory_*", and protobuf stores a key as its raw bytes.
local MAX_PARAMETER = 4096
local function names_region(text, start, size)
  return size > MAX_PARAMETER or string.find(text(start, size), "shared_memory", 1, true) ~= nil
end

-- What the fast path needs from a ModelInferRequest, read in Lua (no extraction filter, no copy of
-- a large message): model_name (1), model_version (2) and the first input's (5) first shape entry
-- (3), the batch. nil when the message is not one whole uncompressed protobuf message or a tensor
-- (input 5 / requested output 6) names a shared-memory region: the Python path answers those, and
-- refuses regions with a clear message. A field sent twice counts as Triton's parser counts it: the
-- last one wins. A small message is copied out once and read in place; a large one stays in
-- Envoy's buffer and only field heads are copied. A malformed frame returns nil and what is wrong.
local SMALL = 16384
local function grpc_request(handle)
  local body = handle:body()
  if body == nil then return nil end
  local size = body:length()
  if size < 5 then return nil end
  local prefix = body:getBytes(0, 5)
  if string.byte(prefix, 1) ~= 0 then return nil end
  local b2, b3, b4, b5 = string.byte(prefix, 2, 5)
  local length = ((b2 * 256 + b3) * 256 + b4) * 256 + b5
  if 5 + length ~= size then
    -- Not one whole message (truncated, or more than one): the call cannot be served on any path.
    return nil, nil, nil, "a ModelInfer call carries exactly one gRPC message: its length prefix says " ..
      string.format("%d bytes, %d arrived", length, size - 5)
  end
  local read, text
  if size <= SMALL then
    local whole = body:getBytes(0, size)
    read = function(pos) return whole, pos + 1 end
    text = function(pos, n) return string.sub(whole, pos + 1, pos + n) end
  else
    read = function(pos, n) return body:getBytes(pos, n), 1 end
    text = function(pos, n) return body:getBytes(pos, n) end
  end
  local model, version, batch = nil, "", nil
  local ok = walk(read, 5, length, function(field, wire, start, span)
    if wire ~= 2 then return true end
    if field == 1 then model = text(start, span)
    elseif field == 2 then version = text(start, span)
    elseif field == 5 or field == 6 then
      local params = field == 5 and 4 or 2
      local first = field == 5 and batch == nil
      return walk(read, start, span, function(f, w, at, n, value)
        if f == params then return w == 2 and not names_region(text, at, n) end
        if first and f == 3 then
          first = false
          if w == 0 then batch = value
          elseif w == 2 and n > 0 then
            local s, i = read(at, math.min(10, n))
            batch = varint(s, i) or 0
          end
        end
        return true
      end)
    end
    return true
  end)
  if not ok or model == nil then return nil end
  return model, version, batch
end

-- Model and version of a KServe v2 REST inference path, or nil for anything else.
local function rest_target(path)
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
  return true, tonumber(string.match(json, '"shape"%s*:%s*%[%s*(%d+)'))
end

-- The model's rules (on its fast route) allow this caller and version. They are one string (a
-- table would cost Envoy a conversion per request): ",v1,v2," - the versions served - and, when only
-- some groups may use the model, "|" and their percent-encoded names, space-separated.
local function decide(handle, who, version)
  local policy = handle:metadata():get("policy")
  if type(policy) ~= "string" then return false end
  local versions = policy
  local bar = string.find(policy, "|", 1, true)
  if bar ~= nil then
    versions = string.sub(policy, 1, bar - 1)
    local member = false
    for g in string.gmatch(string.sub(policy, bar + 1), "%S+") do
      if who.groups[g] then member = true break end
    end
    if not member then return false end
  end
  if version == "" then return true end
  return string.find(versions, "," .. version .. ",", 1, true) ~= nil
end

function envoy_on_request(handle)
  local headers = handle:headers()
  -- A route chosen (by an earlier filter) while a client's x-sonic-* headers were present is void.
  if strip_internal(headers) then handle:clearRouteCache() end
  local path = headers:get(":path")
  local grpc = path == GRPC_INFER
  local model, version
  if grpc then
    -- A compressed message cannot be read here: the Python path decodes it.
    local encoding = headers:get("grpc-encoding")
    if encoding ~= nil and encoding ~= "identity" then return end
  else
    model, version = rest_target(path)
    if model == nil then return end
  end
  -- A deadline the client sent (sonic_client's sonic-timeout-ms) bounds the fast path too.
  local timeout = tonumber(headers:get("sonic-timeout-ms") or "")
  if timeout ~= nil and timeout >= 1 and timeout < MAX_TIMEOUT_MS then
    headers:replace("x-envoy-upstream-rq-timeout-ms", tostring(math.floor(timeout)))
  end
  -- The body first: handle:body() must run before anything else yields (httpCall), and header
  -- objects taken before a yield are stale after it.
  local batch
  if grpc then
    local problem
    model, version, batch, problem = grpc_request(handle)
    if problem ~= nil then
      -- Answered here, as Triton answers it: no gRPC server behind this one would (Python's waits).
      handle:respond({
        [":status"] = "200", ["content-type"] = "application/grpc",
        ["grpc-status"] = "3", ["grpc-message"] = problem,
      }, "")
      return
    end
    if model == nil then return end
  else
    -- A compressed body cannot be checked here: the Python path decompresses and checks it.
    local encoding = headers:get("content-encoding")
    if encoding ~= nil and encoding ~= "identity" then return end
    local ok
    ok, batch = rest_body_ok(handle, headers:get("inference-header-content-length"))
    if not ok then return end
  end
  -- Control characters are left to the Python path (and keep the usage entry's fields apart), as
  -- are versions holding the separators of a model's rules (render.fast_policy).
  if string.find(model, "[%c]") or string.find(version, "[%c,|]") then return end
  headers = handle:headers()
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
  -- What the usage log records, as ONE tab-separated entry (model, version, subject, issuer,
  -- batch; none holds a tab: model and version were checked, names are percent-encoded): every
  -- metadata entry and log field costs Envoy CPU on each request, ~7% of it for the four saved.
  local meta = handle:streamInfo():dynamicMetadata()
  meta:set("sonic", "u", model .. "\t" .. version .. "\t" .. who.subject .. "\t" .. who.issuer .. "\t" ..
    (batch ~= nil and string.format("%.0f", batch) or ""))
  if RATE_LIMITED then
    meta:set("sonic", "subject", who.subject)
    meta:set("sonic", "issuer", who.issuer)
    -- What the rate-limit service charges (strings: Envoy's descriptor entries are text).
    local groups = {}
    for g, _ in pairs(who.groups) do groups[#groups + 1] = g end
    table.sort(groups)
    meta:set("sonic", "rl_groups", #groups > 0 and table.concat(groups, " ") or "-")
    meta:set("sonic", "rl_inferences", tostring(math.floor(tonumber(batch) or 0)))
    meta:set("sonic", "rl_bytes", tostring(handle:body():length()))
  end
end
