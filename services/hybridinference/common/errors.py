"""Error mapping, in one place: domain errors → gRPC status with google.rpc details → HTTP/OpenAI.

Services raise ``ServiceError``; servicers turn it into a rich gRPC status with ``abort``. The
OpenAI surface renders the same error as OpenAI's JSON with the HTTP status Envoy would give.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
import orjson
from google.protobuf import any_pb2, duration_pb2
from google.protobuf.message import Message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

ERROR_DOMAIN = "hybridinference.dev"

# gRPC code → HTTP status, as Envoy's transcoder maps them.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}

# gRPC code → OpenAI error `type`.
OPENAI_ERROR_TYPE: dict[grpc.StatusCode, str] = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request_error",
    grpc.StatusCode.NOT_FOUND: "invalid_request_error",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_request_error",
    grpc.StatusCode.OUT_OF_RANGE: "invalid_request_error",
    grpc.StatusCode.UNAUTHENTICATED: "authentication_error",
    grpc.StatusCode.PERMISSION_DENIED: "permission_error",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limit_error",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout_error",
    grpc.StatusCode.CANCELLED: "cancelled",
}

# Reasons whose offending field is implied (OpenAI clients read it from `param`).
_PARAM_BY_REASON = {"model_not_found": "model"}

_CODE_BY_VALUE = {code.value[0]: code for code in grpc.StatusCode}


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


@dataclass(frozen=True)
class QuotaViolation:
    """One exhausted quota (google.rpc.QuotaFailure.Violation): whose, and which limit."""

    subject: str
    description: str


@dataclass
class ServiceError(Exception):
    """An error with a gRPC code, a reason for machines and a message for people."""

    code: grpc.StatusCode
    message: str
    # Machine-readable reason (ErrorInfo.reason and the OpenAI `code`), e.g. "model_not_found".
    reason: str = ""
    violations: list[FieldViolation] = field(default_factory=list)
    retry_after_s: float | None = None
    metadata: dict[str, str] = field(default_factory=dict)
    # Exhausted quotas, sent as google.rpc.QuotaFailure (with RESOURCE_EXHAUSTED).
    quota_violations: list[QuotaViolation] = field(default_factory=list)
    # OpenAI error `type` when it differs from the code's usual one (OpenAI itself answers a bad
    # API key with "invalid_request_error", not "authentication_error").
    openai_type: str = ""
    # HTTP status when the gRPC code's usual one is not the right answer (413 for a body over
    # the limit, which gRPC has no code for).
    http_status_override: int | None = None

    def __str__(self) -> str:
        return f"{self.code.name}: {self.message}"

    @property
    def param(self) -> str | None:
        """The offending field, as OpenAI's `param`."""
        if self.violations:
            return self.violations[0].field
        return _PARAM_BY_REASON.get(self.reason)

    def to_status_proto(self) -> status_pb2.Status:
        """The error as google.rpc.Status, with its details (BadRequest, ErrorInfo, ...)."""
        details: list[any_pb2.Any] = []
        if self.violations:
            bad_request = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            details.append(_pack(bad_request))
        if self.reason:
            info = error_details_pb2.ErrorInfo(
                reason=self.reason, domain=ERROR_DOMAIN, metadata=self.metadata
            )
            details.append(_pack(info))
        if self.quota_violations:
            failure = error_details_pb2.QuotaFailure(
                violations=[
                    error_details_pb2.QuotaFailure.Violation(
                        subject=v.subject, description=v.description
                    )
                    for v in self.quota_violations
                ]
            )
            details.append(_pack(failure))
        if self.retry_after_s is not None:
            delay = duration_pb2.Duration()
            delay.FromNanoseconds(int(self.retry_after_s * 1e9))
            details.append(_pack(error_details_pb2.RetryInfo(retry_delay=delay)))
        return status_pb2.Status(code=self.code.value[0], message=self.message, details=details)

    def to_status(self) -> grpc.Status:
        return rpc_status.to_status(self.to_status_proto())

    def openai_body(self) -> bytes:
        """OpenAI's error JSON for this error."""
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.openai_type or OPENAI_ERROR_TYPE.get(self.code, "api_error"),
                    "param": self.param,
                    "code": self.reason or None,
                }
            }
        )

    @property
    def http_status(self) -> int:
        if self.http_status_override is not None:
            return self.http_status_override
        return HTTP_STATUS.get(self.code, 500)


