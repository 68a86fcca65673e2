"""The monitoring artefacts: Prometheus config and rules (promtool), rule unit tests covering every
alert, Alertmanager config and routing (amtool), and the committed prometheus.yml in sync."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from hybridinference.common.settings import MeshSettings
from hybridinference.render.prometheus_config import COMMITTED, dump, render

REPO = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = REPO / "deploy" / "prometheus"
RULES = PROMETHEUS_DIR / "rules" / "hybridinference.yml"
RULE_TESTS = PROMETHEUS_DIR / "tests" / "hybridinference_test.yml"
ALERTMANAGER = REPO / "deploy" / "alertmanager" / "alertmanager.yml"

promtool = shutil.which("promtool")
amtool = shutil.which("amtool")
# CI installs both (see .ci/run); a developer machine without them skips these checks only.
needs_promtool = pytest.mark.skipif(promtool is None, reason="promtool not installed")
needs_amtool = pytest.mark.skipif(amtool is None, reason="amtool not installed")


def _run(*argv: str) -> str:
    result = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_committed_prometheus_config_is_the_default_rendering(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("HI_CONFIG", raising=False)
    assert COMMITTED.read_text() == dump(render(MeshSettings())), (
        "run: python -m hybridinference.render"
    )


def test_every_alert_has_a_rule_unit_test() -> None:
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    tests = yaml.safe_load(RULE_TESTS.read_text())["tests"]
    tested = {
        case["alertname"]
        for test in tests
        for case in test.get("alert_rule_test", [])
        if case.get("exp_alerts")
    }
    assert alerts == tested


@needs_promtool
def test_promtool_checks_config_and_rules() -> None:
    assert "SUCCESS" in _run(
        str(promtool), "check", "config", str(PROMETHEUS_DIR / "prometheus.yml")
    )


@needs_promtool
def test_promtool_rule_unit_tests_pass() -> None:
    assert "SUCCESS" in _run(str(promtool), "test", "rules", str(RULE_TESTS))


@needs_amtool
def test_amtool_checks_alertmanager_config() -> None:
    assert "SUCCESS" in _run(str(amtool), "check-config", str(ALERTMANAGER))


@needs_amtool
@pytest.mark.parametrize(
    ("labels", "receiver"),
    [
        (["severity=critical", "alertname=HIServiceDown"], "pager"),
        (["severity=critical", "alertname=HITTFTBudgetBurnFast"], "pager"),
        (["severity=warning", "alertname=HIBreakerOpen"], "team"),
        (["severity=warning", "alertname=HITTFTBudgetBurnSlow"], "team"),
    ],
)
def test_alert_routing(labels: list[str], receiver: str) -> None:
    out = _run(
        str(amtool),
        "config",
        "routes",
        "test",
        f"--config.file={ALERTMANAGER}",
        f"--verify.receivers={receiver}",
        *labels,
    )
    assert out.splitlines()[0] == receiver
