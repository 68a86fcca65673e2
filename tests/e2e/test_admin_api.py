"""AdminService through the whole mesh: admin keys only, and shut when auth is off."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import httpx
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from hybridinference.gateway.v1 import admin_pb2, admin_pb2_grpc
from support.auth_mesh import AuthMesh, running_auth_mesh
from support.mesh import Mesh
from support.polling import poll

SECRET_ENV = "HI_E2E_ADMIN_SECRET"


EVERY_RPC: tuple[tuple[str, object], ...] = (
    ("ListEndpoints", admin_pb2.ListEndpointsRequest()),
    ("ListKeys", admin_pb2.ListKeysRequest()),
    ("RevokeKey", admin_pb2.RevokeKeyRequest(id="key_x")),
    ("CreateKey", admin_pb2.CreateKeyRequest(name="x")),
    ("SetKeyLimits", admin_pb2.SetKeyLimitsRequest(id="key_x")),
    ("GetTraffic", admin_pb2.GetTrafficRequest()),
    ("ListRequests", admin_pb2.ListRequestsRequest()),
    ("GetRequest", admin_pb2.GetRequestRequest(request_id="r")),
    ("GetUsage", admin_pb2.GetUsageRequest()),
)


@pytest.fixture(scope="module")
def auth_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AuthMesh]:
    with running_auth_mesh(tmp_path_factory.mktemp("admin"), SECRET_ENV) as running:
        yield running


def call(target: str, method: str, request: object, key: str | None) -> object:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(target) as channel:
        stub = admin_pb2_grpc.AdminServiceStub(channel)
        return getattr(stub, method)(request, metadata=metadata, timeout=10)


def failure(
    target: str, method: str, request: object, key: str | None
) -> tuple[grpc.StatusCode, str]:
    """The code and ErrorInfo reason of a call that must fail."""
    with pytest.raises(grpc.RpcError) as raised:
        call(target, method, request, key)
    error = raised.value
    reason = ""
    status = rpc_status.from_call(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason = info.reason
    return error.code(), reason


def admin_ready(target: str, key: str) -> None:
    """Waits until the gateway's key cache knows the new key."""

    def known() -> bool | None:
        try:
            call(target, "ListKeys", admin_pb2.ListKeysRequest(), key)
        except grpc.RpcError:
            return None
        return True

    poll(known, 10, "the admin key on the gateway")


def get(mesh: Mesh, path: str, key: str | None = None) -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.get(f"{mesh.http_url}{path}", headers=headers, timeout=10)


def test_admin_rpcs_need_an_admin_key(auth_mesh: AuthMesh) -> None:
    mesh = auth_mesh.mesh
    _, user_key = auth_mesh.create_key()
    _, admin_key = auth_mesh.create_key("--admin")
    admin_ready(mesh.envoy_grpc, admin_key)
    # The user key is older than the admin key, so the cache knows it too by now.
    assert get(mesh, "/api/v1/admin/endpoints").status_code == 401
    assert get(mesh, "/api/v1/admin/keys", "hi-not-a-key").status_code == 401
    denied = get(mesh, "/api/v1/admin/keys", user_key)
    assert denied.status_code == 403, denied.text
    for method, request in EVERY_RPC:
        assert failure(mesh.envoy_grpc, method, request, user_key) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "admin_key_required",
        )
        assert failure(mesh.envoy_grpc, method, request, None)[0] is (
            grpc.StatusCode.UNAUTHENTICATED
        )


def test_list_endpoints_relays_the_router(auth_mesh: AuthMesh) -> None:
    mesh = auth_mesh.mesh
    _, admin_key = auth_mesh.create_key("--admin")
    admin_ready(mesh.envoy_grpc, admin_key)
    reply = call(mesh.envoy_grpc, "ListEndpoints", admin_pb2.ListEndpointsRequest(), admin_key)
    assert isinstance(reply, admin_pb2.ListEndpointsResponse)
    assert reply.endpoints and all(e.id and e.worker_address for e in reply.endpoints)
    http = get(mesh, "/api/v1/admin/endpoints", admin_key)
    assert http.status_code == 200, http.text
    assert {e["id"] for e in http.json()["endpoints"]} == {e.id for e in reply.endpoints}


