"""Keys and quotas through the whole mesh (Envoy, gateway with auth on, Redis-backed counters).

A second gateway process on the same config stands for a second replica: it shares the key
table (same database) and the quota counters (same Redis prefix).
"""

from __future__ import annotations

import asyncio
import functools
import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import orjson
import pytest
import redis
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status

from hybridinference.common.settings import LoggerSettings, load_settings
from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.quota.reservation import Reserver
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from hybridinference.keys.store import open_key_store
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import REPO, ServiceProcess, free_port, start_service
from support.records import record_sent_as

SECRET_ENV = "HI_E2E_AUTH_SECRET"
HELLO = [{"role": "user", "content": "hello there"}]
GRPC_HELLO = [chat_pb2.ChatMessage(role="user", content="hello there")]


@dataclass
class Edge:
    mesh: Mesh
    replica: ServiceProcess
    env: dict[str, str]

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [
                sys.executable,
                "-m",
                "hybridinference.cli",
                "--config",
                str(self.mesh.config_path),
                *args,
            ],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def create_key(self, *args: str) -> tuple[str, str]:
        done = self.cli("keys", "create", f"e2e-{uuid.uuid4().hex[:6]}", "--json", *args)
        assert done.returncode == 0, done.stderr
        created = orjson.loads(done.stdout)
        return str(created["id"]), str(created["key"])


