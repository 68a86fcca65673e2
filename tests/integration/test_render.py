"""One command renders every derived file; --check names each that drifted."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from hybridinference.render import __main__ as render_command
from hybridinference.render import prometheus_config
from support.procs import REPO


def test_the_committed_derived_files_are_what_the_sources_render() -> None:
    # All groups, the generated protos included (into a scratch directory).
    result = subprocess.run(
        [sys.executable, "-m", "hybridinference.render", "--check"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr


def test_check_names_a_drifted_file_and_render_rewrites_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stale = tmp_path / "prometheus.yml"
    stale.write_text("# edited by hand\n")
    monkeypatch.setattr(prometheus_config, "COMMITTED", stale)
    monkeypatch.setattr(render_command, "REPO", tmp_path)
    assert render_command.render(["prometheus"], check=True) == ["prometheus.yml"]
    assert render_command.render(["prometheus"], check=False) == []
    assert render_command.render(["prometheus"], check=True) == []
    assert stale.read_text().startswith("# Prometheus scraping the HybridInference mesh")


def test_an_unknown_group_is_refused() -> None:
    with pytest.raises(SystemExit) as exit_info:
        render_command.main(["--check", "nginx"])
    assert exit_info.value.code == 2
