"""Page tokens: opaque, round-trip the keyset, bound to their filters."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hybridinference.common.database import split_statements
from hybridinference.logger.pagination import (
    Cursor,
    InvalidPageToken,
    ListFilters,
    decode_token,
    encode_token,
)


def test_token_round_trip() -> None:
    cursor = Cursor(datetime(2025, 6, 1, 12, 0, 0, 123456, tzinfo=UTC), "req-Ω/1")
    filters = ListFilters(model="m", provider="p")
    token = encode_token(cursor, filters)
    assert token.isascii() and "req" not in token
    assert decode_token(token, filters) == cursor


@pytest.mark.parametrize("token", ["", "%%%", "bm90IGpzb24", "WzEsMiwzXQ", "WzIsMSwiYSIsIngiXQ"])
def test_garbage_tokens_are_rejected(token: str) -> None:
    with pytest.raises(InvalidPageToken):
        decode_token(token, ListFilters())


def test_token_bound_to_filters() -> None:
    token = encode_token(Cursor(datetime(2025, 1, 1, tzinfo=UTC), "a"), ListFilters(status="OK"))
    with pytest.raises(InvalidPageToken, match="different filters"):
        decode_token(token, ListFilters())


def test_split_statements() -> None:
    script = "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');\n\nCREATE INDEX i\n  ON a (x);\n-- end\n"
    assert split_statements(script) == [
        "-- c\nCREATE TABLE a (x TEXT DEFAULT ';');",
        "CREATE INDEX i\n  ON a (x);",
    ]
