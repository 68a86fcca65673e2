"""API key authentication and model authorization: a hash and a dict lookup per request.

Keys come as ``Authorization: Bearer KEY`` or ``x-api-key: KEY`` (HTTP headers through Envoy,
gRPC metadata natively). Errors never repeat the key a client sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import grpc

from hybridinference.common.errors import FieldViolation, ServiceError
from hybridinference.keys.model import ApiKey
from hybridinference.keys.tokens import hash_key

Metadata = Iterable[tuple[str, str | bytes]] | None

_BEARER = "bearer "
# Longer than any key we issue by far; anything beyond is not a key and is not hashed.
MAX_KEY_CHARS = 512


def presented_key(metadata: Metadata) -> str | None:
    """The key a caller sent, or None; ``authorization`` wins over ``x-api-key``."""
    api_key: str | None = None
    for name, value in metadata or ():
        if not isinstance(value, str):
            continue
        if name == "authorization":
            if value[: len(_BEARER)].lower() == _BEARER:
                return value[len(_BEARER) :].strip()
            # Some other scheme (Basic …): not a key, but not "no key" either.
            return value.strip()
        if name == "x-api-key":
            api_key = value.strip()
    return api_key


def missing_key() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAUTHENTICATED,
        "You didn't provide an API key. Send it as 'Authorization: Bearer KEY' or "
        "'x-api-key: KEY' (HTTP headers or gRPC metadata).",
        "invalid_api_key",
        openai_type="invalid_request_error",
    )


def invalid_key() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.UNAUTHENTICATED,
        "Incorrect API key provided.",
        "invalid_api_key",
        openai_type="invalid_request_error",
    )


def model_not_allowed(model: str) -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        f"This API key does not have access to the model '{model[:256]}'.",
        "model_not_allowed",
        metadata={"model": model[:256]},
    )


def admin_required() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        "This operation needs an admin API key.",
        "admin_key_required",
    )


def pinning_not_allowed() -> ServiceError:
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        "The x-hybridinference-endpoint header (pinning a request to one endpoint) needs an "
        "admin API key.",
        "pinning_requires_admin_key",
        violations=[FieldViolation("x-hybridinference-endpoint", "needs an admin API key")],
    )


def admin_auth_disabled() -> ServiceError:
    # With auth off every caller is anonymous, so no caller can be told apart as an admin: the
    # admin RPCs stay shut rather than open to anyone who can reach the gateway.
    return ServiceError(
        grpc.StatusCode.PERMISSION_DENIED,
        "Admin RPCs need API keys: set gateway.auth.enabled and call with an admin key.",
        "admin_auth_disabled",
    )


class KeyCache:
    """Active keys by HMAC, swapped whole when the store changes (readers never see a mix)."""

    def __init__(self, secret: bytes) -> None:
        self._secret = secret
        self._by_hash: dict[str, ApiKey] = {}

    def replace(self, keys: Sequence[ApiKey]) -> None:
        self._by_hash = {key.key_hash: key for key in keys if key.active}

    def __len__(self) -> int:
        return len(self._by_hash)

    def lookup(self, plain: str) -> ApiKey | None:
        if not plain or len(plain) > MAX_KEY_CHARS:
            return None
        return self._by_hash.get(hash_key(self._secret, plain))


class Authenticator:
    """Who is calling. With auth off every call is anonymous (None) and nothing is checked."""

    def __init__(self, cache: KeyCache | None) -> None:
        self._cache = cache

    @property
    def enabled(self) -> bool:
        return self._cache is not None

    def authenticate(self, metadata: Metadata) -> ApiKey | None:
        if self._cache is None:
            return None
        plain = presented_key(metadata)
        if not plain:
            raise missing_key()
        key = self._cache.lookup(plain)
        if key is None:
            raise invalid_key()
        return key

    @staticmethod
    def authorize(key: ApiKey | None, model: str) -> None:
        if key is not None and not key.may_use(model):
            raise model_not_allowed(model)
