"""Admission control end to end: with the hybrid policy, a request no endpoint can serve within
the model's TTFT SLO is refused by the router (RESOURCE_EXHAUSTED with RetryInfo), and an OpenAI
client gets HTTP 429 with Retry-After through Envoy and the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import openai
import pytest

from support.mesh import Mesh, mesh_config, running_mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp: Path = tmp_path_factory.mktemp("admission")
    config = mesh_config(tmp)
    config["providers"][0]["endpoints"].append(
        {
            "id": "sim-gpu",
            "model": "hi-sim-gpu",
            "locality": "local",
            # One generation at a time, 300 ms to its first token.
            "sim": {"ttft_ms": 300, "itl_ms": 1, "output_tokens": 2, "max_concurrency": 1},
        }
    )
    config["models"].append(
        {
            "name": "hi-hybrid",
            "endpoints": ["sim-gpu"],
            "strategy": "hybrid",
            "ttft_slo_ms": 500,
            "hybrid": {"local_queue_slo_fraction": 1.0, "admission_wait_ms": 0},
        }
    )
    with running_mesh(tmp, config) as running:
        yield running


def test_overload_no_endpoint_can_meet_is_a_429_with_retry_after(mesh: Mesh) -> None:
    client = openai.OpenAI(base_url=f"{mesh.http_url}/v1", api_key="unused", max_retries=0)

    def ask() -> str:
        try:
            client.chat.completions.create(
                model="hi-hybrid", messages=[{"role": "user", "content": "hi"}]
            )
        except openai.RateLimitError as error:
            return f"429 retry-after={error.response.headers.get('retry-after')}"
        return "200"

    # Measured first: ~300 ms to a first token with the slot free, the slot held as long.
    assert [ask() for _ in range(3)] == ["200"] * 3
    with ThreadPoolExecutor(3) as pool:
        outcomes = list(pool.map(lambda _: ask(), range(3)))
    # One gets the only slot; with it taken the predicted TTFT (~300 ms plus a ~300 ms hold)
    # misses the 500 ms SLO, so the others are refused at once, told when to come back.
    assert "200" in outcomes
    refused = [o for o in outcomes if o != "200"]
    assert refused and all(o == "429 retry-after=1" for o in refused), outcomes
