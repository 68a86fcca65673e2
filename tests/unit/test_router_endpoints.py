"""The endpoint table built from the mesh settings: one stub per worker, models in order."""

from __future__ import annotations

from typing import Any, cast

from hybridinference.common.settings import load_settings
from hybridinference.router.endpoints import EndpointTable, ProviderStub
from support.router_fakes import FakeStub


def test_table_from_settings_connects_once_per_worker() -> None:
    settings = load_settings(
        providers=[
            {
                "name": "w1",
                "port": 7001,
                "endpoints": [
                    {
                        "id": "a",
                        "model": "up-a",
                        "price_prompt_per_1m": 1.5,
                        "price_completion_per_1m": 3.0,
                    },
                    {"id": "b", "model": "up-b"},
                ],
            },
            {
                "name": "w2",
                "host": "10.0.0.2",
                "port": 7002,
                "endpoints": [{"id": "c", "model": "up-c"}],
            },
        ],
        models=[
            {"name": "m", "endpoints": ["c", "a"], "owned_by": "acme"},
            {"name": "n", "endpoints": ["b"]},
        ],
    )
    connected: list[str] = []

    def connect(address: str, tls: object = None) -> tuple[Any, ProviderStub]:
        connected.append(address)
        return None, cast(ProviderStub, FakeStub())

    table = EndpointTable.from_settings(settings, connect)

    assert connected == ["127.0.0.1:7001", "10.0.0.2:7002"]
    a, b, c = (table.endpoints[i] for i in "abc")
    assert a.worker is b.worker and a.worker.stub is b.worker.stub
    assert (a.provider, a.worker_address, a.model) == ("sim", "127.0.0.1:7001", "up-a")
    assert (a.price_prompt_per_1m, a.price_completion_per_1m) == (1.5, 3.0)
    assert c.worker_address == "10.0.0.2:7002"
    m = table.models["m"]
    assert [e.id for e in m.endpoints] == ["c", "a"]
    assert (m.strategy, m.owned_by, m.providers) == ("round_robin", "acme", ["sim"])
    assert [e.id for e in table.models["n"].endpoints] == ["b"]