@pytest.fixture(scope="module")
def edge(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    tmp = tmp_path_factory.mktemp("edge")
    prefix = f"hi-e2e:{uuid.uuid4().hex[:10]}:"
    config = mesh_config(tmp)
    config["gateway"]["auth"] = {"enabled": True, "secret_env": SECRET_ENV}
    config["gateway"]["quota"] = {
        "redis_url": "redis://127.0.0.1:6379/0",
        "redis_key_prefix": prefix,
        "failure_mode": "closed",
    }
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    env = {**os.environ, SECRET_ENV: secret}
    os.environ[SECRET_ENV] = secret
    try:
        with running_mesh(tmp, config) as mesh:
            port = free_port()
            replica = start_service(
                ["hybridinference.gateway", "--port", str(port)],
                mesh.config_path,
                f"127.0.0.1:{port}",
                tmp,
                "gateway-b",
                env=env,
            )
            try:
                yield Edge(mesh, replica, env)
            finally:
                replica.stop()
    finally:
        os.environ.pop(SECRET_ENV, None)
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def post(edge: Edge, body: object, **headers: str) -> httpx.Response:
    return httpx.post(
        f"{edge.mesh.http_url}/v1/chat/completions",
        content=orjson.dumps(body),
        headers={"content-type": "application/json", **headers},
        timeout=30,
    )


def refused(reply: httpx.Response) -> httpx.Response | None:
    return reply if reply.status_code == 429 else None


def bearer(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def grpc_chat(target: str, key: str | None, model: str = "hi-sim") -> gateway_pb2.ChatResponse:
    metadata = (("authorization", f"Bearer {key}"),) if key else ()
    with grpc.insecure_channel(target) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        reply: gateway_pb2.ChatResponse = stub.Chat(
            gateway_pb2.ChatRequest(model=model, messages=GRPC_HELLO),
            metadata=metadata,
            timeout=30,
        )
        return reply


def grpc_code(target: str, key: str | None, model: str = "hi-sim") -> grpc.StatusCode:
    try:
        grpc_chat(target, key, model)
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK


def has_code(target: str, key: str | None, expected: grpc.StatusCode) -> bool | None:
    """For poll: True once a chat through target answers expected, else None (keep polling)."""
    return grpc_code(target, key) is expected or None


def key_ready(edge: Edge, key: str) -> None:
    """Waits until both replicas know the key, without spending any quota (ListModels)."""

    def known(target: str) -> bool | None:
        with grpc.insecure_channel(target) as channel:
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)
            try:
                stub.ListModels(
                    gateway_pb2.ListModelsRequest(),
                    metadata=(("authorization", f"Bearer {key}"),),
                    timeout=10,
                )
            except grpc.RpcError:
                return None
        return True

    for target in (edge.mesh.envoy_grpc, edge.replica.address):
        poll(functools.partial(known, target), 10, f"the key on {target}")


def test_missing_and_wrong_keys_are_401_on_every_surface(edge: Edge) -> None:
    for headers in ({}, bearer("hi-not-a-real-key"), {"x-api-key": "hi-nope"}):
        reply = post(edge, {"model": "hi-sim", "messages": HELLO}, **headers)
        assert reply.status_code == 401, reply.text
        error = reply.json()["error"]
        assert error["type"] == "invalid_request_error" and error["code"] == "invalid_api_key"
        assert "hi-not-a-real-key" not in reply.text and "hi-nope" not in reply.text
    assert httpx.get(f"{edge.mesh.http_url}/v1/models", timeout=10).status_code == 401
    typed = httpx.post(
        f"{edge.mesh.http_url}/api/v1/chat",
        content=orjson.dumps({"model": "hi-sim", "messages": HELLO}),
        timeout=30,
    )
    assert typed.status_code == 401 and typed.json()["code"] == 16
    assert grpc_code(edge.mesh.envoy_grpc, None) is grpc.StatusCode.UNAUTHENTICATED
    assert grpc_code(edge.replica.address, "hi-wrong") is grpc.StatusCode.UNAUTHENTICATED


def test_a_valid_key_works_everywhere_and_is_recorded_by_id(edge: Edge) -> None:
    key_id, key = edge.create_key()
    client = openai.OpenAI(base_url=f"{edge.mesh.http_url}/v1", api_key=key, max_retries=0)
    # The gateways pick a new key up within their refresh interval.
    key_ready(edge, key)
    reply = client.chat.completions.with_raw_response.create(model="hi-sim", messages=HELLO)
    request_id = reply.headers["x-request-id"]
    assert reply.parse().choices[0].message.content
    assert (
        post(edge, {"model": "hi-sim", "messages": HELLO}, **{"x-api-key": key}).status_code == 200
    )
    assert grpc_chat(edge.replica.address, key).content
    assert {m.id for m in client.models.list()} == {"hi-sim", "hi-slow", "hi-dying"}

    logger = edge.mesh.address("logger")
    stored = poll(lambda: record_sent_as(logger, request_id), 15, "the request record")
    assert stored.api_key_id == key_id
    assert key not in str(stored)


def test_a_key_limited_to_a_model_gets_403_elsewhere(edge: Edge) -> None:
    _, key = edge.create_key("--model", "hi-sim")
    key_ready(edge, key)
    reply = post(edge, {"model": "hi-slow", "messages": HELLO}, **bearer(key))
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "model_not_allowed"
    code = grpc_code(edge.mesh.envoy_grpc, key, "hi-slow")
    assert code is grpc.StatusCode.PERMISSION_DENIED
    models = httpx.get(f"{edge.mesh.http_url}/v1/models", headers=bearer(key), timeout=10)
    assert [m["id"] for m in models.json()["data"]] == ["hi-sim"]


def test_pinning_an_endpoint_needs_an_admin_key(edge: Edge) -> None:
    _, plain = edge.create_key()
    _, admin = edge.create_key("--admin")
    key_ready(edge, plain)
    key_ready(edge, admin)
    pin = {"x-hybridinference-endpoint": "sim-a"}
    body = {"model": "hi-sim", "messages": HELLO}
    refused = post(edge, body, **bearer(plain), **pin)
    assert refused.status_code == 403
    error = refused.json()["error"]
    assert error["code"] == "pinning_requires_admin_key"
    assert error["param"] == "x-hybridinference-endpoint"
    with grpc.insecure_channel(edge.mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(
                gateway_pb2.ChatRequest(model="hi-sim", messages=GRPC_HELLO),
                metadata=(("authorization", f"Bearer {plain}"), *pin.items()),
                timeout=30,
            )
        assert caught.value.code() is grpc.StatusCode.PERMISSION_DENIED
        served = stub.Chat(
            gateway_pb2.ChatRequest(model="hi-sim", messages=GRPC_HELLO),
            metadata=(("authorization", f"Bearer {admin}"), *pin.items()),
            timeout=30,
        )
    assert served.endpoint == "sim-a"
    assert post(edge, body, **bearer(admin), **pin).status_code == 200


def test_server_errors_name_no_endpoint_or_address(edge: Edge) -> None:
    _, key = edge.create_key()
    key_ready(edge, key)
    reply = post(edge, {"model": "hi-dying", "messages": HELLO}, **bearer(key))
    assert reply.status_code == 503
    message = reply.json()["error"]["message"]
    assert "hi-dying" in message and reply.headers["x-request-id"] in message
    assert "sim-dying" not in message and "127.0.0.1" not in message
    with grpc.insecure_channel(edge.mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(
                gateway_pb2.ChatRequest(model="hi-dying", messages=GRPC_HELLO),
                metadata=(("authorization", f"Bearer {key}"),),
                timeout=30,
            )
    assert caught.value.code() is grpc.StatusCode.UNAVAILABLE
    details = caught.value.details() or ""
    assert "sim-dying" not in details and "127.0.0.1" not in details
    status = rpc_status.from_call(caught.value)
    assert status is not None and "sim-dying" not in str(status)


def test_requests_per_minute_shared_by_two_replicas(edge: Edge) -> None:
    _, key = edge.create_key("--rpm", "4")
    key_ready(edge, key)
    assert grpc_code(edge.mesh.envoy_grpc, key) is grpc.StatusCode.OK
    assert grpc_code(edge.replica.address, key) is grpc.StatusCode.OK
    assert post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key)).status_code == 200
    assert grpc_code(edge.replica.address, key) is grpc.StatusCode.OK
    # Four used across both replicas. The window slides (the previous minute still counts, in
    # proportion), so a minute boundary during the test does not reset the count.
    refused = post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key))
    assert refused.status_code == 429, refused.text
    # Until enough of the four have slid out of the window: at most two minutes.
    assert 1 <= int(refused.headers["retry-after"]) <= 120
    body = refused.json()["error"]
    assert body["type"] == "rate_limit_error" and body["code"] == "rate_limit_exceeded"
    with grpc.insecure_channel(edge.replica.address) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.Chat(
                gateway_pb2.ChatRequest(model="hi-sim", messages=GRPC_HELLO),
                metadata=(("x-api-key", key),),
                timeout=30,
            )
    status = rpc_status.from_call(caught.value)
    assert status is not None and caught.value.code() is grpc.StatusCode.RESOURCE_EXHAUSTED
    names = {detail.TypeName() for detail in status.details}
    assert {"google.rpc.QuotaFailure", "google.rpc.RetryInfo"} <= names
    failure = error_details_pb2.QuotaFailure()
    next(d for d in status.details if d.Is(failure.DESCRIPTOR)).Unpack(failure)
    assert failure.violations[0].subject.startswith("api_key:key_")


