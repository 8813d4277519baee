"""A throw-away certificate for 127.0.0.1 (openssl CLI), as server and client SSL contexts."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from pathlib import Path


def openssl_available() -> bool:
    return shutil.which("openssl") is not None


def self_signed_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server context with the certificate, client context trusting only it)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=30)
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert, key)
    client = ssl.create_default_context(cafile=str(cert))
    return server, client