def test_list_and_revoke_keys_never_show_secrets(auth_mesh: AuthMesh) -> None:
    mesh = auth_mesh.mesh
    user_id, user_key = auth_mesh.create_key("--model", "hi-sim")
    admin_id, admin_key = auth_mesh.create_key("--admin")
    admin_ready(mesh.envoy_grpc, admin_key)
    listing = get(mesh, "/api/v1/admin/keys", admin_key)
    assert listing.status_code == 200, listing.text
    assert user_key not in listing.text and admin_key not in listing.text
    assert "hash" not in listing.text
    by_id = {k["id"]: k for k in listing.json()["keys"]}
    assert by_id[admin_id]["admin"] is True
    assert by_id[user_id]["models"] == ["hi-sim"] and by_id[user_id]["revoked"] == "0"

    revoked = httpx.post(
        f"{mesh.http_url}/api/v1/admin/keys/{user_id}:revoke",
        headers={"authorization": f"Bearer {admin_key}"},
        timeout=10,
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["key"]["id"] == user_id and revoked.json()["key"]["revoked"] != "0"
    # Applied at once on the gateway that revoked it: the key is now unknown (401).
    assert get(mesh, "/api/v1/admin/keys", user_key).status_code == 401
    active = call(mesh.envoy_grpc, "ListKeys", admin_pb2.ListKeysRequest(), admin_key)
    assert isinstance(active, admin_pb2.ListKeysResponse)
    assert user_id not in {k.id for k in active.keys}
    again = call(
        mesh.envoy_grpc, "ListKeys", admin_pb2.ListKeysRequest(include_revoked=True), admin_key
    )
    assert isinstance(again, admin_pb2.ListKeysResponse)
    assert user_id in {k.id for k in again.keys}
    assert failure(
        mesh.envoy_grpc, "RevokeKey", admin_pb2.RevokeKeyRequest(id=user_id), admin_key
    ) == (grpc.StatusCode.NOT_FOUND, "key_not_found")
    assert (
        failure(mesh.envoy_grpc, "RevokeKey", admin_pb2.RevokeKeyRequest(id=""), admin_key)[0]
        is grpc.StatusCode.INVALID_ARGUMENT
    )


def test_admin_rpcs_are_shut_when_auth_is_off(mesh: Mesh) -> None:
    for method, request in EVERY_RPC:
        assert failure(mesh.envoy_grpc, method, request, None) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "admin_auth_disabled",
        )
    reply = get(mesh, "/api/v1/admin/endpoints")
    assert reply.status_code == 403
    assert "gateway.auth.enabled" in reply.json()["message"]


def test_keys_made_and_limited_over_grpc(auth_mesh: AuthMesh) -> None:
    mesh = auth_mesh.mesh
    _, admin_key = auth_mesh.create_key("--admin")
    admin_ready(mesh.envoy_grpc, admin_key)
    created = call(
        mesh.envoy_grpc,
        "CreateKey",
        admin_pb2.CreateKeyRequest(
            name="grpc-made", models=["hi-sim"], limits=admin_pb2.KeyLimits(tokens_per_minute=100)
        ),
        admin_key,
    )
    assert isinstance(created, admin_pb2.CreateKeyResponse)
    assert created.key.startswith("hi-") and created.info.models == ["hi-sim"]
    # Usable at once on the gateway that made it.
    assert get(mesh, "/v1/models", created.key).status_code == 200
    limited = call(
        mesh.envoy_grpc,
        "SetKeyLimits",
        admin_pb2.SetKeyLimitsRequest(
            id=created.info.id, limits=admin_pb2.KeyLimits(requests_per_minute=3)
        ),
        admin_key,
    )
    assert isinstance(limited, admin_pb2.SetKeyLimitsResponse)
    assert limited.key.limits == admin_pb2.KeyLimits(requests_per_minute=3)
    code, _ = failure(
        mesh.envoy_grpc,
        "SetKeyLimits",
        admin_pb2.SetKeyLimitsRequest(
            id=created.info.id, limits=admin_pb2.KeyLimits(max_concurrent=0)
        ),
        admin_key,
    )
    assert code is grpc.StatusCode.INVALID_ARGUMENT
    assert failure(
        mesh.envoy_grpc,
        "SetKeyLimits",
        admin_pb2.SetKeyLimitsRequest(id="key_nope"),
        admin_key,
    ) == (grpc.StatusCode.NOT_FOUND, "key_not_found")
    # A bad page token is the logger's INVALID_ARGUMENT, relayed with its field.
    bad = get(mesh, "/api/v1/admin/requests?page_token=nonsense", admin_key)
    assert bad.status_code == 400 and "page_token" in bad.text
    missing = get(mesh, "/api/v1/admin/requests/no-such-request", admin_key)
    assert missing.status_code == 404
