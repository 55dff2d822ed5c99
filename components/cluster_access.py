"""Cluster access through Entra ID: the kubeconfig, the tools it needs, and a wait until it may deploy.

The cluster has AKS-managed Entra ID with Azure RBAC and no local accounts, so every Kubernetes call is
made with the Entra ID token of a person (or CI principal), fetched by the kubelogin exec plugin from
the Azure CLI's login (`kubelogin get-token --login azurecli`). Three parts:

- `require_tools()`: kubelogin and az must be on PATH before anything is created, or the Kubernetes
  provider would fail half-way through the first `pulumi up`.
- `entra_kubeconfig()`: the cluster's server and CA from Azure, with a kubelogin user and nothing else
  (no client certificate, no token).
- `ClusterAccess`, a dynamic resource that polls the API server with that token, asking
  SelfSubjectAccessReviews for what the deployment does, until they are allowed. The deploying principal's
  "Azure Kubernetes Service RBAC Cluster Admin" assignment is seconds old when the first Kubernetes
  resource is created, and "new role assignments can take up to five minutes to propagate and be updated
  by the authorization server" (https://learn.microsoft.com/azure/aks/manage-azure-rbac). A review goes
  through the same authorizers as the real request (the Azure RBAC webhook first, see
  MicrosoftDocs/azure-docs#83505), so "allowed" means the Helm releases will be too. No blind sleep: it
  returns at the first answer that allows everything, and fails after `timeout_seconds` naming what is
  still missing. A new principal (someone else runs `pulumi up`) or a new server checks again.
"""

from __future__ import annotations

import base64
import json
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pulumi
import yaml
from pulumi import dynamic

# The AKS Microsoft Entra server application: the audience of every AKS Entra token, the same in every
# tenant (https://azure.github.io/kubelogin/concepts/aks.html).
AKS_SERVER_APP_ID = "6dae42f8-4368-4678-94ff-3960e28e3630"
# The user's own `az login`; non-interactive, so it also works under `pulumi up` and in CI (az logged in
# as a service principal). Azure's own kubeconfig asks for a device-code login instead
# (pulumi/pulumi-azure-native#2399), which blocks a provider waiting for a human.
KUBELOGIN_ARGS = ("get-token", "--login", "azurecli", "--server-id", AKS_SERVER_APP_ID)
INSTALL_HINT = "kubelogin is not on PATH: install it with `az aks install-cli`"
ROLE_NAME = "Azure Kubernetes Service RBAC Cluster Admin"

# Tool -> how to get it. Both are needed by every Kubernetes call of `pulumi up` (the provider's exec
# plugin runs kubelogin, which reads the token from az).
REQUIRED_TOOLS = {
    "kubelogin": "the Entra ID credential plugin for kubectl and the Kubernetes provider: install it with "
    "`az aks install-cli` (or see https://azure.github.io/kubelogin/install.html)",
    "az": "the Azure CLI, whose login kubelogin uses: see "
    "https://learn.microsoft.com/cli/azure/install-azure-cli, then `az login`",
}

# What the deployment does that needs the role, as SelfSubjectAccessReview resource attributes:
# cluster-scoped creates (the namespace, MySQL's PersistentVolume) and namespaced ones in every namespace
# (Helm keeps its releases in Secrets; the charts' workloads).
ACCESS_CHECKS: tuple[dict[str, str], ...] = (
    {"verb": "create", "group": "", "resource": "namespaces"},
    {"verb": "create", "group": "", "resource": "persistentvolumes"},
    {"verb": "create", "group": "", "resource": "secrets"},
    {"verb": "create", "group": "apps", "resource": "deployments"},
)

# Azure RBAC's documented five minutes, with margin for Entra ID replication of a brand-new cluster.
ACCESS_TIMEOUT_SECONDS = 900
FIRST_POLL_SECONDS = 5.0
MAX_POLL_SECONDS = 30.0
REQUEST_TIMEOUT_SECONDS = 20.0
TOKEN_TIMEOUT_SECONDS = 120.0

# The test seam: `require_tools` looks tools up with this (tests/pulumi_mocks.py replaces it).
find_tool: Callable[[str], str | None] = shutil.which


class PrerequisiteError(RuntimeError):
    """A tool `pulumi up` needs is missing; the message names each one and how to install it."""


class ClusterAccessError(RuntimeError):
    """The deploying principal could still not deploy when the time ran out; the message says why."""


def missing_tools(which: Callable[[str], str | None] | None = None) -> list[str]:
    """The REQUIRED_TOOLS not found on PATH, in their declared order."""
    which = which or find_tool
    return [tool for tool in REQUIRED_TOOLS if not which(tool)]


