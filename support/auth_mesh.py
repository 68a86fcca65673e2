"""A mesh with auth on, and keys made the way an operator makes them (the CLI)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from support.mesh import Mesh, mesh_config, running_mesh
from support.procs import REPO


@dataclass
class AuthMesh:
    mesh: Mesh
    env: dict[str, str]

    def create_key(self, *args: str) -> tuple[str, str]:
        """(id, key) of a new key; ``args`` are `keys create` options, e.g. "--admin"."""
        cli = [sys.executable, "-m", "hybridinference.cli", "--config", str(self.mesh.config_path)]
        done = subprocess.run(
            [*cli, "keys", "create", f"adm-{uuid.uuid4().hex[:6]}", "--json", *args],
            cwd=REPO,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        created = orjson.loads(done.stdout)
        return str(created["id"]), str(created["key"])


@contextmanager
def running_auth_mesh(
    tmp: Path, secret_env: str, config: dict[str, Any] | None = None
) -> Iterator[AuthMesh]:
    """``config`` (default: mesh_config) with auth on; a fresh secret in ``secret_env``."""
    config = config or mesh_config(tmp)
    config["gateway"]["auth"] = {"enabled": True, "secret_env": secret_env}
    secret = uuid.uuid4().hex + uuid.uuid4().hex
    env = {**os.environ, secret_env: secret}
    os.environ[secret_env] = secret
    try:
        with running_mesh(tmp, config) as mesh:
            yield AuthMesh(mesh, env)
    finally:
        os.environ.pop(secret_env, None)
