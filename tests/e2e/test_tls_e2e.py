"""HTTPS for real (issue 10.1): the chart's TLS terminator, run from its rendered container with
images/tls-proxy/Caddyfile, in front of the local tracking server, with a certificate obtained by ACME
HTTP-01 from a local ACME CA (Pebble) instead of Let's Encrypt.

Real clients over HTTPS: login, log_metric, a multi-GiB artifact up and down byte-identical; port 80
answers only the redirect (and the challenge, which the issuance itself proves); HSTS; the certificate
is kept across restarts and shared by a second replica without asking the CA again.
"""

from __future__ import annotations

import hashlib
import os
import re
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from local import LocalStack, acme, free_ports
from local.procs import spawn, stop, wait_until
from tests.e2e.conftest import own_stack

# Multi-GiB, as the issue asks: more than any buffer or default body limit on the way.
ARTIFACT_BYTES = 2 * 1024**3 + 12345
CHUNK = 8 * 1024**2


@pytest.fixture(scope="module")
def https_stack(helm_bin: str) -> Iterator[LocalStack]:
    with own_stack(
        "mlflow-aks-tls-e2e-",
        https=True,
        helm=helm_bin,
    ) as stack:
        yield stack


@pytest.fixture
def https_env(https_stack: LocalStack, monkeypatch) -> dict[str, str]:
    env = https_stack.client_env()
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return env


