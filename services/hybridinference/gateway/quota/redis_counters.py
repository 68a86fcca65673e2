"""Counters in Redis, shared by every gateway replica: one round trip per admission.

Admission is one Lua script (atomic: check every limit, then count the request, take a slot
and charge the reservation); settling and voiding are another (atomic and idempotent: they
act only while the ticket still holds its slot). Each call is bounded by ``timeout_s``; after
a failure Redis is not asked again for ``retry_after_s``, so a dead or black-holed Redis costs
requests nothing but the failure mode.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from hybridinference.gateway.quota import limits as names
from hybridinference.gateway.quota.counters import Counters, CountersUnavailable, Ticket
from hybridinference.gateway.quota.limits import QuotaLimits, Refusal
from hybridinference.gateway.quota.memory import SLOT_RETRY_S
from hybridinference.gateway.quota.windows import (
    DAY_TTL_S,
    MINUTE_TTL_S,
    MONTH_TTL_S,
    sliding_retry_after,
    windows_at,
)

log = logging.getLogger(__name__)
T = TypeVar("T")

# KEYS: requests(this minute) requests(previous minute) tokens(this minute)
#       tokens(previous minute) spend(day) spend(month) in-flight(sorted set) void marker
# ARGV: rpm tpm daily monthly max_concurrent ("" = no limit), now, ticket, slot expiry,
#       previous minute's weight, reserved tokens, reserved cost, minute/day/month/slot ttl
#       (ARGV[1]..ARGV[15] in that order)
# Returns {} when admitted, {'void'} for a ticket already voided (its answer was given up on),
# else {limit name, used, this minute, previous minute}.
_ADMIT = """
if redis.call('EXISTS', KEYS[8]) == 1 then return {'void'} end
local function num(key)
  return tonumber(redis.call('GET', key) or '0')
end
local weight = tonumber(ARGV[9])
if ARGV[2] ~= '' then
  local cur, prev = num(KEYS[3]), num(KEYS[4])
  local used = prev * weight + cur
  if used >= tonumber(ARGV[2]) then
    return {'tokens_per_minute', tostring(used), tostring(cur), tostring(prev)}
  end
end
if ARGV[3] ~= '' then
  local used = num(KEYS[5])
  if used >= tonumber(ARGV[3]) then return {'daily_budget_usd', tostring(used), '0', '0'} end
end
if ARGV[4] ~= '' then
  local used = num(KEYS[6])
  if used >= tonumber(ARGV[4]) then return {'monthly_budget_usd', tostring(used), '0', '0'} end
end
if ARGV[1] ~= '' then
  local cur, prev = num(KEYS[1]), num(KEYS[2])
  local used = prev * weight + cur
  if used + 1 > tonumber(ARGV[1]) then
    return {'requests_per_minute', tostring(used), tostring(cur), tostring(prev)}
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', ARGV[6])
if ARGV[5] ~= '' then
  local n = redis.call('ZCARD', KEYS[7])
  if n >= tonumber(ARGV[5]) then return {'max_concurrent', tostring(n), '0', '0'} end
end
-- Every ticket takes a slot (also without max_concurrent): the slot is what makes settling
-- and voiding idempotent.
redis.call('ZADD', KEYS[7], ARGV[8], ARGV[7])
redis.call('EXPIRE', KEYS[7], ARGV[15])
redis.call('INCR', KEYS[1])
redis.call('EXPIRE', KEYS[1], ARGV[12])
redis.call('INCRBY', KEYS[3], ARGV[10])
redis.call('EXPIRE', KEYS[3], ARGV[12])
redis.call('INCRBYFLOAT', KEYS[5], ARGV[11])
redis.call('EXPIRE', KEYS[5], ARGV[13])
redis.call('INCRBYFLOAT', KEYS[6], ARGV[11])
redis.call('EXPIRE', KEYS[6], ARGV[14])
return {}
"""

# KEYS: requests tokens (the admission's minute) spend(day) spend(month) (the admission's),
#       in-flight, void marker
# ARGV: ticket, requests delta, tokens delta, cost delta, void marker ttl ("" = settle)
# Acts only if the ticket still holds its slot, so a retry or a late duplicate changes nothing.
_RELEASE = """
if ARGV[5] ~= '' then redis.call('SET', KEYS[6], '1', 'EX', ARGV[5]) end
if redis.call('ZREM', KEYS[5], ARGV[1]) == 0 then return 0 end
local function add(key, delta, float)
  if tonumber(delta) ~= 0 and redis.call('EXISTS', key) == 1 then
    if float then redis.call('INCRBYFLOAT', key, delta) else redis.call('INCRBY', key, delta) end
  end
