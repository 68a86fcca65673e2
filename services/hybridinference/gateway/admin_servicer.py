"""AdminService: operator RPCs, admin keys only.

Endpoint state comes from the router; keys from the key store (the request-log database);
request records, usage and traffic from the logger (relayed, its errors kept).
"""

from __future__ import annotations

from datetime import datetime

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError, abort, invalid_argument
from hybridinference.gateway import admin_requests
from hybridinference.gateway.log_reader import LogReader
from hybridinference.gateway.runtime import GatewayRuntime
from hybridinference.gateway.v1 import admin_pb2, admin_pb2_grpc
from hybridinference.keys.issue import create_key
from hybridinference.keys.model import ApiKey
from hybridinference.keys.store import KeyStore, KeyStoreError
from hybridinference.keys.tokens import SecretMissing, server_secret


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
        self.log_reader = LogReader(runtime.settings.logger_address)

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
            revoked = await self._find(store, request.id)
        except KeyStoreError as error:
            await abort(context, _store_unavailable(error))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.RevokeKeyResponse(key=key_info(revoked))

    async def CreateKey(
        self, request: admin_pb2.CreateKeyRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.CreateKeyResponse:
        try:
            store = self._admit(context)
            name = admin_requests.key_name(request.name)
            models = admin_requests.key_models(list(request.models))
            limits = admin_requests.key_limits(request.limits)
            try:
                secret = server_secret(self._runtime.settings.auth.secret_env)
            except SecretMissing:
                # The gateway read it at start; it cannot have vanished unless the env changed.
                raise ServiceError(
                    grpc.StatusCode.FAILED_PRECONDITION,
                    "the gateway has no server secret to hash a new key with",
                    "secret_missing",
                ) from None
            key, plain = await create_key(store, secret, name, request.admin, models, limits)
            await self._runtime.edge.reload_keys()
            created = await self._find(store, key.id)
        except KeyStoreError as error:
            await abort(context, _store_unavailable(error))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.CreateKeyResponse(info=key_info(created), key=plain)

    async def SetKeyLimits(
        self, request: admin_pb2.SetKeyLimitsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.SetKeyLimitsResponse:
        try:
            store = self._admit(context)
            if not request.id:
                raise invalid_argument([FieldViolation("id", "must name a key")])
            limits = admin_requests.key_limits(request.limits)
            if not await store.set_limits(request.id, limits):
                raise _key_not_found(request.id)
            await self._runtime.edge.reload_keys()
            updated = await self._find(store, request.id)
        except KeyStoreError as error:
            await abort(context, _store_unavailable(error))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.SetKeyLimitsResponse(key=key_info(updated))

    async def GetTraffic(
        self, request: admin_pb2.GetTrafficRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetTrafficResponse:
        try:
            self._admit(context)
            query = admin_requests.traffic_request(request)
            reply = await self.log_reader.traffic(query)
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.GetTrafficResponse(
            series=reply.series,
            start_time=query.start_time,
            bucket_seconds=query.bucket_seconds,
            truncated=reply.truncated,
        )

    async def ListRequests(
        self, request: admin_pb2.ListRequestsRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.ListRequestsResponse:
        try:
            self._admit(context)
            reply = await self.log_reader.list_records(admin_requests.records_request(request))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.ListRequestsResponse(
            records=reply.records, next_page_token=reply.next_page_token
        )

    async def GetRequest(
        self, request: admin_pb2.GetRequestRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetRequestResponse:
        try:
            self._admit(context)
            if not request.request_id:
                raise invalid_argument([FieldViolation("request_id", "is required")])
            record = await self.log_reader.get_record(request.request_id)
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.GetRequestResponse(record=record)

    async def GetUsage(
        self, request: admin_pb2.GetUsageRequest, context: grpc.aio.ServicerContext
    ) -> admin_pb2.GetUsageResponse:
        try:
            self._admit(context)
            reply = await self.log_reader.usage(admin_requests.usage_request(request))
        except ServiceError as error:
            await abort(context, error)
        return admin_pb2.GetUsageResponse(buckets=reply.buckets)

    @staticmethod
    async def _find(store: KeyStore, key_id: str) -> ApiKey:
        for key in await store.list_keys():
            if key.id == key_id:
                return key
        raise _key_not_found(key_id)
