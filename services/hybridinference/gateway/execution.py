"""One request's state in the gateway, from admission to its record.

The servicers feed it the router's events (``observe``) and replies (``observe_reply``), both
surfaces the same way; nothing else writes selection, first token or completion.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import grpc

from hybridinference.common.errors import ServiceError
from hybridinference.gateway.chat_call import ChatCall
from hybridinference.gateway.request_ids import record_key
from hybridinference.router.v1 import router_pb2

if TYPE_CHECKING:
    from hybridinference.gateway.quota.guard import Ticket
    from hybridinference.keys.model import ApiKey


@dataclass
class Execution:
    """What happened to one request, filled in as its stream goes by (for the request record)."""

    # The caller's x-request-id (or the one made for it and returned): what the client, the
    # router, the providers and the logs see. Not unique: two requests may send the same one.
    request_id: str
    call: ChatCall
    surface: str
    started_at: float = field(default_factory=time.time)
    started_monotonic: float = field(default_factory=time.monotonic)
    selection: router_pb2.Selection | None = None
    completion: router_pb2.Completion | None = None
    first_token_monotonic: float | None = None
    status: grpc.StatusCode = grpc.StatusCode.OK
    error: str = ""
    # The caller's key (auth on), and its admitted quota slot until settled.
    api_key: ApiKey | None = None
    quota_ticket: Ticket | None = None
    # From the x-hybridinference-endpoint header; "" lets the router choose.
    pinned_endpoint: str = ""
    # Names of the tools the model called, in order (for the record).
    tools_called: list[str] = field(default_factory=list)
    # logger.capture_content: the reply's text is collected for the record (prompt and
    # response are stored then; otherwise nothing is collected).
    capture: bool = False
    response_parts: list[str] = field(default_factory=list)
    # Events with output passed on to the client (one per generated token from our providers);
    # with a failure after the first, the record says the stream was cut and after how many.
    streamed_tokens: int = 0
    # The record's key: unique per request, whatever the caller sent (request_ids.record_key).
    record_id: str = field(default_factory=record_key)

    @property
    def stream_cut(self) -> bool:
        """The request failed after part of its answer had been sent."""
        return self.status != grpc.StatusCode.OK and self.streamed_tokens > 0

    def fail(self, error: ServiceError) -> None:
        self.status = error.code
        self.error = error.message

    def observe(self, event: router_pb2.RouteResponse) -> None:
        """Notes one routed event: where it went, the first output (content, reasoning or a
        tool call all count), the tools called and how it ended."""
        if event.HasField("selection"):
            self.selection = event.selection
        if event.delta or event.reasoning or event.tool_calls or event.refusal:
            self.streamed_tokens += 1
            if self.first_token_monotonic is None:
                self.first_token_monotonic = time.monotonic()
        if self.capture and event.delta and not event.index:
            self.response_parts.append(event.delta)
        for fragment in event.tool_calls:
            if fragment.name:
                self.tools_called.append(fragment.name)
        if event.HasField("completion"):
            self.completion = event.completion

    def observe_reply(self, reply: router_pb2.RouteUnaryResponse) -> None:
        """Notes a whole reply; its arrival is its first token."""
        if reply.HasField("selection"):
            self.selection = reply.selection
        if reply.content or reply.choices:
            self.first_token_monotonic = time.monotonic()
        if self.capture and reply.content:
            self.response_parts.append(reply.content)
        for choice in reply.choices:
            self.tools_called.extend(call.function.name for call in choice.message.tool_calls)
        if reply.HasField("completion"):
            self.completion = reply.completion

    @property
    def ttft_ms(self) -> float:
        if self.first_token_monotonic is None:
            return 0.0
        return (self.first_token_monotonic - self.started_monotonic) * 1000.0
