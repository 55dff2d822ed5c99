"""The team's data across teardowns and config changes, under Pulumi mocks.

- While `dataRetention: retain`, the data resources are protected (the engine refuses to delete or replace
  them) as well as retained on destroy.
- `dataStorageAccount` adopts the data an earlier stack kept: the same resources, declared with the same
  inputs and the `import` option set to the ids Azure gave them, so nothing is created or replaced.
- The data guard is declared first, everything that changes Azure, Entra ID or the cluster waits for it,
  and its diff refuses a change of the data's identity unless `allowDataReplacement` is set.
"""

from __future__ import annotations

import pytest
from pulumi_mocks import SUBSCRIPTION_ID, ProgramRun, plain, run_program

from components.data_guard import DataGuardProvider, DataReplacementRefused

# Logical names of the data resources (component children) and the random suffix of the account name.
DATA = (
    "groups-data",
    "storage-account",
    "storage-artifacts",
    "storage-backups",
    "storage-projects",
    "mysql-disk-disk",
)
SUFFIX = "storage-suffix"
GUARD = "pulumi-python:dynamic/mlflow-aks:DataGuard"


def by_name(run: ProgramRun) -> dict[str, object]:
    return {r.name: r for r in run.resources}


@pytest.mark.parametrize(
    ("config", "protected"),
    [
        ({}, True),
        ({"dataRetention": "delete"}, False),
        ({"allowDataReplacement": True}, False),
        ({"dataRetention": "delete", "allowDataReplacement": True}, False),
    ],
    ids=["retain", "delete", "retain-replacement-allowed", "delete-replacement-allowed"],
)
def test_data_resources_are_protected_while_retained(config, protected):
    run = run_program(config)
    resources = by_name(run)
    for name in (*DATA, SUFFIX):
        assert resources[name].options["protect"] is protected, name
    others = [r.name for r in run.resources if r.name not in (*DATA, SUFFIX) and r.options["protect"]]
    assert others == [], "only the data is protected: everything else is removed by destroy"


@pytest.fixture(scope="module")
def created() -> ProgramRun:
    """A stack that created its data (the defaults: retain)."""
    return run_program({})


@pytest.fixture(scope="module")
def adopted(created) -> ProgramRun:
    """A new stack adopting what `created` kept, with the one value copied from its outputs."""
    return run_program({"dataStorageAccount": created.exports["storageAccount"]})


def test_one_value_adopts_data_kept_under_another_prefix():
    """Data a `mlteam` stack kept, adopted by a stack whose only setting is the old account's name."""
    kept = run_program({"namePrefix": "mlteam"})
    adopting = run_program({"dataStorageAccount": kept.exports["storageAccount"]})
    assert adopting.exports["dataResourceGroup"] == "mlteam-data"
    for name in DATA:
        assert by_name(adopting)[name].options["importId"] == by_name(kept)[name].id
        assert plain(by_name(adopting)[name].inputs) == plain(by_name(kept)[name].inputs)


def test_adoption_needs_only_the_kept_storage_account_name(created, adopted):
    account = created.exports["storageAccount"]
    assert account.startswith("mlflowdata") and len(account) == len("mlflowdata") + 8
    assert adopted.exports["storageAccount"] == account
    assert adopted.exports["dataResourceGroup"] == created.exports["dataResourceGroup"]
    assert adopted.exports["mysqlDiskId"] == created.exports["mysqlDiskId"]


