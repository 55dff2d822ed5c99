"""Pebble, Let's Encrypt's ACME test server (Debian package `pebble`): the local stack's certificate
authority when it serves HTTPS.

The TLS terminator runs images/tls-proxy/Caddyfile exactly as on the cluster, issuer `acme` included;
only the directory URL differs. Pebble validates the HTTP-01 challenge by connecting to the
terminator's HTTP port on 127.0.0.1, as Let's Encrypt connects to port 80 of the public IP. It listens
on 127.0.0.1 only, with a certificate of its own (generated here, trusted by the terminator through
SSL_CERT_FILE). Each Pebble start makes a new root; `ca_bundle` keeps every root this working directory
has seen, so certificates the terminator kept from an earlier start still verify.
"""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import shutil
import ssl
import urllib.request
from pathlib import Path

from local.procs import Proc, StackError, spawn, wait_until

INSTALL_HINT = "apt-get install pebble (or run scripts/bootstrap)"


def binary() -> str | None:
    return shutil.which("pebble") or ("/usr/bin/pebble" if os.access("/usr/bin/pebble", os.X_OK) else None)


def _listener_certificate(location: Path) -> tuple[Path, Path]:
    """A self-signed certificate for Pebble's own HTTPS listeners (127.0.0.1 and localhost)."""
    cert, key = location / "listener.pem", location / "listener-key.pem"
    if cert.is_file() and key.is_file():
        return cert, key
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mlflow-aks local ACME")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    fd = os.open(key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(
            private.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return cert, key


def listener_certificate(location: Path) -> Path:
    """What a client of Pebble itself (the terminator's ACME client) must trust."""
    return _listener_certificate(location)[0]


def directory_url(port: int) -> str:
    return f"https://localhost:{port}/dir"


def start(location: Path, port: int, management_port: int, challenge_http_port: int) -> Proc:
    """Pebble on 127.0.0.1:`port`, validating HTTP-01 challenges on `challenge_http_port`."""
    location.mkdir(parents=True, exist_ok=True)
    os.chmod(location, 0o700)
    cert, key = _listener_certificate(location)
    config = {
        "pebble": {
            "listenAddress": f"127.0.0.1:{port}",
            "managementListenAddress": f"127.0.0.1:{management_port}",
            "certificate": str(cert),
            "privateKey": str(key),
            "httpPort": challenge_http_port,
            # TLS-ALPN-01 is disabled in the Caddyfile; nothing listens for it.
            "tlsPort": challenge_http_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
    }
    (location / "pebble.json").write_text(json.dumps(config, indent=2))
    pebble = binary()
    if pebble is None:
        raise StackError(f"pebble not found: {INSTALL_HINT}")
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        # No random validation delays, no deliberately rejected nonces: the same steps, every time.
        "PEBBLE_VA_NOSLEEP": "1",
        "PEBBLE_WFE_NONCEREJECT": "0",
    }
    return spawn(
        "acme", [pebble, "-config", str(location / "pebble.json")], env=env, log=location / "pebble.log"
    )


def _get(url: str, cafile: Path) -> bytes:
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(url, timeout=5, context=context) as response:  # noqa: S310 - https only
        return response.read()


def wait_ready(proc: Proc, location: Path, port: int, management_port: int) -> None:
    cert = listener_certificate(location)

    def answers() -> bool:
        try:
            _get(directory_url(port), cert)
            _get(f"https://localhost:{management_port}/roots/0", cert)
            return True
        except OSError:
            return False

    wait_until("the local ACME CA (Pebble) to answer", answers, timeout=30, proc=proc)


def ca_bundle(location: Path, management_port: int) -> Path:
    """Add the running Pebble's root to the working directory's bundle; the bundle's path."""
    root = _get(f"https://localhost:{management_port}/roots/0", listener_certificate(location)).decode()
    bundle = location / "ca-bundle.pem"
    known = bundle.read_text() if bundle.is_file() else ""
    if root.strip() not in known:
        with open(bundle, "a") as out:
            out.write(root.strip() + "\n")
    return bundle


def issued_certificates(location: Path) -> int:
    """How many certificates Pebble issued since the working directory's first start (its logs)."""
    total = 0
    for log in location.glob("pebble.log*"):
        total += log.read_text(errors="replace").count("Issued certificate serial")
    return total
