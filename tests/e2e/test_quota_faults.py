"""Quota slots survive a Redis that answers too late and then restarts, through the whole mesh
(Envoy, gateway with auth on and Redis-backed counters reached through a TCP proxy).

The proxy forwards the gateway's commands to the real Redis but holds the replies: Redis admits
the requests while the gateway times out (and, failing closed, answers 503). The gateway voids
those admissions; the proxy then drops every connection, as a Redis restart would. Afterwards no
in-flight slot is held, and the key's full concurrency is available again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import httpx
import orjson
import pytest
import redis

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from support.mesh import Mesh, mesh_config, running_mesh
from support.polling import poll
from support.procs import REPO
from support.tcp_proxy import TcpProxy

SECRET_ENV = "HI_E2E_QUOTA_SECRET"
HELLO = [{"role": "user", "content": "hello there"}]
SLOTS = 5


@dataclass
class Faulty:
    mesh: Mesh
    proxy: TcpProxy
    prefix: str
    key_id: str
    key: str

    @property
    def in_flight_key(self) -> str:
        return f"{self.prefix}{{{self.key_id}}}:inflight"


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Faulty]:
    tmp = tmp_path_factory.mktemp("quota-faults")
    prefix = f"hi-e2e:{uuid.uuid4().hex[:10]}:"
    proxy = TcpProxy("127.0.0.1", 6379)
    proxy.start()
    config = mesh_config(tmp)
    config["gateway"]["auth"] = {"enabled": True, "secret_env": SECRET_ENV}
    config["gateway"]["quota"] = {
        "redis_url": f"redis://127.0.0.1:{proxy.port}/0",
        "redis_key_prefix": prefix,
        "failure_mode": "closed",
        # The first retry of a void waits 2 s, so the test can see the late admissions.
        "settle_backoff_s": 2.0,
        "settle_attempts": 10,
    }
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    os.environ[SECRET_ENV] = secret
    try:
        with running_mesh(tmp, config) as mesh:
            created = subprocess.run(
                [
                    *(sys.executable, "-m", "hybridinference.cli"),
                    *("--config", str(mesh.config_path), "keys", "create", "faults", "--json"),
                    *("--max-concurrent", str(SLOTS)),
                ],
                cwd=REPO,
                env={**os.environ, SECRET_ENV: secret},
                capture_output=True,
                text=True,
                timeout=60,
            )
            assert created.returncode == 0, created.stderr
            made = orjson.loads(created.stdout)
            yield Faulty(mesh, proxy, prefix, str(made["id"]), str(made["key"]))
    finally:
        os.environ.pop(SECRET_ENV, None)
        proxy.close()
        client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
        keys = list(client.scan_iter(match=f"{prefix}*"))
        if keys:
            client.delete(*keys)
        client.close()


def statuses(faulty: Faulty, count: int) -> list[int]:
    """``count`` chat requests at once through Envoy; their HTTP statuses."""

    async def run() -> list[int]:
        async with httpx.AsyncClient(timeout=30) as http:
            replies = await asyncio.gather(
                *(
                    http.post(
                        f"{faulty.mesh.http_url}/v1/chat/completions",
                        json={"model": "hi-sim", "messages": HELLO, "max_tokens": 4},
                        headers={"authorization": f"Bearer {faulty.key}"},
                    )
                    for _ in range(count)
                )
            )
        return [reply.status_code for reply in replies]

    return asyncio.run(run())


def slots_held(faulty: Faulty) -> int:
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    try:
        return int(client.zcard(faulty.in_flight_key))
    finally:
        client.close()


def test_a_redis_stall_and_restart_leak_no_slot(faulty: Faulty) -> None:
    # The key works, and the gateway holds SLOTS pooled connections to Redis (through the
    # proxy) — a new connection's handshake would stall before any command is sent.
    poll(lambda: statuses(faulty, SLOTS) == [200] * SLOTS or None, 20, "the key")
    # Slots are released by the settle, in the background after each reply.
    poll(lambda: slots_held(faulty) == 0 or None, 10, "the first requests' slots released")

    faulty.proxy.stall_replies()
    # Failing closed: 503 for each; Redis admitted them all the same — those whose command left
    # the gateway before its timeout (on a loaded box not every one does; each that did holds a
    # slot Redis will only give back through the gateway's void).
    assert statuses(faulty, SLOTS) == [503] * SLOTS
    poll(lambda: slots_held(faulty) >= 1 or None, 10, "Redis to admit a stalled request")
    assert slots_held(faulty) <= SLOTS
    faulty.proxy.cut()
    faulty.proxy.resume()
    faulty.proxy.restore()
    poll(lambda: slots_held(faulty) == 0 or None, 30, "the voids to free every slot")

    # All SLOTS are usable again: SLOTS streams hold them, one more is refused.
    metadata = (("authorization", f"Bearer {faulty.key}"),)
    with grpc.insecure_channel(faulty.mesh.envoy_grpc) as channel:
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        request = gateway_pb2.ChatStreamRequest(
            model="hi-slow", messages=[chat_pb2.ChatMessage(role="user", content="hi")]
        )
        streams = [stub.ChatStream(request, metadata=metadata) for _ in range(SLOTS)]
        for stream in streams:
            next(stream)  # in flight
        assert statuses(faulty, 1) == [429]
        for stream in streams:
            stream.cancel()
    poll(lambda: slots_held(faulty) == 0 or None, 10, "the streams' slots")
