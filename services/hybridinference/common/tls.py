"""TLS and mTLS for the mesh's gRPC hops, from a service's ``tls`` settings section.

A server with ``cert_file``/``key_file`` listens with TLS; with ``client_ca_file`` too it
requires client certificates signed by that CA (mTLS). Peers dial it with the same section's
client side: ``ca_file`` to verify it, ``client_cert_file``/``client_key_file`` to present.
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
