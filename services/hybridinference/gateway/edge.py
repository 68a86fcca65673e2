"""The edge checks of one request: who calls (API key), may they use the model, and quotas.

With ``gateway.auth.enabled`` off (the default) every call is anonymous and nothing is checked;
quotas are per key, so they apply only with auth on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

from hybridinference.common.settings import MeshSettings
from hybridinference.gateway.auth import (
    Authenticator,
    KeyCache,
    Metadata,
    admin_auth_disabled,
    admin_required,
    pinning_not_allowed,
)
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.key_refresh import KeyRefresher
from hybridinference.gateway.quota.guard import QuotaGuard, open_counters
from hybridinference.gateway.quota.reservation import Reserver
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore, KeyStoreError, open_key_store
from hybridinference.keys.tokens import SecretMissing, server_secret

log = logging.getLogger(__name__)
# In-flight slots outlive the longest request by this much before they expire on their own.
_HOLD_SLACK_S = 30.0


class EdgeStartError(Exception):
    """The gateway cannot enforce its auth configuration; the message says what to fix."""


class Edge:
    def __init__(
        self,
        authenticator: Authenticator,
        quotas: QuotaGuard | None = None,
        refresher: KeyRefresher | None = None,
        store: KeyStore | None = None,
    ) -> None:
        self._authenticator = authenticator
        self._quotas = quotas
        self._refresher = refresher
        self._store = store

    @classmethod
    def disabled(cls) -> Edge:
        return cls(Authenticator(None))

    @classmethod
    async def open(cls, settings: MeshSettings) -> Edge:
        """Loads the keys (failing if it cannot) and opens the quota counters."""
        gateway = settings.gateway
        if not gateway.auth.enabled:
            log.info("auth is off: every request is accepted without an API key")
            return cls.disabled()
        try:
            secret = server_secret(gateway.auth.secret_env)
            store = await open_key_store(settings.logger)
        except (SecretMissing, KeyStoreError) as error:
            raise EdgeStartError(str(error)) from None
        cache = KeyCache(secret)
        refresher = KeyRefresher(store, cache, gateway.auth.refresh_interval_s)
        try:
            await refresher.load()
        except KeyStoreError as error:
            await store.close()
            raise EdgeStartError(str(error)) from None
        quotas = QuotaGuard(
            open_counters(gateway.quota),
            gateway.auth.default_limits,
            fail_open=gateway.quota.failure_mode == "open",
            hold_s=gateway.request_timeout_s + _HOLD_SLACK_S,
            reserver=Reserver.from_settings(settings),
            settle_attempts=gateway.quota.settle_attempts,
            settle_backoff_s=gateway.quota.settle_backoff_s,
        )
        return cls(Authenticator(cache), quotas, refresher, store)

    @property
    def auth_enabled(self) -> bool:
        return self._authenticator.enabled

    async def start(self) -> None:
        if self._refresher is not None:
            self._refresher.start()

    async def close(self) -> None:
        if self._refresher is not None:
            await self._refresher.close()
        if self._quotas is not None:
            await self._quotas.close()

    def authenticate(self, execution: Execution, metadata: Metadata) -> None:
        """Raises UNAUTHENTICATED for a missing or unknown key; records the key's id.

        Pinning (x-hybridinference-endpoint) skips the policy, the breakers and fallback, so
        with auth on only admin keys may pin: anyone else is refused (403 naming the header)
        rather than silently routed as usual. With auth off every caller is the operator.
        """
        key = self._authenticator.authenticate(metadata)
        if key is not None:
            execution.api_key = key
            if execution.pinned_endpoint and not key.admin:
                raise pinning_not_allowed()

    def authenticate_caller(self, metadata: Metadata) -> ApiKey | None:
        return self._authenticator.authenticate(metadata)

    def authenticate_admin(self, metadata: Metadata) -> ApiKey:
        """401 without a valid key, 403 for a non-admin key or when auth is off."""
        if not self._authenticator.enabled:
            raise admin_auth_disabled()
        key = self._authenticator.authenticate(metadata)
        if key is None or not key.admin:
            raise admin_required()
        return key

    @property
    def key_store(self) -> KeyStore | None:
        """The key table (None with auth off), for the admin RPCs."""
        return self._store

    async def reload_keys(self) -> None:
        """Applies a key change at once on this gateway (others follow within their interval)."""
        if self._refresher is not None:
            await self._refresher.refresh_once()

    async def admit(self, execution: Execution) -> None:
        """After validation: PERMISSION_DENIED for a model the key may not use, then quotas."""
        key = execution.api_key
        if key is None:
            return
        self._authenticator.authorize(key, execution.call.model)
        if self._quotas is not None:
            execution.quota_ticket = await self._quotas.admit(key, execution.call)

    def settle(self, execution: Execution) -> None:
        """Releases the request's slot and replaces its reservation by the tokens and cost it
        used (in the background)."""
        if self._quotas is None or execution.quota_ticket is None:
            return
        completion = execution.completion
        tokens = completion.usage.total_tokens if completion is not None else 0
        cost = completion.cost_usd if completion is not None else 0.0
        self._quotas.settle(execution.quota_ticket, tokens, cost)
        execution.quota_ticket = None


def visible_models(key: ApiKey | None, routes: Sequence[Any]) -> list[Any]:
    """The routes a caller may use (all of them without a key or for a key without a list)."""
    if key is None:
        return list(routes)
    return [route for route in routes if key.may_use(route.name)]
