"""Entra ID cluster access (components/cluster_access.py): the prerequisite check, the kubeconfig, and the
wait until the deploying principal's Azure RBAC role is effective, against an API server on loopback.

The fake API server answers `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews` the way an AKS
API server with Azure RBAC does: 401 while the token is not accepted, then a review whose
`status.allowed` says whether the role allows the action yet (false until Azure RBAC has propagated it).
It plays that propagation as a script of answers and records what the client sent. The token comes from
a stand-in for `kubelogin get-token`: a small Python command printing an ExecCredential.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import ssl
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml
from pulumi_mocks import RecordingMocks, run_program

from components.cluster_access import (
    ACCESS_CHECKS,
    AKS_SERVER_APP_ID,
    REQUIRED_TOOLS,
    ClusterAccessError,
    ClusterAccessProvider,
    PrerequisiteError,
    entra_kubeconfig,
    missing_tools,
    require_tools,
    wait_for_cluster_access,
)

TOKEN = "entra-token-for-the-deploying-user"
PRINCIPAL = "00000000-0000-0000-0000-0000000000bb"
ALL = {check["resource"] for check in ACCESS_CHECKS}


def token_command(token: str = TOKEN) -> list[str]:
    """Prints an ExecCredential, as `kubelogin get-token` does."""
    credential = {
        "kind": "ExecCredential",
        "apiVersion": "client.authentication.k8s.io/v1beta1",
        "spec": {"interactive": False},
        "status": {"expirationTimestamp": "2030-01-01T00:00:00Z", "token": token},
    }
    return [sys.executable, "-c", f"print({json.dumps(json.dumps(credential))})"]


NOT_LOGGED_IN = [
    sys.executable,
    "-c",
    "import sys; sys.stderr.write('ERROR: Please run az login to setup account.'); sys.exit(1)",
]


class FakeApiServer:
    """Answers access reviews from a script, one step per request: an HTTP status to fail with, or the
    set of resources the principal may act on (the rest are denied); the last step repeats."""

    def __init__(self, script: list[int | set[str]], tls: tuple[str, str] | None = None):
        self.script = script
        self.requests: list[dict] = []
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                api.requests.append(
                    {"path": self.path, "authorization": self.headers.get("Authorization"), "body": body}
                )
                step = api.script[min(len(api.requests), len(api.script)) - 1]
                if isinstance(step, int):
                    self._send(step, {"kind": "Status", "code": step})
                    return
                resource = body["spec"]["resourceAttributes"]["resource"]
                allowed = resource in step
                reason = "" if allowed else "User does not have access to the resource in Azure."
                self._send(201, {**body, "status": {"allowed": allowed, "reason": reason}})

            def _send(self, status: int, answer: dict):
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        scheme = "http"
        if tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*tls)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def api_server() -> Iterator[callable]:
    started: list[FakeApiServer] = []

    def start(script, tls=None):
        started.append(FakeApiServer(script, tls))
        return started[-1]

    yield start
    for fake in started:
        fake.server.shutdown()


def wait(fake: FakeApiServer, timeout: float = 10.0, command: list[str] | None = None, **kwargs) -> int:
    return wait_for_cluster_access(
        fake.url, PRINCIPAL, token_command=command or token_command(), timeout_seconds=timeout,
        first_poll_seconds=0.05, **kwargs,
    )  # fmt: skip


# --- the wait -------------------------------------------------------------------------------------------


def test_waits_through_a_rejected_token_and_a_role_not_yet_effective(api_server):
    """401 (Entra integration not ready), then a review that denies (role not propagated), then one
    allowing only part of it: it keeps polling, and returns at the first round where every action the
    deployment takes is allowed, asking nothing more."""
    fake = api_server([401, set(), {"namespaces"}, {"namespaces"}, ALL])
    assert wait(fake) == 4
    # Round 1: 401; round 2: denied at once; round 3: namespaces allowed, persistentvolumes denied;
    # round 4: all four allowed.
    assert len(fake.requests) == 1 + 1 + 2 + len(ACCESS_CHECKS)
    for request in fake.requests:
        assert request["path"] == "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews"
        assert request["authorization"] == f"Bearer {TOKEN}"
        assert request["body"]["kind"] == "SelfSubjectAccessReview"
    asked = [
        request["body"]["spec"]["resourceAttributes"] for request in fake.requests[-len(ACCESS_CHECKS) :]
    ]
    assert asked == [dict(check) for check in ACCESS_CHECKS]
    # What the program deploys: its namespace and MySQL's volume (cluster-scoped), Helm's release Secrets.
    assert {"namespaces", "persistentvolumes", "secrets"} <= ALL
    assert all(check["verb"] == "create" for check in ACCESS_CHECKS)


def test_access_already_effective_is_checked_once(api_server):
    fake = api_server([ALL])
    assert wait(fake) == 1
    assert len(fake.requests) == len(ACCESS_CHECKS)


def test_a_role_never_effective_fails_in_bounded_time_naming_the_role_and_the_principal(api_server):
    fake = api_server([{"namespaces"}])
    started = time.monotonic()
    with pytest.raises(ClusterAccessError) as failure:
        wait(fake, timeout=1.0)
    assert time.monotonic() - started < 5
    message = str(failure.value)
    assert "Azure Kubernetes Service RBAC Cluster Admin" in message
    assert PRINCIPAL in message and "may not create persistentvolumes" in message
    assert "User does not have access" in message, "the API server's reason is passed on"
    assert "Nothing was deployed" in message
    assert TOKEN not in message
    assert len(fake.requests) >= 6, "it polled, it did not sleep through the whole bound"


def test_a_token_never_accepted_fails_naming_the_tenant_and_the_integration(api_server):
    fake = api_server([401])
    with pytest.raises(ClusterAccessError, match=r"rejects the Entra ID token \(HTTP 401\).*tenant"):
        wait(fake, timeout=0.3)


def test_no_az_login_fails_saying_to_log_in_and_sends_nothing(api_server):
    fake = api_server([ALL])
    with pytest.raises(ClusterAccessError) as failure:
        wait(fake, timeout=0.3, command=NOT_LOGGED_IN)
    message = str(failure.value)
    assert "no Entra ID token" in message and "az login" in message
    assert "Please run az login" in message, "kubelogin's own error is passed on"
    assert fake.requests == []


def test_an_unreachable_api_server_names_the_authorized_ip_ranges():
    with pytest.raises(ClusterAccessError) as failure:
        wait_for_cluster_access(
            "http://127.0.0.1:9", PRINCIPAL, token_command=token_command(), timeout_seconds=0.2,
            first_poll_seconds=0.05,
        )  # fmt: skip
    message = str(failure.value)
    assert "did not answer" in message and "apiServerAuthorizedIpRanges" in message


@pytest.fixture(scope="module")
def cluster_ca(tmp_path_factory) -> tuple[str, tuple[str, str]]:
    """A self-signed CA-and-server certificate for 127.0.0.1: (certificate-authority-data, (cert, key))."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiserver")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    directory: Path = tmp_path_factory.mktemp("ca")
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return base64.b64encode(pem).decode(), (str(directory / "cert.pem"), str(directory / "key.pem"))