def require_tools(which: Callable[[str], str | None] | None = None) -> None:
    """Raise PrerequisiteError naming every missing tool and how to install it; return when all are there."""
    missing = missing_tools(which)
    if missing:
        lines = "\n".join(f"  - {tool}: {REQUIRED_TOOLS[tool]}" for tool in missing)
        raise PrerequisiteError(
            "the cluster is reached through Microsoft Entra ID, and this machine misses what that needs "
            f"(nothing was created):\n{lines}"
        )


def entra_kubeconfig(azure_kubeconfig: str) -> str:
    """A kubeconfig for the cluster of `azure_kubeconfig` that authenticates with kubelogin (azurecli).

    Only the cluster entry (server, CA) is taken from Azure's kubeconfig; the user is the exec plugin and
    holds no credential of any kind.
    """
    source = yaml.safe_load(azure_kubeconfig)
    entry = source["clusters"][0]
    name = entry["name"]
    cluster = {"server": entry["cluster"]["server"]}
    if entry["cluster"].get("certificate-authority-data"):
        cluster["certificate-authority-data"] = entry["cluster"]["certificate-authority-data"]
    user = f"{name}-entra"
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [
            {
                "name": user,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1beta1",
                        "command": "kubelogin",
                        "args": list(KUBELOGIN_ARGS),
                        "env": None,
                        "installHint": INSTALL_HINT,
                        "provideClusterInfo": False,
                    }
                },
            }
        ],
        "contexts": [{"name": name, "context": {"cluster": name, "user": user}}],
        "current-context": name,
    }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class ReviewAnswer:
    """What the API server said to one SelfSubjectAccessReview (or why it said nothing)."""

    status: int | None
    """HTTP status, None when no token or no answer."""
    allowed: bool = False
    detail: str = ""
    """The review's reason, or what went wrong."""


class TokenError(RuntimeError):
    """No Entra ID token (az not logged in, kubelogin failing)."""


