"""What every command shares: where to connect and how to report a failed call."""

from __future__ import annotations

from urllib.parse import urlsplit

import grpc

from hybridinference.common.channels import TlsConfigError, channel_credentials
from hybridinference.common.edge_settings import TlsSettings
from hybridinference.common.settings import MeshSettings, dial_address

# Enough for the longest replies; the gateway enforces the real limits.
_OPTIONS = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]


class CliError(Exception):
    """A failure to report as ``error: <message>`` with exit status 1."""


def target_from_url(url: str) -> str:
    """``http://host:port`` (or ``host:port``) → the gRPC target ``host:port``."""
    parsed = urlsplit(url if "://" in url else f"http://{url}")
    if parsed.scheme not in ("http", "") or not parsed.hostname:
        raise CliError(f"--url must look like http://HOST:PORT, got {url!r}")
    if parsed.path not in ("", "/"):
        raise CliError(f"--url takes no path (gRPC uses its own), got {url!r}")
    host = parsed.hostname
    if ":" in host:
        host = f"[{host}]"
    try:
        port = parsed.port or 80
    except ValueError:
        raise CliError(f"--url has an invalid port: {url!r}") from None
    return f"{host}:{port}"


def gateway_target(settings: MeshSettings, url: str | None, direct: bool) -> str:
    """Envoy's port by default (what clients use); the gateway itself with ``--direct``."""
    if url is not None and direct:
        raise CliError("--url and --direct cannot be used together")
    if url is not None:
        return target_from_url(url)
    if direct:
        return settings.gateway.dial_address
    return dial_address(settings.envoy.host, settings.envoy.port)


def channel(target: str, tls: TlsSettings | None = None) -> grpc.Channel:
    """Plaintext, or (m)TLS with the client side of the dialled service's ``tls`` section."""
    if tls is None or not tls.serves_tls:
        return grpc.insecure_channel(target, options=_OPTIONS)
    options: list[tuple[str, int | str]] = list(_OPTIONS)
    if tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    try:
        credentials = channel_credentials(tls)
    except TlsConfigError as error:
        raise CliError(str(error)) from None
    return grpc.secure_channel(target, credentials, options=options)


def describe(error: grpc.RpcError, target: str) -> str:
    """``CODE: message`` for a failed call, with a hint when nothing answered."""
    code = error.code() if isinstance(error, grpc.Call) else None
    details = error.details() if isinstance(error, grpc.Call) else str(error)
    name = code.name if code is not None else "ERROR"
    text = f"{name}: {details or '(no message)'} [{target}]"
    if code is grpc.StatusCode.UNAVAILABLE:
        text += "\n  is the mesh running? start it with `make up`"
    return text