@pytest.mark.parametrize("name", DATA)
def test_adopted_data_is_imported_by_id_with_the_inputs_it_has(created, adopted, name):
    """The same logical resource (type, name, parent: the same URN), the same inputs as the stack that
    created it (so the import's check finds no difference) and the id Azure gave it as the import id."""
    before, after = by_name(created)[name], by_name(adopted)[name]
    assert (after.type, after.options["parent"]) == (before.type, before.options["parent"])
    assert plain(after.inputs) == plain(before.inputs)
    assert before.options["importId"] == ""
    assert after.options["importId"] == before.id
    assert after.id.startswith(f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/mlflow-data")
    assert after.options["protect"] is True and after.options["retainOnDelete"] is True


def test_adoption_declares_no_new_name_and_imports_nothing_else(created, adopted):
    assert SUFFIX in by_name(created) and SUFFIX not in by_name(adopted)
    imported = {r.name for r in adopted.resources if r.options["importId"]}
    assert imported == set(DATA)
    # Everything else is declared exactly as in the stack that created the data.
    assert {(r.type, r.name) for r in adopted.resources} == {
        (r.type, r.name) for r in created.resources if r.name != SUFFIX
    }


def _transitive_dependencies(run: ProgramRun) -> dict[str, set[str]]:
    # A resource also waits for its provider (the Kubernetes provider waits for the cluster's kubeconfig);
    # a provider reference is `<provider urn>::<provider id>`.
    direct = {r.name: {urn.rsplit("::", 1)[1] for urn in r.options["dependencies"]} for r in run.resources}
    for r in run.resources:
        if r.provider:
            direct[r.name].add(r.provider.rsplit("::", 2)[1])
    closure: dict[str, set[str]] = {}

    def reach(name: str) -> set[str]:
        if name not in closure:
            closure[name] = set()
            for dependency in direct[name]:
                closure[name] |= {dependency, *reach(dependency)}
        return closure[name]

    for resource in run.resources:
        reach(resource.name)
    return closure


@pytest.mark.parametrize(
    "config", [{}, {"dataStorageAccount": "mlflowdata0a1b2c3d"}], ids=["create", "adopt"]
)
def test_the_guard_comes_first_and_every_change_to_the_world_waits_for_it(config):
    """With every other resource depending on it, nothing reaches Azure, Entra ID or the cluster before
    the guard's step has passed, even under `pulumi up --skip-preview`. Random values only live in state."""
    run = run_program(config)
    assert run.resources[0].type == GUARD
    closure = _transitive_dependencies(run)
    guard = run.resources[0].name
    waiting = {
        r.name
        for r in run.resources
        if r.custom and r.name != guard and not r.type.startswith(("random:", "pulumi:providers:"))
    }
    assert waiting, "the program declares resources"
    assert {name for name in waiting if guard not in closure[name]} == set()


def test_the_guard_records_the_identity_the_data_lives_under(created):
    guard = created.one(GUARD)
    assert plain(guard.inputs)["identity"] == {
        "namePrefix": "mlflow",
        "location": "westeurope",
        "dataStorageAccount": "",
        "dataResourceGroup": "mlflow-data",
        "mysqlDisk": "mlflow-mysql",
    }
    assert plain(guard.inputs)["allow_replacement"] is False


IDENTITY = {
    "namePrefix": "mlflow",
    "location": "westeurope",
    "dataStorageAccount": "",
    "dataResourceGroup": "mlflow-data",
    "mysqlDisk": "mlflow-mysql",
}


@pytest.mark.parametrize(
    ("change", "named"),
    [
        (
            {"namePrefix": "mlteam", "dataResourceGroup": "mlteam-data", "mysqlDisk": "mlteam-mysql"},
            "namePrefix",
        ),
        ({"location": "northeurope"}, "location"),
        ({"dataStorageAccount": "mlflowdatazz99zz99"}, "dataStorageAccount"),
    ],
    ids=["namePrefix", "location", "dataStorageAccount"],
)
def test_the_guard_refuses_a_change_that_would_replace_the_data(change, named):
    provider = DataGuardProvider()
    olds = {"identity": IDENTITY, "allow_replacement": False}
    news = {"identity": {**IDENTITY, **change}, "allow_replacement": False}
    with pytest.raises(DataReplacementRefused) as refused:
        provider.diff("data-guard", olds, news)
    message = str(refused.value)
    assert f"{named}: {IDENTITY[named]!r} -> {change[named]!r}" in message
    assert "nothing was changed" in message and "allowDataReplacement" in message
    assert "'mlflow-data'" in message  # where the data is, as it is today
    # With the override the same change goes through, as an update of the guard.
    allowed = provider.diff("data-guard", olds, {**news, "allow_replacement": True})
    assert allowed.changes is True and allowed.replaces == []


def test_the_guard_lets_everything_else_through():
    provider = DataGuardProvider()
    olds = {"identity": IDENTITY, "allow_replacement": False}
    assert provider.diff("data-guard", olds, dict(olds)).changes is False
    # Turning the override on or off alone changes no data.
    assert provider.diff("data-guard", olds, {**olds, "allow_replacement": True}).changes is True
    created = provider.create({"identity": IDENTITY, "allow_replacement": False})
    assert created.outs["identity"] == IDENTITY