def test_tls_trusts_exactly_the_clusters_ca(api_server, cluster_ca):
    """The API server's certificate is signed by the cluster's own CA (the kubeconfig's
    certificate-authority-data): the wait trusts that CA, and nothing else does."""
    ca_data, tls = cluster_ca
    fake = api_server([ALL], tls=tls)
    assert wait(fake, certificate_authority_data=ca_data) == 1
    with pytest.raises(ClusterAccessError, match="CERTIFICATE_VERIFY_FAILED"):
        wait(fake, timeout=0.2)  # the system's CAs do not know the cluster's


def test_the_dynamic_provider_waits_on_create_and_again_for_a_new_principal(api_server):
    fake = api_server([set(), ALL])
    provider = ClusterAccessProvider(token_command=token_command(), first_poll_seconds=0.05)
    props = {
        "server": fake.url,
        "certificate_authority_data": "",
        "principal_id": PRINCIPAL,
        "role_assignment_id": "/subscriptions/s/providers/Microsoft.Authorization/roleAssignments/a",
        "checks": [dict(check) for check in ACCESS_CHECKS],
        "timeout_seconds": 10,
    }
    created = provider.create(props)
    assert created.outs["attempts"] == 2
    assert TOKEN not in json.dumps(created.outs), "the state keeps no token"
    # The same principal, assignment and server: no change, so a second `pulumi up` does not poll.
    assert provider.diff(created.id, created.outs, props).changes is False
    assert (
        provider.diff(created.id, created.outs, {**props, "certificate_authority_data": "bmV3"}).changes
        is False
    )
    # Someone else runs `pulumi up`: their assignment is new, and their access is waited for.
    colleague = {
        **props,
        "principal_id": "0000-colleague",
        "role_assignment_id": props["role_assignment_id"] + "2",
    }
    assert provider.diff(created.id, created.outs, colleague).changes is True
    fake.script, fake.requests = [set(), ALL], []
    updated = provider.update(created.id, created.outs, colleague)
    assert updated.outs["attempts"] == 2 and updated.outs["principal_id"] == "0000-colleague"


