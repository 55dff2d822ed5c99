"""Owners added to an Entra ID application or service principal, and never removed.

The azuread provider's `owners` makes the owner list exactly what it is given whenever that input changes:
it lists the owners in Graph and removes every one it was not given, owners added by hand included (see
`owners` in hashicorp/terraform-provider-azuread internal/services/applications/application_resource.go
and serviceprincipals/service_principal_resource.go). So the applications take `owners` at creation only
(`ignore_changes`), and `EntraOwners` adds the operators configured later: for each one Graph does not
list yet, `POST /<applications|servicePrincipals>/<object id>/owners/$ref`
(https://learn.microsoft.com/graph/api/application-post-owners,
https://learn.microsoft.com/graph/api/serviceprincipal-post-owners). It never removes one, not even when
the stack is destroyed (the application itself is deleted then).

Graph is called with `az rest`, as whoever runs `pulumi up` (`az login`, which the program requires
anyway): the same principal the azuread provider uses.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Sequence
from typing import Any

import pulumi
from pulumi import dynamic

GRAPH = "https://graph.microsoft.com/v1.0"
AZ_TIMEOUT_SECONDS = 120.0
# Graph's answer to an owner that is already there (a race with another run, or added by hand meanwhile).
ALREADY_AN_OWNER = "already exist"


class OwnersError(RuntimeError):
    """Graph refused to list or add an owner; the message says what the caller needs."""


def _az(command: Sequence[str], *args: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [*command, *args], capture_output=True, text=True, timeout=AZ_TIMEOUT_SECONDS, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        raise OwnersError(f"`az rest` did not run: {error}") from error


def current_owners(path: str, command: Sequence[str] = ("az",)) -> set[str]:
    """Object ids of the owners Graph lists for `path` (`applications/<id>` or `servicePrincipals/<id>`)."""
    url: str | None = f"{GRAPH}/{path}/owners?$select=id"
    owners: set[str] = set()
    while url:
        done = _az(command, "rest", "--method", "get", "--url", url, "--output", "json")
        if done.returncode != 0:
            raise OwnersError(f"could not list the owners of {path}: {done.stderr.strip()[-400:]}")
        page = json.loads(done.stdout)
        owners.update(item["id"] for item in page.get("value", []))
        url = page.get("@odata.nextLink")
    return owners


def add_owners(path: str, owners: Sequence[str], command: Sequence[str] = ("az",)) -> list[str]:
    """Make each of `owners` an owner of `path`; return those that were added. Removes nobody."""
    present = current_owners(path, command)
    missing = [owner for owner in owners if owner not in present]
    for owner in missing:
        body = json.dumps({"@odata.id": f"{GRAPH}/directoryObjects/{owner}"})
        url = f"{GRAPH}/{path}/owners/$ref"
        done = _az(command, "rest", "--method", "post", "--url", url, "--body", body)
        if done.returncode != 0 and ALREADY_AN_OWNER not in done.stderr:
            raise OwnersError(
                f"could not make {owner} an owner of {path}: {done.stderr.strip()[-400:]}. Adding an owner "
                "takes an owner of it with Application.ReadWrite.All and Directory.Read.All for a service "
                "principal running `pulumi up` (docs/security.md#operators)"
            )
    return missing


class EntraOwnersProvider(dynamic.ResourceProvider):
    """Create and update add the missing owners; a shorter list is no change; delete removes nobody."""

    serialize_as_secret_always = False

    def __init__(self, command: Sequence[str] = ("az",)):
        super().__init__()
        self._command = list(command)

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        add_owners(props["path"], props["owners"], self._command)
        return dynamic.CreateResult(id_=f"{props['path']}/owners", outs=dict(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        if olds["path"] != news["path"]:  # another application: add them there
            return dynamic.DiffResult(changes=True, replaces=["path"], delete_before_replace=False)
        added = not set(news["owners"]) <= set(olds["owners"])
        return dynamic.DiffResult(changes=added, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        add_owners(news["path"], news["owners"], self._command)
        # Everyone ever added stays in the state, as in Graph.
        owners = sorted(set(olds["owners"]) | set(news["owners"]))
        return dynamic.UpdateResult(outs={**news, "owners": owners})

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        """Owners are never removed by the program."""


class EntraOwners(dynamic.Resource, module="mlflow-aks", name="EntraOwners"):
    """Exists once each of `owners` owns the application or service principal at `path`."""

    def __init__(
        self,
        name: str,
        *,
        path: pulumi.Input[str],
        owners: pulumi.Input[Sequence[str]],
        provider: EntraOwnersProvider | None = None,
        opts: pulumi.ResourceOptions | None = None,
    ):
        super().__init__(provider or EntraOwnersProvider(), name, {"path": path, "owners": owners}, opts)


def owners_of_application(
    name: str,
    application_object_id: pulumi.Input[str],
    service_principal_object_id: pulumi.Input[str],
    owners: pulumi.Input[Sequence[str]],
    parent: pulumi.Resource,
) -> list[EntraOwners]:
    """An application and its service principal, each owned by every one of `owners`: `<name>-app-owners`
    and `<name>-sp-owners`, children of `parent`."""
    return [
        EntraOwners(
            f"{name}-{kind}-owners",
            path=pulumi.Output.concat(collection, object_id),
            owners=owners,
            opts=pulumi.ResourceOptions(parent=parent),
        )
        for kind, collection, object_id in (
            ("app", "applications/", application_object_id),
            ("sp", "servicePrincipals/", service_principal_object_id),
        )
    ]
