"""Who may call AdminService, and what a key listing shows."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import grpc
import pytest

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError
from hybridinference.gateway.admin_servicer import key_info
from hybridinference.gateway.auth import Authenticator, KeyCache
from hybridinference.gateway.edge import Edge
from hybridinference.keys.model import ApiKey
from hybridinference.keys.tokens import hash_key

SECRET = b"unit-test-secret-0123456789"


def key(plain: str, admin: bool) -> ApiKey:
    return ApiKey(
        id=f"key_{plain}",
        name=plain,
        key_hash=hash_key(SECRET, plain),
        prefix=plain[:4],
        admin=admin,
    )


def edge_with(*keys: ApiKey) -> Edge:
    cache = KeyCache(SECRET)
    cache.replace(keys)
    return Edge(Authenticator(cache))


def reason_of(edge: Edge, metadata: tuple[tuple[str, str], ...]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(ServiceError) as raised:
        edge.authenticate_admin(metadata)
    return raised.value.code, raised.value.reason


def test_auth_off_shuts_admin_rpcs_for_everyone() -> None:
    code, reason = reason_of(Edge.disabled(), (("authorization", "Bearer anything"),))
    assert (code, reason) == (grpc.StatusCode.PERMISSION_DENIED, "admin_auth_disabled")
    with pytest.raises(ServiceError) as raised:
        Edge.disabled().authenticate_admin(())
    assert "gateway.auth.enabled" in raised.value.message


def test_only_admin_keys_pass() -> None:
    edge = edge_with(key("userkey", admin=False), key("adminkey", admin=True))
    assert reason_of(edge, ())[0] is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(edge, (("x-api-key", "nope"),))[0] is grpc.StatusCode.UNAUTHENTICATED
    assert reason_of(edge, (("x-api-key", "userkey"),)) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "admin_key_required",
    )
    assert edge.authenticate_admin((("x-api-key", "adminkey"),)).id == "key_adminkey"


def test_key_info_carries_no_hash_and_maps_times_and_limits() -> None:
    created = datetime(2026, 1, 2, tzinfo=UTC)
    stored = dataclasses.replace(
        key("somekey", admin=True),
        models=("hi-sim",),
        limits=KeyLimitSettings(requests_per_minute=60, daily_budget_usd=5.0),
        created_at=created,
    )
    info = key_info(stored)
    assert stored.key_hash not in str(info)
    assert (info.id, info.admin, list(info.models)) == ("key_somekey", True, ["hi-sim"])
    assert info.created == int(created.timestamp()) and info.revoked == 0
    assert info.limits.requests_per_minute == 60 and info.limits.daily_budget_usd == 5.0
    assert not info.limits.HasField("tokens_per_minute")
