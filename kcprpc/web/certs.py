"""Development certificates for the WebTransport listener.

A browser accepts a self-signed certificate for WebTransport without any certificate authority when
the page passes the certificate's SHA-256 in ``serverCertificateHashes``, provided the certificate
is ECDSA P-256 and valid for at most 14 days (docs/wire-format/web.md, "WebTransport notes").
:func:`make_dev_certificate` makes one (for ``localhost``, ``127.0.0.1`` and ``::1`` by default);
``kcprpc web-cert --out DIR`` writes it and prints its hash. :func:`dev_certificate_hash` tells
whether a certificate qualifies (the discovery document, ``/kcprpc.json``, lists the hash only
then).

Only for development: in production use a certificate from a certificate authority, which needs no
hash and no 14-day renewal.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from kcprpc.errors import UsageError

__all__ = [
    "DEFAULT_HOSTS",
    "MAX_DAYS",
    "DevCertificate",
    "certificate_hash",
    "dev_certificate_hash",
    "make_dev_certificate",
]

MAX_DAYS = 14
"""The longest validity a browser accepts for a certificate given by its hash."""

DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")
"""The names a development certificate is made for."""

_BACKDATE = datetime.timedelta(minutes=5)  # a clock a little behind still accepts it


@dataclass(frozen=True)
class DevCertificate:
    """A self-signed ECDSA P-256 certificate and its key, as PEM."""

    cert_pem: bytes
    """The certificate (PEM)."""
    key_pem: bytes
    """The private key (PKCS #8 PEM, unencrypted)."""
    sha256: bytes
    """SHA-256 of the certificate's DER: the value for ``serverCertificateHashes``."""
    not_after: datetime.datetime
    """When the certificate expires (UTC)."""

    @property
    def hash_hex(self) -> str:
        """:attr:`sha256` as hex."""
        return self.sha256.hex()

    @property
    def hash_base64(self) -> str:
        """:attr:`sha256` as base64 (what ``/kcprpc.json`` lists)."""
        return base64.b64encode(self.sha256).decode("ascii")

    def write(self, out_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
        """Write ``cert.pem`` and ``key.pem`` (mode 600) into ``out_dir`` (made if missing);
        returns their paths."""
        out = Path(out_dir)
        cert_path, key_path = out / "cert.pem", out / "key.pem"
        try:
            out.mkdir(parents=True, exist_ok=True)
            cert_path.write_bytes(self.cert_pem)
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.key_pem)
        except OSError as e:
            raise UsageError(f"cannot write the certificate into {out}: {e.strerror or e}") from None
        return cert_path, key_path


def make_dev_certificate(
    *, days: int = MAX_DAYS, hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS
) -> DevCertificate:
    """A new self-signed ECDSA P-256 certificate valid for ``days`` days (1 to 14) from a few
    minutes ago, for ``hosts`` (DNS names and IP addresses, in its subject alternative names)."""
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_DAYS:
        raise UsageError(
            f"days must be an integer from 1 to {MAX_DAYS} (browsers refuse longer), got {days!r}"
        )
    if not hosts:
        raise UsageError("hosts must name at least one host")
    names: list[x509.GeneralName] = []
    for h in hosts:
        if not isinstance(h, str) or not h:
            raise UsageError(f"hosts must be non-empty strings, got {h!r}")
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])])
    start = datetime.datetime.now(datetime.UTC).replace(microsecond=0) - _BACKDATE
    end = start + datetime.timedelta(days=days)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    return DevCertificate(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ),
        sha256=hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest(),
        not_after=end,
    )


def _load(cert_pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(cert_pem)
    except ValueError as e:
        raise UsageError(f"not a PEM certificate: {e}") from None


def certificate_hash(cert_pem: bytes) -> bytes:
    """SHA-256 of the DER of the first certificate in ``cert_pem``."""
    return hashlib.sha256(_load(cert_pem).public_bytes(serialization.Encoding.DER)).digest()


def dev_certificate_hash(cert_pem: bytes) -> bytes | None:
    """The certificate's SHA-256 when a browser would accept it by hash (ECDSA P-256,
    self-signed, valid for at most 14 days), else None (a certificate from an authority)."""
    cert = _load(cert_pem)
    pub = cert.public_key()
    if not isinstance(pub, ec.EllipticCurvePublicKey) or not isinstance(pub.curve, ec.SECP256R1):
        return None
    if cert.issuer != cert.subject:
        return None
    if cert.not_valid_after_utc - cert.not_valid_before_utc > datetime.timedelta(days=MAX_DAYS):
        return None
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
