"""Versioned SQL migrations: files ``NNNN_name.sql`` under ``logger/migrations/<dialect>``.

Each store applies the pending ones at start, each in a transaction with its ``schema_version``
row, so running them again is a no-op and a failure leaves the schema as it was.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from hybridinference.logger.store.base import MigrationError

MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str


def load_migrations(dialect: str, directory: Path | None = None) -> list[Migration]:
    """The dialect's migrations in version order; a misnamed or duplicate file is an error."""
    folder = (directory or MIGRATIONS_DIR) / dialect
    if not folder.is_dir():
        raise MigrationError(f"migration directory not found: {folder}")
    found: dict[int, Migration] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix != ".sql":
            continue
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"migration file name must look like 0001_name.sql: {path}")
        version = int(match.group(1))
        if version in found:
            raise MigrationError(f"two migrations with version {version} in {folder}")
        found[version] = Migration(version, path.stem, path.read_text())
    if not found:
        raise MigrationError(f"no migrations in {folder}")
    return [found[v] for v in sorted(found)]


def split_statements(script: str) -> list[str]:
    """Splits an SQLite script into statements (sqlite3's cursor runs one at a time).

    ``executescript`` is not used because it commits any open transaction first, which would
    break the one-transaction-per-migration guarantee.
    """
    statements: list[str] = []
    buffer = ""
    for line in script.splitlines(keepends=True):
        buffer += line
        if sqlite3.complete_statement(buffer):
            statements.append(buffer.strip())
            buffer = ""
    rest = "\n".join(
        line for line in buffer.splitlines() if line.strip() and not line.strip().startswith("--")
    )
    if rest:
        raise MigrationError(f"incomplete SQL statement at the end of a migration: {rest[:80]!r}")
    return statements
