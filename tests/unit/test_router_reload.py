"""Config reload: a new table and strategies are swapped in, live state survives, channels of
dropped workers close, and an invalid config is rejected while the old one keeps serving."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from hybridinference.common.settings import ConfigError, MeshSettings
from hybridinference.router.endpoints import EndpointTable
from hybridinference.router.health import HealthMonitor
from hybridinference.router.relay import Relay
from hybridinference.router.reload import ConfigReloader, build_strategies
from support.router_fakes import FakeStub
from tests.unit.test_router_relay import collect, request


class FakeChannel:
    def __init__(self, address: str) -> None:
        self.address = address
        self.closed_with: float | None = None

    async def close(self, grace: float | None = None) -> None:
        self.closed_with = grace

    def get_state(self, try_to_connect: bool = False) -> Any:
        import grpc

        return grpc.ChannelConnectivity.READY


class Connector:
    def __init__(self) -> None:
        self.channels: dict[str, FakeChannel] = {}

    def __call__(self, address: str, tls: object = None) -> tuple[Any, Any]:
        channel = self.channels[address] = FakeChannel(address)
        return channel, FakeStub()


def config(workers: dict[str, tuple[int, list[str]]], models: dict[str, Any]) -> MeshSettings:
    return MeshSettings.model_validate(
        {
            "providers": [
                {"name": name, "port": port, "endpoints": [{"id": i, "model": "up"} for i in ids]}
                for name, (port, ids) in workers.items()
            ],
            "models": [{"name": name, **fields} for name, fields in models.items()],
        }
    )


def router(settings: MeshSettings, connect: Connector) -> tuple[Relay, HealthMonitor]:
    table = EndpointTable.from_settings(settings, connect)
    health = HealthMonitor(table, 3600, 1.0)
    return Relay(table, health, build_strategies(table)), health


async def test_reload_swaps_table_keeps_live_state_and_drains_dropped_channels() -> None:
    connect = Connector()
    old = config(
        {"w1": (7001, ["a"]), "w2": (7002, ["b"])},
        {"m": {"endpoints": ["a", "b"]}},
    )
    relay, health = router(old, connect)
    await collect(relay, request())
    a = relay.table.endpoints["a"]
    assert a.requests_total == 1
    new = config(
        {"w1": (7001, ["a", "c"])},
        {
            "m": {"endpoints": ["a", "c"], "strategy": "least_load"},
            "n": {"endpoints": ["c"]},
        },
    )
    reloader = ConfigReloader(relay, health, 0, path="unused", connect=connect, load=lambda _: new)

    assert reloader.reload()

    table = relay.table
    assert set(table.models) == {"m", "n"} and table.models["m"].strategy == "least_load"
    # Same worker at the same address: same channel, and "a" keeps its counters and breaker.
    assert table.endpoints["a"] is a and a.requests_total == 1
    assert table.workers["w1"].channel is connect.channels["127.0.0.1:7001"]
    assert (await collect(relay, request("n")))[0].selection.endpoint == "c"
    assert "w2" not in table.workers
    await reloader.stop()


async def test_dropped_channel_is_closed_with_a_grace_period() -> None:
    connect = Connector()
    relay, health = router(
        config({"w1": (7001, ["a"]), "w2": (7002, ["b"])}, {"m": {"endpoints": ["a"]}}), connect
    )
    new = config({"w1": (7001, ["a"])}, {"m": {"endpoints": ["a"]}})
    reloader = ConfigReloader(relay, health, 0, path="unused", connect=connect, load=lambda _: new)
    assert reloader.reload()
    for task in list(reloader._draining):
        await task
    assert connect.channels["127.0.0.1:7002"].closed_with == pytest.approx(600.0)
    assert connect.channels["127.0.0.1:7001"].closed_with is None


async def test_invalid_config_is_rejected_and_the_old_one_keeps_serving(
    caplog: pytest.LogCaptureFixture,
) -> None:
    connect = Connector()
    relay, health = router(config({"w1": (7001, ["a"])}, {"m": {"endpoints": ["a"]}}), connect)
    before = relay.table

    def broken(_: str | None) -> MeshSettings:
        raise ConfigError("invalid configuration:\n  models.0.strategy: Input should be ...")

    reloader = ConfigReloader(relay, health, 0, path="mesh.yaml", connect=connect, load=broken)
    with caplog.at_level(logging.ERROR):
        assert not reloader.reload()
    assert relay.table is before
    assert reloader.rejected_total == 1
    assert "config reload rejected; keeping the running config" in caplog.text
    assert (await collect(relay, request()))[-1].HasField("completion")