end
add(KEYS[1], ARGV[2], false)
add(KEYS[2], ARGV[3], false)
add(KEYS[3], ARGV[4], true)
add(KEYS[4], ARGV[4], true)
return 1
"""

_MINUTE_LIMITS = (names.REQUESTS_PER_MINUTE, names.TOKENS_PER_MINUTE)


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
        self._release = self._redis.register_script(_RELEASE)
        self._prefix = prefix
        self._timeout_s = timeout_s
        self._retry_after_s = retry_after_s
        self._down_until = 0.0

    def _base(self, key_id: str) -> str:
        # The hash tag keeps one key's counters in one slot, so the scripts also run on a cluster.
        return f"{self._prefix}{{{key_id}}}:"

    def in_flight_key(self, key_id: str) -> str:
        return f"{self._base(key_id)}inflight"

    async def _call(self, operation: Awaitable[T]) -> T:
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(operation):
                operation.close()
            raise CountersUnavailable("redis marked down after a recent failure", sent=False)
        try:
            return await asyncio.wait_for(operation, self._timeout_s)
        except (TimeoutError, RedisError, OSError) as error:
            self._down_until = time.monotonic() + self._retry_after_s
            log.warning("quota redis unavailable: %s", type(error).__name__)
            raise CountersUnavailable(str(error) or type(error).__name__) from None

    async def admit(self, ticket: Ticket, hold_s: float) -> Refusal | None:
        now = ticket.admitted_at
        w = windows_at(now)
        base = self._base(ticket.key_id)
        limits = ticket.limits
        keys = [
            f"{base}req:{w.minute}",
            f"{base}req:{w.minute - 1}",
            f"{base}tok:{w.minute}",
            f"{base}tok:{w.minute - 1}",
            f"{base}usd:d:{w.day}",
            f"{base}usd:m:{w.month}",
            f"{base}inflight",
            f"{base}void:{ticket.ticket}",
        ]
        args = [
            _arg(limits.requests_per_minute),
            _arg(limits.tokens_per_minute),
            _arg(limits.daily_budget_usd),
            _arg(limits.monthly_budget_usd),
            _arg(limits.max_concurrent),
            repr(now),
            ticket.ticket,
            repr(now + hold_s),
            repr(w.previous_weight),
            str(ticket.reserved.tokens),
            repr(ticket.reserved.cost_usd),
            str(MINUTE_TTL_S),
            str(DAY_TTL_S),
            str(MONTH_TTL_S),
            str(int(hold_s) + 60),
        ]
        reply: Any = await self._call(self._admit(keys=keys, args=args))
        if not reply:
            return None
        name = _text(reply[0])
        if name == "void":
            # Only a retried admission can meet its own void marker; treat it as the outage.
            raise CountersUnavailable("ticket voided")
        return _refusal(name, limits, reply, now)

    async def settle(self, ticket: Ticket, tokens: int, cost_usd: float) -> None:
        await self._run_release(
            ticket,
            0,
            tokens - ticket.reserved.tokens,
            cost_usd - ticket.reserved.cost_usd,
            "",
        )

    async def void(self, ticket: Ticket, hold_s: float) -> None:
        await self._run_release(
            ticket,
            -1,
            -ticket.reserved.tokens,
            -ticket.reserved.cost_usd,
            str(int(hold_s) + 60),
        )

    async def _run_release(
        self, ticket: Ticket, requests: int, tokens: int, cost_usd: float, void_ttl: str
    ) -> None:
        w = windows_at(ticket.admitted_at)
        base = self._base(ticket.key_id)
        keys = [
            f"{base}req:{w.minute}",
            f"{base}tok:{w.minute}",
            f"{base}usd:d:{w.day}",
            f"{base}usd:m:{w.month}",
            f"{base}inflight",
            f"{base}void:{ticket.ticket}",
        ]
        args = [ticket.ticket, str(requests), str(tokens), repr(cost_usd), void_ttl]
        await self._call(self._release(keys=keys, args=args))

    async def close(self) -> None:
        await self._redis.aclose()


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _refusal(name: str, limits: QuotaLimits, reply: Any, now: float) -> Refusal:
    used = float(_text(reply[1]))
    limit = float(getattr(limits, name))
    if name in _MINUTE_LIMITS:
        current, previous = float(_text(reply[2])), float(_text(reply[3]))
        retry = sliding_retry_after(previous, current, limit - 1, now)
    elif name == names.DAILY_BUDGET:
        retry = windows_at(now).day_left_s
    elif name == names.MONTHLY_BUDGET:
        retry = windows_at(now).month_left_s
    else:
        retry = SLOT_RETRY_S
    return Refusal(name, limit, used, retry)
