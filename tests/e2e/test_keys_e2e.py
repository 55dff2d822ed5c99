"""What MLflow encrypts in its database opens with the stack's keys, on every replica, and with nothing else.

A gateway secret (an LLM provider's API key) is created through the stack's server, and a webhook with a
signing secret through a second server process from the chart's environment (a replica), which then
stops. Then:
- no server process fell back to MLflow's public default passphrase (its warning is in no log);
- a third server process (another replica, or a restarted pod) delivers the webhook signed with the
  secret (a local receiver checks the HMAC): it read the secret.

With another stack's keys neither opens: tests/e2e/test_kept_data_e2e.py restores a backup of both into a
stack with other keys, through the stack's restore path.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import http.server
import threading
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest

from local import free_port
from local.procs import spawn, stop, wait_until
from tests.e2e.keys import (
    DEFAULT_PASSPHRASE_WARNING,
    create_webhook,
    store_gateway_secret,
)


class _Receiver(http.server.BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[dict[str, str], bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.append(({k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


@pytest.fixture(scope="module")
def receiver() -> Iterator[tuple[str, list]]:
    """A webhook receiver on loopback: (its URL, what it received)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", _Receiver.received
    finally:
        server.shutdown()


@contextlib.contextmanager
def _replica(stack, name: str) -> Iterator[str]:
    """One more server process from the chart's environment, as a replica (or a restarted pod) is. Its
    webhooks may go to the receiver: plain HTTP on loopback, which MLflow refuses by default."""
    spec = stack.server_spec().main
    port = free_port()
    argv = list(spec.argv)
    argv[argv.index("--port") + 1] = str(port)
    env = {
        **spec.env,
        "MLFLOW_AKS_METRICS_PORT": str(free_port()),
        "MLFLOW_WEBHOOK_ALLOW_PRIVATE_IPS": "true",
        "MLFLOW_WEBHOOK_ALLOWED_SCHEMES": "http",
    }
    log = stack.workdir / "server" / f"{name}.log"
    proc = spawn(name, argv, env=env, log=log, cwd=spec.cwd)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until(
            name, lambda: httpx.get(f"{url}/health", timeout=2).status_code == 200, timeout=120, proc=proc
        )
        yield url
    finally:
        stop(proc)
        assert DEFAULT_PASSPHRASE_WARNING not in log.read_text(errors="replace")


@pytest.fixture(scope="module")
def stored(stack, receiver) -> dict[str, str]:
    """A gateway secret created through the stack's server, and a webhook with a secret created through
    another replica, which then stops."""
    url, _ = receiver
    with httpx.Client(base_url=stack.tracking_uri, auth=stack.admin_credentials(), timeout=60) as http:
        gateway = store_gateway_secret(http)
    with _replica(stack, "keys-replica-a") as replica, \
            httpx.Client(base_url=replica, auth=stack.admin_credentials(), timeout=60) as http:  # fmt: skip
        webhook = create_webhook(http, url)
    return {**gateway, **webhook}


def test_the_server_never_uses_mlflows_default_passphrase(stack, stored):
    assert stored["secret_id"]  # made by this server, whose key-encryption key was derived then
    log = (stack.workdir / "server" / "server.log").read_text(errors="replace")
    assert DEFAULT_PASSPHRASE_WARNING not in log


def test_another_replica_delivers_the_webhook_signed_with_its_secret(stack, stored, receiver):
    """Made on one server process, which has stopped since; delivered by a new one (another pod, or the
    same after a restart): each process's own key (MLflow's default) could not have read the secret."""
    _, received = receiver
    with _replica(stack, "keys-replica-b") as replica, \
            httpx.Client(base_url=replica, auth=stack.admin_credentials(), timeout=60) as http:  # fmt: skip
        tested = http.post(f"/api/2.0/mlflow/webhooks/{stored['webhook_id']}/test", json={})
    assert tested.status_code == 200, tested.text
    assert tested.json()["result"]["success"] is True, tested.text
    headers, body = received[-1]
    signed = f"{headers['x-mlflow-delivery-id']}.{headers['x-mlflow-timestamp']}.{body.decode()}"
    digest = hmac.new(stored["webhook_secret"].encode(), signed.encode(), hashlib.sha256).digest()
    assert headers["x-mlflow-signature"] == "v1," + base64.b64encode(digest).decode()
