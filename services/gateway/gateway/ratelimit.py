"""Per-key token buckets in Redis: one for requests, one for tokens (prompt + max_tokens asked).

The bucket is refilled and charged in one Lua script, so concurrent gateway replicas never race:
a bucket holds at most `burst` units and refills at `rate_per_s`. A charge that does not fit is
refused with the seconds until it would, which becomes `429` with `Retry-After`. The script reads
Redis's own clock (TIME), so replicas with skewed clocks agree. Buckets expire once they would be
full again: an idle key costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gateway import redis_keys
from gateway.errors import APIError

# KEYS[1] bucket; ARGV: rate per second, burst, cost. Returns {allowed (0/1), wait in ms}.
_SCRIPT = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ms')
local tokens = tonumber(state[1])
local last = tonumber(state[2])
if tokens == nil then
  tokens = burst
  last = now
end
tokens = math.min(burst, tokens + math.max(0, now - last) * rate / 1000)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) * 1000 / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ms', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) * 1000 / rate) + 1000)
return {allowed, wait}
"""


@dataclass(frozen=True)
class Bucket:
    kind: str  # "requests" or "tokens": part of the key and of the 429 message
    rate_per_s: float
    burst: int


@dataclass(frozen=True)
class Decision:
    allowed: bool
    retry_after_s: int = 0


class RateLimiter:
    def __init__(self, redis: Any):
        self._script = redis.register_script(_SCRIPT)

    def charge(self, key_id: str, bucket: Bucket, cost: float) -> Decision:
        allowed, wait_ms = self._script(
            keys=[redis_keys.rate_bucket(key_id, bucket.kind)], args=[bucket.rate_per_s, bucket.burst, cost]
        )
        return Decision(bool(allowed), max(1, math.ceil(int(wait_ms) / 1000)) if not allowed else 0)


def refused(bucket: Bucket, decision: Decision) -> APIError:
    """The 429 a refused charge answers, with the seconds to wait in `Retry-After`."""
    return APIError(
        429,
        f"rate limit on {bucket.kind} reached for this API key: retry in {decision.retry_after_s} s",
        code=f"rate_limit_{bucket.kind}",
        headers={"Retry-After": str(decision.retry_after_s)},
    )
