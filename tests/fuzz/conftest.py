from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.mesh import Mesh, mesh_config, running_mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    tmp = tmp_path_factory.mktemp("fuzz")
    config = mesh_config(tmp)
    # hi-sim honours everything, so rich requests reach the router and the sim; hi-plain (same
    # fast endpoint) declares nothing, so the same requests there meet the refusals.
    config["models"][0]["capabilities"] = {
        "tools": True,
        "structured_output": True,
        "json_mode": True,
        "reasoning": True,
        "logprobs": True,
        "multiple_choices": True,
        "input_modalities": ["text", "image", "audio", "file"],
    }
    config["models"].append({"name": "hi-plain", "endpoints": ["sim-a"]})
    with running_mesh(tmp, config) as running:
        yield running
