"""The first-output deadline every streaming adapter enforces, in one place.

From sending the request until the first output, the upstream has ``first_token_timeout_s`` in
total (connect, queueing upstream and prefill included). Output is anything the model generates:
text, reasoning or a tool-call fragment, so a model that thinks for minutes is not mistaken for a
silent one. After the first output only the idle gap between reads is limited (``idle_timeout_s``;
the HTTP clients enforce it on the socket, SDKs without a read timeout ask for a timer here).
"""

from __future__ import annotations

import asyncio

from hybridinference.common.errors import ServiceError
from hybridinference.common.settings import ProviderEndpointSettings
from hybridinference.providers import upstream_errors as ue


class FirstOutputDeadline:
    """One request's deadline: an absolute time before the first output, an idle gap after."""

    __slots__ = ("_at", "_endpoint", "_first_s", "_idle_s", "_timed_idle")

    def __init__(self, endpoint: ProviderEndpointSettings, *, timed_idle: bool = False) -> None:
        self._endpoint = endpoint.id
        self._first_s = endpoint.first_token_timeout_s
        self._idle_s = endpoint.idle_timeout_s
        # Whether the idle gap needs a timer here (the transport does not enforce it).
        self._timed_idle = timed_idle
        self._at = asyncio.get_running_loop().time() + self._first_s

    def scope(self, output: bool) -> asyncio.Timeout:
        """The timeout for the next wait: the deadline until there is output, then the idle gap
        when this side times it, else none."""
        if not output:
            return asyncio.timeout_at(self._at)
        return asyncio.timeout(self._idle_s if self._timed_idle else None)

    def error(self, output: bool) -> ServiceError:
        """The timeout error for a wait that ran out: first-output before any output, else idle."""
        return ue.timeout_error(self._endpoint, output, self._first_s, self._idle_s)
