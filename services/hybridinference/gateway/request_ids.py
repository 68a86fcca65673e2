"""Request ids: the caller's x-request-id (behind Envoy there always is one: the client's own or
a UUID Envoy generated), else a new one; an id unsafe to log is refused.

The caller's id is not a key: nothing stops two requests from sending the same one. The request
record's key is ``record_key()``, made here for every request; the caller's id is stored beside
it (client_request_id), and `hybridinference logs ID` finds a record by either."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

import grpc

from hybridinference.common.errors import FieldViolation, invalid_argument

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HEADER = "x-request-id"

Metadata = Iterable[tuple[str, str | bytes]] | None


def _inbound(metadata: Metadata) -> str | None:
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str):
            return value
    return None


def record_key() -> str:
    """A key no other request has: 128 random bits."""
    return uuid.uuid4().hex


def request_id_from(metadata: Metadata) -> str:
    inbound = _inbound(metadata)
    if inbound is not None and _ACCEPTABLE.match(inbound):
        return inbound
    return uuid.uuid4().hex


def check_request_id(metadata: Metadata) -> None:
    """Refuses a caller's id that is unsafe to log: it would otherwise be replaced, and the
    caller, who gets back the id it sent (Envoy echoes it), could not find its request."""
    inbound = _inbound(metadata)
    if inbound is not None and not _ACCEPTABLE.match(inbound):
        raise invalid_argument(
            [FieldViolation(HEADER, "must be 1-128 characters of A-Z a-z 0-9 . _ : -")]
        )


async def echo_request_id(context: grpc.aio.ServicerContext, request_id: str) -> None:
    """Puts the id in the response headers unless the caller sent it. Envoy copies the request's
    x-request-id into every response (always_set_request_id_in_response); initial metadata sent
    as a batch of its own, ahead of the reply, was 9% of the gateway's profile samples, while
    unsent it goes out with the first message."""
    if _inbound(context.invocation_metadata()) != request_id:
        await context.send_initial_metadata(((HEADER, request_id),))
