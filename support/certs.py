"""A local certificate authority and one certificate per service, for mTLS inside the mesh.

    make certs                                   # deploy/certs: CA + the compose services
    python -m support.certs OUT [--service NAME[:SAN,SAN...]]... [--days N]

Every service certificate is good for both ends of a connection (serverAuth and clientAuth):
a service listens with it and presents it when it dials a peer that requires client
certificates. Its names are the service name, any extra names given, ``localhost`` and
``127.0.0.1``. The CA's private key is written next to it (``ca.key``) so more certificates can
be issued later; keep it off the hosts that run the mesh. Private keys are written 0600.
Uses ``cryptography`` (a dev dependency): this runs on the operator's machine, not in the image.
"""

from __future__ import annotations

import argparse
import datetime
import ipaddress
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# The services of deploy/docker-compose.yml that speak gRPC inside the mesh, plus Envoy (its
# internal listener fronts the routers) and "operator" (the CLI's client certificate).
COMPOSE_SERVICES = (
    "gateway",
    "router",
    "logger",
    "provider-sim",
    "provider-vllm",
    "provider-openai",
    "provider-gemini",
    "envoy",
    "operator",
)
Key = ec.EllipticCurvePrivateKey


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _subject_alt_names(names: Sequence[str]) -> list[x509.GeneralName]:
    result: list[x509.GeneralName] = []
    for name in dict.fromkeys(names):
        try:
            result.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            result.append(x509.DNSName(name))
    return result


def issue(
    subject: str,
    issuer: tuple[Key, x509.Certificate] | None = None,
    *,
    ca: bool = False,
    names: Sequence[str] = (),
    days: int = 365,
) -> tuple[Key, x509.Certificate]:
    """A self-signed CA (``issuer`` None, ``ca`` True) or a certificate signed by ``issuer``."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer[1].subject if issuer else _name(subject))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                _subject_alt_names([subject, *names, "localhost", "127.0.0.1"])
            ),
            critical=False,
        ).add_extension(
            x509.ExtendedKeyUsage(
                [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
            ),
            critical=False,
        )
    signer = issuer[0] if issuer else key
    return key, builder.sign(signer, hashes.SHA256())


def write(directory: Path, name: str, key: Key, cert: x509.Certificate) -> None:
    """``name.pem`` (certificate) and ``name.key`` (PKCS#8 private key, mode 0600)."""
    directory.mkdir(parents=True, exist_ok=True)
    key_path = directory / f"{name}.key"
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    (directory / f"{name}.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def _load_ca(directory: Path) -> tuple[Key, x509.Certificate] | None:
    key_path, cert_path = directory / "ca.key", directory / "ca.pem"
    if not (key_path.exists() and cert_path.exists()):
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise SystemExit(f"{key_path}: not an EC private key")
    return key, x509.load_pem_x509_certificate(cert_path.read_bytes())


def make_certs(out: Path, services: Sequence[str], days: int = 365) -> list[Path]:
    """The CA (kept if ``out`` already has one) and a certificate per ``NAME[:SAN,...]``."""
    ca = _load_ca(out)
    if ca is None:
        ca = issue("hybridinference-mesh-ca", ca=True, days=days * 5)
        write(out, "ca", *ca)
    written = [out / "ca.pem"]
    for spec in services:
        name, _, extra = spec.partition(":")
        names = [n for n in extra.split(",") if n]
        write(out, name, *issue(name, ca, names=names, days=days))
        written.append(out / f"{name}.pem")
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m support.certs", description=__doc__)
    parser.add_argument("out", type=Path, help="directory to write ca.pem, NAME.pem, NAME.key")
    parser.add_argument(
        "--service",
        action="append",
        help="NAME or NAME:EXTRA_SAN,... (repeatable; default: the compose services)",
    )
    parser.add_argument("--days", type=int, default=365, help="validity of the certificates")
    args = parser.parse_args(argv)
    for path in make_certs(args.out, args.service or COMPOSE_SERVICES, args.days):
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