def served_certificate(stack: LocalStack, port: int | None = None) -> dict:
    context = ssl.create_default_context(cafile=str(stack.ca_bundle))
    with (
        socket.create_connection(("127.0.0.1", port or stack.config.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        return tls.getpeercert()


def test_clients_work_over_https_with_a_certificate_from_acme(https_stack, https_env):
    import mlflow
    from mlflow.tracking import MlflowClient

    assert https_env["MLFLOW_TRACKING_URI"] == f"https://localhost:{https_stack.config.https_port}"
    certificate = served_certificate(https_stack)
    assert ("DNS", "localhost") in certificate["subjectAltName"]
    issuer = dict(item[0] for item in certificate["issuer"])
    assert issuer["commonName"].startswith("Pebble Intermediate CA"), issuer
    assert acme.issued_certificates(https_stack.workdir / "acme") >= 1

    # Login: the admin's basic-auth credentials, over TLS only.
    client = MlflowClient(tracking_uri=https_env["MLFLOW_TRACKING_URI"])
    experiment = client.create_experiment(f"tls-{time.time_ns()}")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "loss", 0.25, step=1)
    assert client.get_run(run.info.run_id).data.metrics["loss"] == 0.25

    # Wrong credentials are refused through the terminator as directly.
    refused = requests.get(
        f"{https_env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment},
        auth=("admin", "not-the-password"),
        verify=https_env["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        timeout=10,
    )
    assert refused.status_code == 401
    ok = requests.get(
        f"{https_env['MLFLOW_TRACKING_URI']}/api/2.0/mlflow/experiments/get",
        params={"experiment_id": experiment},
        auth=(https_env["MLFLOW_TRACKING_USERNAME"], https_env["MLFLOW_TRACKING_PASSWORD"]),
        verify=https_env["MLFLOW_TRACKING_SERVER_CERT_PATH"],
        timeout=10,
    )
    assert ok.status_code == 200
    max_age = ok.headers["Strict-Transport-Security"]
    assert max_age.startswith("max-age=") and int(max_age.split("=")[1]) >= 31536000
    assert "Server" not in ok.headers

    mlflow.set_tracking_uri(https_env["MLFLOW_TRACKING_URI"])
    with tempfile.TemporaryDirectory(dir=https_stack.workdir) as scratch:
        source = Path(scratch) / "model.bin"
        digest = hashlib.sha256()
        seed = hashlib.sha256(b"tls e2e").digest()
        with open(source, "wb") as out:
            written = 0
            block = os.urandom(CHUNK)
            while written < ARTIFACT_BYTES:
                piece = block[: min(CHUNK, ARTIFACT_BYTES - written)]
                # Vary every block (no compression or dedup anywhere can shortcut it).
                piece = seed + piece[len(seed) :] if len(piece) > len(seed) else piece
                seed = hashlib.sha256(seed).digest()
                out.write(piece)
                digest.update(piece)
                written += len(piece)
        started = time.monotonic()
        client.log_artifact(run.info.run_id, str(source), artifact_path="big")
        uploaded = time.monotonic() - started
        source.unlink()
        target = Path(scratch) / "down"
        target.mkdir()
        started = time.monotonic()
        path = mlflow.artifacts.download_artifacts(
            run_id=run.info.run_id, artifact_path="big/model.bin", dst_path=str(target)
        )
        downloaded = time.monotonic() - started
        back = hashlib.sha256()
        with open(path, "rb") as data:
            while piece := data.read(CHUNK):
                back.update(piece)
        assert os.path.getsize(path) == ARTIFACT_BYTES
        assert back.hexdigest() == digest.hexdigest()
    print(f"over HTTPS: {ARTIFACT_BYTES / 1024**3:.2f} GiB up {uploaded:.1f} s, down {downloaded:.1f} s")


def test_port_80_only_redirects_to_https(https_stack, https_env):
    http = f"http://localhost:{https_stack.config.http_port}"
    for method in ("GET", "POST", "PUT"):
        answer = requests.request(
            method,
            f"{http}/api/2.0/mlflow/experiments/search?max_results=1",
            auth=(https_env["MLFLOW_TRACKING_USERNAME"], https_env["MLFLOW_TRACKING_PASSWORD"]),
            allow_redirects=False,
            timeout=10,
        )
        # Permanent, method-preserving, to the same path on HTTPS (port 443: the Service maps it).
        assert answer.status_code == 308, (method, answer.status_code, answer.text[:200])
        assert (
            answer.headers["Location"] == "https://localhost/api/2.0/mlflow/experiments/search?max_results=1"
        )
        assert "experiments" not in answer.text  # nothing came from the tracking server
    # The HTTPS port speaks only TLS: plain HTTP there is refused by the terminator, never proxied.
    plain = requests.get(f"http://localhost:{https_stack.config.https_port}/health", timeout=10)
    assert plain.status_code == 400 and "HTTPS" in plain.text, (plain.status_code, plain.text[:200])


def test_only_the_stack_name_gets_a_certificate(https_stack):
    context = ssl.create_default_context(cafile=str(https_stack.ca_bundle))
    context.check_hostname = False
    with (
        pytest.raises(ssl.SSLError),
        socket.create_connection(("127.0.0.1", https_stack.config.https_port), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="someone-else.example"),
    ):
        pass


def test_the_servers_metrics_carry_the_served_certificates_expiry(https_stack):
    """What MlflowCertificateExpiring reads: the notAfter of the certificate the terminator serves, read by
    the server's metrics process with a handshake (the tracking container has no certificate files)."""
    served = ssl.cert_time_to_seconds(served_certificate(https_stack)["notAfter"])
    text = requests.get(f"http://127.0.0.1:{https_stack.metrics_port}/metrics", timeout=10).text
    found = re.search(r"^mlflow_aks_tls_certificate_expiry_timestamp_seconds ([0-9.e+]+)$", text, re.M)
    assert found, text[-2000:]
    assert float(found[1]) == served


def test_certificate_survives_restarts_and_is_shared_by_a_second_replica(https_stack):
    location = https_stack.workdir / "acme"
    before = served_certificate(https_stack)
    issued = acme.issued_certificates(location)

    https_stack.stop_tls()
    https_stack.start_tls()
    assert served_certificate(https_stack)["serialNumber"] == before["serialNumber"]

    # A second replica: the same rendered container on other ports, the same storage (the claim).
    https_port, http_port = free_ports(2)
    spec = https_stack.tls_spec().with_env(
        MLFLOW_AKS_HTTPS_PORT=str(https_port), MLFLOW_AKS_HTTP_PORT=str(http_port)
    )
    replica = spawn("tls-replica", spec.argv, env=spec.env, log=https_stack.workdir / "tls" / "replica.log")
    try:
        wait_until(
            "the second terminator to serve",
            lambda: _serves(https_stack, https_port),
            timeout=30,
            proc=replica,
        )
        assert served_certificate(https_stack, https_port)["serialNumber"] == before["serialNumber"]
    finally:
        stop(replica)
    assert acme.issued_certificates(location) == issued


def _serves(stack: LocalStack, port: int) -> bool:
    try:
        served_certificate(stack, port)
        return True
    except (OSError, ssl.SSLError):
        return False
