"""The console's files: what the gateway serves, and nothing else."""

from __future__ import annotations

from pathlib import Path

from hybridinference.gateway.console import assets


def test_the_package_ships_the_page_and_its_vendored_chart_library() -> None:
    table = assets.load()
    assert table[""] == table["index.html"]
    assert table["index.html"].content_type.startswith("text/html")
    assert table["app.js"].content_type.startswith("text/javascript")
    assert table["vendor/uplot/uPlot.iife.min.js"].data.startswith(
        b"/*! https://github.com/leeoniya/uPlot"
    )
    # Everything the page loads is served from the package (no CDN).
    index = table["index.html"].data.decode()
    for src in ("/console/vendor/uplot/uPlot.iife.min.js", "/console/app.js", "/console/app.css"):
        assert src in index and src.removeprefix("/console/") in table
    assert "http" not in index.replace("http-equiv", "")


def test_only_known_files_are_served(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("<p>hi</p>")
    (tmp_path / "notes.txt").write_text("not a web file")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "x.js").write_text("1")
    table = assets.load(tmp_path)
    assert sorted(table) == ["page.html", "sub/x.js"]
    assert "../page.html" not in table and "/etc/passwd" not in table
