"""Channel and listener setup for every gRPC hop of the mesh: options, plaintext, TLS, mTLS.

Servers (common/server.py's bootstrap) and clients (the gateway's router client, the router's
worker channels, the record shipper) take their options and credentials from here only.

TLS comes from a service's ``tls`` settings section. A server with ``cert_file``/``key_file``
listens with TLS; with ``client_ca_file`` too it requires client certificates signed by that CA
(mTLS). Peers dial it with the same section's client side: ``ca_file`` to verify it,
``client_cert_file``/``client_key_file`` to present.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from hybridinference.common.edge_settings import TlsSettings


class TlsConfigError(Exception):
    """A certificate or key file is missing or unreadable; the message names it."""


def _read(path: str, what: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as error:
        raise TlsConfigError(f"cannot read the TLS {what} {path}: {error.strerror}") from None


# Messages up to 64 MiB (long prompts); keepalives so a dead peer is noticed mid-stream.
SERVER_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
    # gRPC turns SO_REUSEPORT on by default, so a second process could bind a port already in use
    # and silently take half its connections; a port conflict must fail at startup instead.
    ("grpc.so_reuseport", 0),
    # Request metadata up to 32 KiB, above Envoy's 16 KiB header limit (max_request_headers_kb in
    # deploy/envoy/envoy.yaml): a client with huge headers meets the edge's 431, not gRPC's
    # default 8 KiB soft limit (a RESOURCE_EXHAUSTED that reached HTTP clients as 429).
    ("grpc.max_metadata_size", 32 * 1024),
]


def server_options(max_receive_bytes: int | None = None) -> list[tuple[str, int]]:
    """SERVER_OPTIONS, with a lower limit on received messages for a public port."""
    if max_receive_bytes is None:
        return SERVER_OPTIONS
    return [
        (key, max_receive_bytes) if key == "grpc.max_receive_message_length" else (key, value)
        for key, value in SERVER_OPTIONS
    ]


CHANNEL_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.keepalive_time_ms", 30_000),
    ("grpc.keepalive_timeout_ms", 10_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    # A peer on the same host that restarts (or starts a moment after us) is back within
    # milliseconds; gRPC's default reconnect backoff (1 s growing to 120 s) would keep failing
    # requests long after it is listening again.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 2_000),
]


def insecure_channel(address: str) -> grpc.aio.Channel:
    """A channel to another service of the mesh; create one per peer and reuse it."""
    return grpc.aio.insecure_channel(address, options=CHANNEL_OPTIONS)


def server_credentials(tls: TlsSettings) -> grpc.ServerCredentials:
    key = _read(tls.key_file, "private key")
    chain = _read(tls.cert_file, "certificate")
    client_ca = _read(tls.client_ca_file, "client CA") if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(key, chain)],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def channel_credentials(tls: TlsSettings) -> grpc.ChannelCredentials:
    root = _read(tls.ca_file, "CA") if tls.ca_file else None
    key = _read(tls.client_key_file, "client key") if tls.client_key_file else None
    chain = _read(tls.client_cert_file, "client certificate") if tls.client_cert_file else None
    return grpc.ssl_channel_credentials(root, key, chain)


def dial(address: str, tls: TlsSettings | None, options: list[tuple[str, int]]) -> grpc.aio.Channel:
    """A channel to a peer: TLS when the peer's section serves TLS, else plaintext."""
    if tls is None or not tls.serves_tls:
        return grpc.aio.insecure_channel(address, options=options)
    secure_options: list[tuple[str, int | str]] = list(options)
    if tls.server_name:
        secure_options.append(("grpc.ssl_target_name_override", tls.server_name))
    return grpc.aio.secure_channel(address, channel_credentials(tls), options=secure_options)


def listen(server: grpc.aio.Server, address: str, tls: TlsSettings | None) -> int:
    """Binds plaintext, or TLS / mTLS when the section has a certificate."""
    if tls is None or not tls.serves_tls:
        return int(server.add_insecure_port(address))
    try:
        credentials = server_credentials(tls)
    except TlsConfigError as error:
        raise SystemExit(str(error)) from None
    return int(server.add_secure_port(address, credentials))