def get_token(command: Sequence[str], timeout: float = TOKEN_TIMEOUT_SECONDS) -> str:
    """The bearer token from an exec credential plugin's ExecCredential (kubelogin's `get-token`)."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise TokenError(f"{command[0]} did not run: {error}") from error
    if done.returncode != 0:
        raise TokenError(f"{command[0]} exited {done.returncode}: {done.stderr.strip()[-400:]}")
    try:
        return json.loads(done.stdout)["status"]["token"]
    except (ValueError, KeyError, TypeError) as error:
        raise TokenError(f"{command[0]} printed no ExecCredential token ({error})") from error


def _tls_context(certificate_authority_data: str | None) -> ssl.SSLContext:
    if not certificate_authority_data:
        return ssl.create_default_context()
    return ssl.create_default_context(cadata=base64.b64decode(certificate_authority_data).decode())


def review_access(
    server: str,
    token: str,
    check: dict[str, str],
    *,
    certificate_authority_data: str | None = None,
    timeout: float = REQUEST_TIMEOUT_SECONDS,
) -> ReviewAnswer:
    """POST one SelfSubjectAccessReview for `check` as the token's principal."""
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": dict(check)},
    }
    request = urllib.request.Request(  # noqa: S310 - the cluster's own API server
        f"{server.rstrip('/')}/apis/authorization.k8s.io/v1/selfsubjectaccessreviews",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    context = _tls_context(certificate_authority_data) if server.startswith("https:") else None
    try:
        with urllib.request.urlopen(request, timeout=timeout, context=context) as response:  # noqa: S310
            status = json.loads(response.read()).get("status") or {}
    except urllib.error.HTTPError as error:
        return ReviewAnswer(error.code, detail=error.read()[:200].decode(errors="replace"))
    except (OSError, ValueError) as error:
        return ReviewAnswer(None, detail=str(error))
    return ReviewAnswer(200, bool(status.get("allowed")), status.get("reason", ""))


def _action(check: dict[str, str]) -> str:
    group = f".{check['group']}" if check.get("group") else ""
    return f"{check['verb']} {check['resource']}{group}"


def describe(answer: ReviewAnswer, check: dict[str, str], server: str, principal_id: str) -> str:
    """What is still not effective, in the words of someone who has to act on it."""
    if answer.status == 200 or answer.status == 403:
        reason = f" ({answer.detail})" if answer.detail else ""
        return (
            f"the deploying principal {principal_id} may not {_action(check)} yet{reason}: its "
            f"{ROLE_NAME!r} assignment on the cluster is not effective yet (Azure RBAC for Kubernetes "
            "takes up to five minutes)"
        )
    if answer.status == 401:
        return (
            f"the API server {server} rejects the Entra ID token (HTTP 401): the cluster's Entra ID "
            "integration is not ready yet, or `az login` is to another tenant than the cluster's"
        )
    status = f"HTTP {answer.status}" if answer.status else "no answer"
    return (
        f"the API server {server} did not answer the access review ({status}: {answer.detail}); "
        "when apiServerAuthorizedIpRanges is set, it must include this machine's public address"
    )


def wait_for_cluster_access(
    server: str,
    principal_id: str,
    *,
    certificate_authority_data: str | None = None,
    checks: Sequence[dict[str, str]] = ACCESS_CHECKS,
    token_command: Sequence[str] = ("kubelogin", *KUBELOGIN_ARGS),
    timeout_seconds: float = ACCESS_TIMEOUT_SECONDS,
    first_poll_seconds: float = FIRST_POLL_SECONDS,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    log: Callable[[str], None] = lambda _: None,
) -> int:
    """Poll until every check is allowed for the token's principal; return the number of rounds.

    Raises ClusterAccessError naming what is still not allowed once `timeout_seconds` have passed.
    """
    started = clock()
    interval = first_poll_seconds
    attempts = 0
    while True:
        attempts += 1
        reason = None
        try:
            token = get_token(token_command)
        except TokenError as error:
            reason = f"no Entra ID token ({error}): run `az login` (and `az account set --subscription <id>`)"
        else:
            for check in checks:
                answer = review_access(
                    server, token, check, certificate_authority_data=certificate_authority_data
                )
                if not answer.allowed:
                    reason = describe(answer, check, server, principal_id)
                    break
        if reason is None:
            return attempts
        waited = clock() - started
        if waited >= timeout_seconds:
            raise ClusterAccessError(
                f"{reason}; still so after {waited:.0f}s and {attempts} attempts. Nothing was deployed "
                "to the cluster."
            )
        log(f"waiting for access to the cluster: {reason}")
        sleep(min(interval, max(0.0, timeout_seconds - waited)))
        interval = min(interval * 1.5, MAX_POLL_SECONDS)


# A change to any of these is a new principal, cluster or assignment: check again.
_CHECKED = ("server", "principal_id", "role_assignment_id", "checks")


class ClusterAccessProvider(dynamic.ResourceProvider):
    """Create/update wait for access; the same principal, assignment and server is no change."""

    serialize_as_secret_always = False

    def __init__(
        self,
        token_command: Sequence[str] = ("kubelogin", *KUBELOGIN_ARGS),
        first_poll_seconds: float = FIRST_POLL_SECONDS,
    ):
        super().__init__()
        self._token_command = list(token_command)
        self._first_poll_seconds = first_poll_seconds

    def _wait(self, props: dict[str, Any]) -> dict[str, Any]:
        attempts = wait_for_cluster_access(
            props["server"],
            props["principal_id"],
            certificate_authority_data=props.get("certificate_authority_data") or None,
            checks=props["checks"],
            token_command=self._token_command,
            timeout_seconds=float(props["timeout_seconds"]),
            first_poll_seconds=self._first_poll_seconds,
        )
        return {**props, "attempts": attempts}

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        id_ = f"{props['server']}/access/{props['principal_id']}"
        return dynamic.CreateResult(id_=id_, outs=self._wait(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [key for key in _CHECKED if olds.get(key) != news.get(key)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=self._wait(news))


class ClusterAccess(dynamic.Resource, module="mlflow-aks", name="ClusterAccess"):
    """Exists once the principal running `pulumi up` may deploy to the cluster at `server`."""

    attempts: pulumi.Output[int]

    def __init__(
        self,
        name: str,
        *,
        server: pulumi.Input[str],
        certificate_authority_data: pulumi.Input[str],
        principal_id: pulumi.Input[str],
        role_assignment_id: pulumi.Input[str],
        checks: Sequence[dict[str, str]] = ACCESS_CHECKS,
        timeout_seconds: int = ACCESS_TIMEOUT_SECONDS,
        provider: ClusterAccessProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {
            "server": server,
            "certificate_authority_data": certificate_authority_data,
            "principal_id": principal_id,
            "role_assignment_id": role_assignment_id,
            "checks": [dict(check) for check in checks],
            "timeout_seconds": timeout_seconds,
            "attempts": None,
        }
        super().__init__(provider or ClusterAccessProvider(), name, props, opts)
