"""Malformed and odd requests through Envoy, as HTTP/1.x bytes and as native gRPC calls, with the
edge's promises checked on every answer (see README, "The HTTP edge").

Seeded and bounded: request ``i`` of a run is built from ``Random(seed, i)`` alone, so a failure
names the one request that reproduces it (``python -m tests.fuzz.edge_fuzz --show I``).
`tests/fuzz/test_fuzz_edge.py` runs it against a real mesh: a short slice in `make test`, the
full 10,000 + 2,000 in `make fuzz`.
"""

from __future__ import annotations

import argparse
import random
import string
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import orjson

from hybridinference.common.v1 import chat_pb2
from hybridinference.gateway.v1 import gateway_pb2
from support.edge_cases import body_error_code, dialect_of
from support.raw_http import NoReply, RawReply, send

CHAT_PATHS = ("/v1/chat/completions", "/api/v1/chat", "/api/v1/chat:stream")
PATHS = (
    *CHAT_PATHS,
    "/v1/models",
    "/v1/models/hi-sim",
    "/v1/models/nope",
    "/api/v1/models",
    "/api/v1/admin/endpoints",
    "/api/v1/admin/keys",
    "/api/v1/admin/keys/k1:revoke",
    "/v1/completions",
    "/v1/",
    "/api/v2/chat",
    "/",
    "/hybridinference.gateway.v1.GatewayService/Chat",
    "/hybridinference.openai.v1.OpenAIService/CreateChatCompletion",
    "/grpc.health.v1.Health/Check",
)
METHODS = ("POST", "GET", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD", "TRACE", "FOO", "CONNECT")
METHOD_WEIGHTS = (40, 20, 6, 5, 5, 5, 5, 3, 3, 1)
CONTENT_TYPES = (
    "application/json",
    "application/json; charset=utf-8",
    "APPLICATION/JSON",
    None,
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/grpc",
    "application/grpc+proto",
    "application/grpc-web",
    "application/jsonx",
    "\u00e9/\u00e9",
)
CT_WEIGHTS = (40, 5, 3, 8, 4, 4, 3, 5, 2, 2, 2, 1)
MODELS = ("hi-sim", "hi-sim", "hi-sim", "hi-dying", "nope", "", "x" * 300)
HTTP_MODELS = tuple(m for m in MODELS if m != "hi-dying")
# Refusals that happen before Envoy has the request's path (a broken request line or header
# block) cannot know the path's dialect; they are OpenAI-shaped.
CODEC_STATUSES = {400, 408, 413, 431}
# Envoy's max_request_headers_kb (deploy/envoy/envoy.yaml).
EDGE_HEADER_LIMIT = 16 * 1024


@dataclass(frozen=True)
class HttpCase:
    index: int
    method: str
    path: str
    raw: bytes
    # The request is never completed (a body shorter than announced): 408 from the edge.
    slow: bool
    # Envoy refuses it before any filter runs: broken HTTP/1.1 framing (a bad chunk, an unusable
    # Content-Length, both framings), `*` as the target, an Upgrade no route accepts.
    refused_unfiltered: bool = False


def _rng(seed: int, index: int) -> random.Random:
    return random.Random(seed * 1_000_003 + index)


def _chat_body(rng: random.Random, path: str) -> bytes:
    messages: list[object] = [{"role": "user", "content": "hi"}]
    # No hi-dying: its worker aborts every answer, so the router soon opens its circuit and
    # answers 503, an honest server-side failure (the edge table covers a stream cut by it).
    body: dict[str, object] = {"model": rng.choice(HTTP_MODELS), "messages": messages}
    if path.startswith("/v1/chat/completions") and rng.random() < 0.4:
        body["stream"] = True
    if rng.random() < 0.3:
        body["max_tokens"] = rng.choice([1, 5, 0, -1, 2**40, 2**63 - 1, "3", None])
    if rng.random() < 0.2:
        messages.append({"role": rng.choice(["user", "robot", "", 5]), "content": rng.random()})
    if rng.random() < 0.2:
        body[rng.choice(["temperature", "n", "tools", "\u0000", "sampling"])] = rng.choice(
            [1.5, -3, [], {}, "x", None, 1e300]
        )
    if rng.random() < 0.1:
        body["stream_options"] = {"include_usage": rng.choice([True, "yes"])}
    return orjson.dumps(body)


def _body(rng: random.Random, path: str) -> bytes:
    kind = rng.random()
    if kind < 0.55:
        return _chat_body(rng, path)
    if kind < 0.65:
        return b""
    if kind < 0.75:
        return rng.randbytes(rng.randint(1, 400))
    if kind < 0.82:
        depth = rng.choice([10, 1000, 20000])
        return b"[" * depth + b"]" * depth
    if kind < 0.88:
        # A lone surrogate, invalid UTF-8 in a JSON string.
        return b'{"model": "hi-sim", "messages": [{"role": "user", "content": "\xed\xa0\x80"}]}'
    if kind < 0.93:
        return (
            b'{"model": "hi-sim", "messages": [{"role": "user", "content": "'
            + (rng.randbytes(200).replace(b'"', b"'"))
            + b'"}]}'
        )
    if kind < 0.97:
        return (
            b'{"model":"hi-sim","messages":[{"role":"user","content":"'
            + (b"y" * rng.choice([1_100_000, 2_200_000]))
            + b'"}]}'
        )
    return orjson.dumps(rng.choice([None, 1, "x", [], {"a": {"b": [1, 2]}}]))


def _odd_headers(rng: random.Random) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    for _ in range(rng.choice([0, 0, 0, 1, 2, 4])):
        headers.append(
            rng.choice(
                [
                    ("grpc-timeout", rng.choice(["abc", "-1S", "99999999H", "1n", "0S", "5S"])),
                    ("grpc-encoding", rng.choice(["gzip", "identity", "zzz"])),
                    ("grpc-accept-encoding", "gzip"),
                    ("grpc-status", "13"),
                    ("te", "trailers"),
                    ("x-envoy-upstream-rq-timeout-ms", rng.choice(["1", "0", "x"])),
                    ("x-envoy-max-retries", "100"),
                    ("x-envoy-original-path", "/api/v1/chat"),
                    ("x-hybridinference-http-status", rng.choice(["200", "999", "x"])),
                    ("x-hybridinference-endpoint", rng.choice(["sim-a", "nope", "\u00e9" * 3])),
                    (
                        "x-request-id",
                        rng.choice([str(uuid.UUID(int=rng.getrandbits(128))), "!" * 5, "a" * 300]),
                    ),
                    ("authorization", rng.choice(["Bearer x", "Basic Zm9v", ""])),
                    ("accept-encoding", rng.choice(["gzip", "br", "*"])),
                    ("content-encoding", rng.choice(["gzip", "deflate", "zstd"])),
                    ("expect", "100-continue"),
                    ("connection", "upgrade"),
                    ("upgrade", rng.choice(["websocket", "h2c"])),
                    ("x-big", "b" * rng.choice([100, 9_000, 20_000, 70_000])),
                    ("host", rng.choice(["", "a b", "x" * 300])),
                    ("traceparent", rng.choice(["00-zz-zz-01", "garbage"])),
                ]
            )
        )
    if rng.random() < 0.02:
        headers += [(f"x-many-{i}", "v") for i in range(rng.choice([50, 150]))]
    return headers


def _near_valid(rng: random.Random, index: int) -> HttpCase:
    """A chat request a real client could send, a detail or two off: answered 200 mostly, so
    the run also checks that every 200 left its record."""
    path = rng.choice(CHAT_PATHS)
    body = _chat_body(rng, path)
    headers = [
        ("host", "edge.test"),
        ("content-type", rng.choice(["application/json", "application/json; charset=utf-8"])),
        ("content-length", str(len(body))),
    ]
    if rng.random() < 0.3:
        headers += _odd_headers(rng)[:1]
    head = f"POST {path} HTTP/1.1\r\n".encode() + b"".join(
        k.encode() + b": " + v.encode() + b"\r\n" for k, v in headers
    )
    return HttpCase(index, "POST", path, head + b"\r\n" + body, False)


def http_case(seed: int, index: int) -> HttpCase:
    rng = _rng(seed, index)
    if rng.random() < 0.2:
        return _near_valid(rng, index)
    path = rng.choice(PATHS)
    if rng.random() < 0.1:
        path = rng.choice(
            [
                path + "?x=1&&model=" + "%" + rng.choice(["zz", "41", "00"]),
                "/" + path,
                path + "/",
                path.upper(),
                path + "#frag",
                path.replace("/", "/%2F", 1),
                "/v1/models/" + "m" * 3000,
                "*",
                "http://edge.test" + path,
            ]
        )
    method = rng.choices(METHODS, METHOD_WEIGHTS)[0]
    body = _body(rng, path) if method in ("POST", "PUT", "PATCH") or rng.random() < 0.1 else b""
    headers: list[tuple[str, str]] = [("host", "edge.test")]
    content_type = rng.choices(CONTENT_TYPES, CT_WEIGHTS)[0]
    if content_type is not None:
        headers.append(("content-type", content_type))
    headers += _odd_headers(rng)
    encoding = rng.random()
    slow = False
    broken_framing = 0.92 <= encoding < 0.98
    if encoding < 0.85:
        if body or method in ("POST", "PUT", "PATCH"):
            headers.append(("content-length", str(len(body))))
        payload = body
    elif encoding < 0.92:
        headers.append(("transfer-encoding", "chunked"))
        size = max(1, len(body) // 3)
        chunks = [body[i : i + size] for i in range(0, len(body), size)]
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\n\r\n"
    elif encoding < 0.95:
        headers.append(("transfer-encoding", "chunked"))
        payload = rng.choice([b"zz\r\n{}\r\n0\r\n\r\n", b"5\r\n{}\r\n0\r\n\r\n", b"-1\r\n"])
    elif encoding < 0.97:
        headers.append(("content-length", rng.choice(["1000000000000", "-1", "abc", "1, 2"])))
        payload = body
    elif encoding < 0.98:
        headers += [("content-length", str(len(body))), ("transfer-encoding", "chunked")]
        payload = body
    else:
        # Announces more than it sends, then waits: only the edge's request timeout ends it.
        headers.append(("content-length", str(len(body) + 10)))
        payload = body
        slow = True
    version = rng.choices(
        ["HTTP/1.1", "HTTP/1.0", "HTTP/1.2", "HTTP/2.0", "HTTP/x"], [94, 3, 1, 1, 1]
    )[0]
    head = f"{method} {path} {version}\r\n".encode() + b"".join(
        k.encode("latin-1", "replace") + b": " + v.encode("utf-8") + b"\r\n" for k, v in headers
    )
    if rng.random() < 0.01:
        head += rng.choice([b"bad header line\r\n", b": empty-name\r\n", b"x-ctl: a\x01b\r\n"])
    upgrade = ("connection", "upgrade") in headers
    unfiltered = broken_framing or path == "*" or upgrade
    return HttpCase(index, method, path, head + b"\r\n" + payload, slow, unfiltered)


@dataclass
class HttpOutcome:
    case: HttpCase
    reply: RawReply | None
    problem: str = ""
    # For a 200 to a chat path: the request id whose record must exist.
    record_id: str = ""
    # The one documented gap (README, "The HTTP edge"): see _known_gap.
    known_gap: bool = False


def _known_gap(case: HttpCase, reply: RawReply) -> bool:
    """A request with a gRPC content type over HTTP/1.x that Envoy also refuses before any filter
    runs (broken framing, `*` as the path, an Upgrade): the headers were taken as gRPC, and Envoy
    shapes every local reply to a gRPC-typed request as gRPC (200, grpc-status, the error in
    grpc-message, no body); no filter gets to relabel it. Only exactly that is let through."""
    head = case.raw.split(b"\r\n\r\n", 1)[0].lower()
    return (
        case.refused_unfiltered
        and b"content-type: application/grpc" in head
        and reply.status == 200
        and reply.header("grpc-status") in ("7", "12", "13")
        and not reply.body
    )


def check_http(case: HttpCase, port: int, timeout_s: float) -> HttpOutcome:
    try:
        reply = send(port, case.raw, timeout_s=timeout_s, close_wait_s=0.0)
    except NoReply as error:
        return HttpOutcome(case, None, f"no answer: {error}")
    except ValueError as error:
        return HttpOutcome(case, None, f"unparseable answer: {error}")
    what = f"{reply.status} {reply.body[:200]!r}"
    grpc_status = reply.trailers.get("grpc-status", reply.header("grpc-status") or "0")
    if reply.status >= 500:
        return HttpOutcome(case, reply, f"5xx: {what}")
    if grpc_status != "0":
        if _known_gap(case, reply):
            return HttpOutcome(case, reply, known_gap=True)
        return HttpOutcome(case, reply, f"gRPC status {grpc_status} in an HTTP answer: {what}")
    if 200 <= reply.status < 300:
        if not reply.body and case.method != "HEAD":
            return HttpOutcome(case, reply, f"empty {reply.status}")
        path = case.path.split("?")[0]
        if path in CHAT_PATHS and case.method == "POST":
            return HttpOutcome(case, reply, record_id=reply.header("x-request-id") or "-")
        return HttpOutcome(case, reply)
    if case.method == "HEAD":
        return HttpOutcome(case, reply)
    dialect = dialect_of(case.path)
    try:
        body_error_code(dialect, reply.body)
    except (AssertionError, orjson.JSONDecodeError, KeyError, TypeError) as error:
        if reply.status in CODEC_STATUSES:
            try:
                body_error_code("openai", reply.body)
                return HttpOutcome(case, reply)
            except (AssertionError, orjson.JSONDecodeError, KeyError, TypeError):
                pass
        return HttpOutcome(case, reply, f"not {dialect} error JSON ({error!r}): {what}")
    return HttpOutcome(case, reply)


# -- native gRPC --------------------------------------------------------------------------

UNARY = (
    "/hybridinference.gateway.v1.GatewayService/Chat",
    "/hybridinference.gateway.v1.GatewayService/ListModels",
    "/hybridinference.openai.v1.OpenAIService/ListModels",
    "/hybridinference.openai.v1.OpenAIService/RetrieveModel",
    "/hybridinference.gateway.v1.AdminService/ListEndpoints",
    "/hybridinference.gateway.v1.AdminService/ListKeys",
    "/hybridinference.gateway.v1.AdminService/RevokeKey",
    "/grpc.health.v1.Health/Check",
    "/hybridinference.gateway.v1.GatewayService/Nope",
    "/nope.v1.Nope/Call",
)
STREAMING = (
    "/hybridinference.gateway.v1.GatewayService/ChatStream",
    "/hybridinference.openai.v1.OpenAIService/CreateChatCompletion",
)
GRPC_ALLOWED = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED,
    grpc.StatusCode.PERMISSION_DENIED,
    grpc.StatusCode.UNAUTHENTICATED,
}


@dataclass(frozen=True)
class GrpcCase:
    index: int
    method: str
    streaming: bool
    request: bytes
    metadata: tuple[tuple[str, str | bytes], ...]
    timeout_s: float
    # The model is hi-dying: its worker aborts mid-stream, UNAVAILABLE is the honest answer.
    dying: bool


def _chat_request(rng: random.Random) -> tuple[bytes, bool]:
    model = rng.choice(MODELS)
    request = gateway_pb2.ChatRequest(
        model=model,
        messages=[
            chat_pb2.ChatMessage(
                role=rng.choice(["user", "system", "robot", ""]),
                content="".join(rng.choices(string.printable, k=rng.randint(0, 40))),
            )
            for _ in range(rng.randint(0, 3))
        ],
        sampling=chat_pb2.SamplingParams(
            max_tokens=rng.choice([0, 1, 8, -5, 2**31 - 1]),
            temperature=rng.choice([0.0, 0.7, -1.0, float("nan"), 1e30]),
        ),
        user=rng.choice(["", "u", "x" * 400]),
    )
    return request.SerializeToString(), model == "hi-dying"


def grpc_case(seed: int, index: int) -> GrpcCase:
    rng = _rng(seed, 10_000_000 + index)
    streaming = rng.random() < 0.3
    method = rng.choice(STREAMING if streaming else UNARY)
    dying = False
    kind = rng.random()
    if kind < 0.4:
        request = rng.randbytes(rng.randint(0, 300))
    elif kind < 0.8:
        request, dying = _chat_request(rng)
    elif kind < 0.9:
        good, dying = _chat_request(rng)
        request = good[: rng.randint(0, len(good))]  # truncated mid-field
    else:
        request = b"\xff" * rng.randint(1, 20)
    metadata: list[tuple[str, str | bytes]] = []
    for _ in range(rng.choice([0, 0, 1, 3])):
        metadata.append(
            rng.choice(
                [
                    ("x-request-id", rng.choice(["ok-1", "!" * 4, "z" * 200])),
                    ("authorization", "Bearer " + "k" * rng.randint(0, 40)),
                    ("x-hybridinference-endpoint", rng.choice(["sim-a", "nope"])),
                    ("x-junk-bin", rng.randbytes(16)),
                    ("x-big", "m" * rng.choice([10, 5_000, 15_000])),
                ]
            )
        )
    timeout_s = rng.choice([30.0, 30.0, 5.0, 0.5])
    return GrpcCase(index, method, streaming, request, tuple(metadata), timeout_s, dying)


def check_grpc(case: GrpcCase, channel: grpc.Channel) -> str:
    """'' when the answer keeps the promises, else what went wrong."""
    identity: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
    try:
        if case.streaming:
            stream = channel.unary_stream(case.method, identity, identity)
            for _ in stream(case.request, timeout=case.timeout_s, metadata=case.metadata):
                pass
        else:
            unary = channel.unary_unary(case.method, identity, identity)
            unary(case.request, timeout=case.timeout_s, metadata=case.metadata)
        code = grpc.StatusCode.OK
        details = ""
    except grpc.RpcError as error:
        code = error.code()
        details = error.details() or ""
    if code in GRPC_ALLOWED:
        return ""
    if code == grpc.StatusCode.UNAVAILABLE and case.dying:
        return ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED and case.timeout_s < 1:
        return ""
    metadata_bytes = sum(len(k) + len(v) for k, v in case.metadata)
    if metadata_bytes > EDGE_HEADER_LIMIT - 1024 and code in (
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    ):
        # Above the edge's header limit Envoy's HTTP/2 codec resets the stream (the client
        # reports INTERNAL) or the client library refuses to send it: documented, not a bug.
        return ""
    return f"{case.method}: {code.name} {details[:200]!r}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--show", type=int, help="print HTTP request INDEX of the run")
    parser.add_argument("--show-grpc", type=int, help="print gRPC call INDEX of the run")
    args = parser.parse_args()
    if args.show is not None:
        print(http_case(args.seed, args.show).raw[:4000])
    if args.show_grpc is not None:
        print(grpc_case(args.seed, args.show_grpc))


if __name__ == "__main__":
    main()
