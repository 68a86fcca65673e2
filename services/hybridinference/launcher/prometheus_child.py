"""The Prometheus ``make up`` starts beside the mesh, when the binary is installed.

It is an extra, not part of the mesh: missing or failing, it is reported and the mesh runs on;
it dying later does not stop the mesh. Its config is rendered for the ports in use
(hybridinference/render/prometheus_config.py) with the repository's rule files.
"""

from __future__ import annotations

import asyncio
import shutil
import sys
import time
from pathlib import Path

import yaml

from hybridinference.common.settings import MeshSettings, dial_address
from hybridinference.launcher import children
from hybridinference.launcher.children import Child
from hybridinference.launcher.plan import ChildSpec
from hybridinference.render.prometheus_config import REPO, render

READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


def say(message: str) -> None:
    print(f"launcher: {message}", file=sys.stderr, flush=True)


def rule_files(settings: MeshSettings) -> list[str]:
    rules_dir = Path(settings.prometheus.rules_dir)
    if not rules_dir.is_absolute():
        rules_dir = REPO / rules_dir
    return [str(path) for path in sorted(rules_dir.glob("*.yml"))]


def url(settings: MeshSettings) -> str:
    return f"http://{dial_address(settings.prometheus.host, settings.prometheus.port)}"


def spec(settings: MeshSettings, binary: str, var_dir: Path) -> ChildSpec:
    config = var_dir / "run" / "prometheus.yml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump(render(settings, rule_files(settings)), sort_keys=False))
    prometheus = settings.prometheus
    argv = [
        binary,
        f"--config.file={config}",
        f"--storage.tsdb.path={var_dir / 'prometheus'}",
        f"--web.listen-address={prometheus.host}:{prometheus.port}",
        # Its info lines (TSDB compactions, ...) would drown the mesh's output.
        "--log.level=warn",
    ]
    return ChildSpec("prometheus", argv, None, STOP_TIMEOUT_S, stage=4)


async def start(
    settings: MeshSettings, var_dir: Path, log_dir: Path, cwd: Path, width: int
) -> Child | None:
    """Starts Prometheus and waits until it is ready; None (with a note) when it cannot run."""
    binary = shutil.which(settings.prometheus.binary)
    if binary is None:
        say(
            f"{settings.prometheus.binary} not found: not starting Prometheus "
            "(apt-get install prometheus)"
        )
        return None
    write = children.prefixer("prometheus", width, sys.stdout)
    child = await children.start(
        spec(settings, binary, var_dir), children.child_env(None), log_dir, write, cwd
    )
    deadline = time.monotonic() + READY_TIMEOUT_S
    host = settings.prometheus.host if settings.prometheus.host != "0.0.0.0" else "127.0.0.1"
    while await children.http_status(host, settings.prometheus.port, "/-/ready") != 200:
        if not child.running or time.monotonic() > deadline:
            say(f"Prometheus did not start (see {child.log_path}); the mesh runs without it")
            await child.stop()
            return None
        await asyncio.sleep(0.1)
    return child
