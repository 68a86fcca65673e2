"""A throwaway PostgreSQL database per test, created on the local server and dropped after."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def dsn_for(name: str) -> str:
    return f"postgresql://postgres@127.0.0.1:5432/{name}"


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    """Yields the DSN of a fresh, uniquely named database."""
    name = f"hi_logger_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(ADMIN_DSN)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield dsn_for(name)
    finally:
        admin = await asyncpg.connect(ADMIN_DSN)
        try:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            await admin.close()
