"""The console's files, read once from the package's static/ folder and served from memory.

Only files that exist under static/ are served (the path is looked up in a table built at load,
never joined onto the file system), so `..` or absolute paths cannot reach anything else.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

STATIC = Path(__file__).parent / "static"
INDEX = "index.html"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}


@dataclass(frozen=True)
class Asset:
    content_type: str
    data: bytes


def load(root: Path = STATIC) -> dict[str, Asset]:
    """Every servable file under ``root`` by its path relative to it ("" is the index page)."""
    table: dict[str, Asset] = {}
    for path in sorted(root.rglob("*")):
        content_type = _TYPES.get(path.suffix)
        if content_type is None or not path.is_file():
            continue
        table[path.relative_to(root).as_posix()] = Asset(content_type, path.read_bytes())
    if INDEX in table:
        table[""] = table[INDEX]
    return table