# Mid-stream failures of the upstream hop (a worker or router gone, a connection reset): their
# gRPC messages ("Stream removed (Socket closed)", peer addresses) are not the client's business.
_DISCONNECTS = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.ABORTED,
    grpc.StatusCode.DATA_LOSS,
    grpc.StatusCode.CANCELLED,
}
UPSTREAM_DISCONNECTED = "upstream_disconnected"


def stream_cut_error(error: ServiceError, tokens_sent: int) -> ServiceError:
    """What the client is told when its stream fails after ``tokens_sent`` content deltas: a
    stable code, a message naming no internal address. The stream then ends *without*
    ``[DONE]``, so a client that skips error events still sees a truncated answer, not a
    complete one."""
    if error.code == grpc.StatusCode.DEADLINE_EXCEEDED:
        reason, why = "timeout", "the request deadline passed"
    elif error.code in _DISCONNECTS:
        reason, why = UPSTREAM_DISCONNECTED, "the model's upstream disconnected"
    else:
        return error
    return ServiceError(
        error.code,
        f"The response was cut off after {tokens_sent} tokens: {why}. The answer is incomplete.",
        reason,
    )


def _pack(message: Message) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)
    return packed


def invalid_argument(violations: Iterable[FieldViolation]) -> ServiceError:
    items = list(violations)
    message = "; ".join(f"{v.field}: {v.description}" for v in items)
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, "invalid_request", items)


def unsupported_parameter(violations: Iterable[FieldViolation]) -> ServiceError:
    """A valid field the chosen model cannot honour: refused rather than silently ignored."""
    items = list(violations)
    message = "; ".join(f"{v.field}: {v.description}" for v in items)
    return ServiceError(grpc.StatusCode.INVALID_ARGUMENT, message, "unsupported_parameter", items)


async def abort(context: grpc.aio.ServicerContext, error: ServiceError) -> NoReturn:
    """Ends the call with the error's rich status (details travel in grpc-status-details-bin)."""
    await context.abort_with_status(error.to_status())
    raise AssertionError("abort_with_status returned")  # pragma: no cover


def from_rpc_error(error: grpc.aio.AioRpcError) -> ServiceError:
    """Rebuilds a ServiceError from a peer's status, keeping its reason and retry hint."""
    code = error.code()
    result = ServiceError(code, error.details() or code.name)
    status = rpc_status.from_call(error)
    if status is None:
        return result
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            result.reason = info.reason
            result.metadata = dict(info.metadata)
        elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
            retry = error_details_pb2.RetryInfo()
            detail.Unpack(retry)
            result.retry_after_s = retry.retry_delay.ToNanoseconds() / 1e9
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            result.violations = [
                FieldViolation(v.field, v.description) for v in bad.field_violations
            ]
        elif detail.Is(error_details_pb2.QuotaFailure.DESCRIPTOR):
            quota = error_details_pb2.QuotaFailure()
            detail.Unpack(quota)
            result.quota_violations = [
                QuotaViolation(v.subject, v.description) for v in quota.violations
            ]
    return result


def code_from_value(value: int) -> grpc.StatusCode:
    return _CODE_BY_VALUE.get(value, grpc.StatusCode.UNKNOWN)


__all__ = [
    "HTTP_STATUS",
    "FieldViolation",
    "QuotaViolation",
    "ServiceError",
    "abort",
    "code_from_value",
    "from_rpc_error",
    "invalid_argument",
    "stream_cut_error",
    "unsupported_parameter",
]