def test_tokens_per_minute_refuses_after_the_tokens_are_charged(edge: Edge) -> None:
    _, key = edge.create_key("--tpm", "10")
    # The sim answers 12 tokens: the first request passes, and once its tokens are charged
    # (in the background, after the reply) the next is refused.
    key_ready(edge, key)
    reply = poll(
        lambda: refused(post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key))),
        10,
        "the token limit",
    )
    assert reply.json()["error"]["code"] == "rate_limit_exceeded"
    assert "tokens per minute" in reply.json()["error"]["message"]


def test_daily_budget_from_record_costs(edge: Edge) -> None:
    # sim-a costs $1 / $2 per million prompt / completion tokens: each request ~ $0.00003.
    _, key = edge.create_key("--daily-usd", "0.00001")
    key_ready(edge, key)
    reply = poll(
        lambda: refused(post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key))),
        10,
        "the budget",
    )
    error = reply.json()["error"]
    assert error["type"] == "insufficient_quota" and error["code"] == "insufficient_quota"


def test_concurrent_requests_limit(edge: Edge) -> None:
    _, key = edge.create_key("--max-concurrent", "1")
    key_ready(edge, key)
    with grpc.insecure_channel(edge.mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        slow = stub.ChatStream(
            gateway_pb2.ChatStreamRequest(model="hi-slow", messages=GRPC_HELLO),
            metadata=(("authorization", f"Bearer {key}"),),
        )
        next(slow)  # in flight
        busy = post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key))
        assert busy.status_code == 429
        assert "concurrent requests" in busy.json()["error"]["message"]
        slow.cancel()
    poll(
        lambda: grpc_code(edge.replica.address, key) is grpc.StatusCode.OK or None,
        10,
        "the slot to be released",
    )


