"""A config change Azure cannot make in place stops before anything changes, naming the procedure.

Two settings name something Azure refuses to change on a live resource, so `pulumi up` would apply every
other change, then fail at that resource, leaving the stack half-updated:

- `systemNodeVmSize`: AKS cannot change the VM size of an existing node pool ("You can't change the VM
  size of a node pool after you create it", https://learn.microsoft.com/azure/aks/manage-node-pools#limitations;
  the in-place resize of https://learn.microsoft.com/azure/aks/resize-node-pool is a preview feature).
  The system pool is inside the cluster resource, and the cluster cannot be replaced without its data.
- `mysqlDiskSku`: Azure changes a managed disk's type, between LRS and ZRS too for a disk without a zone
  as this one, only while no running VM has it attached
  (https://learn.microsoft.com/azure/virtual-machines/disks-convert-types,
  https://learn.microsoft.com/azure/virtual-machines/disks-migrate-lrs-zrs#regional-migration): possible,
  with MySQL stopped for a few minutes, never while it runs.

`InPlaceGuard` records both. Declared right after the data guard, with everything else waiting for it,
its diff refuses a change of either, naming the key, the current and new value, the downtime and the
procedure (docs/operations.md) - unless Azure already has the new value, which is how a run after the
procedure passes. `jobsNodeVmSize` is not guarded: the jobs pool is a resource of its own, replaced
(deleted first, components/cluster.py) at the cost of the run Jobs in flight.
"""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import pulumi
from pulumi import dynamic

AZ_TIMEOUT_SECONDS = 120


@dataclass(frozen=True)
class GuardedValues:
    """The settings Azure cannot change in place, named after their config keys (the refusal names them)."""

    systemNodeVmSize: str
    mysqlDiskSku: str | None
    """None with `database: flexibleServer` (no disk)."""


@dataclass(frozen=True)
class AzureNames:
    """Where Azure holds those values, to read what it has now (in the deploying client's subscription)."""

    platform_group: str
    cluster: str
    system_pool: str
    data_group: str
    mysql_disk: str


def _az_query(key: str, names: dict[str, str]) -> list[str]:
    """The `az` arguments that read `key` from Azure (--subscription is added by the caller)."""
    if key == "systemNodeVmSize":
        return [
            *("aks", "nodepool", "show", "--resource-group", names["platform_group"]),
            *("--cluster-name", names["cluster"], "--name", names["system_pool"], "--query", "vmSize"),
        ]
    return [
        *("disk", "show", "--resource-group", names["data_group"], "--name", names["mysql_disk"]),
        *("--query", "sku.name"),
    ]


def run_az(args: list[str]) -> str:
    """`az <args> --output tsv`, its output stripped; raises on failure."""
    done = subprocess.run(
        ["az", *args, "--output", "tsv"],
        capture_output=True,
        text=True,
        timeout=AZ_TIMEOUT_SECONDS,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(done.stderr.strip().splitlines()[-1] if done.stderr.strip() else "az failed")
    return done.stdout.strip()


# The test seam: the guard asks Azure through this (the tests replace it; nothing runs az there).
az: Callable[[list[str]], str] = run_az


def live_value(key: str, names: dict[str, str]) -> tuple[str | None, str | None]:
    """(what Azure has now for `key`, None) or (None, why it could not be read)."""
    try:
        return az([*_az_query(key, names), "--subscription", names["subscription"]]) or None, None
    except Exception as error:  # any failure is reported in the refusal, never taken as a pass
        return None, str(error)


_WHY = {
    "systemNodeVmSize": (
        "AKS cannot change the VM size of an existing node pool "
        "(https://learn.microsoft.com/azure/aks/manage-node-pools#limitations). Done by hand, the system "
        "pool is rotated: a pool of the new size is added, the old one drained and deleted (MySQL restarts "
        "on each move, about a minute each; the tracking server keeps answering with 2 or more replicas)."
    ),
    "mysqlDiskSku": (
        "Azure changes a disk's type (LRS and ZRS too, for this disk without a zone) only while no running "
        "VM has it attached (https://learn.microsoft.com/azure/virtual-machines/disks-convert-types): MySQL "
        "stops for the change, a few minutes of downtime; the data stays on the disk. At most twice a day."
    ),
}
_PROCEDURE = {
    "systemNodeVmSize": "docs/operations.md, 'Changing the system pool's VM size'",
    "mysqlDiskSku": "docs/operations.md, 'Changing the MySQL disk's SKU'",
}


class InPlaceChangeRefused(Exception):
    """A setting changed that Azure cannot change on the live resource, and Azure does not have it yet."""


def refusal(old: dict[str, Any], new: dict[str, Any], live: dict[str, tuple[str | None, str | None]]) -> str:
    lines = []
    for key, (value, error) in live.items():
        now = f"Azure has {value!r}" if value else f"Azure could not be asked ({error})"
        lines.append(
            f"  - {key}: {old[key]!r} -> {new[key]!r} ({now}). {_WHY[key]}\n"
            f"    Procedure: {_PROCEDURE[key]}; this run passes once Azure has {new[key]!r}."
        )
    return (
        "refusing a change Azure cannot make in place; nothing was changed:\n"
        + "\n".join(lines)
        + "\nOr put the old value back: `pulumi config set <key> <old value>`."
    )


class InPlaceGuardProvider(dynamic.ResourceProvider):
    """Records the guarded values; refuses a change of one until Azure has the new value."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_="in-place-guard", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        old, new = olds.get("values") or {}, news.get("values") or {}
        # A key that appears or goes (the disk with `database`) is the data guard's business.
        changed = [key for key in sorted(new) if old.get(key) and new.get(key) and old[key] != new[key]]
        live = {key: live_value(key, news["azure"]) for key in changed}
        pending = {key: found for key, found in live.items() if found[0] != new[key]}
        if pending:
            raise InPlaceChangeRefused(refusal(old, new, pending))
        changes = old != new or olds.get("azure") != news.get("azure")
        return dynamic.DiffResult(changes=changes, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=news)


class InPlaceGuard(dynamic.Resource, module="mlflow-aks", name="InPlaceGuard"):
    """Stops a `pulumi up` that would ask Azure for a change it cannot make on the live resource."""

    def __init__(
        self,
        name: str,
        *,
        values: GuardedValues,
        names: AzureNames,
        subscription_id: pulumi.Input[str],
        opts: pulumi.ResourceOptions | None = None,
    ):
        recorded = {key: value for key, value in asdict(values).items() if value is not None}
        azure = {**asdict(names), "subscription": subscription_id}
        super().__init__(InPlaceGuardProvider(), name, {"values": recorded, "azure": azure}, opts)
