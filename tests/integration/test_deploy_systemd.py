"""deploy/systemd: every unit passes `systemd-analyze verify` (strict: no warning at all) and an
offline security review; where that tool does not work, a parse check stands in. The Envoy
unit's render step, run for real, produces the committed envoy.scaleout.yaml.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from support.procs import REPO
from tests.integration.test_envoy_config import validate

SYSTEMD = REPO / "deploy" / "systemd"
MULTIHOST = REPO / "deploy" / "multihost"
PREFIX = "/opt/hybridinference"
VLLM_PREFIX = "/opt/vllm"
UNITS = sorted(p for p in SYSTEMD.iterdir() if p.suffix in {".service", ".target"})
SERVICES = [p for p in UNITS if p.suffix == ".service"]
# Templates are verified as an instance, as they run.
INSTANCES = {
    "hybridinference-gateway@.service": "hybridinference-gateway@50051.service",
    "hybridinference-router@.service": "hybridinference-router@50052.service",
    "hybridinference-provider@.service": "hybridinference-provider@sim.service",
    "vllm@.service": "vllm@0.service",
}
# `systemd-analyze security` exposure (0 safest, 10 worst); vLLM needs the GPU devices.
MAX_EXPOSURE = {"vllm@.service": 4.0}
DEFAULT_MAX_EXPOSURE = 2.0


Unit = dict[str, list[tuple[str, str]]]


def _parse(path: Path) -> Unit:
    """systemd's unit syntax: [Section] headers, Key=Value lines (keys may repeat), # and ;
    comments, a trailing backslash continues a line. Anything else is an error."""
    sections: Unit = {}
    current: list[tuple[str, str]] | None = None
    pending = ""
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = pending + raw.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9]*", key.strip()), (
            f"{path.name}:{number}: not Key=Value: {raw!r}"
        )
        assert current is not None, f"{path.name}:{number}: key outside a section"
        current.append((key.strip(), value.strip()))
    assert not pending, f"{path.name}: ends with a continuation"
    return sections


def _values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in _parse(path).get(section, []) if k == key]


def _systemd_analyze() -> str | None:
    """The tool, if it works here: it must pass a trivial valid unit without a word."""
    tool = shutil.which("systemd-analyze")
    if tool is None:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "hi-probe.service"
        probe.write_text("[Unit]\nDescription=probe\n[Service]\nType=exec\nExecStart=/bin/true\n")
        result = subprocess.run(
            [tool, "verify", "--man=no", "--generators=no", str(probe)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    return tool if result.returncode == 0 and not result.stderr.strip() else None


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The units with their install prefixes pointed at this checkout (whose .venv has the
    same python and envoy), so verify can check every executable exists."""
    root = tmp_path_factory.mktemp("systemd")
    (root / "hi").symlink_to(REPO)
    vllm_bin = root / "vllm" / ".venv" / "bin"
    vllm_bin.mkdir(parents=True)
    (vllm_bin / "python").symlink_to(sys.executable)
    units = root / "units"
    units.mkdir()
    for unit in UNITS:
        text = unit.read_text().replace(PREFIX, str(root / "hi"))
        (units / unit.name).write_text(text.replace(VLLM_PREFIX, str(root / "vllm")))
    return units