def test_revocation_applies_on_both_replicas_within_a_second(edge: Edge) -> None:
    key_id, key = edge.create_key()
    targets = [edge.mesh.envoy_grpc, edge.replica.address]
    for target in targets:
        poll(functools.partial(has_code, target, key, grpc.StatusCode.OK), 10, "key")
    # Revoked in-process so the clock starts at the commit, not at a CLI's start-up.
    settings = LoggerSettings(**edge.mesh.config["logger"])

    async def revoke() -> bool:
        store = await open_key_store(settings)
        try:
            return await store.revoke(key_id)
        finally:
            await store.close()

    assert asyncio.run(revoke())
    revoked_at = time.monotonic()
    took = []
    for target in targets:
        poll(
            functools.partial(has_code, target, key, grpc.StatusCode.UNAUTHENTICATED),
            10,
            "the revocation",
        )
        took.append(time.monotonic() - revoked_at)
    print(f"revocation took effect after {took[0]:.3f} s (envoy) and {took[1]:.3f} s (replica)")
    # Each gateway polls every 0.25 s; the bound is generous for a loaded 2-core machine.
    assert max(took) < 2.0


def test_no_key_ever_reaches_the_logs(edge: Edge) -> None:
    _, key = edge.create_key()
    key_ready(edge, key)
    post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key))
    post(edge, {"model": "hi-sim", "messages": HELLO}, **bearer(key + "x"))
    text = edge.mesh.logs() + edge.replica.logs()
    for path in Path(edge.mesh.config_path).parent.rglob("*.log"):
        text += path.read_text(errors="replace")
    assert key not in text and key[12:] not in text
    assert edge.env[SECRET_ENV] not in text


