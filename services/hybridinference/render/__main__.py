"""Renders every committed file that is derived from configuration or contracts, in one command.

    python -m hybridinference.render                 # rewrite them all
    python -m hybridinference.render --check         # fail, naming each, if one drifted (CI)
    python -m hybridinference.render --check envoy   # only some groups (see GROUPS)

Groups: ``envoy`` (deploy/envoy/envoy.{compose,scaleout}.yaml from deploy/envoy/envoy.yaml and
their mesh configs), ``prometheus`` (deploy/prometheus/prometheus.yml for the default settings),
``compose-monitoring`` (deploy/config/prometheus.compose.yml), ``grafana``
(deploy/grafana/dashboards/*.json) and ``protos`` (the generated contracts in
services/hybridinference/<area>/v1 and deploy/envoy/hybridinference.pb, by scripts/gen_protos.sh;
checked by generating into a scratch directory). The launcher renders Envoy and Prometheus for the
ports in use with the same modules; it never writes these files.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hybridinference.common.settings import MeshSettings
from hybridinference.render import (
    compose_monitoring,
    envoy_variants,
    grafana_dashboards,
    prometheus_config,
)

REPO = prometheus_config.REPO
PACKAGE = REPO / "services" / "hybridinference"
DESCRIPTOR = REPO / "deploy" / "envoy" / "hybridinference.pb"


@dataclass(frozen=True)
class Target:
    """One derived text file and how to render it."""

    path: Path
    text: Callable[[], str]


def _prometheus() -> str:
    return prometheus_config.dump(prometheus_config.render(MeshSettings()))


def text_targets(group: str) -> list[Target]:
    if group == "envoy":
        return [
            Target(envoy_variants.ENVOY_DIR / v.filename, v.text) for v in envoy_variants.VARIANTS
        ]
    if group == "prometheus":
        return [Target(prometheus_config.COMMITTED, _prometheus)]
    if group == "compose-monitoring":
        return [Target(compose_monitoring.TARGET, compose_monitoring.text)]
    if group == "grafana":
        return [
            Target(
                grafana_dashboards.OUT / f"{name}.json", partial(grafana_dashboards.render, board)
            )
            for name, board in grafana_dashboards.DASHBOARDS.items()
        ]
    raise ValueError(group)


GROUPS = ("envoy", "prometheus", "compose-monitoring", "grafana", "protos")


def generate_protos(out: Path, descriptor: Path) -> None:
    """scripts/gen_protos.sh into ``out`` (a services/ tree) and ``descriptor``."""
    # protoc finds the mypy plugins (protoc-gen-mypy*) next to this interpreter.
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        "PYTHON": sys.executable,
        "OUT": str(out),
        "DESCRIPTOR": str(descriptor),
    }
    # Quiet unless it fails (the mypy plugin reports every file it writes).
    result = subprocess.run(
        [str(REPO / "scripts" / "gen_protos.sh")], cwd=REPO, env=env, capture_output=True, text=True
    )
    if result.returncode != 0:
        sys.stderr.write(result.stdout + result.stderr)
        raise SystemExit(f"render: scripts/gen_protos.sh failed ({result.returncode})")


def _generated_files(root: Path) -> dict[str, Path]:
    """The generated modules under root/hybridinference/*/v1, by path relative to root."""
    return {
        str(path.relative_to(root)): path
        for path in sorted(root.glob("hybridinference/*/v1/*"))
        if path.is_file()
    }


def protos_drift() -> list[str]:
    with tempfile.TemporaryDirectory(prefix="hi-render-") as scratch:
        out = Path(scratch) / "services"
        descriptor = Path(scratch) / "hybridinference.pb"
        generate_protos(out, descriptor)
        fresh = _generated_files(out)
        committed = _generated_files(REPO / "services")
        drifted = [
            f"services/{name}"
            for name in sorted(fresh.keys() | committed.keys())
            if name not in fresh
            or name not in committed
            or not filecmp.cmp(fresh[name], committed[name], shallow=False)
        ]
        if not filecmp.cmp(descriptor, DESCRIPTOR, shallow=False):
            drifted.append(str(DESCRIPTOR.relative_to(REPO)))
    return drifted


def render(groups: Sequence[str], check: bool) -> list[str]:
    """Writes (or, with ``check``, compares) the groups' files; returns those that drifted."""
    drifted: list[str] = []
    for group in groups:
        if group == "protos":
            if check:
                drifted += protos_drift()
            else:
                generate_protos(REPO / "services", DESCRIPTOR)
            continue
        for target in text_targets(group):
            text = target.text()
            if not check:
                target.path.parent.mkdir(parents=True, exist_ok=True)
                target.path.write_text(text)
            elif not target.path.is_file() or target.path.read_text() != text:
                drifted.append(str(target.path.relative_to(REPO)))
    return drifted


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m hybridinference.render",
        description="Render the files derived from configuration and contracts.",
    )
    parser.add_argument("--check", action="store_true", help="fail if a committed file drifted")
    parser.add_argument("groups", nargs="*", metavar="GROUP", help=f"any of {', '.join(GROUPS)}")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.groups) - set(GROUPS))
    if unknown:
        parser.error(f"unknown group(s) {', '.join(unknown)}; choose from {', '.join(GROUPS)}")
    groups = args.groups or list(GROUPS)
    drifted = render(groups, args.check)
    if drifted:
        print(
            "derived files differ from their sources:\n  "
            + "\n  ".join(drifted)
            + "\nrun `python -m hybridinference.render` (make render) and commit",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
