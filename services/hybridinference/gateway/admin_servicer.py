"""AdminService: operator RPCs (endpoint state, key listing and revocation), admin keys only."""

from __future__ import annotations

from datetime import datetime

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError, abort, invalid_argument
from hybridinference.gateway.runtime import GatewayRuntime
from hybridinference.gateway.v1 import admin_pb2, admin_pb2_grpc
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore, KeyStoreError


def _unix(when: datetime | None) -> int:
    return int(when.timestamp()) if when is not None else 0


def key_info(key: ApiKey) -> admin_pb2.ApiKeyInfo:
    """The public view of a key: the hash is never copied, and the key itself is never stored."""
    limits = admin_pb2.KeyLimits(**key.limits.model_dump(exclude_none=True))
    return admin_pb2.ApiKeyInfo(
        id=key.id,
        name=key.name,
        prefix=key.prefix,
        admin=key.admin,
        models=list(key.models),
        limits=limits,
        created=_unix(key.created_at),
        revoked=_unix(key.revoked_at),
    )


def _key_not_found(key_id: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.NOT_FOUND,
        f"No active API key has the id '{key_id[:64]}'.",
        "key_not_found",
        metadata={"id": key_id[:64]},
    )


def _store_unavailable(error: KeyStoreError) -> ServiceError:
    return ServiceError(grpc.StatusCode.UNAVAILABLE, f"key store: {error}", "key_store_unavailable")


class AdminServicer(admin_pb2_grpc.AdminServiceServicer):
    def __init__(self, runtime: GatewayRuntime) -> None:
        self._runtime = runtime

    def _admit(self, context: grpc.aio.ServicerContext) -> KeyStore:
        """The admin check, then the key store (there is one whenever auth is on)."""
        edge = self._runtime.edge
        edge.authenticate_admin(context.invocation_metadata())
        store = edge.key_store
        assert store is not None, "auth is on, so the edge holds a key store"
        return store

    async def ListEndpoints(
        self, request: admin_pb2.ListEndpointsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListEndpointsResponse:
        try:
            self._admit(context)
            endpoints = await self._runtime.router.list_endpoints()
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.ListEndpointsResponse(endpoints=endpoints)

    async def ListKeys(
        self, request: admin_pb2.ListKeysRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListKeysResponse:
        try:
            store = self._admit(context)
            keys = await store.list_keys(include_revoked=request.include_revoked)
        except KeyStoreError as error:
            await abort(context, _store_unavailable(error))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.ListKeysResponse(keys=[key_info(key) for key in keys])

    async def RevokeKey(
        self, request: admin_pb2.RevokeKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.RevokeKeyResponse:
        try:
            store = self._admit(context)
            if not request.id:
                raise invalid_argument([FieldViolation("id", "must name a key")])
            if not await store.revoke(request.id):
                raise _key_not_found(request.id)
            await self._runtime.edge.reload_keys()
            revoked = next(k for k in await store.list_keys() if k.id == request.id)
        except KeyStoreError as error:
            await abort(context, _store_unavailable(error))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.RevokeKeyResponse(key=key_info(revoked))
