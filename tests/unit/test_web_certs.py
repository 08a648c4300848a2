"""kcprpc.web.certs and ``kcprpc web-cert``: a certificate a browser accepts by its hash."""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from kcprpc.cli import main
from kcprpc.errors import UsageError
from kcprpc.web.certs import (
    MAX_DAYS,
    certificate_hash,
    dev_certificate_hash,
    make_dev_certificate,
)


def test_dev_certificate_is_ecdsa_p256_self_signed_for_the_loopback_names() -> None:
    dev = make_dev_certificate(days=MAX_DAYS)
    cert = x509.load_pem_x509_certificate(dev.cert_pem)
    pub = cert.public_key()
    assert isinstance(pub, ec.EllipticCurvePublicKey) and isinstance(pub.curve, ec.SECP256R1)
    assert cert.issuer == cert.subject
    pub.verify(cert.signature, cert.tbs_certificate_bytes, ec.ECDSA(hashes.SHA256()))
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert set(san.get_values_for_type(x509.IPAddress)) == {
        ipaddress.ip_address("127.0.0.1"),
        ipaddress.ip_address("::1"),
    }
    # the key matches the certificate
    key = serialization.load_pem_private_key(dev.key_pem, password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    assert key.public_key().public_numbers() == pub.public_numbers()


def test_validity_is_at_most_14_days_and_started_already() -> None:
    now = datetime.datetime.now(datetime.UTC)
    for days in (1, 7, MAX_DAYS):
        cert = x509.load_pem_x509_certificate(make_dev_certificate(days=days).cert_pem)
        assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=days)
        assert cert.not_valid_before_utc <= now


def test_hash_is_sha256_of_der_in_hex_and_base64() -> None:
    dev = make_dev_certificate(days=2)
    der = x509.load_pem_x509_certificate(dev.cert_pem).public_bytes(serialization.Encoding.DER)
    want = hashlib.sha256(der).digest()
    assert dev.sha256 == want == certificate_hash(dev.cert_pem) == dev_certificate_hash(dev.cert_pem)
    assert dev.hash_hex == want.hex()
    assert base64.b64decode(dev.hash_base64) == want
    assert make_dev_certificate(days=2).sha256 != want  # a new key each time


@pytest.mark.parametrize("days", [0, 15, -1, 1.5, True, "3"])
def test_days_outside_1_to_14_is_a_usage_error(days: object) -> None:
    with pytest.raises(UsageError, match="days must be an integer from 1 to 14"):
        make_dev_certificate(days=days)  # type: ignore[arg-type]


def test_hosts_must_be_given() -> None:
    with pytest.raises(UsageError, match="at least one host"):
        make_dev_certificate(hosts=())
    dev = make_dev_certificate(hosts=["game.test", "10.0.0.1"])
    cert = x509.load_pem_x509_certificate(dev.cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["game.test"]


def _self_signed(key: ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey, days: int) -> bytes:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "x")])
    start = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(1)
        .not_valid_before(start)
        .not_valid_after(start + datetime.timedelta(days=days))
        .sign(key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def test_dev_certificate_hash_only_for_what_browsers_accept_by_hash() -> None:
    p256 = ec.generate_private_key(ec.SECP256R1())
    assert dev_certificate_hash(_self_signed(p256, 14)) is not None
    assert dev_certificate_hash(_self_signed(p256, 15)) is None  # too long
    assert dev_certificate_hash(_self_signed(ec.generate_private_key(ec.SECP384R1()), 5)) is None
    assert dev_certificate_hash(_self_signed(rsa.generate_private_key(65537, 2048), 5)) is None
    with pytest.raises(UsageError, match="not a PEM certificate"):
        certificate_hash(b"garbage")


def test_cli_writes_cert_and_private_key_and_prints_the_hash(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "certs"
    assert main(["web-cert", "--out", str(out), "--days", "3"]) == 0
    lines = dict(line.rsplit(" ", 1) for line in capsys.readouterr().out.splitlines())
    pem = (out / "cert.pem").read_bytes()
    want = certificate_hash(pem)
    assert lines["sha256 hex"] == want.hex()
    assert base64.b64decode(lines["sha256 base64"]) == want
    assert stat.S_IMODE((out / "key.pem").stat().st_mode) == 0o600
    serialization.load_pem_private_key((out / "key.pem").read_bytes(), password=None)
    cert = x509.load_pem_x509_certificate(pem)
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=3)


def test_cli_refuses_more_than_14_days_and_an_unwritable_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["web-cert", "--out", str(tmp_path), "--days", "30"]) == 2
    assert "days must be an integer from 1 to 14" in capsys.readouterr().err
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["web-cert", "--out", str(afile)]) == 2
    assert "cannot write the certificate into" in capsys.readouterr().err
    assert not (tmp_path / "cert.pem").exists()
