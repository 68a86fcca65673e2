"""The compose mesh test runs only under ``make test-compose`` (HI_COMPOSE=1).

It builds images and starts containers (minutes, root, Podman, docker-compose, debootstrap),
so the default suite does not collect it. Under ``make test-compose`` a missing tool is an
error, never a skip.
"""

from __future__ import annotations

import os
import shutil
import signal
from types import FrameType

if os.environ.get("HI_COMPOSE") == "1":
    missing = [
        tool for tool in ("podman", "docker-compose", "debootstrap") if not shutil.which(tool)
    ]
    if missing:
        raise RuntimeError(
            f"make test-compose needs {', '.join(missing)}: "
            "apt-get install podman docker-compose debootstrap"
        )

    def _interrupt(signum: int, frame: FrameType | None) -> None:
        # A CI timeout's SIGTERM becomes an interrupt, so the fixture still removes everything.
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _interrupt)
else:
    collect_ignore_glob = ["test_*.py"]
