from __future__ import annotations

from collections.abc import Iterator

import pytest

from support.mesh import Mesh, running_mesh


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with running_mesh(tmp_path_factory.mktemp("fuzz")) as running:
        yield running
