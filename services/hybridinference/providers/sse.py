"""An incremental Server-Sent Events parser for the hot path: bytes in, ``data`` payloads out.

Only what LLM streams use: ``data:`` lines (joined with ``\\n`` when an event has several),
events ended by a blank line, ``\\n``, ``\\r\\n`` or ``\\r`` line ends, comments (``:``) and other
fields ignored. Payloads stay ``bytes`` so the caller parses JSON straight from them (orjson)
with no decode/encode round trip. The common case (one ``data:`` line per event, whole events
per network read) costs one ``split`` per read.
"""

from __future__ import annotations

_DATA = b"data:"


class SseParser:
    """Feed network reads; get back the ``data`` of every event they completed."""

    __slots__ = ("_buffer", "_data")

    def __init__(self) -> None:
        self._buffer = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        if self._buffer:
            chunk = self._buffer + chunk
        pending_cr = False
        if b"\r" in chunk:
            # Rare (Gemini ends lines with \r\n): normalise so lines split on \n alone. A \r at
            # the very end may be half of a \r\n split across reads, so it waits for the next.
            if chunk.endswith(b"\r"):
                chunk, pending_cr = chunk[:-1], True
            chunk = chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = chunk.split(b"\n")
        # The last piece is an unfinished line (empty when the chunk ended with a newline).
        tail = lines.pop()
        self._buffer = tail + b"\r" if pending_cr else tail
        events: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    events.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
                continue
            if line.startswith(_DATA):
                value = line[5:]
                data.append(value[1:] if value[:1] == b" " else value)
            # Comments (":" keep-alives), event:, id:, retry: are not needed by LLM streams.
        return events

    def finish(self) -> list[bytes]:
        """Events left when the stream ends without a final blank line."""
        events = self.feed(b"\n\n") if self._buffer.strip(b"\r") or self._data else []
        self._buffer = b""
        return events