def test_cli_lists_and_revokes(edge: Edge) -> None:
    key_id, key = edge.create_key("--rpm", "7")
    listing = edge.cli("keys", "list")
    assert listing.returncode == 0 and key_id in listing.stdout
    assert key not in listing.stdout and "requests_per_minute=7" in listing.stdout
    assert edge.cli("keys", "revoke", key_id).returncode == 0
    again = edge.cli("keys", "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr
    assert key_id not in edge.cli("keys", "list").stdout
    assert key_id in edge.cli("keys", "list", "--all").stdout


def test_cli_keys_go_through_the_admin_api_with_an_admin_key(edge: Edge) -> None:
    _, admin = edge.create_key("--admin")
    via_api = ("keys", "--admin-key", admin)
    created = edge.cli(*via_api, "create", "through-api", "--rpm", "5", "--json")
    assert created.returncode == 0, created.stderr
    assert "note:" not in created.stderr  # the gateway answered: no fallback to the store
    key_id, key = (str(orjson.loads(created.stdout)[k]) for k in ("id", "key"))
    assert grpc_code(edge.mesh.envoy_grpc, key) is grpc.StatusCode.OK
    listing = edge.cli(*via_api, "list", "--json")
    (mine,) = [k for k in map(orjson.loads, listing.stdout.splitlines()) if k["id"] == key_id]
    assert mine["limits"] == {"requests_per_minute": 5} and mine["revoked_at"] is None
    assert edge.cli(*via_api, "set-limits", key_id, "--rpm", "9").returncode == 0
    relisted = edge.cli(*via_api, "list", "--json").stdout.splitlines()
    assert {"id": key_id, "rpm": 9} in [
        {"id": k["id"], "rpm": k["limits"].get("requests_per_minute")}
        for k in map(orjson.loads, relisted)
    ]
    assert edge.cli(*via_api, "revoke", key_id).returncode == 0
    # The answering gateway applies a revocation at once.
    assert grpc_code(edge.mesh.envoy_grpc, key) is grpc.StatusCode.UNAUTHENTICATED
    again = edge.cli(*via_api, "revoke", key_id)
    assert again.returncode == 1 and "no active key" in again.stderr


def test_cli_keys_refuse_a_non_admin_key_and_fall_back_when_no_gateway_answers(
    edge: Edge,
) -> None:
    _, plain = edge.create_key()
    refused = edge.cli("keys", "--admin-key", plain, "list")
    assert refused.returncode == 1 and "PERMISSION_DENIED" in refused.stderr
    nobody = f"http://127.0.0.1:{free_port()}"
    fallback = edge.cli("keys", "--admin-key", plain, "--url", nobody, "list")
    assert fallback.returncode == 0, fallback.stderr
    assert "using the key store" in fallback.stderr


BURST = 50


def burst(edge: Edge, key: str) -> list[chat_pb2.Usage | None]:
    """50 requests at once, half through Envoy (HTTP), half to the second replica (gRPC): the
    usage of each served one, None for each refused with 429 / RESOURCE_EXHAUSTED."""

    async def run() -> list[chat_pb2.Usage | None]:
        async with (
            httpx.AsyncClient(timeout=30) as http,
            grpc.aio.insecure_channel(edge.replica.address) as channel,
        ):
            stub = gateway_pb2_grpc.GatewayServiceStub(channel)

            async def over_http() -> chat_pb2.Usage | None:
                reply = await http.post(
                    f"{edge.mesh.http_url}/v1/chat/completions",
                    json={"model": "hi-sim", "messages": HELLO, "max_tokens": 8},
                    headers=bearer(key),
                )
                if reply.status_code == 429:
                    return None
                assert reply.status_code == 200, reply.text
                usage = reply.json()["usage"]
                return chat_pb2.Usage(
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"],
                    total_tokens=usage["total_tokens"],
                )

            async def over_grpc() -> chat_pb2.Usage | None:
                try:
                    reply = await stub.Chat(
                        gateway_pb2.ChatRequest(
                            model="hi-sim",
                            messages=GRPC_HELLO,
                            sampling=chat_pb2.SamplingParams(max_tokens=8),
                        ),
                        metadata=(("authorization", f"Bearer {key}"),),
                        timeout=30,
                    )
                except grpc.aio.AioRpcError as error:
                    assert error.code() is grpc.StatusCode.RESOURCE_EXHAUSTED, error.details()
                    return None
                return reply.usage

            calls = [over_http() if i % 2 else over_grpc() for i in range(BURST)]
            return list(await asyncio.gather(*calls))

    return asyncio.run(run())


def test_a_burst_overshoots_a_limit_by_at_most_one_reservation(edge: Edge) -> None:
    """The sim answers 3 prompt + 8 completion tokens; the gateway reserves an upper bound (the
    message's bytes + template allowance + max_tokens, at sim-a's prices) at admission and
    refunds the rest on settle. Whatever the interleaving of admissions and settles, what was
    served stays within the limit plus one reservation, and no request is refused early."""
    settings = load_settings(str(edge.mesh.config_path))
    reserved = Reserver.from_settings(settings).reserve("hi-sim", GRPC_HELLO, 8)
    prefix = edge.mesh.config["gateway"]["quota"]["redis_key_prefix"]

    def cost(usage: chat_pb2.Usage) -> float:
        # sim-a: $1 / $2 per million prompt / completion tokens.
        return (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6

    cases = (
        ("--tpm", reserved.tokens * 11 // 2, reserved.tokens, lambda u: u.total_tokens),
        ("--daily-usd", reserved.cost_usd * 4.5, reserved.cost_usd, cost),
    )
    for flag, limit, one, measure in cases:
        key_id, key = edge.create_key(flag, repr(limit))
        key_ready(edge, key)
        served = [usage for usage in burst(edge, key) if usage is not None]
        assert len(served) < BURST, flag
        assert len(served) >= math.ceil(limit / one), (flag, len(served))
        total = sum(measure(usage) for usage in served)
        assert total <= limit + one, (flag, total, limit, one)
        if flag == "--tpm":
            # Every reservation was replaced by the tokens actually used.
            charged = functools.partial(tokens_charged, f"{prefix}{{{key_id}}}:tok:*", total)
            poll(charged, 10, "the refunds")


def tokens_charged(pattern: str, expected: float) -> bool | None:
    """For poll: True once the key's minute token counters in Redis add up to expected."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        keys = list(client.scan_iter(match=pattern))
        return sum(int(client.get(k) or 0) for k in keys) == expected or None
    finally:
        client.close()


def test_health_and_reflection_are_not_public_with_auth_on(edge: Edge) -> None:
    with grpc.insecure_channel(edge.mesh.envoy_grpc) as channel:
        with pytest.raises(grpc.RpcError) as health:
            health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert health.value.code() is grpc.StatusCode.UNIMPLEMENTED
        reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
        with pytest.raises(grpc.RpcError) as listed:
            list(
                reflection.ServerReflectionInfo(
                    iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10
                )
            )
        assert listed.value.code() is grpc.StatusCode.UNIMPLEMENTED
    # The gateway's own port (the health checks of compose, systemd, the launcher) still answers.
    with grpc.insecure_channel(edge.mesh.address("gateway")) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(
            health_pb2.HealthCheckRequest(), timeout=10
        )
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
