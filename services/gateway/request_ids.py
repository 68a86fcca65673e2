"""Request ids: a client's own x-request-id when it is safe to log, else a new one."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable

_ACCEPTABLE = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
HEADER = "x-request-id"


def request_id_from(metadata: Iterable[tuple[str, str | bytes]] | None) -> str:
    for key, value in metadata or ():
        if key == HEADER and isinstance(value, str) and _ACCEPTABLE.match(value):
            return value
    return uuid.uuid4().hex