def test_every_unit_is_covered() -> None:
    names = {p.name for p in UNITS}
    assert {
        "hybridinference-gateway@.service", "hybridinference-router@.service",
        "hybridinference-logger.service", "hybridinference-provider@.service",
        "hybridinference-envoy.service", "vllm@.service", "hybridinference.target",
    } <= names  # fmt: skip


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, staged: Path) -> None:
    tool = _systemd_analyze()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing or broken in CI (.ci/run installs systemd)")
        pytest.skip("systemd-analyze is not usable here; test_unit_parses covers the syntax")
    name = INSTANCES.get(unit.name, unit.name)
    result = subprocess.run(
        [tool, "verify", "--man=no", "--generators=no", name],
        cwd=staged,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    # verify exits 0 on unknown keys and bad values; any message at all is a failure here.
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_unit_security_exposure_is_low(unit: Path, staged: Path) -> None:
    tool = _systemd_analyze()
    if tool is None:
        if os.environ.get("CI"):
            pytest.fail("systemd-analyze is missing or broken in CI (.ci/run installs systemd)")
        pytest.skip("systemd-analyze is not usable here; test_unit_is_hardened covers the keys")
    limit = MAX_EXPOSURE.get(unit.name, DEFAULT_MAX_EXPOSURE)
    result = subprocess.run(
        [tool, "security", "--offline=true", f"--threshold={limit * 10:.0f}", "--no-pager",
         INSTANCES.get(unit.name, unit.name)],
        cwd=staged,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )  # fmt: skip
    summary = result.stdout.strip().splitlines()[-1] if result.stdout.strip() else result.stderr
    assert result.returncode == 0, summary
    exposure = float(re.search(r"level for \S+: ([0-9.]+)", summary).group(1))  # type: ignore[union-attr]
    assert exposure <= limit, summary


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_parses(unit: Path) -> None:
    """The fallback syntax check (and a check of its own): sections and key=value lines only."""
    sections = _parse(unit)
    assert set(sections) <= {"Unit", "Service", "Install"}
    assert _values(unit, "Unit", "Description")
    assert _values(unit, "Install", "WantedBy")


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_unit_is_hardened_and_restarts(unit: Path) -> None:
    def one(key: str) -> str:
        values = _values(unit, "Service", key)
        assert values, f"{unit.name}: no {key}="
        return values[-1]

    assert one("User") == "hybridinference"
    assert one("NoNewPrivileges") == "yes"
    assert one("ProtectSystem") == "strict"
    assert one("ProtectHome") == "yes"
    assert one("PrivateTmp") == "yes"
    assert one("CapabilityBoundingSet") == ""
    assert one("Restart") == "on-failure"
    assert one("TimeoutStopSec")
    sysusers = (SYSTEMD / "hybridinference.sysusers.conf").read_text()
    assert re.search(r"^u hybridinference ", sysusers, re.MULTILINE)


@pytest.mark.parametrize("unit", SERVICES, ids=lambda p: p.name)
def test_python_units_run_modules_that_exist(unit: Path) -> None:
    for line in _values(unit, "Service", "ExecStart") + _values(unit, "Service", "ExecStartPre"):
        argv = shlex.split(line)
        if argv[0].startswith(PREFIX) and argv[1] == "-m":
            assert importlib.util.find_spec(argv[2]) is not None, (unit.name, argv[2])
            assert "--config" in argv and argv[argv.index("--config") + 1] == (
                "/etc/hybridinference/mesh.yaml"
            )


def test_envoy_unit_renders_the_committed_scaleout_config(tmp_path: Path) -> None:
    """Runs the Envoy unit's render step as written (with the multi-host envoy.env and mesh
    config) and compares with deploy/envoy/envoy.scaleout.yaml, then validates it with Envoy."""
    unit = SYSTEMD / "hybridinference-envoy.service"
    render = next(
        shlex.split(line)
        for line in _values(unit, "Service", "ExecStartPre")
        if "envoy_variants" in line
    )
    env_file = (MULTIHOST / "envoy.env").read_text()
    replicas = re.search(r"^ENVOY_REPLICAS=(.*)$", env_file, re.MULTILINE)
    assert replicas is not None
    argv = [sys.executable, *render[1:]]
    argv = [arg for arg in argv if arg != "$ENVOY_REPLICAS"] + replicas.group(1).split()
    out = tmp_path / "envoy.yaml"
    argv[argv.index("--render") + 1] = str(out)
    argv[argv.index("--config") + 1] = str(MULTIHOST / "mesh.yaml")
    env = {k: v for k, v in os.environ.items() if not k.startswith("HI__") and k != "HI_CONFIG"}
    subprocess.run(argv, cwd=REPO, env=env, check=True, timeout=60)

    def body(text: str) -> str:
        return "\n".join(line for line in text.splitlines() if not line.startswith("#"))

    committed = (REPO / "deploy" / "envoy" / "envoy.scaleout.yaml").read_text()
    assert body(out.read_text()) == body(committed)
    local = out.read_text().replace(
        f"{PREFIX}/deploy/envoy/hybridinference.pb",
        str(REPO / "deploy" / "envoy" / "hybridinference.pb"),
    )
    out.write_text(local)
    result = validate(out)
    assert result.returncode == 0, result.stdout + result.stderr
