"""Counters in Redis, shared by every gateway replica: one round trip per admission.

Admission is one Lua script (atomic: check every limit, then count); settling is one pipeline.
Each call is bounded by ``timeout_s``; after a failure Redis is not asked again for
``retry_after_s``, so a dead or black-holed Redis costs requests nothing but the failure mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hybridinference.gateway.quota.counters import Counters, CountersUnavailable
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal
from hybridinference.gateway.quota.memory import SLOT_RETRY_S
from hybridinference.gateway.quota.windows import DAY_TTL_S, MINUTE_TTL_S, MONTH_TTL_S, windows_at

log = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS: requests(minute) tokens(minute) spend(day) spend(month) in-flight(sorted set)
# ARGV: rpm tpm daily monthly max_concurrent ("" = no limit), now, ticket, expires_at,
#       minute ttl, in-flight ttl
# Returns {} when admitted, else {limit name, used}.
_ADMIT = """
local function used(key)
  return tonumber(redis.call('GET', key) or '0')
end
local checks = {{2, 'tokens_per_minute'}, {3, 'daily_budget_usd'},
                {4, 'monthly_budget_usd'}, {1, 'requests_per_minute'}}
for _, check in ipairs(checks) do
  local i, name = check[1], check[2]
  if ARGV[i] ~= '' then
    local n = used(KEYS[i])
    if n >= tonumber(ARGV[i]) then return {name, tostring(n)} end
  end
end
if ARGV[5] ~= '' then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', ARGV[6])
  local n = redis.call('ZCARD', KEYS[5])
  if n >= tonumber(ARGV[5]) then return {'max_concurrent', tostring(n)} end
  redis.call('ZADD', KEYS[5], ARGV[8], ARGV[7])
  redis.call('EXPIRE', KEYS[5], ARGV[10])
end
if ARGV[1] ~= '' then
  redis.call('INCR', KEYS[1])
  redis.call('EXPIRE', KEYS[1], ARGV[9])
end
return {}
"""


def _arg(value: float | None) -> str:
    return "" if value is None else repr(value)


class RedisCounters(Counters):
    def __init__(self, url: str, prefix: str, timeout_s: float, retry_after_s: float) -> None:
        self._redis = aioredis.Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            # Our own deadline and back-off decide; the client must not retry behind our back.
            retry_on_timeout=False,
            retry=None,
        )
        self._admit = self._redis.register_script(_ADMIT)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    def _keys(self, key_id: str, now: float) -> list[str]:
        w = windows_at(now)
        # The hash tag keeps one key's counters in one slot, so the script also runs on a cluster.
        base = f"{self._prefix}{{{key_id}}}:"
        return [
            f"{base}req:{w.minute}",
            f"{base}tok:{w.minute}",
            f"{base}usd:d:{w.day}",
            f"{base}usd:m:{w.month}",
            f"{base}inflight",
        ]

    async def _call(self, operation: Awaitable[T]) -> T:
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise CountersUnavailable("redis marked down after a recent failure")
        try:
            return await asyncio.wait_for(operation, self._timeout_s)
        except (TimeoutError, RedisError, OSError) as error:
            self._down_until = time.monotonic() + self._retry_after_s
            log.warning("quota redis unavailable: %s", type(error).__name__)
            raise CountersUnavailable(str(error) or type(error).__name__) from None

    async def admit(
        self, key_id: str, ticket: str, limits: QuotaLimits, now: float, hold_s: float
    ) -> Refusal | None:
        keys = self._keys(key_id, now)
        args = [
            _arg(limits.requests_per_minute),
            _arg(limits.tokens_per_minute),
            _arg(limits.daily_budget_usd),
            _arg(limits.monthly_budget_usd),
            _arg(limits.max_concurrent),
            repr(now),
            ticket,
            repr(now + hold_s),
            str(MINUTE_TTL_S),
            str(int(hold_s) + 60),
        ]
        reply: Any = await self._call(self._admit(keys=keys, args=args))
        if not reply:
            return None
        name = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
        used = float(reply[1])
        w = windows_at(now)
        retry = {
            "requests_per_minute": w.minute_left_s,
            "tokens_per_minute": w.minute_left_s,
            "daily_budget_usd": w.day_left_s,
            "monthly_budget_usd": w.month_left_s,
        }.get(name, SLOT_RETRY_S)
        limit = getattr(limits, name)
        return Refusal(name, float(limit), used, retry)

    async def settle(
        self,
        key_id: str,
        ticket: str,
        limits: QuotaLimits,
        tokens: int,
        cost_usd: float,
        now: float,
    ) -> None:
        _, tokens_key, day_key, month_key, in_flight_key = self._keys(key_id, now)
        pipe = self._redis.pipeline(transaction=False)
        if limits.max_concurrent is not None:
            pipe.zrem(in_flight_key, ticket)
        if tokens > 0:
            pipe.incrby(tokens_key, tokens)
            pipe.expire(tokens_key, MINUTE_TTL_S)
        if cost_usd > 0:
            pipe.incrbyfloat(day_key, cost_usd)
            pipe.expire(day_key, DAY_TTL_S)
            pipe.incrbyfloat(month_key, cost_usd)
            pipe.expire(month_key, MONTH_TTL_S)
        if len(pipe):
            await self._call(pipe.execute())

    async def close(self) -> None:
        await self._redis.aclose()
