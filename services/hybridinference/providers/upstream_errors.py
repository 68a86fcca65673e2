"""The one table mapping upstream failures to gRPC: HTTP statuses, SDK exceptions and timeouts.

Every adapter funnels its failures through here, so a 429 from OpenAI, Gemini or vLLM reaches the
router as the same RESOURCE_EXHAUSTED with a ``RetryInfo`` from Retry-After, and the router's
"retry before the first token" decision sees one vocabulary. ErrorInfo metadata carries
``retryable`` (may another attempt, here or elsewhere, succeed?) and the upstream status.

An upstream's auth failure (401/403) is *our* key being wrong, not the client's: it becomes
UNAVAILABLE (retryable on another endpoint), never UNAUTHENTICATED towards the client.

A 4xx keeps its meaning for the client: OpenAI's ``code`` becomes the reason (the OpenAI ``code``
the gateway answers with) and its ``param`` the field violation; a context-length overflow is
``context_length_exceeded`` on ``messages`` whichever engine words it. Messages never name the
endpoint (its id travels in the metadata for logs and the router), so no internal id or address
reaches a client.
"""

from __future__ import annotations

import email.utils
import re
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError


@dataclass(frozen=True)
class UpstreamFailure:
    """How one class of upstream failure is reported."""

    code: grpc.StatusCode
    reason: str
    retryable: bool


# HTTP status of the upstream → how it is reported. Statuses not listed fall back by class.
HTTP_FAILURES: dict[int, UpstreamFailure] = {
    400: UpstreamFailure(grpc.StatusCode.INVALID_ARGUMENT, "upstream_bad_request", False),
    401: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_unauthenticated", True),
    403: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_permission_denied", True),
    404: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_not_found", True),
    408: UpstreamFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "upstream_timeout", True),
    409: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_conflict", True),
    413: UpstreamFailure(grpc.StatusCode.INVALID_ARGUMENT, "upstream_request_too_large", False),
    422: UpstreamFailure(grpc.StatusCode.INVALID_ARGUMENT, "upstream_bad_request", False),
    429: UpstreamFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "upstream_rate_limited", True),
    500: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_internal_error", True),
    502: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_bad_gateway", True),
    503: UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_unavailable", True),
    504: UpstreamFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "upstream_timeout", True),
}
_OTHER_4XX = UpstreamFailure(grpc.StatusCode.INVALID_ARGUMENT, "upstream_bad_request", False)
_OTHER_5XX = UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_error", True)

# Failures without an HTTP status, keyed by what went wrong.
CONNECT_FAILED = UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_connect_failed", True)
CONNECT_TIMEOUT = UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_connect_timeout", True)
FIRST_TOKEN_TIMEOUT = UpstreamFailure(
    grpc.StatusCode.DEADLINE_EXCEEDED, "upstream_first_token_timeout", True
)
IDLE_TIMEOUT = UpstreamFailure(grpc.StatusCode.DEADLINE_EXCEEDED, "upstream_idle_timeout", True)
DISCONNECTED = UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_disconnected", True)
MALFORMED = UpstreamFailure(grpc.StatusCode.UNAVAILABLE, "upstream_malformed_response", True)
NO_KEY = UpstreamFailure(grpc.StatusCode.RESOURCE_EXHAUSTED, "upstream_keys_cooling_down", True)


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# How engines word a prompt that does not fit (vLLM, OpenAI, SGLang, llama.cpp, TGI, Gemini).
_CONTEXT_LENGTH_WORDS = (
    "maximum context length",
    "context length",
    "context window",
    "exceeds the context",
    "input token count",
    "too many tokens",
)


# Addresses in transport errors ("Cannot connect to host 10.0.0.7:8000 ssl:default ..."): URLs,
# host:port and bare IPs, replaced before a message can reach a client.
_ADDRESS = re.compile(
    r"[a-z][a-z0-9+.-]*://\S+|\[[0-9a-f:]+\](?::\d+)?|\b[\w.-]+:\d{2,5}\b|\b\d{1,3}(?:\.\d{1,3}){3}\b",
    re.IGNORECASE,
)


def scrub_addresses(text: str) -> str:
    return _ADDRESS.sub("<upstream>", text)


def failure_for_status(status: int) -> UpstreamFailure:
    """The table entry for an HTTP status (by class when the status is not listed)."""
    known = HTTP_FAILURES.get(status)
    if known is not None:
        return known
    return _OTHER_5XX if status >= 500 or status < 400 else _OTHER_4XX


def parse_retry_after(headers: Mapping[str, str] | None, now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, ``Retry-After`` (seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (millis := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every secret replaced, so an upstream echoing a key never leaks it to logs."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


def upstream_error(
    failure: UpstreamFailure,
    endpoint: str,
    detail: str,
    *,
    status: int | None = None,
    retry_after_s: float | None = None,
) -> ServiceError:
    """A ServiceError for one upstream failure; ``detail`` must already be redacted."""
    metadata = {"endpoint": endpoint, "retryable": "true" if failure.retryable else "false"}
    if status is not None:
        metadata["upstream_status"] = str(status)
    prefix = f"upstream {status}" if status is not None else "upstream"
    detail = scrub_addresses(detail)
    return ServiceError(
        failure.code,
        f"{prefix}: {detail}" if detail else prefix,
        reason=failure.reason,
        retry_after_s=retry_after_s,
        metadata=metadata,
    )


def timeout_error(
    endpoint: str, streamed: bool, first_token_s: float, idle_s: float
) -> ServiceError:
    """No first token within ``first_token_s``, or (once streaming) no data for ``idle_s``."""
    if streamed:
        return upstream_error(IDLE_TIMEOUT, endpoint, f"no data for {idle_s:g}s")
    return upstream_error(FIRST_TOKEN_TIMEOUT, endpoint, f"no token within {first_token_s:g}s")


def http_error(
    endpoint: str,
    status: int,
    detail: str,
    headers: Mapping[str, str] | None = None,
    *,
    code: str | None = None,
    param: str | None = None,
) -> ServiceError:
    """The error for an upstream HTTP status; 429 and 503 carry Retry-After as RetryInfo. A
    client error keeps the upstream's ``code`` and ``param`` (OpenAI's error body)."""
    error = upstream_error(
        failure_for_status(status),
        endpoint,
        detail,
        status=status,
        retry_after_s=parse_retry_after(headers),
    )
    if error.code != grpc.StatusCode.INVALID_ARGUMENT:
        return error
    lowered = detail.lower()
    if code == CONTEXT_LENGTH_EXCEEDED or (
        not code and any(words in lowered for words in _CONTEXT_LENGTH_WORDS)
    ):
        code, param = CONTEXT_LENGTH_EXCEEDED, param or "messages"
    if code:
        error.reason = code
    if param:
        error.violations = [FieldViolation(param, detail)]
    return error


def retryable(error: ServiceError) -> bool:
    """The retryable flag of an error built here (False for anything else)."""
    return error.metadata.get("retryable") == "true"
