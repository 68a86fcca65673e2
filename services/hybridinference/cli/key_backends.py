"""Where ``hybridinference keys`` manages keys: the admin API of a running gateway, or the store.

With an admin key (``--admin-key`` or ``$HI_ADMIN_KEY``) and a gateway answering, every action goes
through ``AdminService`` (through Envoy by default): the gateway applies a revocation at once and
checks the caller like any other admin call. Without an admin key — the first admin key has to come
from somewhere — or with no gateway running, the CLI opens the key store itself, from the same
config the gateways use (``create`` then needs the server secret to hash the new key).
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

import grpc

from hybridinference.cli import rpc
from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.settings import MeshSettings
from hybridinference.gateway.v1 import admin_pb2, admin_pb2_grpc
from hybridinference.keys.issue import create_key
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore, KeyStoreError, open_key_store
from hybridinference.keys.tokens import SecretMissing, server_secret

ADMIN_KEY_ENV = "HI_ADMIN_KEY"
TIMEOUT_S = 10.0
T = TypeVar("T")


@dataclass(frozen=True)
class KeyView:
    """What the CLI shows of a key, whichever way it was read."""

    id: str
    name: str
    prefix: str
    admin: bool
    models: tuple[str, ...]
    limits: KeyLimitSettings
    created_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of_stored(cls, key: ApiKey) -> KeyView:
        return cls(
            key.id, key.name, key.prefix, key.admin, key.models, key.limits,
            key.created_at, key.revoked_at,
        )  # fmt: skip

    @classmethod
    def of_info(cls, info: admin_pb2.ApiKeyInfo) -> KeyView:
        def when(unix: int) -> datetime | None:
            return datetime.fromtimestamp(unix, UTC) if unix else None

        limits = KeyLimitSettings(
            **{field.name: value for field, value in info.limits.ListFields()}
        )
        return cls(
            info.id, info.name, info.prefix, info.admin, tuple(info.models), limits,
            when(info.created), when(info.revoked),
        )  # fmt: skip


class KeyBackend(Protocol):
    via: str

    def create(
        self, name: str, admin: bool, models: tuple[str, ...], limits: KeyLimitSettings
    ) -> tuple[KeyView, str]: ...

    def list(self, include_revoked: bool) -> list[KeyView]: ...

    def revoke(self, key_id: str) -> bool: ...

    def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool: ...


class StoreBackend:
    """The key store itself (the database in the config's ``logger`` section)."""

    via = "the key store"

    def __init__(self, settings: MeshSettings) -> None:
        self._settings = settings

    def _run(self, work: Callable[[KeyStore], Awaitable[T]]) -> T:
        async def main() -> T:
            store = await open_key_store(self._settings.logger)
            try:
                return await work(store)
            finally:
                await store.close()

        try:
            return asyncio.run(main())
        except KeyStoreError as error:
            raise rpc.CliError(str(error)) from None

    def create(
        self, name: str, admin: bool, models: tuple[str, ...], limits: KeyLimitSettings
    ) -> tuple[KeyView, str]:
        try:
            secret = server_secret(self._settings.gateway.auth.secret_env)
        except SecretMissing as error:
            raise rpc.CliError(str(error)) from None
        key, plain = self._run(lambda store: create_key(store, secret, name, admin, models, limits))
        return KeyView.of_stored(key), plain

    def list(self, include_revoked: bool) -> list[KeyView]:
        keys = self._run(lambda store: store.list_keys(include_revoked=include_revoked))
        return [KeyView.of_stored(key) for key in keys]

    def revoke(self, key_id: str) -> bool:
        return self._run(lambda store: store.revoke(key_id))

    def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool:
        return self._run(lambda store: store.set_limits(key_id, limits))


def _limits_message(limits: KeyLimitSettings) -> admin_pb2.KeyLimits:
    return admin_pb2.KeyLimits(**limits.model_dump(exclude_none=True))


class AdminApiBackend:
    """``AdminService`` of a running gateway, called with an admin key."""

    def __init__(self, target: str, admin_key: str) -> None:
        self.target = target
        self._metadata = (("authorization", f"Bearer {admin_key}"),)
        self.via = f"the admin API at {target}"

    def _call(self, work: Callable[[admin_pb2_grpc.AdminServiceStub], T]) -> T:
        with rpc.channel(self.target) as channel:
            try:
                return work(admin_pb2_grpc.AdminServiceStub(channel))
            except grpc.RpcError as error:
                raise rpc.CliError(rpc.describe(error, self.target)) from None

    def reachable(self) -> bool:
        """True when a gateway answers at the target (any reply, even a refusal, is an answer)."""
        with rpc.channel(self.target) as channel:
            try:
                grpc.channel_ready_future(channel).result(timeout=2.0)
            except grpc.FutureTimeoutError:
                return False
        return True

    def create(
        self, name: str, admin: bool, models: tuple[str, ...], limits: KeyLimitSettings
    ) -> tuple[KeyView, str]:
        request = admin_pb2.CreateKeyRequest(
            name=name, admin=admin, models=list(models), limits=_limits_message(limits)
        )
        reply = self._call(
            lambda stub: stub.CreateKey(request, metadata=self._metadata, timeout=TIMEOUT_S)
        )
        return KeyView.of_info(reply.info), reply.key

    def list(self, include_revoked: bool) -> list[KeyView]:
        request = admin_pb2.ListKeysRequest(include_revoked=include_revoked)
        reply = self._call(
            lambda stub: stub.ListKeys(request, metadata=self._metadata, timeout=TIMEOUT_S)
        )
        return [KeyView.of_info(info) for info in reply.keys]

    def _absent_is_false(self, call: Callable[[admin_pb2_grpc.AdminServiceStub], object]) -> bool:
        def work(stub: admin_pb2_grpc.AdminServiceStub) -> bool:
            try:
                call(stub)
            except grpc.RpcError as error:
                if isinstance(error, grpc.Call) and error.code() is grpc.StatusCode.NOT_FOUND:
                    return False
                raise
            return True

        return self._call(work)

    def revoke(self, key_id: str) -> bool:
        request = admin_pb2.RevokeKeyRequest(id=key_id)
        return self._absent_is_false(
            lambda stub: stub.RevokeKey(request, metadata=self._metadata, timeout=TIMEOUT_S)
        )

    def set_limits(self, key_id: str, limits: KeyLimitSettings) -> bool:
        request = admin_pb2.SetKeyLimitsRequest(id=key_id, limits=_limits_message(limits))
        return self._absent_is_false(
            lambda stub: stub.SetKeyLimits(request, metadata=self._metadata, timeout=TIMEOUT_S)
        )


def choose(
    settings: MeshSettings, admin_key: str | None, url: str | None, direct: bool
) -> KeyBackend:
    """The admin API when an admin key is given and a gateway answers, else the key store."""
    key = admin_key or os.environ.get(ADMIN_KEY_ENV) or None
    if key is None:
        return StoreBackend(settings)
    api = AdminApiBackend(rpc.gateway_target(settings, url, direct), key)
    if api.reachable():
        return api
    print(f"note: no gateway answers at {api.target}; using the key store", file=sys.stderr)
    return StoreBackend(settings)
