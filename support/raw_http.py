"""HTTP/1.x on a bare socket, for requests no well-behaved client library sends (broken chunked
encoding, a Content-Length that never arrives, HTTP/1.0, odd methods) and to see whether the
server closed the connection after answering."""

from __future__ import annotations

import contextlib
import socket
import time
from dataclasses import dataclass, field


@dataclass
class RawReply:
    status: int
    headers: dict[str, str]
    body: bytes
    # The server closed the connection after the reply (no keep-alive).
    closed: bool
    seconds: float
    trailers: dict[str, str] = field(default_factory=dict)

    def header(self, name: str) -> str | None:
        return self.headers.get(name.lower())


class NoReply(AssertionError):
    """The server did not answer (or not completely) within the timeout."""


def request_bytes(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
    content_length: bool = True,
) -> bytes:
    items = list(headers.items()) if isinstance(headers, dict) else list(headers or [])
    names = {name.lower() for name, _ in items}
    if "host" not in names:
        items.insert(0, ("host", "edge.test"))
    if (
        content_length
        and body
        and "content-length" not in names
        and ("transfer-encoding" not in names)
    ):
        items.append(("content-length", str(len(body))))
    head = f"{method} {path} {version}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in items)
    return head.encode("latin-1") + b"\r\n" + body


def send(port: int, raw: bytes, timeout_s: float = 10.0, close_wait_s: float = 2.0) -> RawReply:
    """Sends ``raw`` and reads one reply; then waits up to ``close_wait_s`` to see whether the
    server closes the connection (it should after refusing a request it did not read whole)."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        # The server may answer and close before the whole request is written.
        with contextlib.suppress(OSError):
            sock.sendall(raw)
        reader = _Reader(sock, started + timeout_s)
        status, headers = _read_head(reader)
        while 100 <= status < 200:  # interim (100 Continue): the answer follows
            status, headers = _read_head(reader)
        # A reply to HEAD has a Content-Length but never a body.
        head_request = raw.startswith(b"HEAD ")
        body, trailers = (b"", {}) if head_request else _read_body(reader, headers, status)
        seconds = time.monotonic() - started
        closed = reader.closed_within(close_wait_s)
    return RawReply(status, headers, body, closed, seconds, trailers)


class _Reader:
    def __init__(self, sock: socket.socket, deadline: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._buffer = b""
        self._eof = False

    def _fill(self) -> None:
        remaining = self._deadline - time.monotonic()
        if remaining <= 0 or self._eof:
            raise NoReply("no (complete) reply before the timeout or the connection closed")
        self._sock.settimeout(remaining)
        try:
            chunk = self._sock.recv(65536)
        except TimeoutError:
            raise NoReply("no (complete) reply before the timeout") from None
        except ConnectionResetError:
            chunk = b""
        if not chunk:
            self._eof = True
        self._buffer += chunk

    def until(self, marker: bytes) -> bytes:
        while marker not in self._buffer:
            self._fill()
        head, _, self._buffer = self._buffer.partition(marker)
        return head

    def exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data, self._buffer = self._buffer[:size], self._buffer[size:]
        return data

    def rest(self) -> bytes:
        while not self._eof:
            self._fill_or_eof()
        data, self._buffer = self._buffer, b""
        return data

    def _fill_or_eof(self) -> None:
        try:
            self._fill()
        except NoReply:
            self._eof = True

    def closed_within(self, seconds: float) -> bool:
        if self._eof or seconds <= 0:
            return self._eof
        self._sock.settimeout(seconds)
        try:
            return self._sock.recv(1) == b""
        except TimeoutError:
            return False
        except ConnectionResetError:
            return True


def _read_head(reader: _Reader) -> tuple[int, dict[str, str]]:
    lines = reader.until(b"\r\n\r\n").decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return status, headers


def _read_body(
    reader: _Reader, headers: dict[str, str], status: int
) -> tuple[bytes, dict[str, str]]:
    if status in (204, 304) or 100 <= status < 200:
        return b"", {}
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        while True:
            size = int(reader.until(b"\r\n").split(b";")[0], 16)
            if size == 0:
                break
            body += reader.exactly(size)
            reader.until(b"\r\n")
        trailers: dict[str, str] = {}
        while line := reader.until(b"\r\n").decode("latin-1"):
            name, _, value = line.partition(":")
            trailers[name.strip().lower()] = value.strip()
        return body, trailers
    if "content-length" in headers:
        return reader.exactly(int(headers["content-length"])), {}
    return reader.rest(), {}
