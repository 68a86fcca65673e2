"""An HTTP client's own deadline: the `x-hybridinference-timeout-ms` request header.

HTTP clients cannot set gRPC's `grpc-timeout` (Envoy removes it from them: it is the gRPC hop's),
so this header of ours carries their deadline: whole milliseconds from 1 to 600000. The gateway
applies it like a gRPC deadline, capped by `gateway.request_timeout_s`, but ends the answer
itself when it passes (a stream with a `timeout` error event), instead of gRPC cutting the call.
A value outside the bounds is refused with INVALID_ARGUMENT naming the header.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError

HEADER = "x-hybridinference-timeout-ms"
MAX_MS = 600_000


def deadline_s(metadata: Iterable[tuple[str, str | bytes]] | None) -> float | None:
    """The client's deadline in seconds, or None when it sent none."""
    for key, value in metadata or ():
        if key != HEADER:
            continue
        text = value.decode("latin-1") if isinstance(value, bytes) else value
        if not text.isdigit() or not 1 <= int(text) <= MAX_MS:
            raise ServiceError(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{HEADER}: a whole number of milliseconds from 1 to {MAX_MS}, got {text[:40]!r}",
                "invalid_timeout",
                [FieldViolation(HEADER, f"a whole number of milliseconds from 1 to {MAX_MS}")],
            )
        return int(text) / 1000.0
    return None
