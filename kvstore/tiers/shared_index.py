"""The fleet's index of the shared tier: key names and the server-side scripts
that keep its byte budget.

Everything that decides — which checkpoints are visible, how many bytes are
held, what is evicted — lives in a few keys of one hash slot (the hash tag
``{kvs:<namespace>}``) and changes only inside Lua scripts, so engines
writing at once never race: Redis runs one script at a time per slot. The
payload chunks live elsewhere, spread over the cluster's slots, and are only
ever written after their bytes were reserved and deleted before their bytes
are released, so ``used`` (reserved + visible + being deleted) bounds what
the chunks hold at every instant.

A checkpoint's life: ``reserve`` (count its bytes, evicting for them) →
write its chunks → ``commit`` (the manifest makes it visible). Evicting
moves an entry to *doomed*: invisible, bytes still counted; the evicting
engine deletes the chunks and calls ``release``. A reservation or deletion
whose engine died is reclaimed after ``ttl`` seconds by the next ``reserve``.

Eviction is leaf-first LRU that protects short prefixes: among the 128
least recently used checkpoints, the oldest that no stored checkpoint
extends (a leaf: the tail of one session) and that is longer than
``protect_tokens``; failing that the oldest leaf; failing that the oldest.
A prefix that other checkpoints extend is what every session that shares it
reloads after a client rewrites its tail, so it outlives the tails.

>>> index_keys("ab12")[0]
'kvs:{kvs:ab12}:manifests'
"""

from __future__ import annotations

__all__ = ["index_keys", "chunk_key", "RESERVE", "COMMIT", "RELEASE", "ABORT", "PROBE", "TOUCH", "FORGET", "COUNT",
           "SCAN_VICTIMS"]

#: how many of the least recently used checkpoints an eviction looks at
SCAN_VICTIMS = 128

_NAMES = ("manifests", "lru", "children", "tails", "tokens", "pending", "pending_info", "doomed",
          "doomed_info", "stats")


def index_keys(namespace: str) -> list[str]:
    """The index's keys for ``namespace``, all in one hash slot, in the order the scripts take them."""
    return [f"kvs:{{kvs:{namespace}}}:{name}" for name in _NAMES]


def chunk_key(namespace: str, key: str, token: str, i: int) -> str:
    """Chunk ``i`` of one write (``token``) of checkpoint ``key``; its own hash tag spreads chunks over slots."""
    return f"kvs:{namespace}:chunk:{{{key}:{token}:{i}}}"


# KEYS: manifests lru children tails tokens pending pending_info doomed doomed_info stats
_PRELUDE = """
local M, L, C, T, N, P, PI, D, DI, S = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000  -- the index's one clock, for every engine
local function doom(id, info, now, ttl)
  redis.call('ZADD', D, now + ttl, id)
  redis.call('HSET', DI, id, info)
  local size = tonumber(string.match(info, '^(%d+)'))
  redis.call('HINCRBY', S, 'doomed_bytes', size)
end
local function unlink(k, now, ttl)
  local m = cjson.decode(redis.call('HGET', M, k))
  redis.call('HDEL', M, k)
  redis.call('HDEL', N, k)
  redis.call('ZREM', L, k)
  if m.parent then
    if redis.call('HINCRBY', C, m.parent, -1) <= 0 then redis.call('HDEL', C, m.parent) end
  end
  if m.anchor then
    local raw = redis.call('HGET', T, m.anchor)
    if raw then
      local tails = cjson.decode(raw)
      tails[k] = nil
      if next(tails) == nil then redis.call('HDEL', T, m.anchor) else redis.call('HSET', T, m.anchor, cjson.encode(tails)) end
    end
  end
  redis.call('HINCRBY', S, 'entries', -1)
  local id = k .. ':' .. m.token
  local info = m.size .. ',' .. #m.chunks
  doom(id, info, now, ttl)
  return id .. '=' .. info
end
"""

