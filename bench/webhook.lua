-- wrk script of bench/ingest.py: signed single-message WhatsApp webhooks, every message a
-- new wamid, with a share of duplicates (an earlier body posted again, as Meta redelivers).
--
-- wrk -t1 -c50 -d10s -s bench/webhook.lua URL -- SECRET PREFIX SUFFIX DUP_SHARE TAG
-- The body is PREFIX .. wamid .. SUFFIX (bench/_common.py body_template); the signature is
-- HMAC-SHA256 over it with OpenSSL's HMAC through LuaJIT's FFI (wrk links libcrypto).
-- done() writes a JSON summary to the file named by $BENCH_WRK_OUT.

local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const char *key, int key_len,
                    const char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]

local function libcrypto()
  local found, lib = pcall(function() local _ = ffi.C.HMAC; return ffi.C end)
  if found then return lib end
  for _, name in ipairs({"crypto", "libcrypto.so.3", "libcrypto.so.1.1"}) do
    found, lib = pcall(ffi.load, name)
    if found then return lib end
  end
  error("libcrypto not found for HMAC-SHA256")
end

local crypto = libcrypto()
local digest = ffi.new("unsigned char[32]")
local digest_length = ffi.new("unsigned int[1]")
local hex = {}
for i = 0, 255 do hex[i] = string.format("%02x", i) end

local RING = 1000       -- duplicates re-post one of the last RING new bodies
local threads = {}

-- Per thread (globals, so done() can read them with thread:get).
counter = 0
duplicates = 0
local secret, prefix, suffix, dup_share, tag
local bodies, signatures = {}, {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_number", #threads)
end

function init(args)
  secret, prefix, suffix = args[1], args[2], args[3]
  dup_share, tag = tonumber(args[4]), args[5]
  math.randomseed(os.time() + thread_number * 7919)
end

local function sign(body)
  crypto.HMAC(crypto.EVP_sha256(), secret, #secret, body, #body, digest, digest_length)
  local out = {}
  for i = 0, 31 do out[i + 1] = hex[digest[i]] end
  return "sha256=" .. table.concat(out)
end

function request()
  local body, signature
  if counter > 0 and math.random() < dup_share then
    local slot = math.random(math.min(counter, RING))
    body, signature = bodies[slot], signatures[slot]
    duplicates = duplicates + 1
  else
    counter = counter + 1
    body = prefix .. string.format("wamid.BENCH%s%02d%010d", tag, thread_number, counter) .. suffix
    signature = sign(body)
    local slot = (counter - 1) % RING + 1
    bodies[slot], signatures[slot] = body, signature
  end
  return wrk.format("POST", "/webhook", {
    ["Content-Type"] = "application/json",
    ["X-Hub-Signature-256"] = signature,
  }, body)
end

function done(summary, latency, requests)
  local unique, dups = 0, 0
  for _, thread in ipairs(threads) do
    unique = unique + thread:get("counter")
    dups = dups + thread:get("duplicates")
  end
  local e = summary.errors
  local out = assert(io.open(os.getenv("BENCH_WRK_OUT"), "w"))
  out:write(string.format(
    '{"requests": %d, "duration_s": %.6f, "unique": %d, "duplicates": %d, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
    '"latency_ms": {"p50": %.3f, "p95": %.3f, "p99": %.3f, "max": %.3f, "mean": %.3f}}',
    summary.requests, summary.duration / 1e6, unique, dups,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50) / 1e3, latency:percentile(95) / 1e3, latency:percentile(99) / 1e3,
    latency.max / 1e3, latency.mean / 1e3))
  out:close()
end
