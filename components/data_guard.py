"""A config change never replaces the team's data by accident.

The data resource group, the storage account with its artifacts and backups containers, and the MySQL disk
(runs, metrics, users) are replaced, that is deleted and created empty, when their names or region change:
`namePrefix`, `location`, or the adopted `dataStorageAccount`. With `database: flexibleServer` the
databases live in a flexible server instead, named after the storage account, or `databaseServerName`; and
`database` itself moves them: a switch starts on an empty database elsewhere. `DataGuard` is the first
resource the program declares, and every other one depends on it. Its inputs are exactly those identities;
on a stack that already holds them, its provider's diff compares them with the state and refuses any
change, naming the key and the data at risk, unless `allowDataReplacement` is true. A refused diff fails
`pulumi preview` and the preview of `pulumi up`, before anything changes (and with `--skip-preview`,
nothing else is registered before the guard's step has passed).

`protect` on the data resources (while `dataRetention: retain`) is the second line: the engine refuses
to delete or replace a protected resource whatever the reason. The data group's CanNotDelete lock
(components/resource_groups.py) is the third: Azure refuses the delete, whoever asks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pulumi
from pulumi import dynamic


@dataclass(frozen=True)
class DataIdentity:
    """What decides whether the data resources are kept or replaced: their names and region."""

    # Named after the config keys they come from (the refusal names them).
    namePrefix: str
    location: str
    dataStorageAccount: str
    dataResourceGroup: str
    mysqlDisk: str
    database: str = "inCluster"
    databaseServerName: str = ""


# What a stack recorded before `database` existed, or records now in `inCluster` mode: the guard's inputs
# leave out keys at these values, so those stacks' guards see no change at all.
LEGACY_IDENTITY = {"database": "inCluster", "databaseServerName": ""}


def _identity(recorded: dict[str, Any]) -> dict[str, Any]:
    return {**LEGACY_IDENTITY, **recorded}


# What each identity key puts at risk, for the refusal's message.
_AT_RISK = {
    "namePrefix": "the data resource group, storage account and MySQL disk (their names start with it)",
    "location": "every data resource (a resource's region cannot change in place)",
    "dataStorageAccount": "the storage account with its artifacts and backups containers",
    "dataResourceGroup": "the data resource group and all it holds",
    "mysqlDisk": "the MySQL disk (runs, metrics, models, users and permissions)",
    "database": "the databases (runs, metrics, models, users and permissions): the other mode starts empty",
    "databaseServerName": "the flexible server the stack uses (runs, metrics, models, users)",
}
# How to make such a change on purpose without losing the data, per key and new value.
_PROCEDURE = {
    ("database", "flexibleServer"): (
        "To switch with the data: back up (`kubectl --namespace mlflow create job backup-before-switch "
        "--from=cronjob/mlflow-backup` runs `python /app/backup.py backup`), switch with "
        "allowDataReplacement, then restore that backup into the server (`scripts/cluster-restore latest "
        "--cronjob mlflow-gc --destination <backups>`). The cluster moves into the program's virtual "
        "network, which makes it a new cluster (AKS cannot change a node pool's subnet). docs/database.md, "
        "'Switching an existing stack'."
    ),
    ("database", "inCluster"): (
        "Moving from a flexible server back into the cluster is not done in place (the cluster would have to "
        "leave its network): docs/database.md, 'Switching an existing stack'."
    ),
    ("databaseServerName", None): (
        "Adopting a server restored from this one: docs/backup-and-restore.md, 'With database: "
        "flexibleServer'."
    ),
}


def _procedures(changed: list[str], new: dict[str, Any]) -> list[str]:
    found = []
    for key in changed:
        procedure = _PROCEDURE.get((key, new.get(key))) or _PROCEDURE.get((key, None))
        if procedure:
            found.append(procedure)
    return found


class DataReplacementRefused(Exception):
    """The new configuration would replace data resources, and allowDataReplacement is not set."""


def refusal(old: dict[str, Any], new: dict[str, Any]) -> str:
    old, new = _identity(old), _identity(new)
    changed = [key for key in sorted(new) if old.get(key) != new.get(key)]
    lines = [
        f"  - {key}: {old.get(key)!r} -> {new.get(key)!r} would replace {_AT_RISK.get(key, 'data resources')}"
        for key in changed
    ]
    procedures = _procedures(changed, new)
    return (
        "refusing to change the configuration the stack's data lives under; nothing was changed:\n"
        + "\n".join(lines)
        + f"\nThe data in the resource group {old.get('dataResourceGroup')!r} stays as it is. Put the keys "
        "back, or, to move to new (empty) data resources on purpose: `pulumi config set allowDataReplacement "
        "true`, run `pulumi up`, then set it back to false. To let Pulumi delete the old ones, first switch "
        "to `dataRetention delete` and run `pulumi up` with the old values (that lifts the delete lock); "
        "docs/operations.md says how." + "".join(f"\n{procedure}" for procedure in procedures)
    )


class DataGuardProvider(dynamic.ResourceProvider):
    """Records the data identity; refuses to change it unless the change is allowed."""

    serialize_as_secret_always = False

    def create(self, props: dict[str, Any]) -> dynamic.CreateResult:
        return dynamic.CreateResult(id_="data-guard", outs=props)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.DiffResult:
        old, new = olds.get("identity") or {}, news.get("identity") or {}
        moved = _identity(old) != _identity(new)
        if moved and not news.get("allow_replacement"):
            raise DataReplacementRefused(refusal(old, new))
        changed = moved or olds.get("allow_replacement") != news.get("allow_replacement")
        return dynamic.DiffResult(changes=changed, replaces=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> dynamic.UpdateResult:
        return dynamic.UpdateResult(outs=news)


class DataGuard(dynamic.Resource, module="mlflow-aks", name="DataGuard"):
    """Stops a `pulumi up` whose configuration would replace the stack's data resources."""

    def __init__(
        self,
        name: str,
        *,
        identity: DataIdentity,
        allow_replacement: bool,
        opts: pulumi.ResourceOptions | None = None,
    ):
        recorded = {k: v for k, v in asdict(identity).items() if LEGACY_IDENTITY.get(k, ...) != v}
        props = {"identity": recorded, "allow_replacement": allow_replacement}
        super().__init__(DataGuardProvider(), name, props, opts)