#: ARGV: key size token n_chunks capacity ttl protect_tokens
#: -> {'ok'|'exists'|'too_big'|'full'|'evict'|'wait', doomed 'key:token=size,n' ...}
RESERVE = _PRELUDE + """
local key, size, token, n = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local cap, ttl, protect = tonumber(ARGV[5]), tonumber(ARGV[6]), tonumber(ARGV[7])
redis.call('HSET', S, 'capacity', cap)
if redis.call('HEXISTS', M, key) == 1 then return {'exists'} end
if size > cap then return {'too_big'} end
local out = {}
for _, id in ipairs(redis.call('ZRANGEBYSCORE', P, '-inf', now)) do  -- reservations whose writer died
  local info = redis.call('HGET', PI, id)
  redis.call('ZREM', P, id)
  redis.call('HDEL', PI, id)
  doom(id, info, now, ttl)
  table.insert(out, id .. '=' .. info)
end
for _, id in ipairs(redis.call('ZRANGEBYSCORE', D, '-inf', now)) do  -- deletions whose engine died
  redis.call('ZADD', D, now + ttl, id)
  table.insert(out, id .. '=' .. redis.call('HGET', DI, id))
end
local used = tonumber(redis.call('HGET', S, 'used') or '0')
local doomed = tonumber(redis.call('HGET', S, 'doomed_bytes') or '0')
if #out == 0 and used + size <= cap then
  local id = key .. ':' .. token
  redis.call('ZADD', P, now + ttl, id)
  redis.call('HSET', PI, id, size .. ',' .. n)
  redis.call('HINCRBY', S, 'used', size)
  return {'ok'}
end
local evicted = 0
while used - doomed + size > cap do
  local victim, leaf
  for _, k in ipairs(redis.call('ZRANGE', L, 0, %(scan)d - 1)) do
    if not redis.call('HGET', C, k) then
      if tonumber(redis.call('HGET', N, k)) > protect then victim = k break end
      leaf = leaf or k
    end
  end
  victim = victim or leaf or redis.call('ZRANGE', L, 0, 0)[1]
  if not victim then break end
  local entry = unlink(victim, now, ttl)
  local vsize = tonumber(string.match(entry, '=(%d+),'))
  doomed = doomed + vsize
  evicted = evicted + 1
  table.insert(out, entry)
end
redis.call('HINCRBY', S, 'evictions', evicted)
if #out > 0 then table.insert(out, 1, 'evict') return out end
if used - doomed + size > cap then return {'full'} end
return {'wait'}
""".replace("%(scan)d", str(SCAN_VICTIMS))

#: ARGV: key token manifest(json) tokens ttl -> 'ok' | 'exists' (caller deletes and releases) | 'expired'
COMMIT = _PRELUDE + """
local key, token, manifest, tokens, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4], tonumber(ARGV[5])
local id = key .. ':' .. token
if not redis.call('ZSCORE', P, id) then return 'expired' end
local info = redis.call('HGET', PI, id)
redis.call('ZREM', P, id)
redis.call('HDEL', PI, id)
if redis.call('HEXISTS', M, key) == 1 then doom(id, info, now, ttl) return 'exists' end
local m = cjson.decode(manifest)
redis.call('HSET', M, key, manifest)
redis.call('HSET', N, key, tokens)
redis.call('ZADD', L, now, key)
if m.parent then redis.call('HINCRBY', C, m.parent, 1) end
if m.anchor then
  local raw = redis.call('HGET', T, m.anchor)
  local tails = raw and cjson.decode(raw) or {}
  tails[key] = tonumber(tokens)
  redis.call('HSET', T, m.anchor, cjson.encode(tails))
end
redis.call('HINCRBY', S, 'entries', 1)
redis.call('HINCRBY', S, 'publishes', 1)
return 'ok'
"""

#: ARGV: ids whose chunks were deleted -> bytes released
RELEASE = _PRELUDE + """
local freed = 0
for _, id in ipairs(ARGV) do
  local info = redis.call('HGET', DI, id)
  if info then
    local size = tonumber(string.match(info, '^(%d+)'))
    redis.call('HDEL', DI, id)
    redis.call('ZREM', D, id)
    redis.call('HINCRBY', S, 'used', -size)
    redis.call('HINCRBY', S, 'doomed_bytes', -size)
    freed = freed + size
  end
end
return freed
"""

#: ARGV: key token ttl -> 'key:token=size,n' to delete, or false (nothing reserved)
ABORT = _PRELUDE + """
local id = ARGV[1] .. ':' .. ARGV[2]
local info = redis.call('HGET', PI, id)
if not info then return false end
redis.call('ZREM', P, id)
redis.call('HDEL', PI, id)
doom(id, info, now, tonumber(ARGV[3]))
return id .. '=' .. info
"""

#: ARGV: key token ttl -> like ABORT, for a visible checkpoint whose chunks failed verification
FORGET = _PRELUDE + """
local raw = redis.call('HGET', M, ARGV[1])
if not raw or cjson.decode(raw).token ~= ARGV[2] then return false end
redis.call('HINCRBY', S, 'corrupt', 1)
return unlink(ARGV[1], now, tonumber(ARGV[3]))
"""

#: ARGV: aligned keys, deepest first -> per key {1|0, tails json or ''}
PROBE = """
local out = {}
for i, k in ipairs(ARGV) do
  out[2 * i - 1] = redis.call('HEXISTS', KEYS[1], k)
  out[2 * i] = redis.call('HGET', KEYS[4], k) or ''
end
return out
"""

#: ARGV: key -> 1 when it is still visible (its use recorded, a hit counted), else 0
TOUCH = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
local clock = redis.call('TIME')
redis.call('ZADD', KEYS[2], 'XX', tonumber(clock[1]) + tonumber(clock[2]) / 1000000, ARGV[1])
return 1
"""

#: ARGV: counter name, amount, ... -> added to the fleet's counters
COUNT = """
for i = 1, #ARGV, 2 do redis.call('HINCRBY', KEYS[10], ARGV[i], ARGV[i + 1]) end
return 1
"""
