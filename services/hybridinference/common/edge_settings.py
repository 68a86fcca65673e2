"""Settings of the edge: API keys, per-key quotas, per-model caps and TLS between services.

Kept apart from ``settings.py`` so the gateway's security knobs live in one readable place;
``settings.py`` embeds these sections (``gateway.auth``, ``gateway.quota``, ``<service>.tls``).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from hybridinference.common.settings_base import SettingsSection


class KeyLimitSettings(SettingsSection):
    """Per-key limits; None means unlimited. A key's own limits override these defaults."""

    requests_per_minute: int | None = Field(default=None, ge=1)
    tokens_per_minute: int | None = Field(default=None, ge=1)
    # Requests in flight at once for one key (streamed or not).
    max_concurrent: int | None = Field(default=None, ge=1)
    daily_budget_usd: float | None = Field(default=None, ge=0)
    monthly_budget_usd: float | None = Field(default=None, ge=0)


DEFAULT_MAX_CONCURRENT = 64


class AuthSettings(SettingsSection):
    # Off by default so a fresh `make up` works without a key; `make up` says so.
    enabled: bool = False
    # Name of the environment variable holding the server secret that keys are hashed with
    # (HMAC-SHA256). The secret itself never goes into the config file.
    secret_env: str = Field(default="HI_AUTH_SECRET", min_length=1)
    # How often each gateway re-reads the key table; a revoked key stops working within this.
    refresh_interval_s: float = Field(default=0.25, gt=0, le=60)
    # Limits for keys that set none of their own (field by field). One key may hold at most
    # DEFAULT_MAX_CONCURRENT requests in flight unless configured otherwise, so a single leaked
    # or runaway key cannot take every slot of the mesh; set max_concurrent higher per key or
    # here (there is no "unlimited" default with auth on).
    default_limits: KeyLimitSettings = Field(
        default_factory=lambda: KeyLimitSettings(max_concurrent=DEFAULT_MAX_CONCURRENT)
    )


class QuotaSettings(SettingsSection):
    # redis://host:port/db; empty keeps the counters in this gateway's memory (one replica).
    redis_url: str = ""
    # Prefix of every Redis key the quotas write, so meshes sharing a Redis do not collide.
    redis_key_prefix: str = Field(default="hi:quota:", min_length=1)
    # Upper bound on one Redis call; a slower or absent Redis counts as down.
    redis_timeout_s: float = Field(default=0.25, gt=0, le=10)
    # After a Redis failure, decide without Redis for this long instead of waiting again.
    redis_retry_after_s: float = Field(default=1.0, ge=0)
    # Redis down: "open" lets requests through uncounted, "closed" refuses them with 503.
    failure_mode: Literal["open", "closed"] = "open"
    # A settle (or the undoing of an admission whose answer was lost) that fails is retried
    # this many times in all, waiting settle_backoff_s, then twice that, ... (at most 5 s).
    settle_attempts: int = Field(default=8, ge=1, le=100)
    settle_backoff_s: float = Field(default=0.2, gt=0, le=60)


class TlsSettings(SettingsSection):
    """TLS for a gRPC server of the mesh, and for the channels that dial it."""

    # Server: PEM certificate chain and private key. Both set = the server listens with TLS.
    cert_file: str = ""
    key_file: str = ""
    # Server: a CA bundle; when set, clients must present a certificate it signed (mTLS).
    client_ca_file: str = ""
    # Client side: the CA bundle that verifies this server's certificate, and the certificate
    # and key this service presents to peers that require mTLS.
    ca_file: str = ""
    client_cert_file: str = ""
    client_key_file: str = ""
    # Client side: the name to verify in the server's certificate when it differs from the host.
    server_name: str = ""

    @property
    def serves_tls(self) -> bool:
        return bool(self.cert_file and self.key_file)
