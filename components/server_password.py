"""An adopted flexible server takes the stack's admin password.

A server the stack creates gets its password at creation. A server it adopts, kept by an earlier stack or
restored from its own, has the password it was created with, which Azure never returns: the import leaves
it out (components/database_server.py). `ServerAdminPassword` then sets it to the stack's through Azure
Resource Manager, as `az mysql flexible-server update --admin-password` does: one PATCH of the server's
`administratorLoginPassword`, followed until Azure reports the operation done
(https://learn.microsoft.com/azure/azure-resource-manager/management/async-operations). It signs in as whoever
runs `pulumi up` (the token `az account get-access-token` prints), like the rest of the deployment.

The password goes only into the request's body: never on a command line, into a file or a log line.
Setting it again (a new password) is an update; deleting the resource changes nothing in Azure.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from typing import Any

import pulumi
from pulumi import dynamic

ARM = "https://management.azure.com"
API_VERSION = "2023-12-30"
TOKEN_COMMAND = ("az", "account", "get-access-token", "--resource", f"{ARM}/", "--output", "json")
# Azure applies a password change in about a minute; the poll gives it ample time.
TIMEOUT_SECONDS = 900
POLL_SECONDS = 10.0
REQUEST_TIMEOUT_SECONDS = 60.0


class PasswordResetError(RuntimeError):
    """Azure did not take the password; the message says what it answered (never the password)."""


def arm_token(command: Sequence[str] = TOKEN_COMMAND) -> str:
    """An Azure Resource Manager token of the Azure CLI's login."""
    try:
        done = subprocess.run(list(command), capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        raise PasswordResetError(f"{command[0]} did not run ({error}): run `az login`") from error
    if done.returncode != 0:
        raise PasswordResetError(f"no Azure token: {done.stderr.strip()[-500:]} (run `az login`)")
    return json.loads(done.stdout)["accessToken"]


Opener = Callable[[urllib.request.Request, float], Any]


def _send(opener: Opener, request: urllib.request.Request) -> tuple[int, dict[str, str], dict[str, Any]]:
    try:
        with opener(request, REQUEST_TIMEOUT_SECONDS) as response:
            body = response.read()
            return response.status, dict(response.headers), json.loads(body) if body else {}
    except urllib.error.HTTPError as error:
        detail = error.read().decode(errors="replace")[-500:]
        raise PasswordResetError(
            f"Azure answered HTTP {error.code} to {request.get_method()}: {detail}"
        ) from None


def set_admin_password(
    server_id: str,
    password: str,
    token: str,
    *,
    opener: Opener = urllib.request.urlopen,
    sleep: Callable[[float], None] = time.sleep,
    timeout_seconds: float = TIMEOUT_SECONDS,
) -> None:
    """PATCH the server's admin password, then wait until Azure's operation has succeeded."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    body = json.dumps({"properties": {"administratorLoginPassword": password}}).encode()
    url = f"{ARM}{server_id}?api-version={API_VERSION}"
    patch = urllib.request.Request(url, body, headers, method="PATCH")  # noqa: S310 - https, ARM only
    status, answer_headers, _ = _send(opener, patch)
    if status == 200:
        return
    operation = {k.lower(): v for k, v in answer_headers.items()}.get("azure-asyncoperation")
    if status != 202 or not operation:
        raise PasswordResetError(f"Azure answered HTTP {status} without an operation to follow")
    if not operation.startswith(f"{ARM}/"):  # the token goes to Azure Resource Manager only
        raise PasswordResetError(f"Azure's operation is not on {ARM}: {operation}")
    deadline = time.monotonic() + timeout_seconds
    while True:
        poll = urllib.request.Request(operation, headers=headers, method="GET")  # noqa: S310 - checked above
        _, _, state = _send(opener, poll)
        if state.get("status") == "Succeeded":
            return
        if state.get("status") in ("Failed", "Canceled"):
            raise PasswordResetError(f"Azure's operation {state.get('status')}: {state.get('error')}")
        if time.monotonic() > deadline:
            raise PasswordResetError(
                f"Azure's operation still {state.get('status')} after {timeout_seconds}s"
            )
        sleep(POLL_SECONDS)


class ServerAdminPasswordProvider(dynamic.ResourceProvider):
    """Sets the password on create and whenever it (or the server) changes."""

    serialize_as_secret_always = False

    def __init__(self, token: Callable[[], str] = arm_token, opener: Opener = urllib.request.urlopen):
        self._token = token
        self._opener = opener

    def _apply(self, props: dict[str, Any]) -> None:
        set_admin_password(props["server_id"], props["password"], self._token(), opener=self._opener)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        self._apply(props)
        return dynamic.CreateResult(id_=f"{props['server_id']}/administratorLoginPassword", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        changed = [key for key in ("server_id", "password") if olds.get(key) != news.get(key)]
        return dynamic.DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        self._apply(news)
        return dynamic.UpdateResult(outs=news)


class ServerAdminPassword(dynamic.Resource, module="mlflow-aks", name="ServerAdminPassword"):
    """The admin password of an adopted flexible server, set to the stack's."""

    def __init__(
        self,
        name: str,
        *,
        server_id: pulumi.Input[str],
        password: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        props = {"server_id": server_id, "password": pulumi.Output.secret(password)}
        opts = pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["password"])
        )
        super().__init__(ServerAdminPasswordProvider(), name, props, opts)
