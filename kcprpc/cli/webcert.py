"""``kcprpc web-cert --out DIR [--days N]``: a development certificate for the WebTransport
listener (``serve --wt HOST:PORT --wt-cert DIR/cert.pem --wt-key DIR/key.pem``), and its SHA-256
for a browser's ``serverCertificateHashes`` (:mod:`kcprpc.web.certs`)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def cmd_web_cert(args: argparse.Namespace) -> int:
    """``kcprpc web-cert``: write cert.pem and key.pem, print the certificate's hash."""
    from kcprpc.web.certs import make_dev_certificate

    cert = make_dev_certificate(days=args.days)
    cert_path, key_path = cert.write(args.out)
    print(f"certificate {cert_path}, key {key_path} (mode 600)", file=sys.stderr)
    print(f"valid until {cert.not_after.isoformat()} (browsers accept a hash only for 14 days)", file=sys.stderr)
    print(f"sha256 hex {cert.hash_hex}")
    print(f"sha256 base64 {cert.hash_base64}")
    return 0


def add_web_cert_command(sub: Any) -> None:
    """Register ``web-cert`` on an ``argparse`` sub-parsers object."""
    from kcprpc.web.certs import MAX_DAYS

    w = sub.add_parser(
        "web-cert",
        help="a development certificate for WebTransport (self-signed ECDSA P-256, valid <= 14 days)",
    )
    w.add_argument("--out", required=True, help="folder for cert.pem and key.pem (made if missing)")
    w.add_argument(
        "--days", type=int, default=MAX_DAYS, help=f"validity in days, 1 to {MAX_DAYS} (default {MAX_DAYS})"
    )
    w.set_defaults(func=cmd_web_cert, is_async=False)
