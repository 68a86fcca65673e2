"""Active probes and passive outcomes mark endpoints healthy or not."""

from __future__ import annotations

import asyncio

import grpc

from hybridinference.provider.v1 import provider_pb2
from hybridinference.router.health import filter_healthy
from support.router_fakes import make_relay, make_table, rpc_error


async def test_probe_marks_endpoints_from_worker_status() -> None:
    table, stubs = make_table({"w": ["a", "b", "c"]}, {"m": ["a", "b", "c"]})
    _, health = make_relay(table)
    stubs["w"].status = provider_pb2.GetStatusResponse(
        endpoints=[
            provider_pb2.EndpointStatus(endpoint="a", healthy=True),
            provider_pb2.EndpointStatus(endpoint="b", healthy=False, detail="upstream 502"),
        ]
    )
    await health.probe_all()
    a, b, c = (table.endpoints[i] for i in "abc")
    assert (a.healthy, a.health_detail) == (True, "")
    assert (b.healthy, b.health_detail) == (False, "upstream 502")
    assert not c.healthy and "does not host c" in c.health_detail


async def test_failed_probe_marks_every_endpoint_of_the_worker_and_recovers() -> None:
    table, stubs = make_table({"w": ["a", "b"], "v": ["c"]}, {"m": ["a", "b", "c"]})
    _, health = make_relay(table)
    stubs["w"].status = rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused")
    stubs["v"].status = provider_pb2.GetStatusResponse(
        endpoints=[provider_pb2.EndpointStatus(endpoint="c", healthy=True)]
    )
    await health.probe_all()
    assert [e.healthy for e in table.endpoints.values()] == [False, False, True]
    assert table.endpoints["a"].health_detail == "probe failed: UNAVAILABLE: connection refused"

    stubs["w"].status = provider_pb2.GetStatusResponse(
        endpoints=[
            provider_pb2.EndpointStatus(endpoint="a", healthy=True),
            provider_pb2.EndpointStatus(endpoint="b", healthy=True),
        ]
    )
    await health.probe_all()
    assert all(e.healthy and not e.health_detail for e in table.endpoints.values())


def test_connection_failure_marks_worker_down_but_provider_errors_do_not() -> None:
    table, _ = make_table({"w": ["a", "b"]}, {"m": ["a", "b"]})
    _, health = make_relay(table)
    a, b = table.endpoints["a"], table.endpoints["b"]

    health.record_failure(a, rpc_error(grpc.StatusCode.UNAVAILABLE, "sim: injected failure"))
    health.record_failure(a, rpc_error(grpc.StatusCode.INTERNAL, "connection refused"))
    assert a.healthy and b.healthy

    health.record_failure(
        a,
        rpc_error(
            grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses; Connection refused"
        ),
    )
    assert not a.healthy and not b.healthy
    assert b.health_detail.startswith("connection failed: failed to connect")


def test_filter_healthy_falls_back_to_all_when_none_is_healthy() -> None:
    table, _ = make_table({"w": ["a", "b", "c"]}, {"m": ["a", "b", "c"]})
    a, b, c = table.models["m"].endpoints
    b.healthy = False
    assert filter_healthy([a, b, c]) == [a, c]
    a.healthy = c.healthy = False
    assert filter_healthy([a, b, c]) == [a, b, c]


async def test_start_and_stop_run_the_probe_loop() -> None:
    table, stubs = make_table({"w": ["a"]}, {"m": ["a"]})
    _, health = make_relay(table)
    stubs["w"].status = rpc_error(grpc.StatusCode.UNAVAILABLE, "down")
    await health.start()
    # The first round runs immediately; yield to the loop until it has.
    for _ in range(100):
        if not table.endpoints["a"].healthy:
            break
        await asyncio.sleep(0)
    await health.stop()
    assert not table.endpoints["a"].healthy