# --- the prerequisite check -----------------------------------------------------------------------------


def test_the_check_passes_when_both_tools_are_on_path():
    require_tools(which=lambda tool: f"/usr/bin/{tool}")
    assert missing_tools(which=lambda tool: f"/usr/bin/{tool}") == []


@pytest.mark.parametrize("missing", [["kubelogin"], ["az"], ["kubelogin", "az"]], ids="+".join)
def test_the_check_names_each_missing_tool_and_how_to_install_it(missing):
    def which(tool):
        return None if tool in missing else f"/usr/bin/{tool}"

    with pytest.raises(PrerequisiteError) as failure:
        require_tools(which=which)
    message = str(failure.value)
    assert "nothing was created" in message
    for tool in REQUIRED_TOOLS:
        assert (f"  - {tool}:" in message) is (tool in missing)
    if "kubelogin" in missing:
        assert "az aks install-cli" in message
    if "az" in missing:
        assert "install-azure-cli" in message and "az login" in message


@pytest.mark.parametrize("on_path", [(), ("az",), ("kubelogin",)], ids=["neither", "no-kubelogin", "no-az"])
def test_the_program_stops_before_any_resource_or_lookup_when_a_tool_is_missing(on_path):
    mocks = RecordingMocks()
    with pytest.raises(PrerequisiteError) as failure:
        run_program({}, mocks=mocks, tools_on_path=on_path)
    assert mocks.resources == [] and mocks.calls == []
    assert all((f"  - {tool}:" in str(failure.value)) is (tool not in on_path) for tool in REQUIRED_TOOLS)


def test_the_program_deploys_when_both_tools_are_on_path():
    run = run_program({}, tools_on_path=("kubelogin", "az"))
    assert run.one("pulumi:providers:kubernetes")
    assert run.one("pulumi-python:dynamic/mlflow-aks:ClusterAccess")


def test_the_check_looks_tools_up_on_the_real_path_by_default(tmp_path, monkeypatch):
    """Without a `which`, it uses shutil.which: an executable `kubelogin` and `az` on PATH pass."""
    for tool in REQUIRED_TOOLS:
        executable = tmp_path / tool
        executable.write_text("#!/bin/sh\nexit 0\n")
        executable.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_tools() == []
    (tmp_path / "kubelogin").unlink()
    assert missing_tools() == ["kubelogin"]


# --- the kubeconfig -------------------------------------------------------------------------------------

LOCAL_ACCOUNT_KUBECONFIG = """
apiVersion: v1
kind: Config
clusters:
- name: mlflow-aks
  cluster: {server: "https://mlflow.hcp.westeurope.azmk8s.io:443", certificate-authority-data: Q0EK}
users:
- name: clusterUser_mlflow-platform_mlflow-aks
  user: {client-certificate-data: Q0VSVAo=, client-key-data: S0VZCg==, token: static-token}
contexts:
- name: mlflow-aks
  context: {cluster: mlflow-aks, user: clusterUser_mlflow-platform_mlflow-aks}
current-context: mlflow-aks
"""


def test_the_kubeconfig_keeps_only_the_cluster_and_signs_in_with_kubelogin_azurecli():
    """Whatever user Azure's kubeconfig carries (here a local account's client certificate and token),
    the result holds none of it: the one user is kubelogin with the Azure CLI's login."""
    config = yaml.safe_load(entra_kubeconfig(LOCAL_ACCOUNT_KUBECONFIG))
    assert config["clusters"] == [
        {
            "name": "mlflow-aks",
            "cluster": {
                "server": "https://mlflow.hcp.westeurope.azmk8s.io:443",
                "certificate-authority-data": "Q0EK",
            },
        }
    ]
    (user,) = config["users"]
    assert list(user["user"]) == ["exec"]
    exec_ = user["user"]["exec"]
    assert exec_["command"] == "kubelogin"
    assert exec_["args"] == ["get-token", "--login", "azurecli", "--server-id", AKS_SERVER_APP_ID]
    assert exec_["apiVersion"] == "client.authentication.k8s.io/v1beta1"
    assert "az aks install-cli" in exec_["installHint"]
    assert config["contexts"] == [
        {"name": "mlflow-aks", "context": {"cluster": "mlflow-aks", "user": user["name"]}}
    ]
    assert config["current-context"] == "mlflow-aks"
    text = entra_kubeconfig(LOCAL_ACCOUNT_KUBECONFIG)
    for credential in ("client-certificate", "client-key", "token:", "Q0VSVAo=", "S0VZCg==", "static-token"):
        assert credential not in text
    assert entra_kubeconfig(LOCAL_ACCOUNT_KUBECONFIG) == text, "same input, same text (no churn)"
