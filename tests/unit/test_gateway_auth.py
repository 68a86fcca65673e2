"""API keys at the gateway: how a key is presented, looked up, and refused."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import grpc
import orjson
import pytest

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import ServiceError
from hybridinference.gateway.auth import Authenticator, KeyCache, presented_key
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.edge import Edge, visible_models
from hybridinference.gateway.execution import Execution
from hybridinference.gateway.records import build_record
from hybridinference.keys.model import ApiKey
from hybridinference.keys.tokens import SecretMissing, hash_key, new_key, server_secret

SECRET = b"unit-test-secret-0123456789"


def make_key(plain: str, key_id: str = "key_a", models: tuple[str, ...] = ()) -> ApiKey:
    return ApiKey(
        id=key_id, name="test", key_hash=hash_key(SECRET, plain), prefix=plain[:10], models=models
    )


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        ((("authorization", "Bearer abc"),), "abc"),
        ((("authorization", "bearer  abc "),), "abc"),
        ((("x-api-key", "xyz"),), "xyz"),
        ((("x-api-key", "xyz"), ("authorization", "Bearer abc")), "abc"),
        ((("authorization", "Basic Zm9v"),), "Basic Zm9v"),
        ((("other", "v"),), None),
        ((), None),
        (None, None),
        ((("x-api-key-bin", b"\x00"),), None),
    ],
)
def test_presented_key(
    metadata: tuple[tuple[str, str | bytes], ...] | None, expected: str | None
) -> None:
    assert presented_key(metadata) == expected


def test_hash_is_keyed_by_the_secret() -> None:
    plain = new_key()
    assert plain.startswith("hi-") and len(plain) > 40
    assert hash_key(SECRET, plain) == hash_key(SECRET, plain)
    assert hash_key(SECRET, plain) != hash_key(b"another-secret-0123456", plain)
    assert plain not in hash_key(SECRET, plain)


def test_server_secret_must_be_set_and_long(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("HI_TEST_SECRET", raising=False)
    with pytest.raises(SecretMissing, match=r"\$HI_TEST_SECRET is not set"):
        server_secret("HI_TEST_SECRET")
    monkeypatch.setenv("HI_TEST_SECRET", "short")
    with pytest.raises(SecretMissing, match="shorter than"):
        server_secret("HI_TEST_SECRET")
    monkeypatch.setenv("HI_TEST_SECRET", "x" * 32)
    assert server_secret("HI_TEST_SECRET") == b"x" * 32


def authenticator(*keys: ApiKey) -> Authenticator:
    cache = KeyCache(SECRET)
    cache.replace(list(keys))
    return Authenticator(cache)


def test_auth_off_accepts_everyone() -> None:
    off = Authenticator(None)
    assert not off.enabled
    assert off.authenticate(()) is None
    off.authorize(None, "any-model")


def test_valid_key_by_either_header() -> None:
    plain = new_key()
    auth = authenticator(make_key(plain))
    assert auth.authenticate((("authorization", f"Bearer {plain}"),)) is not None
    key = auth.authenticate((("x-api-key", plain),))
    assert key is not None and key.id == "key_a"


def openai_error(error: ServiceError) -> dict[str, object]:
    body: dict[str, dict[str, object]] = orjson.loads(error.openai_body())
    return body["error"]


def test_missing_key_is_401_in_openai_shape() -> None:
    with pytest.raises(ServiceError) as caught:
        authenticator().authenticate((("content-type", "application/grpc"),))
    error = caught.value
    assert error.code is grpc.StatusCode.UNAUTHENTICATED and error.http_status == 401
    body = openai_error(error)
    assert body["type"] == "invalid_request_error" and body["code"] == "invalid_api_key"
    assert "API key" in str(body["message"])


def test_wrong_key_is_401_and_never_echoed() -> None:
    plain = new_key()
    auth = authenticator(make_key(plain))
    wrong = plain[:-4] + "AAAA"
    with pytest.raises(ServiceError) as caught:
        auth.authenticate((("authorization", f"Bearer {wrong}"),))
    error = caught.value
    assert error.code is grpc.StatusCode.UNAUTHENTICATED
    assert wrong not in error.message and wrong.encode() not in error.openai_body()
    assert wrong.encode() not in error.to_status().details.encode()


def test_oversized_key_is_refused_without_hashing() -> None:
    with pytest.raises(ServiceError):
        authenticator().authenticate((("x-api-key", "k" * 100_000),))


def test_revoked_keys_drop_out_of_the_cache() -> None:
    plain = new_key()
    key = make_key(plain)
    cache = KeyCache(SECRET)
    cache.replace([key])
    assert cache.lookup(plain) == key
    cache.replace([])
    assert cache.lookup(plain) is None
    revoked = dataclasses.replace(key, revoked_at=datetime.now(UTC))
    cache.replace([revoked])
    assert cache.lookup(plain) is None


def test_model_access_is_403() -> None:
    key = make_key(new_key(), models=("hi-sim",))
    Authenticator.authorize(key, "hi-sim")
    with pytest.raises(ServiceError) as caught:
        Authenticator.authorize(key, "gpt-4o")
    error = caught.value
    assert error.code is grpc.StatusCode.PERMISSION_DENIED and error.http_status == 403
    assert openai_error(error)["type"] == "permission_error"
    assert openai_error(error)["code"] == "model_not_allowed"
    status = error.to_status()
    assert status.code is grpc.StatusCode.PERMISSION_DENIED


def test_visible_models_follow_the_key() -> None:
    class Route:
        def __init__(self, name: str) -> None:
            self.name = name

    routes = [Route("hi-sim"), Route("hi-slow")]
    assert len(visible_models(None, routes)) == 2
    assert len(visible_models(make_key("x"), routes)) == 2
    assert [r.name for r in visible_models(make_key("x", models=("hi-slow",)), routes)] == [
        "hi-slow"
    ]


async def test_edge_records_the_key_id_never_the_key() -> None:
    plain = new_key()
    cache = KeyCache(SECRET)
    cache.replace([make_key(plain, key_id="key_rec")])
    edge = Edge(Authenticator(cache))
    execution = Execution("req-1", ChatCall.unparsed(stream=False), "grpc")
    edge.authenticate(execution, (("authorization", f"Bearer {plain}"),))
    record = build_record(execution)
    assert record.api_key_id == "key_rec"
    assert plain not in str(record)


async def test_disabled_edge_records_no_key() -> None:
    edge = Edge.disabled()
    execution = Execution("req-2", ChatCall.unparsed(stream=False), "grpc")
    edge.authenticate(execution, ())
    await edge.admit(execution)
    assert build_record(execution).api_key_id == ""
    assert not edge.auth_enabled


def test_key_limits_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        KeyLimitSettings(requests_per_minute=0)
    with pytest.raises(ValueError):
        KeyLimitSettings(daily_budget_usd=-1)
