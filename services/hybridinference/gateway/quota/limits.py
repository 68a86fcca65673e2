"""A key's effective limits, what a refusal says, and how it reaches clients."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import QuotaViolation, ServiceError

REQUESTS_PER_MINUTE = "requests_per_minute"
TOKENS_PER_MINUTE = "tokens_per_minute"
MAX_CONCURRENT = "max_concurrent"
DAILY_BUDGET = "daily_budget_usd"
MONTHLY_BUDGET = "monthly_budget_usd"

_DESCRIPTIONS = {
    REQUESTS_PER_MINUTE: "requests per minute",
    TOKENS_PER_MINUTE: "tokens per minute",
    MAX_CONCURRENT: "concurrent requests",
    DAILY_BUDGET: "daily budget (USD)",
    MONTHLY_BUDGET: "monthly budget (USD)",
}
_BUDGETS = (DAILY_BUDGET, MONTHLY_BUDGET)


@dataclass(frozen=True)
class QuotaLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    max_concurrent: int | None = None
    daily_budget_usd: float | None = None
    monthly_budget_usd: float | None = None

    @classmethod
    def resolve(cls, own: KeyLimitSettings, defaults: KeyLimitSettings) -> QuotaLimits:
        """The key's own limit for each field, else the configured default."""

        def pick(name: str) -> float | None:
            value = getattr(own, name)
            return value if value is not None else getattr(defaults, name)  # type: ignore[no-any-return]

        return cls(
            requests_per_minute=_int(pick(REQUESTS_PER_MINUTE)),
            tokens_per_minute=_int(pick(TOKENS_PER_MINUTE)),
            max_concurrent=_int(pick(MAX_CONCURRENT)),
            daily_budget_usd=pick(DAILY_BUDGET),
            monthly_budget_usd=pick(MONTHLY_BUDGET),
        )

    @property
    def unlimited(self) -> bool:
        return all(
            value is None
            for value in (
                self.requests_per_minute,
                self.tokens_per_minute,
                self.max_concurrent,
                self.daily_budget_usd,
                self.monthly_budget_usd,
            )
        )


def _int(value: float | None) -> int | None:
    return None if value is None else int(value)


@dataclass(frozen=True)
class Refusal:
    """Which limit a request ran into, how much was used, and when to try again."""

    limit_name: str
    limit: float
    used: float
    retry_after_s: float


def quota_exceeded(key_id: str, refusal: Refusal) -> ServiceError:
    """RESOURCE_EXHAUSTED with QuotaFailure and RetryInfo; OpenAI's 429 shape over HTTP."""
    what = _DESCRIPTIONS.get(refusal.limit_name, refusal.limit_name)
    budget = refusal.limit_name in _BUDGETS
    limit = f"{refusal.limit:g}" if budget else f"{int(refusal.limit)}"
    used = f"{refusal.used:.6g}" if budget else f"{int(refusal.used)}"
    retry = max(1, round(refusal.retry_after_s))
    message = (
        f"Quota exceeded for {what} on API key {key_id}: limit {limit}, used {used}. "
        f"Try again in {retry} s."
    )
    return ServiceError(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        message,
        # OpenAI's codes: rate limits are retried soon, an exhausted budget is not.
        "insufficient_quota" if budget else "rate_limit_exceeded",
        retry_after_s=float(retry),
        metadata={"limit": refusal.limit_name, "api_key_id": key_id},
        quota_violations=[QuotaViolation(f"api_key:{key_id}", f"{what} limit {limit} reached")],
        openai_type="insufficient_quota" if budget else "",
    )


def quota_store_unavailable() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAVAILABLE,
        "The quota store is unavailable; try again shortly.",
        "quota_store_unavailable",
        retry_after_s=1.0,
    )
