"""API keys: read from environment variables named in config, pooled per endpoint, with cool-down.

The config names variables (``api_key_env``), never keys, so a config file can be committed and
shared. A key answered with 429 or 401 rests for Retry-After (or ``key_cooldown_s``) and the next
key in the pool is used; when every key rests, the request fails fast with RESOURCE_EXHAUSTED and
a RetryInfo saying when the first key comes back.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ConfigError
from hybridinference.providers.upstream_errors import NO_KEY, upstream_error

Clock = Callable[[], float]
T = TypeVar("T")

log = logging.getLogger(__name__)

# Upstream statuses that condemn the key rather than the request: rest it and try the next one.
_KEY_STATUSES = frozenset({"401", "429"})


def key_env_names(api_key_env: str | Sequence[str]) -> list[str]:
    """The configured variable names as a list (one name or many; empty means no key)."""
    if isinstance(api_key_env, str):
        return [api_key_env] if api_key_env else []
    return [name for name in api_key_env if name]


def read_keys(
    endpoint: str, names: Sequence[str], environ: Mapping[str, str] | None = None
) -> list[str]:
    """The keys from the named variables; a missing or empty one is a ConfigError naming it."""
    env = os.environ if environ is None else environ
    keys: list[str] = []
    for name in names:
        value = env.get(name, "").strip()
        if not value:
            # Names the variable, never a value.
            raise ConfigError(
                f"endpoint {endpoint!r}: environment variable {name} (api_key_env) is not set"
            )
        keys.append(value)
    return keys


def required_keys(
    endpoint: str,
    kind: str,
    api_key_env: str | Sequence[str],
    default_env: str,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """Keys for a kind that cannot work without one: the configured variables, else the
    upstream SDK's usual variable (e.g. OPENAI_API_KEY)."""
    keys = read_keys(endpoint, key_env_names(api_key_env) or [default_env], environ)
    if not keys:
        raise ConfigError(f"endpoint {endpoint!r}: the {kind} kind needs api_key_env")
    return keys


@dataclass
class _Key:
    value: str
    # Monotonic time until which the key rests; 0 = usable.
    resting_until: float = 0.0


class KeyPool:
    """Round-robin over usable keys of one endpoint."""

    def __init__(
        self,
        endpoint: str,
        keys: Sequence[str],
        cooldown_s: float = 20.0,
        clock: Clock = time.monotonic,
    ) -> None:
        if not keys:
            raise ValueError("a key pool needs at least one key")
        self._endpoint = endpoint
        self._keys = [_Key(value) for value in keys]
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._next = 0

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def secrets(self) -> list[str]:
        """Every key value, for redaction only."""
        return [key.value for key in self._keys]

    def acquire(self) -> str:
        """The next usable key; raises RESOURCE_EXHAUSTED with RetryInfo when all rest."""
        now = self._clock()
        count = len(self._keys)
        for offset in range(count):
            key = self._keys[(self._next + offset) % count]
            if key.resting_until <= now:
                self._next = (self._next + offset + 1) % count
                return key.value
        wait = min(key.resting_until for key in self._keys) - now
        raise self.exhausted(wait)

    def exhausted(self, wait_s: float) -> ServiceError:
        return upstream_error(
            NO_KEY,
            self._endpoint,
            f"all {len(self._keys)} API keys are cooling down after 429/401",
            retry_after_s=max(0.0, wait_s),
        )

    def cool_down(self, value: str, retry_after_s: float | None = None) -> None:
        """Rests ``value`` for Retry-After, or the configured cool-down when there is none."""
        rest = self._cooldown_s if retry_after_s is None else retry_after_s
        for key in self._keys:
            if key.value == value:
                key.resting_until = max(key.resting_until, self._clock() + rest)

    def usable(self) -> int:
        now = self._clock()
        return sum(1 for key in self._keys if key.resting_until <= now)


async def with_key_rotation(
    pool: KeyPool | None, endpoint: str, call: Callable[[str | None], Awaitable[T]]
) -> T:
    """``call(key)`` with the pool's next usable key; on a 401/429 (a ServiceError built by
    ``upstream_errors`` with that ``upstream_status``) the key rests and the next one is tried,
    so one rejected key does not fail the request. Without a pool, one call with no key."""
    attempts = len(pool) if pool is not None else 1
    for attempt in range(attempts):
        key = pool.acquire() if pool is not None else None
        try:
            return await call(key)
        except ServiceError as error:
            status = error.metadata.get("upstream_status")
            if pool is None or key is None or status not in _KEY_STATUSES:
                raise
            pool.cool_down(key, error.retry_after_s)
            if attempt + 1 == attempts:
                raise
            log.warning(
                "upstream key rejected; trying the next pooled key",
                extra={"endpoint": endpoint, "upstream_status": int(status)},
            )
    raise AssertionError("unreachable")  # pragma: no cover
