"""Admin requests checked and turned into the logger's and the key store's terms.

Every bad field is INVALID_ARGUMENT naming it (`limits.requests_per_minute`, `window_seconds`),
never a 5xx; the logger checks what it owns again (page tokens, time ranges).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pydantic import ValidationError

from hybridinference.common.edge_settings import KeyLimitSettings
from hybridinference.common.errors import FieldViolation, invalid_argument
from hybridinference.gateway.v1 import admin_pb2
from hybridinference.keys.issue import MAX_NAME_CHARS
from hybridinference.logger.v1 import logger_pb2

DEFAULT_WINDOW_S = 3600
WINDOW_RANGE_S = (60, 86_400)
DEFAULT_BUCKET_S = 60
BUCKET_RANGE_S = (10, 3600)
MAX_BUCKETS = 1440
MAX_MODELS_PER_KEY = 256


def traffic_request(
    request: admin_pb2.GetTrafficRequest, now: datetime | None = None
) -> logger_pb2.GetTrafficRequest:
    """The last ``window_seconds`` up to now: rolling buckets, so every bucket is complete."""
    window = request.window_seconds or DEFAULT_WINDOW_S
    bucket = request.bucket_seconds or DEFAULT_BUCKET_S
    problems = []
    if not WINDOW_RANGE_S[0] <= window <= WINDOW_RANGE_S[1]:
        problems.append(
            FieldViolation("window_seconds", "must be between {} and {}".format(*WINDOW_RANGE_S))
        )
    if not BUCKET_RANGE_S[0] <= bucket <= BUCKET_RANGE_S[1]:
        problems.append(
            FieldViolation("bucket_seconds", "must be between {} and {}".format(*BUCKET_RANGE_S))
        )
    elif -(-window // bucket) > MAX_BUCKETS:
        problems.append(
            FieldViolation("bucket_seconds", f"the window would hold more than {MAX_BUCKETS}")
        )
    if problems:
        raise invalid_argument(problems)
    end = now or datetime.now(UTC)
    out = logger_pb2.GetTrafficRequest(bucket_seconds=bucket)
    out.start_time.FromDatetime(end - timedelta(seconds=window))
    out.end_time.FromDatetime(end)
    return out


def records_request(request: admin_pb2.ListRequestsRequest) -> logger_pb2.ListRecordsRequest:
    out = logger_pb2.ListRecordsRequest(
        model=request.model,
        api_key_id=request.api_key_id,
        status=request.status,
        endpoint=request.endpoint,
        errors_only=request.errors_only,
        page_size=request.page_size,
        page_token=request.page_token,
    )
    if request.HasField("start_time"):
        out.start_time.CopyFrom(request.start_time)
    if request.HasField("end_time"):
        out.end_time.CopyFrom(request.end_time)
    return out


def usage_request(request: admin_pb2.GetUsageRequest) -> logger_pb2.GetUsageRequest:
    out = logger_pb2.GetUsageRequest(api_key_id=request.api_key_id, model=request.model)
    if request.HasField("start_time"):
        out.start_time.CopyFrom(request.start_time)
    if request.HasField("end_time"):
        out.end_time.CopyFrom(request.end_time)
    return out


def key_limits(limits: admin_pb2.KeyLimits, field_prefix: str = "limits") -> KeyLimitSettings:
    """The limits a request sets (absent ones unset), checked like the config's."""
    values = {
        descriptor.name: value for descriptor, value in limits.ListFields() if descriptor.name
    }
    try:
        return KeyLimitSettings(**values)
    except ValidationError as error:
        raise invalid_argument(
            FieldViolation(
                ".".join([field_prefix, *(str(part) for part in item["loc"])]), item["msg"]
            )
            for item in error.errors()
        ) from None


def key_name(name: str) -> str:
    cleaned = name.strip()
    if not cleaned or len(cleaned) > MAX_NAME_CHARS:
        raise invalid_argument([FieldViolation("name", f"must be 1..{MAX_NAME_CHARS} characters")])
    return cleaned


def key_models(models: list[str]) -> tuple[str, ...]:
    unique = tuple(dict.fromkeys(models))
    if len(unique) > MAX_MODELS_PER_KEY or any(not model.strip() for model in unique):
        raise invalid_argument(
            [FieldViolation("models", f"at most {MAX_MODELS_PER_KEY} non-empty model names")]
        )
    return unique
