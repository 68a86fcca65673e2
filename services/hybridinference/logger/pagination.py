"""Opaque page tokens for newest-first keyset pagination over (started_at, request_id).

A token carries the last row's key and a fingerprint of the filters it was issued for, so reusing
it with other filters is reported instead of silently returning a wrong page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime

import orjson

from hybridinference.logger.rows import from_micros, to_micros

_VERSION = 1


class InvalidPageToken(ValueError):
    """The token is malformed or was issued for different filters."""


@dataclass(frozen=True)
class ListFilters:
    """Exact-match filters (an empty string means "any") and a [start, end) time range."""

    model: str = ""
    provider: str = ""
    status: str = ""
    api_key_id: str = ""
    client_request_id: str = ""
    start_time: datetime | None = None
    end_time: datetime | None = None
    endpoint: str = ""
    # Only records whose status is not OK.
    errors_only: bool = False

    def fingerprint(self) -> str:
        times = [to_micros(t) if t else None for t in (self.start_time, self.end_time)]
        digest = hashlib.blake2s(
            orjson.dumps(
                [
                    self.model,
                    self.provider,
                    self.status,
                    self.api_key_id,
                    *times,
                    self.endpoint,
                    self.errors_only,
                    # Last, so tokens issued without it stay valid after an upgrade.
                    *([self.client_request_id] if self.client_request_id else []),
                ]
            ),
            digest_size=6,
        )
        return digest.hexdigest()


@dataclass(frozen=True)
class Cursor:
    """Key of the last record of a page; the next page starts strictly after (older than) it."""

    started_at: datetime
    request_id: str


def encode_token(cursor: Cursor, filters: ListFilters) -> str:
    payload = orjson.dumps(
        [_VERSION, to_micros(cursor.started_at), cursor.request_id, filters.fingerprint()]
    )
    return base64.urlsafe_b64encode(payload).decode().rstrip("=")


def decode_token(token: str, filters: ListFilters) -> Cursor:
    try:
        payload = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        version, micros, request_id, fingerprint = orjson.loads(payload)
    except (binascii.Error, ValueError, TypeError):
        raise InvalidPageToken("page_token is not a token this service issued") from None
    if version != _VERSION or not isinstance(micros, int) or not isinstance(request_id, str):
        raise InvalidPageToken("page_token is not a token this service issued")
    if fingerprint != filters.fingerprint():
        raise InvalidPageToken("page_token was issued for different filters")
    try:
        started_at = from_micros(micros)
    except OverflowError:
        raise InvalidPageToken("page_token is not a token this service issued") from None
    return Cursor(started_at, request_id)
