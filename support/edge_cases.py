"""What the HTTP edge answers to each kind of odd request: the one table behind the README's
"client sent X → status Y, error code Z" (tests/e2e/test_http_edge.py checks both the table and
every row against a real mesh; `python -m support.edge_cases` prints the table).

Error codes: OpenAI's `error.code` under /v1/ (and for paths outside the API), the
google.rpc.Status `code` (a google.rpc.Code number) under /api/.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from support.raw_http import RawReply, request_bytes

README = Path(__file__).resolve().parents[1] / "README.md"
TABLE_START = "<!-- edge-table:start (generated from support/edge_cases.py) -->"
TABLE_END = "<!-- edge-table:end -->"

JSON = {"content-type": "application/json"}
CHAT = orjson.dumps({"model": "hi-sim", "messages": [{"role": "user", "content": "hi"}]})
GRPC_NAMES = {3: "INVALID_ARGUMENT", 5: "NOT_FOUND", 12: "UNIMPLEMENTED", 14: "UNAVAILABLE"}


@dataclass(frozen=True)
class EdgeCase:
    sent: str
    # Each request of the row (all must get the same answer).
    requests: tuple[bytes, ...]
    status: int
    # OpenAI error code, google.rpc code number (as text), or "" for a success.
    code: str
    allow: str | None = None
    # The edge closes the connection after answering (it did not read the request whole).
    closes: bool = False
    # A stream: 200, then an SSE error event with `code` and no [DONE].
    stream_cut: bool = False
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def dialect(self) -> str:
        return "api" if self.code.isdigit() else "openai"

    def code_cell(self) -> str:
        if not self.code:
            return "—"
        if self.code.isdigit():
            return f"`{self.code}` ({GRPC_NAMES[int(self.code)]})"
        return f"`{self.code}`"

    def status_cell(self) -> str:
        text = str(self.status)
        if self.allow:
            text += f", `Allow: {self.allow}`"
        if self.closes:
            text += ", connection closed"
        if self.stream_cut:
            text += ", then an error event (no `[DONE]`, no gRPC error trailer)"
        return text


def _r(
    method: str,
    path: str,
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    body: bytes = b"",
    version: str = "HTTP/1.1",
) -> bytes:
    return request_bytes(method, path, headers, body, version)


def _post_json(path: str, extra: list[tuple[str, str]], body: bytes = CHAT) -> bytes:
    return _r("POST", path, [("content-type", "application/json"), *extra], body)


CASES: tuple[EdgeCase, ...] = (
    EdgeCase(
        "`GET` or `PUT` on `/v1/chat/completions`",
        (_r("GET", "/v1/chat/completions"), _r("PUT", "/v1/chat/completions", JSON, CHAT)),
        405,
        "method_not_allowed",
        allow="POST",
    ),
    EdgeCase(
        "`PATCH`, `DELETE`, `OPTIONS`, `TRACE` on `/v1/chat/completions`",
        (
            *(_r(m, "/v1/chat/completions", JSON, CHAT) for m in ("PATCH", "DELETE", "OPTIONS")),
            _r("TRACE", "/v1/chat/completions"),
        ),
        405,
        "method_not_allowed",
        allow="POST",
    ),
    EdgeCase(
        "`HEAD` on `/v1/chat/completions` (no body: it is HEAD)",
        (_r("HEAD", "/v1/chat/completions"),),
        405,
        "method_not_allowed",
        allow="POST",
    ),
    EdgeCase(
        "`GET`, `PUT` or `DELETE` on `/api/v1/chat` or `/api/v1/chat:stream`",
        (
            _r("GET", "/api/v1/chat"),
            _r("PUT", "/api/v1/chat", JSON, CHAT),
            _r("DELETE", "/api/v1/chat:stream"),
        ),
        405,
        "12",
        allow="POST",
    ),
    EdgeCase(
        "`POST` on `/v1/models` or `/v1/models/hi-sim`",
        (_r("POST", "/v1/models", JSON, b"{}"), _r("POST", "/v1/models/hi-sim", JSON, b"{}")),
        405,
        "method_not_allowed",
        allow="GET",
    ),
    EdgeCase(
        "`GET` on `/api/v1/admin/keys/k1:revoke`",
        (_r("GET", "/api/v1/admin/keys/k1:revoke"),),
        405,
        "12",
        allow="POST",
    ),
    EdgeCase(
        "`POST` on `/api/v1/models`",
        (_r("POST", "/api/v1/models", JSON, b"{}"),),
        405,
        "12",
        allow="GET",
    ),
    EdgeCase(
        "an unknown path under `/v1/` (`/v1/completions`), or outside the API (`/`)",
        (_r("POST", "/v1/completions", JSON, CHAT), _r("GET", "/"), _r("GET", "/v1")),
        404,
        "unknown_url",
    ),
    EdgeCase(
        "an unknown path under `/api/`",
        (_r("GET", "/api/v2/chat"), _r("POST", "/api/v1/chat/x", JSON, CHAT)),
        404,
        "5",
    ),
    EdgeCase(
        "JSON to a gRPC method path (`/hybridinference.gateway.v1.GatewayService/Chat`)",
        (_post_json("/hybridinference.gateway.v1.GatewayService/Chat", []),),
        404,
        "unknown_url",
    ),
    EdgeCase(
        "`POST /v1/chat/completions` with a body that is not JSON (`text/plain`, a form)",
        (
            _r("POST", "/v1/chat/completions", {"content-type": "text/plain"}, CHAT),
            _r(
                "POST",
                "/v1/chat/completions",
                {"content-type": "application/x-www-form-urlencoded"},
                CHAT,
            ),
        ),
        415,
        "unsupported_media_type",
    ),
    EdgeCase(
        "`POST /api/v1/chat` with `content-type: multipart/form-data` (or curl's default form)",
        (
            _r("POST", "/api/v1/chat", {"content-type": "multipart/form-data; b=x"}, CHAT),
            _r(
                "POST",
                "/api/v1/chat:stream",
                {"content-type": "application/x-www-form-urlencoded"},
                CHAT,
            ),
        ),
        415,
        "3",
    ),
    EdgeCase(
        "`content-type: application/grpc` over HTTP/1.1 on `/v1/...` or a gRPC path",
        (
            _r("POST", "/v1/chat/completions", {"content-type": "application/grpc"}, CHAT),
            _r(
                "POST",
                "/hybridinference.gateway.v1.GatewayService/Chat",
                {"content-type": "application/grpc+proto"},
                b"\x00\x00\x00\x00\x00",
            ),
        ),
        415,
        "unsupported_media_type",
    ),
    EdgeCase(
        "`content-type: application/grpc` over HTTP/1.1 on `/api/...`",
        (_r("POST", "/api/v1/chat", {"content-type": "application/grpc"}, CHAT),),
        415,
        "3",
    ),
    EdgeCase(
        "a JSON `POST` with `grpc-timeout: abc`, `-1S`, `99999999H`, `1n` or `0S`, or other "
        "`grpc-*` / `x-envoy-*` headers (removed at the edge)",
        (
            *(
                _post_json("/v1/chat/completions", [("grpc-timeout", v)])
                for v in ("abc", "-1S", "99999999H", "1n", "0S")
            ),
            _post_json("/api/v1/chat", [("grpc-timeout", "1n"), ("grpc-encoding", "gzip")]),
            _post_json("/v1/chat/completions", [("x-envoy-upstream-rq-timeout-ms", "1")]),
        ),
        200,
        "",
    ),
    EdgeCase(
        "`x-hybridinference-timeout-ms: 60000` (an HTTP client's own deadline)",
        (
            _post_json("/v1/chat/completions", [("x-hybridinference-timeout-ms", "60000")]),
            _post_json("/api/v1/chat", [("x-hybridinference-timeout-ms", "1000")]),
        ),
        200,
        "",
    ),
    EdgeCase(
        "`x-hybridinference-timeout-ms: abc`, `0`, `1.5` or `600001` on `/v1/...`",
        tuple(
            _post_json("/v1/chat/completions", [("x-hybridinference-timeout-ms", v)])
            for v in ("abc", "0", "1.5", "600001")
        ),
        400,
        "invalid_timeout",
    ),
    EdgeCase(
        "`x-hybridinference-timeout-ms: 0` on `/api/...`",
        (_post_json("/api/v1/chat", [("x-hybridinference-timeout-ms", "0")]),),
        400,
        "3",
    ),
    EdgeCase(
        "`x-hybridinference-timeout-ms: 500` on a stream that needs 20 s (`hi-slow`)",
        (
            _post_json(
                "/v1/chat/completions",
                [("x-hybridinference-timeout-ms", "500")],
                orjson.dumps(
                    {
                        "model": "hi-slow",
                        "stream": True,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                ),
            ),
        ),
        200,
        "timeout",
        stream_cut=True,
    ),
    EdgeCase(
        "a 59 KB request header (the limit is 16 KiB of headers)",
        (_post_json("/v1/chat/completions", [("x-big", "a" * 59_000)]),),
        431,
        "request_header_fields_too_large",
        closes=True,
    ),
    EdgeCase(
        "`Content-Length: 1000000000000` (above Envoy's 17 MiB), body not sent",
        (
            _r(
                "POST",
                "/v1/chat/completions",
                [("content-type", "application/json"), ("content-length", "1000000000000")],
                b"{",
            ),
        ),
        413,
        "request_too_large",
        closes=True,
    ),
    EdgeCase(
        "broken chunked encoding (`zz` as a chunk size)",
        (
            _r(
                "POST",
                "/v1/chat/completions",
                [("content-type", "application/json"), ("transfer-encoding", "chunked")],
                b"zz\r\n{}\r\n0\r\n\r\n",
            ),
        ),
        400,
        "bad_request",
        closes=True,
    ),
    EdgeCase(
        "a body shorter than its `Content-Length`, or an unfinished chunked body, then silence "
        "(`envoy.request_timeout_s`, 30 s)",
        (
            _r(
                "POST",
                "/v1/chat/completions",
                [("content-type", "application/json"), ("content-length", "100")],
                b"{",
            ),
            _r(
                "POST",
                "/v1/chat/completions",
                [("content-type", "application/json"), ("transfer-encoding", "chunked")],
                b'5\r\n{"a":\r\n',
            ),
        ),
        408,
        "request_timeout",
        closes=True,
    ),
    EdgeCase(
        "request headers never finished (`envoy.request_headers_timeout_s`, 10 s)",
        (b"POST /v1/chat/completions HTTP/1.1\r\nhost: edge.test\r\n",),
        408,
        "request_timeout",
        closes=True,
    ),
    EdgeCase(
        "HTTP/1.0",
        (_r("GET", "/v1/models", version="HTTP/1.0"),),
        426,
        "http_version_not_supported",
        closes=True,
    ),
    EdgeCase(
        "`POST /v1/chat/completions` whose body is not valid JSON",
        (_r("POST", "/v1/chat/completions", JSON, b"{not json"),),
        400,
        "invalid_json",
    ),
    EdgeCase(
        "`POST /api/v1/chat` whose body is not valid JSON",
        (_r("POST", "/api/v1/chat", JSON, b"{not json"),),
        400,
        "3",
    ),
    EdgeCase(
        "`stream: true` on `/v1/chat/completions`, and the model's worker dies mid-stream",
        (
            _post_json(
                "/v1/chat/completions",
                [],
                orjson.dumps(
                    {
                        "model": "hi-dying",
                        "stream": True,
                        "messages": [{"role": "user", "content": "hi"}],
                    }
                ),
            ),
        ),
        200,
        "upstream_disconnected",
        stream_cut=True,
    ),
    EdgeCase(
        "`/api/v1/chat:stream`, and the model's worker dies mid-stream",
        (
            _post_json(
                "/api/v1/chat:stream",
                [],
                orjson.dumps(
                    {"model": "hi-dying", "messages": [{"role": "user", "content": "hi"}]}
                ),
            ),
        ),
        200,
        "14",
        stream_cut=True,
    ),
)


def error_code(case: EdgeCase, reply: RawReply) -> str:
    """The error code the reply carries, read in the case's dialect (fails on any other shape)."""
    if case.stream_cut:
        events = [e for e in reply.body.split(b"\n\n") if e]
        assert b"data: [DONE]" not in events, "a cut stream must not end with [DONE]"
        error = orjson.loads(events[-1].removeprefix(b"data: "))["error"]
        if case.dialect == "api":
            return body_error_code("api", orjson.dumps(error))
        assert set(error) == {"message", "type", "param", "code"}
        assert re.search(r"after \d+ tokens", error["message"]), error
        return str(error["code"])
    return body_error_code(case.dialect, reply.body)


def body_error_code(dialect: str, body: bytes) -> str:
    """An error body's code: OpenAI's `{"error": {...}}` or google.rpc.Status JSON."""
    payload = orjson.loads(body)
    if dialect == "api":
        assert set(payload) <= {"code", "message", "details"} and payload["message"], payload
        assert isinstance(payload["code"], int) and payload["code"] > 0, payload
        return str(payload["code"])
    error = payload["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"], payload
    return str(error["code"])


def dialect_of(target: str) -> str:
    """The error dialect for a request target as sent (origin or absolute form)."""
    path = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^/]*", "", target)
    return "api" if path.startswith("/api/") else "openai"


def render_table() -> str:
    lines = ["| client sent | status | error code |", "|---|---|---|"]
    lines += [f"| {c.sent} | {c.status_cell()} | {c.code_cell()} |" for c in CASES]
    return "\n".join(lines)


def readme_table(readme: str) -> str:
    match = re.search(re.escape(TABLE_START) + r"\n(.*?)\n" + re.escape(TABLE_END), readme, re.S)
    assert match is not None, f"README has no table between {TABLE_START!r} and {TABLE_END!r}"
    return match.group(1)


if __name__ == "__main__":
    print(render_table())
